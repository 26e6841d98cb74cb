//! The server over real sockets: each test starts `mcx-authz`'s server on ephemeral loopback
//! ports and speaks raw SIP over UDP or TCP, as a SIP core would.

mod common;

use std::time::Duration;

use common::*;

const ALICE: &str = "sip:alice@example.org";
const BOB: &str = "sip:bob@example.org";
const UE1: &str = "sip:ue1@ims.example.org";
const UE1_NEW: &str = "sip:ue1-new@ims.example.org";
const CLIENT: &str = "urn:uuid:5b4c1a3e-0000-4000-8000-00000000c001";

fn register(c: &UdpClient, impu: &str) {
    let r = c.send(&third_party_register(impu, 600));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("Expires").as_deref(), Some("600"));
}

fn authorize(s: &TestServer, c: &UdpClient, impu: &str, user: &str) -> String {
    let r = c.send(&publish_auth(
        impu,
        &s.token(user, 3600),
        CLIENT,
        None,
        u32::MAX,
    ));
    assert_eq!(r.status, 200, "{}", r.raw);
    r.etag().expect("200 to PUBLISH carries SIP-ETag")
}

fn table(s: &TestServer) -> Vec<(String, String)> {
    s.bindings()
        .into_iter()
        .map(|b| (b.impu, b.mc_id))
        .collect()
}

#[test]
fn register_then_publish_with_token_binds() {
    let s = TestServer::start(|_| {});
    let c = s.udp_client();
    register(&c, UE1);
    let etag = authorize(&s, &c, UE1, ALICE);
    let b = s.bindings();
    assert_eq!(b.len(), 1);
    assert_eq!(
        (
            b[0].impu.as_str(),
            b[0].mc_id.as_str(),
            b[0].service.as_str()
        ),
        (UE1, ALICE, "mcptt")
    );
    assert_eq!(b[0].client_id, CLIENT);
    assert_eq!(b[0].etag.as_deref(), Some(etag.as_str()));
    assert!(s.metrics().contains("mcx_bindings 1"));
}

#[test]
fn bad_tokens_get_403_101_and_leave_bindings_alone() {
    let s = TestServer::start(|_| {});
    let c = s.udp_client();
    register(&c, UE1);
    let etag = authorize(&s, &c, UE1, ALICE);
    let before = s.bindings();
    let other_lab =
        mcx_authz::token::LabIdms::ephemeral(&[jsonwebtoken::Algorithm::ES256]).unwrap();
    let forged = other_lab
        .mint(&mcx_authz::token::MintRequest::all_services(BOB, s.now()))
        .unwrap();
    let expired = {
        let mut r =
            mcx_authz::token::MintRequest::all_services(BOB, mcx_model::UnixTime(s.now().0 - 7200));
        r.expires_in = Some(3600);
        s.lab.mint(&r).unwrap()
    };
    let no_scope = {
        let mut r = mcx_authz::token::MintRequest::all_services(BOB, s.now());
        r.scopes = Some(vec!["3gpp:mc:data_service".into()]);
        s.lab.mint(&r).unwrap()
    };
    let mut tampered = s.token(BOB, 3600);
    tampered.replace_range(tampered.len() - 5.., "AAAAA");
    for (name, token) in [
        ("forged", forged),
        ("expired", expired),
        ("wrong scope", no_scope),
        ("tampered", tampered),
        ("garbage", "not.a.jwt".into()),
    ] {
        let r = c.send(&publish_auth(UE1, &token, CLIENT, Some(&etag), 3600));
        assert_eq!(r.status, 403, "{name}: {}", r.raw);
        assert_eq!(r.mc_warning(), Some(101), "{name}: {}", r.raw);
        assert!(r
            .header("Warning")
            .unwrap()
            .contains("service authorisation failed"));
        assert_eq!(r.etag(), None);
        assert_eq!(s.bindings(), before, "{name}: bindings must not change");
    }
    assert!(
        s.metrics()
            .contains("mcx_token_rejections_total{reason=\"expired\"} 1"),
        "{}",
        s.metrics()
    );
}

