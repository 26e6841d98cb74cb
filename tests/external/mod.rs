//! Harness for the suites that drive external programs against the real binary: `mcx-authz
//! serve` started as a child process (its printed listener lines give the ephemeral ports), the
//! lab IdMS key made with `mcx-authz token keygen`, SIPp and Kamailio. Every child runs on
//! loopback, is bounded in time, and is killed by its PID when its guard drops (also on panic).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use mcx_authz::server::admin::BindingView;
use mcx_authz::token::LabIdms;

/// The repository root (where `tests/sipp/` and `tests/interop/` are).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `mcx-authz` binary Cargo built for this test run.
pub fn mcx_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcx-authz")
}

/// Where `tool` is: on `PATH`, or (for Kamailio, installed to /usr/sbin) in an sbin directory
/// that a non-root `PATH` may lack.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Fails the calling test when one of `tools` is not installed, naming the command that installs
/// it. Never skips: a suite whose tool is missing must not count as passed (issue 14 item 5).
/// `./test` (the README's test command) runs `.ci/install-deps.sh` first, so there every tool is
/// present.
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| find_tool(t).is_none())
        .map(|t| {
            let package = match *t {
                "sipp" => "sip-tester",
                "kamailio" => "kamailio kamailio-tls-modules kamailio-python3-modules",
                other => other,
            };
            format!("{t} (Debian package {package})")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not installed: {}. Install with: bash .ci/install-deps.sh (or run ./test, which does)",
        missing.join(", ")
    );
}

/// `PATH` with the directories of `tools` added, for scripts that call them by name.
pub fn path_with(tools: &[&str]) -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = tools
        .iter()
        .filter_map(|t| find_tool(t))
        .filter_map(|p| p.parent().map(Path::to_owned))
        .collect();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH entries without ':'")
}

static PORTS_GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A base port `p` such that `p .. p + count` are free for UDP and TCP on 127.0.0.1 right now,
/// and never handed out before by this process. Chosen below Linux's ephemeral range (32768+), so
/// the kernel does not hand them to other sockets in the meantime.
pub fn free_ports(count: u16) -> u16 {
    let mut given = PORTS_GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 20_000 + (seed.wrapping_add(n.wrapping_mul(37)) % 12_000) as u16;
        let ports: Vec<u16> = (base..base + count).collect();
        if ports.iter().any(|p| given.contains(p)) {
            continue;
        }
        let free = ports.iter().all(|&p| {
            UdpSocket::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            given.extend(ports);
            return base;
        }
    }
    panic!("no {count} consecutive free loopback ports in 20000..32000");
}

/// A scratch directory, removed on drop unless the test is failing (then its path is printed,
/// with the logs inside).
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mcx-ext-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped. With `group`, the child leads its
/// own process group and a drop first sends SIGTERM to that child (a script then runs its own
/// cleanup, which stops what it started by PID), then SIGKILL to the group after a grace period.
pub struct ChildGuard {
    pub child: Child,
    name: String,
    group: bool,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_owned(),
            group: false,
        }
    }

    /// Like [`ChildGuard::spawn`], in a new process group led by the child.
    pub fn spawn_group(name: &str, cmd: &mut Command) -> ChildGuard {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
        let mut g = ChildGuard::spawn(name, cmd);
        g.group = true;
        g
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` for the child to exit; `None` (after killing it) on timeout.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    self.stop();
                    return None;
                }
            }
        }
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if self.group {
            signal(&self.id().to_string(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Whatever of the group is left (the leader's PID is the group's ID).
            signal(&format!("-{}", self.id()), "KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("stopped {} (pid {})", self.name, self.id());
        }
    }
}

fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", target])
        .stderr(Stdio::null())
        .status();
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` to completion within `limit` (killed after), its stdout and stderr captured.
pub fn run_bounded(name: &str, cmd: &mut Command, limit: Duration) -> Finished {
    let started = Instant::now();
    let mut g = ChildGuard::spawn(
        name,
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = drain(g.child.stdout.take());
    let err = drain(g.child.stderr.take());
    let status = g.wait_timeout(limit);
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let mut bytes = Vec::new();
            let _ = p.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    })
}

/// What a bounded run ended with.
#[derive(Debug)]
pub struct Finished {
    /// `None`: killed at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// `mcx-authz serve` as a child process on ephemeral loopback ports, with a lab IdMS key made by
/// `mcx-authz token keygen` in its data dir.
pub struct McxServer {
    /// SIP over UDP (the printed `SIP over UDP` line).
    pub udp: SocketAddr,
    /// SIP over TCP.
    pub tcp: SocketAddr,
    /// SIP over TLS, when the configuration has a `[[sip.tls]]` listener.
    pub tls: Option<SocketAddr>,
    /// The admin view.
    pub admin: SocketAddr,
    /// The KMS/CM/GM listener (the printed `KMS` line), when it runs.
    pub http: Option<SocketAddr>,
    /// The lab IdMS data dir the server trusts.
    pub lab_dir: PathBuf,
    /// The same lab, for minting in the test.
    pub lab: LabIdms,
    child: ChildGuard,
}

impl McxServer {
    /// Starts the server; `policy` is the body of its `[policy]` table (empty for the defaults).
    pub fn start(scratch: &Scratch, policy: &str) -> McxServer {
        McxServer::start_with(scratch, "", policy)
    }

