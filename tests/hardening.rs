//! The server under hostile load (issue 14 item 3) and SIP over TLS (item 4), over real loopback
//! sockets: connection caps and timers, bounded `/metrics` labels, per-source rate limits,
//! supervised workers seen in `/healthz`, and the TLS trust boundary (a trusted client
//! certificate makes a SIP core; no certificate, or one from another CA, does not).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mcx_authz::server::config::TlsListenerConfig;

const ALICE: &str = "sip:alice@example.org";
const UE1: &str = "sip:ue1@ims.example.org";
const CLIENT: &str = "urn:uuid:5b4c1a3e-0000-4000-8000-00000000c001";

/// `GET` or `POST` on the admin view: (status, body), whatever the status.
fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("admin read");
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    let status = head[9..12].parse().expect("status code");
    (status, body.to_owned())
}

/// `/metrics` as `name{labels}` → value.
fn metrics(s: &TestServer) -> BTreeMap<String, u64> {
    s.metrics()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn metric(s: &TestServer, key: &str) -> u64 {
    metrics(s).get(key).copied().unwrap_or(0)
}

/// Polls `cond` every 20 ms for at most `limit`.
fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn options(local: SocketAddr, transport: &str) -> Vec<u8> {
    let bytes = SipMsg::new("OPTIONS", SERVER_URI)
        .header("From", "<sip:probe@example.org>;tag=p")
        .header("To", "<sip:mcx.example.org>")
        .to_bytes(&local);
    with_transport(bytes, transport)
}

fn with_transport(bytes: Vec<u8>, transport: &str) -> Vec<u8> {
    String::from_utf8(bytes)
        .unwrap()
        .replacen("SIP/2.0/UDP", &format!("SIP/2.0/{transport}"), 1)
        .into_bytes()
}

/// Reads one SIP response (framed by Content-Length) from `r`, keeping what follows in `buf`.
fn read_reply(r: &mut impl Read, buf: &mut Vec<u8>) -> SipReply {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let msg: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return SipReply::parse(&msg);
            }
        }
        let mut chunk = [0u8; 8192];
        let n = r.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server has closed `s` (EOF) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn five_thousand_idle_tcp_connections_do_not_stop_udp() {
    let s = TestServer::start(|c| c.limits.tcp_max_connections = 1000);
    let mut idle = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let c = TcpStream::connect_timeout(&s.tcp, Duration::from_secs(10)).expect("connect");
        idle.push(c);
    }
    eventually(
        Duration::from_secs(30),
        "every connection accepted or refused",
        || {
            let m = metrics(&s);
            m.get("mcx_tcp_connections_accepted_total")
                .copied()
                .unwrap_or(0)
                + m.get("mcx_tcp_refused_total{reason=\"cap\"}")
                    .copied()
                    .unwrap_or(0)
                == 5000
        },
    );
    assert_eq!(metric(&s, "mcx_tcp_connections_open"), 1000, "the cap");
    assert_eq!(metric(&s, "mcx_tcp_refused_total{reason=\"cap\"}"), 4000);

    // UDP still serves the whole procedure, promptly.
    let started = Instant::now();
    let c = s.udp_client();
    assert_eq!(c.send(&third_party_register(UE1, 600)).status, 200);
    let r = c.send(&publish_auth(
        UE1,
        &s.token(ALICE, 3600),
        CLIENT,
        None,
        3600,
    ));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.bindings().len(), 1);

    // The idle connections go; their slots come back and TCP serves again.
    drop(idle);
    eventually(Duration::from_secs(20), "connections reaped", || {
        metric(&s, "mcx_tcp_connections_open") == 0
    });
    let mut t = TcpClient::connect(s.tcp);
    let local = t.local();
    t.write(&options(local, "TCP"));
    assert_eq!(t.read_reply().status, 200);
}