#[test]
fn user_switch_and_impu_change_rebind() {
    let s = TestServer::start(|_| {});
    let c = s.udp_client();
    register(&c, UE1);
    authorize(&s, &c, UE1, ALICE);
    // User switch on the same UE and client (CR 5.1.3.2.1).
    authorize(&s, &c, UE1, BOB);
    assert_eq!(table(&s), vec![(UE1.into(), BOB.into())]);
    // IMPU change: the UE re-registers under a new IMPU and re-sends its token.
    register(&c, UE1_NEW);
    authorize(&s, &c, UE1_NEW, BOB);
    assert_eq!(
        table(&s),
        vec![(UE1_NEW.into(), BOB.into()), (UE1.into(), BOB.into())]
    );
    // The old IMPU's de-registration ends its binding (Q-13: not before).
    let r = c.send(&third_party_register(UE1, 0));
    assert_eq!(r.status, 200);
    assert_eq!(table(&s), vec![(UE1_NEW.into(), BOB.into())]);
    assert!(s
        .metrics()
        .contains("mcx_binding_events_total{kind=\"rebound\"} 1"));
    assert!(s
        .metrics()
        .contains("mcx_binding_events_total{kind=\"unbound_deregistered\"} 1"));
}

#[test]
fn settings_refresh_stale_etag_and_removal() {
    let s = TestServer::start(|_| {});
    let c = s.udp_client();
    register(&c, UE1);
    // Settings before any binding: 404 with 141.
    let r = c.send(&publish_settings(UE1, ALICE, CLIENT, None));
    assert_eq!((r.status, r.mc_warning()), (404, Some(141)), "{}", r.raw);
    let etag = authorize(&s, &c, UE1, ALICE);
    let r = c.send(&publish_settings(UE1, ALICE, CLIENT, Some(&etag)));
    assert_eq!(r.status, 200, "{}", r.raw);
    let etag2 = r.etag().unwrap();
    assert_ne!(etag2, etag);
    // Settings naming another MC service ID never rebinds (S-6).
    let r = c.send(&publish_settings(UE1, BOB, CLIENT, Some(&etag2)));
    assert_eq!((r.status, r.mc_warning()), (404, Some(141)));
    // Refresh with the current tag; the old one is stale now.
    let r = c.send(&publish_empty(UE1, &etag2, 3600));
    assert_eq!(
        (r.status, r.header("Expires").as_deref()),
        (200, Some("3600"))
    );
    let etag3 = r.etag().unwrap();
    let r = c.send(&publish_empty(UE1, &etag2, 3600));
    assert_eq!(r.status, 412);
    // 423 below Min-Expires.
    let r = c.send(&publish_empty(UE1, &etag3, 5));
    assert_eq!(
        (r.status, r.header("Min-Expires").as_deref()),
        (423, Some("60"))
    );
    // Removal (log-off).
    let r = c.send(&publish_empty(UE1, &etag3, 0));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(s.bindings().is_empty());
    assert_eq!(c.send(&publish_empty(UE1, &etag3, 3600)).status, 412);
}

#[test]
fn retransmission_is_answered_identically_and_processed_once() {
    let s = TestServer::start(|_| {});
    let c = s.udp_client();
    register(&c, UE1);
    let msg = publish_auth(UE1, &s.token(ALICE, 3600), CLIENT, None, u32::MAX);
    let bytes = msg.to_bytes(&c.local());
    let first = c.send_raw(&bytes);
    let again = c.send_raw(&bytes);
    assert_eq!(first.status, 200);
    assert_eq!(
        first.raw, again.raw,
        "a retransmission gets the same response bytes"
    );
    // Had the machine seen it twice, the second 200 would carry a new SIP-ETag.
    assert_eq!(s.bindings()[0].etag, first.etag());
    assert!(
        s.metrics()
            .contains("mcx_sip_requests_total{method=\"PUBLISH\",status=\"200\"} 1"),
        "{}",
        s.metrics()
    );
}

#[test]
fn untrusted_source_is_refused_and_pai_not_believed() {
    let s = TestServer::start(|c| c.sip.trusted_cores = vec!["127.0.0.2/32".parse().unwrap()]);
    let c = s.udp_client();
    let r = c.send(&third_party_register(UE1, 600));
    assert_eq!(r.status, 403);
    let r = c.send(&publish_auth(
        UE1,
        &s.token(ALICE, 3600),
        CLIENT,
        None,
        3600,
    ));
    assert_eq!((r.status, r.mc_warning()), (403, None));
    assert!(s.bindings().is_empty());
}

#[test]
fn tcp_carries_the_same_procedure_and_pipelined_messages() {
    let s = TestServer::start(|_| {});
    let mut c = TcpClient::connect(s.tcp);
    let local = c.local();
    // Two messages in one write: the framer must split them by Content-Length.
    let mut both = third_party_register(UE1, 600).to_bytes(&local);
    both.extend(publish_auth(UE1, &s.token(ALICE, 3600), CLIENT, None, 3600).to_bytes(&local));
    c.write(&both);
    assert_eq!(c.read_reply().status, 200);
    let r = c.read_reply();
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(table(&s), vec![(UE1.into(), ALICE.into())]);
    // A CRLF keep-alive ping gets a pong and the connection stays usable.
    c.write(b"\r\n\r\n");
    let r = c.send(&publish_empty(UE1, &r.etag().unwrap(), 0));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(s.bindings().is_empty());
}

