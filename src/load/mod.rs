//! `mcx-authz load`: an open-loop SIP load generator for any MCX server (ours or a vendor's),
//! playing the SIP core over UDP.
//!
//! - **Open loop, no coordinated omission.** Call `i` is scheduled at `t0 + i / rate` whether or
//!   not earlier calls were answered, and the latency of its first request is measured from that
//!   scheduled time, not from when the generator got round to sending it. A later request of a
//!   call is scheduled when the response it follows arrives and is sent at once. How late the
//!   generator itself sent is reported apart (`send lag`), so a lab can tell a slow generator from
//!   a slow server.
//! - **RFC 3261 17.1.2.2 timers.** A request is retransmitted after T1, then at doubling intervals
//!   capped at T2 (T2 at once after a provisional response), until its final response or Timer F
//!   (64·T1, or `--timeout-ms` if shorter), when the call fails. Retransmissions are counted; their
//!   latency stays that of the first transmission's schedule.
//! - **Per-method latency** in HDR histograms at microsecond resolution (three significant digits):
//!   p50, p90, p99, p99.9, max, and a JSON summary.
//!
//! Requests are the trace writer's ([`crate::trace::sipp`]) SIPp templates, filled in by
//! [`template`]; `--write-sipp` writes the same scenario as SIPp XML, so that SIPp and this
//! generator can be run side by side on identical requests.
//!
//! Scenarios are lists of [`Step`]s ([`Scenario::steps`]); a new one is a new [`Scenario`]
//! variant and its steps. `register-publish-protected` sends the PUBLISH of TS 33.180 clause 9
//! (token and client ID encrypted under the user's CSK, the info body signed), from the CSV and
//! CSK table of `mcx-authz token mint-csv --protect-csks`.

pub mod template;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use mcx_model::Service;
use serde_json::{json, Value};

use crate::trace::sipp::{Publish, PublishBody, Register};
use template::{Fill, Template, CALL_ID_PREFIX};

/// The CSV fields of a user (SIPp `-inf`, `mcx-authz token mint-csv`).
pub mod field {
    /// The IMPU.
    pub const IMPU: usize = 0;
    /// The MC client ID.
    pub const CLIENT_ID: usize = 1;
    /// The MC service ID.
    pub const MC_ID: usize = 2;
    /// The access token.
    pub const TOKEN: usize = 3;
    /// The info body with token and client ID protected per TS 33.180 clause 9 (`mint-csv
    /// --protect-csks`).
    pub const PROTECTED_INFO: usize = 4;
    /// Its signature part.
    pub const SIGNATURE: usize = 5;
}

/// What a request is counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// Third-party REGISTER (Expires > 0).
    Register,
    /// PUBLISH for service authorization.
    Publish,
    /// Third-party REGISTER with Expires: 0.
    Deregister,
}

impl Method {
    /// The label in reports.
    pub fn label(self) -> &'static str {
        match self {
            Method::Register => "REGISTER",
            Method::Publish => "PUBLISH",
            Method::Deregister => "DEREGISTER",
        }
    }
}

/// A load scenario: the requests of one call, each sent when the previous one got a 2xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A third-party REGISTER, then a PUBLISH carrying the user's token.
    RegisterPublish,
    /// The same, then a de-REGISTER (third-party REGISTER, Expires: 0).
    RegisterPublishDeregister,
    /// A third-party REGISTER, then a PUBLISH whose token and client ID are protected per
    /// TS 33.180 clause 9 under the user's CSK, the info body signed (CSV fields 4 and 5, from
    /// `mcx-authz token mint-csv --protect-csks`, whose CSK table the server must hold).
    RegisterPublishProtected,
}

/// One request of a scenario.
pub struct Step {
    /// What it is counted as.
    pub method: Method,
    /// Its SIPp template.
    pub template: String,
}

/// REGISTER Expires of the scenarios (seconds).
const REGISTER_EXPIRES: u32 = 600;
/// PUBLISH Expires of the scenarios (seconds).
const PUBLISH_EXPIRES: u32 = 3600;

