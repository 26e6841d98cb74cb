//! What keeps the server standing under hostile load, and what it reports about itself: runtime
//! counters kept outside the machine's lock (atomics), the per-source rate limiter for senders
//! that are not trusted SIP cores, the listener health behind `/healthz`, and the lab-only fault
//! injection that tests supervision (`POST /fault`, behind `[admin] lab_controls`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::config::LimitsConfig;

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `tcp_max_connections` reached.
    Cap,
    /// `tcp_max_connections_per_source` reached by an untrusted address.
    PerSource,
    /// The untrusted address is over its rate.
    Rate,
}

/// Why a connection was closed by a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Nothing received for `tcp_idle_timeout_secs`.
    Idle,
    /// A message begun was not complete within `tcp_message_timeout_ms`.
    Message,
    /// The TLS handshake did not complete within `tls_handshake_timeout_ms`.
    Handshake,
}

/// Counters and health that the listeners update without the machine's lock.
#[derive(Debug, Default)]
pub struct Vitals {
    /// Stream connections (TCP and TLS) open now.
    pub connections_open: AtomicU64,
    /// Stream connections accepted so far.
    pub connections_accepted: AtomicU64,
    refused: [AtomicU64; 3],
    timeouts: [AtomicU64; 3],
    /// TLS handshakes that failed (bad certificate, protocol error).
    pub tls_handshake_failures: AtomicU64,
    /// Messages dropped by the per-source rate limit (UDP datagrams, stream messages).
    pub rate_limited: AtomicU64,
    /// Requests whose handling panicked (caught; the worker carried on).
    pub worker_panics: AtomicU64,
    /// Listener restarts after the listener task itself ended.
    pub listener_restarts: AtomicU64,
    listeners: Mutex<Vec<ListenerHealth>>,
    /// Lab fault injection.
    pub faults: Faults,
}

/// One listener's health, as `/healthz` shows it.
#[derive(Clone, Debug)]
struct ListenerHealth {
    name: String,
    up: bool,
    restarts: u64,
    worker_panics: u64,
    last_panic: Option<String>,
}

/// A listener's index in [`Vitals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerId(usize);

impl Vitals {
    /// Registers a listener (down until [`Vitals::set_up`]).
    pub fn add_listener(&self, name: String) -> ListenerId {
        let mut l = self.lock();
        l.push(ListenerHealth {
            name,
            up: false,
            restarts: 0,
            worker_panics: 0,
            last_panic: None,
        });
        ListenerId(l.len() - 1)
    }

    /// Marks a listener up or down.
    pub fn set_up(&self, id: ListenerId, up: bool) {
        if let Some(l) = self.lock().get_mut(id.0) {
            l.up = up;
        }
    }

    /// Records that a listener task ended with `why` and is being restarted.
    pub fn listener_failed(&self, id: ListenerId, why: &str) {
        self.listener_restarts.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.lock().get_mut(id.0) {
            l.up = false;
            l.restarts += 1;
            l.last_panic = Some(why.to_owned());
        }
    }

    /// Records a caught panic while handling one request on `id`.
    pub fn worker_panicked(&self, id: ListenerId, why: &str) {
        self.worker_panics.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.lock().get_mut(id.0) {
            l.worker_panics += 1;
            l.last_panic = Some(why.to_owned());
        }
    }

