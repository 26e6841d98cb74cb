//! The SIP edge on the fixture corpus (`tests/fixtures/sip/`, made by `gen_fixtures.py`):
//! framing, parsing, bodies, the adapter to the machine and responses, plus a bounded proptest of
//! random and mutated messages through the same path the cargo-fuzz target takes.

use std::cell::Cell;

use mcx_authz::sip::adapter::{classify, Edge, EdgeConfig, EdgeContext};
use mcx_authz::sip::framing::{
    frame_datagram, Frame, FramingErrorKind, StreamFramer, MAX_MESSAGE_SIZE,
};
use mcx_authz::sip::parse::{parse, Method, SipMessage, SipRequest};
use mcx_authz::sip::response::{
    build_response, error_response_for_head, method_not_allowed, options_ok, ResponseConfig, ALLOW,
};
use mcx_authz::sip::selfcheck::{check_bytes, Reached};
use mcx_model::{
    AssertedIdentity, ClientId, ETag, EventPackage, IfMatch, Impu, Input, Machine, MalformedBody,
    McId, Output, Protection, ProtectionFailure, Publish, PublishBody, PublishTarget,
    RegisterTarget, Service, ServiceSet, Settings, ThirdPartyRegister, TokenId, TokenRejection,
    TokenVerdict, UnixTime, Variant, VerifiedClaims,
};
use proptest::prelude::*;

const GOOD_TOKEN_SUFFIX: &str = ".good";
const CLIENT: &str = "urn:uuid:00000000-0000-4000-8000-000000000001";
const IMPU: &str = "sip:alice@ims.example.org";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sip/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A stand-in validator: tokens ending in `.good` verify (all scopes, MCPTT/MCVideo/MCData IDs),
/// others have a bad signature.
fn validator(t: &str) -> TokenVerdict {
    if t.ends_with(GOOD_TOKEN_SUFFIX) {
        TokenVerdict::Verified(VerifiedClaims {
            mcptt_id: Some(McId::new("sip:alice@mcptt.example.org")),
            mcvideo_id: Some(McId::new("sip:alice@mcvideo.example.org")),
            mcdata_id: Some(McId::new("sip:alice@mcdata.example.org")),
            scopes: ServiceSet::ALL,
            exp: UnixTime(4_000_000_000),
            token_id: TokenId::new(t),
        })
    } else {
        TokenVerdict::Rejected(TokenRejection::BadSignature)
    }
}

fn request(bytes: &[u8]) -> SipRequest {
    let frame = frame_datagram(bytes).expect("frames");
    match parse(&frame).expect("parses") {
        SipMessage::Request(r) => *r,
        SipMessage::Response(r) => panic!("a response: {r:?}"),
    }
}

/// Classifies `bytes` from a trusted (or not) source; also returns how often the validator and
/// the protection opener (which knows no CSK here) ran.
fn edge_with(bytes: &[u8], config: &EdgeConfig, trusted: bool) -> (Edge, usize) {
    let (edge, calls, _) = edge_counting(bytes, config, trusted);
    (edge, calls)
}

fn edge_counting(bytes: &[u8], config: &EdgeConfig, trusted: bool) -> (Edge, usize, usize) {
    let req = request(bytes);
    let calls = Cell::new(0);
    let opens = Cell::new(0);
    let mut validate = |t: &str| {
        calls.set(calls.get() + 1);
        validator(t)
    };
    let mut open = |_: &mcx_authz::sip::Sealed<'_>| {
        opens.set(opens.get() + 1);
        Err(ProtectionFailure::UnknownKey)
    };
    let mut ctx = EdgeContext {
        config,
        trusted_source: trusted,
        validate: &mut validate,
        open: &mut open,
        key_transport: &mut |_: &[u8]| {},
        fresh_etag: ETag::new("fresh-1"),
    };
    let edge = classify(&req, &mut ctx);
    (edge, calls.get(), opens.get())
}

fn publish_and_notes(bytes: &[u8]) -> (Publish, Vec<String>) {
    match edge(bytes) {
        Edge::Machine {
            input: Input::Publish(p),
            notes,
        } => (p, notes),
        other => panic!("not a PUBLISH input: {other:?}"),
    }
}

fn edge(bytes: &[u8]) -> Edge {
    edge_with(bytes, &EdgeConfig::default(), true).0
}

fn publish(bytes: &[u8]) -> Publish {
    match edge(bytes) {
        Edge::Machine {
            input: Input::Publish(p),
            ..
        } => p,
        other => panic!("not a PUBLISH input: {other:?}"),
    }
}

fn rcfg() -> ResponseConfig {
    EdgeConfig::default().response_config()
}