impl Scenario {
    /// The scenario's name (as on the command line).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::RegisterPublish => "register-publish",
            Scenario::RegisterPublishDeregister => "register-publish-deregister",
            Scenario::RegisterPublishProtected => "register-publish-protected",
        }
    }

    /// The requests of one call, rendered by the trace writer with the user's CSV fields as
    /// SIPp keywords.
    pub fn steps(self) -> Vec<Step> {
        let impu = format!("[field{}]", field::IMPU);
        let client = format!("[field{}]", field::CLIENT_ID);
        let services = [Service::Mcptt];
        let register = |cseq: usize, expires: u32| Register {
            cseq,
            impu: &impu,
            expires,
            tags: if expires > 0 { &services } else { &[] },
            token: None,
            services: &services,
            client: &client,
        };
        let publish = Publish {
            cseq: 2,
            service: Service::Mcptt,
            impu: &impu,
            expires: PUBLISH_EXPIRES,
            if_match: None,
            body: if self == Scenario::RegisterPublishProtected {
                PublishBody::Protected {
                    info: field::PROTECTED_INFO,
                    signature: field::SIGNATURE,
                }
            } else {
                PublishBody::Token(field::TOKEN)
            },
            client: &client,
        };
        let mut steps = vec![
            Step {
                method: Method::Register,
                template: register(1, REGISTER_EXPIRES).render(),
            },
            Step {
                method: Method::Publish,
                template: publish.render(),
            },
        ];
        if self == Scenario::RegisterPublishDeregister {
            steps.push(Step {
                method: Method::Deregister,
                template: register(3, 0).render(),
            });
        }
        steps
    }

    /// The scenario as a SIPp UAC scenario (`-inf` CSV as [`field`]), response-time counter
    /// `rtd` N = step N. SIPp's own retransmission timer is T1 = 500 ms, doubling.
    pub fn sipp_xml(self) -> String {
        let mut x = String::new();
        x.push_str("<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n");
        let _ = writeln!(
            x,
            "<!-- Written by `mcx-authz load --scenario {} --write-sipp`: the requests mcx-authz load sends.\n     CSV (-inf): impu;client_id;mc_id;token{}. Response-time counters: rtd N = step N. -->",
            self.name(),
            if self == Scenario::RegisterPublishProtected {
                ";protected_info;signature (mcx-authz token mint-csv --protect-csks)"
            } else {
                ""
            }
        );
        let _ = writeln!(x, "<scenario name=\"mcx-authz load {}\">", self.name());
        for (i, step) in self.steps().iter().enumerate() {
            let rtd = i + 1;
            let _ = write!(
                x,
                "  <!-- step {rtd}: {} -->\n  <send retrans=\"500\" start_rtd=\"{rtd}\">\n    <![CDATA[\n\n{}\n\n    ]]>\n  </send>\n  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"200\" rtd=\"{rtd}\" timeout=\"10000\"/>\n",
                step.method.label(),
                step.template
            );
        }
        x.push_str("  <ResponseTimeRepartition value=\"1, 2, 5, 10, 20, 50, 100, 200, 500, 1000\"/>\n</scenario>\n");
        x
    }
}

/// The users: CSV lines of fields.
#[derive(Clone, Debug, Default)]
pub struct Users {
    rows: Vec<Vec<String>>,
}

impl Users {
    /// Reads a SIPp `-inf` CSV: an optional first line `SEQUENTIAL`/`RANDOM`/`USER`, then one
    /// user per line, fields separated by `;`. Lines starting with `#` and empty lines are skipped.
    pub fn parse_csv(text: &str) -> anyhow::Result<Users> {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if i == 0 && ["SEQUENTIAL", "RANDOM", "USER"].contains(&line.trim()) {
                continue;
            }
            rows.push(line.split(';').map(str::to_owned).collect());
        }
        Ok(Users { rows })
    }

    /// Reads a CSV file.
    pub fn read_csv(path: &Path) -> anyhow::Result<Users> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Users::parse_csv(&text)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The users' tokens (field [`field::TOKEN`]), in CSV order.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.rows
            .iter()
            .filter_map(|r| r.get(field::TOKEN).map(String::as_str))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The fields `scenario` fills in: every user must have them.
    pub fn check_for(&self, scenario: Scenario) -> anyhow::Result<()> {
        let needed = match scenario {
            Scenario::RegisterPublishProtected => field::SIGNATURE + 1,
            _ => field::TOKEN + 1,
        };
        if let Some(i) = self.rows.iter().position(|r| r.len() < needed) {
            bail!(
                "user {} of the CSV has {} fields; --scenario {} needs {needed}{}",
                i + 1,
                self.rows[i].len(),
                scenario.name(),
                if needed > field::TOKEN + 1 {
                    " (impu;client_id;mc_id;token;protected_info;signature, as `mcx-authz token mint-csv --protect-csks` writes them)"
                } else {
                    " (impu;client_id;mc_id;token)"
                }
            );
        }
        Ok(())
    }
}