#[test]
fn idle_and_slow_connections_are_closed_keepalives_are_not() {
    let s = TestServer::start(|c| {
        c.limits.tcp_idle_timeout_secs = 1;
        c.limits.tcp_message_timeout_ms = 600;
    });
    let mut idle = TcpStream::connect(s.tcp).unwrap();
    // Slowloris: a message begun and trickled one byte at a time.
    let mut slow = TcpStream::connect(s.tcp).unwrap();
    let local = slow.local_addr().unwrap();
    let msg = options(local, "TCP");
    let trickle = std::thread::spawn(move || {
        for b in msg.iter().take(40) {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        closed_within(&mut slow, Duration::from_secs(3))
    });
    // Keep-alives (RFC 5626 CRLF pings) are traffic: that connection stays.
    let mut alive = TcpStream::connect(s.tcp).unwrap();
    alive
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for _ in 0..5 {
        alive.write_all(b"\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(trickle.join().unwrap(), "the slow sender was cut off");
    assert!(closed_within(&mut idle, Duration::from_secs(3)));
    assert!(metric(&s, "mcx_tcp_timeouts_total{kind=\"idle\"}") >= 1);
    assert_eq!(metric(&s, "mcx_tcp_timeouts_total{kind=\"message\"}"), 1);
    // After 2 s of pings the kept-alive connection still answers.
    let mut buf = Vec::new();
    alive.write_all(&options(local, "TCP")).unwrap();
    assert_eq!(read_reply(&mut alive, &mut buf).status, 200);
}

#[test]
fn untrusted_senders_are_capped_per_source_and_rate_limited() {
    let s = TestServer::start(|c| {
        c.sip.trusted_cores = vec!["127.0.0.9/32".parse().unwrap()];
        c.limits.tcp_max_connections_per_source = 5;
        c.limits.untrusted_rate_per_sec = 20;
        c.limits.untrusted_burst = 10;
    });
    // UDP from an untrusted address: a burst of 200 gets the bucket's 10 (and the few the rate
    // refills meanwhile), the rest is dropped and counted.
    let flood = UdpClient::bind_from("127.0.0.3", s.udp);
    let local = flood.local();
    for _ in 0..200 {
        flood.socket.send_to(&options(local, "UDP"), s.udp).unwrap();
    }
    flood
        .socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answered = 0;
    let mut buf = vec![0u8; 65_535];
    while flood.socket.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert!((10..=40).contains(&answered), "{answered} answered");
    assert!(metric(&s, "mcx_rate_limited_total") >= 160);
    // A trusted core is never limited.
    let core = UdpClient::bind_from("127.0.0.9", s.udp);
    for _ in 0..50 {
        assert_eq!(core.send_raw(&options(core.local(), "UDP")).status, 200);
    }
    // TCP from another untrusted address: at most 5 open connections.
    let conns: Vec<TcpStream> = (0..8)
        .map(|_| {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&"127.0.0.4:0".parse::<SocketAddr>().unwrap().into())
                .unwrap();
            sock.connect(&s.tcp.into()).unwrap();
            sock.into()
        })
        .collect();
    eventually(Duration::from_secs(5), "8 connections judged", || {
        metric(&s, "mcx_tcp_connections_accepted_total")
            + metric(&s, "mcx_tcp_refused_total{reason=\"per_source\"}")
            == 8
    });
    assert_eq!(metric(&s, "mcx_tcp_connections_open"), 5);
    drop(conns);
}

#[test]
fn ten_thousand_invented_methods_leave_metrics_bounded() {
    let s = TestServer::start(|_| {});
    let stream = TcpStream::connect(s.tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let local = stream.local_addr().unwrap();
    let mut reader = stream.try_clone().unwrap();
    const N: usize = 10_000;
    let counter = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut statuses = BTreeMap::<u16, usize>::new();
        for _ in 0..N {
            *statuses
                .entry(read_reply(&mut reader, &mut buf).status)
                .or_default() += 1;
        }
        statuses
    });
    let mut writer = stream;
    for i in 0..N {
        let m = SipMsg::new(&format!("INVENTED{i}"), SERVER_URI)
            .header("From", "<sip:probe@example.org>;tag=p")
            .header("To", "<sip:mcx.example.org>");
        writer
            .write_all(&with_transport(m.to_bytes(&local), "TCP"))
            .unwrap();
    }
    let statuses = counter.join().unwrap();
    assert_eq!(statuses.values().sum::<usize>(), N, "{statuses:?}");
    let text = s.metrics();
    assert!(
        !text.contains("INVENTED"),
        "an invented method became a label"
    );
    let other: u64 = metrics(&s)
        .iter()
        .filter(|(k, _)| k.starts_with("mcx_sip_requests_total{method=\"other\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(other, N as u64);
    assert!(text.len() < 16 * 1024, "/metrics is {} bytes", text.len());
}

#[test]
fn a_worker_panic_shows_in_healthz_and_a_downed_listener_comes_back() {
    let s = TestServer::start(|c| c.limits.listener_restart_ms = 1500);
    // Listeners are down until their tasks have started.
    eventually(Duration::from_secs(5), "healthy after start", || {
        admin(s.admin, "GET", "/healthz").0 == 200
    });
    let (status, body) = admin(s.admin, "GET", "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok\n") && body.contains(" up "), "{body}");

    // A panic while a worker handles one request: that request is dropped, the panic is logged
    // and counted, and the same worker answers the next one.
    let c = s.udp_client();
    assert_eq!(
        admin(s.admin, "POST", "/fault?panic=worker").0,
        200,
        "lab controls are on in tests"
    );
    c.send_expect_silence(&options(c.local(), "UDP"), Duration::from_millis(500));
    assert_eq!(c.send_raw(&options(c.local(), "UDP")).status, 200);
    let (status, body) = admin(s.admin, "GET", "/healthz");
    assert_eq!(status, 200, "{body}");
    let udp_line = body.lines().find(|l| l.starts_with("udp ")).unwrap();
    assert!(udp_line.contains("worker_panics=1"), "{body}");
    assert!(udp_line.contains("injected fault"), "{body}");
    assert_eq!(metric(&s, "mcx_worker_panics_total"), 1);

    // A panic that takes the UDP listener itself down: /healthz says so until it is back.
    admin(s.admin, "POST", "/fault?panic=listener");
    c.send_expect_silence(&options(c.local(), "UDP"), Duration::from_millis(300));
    let (status, body) = admin(s.admin, "GET", "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("unhealthy\n"), "{body}");
    assert!(
        body.lines()
            .any(|l| l.starts_with("udp ") && l.contains(" down restarts=1")),
        "{body}"
    );
    assert_eq!(metric(&s, "mcx_listeners_down"), 1);
    eventually(Duration::from_secs(10), "the listener restarted", || {
        admin(s.admin, "GET", "/healthz").0 == 200
    });
    assert_eq!(c.send_raw(&options(c.local(), "UDP")).status, 200);
    assert_eq!(metric(&s, "mcx_listener_restarts_total"), 1);
}

#[test]
fn fault_injection_needs_lab_controls() {
    let s = TestServer::start(|c| c.admin.lab_controls = false);
    assert_eq!(admin(s.admin, "POST", "/fault?panic=worker").0, 403);
    let c = s.udp_client();
    assert_eq!(c.send_raw(&options(c.local(), "UDP")).status, 200);
}

// --- SIP over TLS -----------------------------------------------------------------------------

struct Tls {
    dir: std::path::PathBuf,
    lab: mcx_authz::server::tls::LabCertificates,
}

fn tls_lab(name: &str) -> Tls {
    let lab = mcx_authz::server::tls::lab_certificates(
        &["mcx.example.org".into()],
        "core.ims.example.org",
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("mcx-tls-{}-{name}", std::process::id()));
    lab.write(&dir).unwrap();
    Tls { dir, lab }
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_listener(t: &Tls) -> TlsListenerConfig {
    TlsListenerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: t.dir.join("server.pem"),
        key: t.dir.join("server.key"),
        client_ca: Some(t.dir.join("ca.pem")),
        require_client_cert: false,
        trusted_client_names: vec!["core.ims.example.org".into()],
        trusted_client_sha256: Vec::new(),
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client that trusts `ca` and presents `client` (certificate, key) if given.
fn tls_connect(addr: SocketAddr, ca: &str, client: Option<(&str, &str)>) -> TlsStream {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("mcx.example.org").unwrap(),
    )
    .unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

fn tls_send(s: &mut TlsStream, buf: &mut Vec<u8>, msg: &SipMsg) -> SipReply {
    let local = s.sock.local_addr().unwrap();
    s.write_all(&with_transport(msg.to_bytes(&local), "TLS"))
        .unwrap();
    read_reply(s, buf)
}

#[test]
fn over_tls_a_trusted_client_certificate_makes_a_sip_core() {
    let t = tls_lab("trust");
    let listener = tls_listener(&t);
    // No address is trusted: only the certificate can make a SIP core here.
    let s = TestServer::start(|c| {
        c.sip.trusted_cores = Vec::new();
        c.sip.tls = vec![listener];
    });
    let tls_addr = s.tls.expect("a TLS listener");

    // Without a client certificate: served, but not a trusted core.
    let mut anon = tls_connect(tls_addr, &t.lab.ca_cert, None);
    let mut buf = Vec::new();
    assert_eq!(
        tls_send(&mut anon, &mut buf, &third_party_register(UE1, 600)).status,
        403
    );

    // With the core's certificate: the third-party REGISTER and the PUBLISH are believed.
    let mut core = tls_connect(
        tls_addr,
        &t.lab.ca_cert,
        Some((&t.lab.client_cert, &t.lab.client_key)),
    );
    let mut buf = Vec::new();
    assert_eq!(
        tls_send(&mut core, &mut buf, &third_party_register(UE1, 600)).status,
        200
    );
    let r = tls_send(
        &mut core,
        &mut buf,
        &publish_auth(UE1, &s.token(ALICE, 3600), CLIENT, None, 3600),
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    let b = s.bindings();
    assert_eq!((b.len(), b[0].impu.as_str()), (1, UE1));

    // A certificate from another CA fails the handshake (counted), and plain TCP from the same
    // address stays untrusted.
    let other = tls_lab("other");
    let mut stranger = tls_connect(
        tls_addr,
        &t.lab.ca_cert,
        Some((&other.lab.client_cert, &other.lab.client_key)),
    );
    let _ = stranger.write_all(&options(stranger.sock.local_addr().unwrap(), "TLS"));
    let mut byte = [0u8; 1];
    assert!(
        !matches!(stranger.read(&mut byte), Ok(n) if n > 0),
        "a certificate from another CA was served"
    );
    eventually(Duration::from_secs(5), "handshake failure counted", || {
        metric(&s, "mcx_tls_handshake_failures_total") == 1
    });
    let c = s.udp_client();
    assert_eq!(c.send(&third_party_register(UE1, 600)).status, 403);
}

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = std::env::temp_dir().join(format!("mcx-ansi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("mcx.toml");
    std::fs::write(
        &config,
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcx-authz"))
        .args(["serve", "--in-memory", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("lab"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let udp: SocketAddr = loop {
        let line = lines.next().expect("a listener line").unwrap();
        if let Some(rest) = line.strip_prefix("SIP over UDP") {
            let addr = rest.trim().trim_start_matches("sip:");
            break addr.split(';').next().unwrap().parse().unwrap();
        }
    };
    let c = UdpClient::new(udp);
    assert_eq!(c.send_raw(&options(c.local(), "UDP")).status, 200);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.contains("request"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape in a log file: {text:?}"
    );
}
