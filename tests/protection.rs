//! TS 33.180 clause 9 served for real (issue 9): `post-cr` runs `token_protection = required`
//! over real sockets. A token encrypted by Debian's `xmlsec1` under a CSK of the config binds;
//! the same token in clear gets 403 + Warning 101 and binds nothing; every bad protection gets
//! 403/101 and leaves the bindings as they were; a captured protected PUBLISH replayed from
//! another registered IMPU binds nothing (TS 33.180 5.4 CSK ↔ IMPU tie).
//!
//! FAILS when xmlsec1 is missing: `apt-get install -y xmlsec1` (`.ci/install-deps.sh`).

mod common;

use std::process::Command;

use base64::Engine as _;
use common::*;
use mcx_authz::protection::{clear_info, Protector, INFO_CONTENT_ID};
use mcx_authz::server::config::ServerConfig;
use mcx_model::Service;
use mcx_sec::csk::{Csk, CskConfig, CskEntry, CskId};
use mcx_sec::kdf::{FixedKeys, KdfReading};
use mcx_sec::xmlenc;

const ALICE: &str = "sip:alice@example.org";
const BOB: &str = "sip:bob@example.org";
const UE1: &str = "sip:ue1@ims.example.org";
const UE2: &str = "sip:ue2@ims.example.org";
const CLIENT: &str = "urn:uuid:5b4c1a3e-0000-4000-8000-00000000c901";
const CLIENT2: &str = "urn:uuid:5b4c1a3e-0000-4000-8000-00000000c902";
const INFO_TYPE: &str = "application/vnd.3gpp.mcptt-info+xml";

fn alice() -> CskEntry {
    CskEntry {
        id: CskId(0x2ddd5bf0),
        csk: Csk::from_hex("e06e651061835473 42d3e8a6ce2540a8").unwrap(),
        mc_id: ALICE.into(),
    }
}

fn bob() -> CskEntry {
    CskEntry {
        id: CskId(0x21111111),
        csk: Csk::new([0x42; 16]),
        mc_id: BOB.into(),
    }
}

fn csk_config(e: &CskEntry) -> CskConfig {
    CskConfig {
        csk_id: e.id.to_string(),
        csk: e.csk.to_hex(),
        mc_id: e.mc_id.clone(),
    }
}

/// Post-cr exactly as `serve` runs it (no override), with alice's and bob's lab CSKs.
fn post_cr(reading: KdfReading) -> impl FnOnce(&mut ServerConfig) {
    move |c: &mut ServerConfig| {
        c.policy.overrides.remove("token_protection");
        c.protection.kdf = reading;
        c.protection.csk = vec![csk_config(&alice()), csk_config(&bob())];
    }
}

fn start() -> TestServer {
    let s = TestServer::start(post_cr(KdfReading::default()));
    assert!(s.metrics().contains("mcx_bindings 0"), "fresh server");
    s
}

fn register(c: &UdpClient, impu: &str) {
    let r = c.send(&third_party_register(impu, 600));
    assert_eq!(r.status, 200, "{}", r.raw);
}

fn publish(impu: &str, content_type: &str, body: &str) -> SipMsg {
    publish_to(Service::Mcptt, impu)
        .header("Expires", "3600")
        .body(content_type, body.as_bytes().to_vec())
}

fn rows(s: &TestServer) -> Vec<(String, String, String)> {
    s.bindings()
        .into_iter()
        .map(|b| (b.impu, b.mc_id, b.client_id))
        .collect()
}

fn refused(r: &SipReply, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.raw);
    assert_eq!(r.mc_warning(), Some(101), "{what}: {}", r.raw);
}

fn rejections(s: &TestServer, reason: &str) -> u64 {
    let want = format!("mcx_token_rejections_total{{reason=\"{reason}\"}} ");
    s.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&want).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn protector(e: &CskEntry) -> Protector {
    Protector::new(e, KdfReading::default()).unwrap()
}

fn protected_info(e: &CskEntry, token: &str, client: &str) -> String {
    protector(e)
        .encrypt_info(
            Service::Mcptt,
            &clear_info(Service::Mcptt, token, Some(client)),
        )
        .unwrap()
}

