//! Test harness shared by the server-level suites: an in-process server on ephemeral loopback
//! ports, a lab IdMS to mint real JWTs, raw SIP clients over UDP and TCP, and message builders
//! that write what a SIP core forwards (TS 24.229 5.4.1.7 third-party REGISTER; TS 24.379 7.2.x
//! PUBLISH).

#![allow(dead_code)]

pub mod perturb;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mcx_authz::server::admin::BindingView;
use mcx_authz::server::{Server, ServerConfig};
use mcx_authz::token::{LabIdms, MintRequest};
use mcx_model::UnixTime;

/// A server running on its own runtime thread until dropped.
pub struct TestServer {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The first SIP over TLS listener, if the test configured one.
    pub tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// The KMS/CM/GM listener (`None` when the test turned it off).
    pub http: Option<SocketAddr>,
    pub lab: LabIdms,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The default test configuration: loopback ephemeral ports, a fresh ephemeral lab IdMS, clock
/// control on.
pub fn test_config(lab: &LabIdms) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.sip.udp = vec!["127.0.0.1:0".parse().unwrap()];
    config.sip.tcp = vec!["127.0.0.1:0".parse().unwrap()];
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    config.admin.lab_controls = true;
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    config.token = lab.validator_config();
    // Nothing on disk unless a test asks for a store (tests/durability.rs does, in a temp dir).
    config.store = mcx_authz::store::StoreConfig::memory();
    // The clear-token suites run post-cr with `token_protection = "optional"`; post-cr as
    // served (`required`, TS 33.180 clause 9) is tests/protection.rs and tests/conformance.rs.
    config
        .policy
        .overrides
        .insert("token_protection".into(), "optional".into());
    config
}

impl TestServer {
    /// Starts a server with [`test_config`], changed by `adjust`.
    pub fn start(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let lab = LabIdms::ephemeral(&[jsonwebtoken::Algorithm::ES256]).expect("lab IdMS");
        let mut config = test_config(&lab);
        adjust(&mut config);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // With port 0 the TCP listener follows the UDP port, which another process on
                // this shared machine may hold for TCP: try again on a fresh port.
                let mut attempts = 0;
                let server = loop {
                    match Server::bind(config.clone()).await {
                        Ok(s) => break s,
                        Err(e) if attempts < 20 && format!("{e:#}").contains("in use") => {
                            attempts += 1
                        }
                        Err(e) => panic!("bind: {e:#}"),
                    }
                };
                addr_tx.send(server.addrs()).expect("report addresses");
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("run");
            });
        });
        let addrs = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server started");
        TestServer {
            udp: addrs.udp[0],
            tcp: addrs.tcp[0],
            tls: addrs.tls.first().copied(),
            admin: addrs.admin.expect("admin"),
            http: addrs.http,
            lab,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The server's clock now (real time plus what [`TestServer::advance`] added).
    pub fn now(&self) -> UnixTime {
        let body = http(self.admin, "POST", "/clock/advance?secs=0");
        UnixTime(body.trim().parse().expect("clock"))
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, secs: u64) {
        http(self.admin, "POST", &format!("/clock/advance?secs={secs}"));
    }

    /// A token for `mc_id` (all services), valid for `expires_in` seconds from the server's now.
    pub fn token(&self, mc_id: &str, expires_in: u64) -> String {
        let mut req = MintRequest::all_services(mc_id, self.now());
        req.expires_in = Some(expires_in);
        self.lab.mint(&req).expect("mint")
    }

    /// `GET /bindings`.
    pub fn bindings(&self) -> Vec<BindingView> {
        serde_json::from_str(&http(self.admin, "GET", "/bindings")).expect("bindings JSON")
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics")
    }

    pub fn udp_client(&self) -> UdpClient {
        UdpClient::new(self.udp)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A minimal HTTP/1.1 client for the admin view; returns the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("admin read");
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "admin {method} {path}: {head}"
    );
    body.to_owned()
}

/// A SIP client on one UDP socket.
pub struct UdpClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