/// RFC 3261 timers and the request timeout.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// T1 (RTT estimate), 500 ms by default.
    pub t1: Duration,
    /// T2 (largest retransmission interval of a non-INVITE request), 4 s by default.
    pub t2: Duration,
    /// Give up on a request after this long (capped at Timer F = 64·T1).
    pub timeout: Duration,
}

impl Timers {
    /// RFC 3261 17.1.2.2: the wait after the `attempts`-th transmission of a non-INVITE
    /// request: T1 doubling up to T2; T2 once a provisional response came (Proceeding state).
    pub fn interval(&self, attempts: u8, provisional: bool) -> Duration {
        if provisional {
            return self.t2;
        }
        let shift = u32::from(attempts.saturating_sub(1)).min(16);
        (self.t1 * (1u32 << shift)).min(self.t2)
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            timeout: Duration::from_secs(10),
        }
    }
}

/// One load run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server under test.
    pub target: SocketAddr,
    /// The generator's address (port 0: any).
    pub bind: SocketAddr,
    /// Calls started per second.
    pub rate: f64,
    /// Calls in all.
    pub calls: u64,
    /// What each call sends.
    pub scenario: Scenario,
    /// Call `i` uses user `(offset + i) % users`.
    pub user_offset: usize,
    /// Retransmission and timeout.
    pub timers: Timers,
    /// Kernel receive buffer asked for on the generator's socket.
    pub recv_buffer: usize,
}

/// Counters of one method.
#[derive(Clone, Debug)]
pub struct MethodStats {
    /// Requests sent (first transmissions).
    pub sent: u64,
    /// Retransmissions.
    pub retransmissions: u64,
    /// Final responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests given up (no final response in time).
    pub timeouts: u64,
    /// Latency of final responses, µs from the request's scheduled send time (what a client
    /// on schedule would see; no coordinated omission).
    pub latency: Histogram<u64>,
    /// Response time, µs from the request's first transmission (what SIPp's response-time
    /// counters measure): `latency` less the generator's own send lag.
    pub response: Histogram<u64>,
}