/// xmlsec1 encrypts the content of `<mcptt-access-token>` with alice's derived key.
fn xmlsec1_info(token: &str, client: &str) -> String {
    let dir = std::env::temp_dir().join(format!("mcx-protection-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = FixedKeys::derive(&alice(), KdfReading::default()).unwrap();
    let key_name = alice().id.key_name();
    std::fs::write(dir.join("conf.key"), keys.confidentiality.octets()).unwrap();
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mcpttinfo xmlns=\"urn:3gpp:ns:mcpttInfo:1.0\"><mcptt-Params><mcptt-access-token type=\"Encrypted\"><mcpttString>{token}</mcpttString></mcptt-access-token><mcptt-client-id type=\"Normal\"><mcpttString>{client}</mcpttString></mcptt-client-id></mcptt-Params></mcpttinfo>"
    );
    std::fs::write(dir.join("doc.xml"), doc).unwrap();
    std::fs::write(
        dir.join("tmpl.xml"),
        format!(
            "<xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" Type=\"http://www.w3.org/2001/04/xmlenc#Content\"><xenc:EncryptionMethod Algorithm=\"{}\"/><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:KeyName>{key_name}</ds:KeyName></ds:KeyInfo><xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedData>",
            xmlenc::AES128_GCM
        ),
    )
    .unwrap();
    let out = Command::new("xmlsec1")
        .arg("encrypt")
        .arg(format!("--aeskey:{key_name}"))
        .arg(dir.join("conf.key"))
        .arg("--xml-data")
        .arg(dir.join("doc.xml"))
        .args(["--node-xpath", "//*[local-name()='mcptt-access-token']"])
        .arg(dir.join("tmpl.xml"))
        .output()
        .expect("xmlsec1 is required for the clause-9 tests: apt-get install -y xmlsec1");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8(out.stdout).unwrap();
    assert!(!body.contains(token) && body.contains("CipherValue"));
    body
}

/// Issue 9 "done when": post-cr on embedded defaults plus a lab CSK. The token in clear gets
/// 403/101 and binds nothing; the same token encrypted by xmlsec1 binds, over UDP and TCP.
#[test]
fn xmlsec1_protected_token_binds_and_the_clear_token_is_refused() {
    let s = start();
    let c = s.udp_client();
    register(&c, UE1);
    let token = s.token(ALICE, 3600);
    let clear = clear_info(Service::Mcptt, &token, Some(CLIENT));
    refused(&c.send(&publish(UE1, INFO_TYPE, &clear)), "token in clear");
    assert!(rows(&s).is_empty());
    assert_eq!(rejections(&s, "unprotected"), 1);

    let r = c.send(&publish(UE1, INFO_TYPE, &xmlsec1_info(&token, CLIENT)));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.etag().is_some());
    assert_eq!(rows(&s), [(UE1.into(), ALICE.into(), CLIENT.into())]);

    // Over TCP too (a second IMPU cannot use alice's CSK; alice's UE re-publishes).
    let mut t = TcpClient::connect(s.tcp);
    let r = t.send(&publish(UE1, INFO_TYPE, &xmlsec1_info(&token, CLIENT)));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(rows(&s).len(), 1);
}

/// Our own encryption and, signed, the whole multipart body bind too.
#[test]
fn protected_and_signed_bodies_bind() {
    let s = start();
    let c = s.udp_client();
    register(&c, UE1);
    register(&c, UE2);
    let p = protector(&alice());
    let info = protected_info(&alice(), &s.token(ALICE, 3600), CLIENT);
    let (ct, body) = p.signed_multipart(Service::Mcptt, &info);
    let r = c.send(&publish(UE1, &ct, &body));
    assert_eq!(r.status, 200, "{}", r.raw);
    // Bob, under his own CSK, from his own IMPU.
    let bob_info = protected_info(&bob(), &s.token(BOB, 3600), CLIENT2);
    let r = c.send(&publish(UE2, INFO_TYPE, &bob_info));
    assert_eq!(r.status, 200, "{}", r.raw);
    let mut got = rows(&s);
    got.sort();
    assert_eq!(
        got,
        [
            (UE1.into(), ALICE.into(), CLIENT.into()),
            (UE2.into(), BOB.into(), CLIENT2.into())
        ]
    );
}

