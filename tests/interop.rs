//! mcx-authz behind a real SIP core (issue 5 item 4): SIPp as the UE → Kamailio
//! (`tests/interop/kamailio-core.cfg`: registrar, third-party REGISTER, P-Asserted-Identity) →
//! `mcx-authz serve`, all on loopback, over UDP, TCP and TLS (Kamailio's tls module, a client
//! certificate from `mcx-authz tls-lab-certs`) between the core and mcx-authz.
//!
//! `tests/interop/run.sh` starts Kamailio, plays the UE (REGISTER + PUBLISH with a token and
//! forged identities, then de-REGISTER) and checks `/bindings` in between; this test then checks
//! from its side that every request really reached mcx-authz and was decided there (counters,
//! bindings, registrations), and that the script stopped its Kamailio.
//!
//! Needs `sipp`, `kamailio` and `curl`: a missing one fails the test, naming
//! `bash .ci/install-deps.sh` (which `./test` runs first).

mod external;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use external::*;

const TOOLS: [&str; 3] = ["sipp", "kamailio", "curl"];

/// What `run.sh` printed, its exit status, and the scratch dir (kept on failure).
struct Run {
    finished: Finished,
    core_port: u16,
}

fn run_script(scratch: &Scratch, args: &[String], csv: &std::path::Path) -> Run {
    // core, stand-in UAS (core + 1), UE (core + 2), the core's TLS socket (core + 3)
    let core_port = free_ports(4);
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("tests/interop/run.sh"))
        .args(["--core-port", &core_port.to_string()])
        .args(args)
        .arg(csv)
        .env("PATH", path_with(&TOOLS))
        .env("TMPDIR", &scratch.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group: on a time-out the guard sends the script SIGTERM (its trap stops
    // Kamailio and SIPp by PID), then SIGKILL to whatever of the group is left.
    let mut g = ChildGuard::spawn_group("tests/interop/run.sh", &mut cmd);
    let started = Instant::now();
    let drain = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(g.child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(g.child.stderr.take().map(|p| Box::new(p) as _));
    let status = g.wait_timeout(Duration::from_secs(150));
    Run {
        finished: Finished {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
            elapsed: started.elapsed(),
        },
        core_port,
    }
}

/// PIDs of processes whose command line names this core port (a Kamailio started by run.sh).
fn kamailio_pids(core_port: u16) -> Vec<u32> {
    let needle = format!("CORE_PORT={core_port}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("kamailio") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn assert_core_stopped(core_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = kamailio_pids(core_port);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = kamailio_pids(core_port);
    }
    assert!(
        left.is_empty(),
        "run.sh left Kamailio (CORE_PORT={core_port}) running: pids {left:?}"
    );
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CoreLink {
    Udp,
    Tcp,
    /// TLS between the core and mcx-authz; no source address is trusted, so only the core's
    /// client certificate (named in `trusted_client_names`) makes it a trusted SIP core.
    Tls,
}

fn through_the_core(link: CoreLink) {
    require_tools(&TOOLS);
    let name = format!("interop-{link:?}").to_lowercase();
    let scratch = Scratch::new(&name);
    let tls_dir = scratch.join("tls");
    let server = if link == CoreLink::Tls {
        let certs = run_bounded(
            "mcx-authz tls-lab-certs",
            Command::new(mcx_bin())
                .args(["tls-lab-certs", "--out"])
                .arg(&tls_dir),
            Duration::from_secs(30),
        );
        assert_eq!(certs.code(), Some(0), "{certs:?}");
        let d = tls_dir.display();
        McxServer::start_with(
            &scratch,
            &format!(
                "trusted_cores = []\n\n[[sip.tls]]\nlisten = \"127.0.0.1:0\"\n\
                 cert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.pem\"\n\
                 trusted_client_names = [\"core.ims.example.org\"]\n"
            ),
            "token_protection = \"optional\"",
        )
    } else {
        // Clear tokens through Kamailio: post-cr with protection optional (clause 9 is
        // tests/protection.rs).
        McxServer::start(&scratch, "token_protection = \"optional\"")
    };
    let csv = scratch.join("ue.csv");
    let mint = run_bounded(
        "mcx-authz token mint-csv",
        Command::new(mcx_bin())
            .args(["token", "mint-csv", "--users", "1", "--impu-prefix"])
            .arg(format!("{name}-"))
            .arg("--data-dir")
            .arg(&server.lab_dir)
            .arg("--out")
            .arg(&csv),
        Duration::from_secs(30),
    );
    assert_eq!(mint.code(), Some(0), "{mint:?}");
    let impu = read_csv_fields(&csv)[0].clone();

    let mcx = match link {
        CoreLink::Tls => server.tls.expect("a TLS listener"),
        _ => server.udp,
    };
    let mut args = vec![
        "--mcx".to_owned(),
        mcx.to_string(),
        "--admin".to_owned(),
        format!("http://{}", server.admin),
    ];
    match link {
        CoreLink::Udp => {}
        CoreLink::Tcp => {
            assert_eq!(server.udp.port(), server.tcp.port(), "one port for both");
            args.extend(["--transport".to_owned(), "tcp".to_owned()]);
        }
        CoreLink::Tls => args.extend([
            "--transport".to_owned(),
            "tls".to_owned(),
            "--tls-dir".to_owned(),
            tls_dir.display().to_string(),
        ]),
    }
    let run = run_script(&scratch, &args, &csv);
    let r = &run.finished;
    assert_eq!(
        r.code(),
        Some(0),
        "run.sh over {:?}: {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- mcx-authz stderr\n{}",
        link,
        r.status,
        r.elapsed,
        r.stdout,
        r.stderr,
        tail(&scratch.join("serve.err"), 20)
    );
    for line in [
        "PASS UE REGISTER + PUBLISH through the core".to_owned(),
        format!("PASS /bindings holds {impu} (and no forged identity)"),
        "PASS UE de-registration through the core".to_owned(),
        format!("PASS /bindings has nothing for {impu}"),
    ] {
        assert!(
            r.stdout.lines().any(|l| l == line),
            "{line:?} in {}",
            r.stdout
        );
    }
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    assert_core_stopped(run.core_port);

    // Everything reached mcx-authz and was decided there: the core's third-party REGISTER and
    // de-REGISTER, the one PUBLISH (bound, under the core-asserted IMPU), and the
    // de-registration's unbinding. Nothing is left.
    let m = server.metrics();
    let requests = |method: &str, status: u16| {
        metric(
            &m,
            &format!("mcx_sip_requests_total{{method=\"{method}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(requests("REGISTER", 200), 2, "{m:?}");
    assert_eq!(requests("PUBLISH", 200), 1, "{m:?}");
    assert_eq!(
        metric(&m, "mcx_binding_events_total{kind=\"bound\"}"),
        1,
        "{m:?}"
    );
    assert_eq!(
        metric(
            &m,
            "mcx_binding_events_total{kind=\"unbound_deregistered\"}"
        ),
        1,
        "{m:?}"
    );
    assert_eq!(table(&server.bindings()), vec![]);
    assert!(
        !server.registrations().contains_key(&impu),
        "{:?}",
        server.registrations()
    );
    if link == CoreLink::Tls {
        // Kamailio's connection was TLS, accepted, with a good handshake.
        assert!(
            metric(&m, "mcx_tcp_connections_accepted_total") >= 1,
            "{m:?}"
        );
        assert_eq!(metric(&m, "mcx_tls_handshake_failures_total"), 0, "{m:?}");
    }
}

#[test]
fn ue_through_kamailio_to_mcx_authz_over_udp() {
    through_the_core(CoreLink::Udp);
}

#[test]
fn ue_through_kamailio_to_mcx_authz_over_tcp() {
    through_the_core(CoreLink::Tcp);
}

/// The core reaches mcx-authz over TLS (issue 14 item 4); mcx-authz trusts no source address,
/// only the core's client certificate, so the binding proves the certificate-based trust.
#[test]
fn ue_through_kamailio_to_mcx_authz_over_tls() {
    through_the_core(CoreLink::Tls);
}

/// Without `--mcx`, a SIPp UAS stands in for mcx-authz and asserts what the core sends it:
/// the third-party REGISTER (Request-URI, To = IMPU, the UE's REGISTER as `message/sip`) and a
/// PUBLISH whose P-Asserted-Identity is exactly the registered IMPU with no PPI left.
#[test]
fn kamailio_core_sends_what_an_mcx_server_needs() {
    require_tools(&TOOLS);
    let scratch = Scratch::new("interop-stand-in");
    // The stand-in accepts any token: a syntactically plausible one is enough.
    let csv = scratch.join("ue.csv");
    write_csv(
        &csv,
        &[
            "sip:ue-stand-in@ims.example.org",
            "urn:uuid:00000000-0000-4000-8000-000000000001",
            "sip:alice@example.org",
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
        ],
    );
    let run = run_script(&scratch, &[], &csv);
    let r = &run.finished;
    assert_eq!(
        r.code(),
        Some(0),
        "run.sh (stand-in UAS): {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
        r.status,
        r.elapsed,
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.lines().any(|l| l
            == "PASS fake mcx-authz saw third-party REGISTER x2 and PUBLISH with PAI <sip:ue-stand-in@ims.example.org>"),
        "{}",
        r.stdout
    );
    assert_core_stopped(run.core_port);
}