impl MethodStats {
    fn new() -> Self {
        MethodStats {
            sent: 0,
            retransmissions: 0,
            statuses: BTreeMap::new(),
            timeouts: 0,
            latency: histogram(),
            response: histogram(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The run's settings.
    pub config: LoadConfig,
    /// Per method, in scenario order.
    pub methods: Vec<(Method, MethodStats)>,
    /// Calls whose every request got a 2xx.
    pub calls_ok: u64,
    /// Calls that got a non-2xx or timed out.
    pub calls_failed: u64,
    /// Responses that matched no outstanding request (late duplicates, strays).
    pub unmatched: u64,
    /// How late the generator sent first requests after their schedule (µs).
    pub send_lag: Histogram<u64>,
    /// Seconds from the first schedule to the last scheduled call.
    pub schedule_secs: f64,
    /// Seconds from start to the end of the run.
    pub elapsed_secs: f64,
    /// CPU seconds (user + system) the generator used during the run.
    pub generator_cpu_secs: f64,
}

/// Per-call progress.
#[derive(Clone, Copy)]
struct Call {
    /// Index of the outstanding request; `u8::MAX` when the call is over.
    step: u8,
    /// Transmissions of the outstanding request so far.
    attempts: u8,
    /// A provisional response came for the outstanding request.
    provisional: bool,
    /// The outstanding request's scheduled send time.
    sched: Option<Instant>,
    /// When it was first transmitted.
    sent: Option<Instant>,
}

const DONE: u8 = u8::MAX;

struct State {
    calls: Vec<Call>,
    /// Retransmission deadlines: (when, call, step, attempts at arming).
    timers: BinaryHeap<Reverse<(Instant, u64, u8, u8)>>,
    stats: Vec<MethodStats>,
    outstanding: u64,
    calls_ok: u64,
    calls_failed: u64,
    unmatched: u64,
    send_lag: Histogram<u64>,
}

struct Engine {
    config: LoadConfig,
    users: Arc<Users>,
    steps: Vec<(Method, Template)>,
    socket: UdpSocket,
    local: SocketAddr,
    pid: u32,
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn user(&self, call: u64) -> &[String] {
        let n = self.users.rows.len();
        let i = (self.config.user_offset as u64 + call) % n as u64;
        &self.users.rows[i as usize]
    }

    fn render(&self, call: u64, step: u8, buf: &mut Vec<u8>) {
        let fill = Fill {
            local: self.local,
            pid: self.pid,
            call,
            step: usize::from(step),
            fields: self.user(call),
        };
        self.steps[usize::from(step)].1.render(&fill, buf);
    }

    fn send(&self, buf: &[u8]) {
        // A full socket buffer or an ICMP error: the retransmission timer covers it.
        let _ = self.socket.send_to(buf, self.config.target);
    }

    fn interval(&self, attempts: u8, provisional: bool) -> Duration {
        self.config.timers.interval(attempts, provisional)
    }

    /// Arms a request's first transmission: state, counters, timer. The caller sends.
    fn arm(&self, s: &mut State, call: u64, step: u8, sched: Instant) {
        let c = &mut s.calls[call as usize];
        c.step = step;
        c.attempts = 1;
        c.provisional = false;
        c.sched = Some(sched);
        c.sent = Some(Instant::now());
        s.stats[usize::from(step)].sent += 1;
        let due = Instant::now() + self.interval(1, false);
        s.timers.push(Reverse((due, call, step, 1)));
    }

    /// The sender: first requests on schedule, and every due retransmission.
    fn send_loop(&self, t0: Instant) {
        let rate = self.config.rate;
        let mut buf = Vec::with_capacity(4096);
        let mut retrans = Vec::new();
        let mut next = 0u64;
        let limit = self.config.timers.timeout.min(self.config.timers.t1 * 64);
        loop {
            let now = Instant::now();
            // Due retransmissions and timeouts.
            {
                let mut s = self.lock();
                while let Some(Reverse((due, call, step, attempts))) = s.timers.peek().copied() {
                    if due > now {
                        break;
                    }
                    s.timers.pop();
                    let c = s.calls[call as usize];
                    if c.step != step || c.attempts != attempts {
                        continue; // answered, or re-armed since
                    }
                    let sched = c.sched.unwrap_or(now);
                    if now.duration_since(sched) >= limit {
                        s.stats[usize::from(step)].timeouts += 1;
                        s.calls[call as usize].step = DONE;
                        s.outstanding -= 1;
                        s.calls_failed += 1;
                        continue;
                    }
                    let attempts = attempts.saturating_add(1);
                    s.calls[call as usize].attempts = attempts;
                    s.stats[usize::from(step)].retransmissions += 1;
                    let wait = self.interval(attempts, c.provisional);
                    let due = (now + wait).min(sched + limit);
                    s.timers.push(Reverse((due, call, step, attempts)));
                    retrans.push((call, step));
                }
            }
            for (call, step) in retrans.drain(..) {
                self.render(call, step, &mut buf);
                self.send(&buf);
            }
            // Calls due now.
            while next < self.config.calls {
                let sched = t0 + Duration::from_secs_f64(next as f64 / rate);
                if sched > Instant::now() {
                    break;
                }
                self.render(next, 0, &mut buf);
                {
                    let mut s = self.lock();
                    self.arm(&mut s, next, 0, sched);
                    s.outstanding += 1;
                    let lag = Instant::now().saturating_duration_since(sched);
                    s.send_lag.saturating_record(lag.as_micros() as u64);
                }
                self.send(&buf);
                next += 1;
            }
            let (outstanding, next_timer) = {
                let s = self.lock();
                (s.outstanding, s.timers.peek().map(|r| r.0 .0))
            };
            if next >= self.config.calls && outstanding == 0 {
                return;
            }
            // Sleep to the next event: a scheduled call, a timer, at most 5 ms.
            let now = Instant::now();
            let mut wake = now + Duration::from_millis(5);
            if next < self.config.calls {
                wake = wake.min(t0 + Duration::from_secs_f64(next as f64 / rate));
            }
            if let Some(t) = next_timer {
                wake = wake.min(t);
            }
            if wake > now {
                std::thread::sleep(wake - now);
            }
        }
    }

    /// The receiver: matches responses to outstanding requests, records latency, sends the
    /// call's next request.
    fn recv_loop(&self) {
        let mut buf = vec![0u8; 65_535];
        let mut out = Vec::with_capacity(4096);
        while !self.stop.load(Ordering::Relaxed) {
            let n = match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(_) => continue, // read timeout (checks stop) or ICMP
            };
            let at = Instant::now();
            let Some(r) = parse_response(&buf[..n]) else {
                self.lock().unmatched += 1;
                continue;
            };
            let follow = {
                let mut s = self.lock();
                let Some(c) = s.calls.get(r.call as usize).copied() else {
                    s.unmatched += 1;
                    continue;
                };
                let step = r.cseq.checked_sub(1).and_then(|x| u8::try_from(x).ok());
                if c.step == DONE || step != Some(c.step) {
                    s.unmatched += 1;
                    continue;
                }
                let step = c.step;
                if r.status < 200 {
                    s.calls[r.call as usize].provisional = true;
                    continue;
                }
                let sched = c.sched.unwrap_or(at);
                let st = &mut s.stats[usize::from(step)];
                st.latency
                    .saturating_record(at.saturating_duration_since(sched).as_micros() as u64);
                let sent = c.sent.unwrap_or(sched);
                st.response
                    .saturating_record(at.saturating_duration_since(sent).as_micros() as u64);
                *st.statuses.entry(r.status).or_default() += 1;
                let last = usize::from(step) + 1 == self.steps.len();
                if (200..300).contains(&r.status) && !last {
                    self.arm(&mut s, r.call, step + 1, at);
                    Some((r.call, step + 1))
                } else {
                    s.calls[r.call as usize].step = DONE;
                    s.outstanding -= 1;
                    if (200..300).contains(&r.status) {
                        s.calls_ok += 1;
                    } else {
                        s.calls_failed += 1;
                    }
                    None
                }
            };
            if let Some((call, step)) = follow {
                self.render(call, step, &mut out);
                self.send(&out);
            }
        }
    }
}

/// What the generator reads of a response.
#[derive(Debug, PartialEq, Eq)]
struct ResponseKey {
    status: u16,
    call: u64,
    cseq: u32,
}

/// Status, call number (from the Call-ID the generator wrote) and CSeq number of a response.
fn parse_response(msg: &[u8]) -> Option<ResponseKey> {
    let text = std::str::from_utf8(msg).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("SIP/2.0 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let (mut call, mut cseq) = (None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let value = value.trim();
        if name.eq_ignore_ascii_case("call-id") || name == "i" {
            let digits = value.strip_prefix(CALL_ID_PREFIX)?;
            call = digits.split('-').next()?.parse().ok();
        } else if name.eq_ignore_ascii_case("cseq") {
            cseq = value.split_whitespace().next()?.parse().ok();
        }
    }
    Some(ResponseKey {
        status,
        call: call?,
        cseq: cseq?,
    })
}

/// CPU seconds (user + system) of this process so far.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs the load; returns what it measured. Bounded: the last call is scheduled at
/// `calls / rate` seconds and every request gives up after `timers.timeout`.
pub fn run(config: LoadConfig, users: Arc<Users>) -> anyhow::Result<Report> {
    if !(config.rate.is_finite() && config.rate > 0.0) {
        bail!("the rate must be positive");
    }
    if users.is_empty() {
        bail!("no users (empty CSV)");
    }
    users.check_for(config.scenario)?;
    let steps: Vec<(Method, Template)> = config
        .scenario
        .steps()
        .into_iter()
        .map(|s| Ok((s.method, Template::compile(&s.template)?)))
        .collect::<anyhow::Result<_>>()?;
    let need = steps.iter().map(|(_, t)| t.fields()).max().unwrap_or(0);
    if let Some((i, row)) = users.rows.iter().enumerate().find(|(_, r)| r.len() < need) {
        bail!(
            "CSV line {} has {} fields; the scenario needs {need} (impu;client_id;mc_id;token)",
            i + 1,
            row.len()
        );
    }
    if config.calls > users.len() as u64 {
        tracing::warn!(
            calls = config.calls,
            users = users.len(),
            "more calls than users: users are reused"
        );
    }
    let calls = usize::try_from(config.calls).context("too many calls")?;
    let socket = bind(config.bind, config.recv_buffer)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let local = socket.local_addr()?;
    let engine = Arc::new(Engine {
        users,
        socket,
        local,
        pid: std::process::id(),
        state: Mutex::new(State {
            calls: vec![
                Call {
                    step: DONE,
                    attempts: 0,
                    provisional: false,
                    sched: None,
                    sent: None,
                };
                calls
            ],
            timers: BinaryHeap::new(),
            stats: steps.iter().map(|_| MethodStats::new()).collect(),
            outstanding: 0,
            calls_ok: 0,
            calls_failed: 0,
            unmatched: 0,
            send_lag: histogram(),
        }),
        steps,
        stop: AtomicBool::new(false),
        config,
    });
    let cpu0 = cpu_secs();
    let started = Instant::now();
    let t0 = started + Duration::from_millis(20);
    let receiver = {
        let e = engine.clone();
        std::thread::Builder::new()
            .name("load-recv".into())
            .spawn(move || e.recv_loop())?
    };
    engine.send_loop(t0);
    engine.stop.store(true, Ordering::Relaxed);
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver thread panicked"))?;
    let elapsed_secs = started.elapsed().as_secs_f64();
    let generator_cpu_secs = cpu_secs() - cpu0;
    let engine = Arc::try_unwrap(engine).map_err(|_| anyhow::anyhow!("engine still shared"))?;
    let methods_of: Vec<Method> = engine.steps.iter().map(|(m, _)| *m).collect();
    let state = engine.state.into_inner().unwrap_or_else(|p| p.into_inner());
    let config = engine.config;
    Ok(Report {
        schedule_secs: config.calls.saturating_sub(1) as f64 / config.rate,
        config,
        methods: methods_of.into_iter().zip(state.stats).collect(),
        calls_ok: state.calls_ok,
        calls_failed: state.calls_failed,
        unmatched: state.unmatched,
        send_lag: state.send_lag,
        elapsed_secs,
        generator_cpu_secs,
    })
}

/// One request at a time, each to its final response (`mcx-authz replay`): the generator's
/// templates, RFC 3261 17.1.2.2 retransmission timers and response matching, for a client that
/// must read each response before it builds the next request. Every request is a call of its
/// own (a fresh Call-ID and branch).
pub struct Transactor {
    socket: UdpSocket,
    target: SocketAddr,
    local: SocketAddr,
    pid: u32,
    timers: Timers,
    call: u64,
    buf: Vec<u8>,
}

impl Transactor {
    /// A client bound to `bind` (port 0: any) that sends to `target`.
    pub fn new(target: SocketAddr, bind_addr: SocketAddr, timers: Timers) -> anyhow::Result<Self> {
        let socket = bind(bind_addr, 0)?;
        let local = socket.local_addr().context("local address")?;
        Ok(Transactor {
            socket,
            target,
            local,
            pid: std::process::id(),
            timers,
            call: 0,
            buf: Vec::new(),
        })
    }

    /// Sends `template` filled with `fields` and waits for its final response (retransmitting
    /// per RFC 3261 until the timeout): the response's bytes, or `None` when none came in time.
    /// Responses to earlier requests (late duplicates) are dropped.
    pub fn exchange(
        &mut self,
        template: &Template,
        fields: &[String],
    ) -> anyhow::Result<Option<Vec<u8>>> {
        self.call += 1;
        let call = self.call;
        let fill = Fill {
            local: self.local,
            pid: self.pid,
            call,
            step: 0,
            fields,
        };
        template.render(&fill, &mut self.buf);
        let request = std::mem::take(&mut self.buf);
        let deadline = Instant::now() + self.timers.timeout.min(self.timers.t1 * 64);
        let mut attempts: u8 = 1;
        let mut provisional = false;
        let _ = self.socket.send_to(&request, self.target);
        let mut next = Instant::now() + self.timers.interval(attempts, provisional);
        let mut rbuf = vec![0u8; 65_536];
        let result = loop {
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            if now >= next {
                attempts = attempts.saturating_add(1);
                let _ = self.socket.send_to(&request, self.target);
                next = now + self.timers.interval(attempts, provisional);
            }
            let wait = next.min(deadline).saturating_duration_since(Instant::now());
            self.socket
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .context("socket timeout")?;
            let n = match self.socket.recv_from(&mut rbuf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e).context("receiving a response"),
            };
            let msg = &rbuf[..n];
            match parse_response(msg) {
                Some(k) if k.call == call && k.status >= 200 => break Some(msg.to_vec()),
                Some(k) if k.call == call => {
                    provisional = true;
                    next = Instant::now() + self.timers.interval(attempts, true);
                }
                _ => {}
            }
        };
        self.buf = request;
        Ok(result)
    }
}

fn bind(addr: SocketAddr, recv_buffer: usize) -> anyhow::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if recv_buffer > 0 {
        let _ = socket.set_recv_buffer_size(recv_buffer);
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.into())
}