fn cipher_value(body: &str) -> (usize, usize) {
    let a = body.find("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
    (a, body[a..].find('<').unwrap() + a)
}

/// The negative catalogue of issue 9, each over the wire: 403/101, bindings as they were.
#[test]
fn every_bad_protection_gets_403_101_and_changes_nothing() {
    let s = start();
    let c = s.udp_client();
    register(&c, UE1);
    let token = s.token(ALICE, 3600);
    // A binding to keep: alice on UE1.
    let good = protected_info(&alice(), &token, CLIENT);
    assert_eq!(c.send(&publish(UE1, INFO_TYPE, &good)).status, 200);
    let before = s.bindings();
    let b64 = base64::engine::general_purpose::STANDARD;
    let (a, z) = cipher_value(&good);
    let mut raw = b64.decode(&good[a..z]).unwrap();
    let with_cipher = |v: &str| format!("{}{v}{}", &good[..a], &good[z..]);
    let ed0 = good.find("<xenc:EncryptedData").unwrap();
    let ed1 = good.find("</xenc:EncryptedData>").unwrap() + "</xenc:EncryptedData>".len();
    let flipped_tag = {
        *raw.last_mut().unwrap() ^= 1;
        with_cipher(&b64.encode(&raw))
    };
    let p = protector(&alice());
    let signed_bad = {
        let (ct, body) = p.signed_multipart(Service::Mcptt, &good);
        // The info part altered after signing: one octet of the client-id ciphertext (the
        // token still opens; the signature's digest does not match).
        let i = body.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len() + 3;
        let mut bytes = body.into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        (ct, String::from_utf8(bytes).unwrap())
    };
    let unsigned_info = {
        // A signature part over the poc-settings part only, not over the info body.
        let settings = settings_xml(CLIENT);
        let sig = p.sign(&[("settings@lab", settings.as_bytes())]);
        let b = "b9";
        (
            format!("multipart/mixed;boundary={b}"),
            format!("--{b}\r\nContent-Type: {INFO_TYPE}\r\nContent-ID: <{INFO_CONTENT_ID}>\r\n\r\n{good}\r\n--{b}\r\nContent-Type: application/poc-settings+xml\r\nContent-ID: <settings@lab>\r\n\r\n{settings}\r\n--{b}\r\nContent-Type: application/vnd.3gpp.mcptt-signed+xml\r\n\r\n{sig}\r\n--{b}--\r\n"),
        )
    };
    let cases: Vec<(&str, String, String)> = vec![
        (
            "unknown KeyName",
            INFO_TYPE.into(),
            good.replace(&alice().id.key_name(), &CskId(0x2fffffff).key_name()),
        ),
        (
            "wrong key (bob's CSK-ID)",
            INFO_TYPE.into(),
            good.replace(&alice().id.key_name(), &bob().id.key_name()),
        ),
        ("flipped tag", INFO_TYPE.into(), flipped_tag),
        (
            "wrong Algorithm",
            INFO_TYPE.into(),
            good.replace(
                xmlenc::AES128_GCM,
                "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            ),
        ),
        (
            "Encrypted without EncryptedData",
            INFO_TYPE.into(),
            format!("{}{}", &good[..ed0], &good[ed1..]),
        ),
        (
            "Encrypted, empty element",
            INFO_TYPE.into(),
            format!("{}{}", &good[..ed0], &good[ed1..]).replacen(
                "<mcptt-access-token type=\"Encrypted\"></mcptt-access-token>",
                "<mcptt-access-token type=\"Encrypted\"/>",
                1,
            ),
        ),
        (
            "two EncryptedData",
            INFO_TYPE.into(),
            format!("{}{}{}", &good[..ed1], &good[ed0..ed1], &good[ed1..]),
        ),
        ("junk base64", INFO_TYPE.into(), with_cipher("@@@@")),
        (
            "oversize",
            INFO_TYPE.into(),
            with_cipher(&"A".repeat(12_000)),
        ),
        ("failed signature", signed_bad.0, signed_bad.1),
        (
            "signature not over the info body",
            unsigned_info.0,
            unsigned_info.1,
        ),
        (
            "another user's CSK (bob's key for alice's token)",
            INFO_TYPE.into(),
            protected_info(&bob(), &token, CLIENT),
        ),
    ];
    for (what, ct, body) in &cases {
        let r = c.send(&publish(UE1, ct, body));
        refused(&r, what);
        assert_eq!(s.bindings(), before, "{what} changed the bindings");
    }
    assert_eq!(rejections(&s, "bad_protection"), 11);
    assert_eq!(rejections(&s, "csk_other_user"), 1);
}

/// A protected PUBLISH captured on the way and replayed from another registered IMPU: the CSK
/// is tied to the IMPU it was first used from (TS 33.180 5.4), so nothing is bound.
#[test]
fn a_captured_protected_publish_replayed_from_another_impu_binds_nothing() {
    let s = start();
    let c = s.udp_client();
    register(&c, UE1);
    register(&c, UE2);
    let p = protector(&alice());
    let info = protected_info(&alice(), &s.token(ALICE, 3600), CLIENT);
    let (ct, body) = p.signed_multipart(Service::Mcptt, &info);
    assert_eq!(c.send(&publish(UE1, &ct, &body)).status, 200);
    let before = s.bindings();
    let r = c.send(&publish(UE2, &ct, &body));
    refused(&r, "replay from UE2");
    assert_eq!(s.bindings(), before);
    assert_eq!(rejections(&s, "csk_other_impu"), 1);
    // Still refused with a fresh token of alice's under her CSK, from UE2.
    let fresh = protected_info(&alice(), &s.token(ALICE, 3600), CLIENT2);
    refused(
        &c.send(&publish(UE2, INFO_TYPE, &fresh)),
        "alice's CSK from UE2",
    );
    assert_eq!(s.bindings(), before);
}

/// The KDF reading is served as configured: `xpk-id-only` opens what it derives and refuses a
/// body protected under the default reading (and vice versa above).
#[test]
fn the_kdf_reading_is_a_setting() {
    let s = TestServer::start(post_cr(KdfReading::XpkIdOnly));
    let c = s.udp_client();
    register(&c, UE1);
    let token = s.token(ALICE, 3600);
    refused(
        &c.send(&publish(
            UE1,
            INFO_TYPE,
            &protected_info(&alice(), &token, CLIENT),
        )),
        "default-reading body at an xpk-id-only server",
    );
    let p = Protector::new(&alice(), KdfReading::XpkIdOnly).unwrap();
    let info = p
        .encrypt_info(
            Service::Mcptt,
            &clear_info(Service::Mcptt, &token, Some(CLIENT)),
        )
        .unwrap();
    let r = c.send(&publish(UE1, INFO_TYPE, &info));
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// Under `optional` a token in clear binds and a protected one must still open; under `off`
/// a protected token is refused.
#[test]
fn optional_and_off_serve_as_they_say() {
    let s = TestServer::start(|c| {
        c.protection.csk = vec![csk_config(&alice())];
    });
    let c = s.udp_client();
    register(&c, UE1);
    register(&c, UE2);
    let token = s.token(ALICE, 3600);
    let clear = clear_info(Service::Mcptt, &token, Some(CLIENT));
    assert_eq!(c.send(&publish(UE1, INFO_TYPE, &clear)).status, 200);
    let bad = protected_info(&alice(), &token, CLIENT2)
        .replace(&alice().id.key_name(), &CskId(0x2fffffff).key_name());
    refused(
        &c.send(&publish(UE2, INFO_TYPE, &bad)),
        "optional, unknown CSK",
    );

    let s = TestServer::start(|c| {
        c.policy
            .overrides
            .insert("token_protection".into(), "off".into());
        c.protection.csk = vec![csk_config(&alice())];
    });
    let c = s.udp_client();
    register(&c, UE1);
    let token = s.token(ALICE, 3600);
    refused(
        &c.send(&publish(
            UE1,
            INFO_TYPE,
            &protected_info(&alice(), &token, CLIENT),
        )),
        "off, protected",
    );
    assert!(rows(&s).is_empty());
}
