//! Issue 13: no acknowledged binding is ever lost. The real `mcx-authz serve` binary with its
//! embedded store (redb) in a temporary data dir, on fixed loopback ports so that a restarted
//! server answers where the killed one did.
//!
//! - **Kill -9 under load:** worker threads bind users over UDP (third-party REGISTER, then
//!   PUBLISH with the user's token, retransmitting as a SIP client does) while the server is
//!   killed with SIGKILL at random moments and started again. At the end every user whose
//!   PUBLISH got a 200 is bound with its own MC service ID and the SIP-ETag of that 200, which
//!   still refreshes (200); no IMPU is bound to an MC service ID it never presented.
//! - **SIPp, 1 000 users:** SIPp binds 1 000 users; after `kill -9` and a restart all 1 000 are
//!   still bound, each with its ETag, and each ETag refreshes with 200.
//! - **Corruption:** a truncated, garbage or empty store file stops the start with an error that
//!   names the file and `mcx-authz store check`; the file is left as it was.
//!
//! Needs `sipp` (Debian sip-tester, `bash .ci/install-deps.sh`): the SIPp test FAILS without it.

mod common;
mod external;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{publish_auth, third_party_register, SipMsg, SipReply, PSI_MCPTT};
use external::*;

/// A server with a durable store in `scratch/store`, on fixed ports, that can be killed and
/// started again.
struct Durable {
    scratch: Scratch,
    config: PathBuf,
    lab_dir: PathBuf,
    sip: SocketAddr,
    server: Option<McxServer>,
    starts: u32,
}

impl Durable {
    fn new(name: &str) -> Durable {
        Durable::with_store(name, None)
    }

    /// With `store` as the `[store]` table's body (default: redb in `scratch/store`).
    fn with_store(name: &str, store: Option<String>) -> Durable {
        let scratch = Scratch::new(name);
        let lab_dir = scratch.join("lab");
        let keygen = run_bounded(
            "mcx-authz token keygen",
            Command::new(mcx_bin())
                .args(["token", "keygen", "--alg", "ES256", "--data-dir"])
                .arg(&lab_dir),
            Duration::from_secs(30),
        );
        assert_eq!(keygen.code(), Some(0), "token keygen: {keygen:?}");
        let base = free_ports(2);
        let config = scratch.join("mcx.toml");
        std::fs::write(
            &config,
            format!(
                "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[http]\nenabled = false\n\n\
                 [store]\n{store}\n\n\
                 [policy]\ntoken_protection = \"optional\"\n\n\
                 [sip]\nudp = [\"127.0.0.1:{base}\"]\ntcp = [\"127.0.0.1:{base}\"]\n",
                admin = base + 1,
                store = store
                    .unwrap_or_else(|| format!("dir = \"{}\"", scratch.join("store").display())),
            ),
        )
        .expect("write config");
        Durable {
            sip: SocketAddr::from(([127, 0, 0, 1], base)),
            scratch,
            config,
            lab_dir,
            server: None,
            starts: 0,
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.scratch.join("store")
    }

    fn start(&mut self) -> &McxServer {
        assert!(self.server.is_none());
        let s = McxServer::spawn(&self.scratch, &self.config, self.lab_dir.clone());
        assert_eq!(s.udp, self.sip, "the restarted server answers where it did");
        self.starts += 1;
        self.server = Some(s);
        self.server.as_ref().unwrap()
    }

    fn server(&self) -> &McxServer {
        self.server.as_ref().expect("running")
    }

    /// SIGKILL, by PID: no shutdown path runs.
    fn kill9(&mut self) {
        let mut s = self.server.take().expect("running");
        s.kill9();
    }

    fn mint_csv(&self, users: usize, prefix: &str) -> Vec<User> {
        let out = self.scratch.join(&format!("{prefix}.csv"));
        let r = run_bounded(
            "mcx-authz token mint-csv",
            Command::new(mcx_bin())
                .args(["token", "mint-csv", "--users", &users.to_string()])
                .args(["--impu-prefix", prefix, "--data-dir"])
                .arg(&self.lab_dir)
                .arg("--out")
                .arg(&out),
            Duration::from_secs(120),
        );
        assert_eq!(r.code(), Some(0), "mint-csv: {r:?}");
        read_users(&out)
    }
}

#[derive(Clone, Debug)]
struct User {
    impu: String,
    client_id: String,
    mc_id: String,
    token: String,
}

fn read_users(csv: &Path) -> Vec<User> {
    std::fs::read_to_string(csv)
        .expect("read CSV")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            User {
                impu: f[0].into(),
                client_id: f[1].into(),
                mc_id: f[2].into(),
                token: f[3].into(),
            }
        })
        .collect()
}