/// The quantiles reported.
pub const QUANTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("count".into(), json!(h.len()));
    for (name, q) in QUANTILES {
        m.insert(name.into(), json!(h.value_at_quantile(q)));
    }
    m.insert("max".into(), json!(h.max()));
    m.insert("mean".into(), json!((h.mean() * 10.0).round() / 10.0));
    Value::Object(m)
}

impl Report {
    /// Whether every call completed with 2xx answers.
    pub fn all_ok(&self) -> bool {
        self.calls_failed == 0 && self.calls_ok == self.config.calls
    }

    /// The JSON summary (latencies in µs).
    pub fn json(&self) -> Value {
        let methods: serde_json::Map<String, Value> = self
            .methods
            .iter()
            .map(|(m, s)| {
                let statuses: serde_json::Map<String, Value> = s
                    .statuses
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                (
                    m.label().to_owned(),
                    json!({
                        "sent": s.sent,
                        "retransmissions": s.retransmissions,
                        "timeouts": s.timeouts,
                        "statuses": statuses,
                        "latency_us": latency_json(&s.latency),
                        "response_us": latency_json(&s.response),
                    }),
                )
            })
            .collect();
        json!({
            "target": self.config.target.to_string(),
            "scenario": self.config.scenario.name(),
            "rate": self.config.rate,
            "calls": self.config.calls,
            "calls_ok": self.calls_ok,
            "calls_failed": self.calls_failed,
            "unmatched_responses": self.unmatched,
            "retransmissions": self.methods.iter().map(|(_, s)| s.retransmissions).sum::<u64>(),
            "schedule_secs": self.schedule_secs,
            "elapsed_secs": (self.elapsed_secs * 1000.0).round() / 1000.0,
            "generator_cpu_secs": (self.generator_cpu_secs * 1000.0).round() / 1000.0,
            "timers_ms": {
                "t1": self.config.timers.t1.as_millis() as u64,
                "t2": self.config.timers.t2.as_millis() as u64,
                "timeout": self.config.timers.timeout.as_millis() as u64,
            },
            "methods": methods,
            "send_lag_us": latency_json(&self.send_lag),
        })
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{} calls of {} at {}/s to {}: {} ok, {} failed, {} unmatched responses; {:.2} s, generator CPU {:.2} s",
            self.config.calls,
            self.config.scenario.name(),
            self.config.rate,
            self.config.target,
            self.calls_ok,
            self.calls_failed,
            self.unmatched,
            self.elapsed_secs,
            self.generator_cpu_secs
        );
        let _ = writeln!(
            t,
            "{:<11} {:>8} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  statuses",
            "method",
            "sent",
            "retrans",
            "t/o",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "mean µs"
        );
        let row = |t: &mut String,
                   name: &str,
                   sent: String,
                   re: String,
                   to: String,
                   h: &Histogram<u64>,
                   statuses: String| {
            let _ = writeln!(
                t,
                "{name:<11} {sent:>8} {re:>7} {to:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10.1}  {statuses}",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                h.mean()
            );
        };
        for (m, s) in &self.methods {
            let statuses = s
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ");
            row(
                &mut t,
                m.label(),
                s.sent.to_string(),
                s.retransmissions.to_string(),
                s.timeouts.to_string(),
                &s.latency,
                statuses,
            );
        }
        row(
            &mut t,
            "(send lag)",
            String::new(),
            String::new(),
            String::new(),
            &self.send_lag,
            String::new(),
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_call_and_step_of_a_response() {
        let r = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x\r\ni: mcxload-1234-99@127.0.0.1\r\nCSeq: 2 PUBLISH\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_response(r),
            Some(ResponseKey {
                status: 200,
                call: 1234,
                cseq: 2
            })
        );
        assert_eq!(
            parse_response(b"SIP/2.0 200 OK\r\nCall-ID: other\r\nCSeq: 1 X\r\n\r\n"),
            None
        );
        assert_eq!(parse_response(b"REGISTER sip:x SIP/2.0\r\n\r\n"), None);
    }