#[test]
fn compact_folded_and_ipv6_forms_are_understood() {
    let s = TestServer::start(|_| {});
    let c = s.udp_client();
    let local = c.local();
    let msg = format!(
        "REGISTER sip:[2001:db8::1] SIP/2.0\r\n\
         v: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK-v6a\r\n\
         v: SIP/2.0/UDP {local};branch=z9hG4bK-v6b\r\n\
         Max-Forwards: 70\r\n\
         f: <sip:scscf.ims.example.org>;tag=x\r\n\
         t: <{UE1}>\r\n\
         i: compact-1@test\r\n\
         CSeq: 1\r\n  REGISTER\r\n\
         Expires: 600\r\n\
         l: 0\r\n\r\n"
    );
    let r = c.send_raw(msg.as_bytes());
    // sip:[2001:db8::1] is neither our server URI nor a PSI: 404, but it parsed and was answered
    // with both Vias copied in order.
    assert_eq!(r.status, 404, "{}", r.raw);
    let vias: Vec<&str> = r
        .raw
        .lines()
        .filter(|l| l.starts_with("Via:") || l.starts_with("v:"))
        .collect();
    assert_eq!(vias.len(), 2, "{}", r.raw);
    assert!(vias[0].contains("[2001:db8::9]"));
    // The same compact and folded forms to our own URI register the IMPU.
    let msg = msg
        .replace("sip:[2001:db8::1]", SERVER_URI)
        .replace("z9hG4bK-v6a", "z9hG4bK-v6c");
    assert_eq!(c.send_raw(msg.as_bytes()).status, 200);
    assert!(http(s.admin, "GET", "/registrations").contains(UE1));
}

#[test]
fn bad_input_gets_clear_answers() {
    let s = TestServer::start(|_| {});
    let c = s.udp_client();
    register(&c, UE1);
    let etag = authorize(&s, &c, UE1, ALICE);
    let before = s.bindings();
    // Unknown Event: 489.
    let r = c.send(
        &publish_empty(UE1, &etag, 3600)
            .without("Event")
            .header("Event", "presence"),
    );
    assert_eq!(r.status, 489);
    // Unknown Request-URI: 404.
    let mut m = publish_empty(UE1, &etag, 3600);
    m.uri = "sip:nobody@mcx.example.org".into();
    assert_eq!(c.send(&m).status, 404);
    // Two entity-tags: 400.
    assert_eq!(
        c.send(&publish_empty(UE1, &etag, 3600).header("SIP-If-Match", "other"))
            .status,
        400
    );
    // Missing mandatory header: 400.
    assert_eq!(
        c.send(&publish_empty(UE1, &etag, 3600).without("Max-Forwards"))
            .status,
        400
    );
    // Unknown body type: 415.
    let m = publish_empty(UE1, &etag, 3600).body("text/plain", b"hello".to_vec());
    assert_eq!(c.send(&m).status, 415);
    // Over 64 KiB: 513 (over TCP, where it fits in one message).
    let mut t = TcpClient::connect(s.tcp);
    let big =
        publish_empty(UE1, &etag, 3600).body("application/poc-settings+xml", vec![b'x'; 70 * 1024]);
    let bytes = big.to_bytes(&t.local());
    t.write(&bytes);
    assert_eq!(t.read_reply().status, 513);
    // OPTIONS: 200; INVITE: 405 with Allow.
    assert_eq!(
        c.send(
            &SipMsg::new("OPTIONS", SERVER_URI)
                .header("From", "<sip:a@b>;tag=1")
                .header("To", "<sip:c@d>")
        )
        .status,
        200
    );
    let r = c.send(
        &SipMsg::new("INVITE", PSI_MCPTT)
            .header("From", "<sip:a@b>;tag=1")
            .header("To", "<sip:c@d>"),
    );
    assert_eq!(r.status, 405);
    assert!(r.header("Allow").unwrap().contains("PUBLISH"));
    // Garbage and a missing blank line: dropped, no response, nothing stored.
    c.send_expect_silence(b"\x00\xff garbage", Duration::from_millis(300));
    c.send_expect_silence(
        b"PUBLISH sip:mcptt@mcx.example.org SIP/2.0\r\nCall-ID: x\r\n",
        Duration::from_millis(300),
    );
    assert_eq!(
        s.bindings(),
        before,
        "bad input leaves every binding as it was"
    );
}