/// Sends `msg` and retransmits it (same bytes, same transaction) every 200 ms until a final
/// response of this transaction arrives or `limit` passes: what a SIP client over UDP does,
/// including across a server restart.
fn transact(
    socket: &UdpSocket,
    server: SocketAddr,
    msg: &SipMsg,
    limit: Duration,
) -> Option<SipReply> {
    let local = socket.local_addr().unwrap();
    let bytes = msg.to_bytes(&local);
    let call_id = msg.call_id();
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65_535];
    while Instant::now() < deadline {
        let _ = socket.send_to(&bytes, server);
        let wait_until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < wait_until {
            socket
                .set_read_timeout(Some(
                    wait_until
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ))
                .unwrap();
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let reply = SipReply::parse(&buf[..n]);
                    // A late answer to an earlier transaction of this socket is not ours.
                    if reply.header("Call-ID").as_deref() == Some(call_id.as_str())
                        && reply.status >= 200
                    {
                        return Some(reply);
                    }
                }
                // Timeout, or ICMP port unreachable while the server is down.
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
    None
}

/// What one user's PUBLISH got.
#[derive(Clone, Debug)]
enum Got {
    /// 200 with this SIP-ETag.
    Ok(String),
    /// Another final response (its status, shown when the test fails).
    Refused(#[allow(dead_code)] u16),
    /// No final response in time.
    Nothing,
}

fn bind_user(socket: &UdpSocket, server: SocketAddr, u: &User) -> Got {
    let limit = Duration::from_secs(20);
    match transact(socket, server, &third_party_register(&u.impu, 3600), limit) {
        Some(r) if r.status == 200 => {}
        Some(_) | None => return Got::Nothing,
    }
    match transact(
        socket,
        server,
        &publish_auth(&u.impu, &u.token, &u.client_id, None, 3600),
        limit,
    ) {
        Some(r) if r.status == 200 => Got::Ok(r.etag().expect("a 2xx to PUBLISH carries SIP-ETag")),
        Some(r) => Got::Refused(r.status),
        None => Got::Nothing,
    }
}

/// RFC 3903 refresh: a body-less PUBLISH with `SIP-If-Match`.
fn refresh(impu: &str, etag: &str) -> SipMsg {
    SipMsg::new("PUBLISH", PSI_MCPTT)
        .header("From", &format!("<{impu}>;tag=ue"))
        .header("To", &format!("<{impu}>"))
        .header("P-Asserted-Identity", &format!("<{impu}>"))
        .header("Event", "poc-settings")
        .header("Accept-Contact", "*;+g.3gpp.mcptt;require;explicit")
        .header("Expires", "3600")
        .header("SIP-If-Match", etag)
}

/// Refreshes every (IMPU, ETag) from a few threads; returns the statuses.
fn refresh_all(server: SocketAddr, tags: &[(String, String)]) -> Vec<(String, u16)> {
    let chunks: Vec<Vec<(String, String)>> = tags
        .chunks(tags.len().div_ceil(4).max(1))
        .map(<[_]>::to_vec)
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                chunk
                    .into_iter()
                    .map(|(impu, etag)| {
                        let st = transact(
                            &socket,
                            server,
                            &refresh(&impu, &etag),
                            Duration::from_secs(10),
                        )
                        .map_or(0, |r| r.status);
                        (impu, st)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// IMPU → (MC client ID, MC service ID, SIP-ETag), from `GET /bindings`.
fn bound(server: &McxServer) -> BTreeMap<String, (String, String, String)> {
    server
        .bindings()
        .into_iter()
        .map(|b| (b.impu, (b.client_id, b.mc_id, b.etag.unwrap_or_default())))
        .collect()
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_binding() {
    let mut d = Durable::new("kill9-load");
    kill_9_under_load(&mut d, 600, 4);
}

/// Binds `users_n` users from six threads while the server is killed `kills_n` times; then checks
/// what every 200 promised (see the module docs).
fn kill_9_under_load(d: &mut Durable, users_n: usize, kills_n: u32) -> usize {
    let threads = 6usize;
    let users = d.mint_csv(users_n, "kill");
    let by_impu: BTreeMap<String, User> =
        users.iter().map(|u| (u.impu.clone(), u.clone())).collect();
    d.start();
    let results: Arc<Mutex<Vec<(usize, Got)>>> = Arc::default();
    let sip = d.sip;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let users = users.clone();
            let results = results.clone();
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                for i in (t..users.len()).step_by(threads) {
                    let got = bind_user(&socket, sip, &users[i]);
                    results.lock().unwrap().push((i, got));
                }
            })
        })
        .collect();
    // SIGKILL at random moments while the workers bind (when a random number of users is done,
    // plus a random few milliseconds, so that requests are in flight), then start again at once.
    let mut thresholds: Vec<usize> = (0..kills_n)
        .map(|_| rand::random_range(5..users_n * 9 / 10))
        .collect();
    thresholds.sort_unstable();
    let mut kills = 0;
    let mut killed_at = Vec::new();
    for t in thresholds {
        while results.lock().unwrap().len() < t && !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rand::random_range(0..20)));
        let done = results.lock().unwrap().len();
        if done >= users_n {
            break;
        }
        d.kill9();
        kills += 1;
        killed_at.push(done);
        d.start();
    }
    for w in workers {
        w.join().expect("worker");
    }
    let results = results.lock().unwrap().clone();
    assert_eq!(results.len(), users_n);
    let acked: Vec<(usize, String)> = results
        .iter()
        .filter_map(|(i, g)| match g {
            Got::Ok(tag) => Some((*i, tag.clone())),
            _ => None,
        })
        .collect();
    let refused: Vec<&(usize, Got)> = results
        .iter()
        .filter(|(_, g)| matches!(g, Got::Refused(_)))
        .collect();
    println!(
        "{kills} kills (after {killed_at:?} users), {} starts; {} of {users_n} PUBLISHes answered 200, {} refused, {} unanswered",
        d.starts,
        acked.len(),
        refused.len(),
        users_n - acked.len() - refused.len()
    );
    assert!(kills >= 1, "the server was killed under load");
    assert!(refused.is_empty(), "no PUBLISH is refused: {refused:?}");

    // Once more, for good measure: what is there now must survive a kill with nothing in flight.
    d.kill9();
    d.start();
    let table = bound(d.server());
    // Every 200 is durable: bound, with its own MC service ID and the ETag of that 200.
    for (i, tag) in &acked {
        let u = &users[*i];
        let b = table
            .get(&u.impu)
            .unwrap_or_else(|| panic!("{} got 200 but is not bound after kill -9", u.impu));
        assert_eq!(
            b,
            &(u.client_id.clone(), u.mc_id.clone(), tag.clone()),
            "{}",
            u.impu
        );
    }
    // Nobody is bound to an MC service ID it never presented (unanswered ones may be bound,
    // to their own user: durable, then killed before the 200 went out).
    for (impu, (client, mc_id, _)) in &table {
        let u = by_impu
            .get(impu)
            .unwrap_or_else(|| panic!("unknown IMPU bound: {impu}"));
        assert_eq!((client, mc_id), (&u.client_id, &u.mc_id), "{impu}");
    }
    // And every acknowledged ETag still names its publication.
    let tags: Vec<(String, String)> = acked
        .iter()
        .map(|(i, t)| (users[*i].impu.clone(), t.clone()))
        .collect();
    let statuses = refresh_all(d.sip, &tags);
    let bad: Vec<_> = statuses.iter().filter(|(_, s)| *s != 200).collect();
    assert!(
        bad.is_empty(),
        "refresh with an acknowledged ETag after kill -9: {bad:?}"
    );
    acked.len()
}