    /// Counts a refused connection.
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed by a timer.
    pub fn timed_out(&self, why: Timeout) {
        self.timeouts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether every listener is up.
    pub fn healthy(&self) -> bool {
        self.lock().iter().all(|l| l.up)
    }

    /// The `/healthz` body: `ok` or `unhealthy`, then one line per listener.
    pub fn health_report(&self) -> (bool, String) {
        let listeners = self.lock().clone();
        let healthy = listeners.iter().all(|l| l.up);
        let mut out = String::from(if healthy { "ok\n" } else { "unhealthy\n" });
        for l in &listeners {
            let _ = write!(
                out,
                "{} {} restarts={} worker_panics={}",
                l.name,
                if l.up { "up" } else { "down" },
                l.restarts,
                l.worker_panics
            );
            if let Some(p) = &l.last_panic {
                let _ = write!(out, " last_panic={p:?}");
            }
            out.push('\n');
        }
        (healthy, out)
    }

    /// Prometheus text for these counters.
    pub fn write_metrics(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            out,
            "mcx_tcp_connections_accepted_total",
            "Stream (TCP, TLS) connections accepted.",
            &[("", load(&self.connections_accepted))],
        );
        gauge(
            out,
            "mcx_tcp_connections_open",
            "Stream connections open now.",
            load(&self.connections_open),
        );
        counter(
            out,
            "mcx_tcp_refused_total",
            "Stream connections closed at accept, by reason.",
            &[
                ("reason=\"cap\"", load(&self.refused[Refusal::Cap as usize])),
                (
                    "reason=\"per_source\"",
                    load(&self.refused[Refusal::PerSource as usize]),
                ),
                (
                    "reason=\"rate\"",
                    load(&self.refused[Refusal::Rate as usize]),
                ),
            ],
        );
        counter(
            out,
            "mcx_tcp_timeouts_total",
            "Stream connections closed by a timer, by kind.",
            &[
                (
                    "kind=\"idle\"",
                    load(&self.timeouts[Timeout::Idle as usize]),
                ),
                (
                    "kind=\"message\"",
                    load(&self.timeouts[Timeout::Message as usize]),
                ),
                (
                    "kind=\"handshake\"",
                    load(&self.timeouts[Timeout::Handshake as usize]),
                ),
            ],
        );
        counter(
            out,
            "mcx_tls_handshake_failures_total",
            "TLS handshakes that failed.",
            &[("", load(&self.tls_handshake_failures))],
        );
        counter(
            out,
            "mcx_rate_limited_total",
            "Messages from untrusted addresses dropped by the per-source rate limit.",
            &[("", load(&self.rate_limited))],
        );
        counter(
            out,
            "mcx_worker_panics_total",
            "Requests whose handling panicked (logged; the worker carried on).",
            &[("", load(&self.worker_panics))],
        );
        counter(
            out,
            "mcx_listener_restarts_total",
            "Listeners restarted after their task ended.",
            &[("", load(&self.listener_restarts))],
        );
        let down = self.lock().iter().filter(|l| !l.up).count();
        gauge(
            out,
            "mcx_listeners_down",
            "Listeners down now (/healthz is unhealthy while this is not 0).",
            down as u64,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ListenerHealth>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes one Prometheus counter family; an empty label string means no labels.
pub fn counter(out: &mut String, name: &str, help: &str, values: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// Writes one Prometheus counter family whose entries each carry their label set
/// (`method="PUBLISH",status="200"`).
pub fn labelled(
    out: &mut String,
    name: &str,
    help: &str,
    entries: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in entries {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// Writes one unlabelled metric: a counter if its name ends in `_total` (the Prometheus naming
/// rule), a gauge otherwise.
pub fn metric(out: &mut String, name: &str, help: &str, value: u64) {
    if name.ends_with("_total") {
        counter(out, name, help, &[("", value)]);
    } else {
        gauge(out, name, help, value);
    }
}

/// Writes one Prometheus gauge.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// Lab fault injection (`POST /fault?panic=worker|listener`, only with `[admin] lab_controls`):
/// the next UDP request handled by a worker panics (caught, counted, the worker carries on), or
/// the next UDP datagram makes the receive loop itself panic (the listener goes down and is
/// restarted after `[limits] listener_restart_ms`). Off unless armed; arming needs lab controls.
#[derive(Debug, Default)]
pub struct Faults {
    worker: AtomicBool,
    listener: AtomicBool,
}

/// Which fault to arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A panic while a UDP worker handles a request.
    WorkerPanic,
    /// A panic in a UDP receive loop, outside any request.
    ListenerPanic,
}

impl Faults {
    /// Arms `fault` for the next UDP message.
    pub fn arm(&self, fault: Fault) {
        match fault {
            Fault::WorkerPanic => self.worker.store(true, Ordering::SeqCst),
            Fault::ListenerPanic => self.listener.store(true, Ordering::SeqCst),
        }
    }

    /// Panics if `fault` is armed (disarming it).
    pub fn trip(&self, fault: Fault) {
        let flag = match fault {
            Fault::WorkerPanic => &self.worker,
            Fault::ListenerPanic => &self.listener,
        };
        if flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::SeqCst) {
            panic!("injected fault: {fault:?} (POST /fault, lab controls)");
        }
    }
}

/// A token bucket per untrusted source address, in a table of bounded size. When the table is
/// full, buckets that have refilled completely are forgotten (they hold no information); if it is
/// still full, new addresses share one overflow bucket, so that a flood from many (possibly
/// spoofed) addresses is bounded as a whole.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
    last_prune: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn full_at(&self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= burst
    }
}

impl RateLimiter {
    /// A limiter from `[limits]`; `None` when `untrusted_rate_per_sec` is 0.
    pub fn new(limits: &LimitsConfig) -> Option<RateLimiter> {
        if limits.untrusted_rate_per_sec == 0 {
            return None;
        }
        let burst = f64::from(limits.untrusted_burst.max(1));
        Some(RateLimiter {
            rate: f64::from(limits.untrusted_rate_per_sec),
            burst,
            max_sources: limits.rate_limit_sources.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: Bucket {
                    tokens: burst,
                    at: Instant::now(),
                },
                last_prune: None,
            }),
        })
    }

    /// Whether one more message from `ip` may pass at `now`.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = t.buckets.get_mut(&ip) {
            return b.take(now, rate, burst);
        }
        if t.buckets.len() >= self.max_sources {
            // At most one pruning scan per second, so a flood of new addresses does not turn
            // every packet into a full scan.
            let due = t
                .last_prune
                .is_none_or(|p| now.saturating_duration_since(p) >= Duration::from_secs(1));
            if due {
                t.last_prune = Some(now);
                t.buckets.retain(|_, b| !b.full_at(now, rate, burst));
            }
            if t.buckets.len() >= self.max_sources {
                return t.overflow.take(now, rate, burst);
            }
        }
        let mut b = Bucket {
            tokens: burst,
            at: now,
        };
        let ok = b.take(now, rate, burst);
        t.buckets.insert(ip, b);
        ok
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }
}