fn expected_settings() -> Settings {
    Settings {
        answer_mode_automatic: Some(true),
        user_profile_index: Some(2),
        multiplex_support: Some(true),
    }
}

#[test]
fn third_party_register_with_message_sip_body() {
    let (e, calls) = edge_with(
        &fixture("register_third_party.sip"),
        &EdgeConfig::default(),
        true,
    );
    let Edge::Machine {
        input: Input::ThirdPartyRegister(r),
        notes,
    } = e
    else {
        panic!("{e:?}")
    };
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(r.impu, AssertedIdentity::Trusted(Impu::new(IMPU)));
    assert_eq!(r.expires, Some(600_000));
    let mut both = ServiceSet::only(Service::Mcptt);
    both.insert(Service::Mcvideo);
    assert_eq!(r.services, Some(both));
    assert_eq!(calls, 2);
    let services: Vec<Service> = r.embedded.iter().map(|(s, _)| *s).collect();
    assert_eq!(services, vec![Service::Mcptt, Service::Mcvideo]);
    for (_, a) in &r.embedded {
        assert!(matches!(a.token, TokenVerdict::Verified(_)));
        assert_eq!(a.client_id, ClientId::new(CLIENT));
        assert_eq!(a.protection, Protection::Clear);
    }
}

#[test]
fn register_from_untrusted_source_is_untrusted_and_deregistration_reads_contact_expires() {
    let (e, _) = edge_with(
        &fixture("register_third_party.sip"),
        &EdgeConfig::default(),
        false,
    );
    assert!(matches!(
        e,
        Edge::Machine {
            input: Input::ThirdPartyRegister(ThirdPartyRegister {
                impu: AssertedIdentity::Untrusted,
                ..
            }),
            ..
        }
    ));
    let Edge::Machine {
        input: Input::ThirdPartyRegister(r),
        ..
    } = edge(&fixture("register_deregister.sip"))
    else {
        panic!()
    };
    // RFC 3261 10.3: Contact `expires=0` wins over `Expires: 600000`.
    assert_eq!(r.expires, Some(0));
    assert_eq!(r.services, None);
}

#[test]
fn tel_request_uri_parses_and_tel_to_is_an_impu() {
    let bytes = fixture("register_tel_uri.sip");
    assert_eq!(request(&bytes).request_uri, "tel:+15551234567");
    // Not our server URI: the machine answers 404 (the edge only says so).
    assert!(matches!(
        edge(&bytes),
        Edge::Machine {
            input: Input::ThirdPartyRegister(ThirdPartyRegister {
                target: RegisterTarget::NotOurs,
                ..
            }),
            ..
        }
    ));
    let cfg = EdgeConfig {
        server_uri: "tel:+15551234567".into(),
        ..EdgeConfig::default()
    };
    let (e, _) = edge_with(&bytes, &cfg, true);
    assert!(matches!(
        e,
        Edge::Machine { input: Input::ThirdPartyRegister(ThirdPartyRegister { impu: AssertedIdentity::Trusted(i), .. }), .. }
            if i.as_str() == "tel:+15551234567"
    ));
}

#[test]
fn publish_with_token_and_settings() {
    let p = publish(&fixture("publish_auth.sip"));
    assert_eq!(p.target, PublishTarget::Service(Service::Mcptt));
    assert_eq!(p.event, EventPackage::PocSettings);
    assert_eq!(p.impu, AssertedIdentity::Trusted(Impu::new(IMPU)));
    assert_eq!(p.if_match, IfMatch::Absent);
    assert_eq!(p.expires, Some(u32::MAX));
    assert_eq!(p.fresh_etag, ETag::new("fresh-1"));
    let PublishBody::Authorization(a) = p.body else {
        panic!("{:?}", p.body)
    };
    assert!(matches!(a.token, TokenVerdict::Verified(_)));
    assert_eq!(a.protection, Protection::Clear);
    assert_eq!(a.client_id, ClientId::new(CLIENT));
    assert_eq!(a.settings, Some(expected_settings()));
}

#[test]
fn publish_with_bad_token_reaches_the_machine_as_a_rejected_verdict() {
    let p = publish(&fixture("publish_bad_token.sip"));
    assert!(matches!(
        p.body,
        PublishBody::Authorization(ref a)
            if a.token == TokenVerdict::Rejected(TokenRejection::BadSignature) && a.settings.is_none()
    ));
}