    /// Like [`McxServer::start`], with `sip` appended to the `[sip]` table (lines such as
    /// `trusted_cores = []`, then any `[[sip.tls]]` tables).
    pub fn start_with(scratch: &Scratch, sip: &str, policy: &str) -> McxServer {
        let lab_dir = scratch.join("lab");
        let keygen = run_bounded(
            "mcx-authz token keygen",
            Command::new(mcx_bin())
                .args(["token", "keygen", "--alg", "ES256", "--data-dir"])
                .arg(&lab_dir),
            Duration::from_secs(30),
        );
        assert_eq!(keygen.code(), Some(0), "token keygen: {keygen:?}");
        let config = scratch.join("mcx.toml");
        std::fs::write(
            &config,
            format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
                 [policy]\n{policy}\n\n\
                 [sip]\nudp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\n{sip}\n"
            ),
        )
        .expect("write config");
        McxServer::spawn(scratch, &config, lab_dir)
    }

    /// Runs `mcx-authz serve --config config --data-dir lab_dir --store-dir scratch/store` (the
    /// lab key must exist; the durable store lives in the scratch dir, never in the working
    /// directory) and reads the bound addresses from the listener lines it prints.
    pub fn spawn(scratch: &Scratch, config: &Path, lab_dir: PathBuf) -> McxServer {
        let stderr = std::fs::File::create(scratch.join("serve.err")).expect("serve.err");
        let mut child = ChildGuard::spawn(
            "mcx-authz serve",
            Command::new(mcx_bin())
                .arg("serve")
                .arg("--config")
                .arg(config)
                .arg("--data-dir")
                .arg(&lab_dir)
                .arg("--store-dir")
                .arg(scratch.join("store"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr),
        );
        // The printed listener lines carry the bound ports. Keep reading stdout until EOF so the
        // pipe never fills.
        let (tx, rx) = mpsc::channel();
        let stdout = child.child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let (mut udp, mut tcp, mut tls, mut admin, mut http) = (None, None, None, None, None);
        // `policy` is printed after every listener line.
        let mut policy_seen = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while udp.is_none() || tcp.is_none() || admin.is_none() || !policy_seen {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!(
                    "mcx-authz serve printed no listener lines within 20 s; stdout so far {seen:?}, stderr: {}",
                    std::fs::read_to_string(scratch.join("serve.err")).unwrap_or_default()
                ),
            };
            let addr_in = |prefix: &str, start: &str, end: char| -> Option<SocketAddr> {
                let rest = line
                    .strip_prefix(prefix)?
                    .trim_start()
                    .strip_prefix(start)?;
                rest.split(end).next()?.parse().ok()
            };
            udp = udp.or_else(|| addr_in("SIP over UDP", "sip:", ';'));
            tcp = tcp.or_else(|| addr_in("SIP over TCP", "sip:", ';'));
            tls = tls.or_else(|| addr_in("SIP over TLS", "sip:", ';'));
            admin = admin.or_else(|| addr_in("admin view", "http://", '/'));
            http = http.or_else(|| addr_in("KMS", "http://", '/'));
            policy_seen |= line.starts_with("policy");
            seen.push(line);
        }
        let lab = LabIdms::open(&lab_dir).expect("open the lab IdMS the server uses");
        McxServer {
            udp: udp.expect("udp"),
            tcp: tcp.expect("tcp"),
            tls,
            admin: admin.expect("admin"),
            http,
            lab_dir,
            lab,
            child,
        }
    }

    /// The SIP address for a SIPp/Kamailio transport name.
    pub fn sip(&self, tcp: bool) -> SocketAddr {
        if tcp {
            self.tcp
        } else {
            self.udp
        }
    }

    /// `GET /bindings`.
    pub fn bindings(&self) -> Vec<BindingView> {
        let body = http_get(self.admin, "/bindings");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/bindings: {e}: {body}"))
    }

    /// `GET /registrations`: IMPU → the services its registration carries (`None`: unknown).
    pub fn registrations(&self) -> BTreeMap<String, Option<Vec<String>>> {
        let body = http_get(self.admin, "/registrations");
        let rows: Vec<mcx_authz::server::admin::RegistrationView> =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("/registrations: {e}: {body}"));
        rows.into_iter().map(|r| (r.impu, r.services)).collect()
    }

    /// `GET /metrics` as `name{labels}` → value.
    pub fn metrics(&self) -> BTreeMap<String, u64> {
        http_get(self.admin, "/metrics")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// SIGKILL by PID, and reap: no shutdown path of the server runs (issue 13).
    pub fn kill9(&mut self) {
        let _ = self.child.child.kill();
        let _ = self.child.child.wait();
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.child.try_wait(), Ok(None))
    }
}

/// A metric's value, 0 when absent (Prometheus counters appear at their first increment).
pub fn metric(m: &BTreeMap<String, u64>, key: &str) -> u64 {
    m.get(key).copied().unwrap_or(0)
}