#[test]
fn token_expiry_policy_ends_binding_when_clock_passes_exp() {
    let s = TestServer::start(|c| {
        c.policy.overrides.insert(
            "token_expiry".into(),
            toml::Value::String("end-binding".into()),
        );
    });
    let c = s.udp_client();
    register(&c, UE1);
    let r = c.send(&publish_auth(
        UE1,
        &s.token(ALICE, 120),
        CLIENT,
        None,
        u32::MAX,
    ));
    assert_eq!(r.status, 200);
    s.advance(60);
    assert_eq!(s.bindings().len(), 1);
    s.advance(61);
    assert!(
        s.bindings().is_empty(),
        "the binding ends at the token's exp"
    );
    assert!(s.metrics().contains("unbound_token_expired"));
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer (`/proc/net/snmp`).
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// RFC 3903 R-35 over UDP: requests of one IMPU sent back to back, without waiting for answers,
/// are handled in arrival order, whichever of the server's threads reads them and however long
/// a PUBLISH's signature check takes. Per IMPU: a third-party REGISTER, a PUBLISH with a token
/// (checked off the ordered path) and a de-REGISTER. 150 IMPUs in bursts of 10, each burst's 30
/// requests interleaved and sent without waiting (the bursts are bounded so that no socket
/// buffer on the way can drop one). In order, every request gets 200 and no binding is left; a
/// PUBLISH handled before its REGISTER, or after its de-REGISTER, is refused, and a de-REGISTER
/// handled before its PUBLISH leaves a binding.
#[test]
fn a_burst_of_udp_requests_is_handled_in_arrival_order_per_impu() {
    const N: usize = 150;
    const BURST: usize = 10;
    let s = TestServer::start(|_| {});
    let c = s.udp_client();
    c.socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = c.local();
    let impu = |i: usize| format!("sip:burst{i}@ims.example.org");
    let mut statuses = vec![[0u16; 3]; N];
    let mut buf = vec![0u8; 65_535];
    for first in (0..N).step_by(BURST) {
        let mut sent = std::collections::HashMap::new();
        let mut datagrams = Vec::new();
        for i in first..first + BURST {
            for step in 0..3 {
                let msg = match step {
                    0 => third_party_register(&impu(i), 600),
                    1 => publish_auth(
                        &impu(i),
                        &s.token(&format!("sip:burst{i}@example.org"), 3600),
                        CLIENT,
                        None,
                        u32::MAX,
                    ),
                    _ => third_party_register(&impu(i), 0),
                };
                sent.insert(msg.call_id(), (i, step));
                datagrams.push((i, step, msg.to_bytes(&local)));
            }
        }
        // Each IMPU's three requests in order, four IMPUs apart: the IMPUs' requests interleave.
        datagrams.sort_by_key(|(i, step, _)| (i - first) + step * 4);
        let mut last = vec![None; N];
        for (i, step, _) in &datagrams {
            assert!(
                last[*i] < Some(*step),
                "the test sends each IMPU's requests in order"
            );
            last[*i] = Some(*step);
        }
        let dropped_before = udp_rcvbuf_errors();
        for (_, _, bytes) in &datagrams {
            c.socket.send_to(bytes, c.server).unwrap();
        }
        for _ in 0..datagrams.len() {
            let Ok((n, _)) = c.socket.recv_from(&mut buf) else {
                let missing: Vec<_> = sent
                    .values()
                    .filter(|(i, step)| statuses[*i][*step] == 0)
                    .collect();
                panic!(
                    "no response within 10 s to (IMPU, step) {missing:?}; the kernel's UDP receive-buffer drops during the burst: {:?} -> {:?}; server metrics:\n{}",
                    dropped_before,
                    udp_rcvbuf_errors(),
                    s.metrics()
                );
            };
            let r = SipReply::parse(&buf[..n]);
            let (i, step) = sent[&r.header("Call-ID").unwrap()];
            statuses[i][step] = r.status;
        }
    }
    for (i, st) in statuses.iter().enumerate() {
        assert_eq!(
            st,
            &[200, 200, 200],
            "{}: REGISTER, PUBLISH, de-REGISTER",
            impu(i)
        );
    }
    assert_eq!(
        table(&s),
        vec![],
        "every binding ended with its de-REGISTER"
    );
}