/// The message of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32, sources: usize) -> LimitsConfig {
        LimitsConfig {
            untrusted_rate_per_sec: rate,
            untrusted_burst: burst,
            rate_limit_sources: sources,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let r = RateLimiter::new(&limits(10, 5, 100)).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let passed = (0..20).filter(|_| r.allow(ip, t0)).count();
        assert_eq!(passed, 5, "the burst");
        // 10/s: after 0.5 s, five more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..20).filter(|_| r.allow(ip, t1)).count(), 5);
        // Another source is not affected.
        assert!(r.allow("192.0.2.2".parse().unwrap(), t1));
        assert!(RateLimiter::new(&limits(0, 5, 100)).is_none(), "0 = off");
    }

    #[test]
    fn the_table_stays_bounded_under_many_sources() {
        let r = RateLimiter::new(&limits(10, 2, 100)).unwrap();
        let t0 = Instant::now();
        let mut passed = 0;
        for i in 0..100_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            passed += usize::from(r.allow(ip, t0));
        }
        assert!(r.tracked() <= 100, "{}", r.tracked());
        // 100 tracked sources × burst 2, plus the shared overflow bucket's burst 2.
        assert_eq!(
            passed,
            100 * 2 / 2 + 2,
            "first message of each tracked source + overflow"
        );
        // Later, refilled buckets are forgotten and new sources get their own again.
        let later = t0 + Duration::from_secs(5);
        assert!(r.allow("198.51.100.7".parse().unwrap(), later));
        assert!(r.tracked() <= 100);
    }

    #[test]
    fn health_turns_unhealthy_while_a_listener_is_down() {
        let v = Vitals::default();
        let a = v.add_listener("udp 127.0.0.1:5060".into());
        let b = v.add_listener("tcp 127.0.0.1:5060".into());
        v.set_up(a, true);
        assert!(!v.healthy(), "b not up yet");
        v.set_up(b, true);
        assert!(v.healthy());
        v.worker_panicked(a, "boom");
        let (ok, text) = v.health_report();
        assert!(ok, "a caught worker panic does not take the listener down");
        assert!(text.contains("worker_panics=1"), "{text}");
        v.listener_failed(b, "boom");
        let (ok, text) = v.health_report();
        assert!(!ok);
        assert!(text.starts_with("unhealthy\n"), "{text}");
        assert!(
            text.contains("tcp 127.0.0.1:5060 down restarts=1"),
            "{text}"
        );
    }

    #[test]
    fn faults_fire_once_when_armed() {
        let f = Faults::default();
        f.trip(Fault::WorkerPanic);
        f.arm(Fault::WorkerPanic);
        assert!(std::panic::catch_unwind(|| f.trip(Fault::WorkerPanic)).is_err());
        f.trip(Fault::WorkerPanic);
    }

    #[test]
    fn metrics_render_in_the_prometheus_text_format() {
        // A name ending in _total is a counter, anything else a gauge; labelled entries carry
        // their whole label set.
        let mut out = String::new();
        metric(&mut out, "a_total", "A.", 3);
        metric(&mut out, "b", "B.", 4);
        labelled(
            &mut out,
            "c_total",
            "C.",
            [("k=\"x\"".to_owned(), 1), ("k=\"y\"".to_owned(), 2)],
        );
        assert_eq!(
            out,
            "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n\
             # HELP b B.\n# TYPE b gauge\nb 4\n\
             # HELP c_total C.\n# TYPE c_total counter\nc_total{k=\"x\"} 1\nc_total{k=\"y\"} 2\n"
        );
    }
}