/// A GET on the admin view (loopback, `Connection: close`); the body of a 200.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("admin write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("admin read");
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    body.to_owned()
}

/// The binding table reduced to what a scenario decides: (service, IMPU, MC client ID, MC
/// service ID), sorted.
pub fn table(bindings: &[BindingView]) -> Vec<(String, String, String, String)> {
    let mut t: Vec<_> = bindings
        .iter()
        .map(|b| {
            (
                b.service.clone(),
                b.impu.clone(),
                b.client_id.clone(),
                b.mc_id.clone(),
            )
        })
        .collect();
    t.sort();
    t
}

/// One expected row of [`table`].
pub fn row(
    service: &str,
    impu: &str,
    client_id: &str,
    mc_id: &str,
) -> (String, String, String, String) {
    (
        service.to_owned(),
        impu.to_owned(),
        client_id.to_owned(),
        mc_id.to_owned(),
    )
}

/// Writes a SIPp `-inf` file: `SEQUENTIAL`, then one `;`-separated line.
pub fn write_csv(path: &Path, fields: &[&str]) {
    for f in fields {
        assert!(
            !f.contains([';', '\n']),
            "CSV field holds a separator: {f:?}"
        );
    }
    std::fs::write(path, format!("SEQUENTIAL\n{}\n", fields.join(";"))).expect("write CSV");
}

/// The fields of the first user line of a SIPp `-inf` file.
pub fn read_csv_fields(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read CSV");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("SEQUENTIAL"), "{}", path.display());
    lines
        .next()
        .expect("a user line")
        .split(';')
        .map(str::to_owned)
        .collect()
}

/// The last `n` lines of a file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A throw-away PostgreSQL cluster: `initdb` in a scratch dir, the postmaster on a loopback
/// port (as the `postgres` user when the test runs as root, which `initdb` refuses), stopped by
/// its PID (fast shutdown, then SIGKILL) when dropped.
pub struct Cluster {
    pub port: u16,
    postmaster: std::process::Child,
    _dir: Scratch,
}

/// A PostgreSQL server program: from Debian's versioned directory (the newest), else `PATH`.
pub fn pg_tool(tool: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| r.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(tool))
        .find(|p| p.exists())
        .or_else(|| find_tool(tool))
        .unwrap_or_else(|| {
            panic!("{tool} is not installed: bash .ci/install-deps.sh installs the Debian package postgresql")
        })
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = Scratch::new("pg");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let as_postgres = |tool: &str| {
            let mut c = if root {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                    .arg(pg_tool(tool));
                c
            } else {
                Command::new(pg_tool(tool))
            };
            c.stdin(std::process::Stdio::null());
            c
        };
        if root {
            let chown = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir.path)
                .status()
                .expect("chown");
            assert!(chown.success());
        }
        let data = dir.join("data");
        let init = run_bounded(
            "initdb",
            as_postgres("initdb").arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "mcx",
                "--no-sync",
            ]),
            Duration::from_secs(120),
        );
        assert_eq!(init.code(), Some(0), "initdb: {init:?}");
        let port = free_ports(1);
        let log = std::fs::File::create(dir.join("postgres.log")).expect("log");
        let postmaster = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir.path)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let cluster = Cluster {
            port,
            postmaster,
            _dir: dir,
        };
        // Ready when the schema can be made (and `store migrate` is idempotent: twice).
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ok = 0;
        while ok < 2 {
            let m = run_bounded(
                "mcx-authz store migrate",
                Command::new(mcx_bin()).args(["store", "migrate", "--url", &cluster.url()]),
                Duration::from_secs(30),
            );
            if m.code() == Some(0) {
                assert!(m.stdout.contains("schema ready"), "{m:?}");
                ok += 1;
            } else {
                assert!(Instant::now() < deadline, "postgres did not come up: {m:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        cluster
    }

    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=mcx dbname=postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pid = self.postmaster.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.postmaster.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.postmaster.kill();
        let _ = self.postmaster.wait();
    }
}

/// `mcx-authz token mint-csv --protect-csks` for `users` users named `impu_prefix…`, with the
/// lab IdMS in `scratch/lab` (created): (lab dir, CSV, CSK table as `[[protection.csk]]` TOML).
pub fn mint_protected(
    scratch: &Scratch,
    users: u64,
    impu_prefix: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    let lab_dir = scratch.join("lab");
    let csv = scratch.join("protected.csv");
    let csks = scratch.join("csks.toml");
    let r = run_bounded(
        "mcx-authz token mint-csv --protect-csks",
        Command::new(mcx_bin())
            .args(["token", "mint-csv", "--users", &users.to_string()])
            .args(["--impu-prefix", impu_prefix, "--data-dir"])
            .arg(&lab_dir)
            .arg("--out")
            .arg(&csv)
            .arg("--protect-csks")
            .arg(&csks),
        Duration::from_secs(120),
    );
    assert_eq!(r.code(), Some(0), "mint-csv: {r:?}");
    (lab_dir, csv, csks)
}