impl UdpClient {
    pub fn new(server: SocketAddr) -> Self {
        Self::bind_from("127.0.0.1", server)
    }

    /// A client on `ip` (any 127.x address works on Linux loopback).
    pub fn bind_from(ip: &str, server: SocketAddr) -> Self {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        UdpClient { socket, server }
    }

    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Sends bytes, returns the response.
    pub fn send_raw(&self, bytes: &[u8]) -> SipReply {
        self.socket.send_to(bytes, self.server).unwrap();
        let mut buf = vec![0u8; 65_535];
        let (n, _) = self.socket.recv_from(&mut buf).expect("a SIP response");
        SipReply::parse(&buf[..n])
    }

    /// Sends bytes and expects no response within `wait`.
    pub fn send_expect_silence(&self, bytes: &[u8], wait: Duration) {
        self.socket.send_to(bytes, self.server).unwrap();
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0u8; 65_535];
        let got = self.socket.recv_from(&mut buf);
        self.socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert!(
            got.is_err(),
            "expected no response, got {:?}",
            got.map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
        );
    }

    pub fn send(&self, msg: &SipMsg) -> SipReply {
        self.send_raw(msg.to_bytes(&self.local()).as_slice())
    }
}

/// A SIP client on one TCP connection.
pub struct TcpClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpClient {
    pub fn connect(server: SocketAddr) -> Self {
        let stream = TcpStream::connect(server).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        TcpClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one response (framed by Content-Length).
    pub fn read_reply(&mut self) -> SipReply {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        (n.trim().eq_ignore_ascii_case("content-length") || n.trim() == "l")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let msg: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return SipReply::parse(&msg);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).expect("TCP read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn send(&mut self, msg: &SipMsg) -> SipReply {
        let bytes = msg.to_bytes(&self.local());
        self.send_raw(bytes)
    }

    /// Sends bytes written for UDP (the top Via's transport becomes TCP), returns the response.
    pub fn send_raw(&mut self, bytes: Vec<u8>) -> SipReply {
        self.write(&bytes.with_transport("TCP"));
        self.read_reply()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

trait WithTransport {
    fn with_transport(self, t: &str) -> Vec<u8>;
}

impl WithTransport for Vec<u8> {
    fn with_transport(self, t: &str) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replacen("SIP/2.0/UDP", &format!("SIP/2.0/{t}"), 1)
            .into_bytes()
    }
}

/// A parsed response: status line and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipReply {
    pub raw: String,
    pub status: u16,
}

impl SipReply {
    pub fn parse(bytes: &[u8]) -> SipReply {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        SipReply { raw, status }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .lines()
            .skip(1)
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
    }

    pub fn etag(&self) -> Option<String> {
        self.header("SIP-ETag")
    }