#[test]
fn encrypted_token_goes_to_the_opener_and_never_to_the_validator_unopened() {
    let (e, calls, opens) = edge_counting(
        &fixture("publish_encrypted_token.sip"),
        &EdgeConfig::default(),
        true,
    );
    let Edge::Machine {
        input: Input::Publish(p),
        ..
    } = e
    else {
        panic!()
    };
    assert_eq!(
        calls, 0,
        "an unopened protected token must not reach the validator"
    );
    assert_eq!(opens, 1);
    let PublishBody::Authorization(a) = p.body else {
        panic!("{:?}", p.body)
    };
    // The opener's verdict goes to the machine, which refuses it (403/101).
    assert_eq!(
        a.protection,
        Protection::Failed(ProtectionFailure::UnknownKey)
    );
    assert_eq!(a.client_id, ClientId::new(CLIENT));
}

#[test]
fn settings_only_publish() {
    let p = publish(&fixture("publish_settings_only.sip"));
    assert_eq!(p.if_match, IfMatch::One(ETag::new("etag-1")));
    assert_eq!(
        p.body,
        PublishBody::SettingsOnly {
            claimed_mc_id: McId::new("sip:alice@mcptt.example.org"),
            client_id: ClientId::new(CLIENT),
            settings: Some(expected_settings()),
        }
    );
}

#[test]
fn bodyless_refresh_and_remove() {
    let p = publish(&fixture("publish_refresh.sip"));
    assert_eq!((p.body, p.expires), (PublishBody::Empty, Some(3600)));
    assert_eq!(p.if_match, IfMatch::One(ETag::new("etag-1")));
    let p = publish(&fixture("publish_remove.sip"));
    assert_eq!((p.body, p.expires), (PublishBody::Empty, Some(0)));
}

#[test]
fn mcvideo_and_mcdata_bodies() {
    for (file, service) in [
        ("publish_mcvideo.sip", Service::Mcvideo),
        ("publish_mcdata.sip", Service::Mcdata),
    ] {
        let p = publish(&fixture(file));
        assert_eq!(p.target, PublishTarget::Service(service), "{file}");
        assert!(
            matches!(&p.body, PublishBody::Authorization(a) if matches!(a.token, TokenVerdict::Verified(_))),
            "{file}: {:?}",
            p.body
        );
    }
}