    #[test]
    fn csv_header_and_fields() {
        let u = Users::parse_csv("SEQUENTIAL\nsip:a@x;c;m;t\n\nsip:b@x;c;m;t\n").unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u.rows[1][0], "sip:b@x");
    }

    #[test]
    fn every_scenario_template_compiles_and_names_its_user() {
        for sc in [
            Scenario::RegisterPublish,
            Scenario::RegisterPublishDeregister,
            Scenario::RegisterPublishProtected,
        ] {
            for step in sc.steps() {
                let t = Template::compile(&step.template).unwrap();
                let fields: Vec<String> = [
                    "sip:u1@ims.example.org",
                    "urn:uuid:1",
                    "sip:m@x",
                    "TOK",
                    "<mcpttinfo>SEALED</mcpttinfo>",
                    "<Signature>SIG</Signature>",
                ]
                .map(String::from)
                .to_vec();
                let mut out = Vec::new();
                t.render(
                    &Fill {
                        local: "127.0.0.1:1".parse().unwrap(),
                        pid: 1,
                        call: 5,
                        step: 0,
                        fields: &fields,
                    },
                    &mut out,
                );
                let s = String::from_utf8(out).unwrap();
                assert!(s.contains("<sip:u1@ims.example.org>"), "{s}");
                if step.method == Method::Publish {
                    if sc == Scenario::RegisterPublishProtected {
                        // Clause 9: the protected info part (with its Content-ID) and its
                        // signature part; the token in clear is nowhere.
                        assert!(!s.contains("TOK"), "{s}");
                        assert!(
                            s.contains("Content-ID: <info@mcx-authz.lab>\r\n\r\n<mcpttinfo>SEALED</mcpttinfo>\r\n--mcx-boundary\r\nContent-Type: application/vnd.3gpp.mcptt-signed+xml\r\n\r\n<Signature>SIG</Signature>\r\n--mcx-boundary--"),
                            "{s}"
                        );
                    } else {
                        assert!(s.contains(">TOK<"), "{s}");
                    }
                }
                // Content-Length counts the body exactly.
                let (head, body) = s.split_once("\r\n\r\n").unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(len, body.len(), "{s}");
            }
        }
    }

    #[test]
    fn a_protected_scenario_needs_the_protected_fields() {
        let clear = Users::parse_csv("sip:a@x;c;m;t\n").unwrap();
        assert!(clear.check_for(Scenario::RegisterPublish).is_ok());
        let e = clear
            .check_for(Scenario::RegisterPublishProtected)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--protect-csks"), "{e}");
        let protected = Users::parse_csv("sip:a@x;c;m;t;<i/>;<s/>\n").unwrap();
        assert!(protected
            .check_for(Scenario::RegisterPublishProtected)
            .is_ok());
        assert!(Users::parse_csv("sip:a@x;c;m\n")
            .unwrap()
            .check_for(Scenario::RegisterPublish)
            .is_err());
    }

    #[test]
    fn retransmission_intervals_follow_rfc3261() {
        let t = Timers::default();
        let ms = |a, p| t.interval(a, p).as_millis();
        assert_eq!(
            [
                ms(1, false),
                ms(2, false),
                ms(3, false),
                ms(4, false),
                ms(9, false)
            ],
            [500, 1000, 2000, 4000, 4000]
        );
        assert_eq!(ms(1, true), 4000);
    }
}