#[test]
fn sipp_binds_1000_users_and_all_survive_kill_9() {
    const USERS: usize = 1000;
    let sipp = find_tool("sipp").unwrap_or_else(|| {
        panic!("sipp is not installed: bash .ci/install-deps.sh installs the Debian package sip-tester")
    });
    let mut d = Durable::new("kill9-sipp");
    let users = d.mint_csv(USERS, "sipp");
    let csv = d.scratch.join("sipp.csv");
    let xml = d.scratch.join("register_publish.xml");
    let w = run_bounded(
        "mcx-authz load --write-sipp",
        Command::new(mcx_bin())
            .args(["load", "--scenario", "register-publish", "--write-sipp"])
            .arg(&xml),
        Duration::from_secs(30),
    );
    assert_eq!(w.code(), Some(0), "write-sipp: {w:?}");
    d.start();
    let sipp_dir = d.scratch.join("sipp");
    std::fs::create_dir_all(&sipp_dir).unwrap();
    let sipp_port = free_ports(1);
    let run = run_bounded(
        "sipp",
        Command::new(&sipp)
            .current_dir(&sipp_dir)
            .arg("-sf")
            .arg(&xml)
            .arg(d.sip.to_string())
            .args(["-t", "u1", "-i", "127.0.0.1", "-p", &sipp_port.to_string()])
            .args(["-m", &USERS.to_string(), "-r", "250", "-rp", "1000"])
            .arg("-inf")
            .arg(&csv)
            .args(["-nostdin", "-timeout", "90s", "-timeout_error"])
            .args(["-default_behaviors", "all,-bye"]),
        Duration::from_secs(120),
    );
    assert_eq!(
        run.code(),
        Some(0),
        "SIPp: every call must get its two 200s: {run:?}"
    );
    let before = bound(d.server());
    assert_eq!(before.len(), USERS, "SIPp bound every user");
    for u in &users {
        assert_eq!(before[&u.impu].1, u.mc_id);
    }

    d.kill9();
    d.start();
    let after = bound(d.server());
    assert_eq!(
        after, before,
        "after kill -9 every binding is there, ETags included"
    );
    let tags: Vec<(String, String)> = after
        .iter()
        .map(|(i, (_, _, t))| (i.clone(), t.clone()))
        .collect();
    let statuses = refresh_all(d.sip, &tags);
    let ok = statuses.iter().filter(|(_, s)| *s == 200).count();
    assert_eq!(
        ok,
        USERS,
        "every ETag refreshes after the restart: {:?}",
        statuses
            .iter()
            .filter(|(_, s)| *s != 200)
            .take(5)
            .collect::<Vec<_>>()
    );
}