#[test]
fn shared_psi_takes_the_service_from_the_body_or_feature_tags() {
    let shared = "sip:mc@mcx.example.org".to_owned();
    let cfg = EdgeConfig {
        psi: Service::ALL
            .into_iter()
            .map(|s| (s, shared.clone()))
            .collect(),
        ..EdgeConfig::default()
    };
    let video = String::from_utf8(fixture("publish_mcvideo.sip"))
        .unwrap()
        .replace("sip:mcvideo@mcx.example.org", &shared);
    let (e, _) = edge_with(video.as_bytes(), &cfg, true);
    assert!(matches!(
        e,
        Edge::Machine {
            input: Input::Publish(Publish {
                target: PublishTarget::Service(Service::Mcvideo),
                ..
            }),
            ..
        }
    ));
    // Body-less: the Accept-Contact / P-Preferred-Service tags name MCPTT.
    let refresh = String::from_utf8(fixture("publish_refresh.sip"))
        .unwrap()
        .replace("sip:mcptt@mcx.example.org", &shared);
    let (e, _) = edge_with(refresh.as_bytes(), &cfg, true);
    assert!(matches!(
        e,
        Edge::Machine {
            input: Input::Publish(Publish {
                target: PublishTarget::Service(Service::Mcptt),
                ..
            }),
            ..
        }
    ));
    let bare: String = refresh
        .split("\r\n")
        .filter(|l| !l.starts_with("Accept-Contact") && !l.starts_with("P-Preferred-Service"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let (e, _) = edge_with(bare.as_bytes(), &cfg, true);
    assert!(
        matches!(
            e,
            Edge::Machine {
                input: Input::Publish(Publish {
                    target: PublishTarget::AmbiguousPsi,
                    ..
                }),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn unknown_request_uri_has_no_service_and_untrusted_pai_is_ignored() {
    let text = String::from_utf8(fixture("publish_auth.sip"))
        .unwrap()
        .replace("PUBLISH sip:mcptt@", "PUBLISH sip:nobody@");
    let (e, calls) = edge_with(text.as_bytes(), &EdgeConfig::default(), false);
    let Edge::Machine {
        input: Input::Publish(p),
        ..
    } = e
    else {
        panic!()
    };
    assert_eq!(p.target, PublishTarget::NotOurs);
    assert_eq!(p.impu, AssertedIdentity::Untrusted);
    assert_eq!(calls, 0);
}

#[test]
fn compact_and_folded_headers() {
    let bytes = fixture("publish_compact_folded.sip");
    let r = request(&bytes);
    assert_eq!(r.method, Method::Publish);
    assert_eq!(r.vias.len(), 2);
    assert_eq!(r.top_branch.as_deref(), Some("z9hG4bKcompact1"));
    assert_eq!(r.call_id, "compact-1@192.0.2.10");
    assert_eq!((r.cseq, r.cseq_method.as_str()), (7, "PUBLISH"));
    assert_eq!(r.max_forwards, 70);
    assert_eq!(r.p_asserted_identity, vec![IMPU.to_owned()]);
    assert_eq!(r.event.as_deref(), Some("poc-settings"));
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/vnd.3gpp.mcptt-info+xml")
    );
    let p = publish(&bytes);
    assert!(matches!(p.body, PublishBody::Authorization(_)));
}

#[test]
fn ipv6_via_and_request_uri_and_tel_pai() {
    let bytes = fixture("publish_ipv6.sip");
    let r = request(&bytes);
    assert_eq!(r.request_uri, "sip:[2001:db8::1]");
    assert_eq!(
        r.vias[0],
        "SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bKv6a"
    );
    assert_eq!(r.top_branch.as_deref(), Some("z9hG4bKv6a"));
    assert_eq!(r.p_asserted_identity, vec!["tel:+15551234567", IMPU]);
    let mut cfg = EdgeConfig::default();
    cfg.psi.insert(Service::Mcptt, "sip:[2001:DB8:0::1]".into());
    let (e, _) = edge_with(&bytes, &cfg, true);
    let Edge::Machine {
        input: Input::Publish(p),
        ..
    } = e
    else {
        panic!()
    };
    assert_eq!(p.target, PublishTarget::Service(Service::Mcptt));
    // The sip: URI is preferred over the tel: URI as the IMPU.
    assert_eq!(p.impu, AssertedIdentity::Trusted(Impu::new(IMPU)));
}

#[test]
fn two_pipelined_messages_in_one_tcp_read_at_any_cut() {
    let bytes = fixture("pipelined.tcp");
    let mut whole = StreamFramer::new();
    whole.push(&bytes);
    let a = whole.next().unwrap().unwrap();
    let b = whole.next().unwrap().unwrap();
    assert!(whole.next().is_none());
    assert_eq!(whole.buffered(), 0);
    assert!(a.head.starts_with("OPTIONS "));
    assert!(b.head.starts_with("PUBLISH "));
    assert!(matches!(edge(&a.to_bytes()), Edge::Options));
    assert!(matches!(
        publish(&b.to_bytes()).body,
        PublishBody::Authorization(_)
    ));
    for cut in 0..=bytes.len() {
        let mut s = StreamFramer::new();
        let mut got: Vec<Frame> = Vec::new();
        for part in [&bytes[..cut], &bytes[cut..]] {
            s.push(part);
            while let Some(f) = s.next() {
                got.push(f.unwrap());
            }
        }
        assert_eq!(got, vec![a.clone(), b.clone()], "cut at {cut}");
    }
}

#[test]
fn missing_blank_line_is_an_error_not_a_misparse() {
    let bytes = fixture("no_blank_line.sip");
    let e = frame_datagram(&bytes).unwrap_err();
    assert_eq!(e.kind, FramingErrorKind::NoHeaderEnd);
    assert_eq!(e.status(), None);
    let mut s = StreamFramer::new();
    s.push(&bytes);
    assert!(s.next().is_none(), "a stream waits for the rest");
}

#[test]
fn short_body_and_bad_content_length_get_400() {
    let cfg = rcfg();
    for (file, want) in [
        ("short_body.sip", "ShortBody"),
        ("bad_content_length.sip", "BadContentLength"),
    ] {
        let e = frame_datagram(&fixture(file)).unwrap_err();
        assert!(format!("{:?}", e.kind).starts_with(want), "{file}: {e:?}");
        assert_eq!(e.status(), Some(400));
        let resp = error_response_for_head(e.head.as_deref().unwrap(), 400, None, &cfg).unwrap();
        let resp = String::from_utf8(resp).unwrap();
        assert!(resp.starts_with("SIP/2.0 400 Bad Request\r\n"), "{resp}");
        assert!(resp.contains("Call-ID: pub-1@192.0.2.10\r\n"));
        assert!(resp.contains("Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKpcscf1\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;branch=z9hG4bKue1\r\n"));
    }
}

#[test]
fn over_64_kib_gets_513() {
    let head = String::from_utf8(fixture("publish_refresh.sip")).unwrap();
    let head = head.trim_end_matches("Content-Length: 0\r\n\r\n");
    let body = vec![b'x'; MAX_MESSAGE_SIZE];
    let mut big = format!("{head}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    big.extend_from_slice(&body);
    let e = frame_datagram(&big).unwrap_err();
    assert!(matches!(
        e.kind,
        FramingErrorKind::TooLarge {
            limit: MAX_MESSAGE_SIZE,
            ..
        }
    ));
    assert_eq!(e.status(), Some(513));
    let resp = error_response_for_head(e.head.as_deref().unwrap(), 513, None, &rcfg()).unwrap();
    assert!(resp.starts_with(b"SIP/2.0 513 Message Too Large\r\n"));
    // On TCP the oversized message is skipped and the next one is framed.
    let mut s = StreamFramer::new();
    s.push(&big);
    s.push(&fixture("publish_remove.sip"));
    assert!(matches!(s.next(), Some(Err(e)) if e.status() == Some(513)));
    assert!(s.next().unwrap().unwrap().head.contains("Expires: 0"));
}

#[test]
fn missing_max_forwards_gets_a_400_naming_it() {
    let frame = frame_datagram(&fixture("missing_max_forwards.sip")).unwrap();
    let e = parse(&frame).unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(e.reason, "missing Max-Forwards");
    let reply = e.reply_to.expect("Via/From/To/Call-ID/CSeq were readable");
    assert_eq!(reply.cseq, "1 PUBLISH");
}

#[test]
fn doctype_billion_laughs_and_unbalanced_xml_are_refused() {
    let (p, notes) = publish_and_notes(&fixture("publish_billion_laughs.sip"));
    assert_eq!(p.body, PublishBody::Malformed(MalformedBody::BadInfo));
    assert!(notes.iter().any(|n| n.contains("DOCTYPE")), "{notes:?}");
    let (p, notes) = publish_and_notes(&fixture("publish_unbalanced_xml.sip"));
    assert_eq!(p.body, PublishBody::Malformed(MalformedBody::BadInfo));
    assert!(notes.iter().any(|n| n.contains("closed")), "{notes:?}");
}

#[test]
fn options_extension_methods_and_responses() {
    let foo = fixture("extension_method.sip");
    let r = request(&foo);
    assert_eq!(r.method, Method::Other("FOO".into()));
    assert_eq!(edge(&foo), Edge::MethodNotAllowed);
    let resp = String::from_utf8(method_not_allowed(&r, &rcfg())).unwrap();
    assert!(resp.starts_with("SIP/2.0 405 Method Not Allowed\r\n"));
    assert!(resp.contains(&format!("Allow: {ALLOW}\r\n")));
    let opt = Frame {
        head: String::from_utf8(fixture("pipelined.tcp")).unwrap()[4..]
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_owned(),
        body: Vec::new(),
    };
    let r = request(&opt.to_bytes());
    let resp = String::from_utf8(options_ok(&r, &rcfg())).unwrap();
    assert!(resp
        .starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5064;branch=z9hG4bKopt1\r\n"));
    let m = parse(&frame_datagram(&fixture("response_200.sip")).unwrap()).unwrap();
    assert!(matches!(m, SipMessage::Response(ref s) if s.status == 200));
}

/// The whole path with the real machine: third-party REGISTER, PUBLISH with a valid token
/// (200 + SIP-ETag + Expires), a retransmission gets the same bytes, a bad token gets 403 with
/// the TS 24.379 warning, an interval too brief gets 423 with Min-Expires.
#[test]
fn responses_from_the_machine() {
    let mut m = Machine::new(Variant::PreCr.policy());
    let cfg = EdgeConfig::default();
    let rc = cfg.response_config();
    let mut answer = |bytes: &[u8], etag: &str| -> String {
        let req = request(bytes);
        let mut validate = validator;
        let mut open = |_: &mcx_authz::sip::Sealed<'_>| Err(ProtectionFailure::UnknownKey);
        let mut ctx = EdgeContext {
            config: &cfg,
            trusted_source: true,
            validate: &mut validate,
            open: &mut open,
            key_transport: &mut |_: &[u8]| {},
            fresh_etag: ETag::new(etag),
        };
        let Edge::Machine { input, .. } = classify(&req, &mut ctx) else {
            panic!()
        };
        let out = m.handle(UnixTime(1000), input);
        let resp = out
            .iter()
            .find_map(|o| match o {
                Output::Response(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        String::from_utf8(build_response(&req, &resp, &rc)).unwrap()
    };
    let reg = answer(&fixture("register_third_party.sip"), "unused");
    assert!(reg.starts_with("SIP/2.0 200 OK\r\n"), "{reg}");
    let auth_bytes = fixture("publish_auth.sip");
    let ok = answer(&auth_bytes, "etag-A");
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert!(ok.contains("SIP-ETag: etag-A\r\n"));
    assert!(ok.contains("\r\nExpires: "));
    assert!(ok.contains("To: <sip:alice@ims.example.org>;tag="));
    assert!(ok.ends_with("Content-Length: 0\r\n\r\n"));
    // Same request bytes, same response bytes (the To tag is deterministic).
    let req = request(&auth_bytes);
    let r = mcx_model::Response {
        outcome: mcx_model::Outcome::Authorized,
        etag: Some(ETag::new("etag-A")),
        expires: Some(3600),
        wait_for: mcx_model::Seq::ZERO,
    };
    assert_eq!(
        build_response(&req, &r, &rc),
        build_response(&request(&auth_bytes), &r, &rc)
    );
    let bad = answer(&fixture("publish_bad_token.sip"), "etag-B");
    assert!(bad.starts_with("SIP/2.0 403 Forbidden\r\n"), "{bad}");
    assert!(bad.contains("Warning: 399 mcx.example.org \"101 service authorisation failed\"\r\n"));
    assert!(!bad.contains("SIP-ETag"));
    let brief = String::from_utf8(fixture("publish_refresh.sip"))
        .unwrap()
        .replace("Expires: 3600", "Expires: 1")
        .replace("SIP-If-Match: etag-1", "SIP-If-Match: etag-A");
    let resp = answer(brief.as_bytes(), "etag-C");
    assert!(
        resp.starts_with("SIP/2.0 423 Interval Too Brief\r\n"),
        "{resp}"
    );
    assert!(resp.contains("\r\nMin-Expires: "));
}

#[test]
fn every_fixture_goes_through_the_selfcheck() {
    let dir = format!("{}/tests/fixtures/sip", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sip" || e == "tcp") {
            check_bytes(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} fixtures");
}

/// Measures parse + body extraction + adapter for the ~1.1 KB and 1.8 KB PUBLISH fixtures (debug
/// builds are slow; run with `cargo test --release --test sip_edge -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a check; run by hand in release"]
fn measure_parse_and_extract() {
    for file in ["publish_mcvideo.sip", "publish_auth.sip"] {
        let bytes = fixture(file);
        let cfg = EdgeConfig::default();
        let n = 100_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let frame = frame_datagram(std::hint::black_box(&bytes)).unwrap();
            let SipMessage::Request(req) = parse(&frame).unwrap() else {
                panic!()
            };
            let mut validate = |_: &str| TokenVerdict::Rejected(TokenRejection::Malformed);
            let mut open = |_: &mcx_authz::sip::Sealed<'_>| Err(ProtectionFailure::UnknownKey);
            let mut ctx = EdgeContext {
                config: &cfg,
                trusted_source: true,
                validate: &mut validate,
                open: &mut open,
                key_transport: &mut |_: &[u8]| {},
                fresh_etag: ETag::new("e"),
            };
            std::hint::black_box(classify(&req, &mut ctx));
        }
        let per = start.elapsed() / n;
        println!(
            "{file} ({} B): {per:?} per frame+parse+extract+adapter",
            bytes.len()
        );
    }
}

const SIP_TOKENS: &[&str] = &[
    "\r\n",
    "\r\n\r\n",
    ":",
    ";",
    ",",
    "<",
    ">",
    "\"",
    " ",
    "\t",
    "Content-Length: ",
    "l: ",
    "Via: SIP/2.0/UDP ",
    "--boundary1",
    "--boundary1--",
    "<mcptt-access-token type=\"Encrypted\">",
    "</mcpttString>",
    "<!DOCTYPE x>",
    "&lol;",
    "Content-Type: multipart/mixed;boundary=b\r\n",
    "SIP-If-Match: x\r\n",
    "Expires: 99999999999\r\n",
    "sip:[2001:db8::1]",
    "tel:+1555",
    "\u{e9}",
    "\u{0}",
];

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn apply(mut v: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = v.len().max(1);
        match *m {
            Mutation::Flip(i, b) => {
                if !v.is_empty() {
                    let i = i % v.len();
                    v[i] ^= b;
                }
            }
            Mutation::Insert(i, t) => {
                let i = i % (v.len() + 1);
                let t = SIP_TOKENS[t % SIP_TOKENS.len()].as_bytes();
                v.splice(i..i, t.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = i % len;
                let end = (i + n % 64).min(v.len());
                if i < end {
                    v.drain(i..end);
                }
            }
            Mutation::Duplicate(i, n) => {
                let i = i % len;
                let end = (i + n % 256).min(v.len());
                if i < end {
                    let dup = v[i..end].to_vec();
                    v.splice(end..end, dup);
                }
            }
            Mutation::Truncate(i) => v.truncate(i % len),
        }
    }
    v
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

const CORPUS: &[&str] = &[
    "publish_auth.sip",
    "publish_settings_only.sip",
    "publish_compact_folded.sip",
    "publish_ipv6.sip",
    "publish_encrypted_token.sip",
    "register_third_party.sip",
    "pipelined.tcp",
    "publish_mcdata.sip",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutated fixtures: never panic; accepted messages re-frame and re-parse identically;
    /// stream framing does not depend on read sizes (all inside `check_bytes`).
    #[test]
    fn mutated_messages_hold_the_invariants(
        which in 0..CORPUS.len(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let data = apply(fixture(CORPUS[which]), &muts);
        check_bytes(&data);
    }

    /// Random bytes, with and without a plausible start line in front.
    #[test]
    fn random_bytes_hold_the_invariants(
        prefix in prop::bool::ANY,
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut data = if prefix { b"PUBLISH sip:mcptt@mcx.example.org SIP/2.0\r\n".to_vec() } else { Vec::new() };
        data.extend_from_slice(&bytes);
        check_bytes(&data);
    }

    /// The multipart splitter agrees with mailparse on well-formed bodies with a preamble,
    /// transport padding and an epilogue.
    #[test]
    fn multipart_split_agrees_with_mailparse(
        contents in prop::collection::vec("[a-zA-Z0-9<>/=\" .-]{0,40}", 1..5),
        preamble in "[a-z ]{0,20}",
        epilogue in "[a-z ]{0,20}",
        padding in "[ \t]{0,3}",
    ) {
        let boundary = "b0undary-x";
        let mut body = String::new();
        if !preamble.is_empty() {
            body.push_str(&preamble);
            body.push_str("\r\n");
        }
        for c in &contents {
            body.push_str(&format!("--{boundary}{padding}\r\nContent-Type: text/plain\r\n\r\n{c}\r\n"));
        }
        body.push_str(&format!("--{boundary}--\r\n{epilogue}"));
        let ours = mcx_authz::sip::body::split_multipart(body.as_bytes(), boundary).unwrap();
        let mail = format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n{body}");
        let parsed = mailparse::parse_mail(mail.as_bytes()).unwrap();
        prop_assert_eq!(ours.len(), parsed.subparts.len());
        for (o, m) in ours.iter().zip(&parsed.subparts) {
            let raw = m.get_body_raw().unwrap();
            prop_assert_eq!(o.body, raw.as_slice());
        }
    }
}

#[test]
fn a_proptest_run_reaches_every_stage() {
    // Guards against a corpus or mutator that only ever exercises framing errors.
    let mut seen = std::collections::BTreeSet::new();
    for name in CORPUS {
        seen.insert(format!("{:?}", check_bytes(&fixture(name))));
    }
    seen.insert(format!("{:?}", check_bytes(&fixture("no_blank_line.sip"))));
    seen.insert(format!("{:?}", check_bytes(&fixture("response_200.sip"))));
    seen.insert(format!(
        "{:?}",
        check_bytes(&fixture("extension_method.sip"))
    ));
    seen.insert(format!(
        "{:?}",
        check_bytes(&fixture("missing_max_forwards.sip"))
    ));
    seen.insert(format!(
        "{:?}",
        check_bytes(&fixture("publish_unbalanced_xml.sip"))
    ));
    for r in [
        Reached::Framing,
        Reached::Parse,
        Reached::Response,
        Reached::Direct,
        Reached::Machine,
        Reached::MachineBadBody,
    ] {
        assert!(seen.contains(&format!("{r:?}")), "never reached {r:?}");
    }
}

/// cargo-fuzz found this: a start line whose 8th byte falls inside a multi-byte character made
/// the status-line check slice a `str` off a character boundary and panic.
#[test]
fn multibyte_start_line_does_not_panic() {
    let crash: &[u8] = &[
        197, 173, 0, 0, 1, 115, 10, 197, 173, 0, 0, 10, 13, 10, 13, 13, 10, 13, 10, 113, 1,
    ];
    mcx_authz::sip::selfcheck::check_bytes(crash);
    for start in [
        "ŭŭŭŭ sip:a@b SIP/2.0",
        "INVITE sip:a@b SIPŭ/2.0",
        "SIP/2.0ŭ 200 OK",
    ] {
        let msg =
            format!("{start}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n");
        mcx_authz::sip::selfcheck::check_bytes(msg.as_bytes());
        if let Ok(frame) = mcx_authz::sip::frame_datagram(msg.as_bytes()) {
            let _ = mcx_authz::sip::parse(&frame);
            let _ = mcx_authz::sip::response::error_response_for_head(
                &frame.head,
                400,
                None,
                &mcx_authz::sip::adapter::EdgeConfig::default().response_config(),
            );
        }
    }
}

/// From an untrusted source the edge reads nothing past the identity: no signature check, no
/// body, no opener (and the machine's answer does not depend on the body, see
/// `model/tests/machine_decisions.rs`).
#[test]
fn an_untrusted_publish_costs_no_token_work() {
    for file in ["publish_auth.sip", "publish_encrypted_token.sip"] {
        let (e, calls, opens) = edge_counting(&fixture(file), &EdgeConfig::default(), false);
        assert_eq!((calls, opens), (0, 0), "{file}");
        let Edge::Machine {
            input: Input::Publish(p),
            ..
        } = e
        else {
            panic!("{file}")
        };
        assert_eq!(p.impu, AssertedIdentity::Untrusted);
        assert_eq!(p.body, PublishBody::Empty);
        assert_eq!(p.target, PublishTarget::Service(Service::Mcptt));
    }
    // The same bytes from a trusted core do cost one check.
    let (_, calls, _) = edge_counting(&fixture("publish_auth.sip"), &EdgeConfig::default(), true);
    assert_eq!(calls, 1);
}

/// TS 33.180 5.4: each `application/mikey` part of a PUBLISH body goes to the runtime's
/// `key_transport` (octets as sent) before any protected value goes to the opener, so the opener
/// can try the uploaded CSK; an untrusted PUBLISH's body is not read at all.
#[test]
fn mikey_parts_reach_the_runtime_before_the_opener() {
    let info = "<mcpttinfo xmlns=\"urn:3gpp:ns:mcpttInfo:1.0\"><mcptt-Params><mcptt-access-token type=\"Encrypted\"><xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\"><xenc:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#aes128-gcm\"/><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:KeyName>LdFb8A==</ds:KeyName></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>Y2lwaGVy</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></mcptt-access-token><mcptt-client-id type=\"Normal\"><mcpttString>urn:uuid:00000000-0000-4000-8000-000000000001</mcpttString></mcptt-client-id></mcptt-Params></mcpttinfo>";
    let body = format!(
        "--b1\r\nContent-Type: application/vnd.3gpp.mcptt-info+xml\r\n\r\n{info}\r\n--b1\r\nContent-Type: application/mikey\r\nContent-Transfer-Encoding: base64\r\n\r\nAQID\r\n--b1--\r\n"
    );
    let msg = format!(
        "PUBLISH sip:mcptt@mcx.example.org SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-m1\r\nMax-Forwards: 70\r\nFrom: <sip:someone-else@example.net>;tag=1\r\nTo: <{IMPU}>\r\nCall-ID: m1\r\nCSeq: 1 PUBLISH\r\nP-Asserted-Identity: <{IMPU}>\r\nEvent: poc-settings\r\nExpires: 3600\r\nContent-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let req = request(msg.as_bytes());
    let cfg = EdgeConfig::default();
    for trusted in [true, false] {
        let events = std::cell::RefCell::new(Vec::<String>::new());
        let mut validate = validator;
        let mut open = |s: &mcx_authz::sip::Sealed<'_>| {
            events.borrow_mut().push(format!("open {}", s.element));
            Err(ProtectionFailure::UnknownKey)
        };
        let mut key_transport = |part: &[u8]| {
            events
                .borrow_mut()
                .push(format!("mikey {}", String::from_utf8_lossy(part)));
        };
        let mut ctx = EdgeContext {
            config: &cfg,
            trusted_source: trusted,
            validate: &mut validate,
            open: &mut open,
            key_transport: &mut key_transport,
            fresh_etag: ETag::new("e"),
        };
        let edge = classify(&req, &mut ctx);
        let Edge::Machine {
            input: Input::Publish(p),
            ..
        } = edge
        else {
            panic!("{edge:?}")
        };
        // The edge leaves `key_upload` to the runtime, which fills it from what it was given.
        assert_eq!(p.key_upload, None);
        let seen = events.into_inner();
        if trusted {
            assert_eq!(seen, ["mikey AQID", "open mcptt-access-token"]);
            // From is not the identity: P-Asserted-Identity is.
            assert_eq!(p.impu, AssertedIdentity::Trusted(Impu::new(IMPU)));
        } else {
            assert!(seen.is_empty(), "{seen:?}");
        }
    }
}