    /// The MC warning code of `Warning: 399 host "NNN text"`.
    pub fn mc_warning(&self) -> Option<u16> {
        let w = self.header("Warning")?;
        let text = w.split('"').nth(1)?;
        text.split(' ').next()?.parse().ok()
    }
}

static BRANCH: AtomicU64 = AtomicU64::new(1);

/// A request under construction.
#[derive(Clone, Debug)]
pub struct SipMsg {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Body parts kept apart until [`SipMsg::render`] writes them (so a perturbation can reorder
    /// them); `None` when [`SipMsg::body`] set the body as bytes.
    pub parts: Option<Vec<(String, Vec<u8>)>>,
    pub branch: String,
}

impl SipMsg {
    pub fn new(method: &str, uri: &str) -> SipMsg {
        let n = BRANCH.fetch_add(1, Ordering::Relaxed);
        SipMsg {
            method: method.into(),
            uri: uri.into(),
            headers: vec![
                ("Max-Forwards".into(), "70".into()),
                ("Call-ID".into(), format!("call-{n}@test")),
                ("CSeq".into(), format!("{n} {method}")),
            ],
            body: Vec::new(),
            parts: None,
            branch: format!("z9hG4bK-test-{n}"),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> SipMsg {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The Call-ID header's value.
    pub fn call_id(&self) -> String {
        self.headers
            .iter()
            .find(|(n, _)| n == "Call-ID")
            .map(|(_, v)| v.clone())
            .expect("every SipMsg has a Call-ID")
    }

    pub fn without(mut self, name: &str) -> SipMsg {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> SipMsg {
        self.headers
            .push(("Content-Type".into(), content_type.into()));
        self.body = body;
        self
    }

    /// The body as parts, each (Content-Type, bytes): one part is sent as it is, several as
    /// `multipart/mixed` ([`perturb::assemble`]).
    pub fn parts(mut self, parts: Vec<(String, Vec<u8>)>) -> SipMsg {
        self.parts = Some(parts);
        self.body = Vec::new();
        self
    }

    /// The request as bytes sent from `local`, written as built.
    pub fn to_bytes(&self, local: &SocketAddr) -> Vec<u8> {
        self.render(
            local,
            &perturb::Perturbation::default(),
            &perturb::Context {
                others: vec!["sip:nobody@invalid".into()],
                trusted: true,
            },
        )
    }
}

pub const PSI_MCPTT: &str = "sip:mcptt@mcx.example.org";
pub const SERVER_URI: &str = "sip:mcx.example.org";

/// The S-CSCF's third-party REGISTER for `impu` (TS 24.229 5.4.1.7).
pub fn third_party_register(impu: &str, expires: u32) -> SipMsg {
    SipMsg::new("REGISTER", SERVER_URI)
        .header("From", "<sip:scscf.ims.example.org>;tag=scscf")
        .header("To", &format!("<{impu}>"))
        .header("Contact", "<sip:scscf.ims.example.org>")
        .header("Expires", &expires.to_string())
}

/// Adds the `message/sip` body a third-party REGISTER carries: the UE's REGISTER, with the MC
/// feature tags in its Contact when `mc_tags`, and a token body per service when given.
pub fn with_embedded(
    reg: SipMsg,
    services: &[mcx_model::Service],
    mc_tags: bool,
    token: Option<&str>,
    client: &str,
    p: &perturb::Perturbation,
) -> SipMsg {
    let impu = reg
        .headers
        .iter()
        .find(|(n, _)| n == "To")
        .map(|(_, v)| v.trim_matches(['<', '>']).to_owned())
        .unwrap();
    let tags: String = if mc_tags {
        services
            .iter()
            .map(|s| format!(";+{}", s.feature_tag()))
            .collect()
    } else {
        String::new()
    };
    let (ct, body) = match token {
        Some(t) => {
            let parts: Vec<(String, Vec<u8>)> = services
                .iter()
                .map(|s| {
                    let (ct, xml) = info_body(*s, Some(t), None, client);
                    (ct, xml.into_bytes())
                })
                .collect();
            let (ct, bytes) = perturb::assemble(&parts, p);
            (Some(ct), bytes)
        }
        None => (None, Vec::new()),
    };
    let mut ue = format!(
        "REGISTER sip:ims.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKue\r\nFrom: <{impu}>;tag=ue\r\nTo: <{impu}>\r\nCall-ID: ue-reg@192.0.2.10\r\nCSeq: 1 REGISTER\r\nContact: <sip:ue@192.0.2.10:5060>{tags}\r\n"
    );
    if let Some(ct) = ct {
        ue.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    ue.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = ue.into_bytes();
    bytes.extend(body);
    reg.parts(vec![("message/sip".into(), bytes)])
}

/// The participating-function PSI of `service` (the server's lab defaults).
pub fn psi(service: mcx_model::Service) -> String {
    format!("sip:{}@mcx.example.org", service.name())
}

/// A PUBLISH to `service`'s PSI as the SIP core forwards it (P-Asserted-Identity set).
pub fn publish_to(service: mcx_model::Service, impu: &str) -> SipMsg {
    SipMsg::new("PUBLISH", &psi(service))
        .header("From", &format!("<{impu}>;tag=ue"))
        .header("To", &format!("<{impu}>"))
        .header("P-Asserted-Identity", &format!("<{impu}>"))
        .header("Event", "poc-settings")
        .header(
            "Accept-Contact",
            &format!("*;+{};require;explicit", service.feature_tag()),
        )
}

fn publish_base(impu: &str) -> SipMsg {
    publish_to(mcx_model::Service::Mcptt, impu)
}

/// The MC info body of `service` (TS 24.379 F.1; TS 24.281/24.282 twins) with a token or a
/// request URI, and the client ID: (content type, XML), by the server's own writer.
pub fn info_body(
    service: mcx_model::Service,
    token: Option<&str>,
    request_uri: Option<&str>,
    client_id: &str,
) -> (String, String) {
    use mcx_authz::sip::body::write::{info_content_type, info_xml, InfoDoc, InfoField};
    let doc = InfoDoc {
        access_token: token.map(InfoField::Normal),
        request_uri: request_uri.map(InfoField::Normal),
        client_id: InfoField::Normal(client_id),
    };
    (info_content_type(service), info_xml(service, &doc, "\r\n"))
}

fn info_xml(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<mcpttinfo xmlns=\"urn:3gpp:ns:mcpttInfo:1.0\"><mcptt-Params>{inner}</mcptt-Params></mcpttinfo>"
    )
}

/// A `multipart/mixed` body: (Content-Type value, bytes).
pub fn multipart(parts: &[(&str, String)]) -> (String, Vec<u8>) {
    let boundary = "mcx-test-boundary";
    let refs: Vec<(&str, &str)> = parts.iter().map(|(c, b)| (*c, b.as_str())).collect();
    let body = mcx_authz::sip::body::write::multipart(boundary, &refs, "\r\n") + "\r\n";
    (
        format!("multipart/mixed;boundary={boundary}"),
        body.into_bytes(),
    )
}

/// `application/poc-settings+xml` for a client.
pub fn settings_xml(client_id: &str) -> String {
    mcx_authz::sip::body::write::settings_xml(client_id, "\r\n")
}

/// TS 24.379 7.2.2: PUBLISH with the access token (and settings).
pub fn publish_auth(
    impu: &str,
    token: &str,
    client_id: &str,
    if_match: Option<&str>,
    expires: u32,
) -> SipMsg {
    let info = info_xml(&format!(
        "<mcptt-access-token type=\"Normal\"><mcpttString>{token}</mcpttString></mcptt-access-token><mcptt-client-id type=\"Normal\"><mcpttString>{client_id}</mcpttString></mcptt-client-id>"
    ));
    let (ct, body) = multipart(&[
        ("application/vnd.3gpp.mcptt-info+xml", info),
        ("application/poc-settings+xml", settings_xml(client_id)),
    ]);
    let mut m = publish_base(impu).header("Expires", &expires.to_string());
    if let Some(t) = if_match {
        m = m.header("SIP-If-Match", t);
    }
    m.body(&ct, body)
}

/// TS 24.379 7.2.3: PUBLISH with settings only, naming the client's own MC service ID.
pub fn publish_settings(
    impu: &str,
    mc_id: &str,
    client_id: &str,
    if_match: Option<&str>,
) -> SipMsg {
    let info = info_xml(&format!(
        "<mcptt-request-uri type=\"Normal\"><mcpttURI>{mc_id}</mcpttURI></mcptt-request-uri><mcptt-client-id type=\"Normal\"><mcpttString>{client_id}</mcpttString></mcptt-client-id>"
    ));
    let (ct, body) = multipart(&[
        ("application/vnd.3gpp.mcptt-info+xml", info),
        ("application/poc-settings+xml", settings_xml(client_id)),
    ]);
    let mut m = publish_base(impu).header("Expires", "4294967295");
    if let Some(t) = if_match {
        m = m.header("SIP-If-Match", t);
    }
    m.body(&ct, body)
}

/// RFC 3903 refresh (`expires` > 0) or removal (`expires` = 0): no body, SIP-If-Match.
pub fn publish_empty(impu: &str, if_match: &str, expires: u32) -> SipMsg {
    publish_base(impu)
        .header("SIP-If-Match", if_match)
        .header("Expires", &expires.to_string())
}