/// The start with a damaged store must fail, name the file and `store check`, and leave it.
fn assert_refused(d: &Durable, what: &str) {
    let file = d.store_dir().join("mcx.redb");
    let before = std::fs::read(&file).unwrap();
    let r = run_bounded(
        "mcx-authz serve (damaged store)",
        Command::new(mcx_bin())
            .arg("serve")
            .arg("--config")
            .arg(&d.config)
            .arg("--data-dir")
            .arg(&d.lab_dir)
            .env("RUST_LOG", "warn"),
        Duration::from_secs(30),
    );
    assert_ne!(r.code(), Some(0), "{what}: serve must not start: {r:?}");
    assert!(r.status.is_some(), "{what}: serve must stop by itself");
    assert!(
        r.stderr.contains(&file.display().to_string())
            && r.stderr.contains("mcx-authz store check"),
        "{what}: the error names the file and `store check`: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "{what}: the file is left as it was"
    );
    let check = run_bounded(
        "mcx-authz store check",
        Command::new(mcx_bin())
            .args(["store", "check", "--dir"])
            .arg(d.store_dir()),
        Duration::from_secs(30),
    );
    assert_eq!(
        check.code(),
        Some(1),
        "{what}: store check fails: {check:?}"
    );
    assert!(check.stdout.contains("cannot be used"), "{what}: {check:?}");
}

#[test]
fn a_damaged_store_stops_the_start_and_is_never_reset() {
    let mut d = Durable::new("corrupt");
    let users = d.mint_csv(20, "corrupt");
    d.start();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for u in &users {
        assert!(matches!(bind_user(&socket, d.sip, u), Got::Ok(_)));
    }
    d.kill9();
    let file = d.store_dir().join("mcx.redb");
    let good = std::fs::read(&file).unwrap();
    // The healthy store checks clean and dumps every IMPU.
    let check = run_bounded(
        "mcx-authz store check",
        Command::new(mcx_bin())
            .args(["store", "check", "--dir"])
            .arg(d.store_dir()),
        Duration::from_secs(30),
    );
    assert_eq!(check.code(), Some(0), "{check:?}");
    assert!(check.stdout.contains("bindings     20"), "{}", check.stdout);
    let dump = run_bounded(
        "mcx-authz store dump",
        Command::new(mcx_bin())
            .args(["store", "dump", "--dir"])
            .arg(d.store_dir()),
        Duration::from_secs(30),
    );
    assert_eq!(dump.code(), Some(0), "{dump:?}");
    for u in &users {
        assert!(
            dump.stdout.contains(&format!("\"impu\":\"{}\"", u.impu)),
            "{}",
            u.impu
        );
    }

    // Truncated to half.
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    assert_refused(&d, "truncated");
    // Garbage of the same size.
    let garbage: Vec<u8> = (0..good.len()).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&file, &garbage).unwrap();
    assert_refused(&d, "garbage");
    // Empty (redb would initialise an empty file: we never let it).
    std::fs::write(&file, b"").unwrap();
    assert_refused(&d, "empty");

    // The good file back: everything is there.
    std::fs::write(&file, &good).unwrap();
    d.start();
    let table = bound(d.server());
    assert_eq!(table.len(), users.len());
}

/// The same kill -9 run against a server whose store is PostgreSQL (one instance; the schema
/// made by `mcx-authz store migrate`): every 200 is a committed transaction.
#[test]
fn postgres_store_keeps_every_acknowledged_binding_across_kill_9() {
    let cluster = Cluster::start();
    let mut d = Durable::with_store(
        "kill9-pg",
        Some(format!(
            "backend = \"postgres\"\nurl = \"{}\"",
            cluster.url()
        )),
    );
    let acked = kill_9_under_load(&mut d, 300, 3);
    // The bindings are PostgreSQL's rows (one per IMPU), not some other store's.
    let mut client = postgres::Client::connect(&cluster.url(), postgres::NoTls).expect("connect");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM mcx_impu", &[])
        .expect("count")
        .get(0);
    assert!(
        rows as usize >= acked && acked > 0,
        "{rows} rows, {acked} acknowledged"
    );
}
