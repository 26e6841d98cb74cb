//! TS 33.180 5.4 end to end, in process, post-cr as served (`token_protection = required`): the
//! user's key material comes from our own KMS resource server over HTTP (TS 33.180 Annex D
//! `keyprov` and `init`), the client builds its CSK upload with it, and one PUBLISH carrying the
//! upload and the token encrypted under that CSK binds. The CSK is then kept: a later PUBLISH
//! protected under it without an upload binds too, but not from another IMPU (the CSK is tied to
//! its IMPU); a replayed upload, an upload signed as another user, an upload addressed to
//! another server, an upload with a forged signature, two uploads in one body and garbage are
//! each 403 with Warning 101 and leave the bindings as they were. Log-off drops the CSK: the
//! key store forgets it.

mod common;

use common::*;
use mcx_authz::protection::{clear_info, upload_multipart, Protector};
use mcx_authz::token::MintRequest;
use mcx_model::Service;
use mcx_sec::csk::{Csk, CskEntry, CskId};
use mcx_sec::kdf::KdfReading;
use mcx_sec::kms::{KmsCertificate, KmsKeySet, KmsSecrets};
use mcx_sec::mikey;

const ALICE: &str = "sip:alice@example.org";
const BOB: &str = "sip:bob@example.org";
const UE1: &str = "sip:ue1@ims.example.org";
const UE2: &str = "sip:ue2@ims.example.org";
const CLIENT: &str = "urn:uuid:5b4c1a3e-0000-4000-8000-00000000d101";
const SERVER: &str = "sip:mcx.example.org";
const NS: &str = "urn:3gpp:ns:mcsecKMSInterface:1.0";

struct Lab {
    /// `None` only between the stop and the start of [`Lab::restart`].
    running: Option<TestServer>,
    dir: std::path::PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.running = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Post-cr as served, with the lab KMS in a fresh data dir (created by the server at start, as
/// `serve` does) that the KMS resource server serves too.
fn start(tag: &str, durable: bool) -> Lab {
    let dir = std::env::temp_dir().join(format!("mcx-mikey-upload-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = serve_in(&dir, durable);
    assert!(
        dir.join("kms/certificate.toml").exists(),
        "serve made the lab KMS"
    );
    Lab {
        running: Some(server),
        dir,
    }
}

/// `serve` post-cr as served, its lab KMS in `dir/kms` (made on the first start, reused after);
/// with `durable`, its store in `dir/data` (redb, the default backend).
fn serve_in(dir: &std::path::Path, durable: bool) -> TestServer {
    serve_at(dir, durable, None)
}

/// [`serve_in`], its clock starting at `clock` (Unix seconds) when given.
fn serve_at(dir: &std::path::Path, durable: bool, clock: Option<u64>) -> TestServer {
    let d = dir.to_path_buf();
    TestServer::start(move |c| {
        lab_config(c, &d, durable);
        if clock.is_some() {
            c.admin.manual_clock_start = clock;
        }
    })
}

fn lab_config(c: &mut mcx_authz::server::ServerConfig, dir: &std::path::Path, durable: bool) {
    c.policy.overrides.remove("token_protection");
    c.http.data_dir = Some(dir.to_path_buf());
    c.mikey.kms_dir = Some(dir.join("kms"));
    c.mikey.lab_create = Some(true);
    if durable {
        c.store = mcx_authz::store::StoreConfig::redb(dir.join("data"));
    }
}

impl Lab {
    fn server(&self) -> &TestServer {
        self.running.as_ref().expect("server running")
    }

    /// Stops the server (its store closed, the file lock released) and starts another on the
    /// same directories, durable.
    fn restart(&mut self) {
        self.restart_at(None);
    }

    /// [`Lab::restart`], the new server's clock starting at `clock`.
    fn restart_at(&mut self, clock: Option<u64>) {
        self.running = None;
        self.running = Some(serve_at(&self.dir, true, clock));
    }

    fn kms(&self) -> std::path::PathBuf {
        self.dir.join("kms")
    }

    /// `mcx-authz kms provision` of `uri`, through the library the command uses.
    fn provision(&self, uri: &str) {
        let cert: KmsCertificate =
            mcx_authz::mikey::read_toml(&self.kms().join("certificate.toml")).unwrap();
        let secrets: KmsSecrets =
            mcx_authz::mikey::read_toml(&self.kms().join("secrets.toml")).unwrap();
        mcx_authz::mikey::provision(&self.kms(), &cert, &secrets, uri, self.server().now().0)
            .unwrap();
    }

    /// A token of `mc_id` for MCPTT and its key management (the KMS scope).
    fn token(&self, mc_id: &str) -> String {
        let mut req = MintRequest::all_services(mc_id, self.server().now());
        req.scopes = Some(vec![
            "openid".into(),
            "3gpp:mc:ptt_service".into(),
            "3gpp:mc:ptt_key_management_service".into(),
        ]);
        self.server().lab.mint(&req).expect("mint")
    }

    /// POST to the KMS (TS 33.180 D.2) with the bearer token; the XML body.
    fn kms_post(&self, what: &str, token: &str) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(20)))
            .build()
            .into();
        let url = format!(
            "http://{}/keymanagement/identity/v1/{what}",
            self.server().http.expect("KMS listener")
        );
        let mut r = agent
            .post(&url)
            .header("Authorization", format!("Bearer {token}"))
            .send_empty()
            .expect("KMS answers");
        assert_eq!(r.status().as_u16(), 200, "{what}");
        r.body_mut().read_to_string().expect("body")
    }

    /// The user's KMS certificate and key set, fetched as a client would (D.3.2 `KmsInit`,
    /// D.3.3 `KmsKeyProv`).
    fn fetch(&self, token: &str) -> (KmsCertificate, KmsKeySet) {
        let init = self.kms_post("init", token);
        let prov = self.kms_post("keyprov", token);
        (certificate(&init), key_set(&prov))
    }
}

fn element<'a>(doc: &'a roxmltree::Document, name: &str) -> roxmltree::Node<'a, 'a> {
    doc.descendants()
        .find(|n| n.tag_name().name() == name && n.tag_name().namespace() == Some(NS))
        .unwrap_or_else(|| panic!("no {name}"))
}

fn text(n: roxmltree::Node, name: &str) -> String {
    n.children()
        .find(|c| c.tag_name().name() == name)
        .and_then(|c| c.text())
        .unwrap_or_else(|| panic!("no {name}"))
        .trim()
        .to_owned()
}

fn certificate(xml: &str) -> KmsCertificate {
    let doc = roxmltree::Document::parse(xml).expect("KmsInit XML");
    let c = element(&doc, "KmsCertificate");
    KmsCertificate {
        kms_uri: text(c, "KmsUri"),
        user_id_format: text(c, "UserIdFormat").parse().unwrap(),
        user_key_period: text(c, "UserKeyPeriod").parse().unwrap(),
        user_key_offset: text(c, "UserKeyOffset").parse().unwrap(),
        pub_enc_key: text(c, "PubEncKey"),
        pub_auth_key: text(c, "PubAuthKey"),
    }
}

fn key_set(xml: &str) -> KmsKeySet {
    let doc = roxmltree::Document::parse(xml).expect("KmsKeyProv XML");
    let k = element(&doc, "KmsKeySet");
    KmsKeySet {
        user_uri: text(k, "UserUri"),
        user_id: text(k, "UserID"),
        key_period_no: text(k, "KeyPeriodNo").parse().unwrap(),
        user_decrypt_key: text(k, "UserDecryptKey"),
        user_signing_key_ssk: text(k, "UserSigningKeySSK"),
        user_pub_token_pvt: text(k, "UserPubTokenPVT"),
    }
}

/// The protected info body of `token` under `csk` (F.1.4 with `mc_id`).
fn protected(csk: &CskEntry, token: &str) -> (String, String) {
    let p = Protector::new(csk, KdfReading::default()).unwrap();
    let info = p
        .encrypt_info(
            Service::Mcptt,
            &clear_info(Service::Mcptt, token, Some(CLIENT)),
        )
        .unwrap();
    let sig = p.sign(&[(mcx_authz::protection::INFO_CONTENT_ID, info.as_bytes())]);
    (info, sig)
}

/// A PUBLISH from `impu` with `body` (a multipart/mixed of the given Content-Type).
fn publish(impu: &str, content_type: &str, body: String) -> SipMsg {
    publish_to(Service::Mcptt, impu)
        .header("Expires", "3600")
        .body(content_type, body.into_bytes())
}

/// One upload and the token protected under its CSK, as one PUBLISH body.
fn upload_body(message: &[u8], csk: &CskEntry, token: &str) -> (String, String) {
    let (info, sig) = protected(csk, token);
    upload_multipart(
        Service::Mcptt,
        &mikey::base64_encode(message),
        &info,
        Some(&sig),
    )
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

fn rows(s: &TestServer) -> Vec<(String, String)> {
    s.bindings()
        .into_iter()
        .map(|b| (b.impu, b.mc_id))
        .collect()
}

/// Issue 13 for uploaded CSKs: the key a user uploaded (TS 33.180 5.4) is kept in the durable
/// store with its tie, sealed (never in the clear), and written before the 200; after a restart
/// the user's next PUBLISH protected under it binds as before, and the tie still holds it to its
/// IMPU. A sealed key that was altered stops the next start with an error that names
/// `store check`: the server does not start without a CSK it acknowledged.
/// A durable lab with alice provisioned and `impus` registered, where alice uploads a CSK from
/// UE1 with a token under it (200, bound). The CSK and the server's time then.
fn durable_lab_with_upload(tag: &str, impus: &[&str]) -> (Lab, CskEntry, u64) {
    let lab = start(tag, true);
    lab.provision(ALICE);
    let c = lab.server().udp_client();
    for impu in impus {
        assert_eq!(c.send(&third_party_register(impu, 600)).status, 200);
    }
    let token = lab.token(ALICE);
    let (cert, keys) = lab.fetch(&token);
    let now = lab.server().now().0;
    let (id, csk, message) = mcx_authz::mikey::upload_with(&cert, &keys, SERVER, now).unwrap();
    let entry = CskEntry {
        id,
        csk,
        mc_id: ALICE.into(),
    };
    let (ct, body) = upload_body(&message, &entry, &token);
    let r = c.send(&publish(UE1, &ct, body));
    assert_eq!(r.status, 200, "{}", r.raw);
    (lab, entry, now)
}

#[test]
fn an_uploaded_csk_survives_a_restart_sealed_in_the_store() {
    let (mut lab, entry, _) = durable_lab_with_upload("restart", &[UE1, UE2]);
    let id = entry.id;

    lab.restart();
    let store = lab.dir.join("data").join(mcx_authz::store::redb::FILE);
    let bytes = std::fs::read(&store).expect("the store file");
    assert!(
        !bytes.windows(16).any(|w| w == entry.csk.octets()),
        "the CSK is not in the store in the clear"
    );
    let s = lab.server();
    assert_eq!(
        rows(s),
        vec![(UE1.into(), ALICE.into())],
        "bound after restart"
    );
    let c = s.udp_client();
    let (info, sig) = protected(&entry, &lab.token(ALICE));
    let (ct2, body2) = upload_multipart_without_mikey(&info, &sig);
    let r = c.send(&publish(UE1, &ct2, body2.clone()));
    assert_eq!(r.status, 200, "the uploaded CSK after a restart: {}", r.raw);
    // Still tied to UE1 (TS 33.180 5.4).
    refused(
        &c.send(&publish(UE2, &ct2, body2)),
        "the CSK from another IMPU",
    );
    assert_eq!(rejections(s, "csk_other_impu"), 1);
    drop(c);

    // Alter the sealed key (one octet of its ciphertext) while the server is stopped.
    lab.running = None;
    {
        let db = redb::Database::open(&store).expect("open the store");
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("csk_key");
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(table).unwrap();
            let key = id.to_string();
            let mut sealed = redb::ReadableTable::get(&t, key.as_str())
                .unwrap()
                .expect("the sealed key")
                .value()
                .to_vec();
            sealed[20] ^= 1;
            t.insert(key.as_str(), sealed.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = bind_error(&lab.dir);
    assert!(
        err.contains("store check") && err.contains(&id.to_string()),
        "{err}"
    );
    // `store check` opens every sealed key with the at-rest key and names the one that fails.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcx-authz"))
        .args(["store", "check", "--dir"])
        .arg(lab.dir.join("data"))
        .output()
        .expect("mcx-authz store check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("csk_key {id}: altered")), "{text}");
}

/// A binding that runs out while the server is down ends at the restart (the load's tick), and
/// its uploaded CSK goes with it: forgotten by the key store, never fed back to the machine as a
/// provisioned CSK (which would tie it to whichever IMPU used it first, TS 33.180 5.4).
#[test]
fn a_csk_whose_binding_ran_out_while_down_is_forgotten_at_the_restart() {
    let (mut lab, entry, now) = durable_lab_with_upload("lapsed", &[UE1]);

    // Down for longer than the registration (600 s) and the publication (3600 s).
    lab.restart_at(Some(now + 4000));
    let s = lab.server();
    assert!(rows(s).is_empty(), "the binding ended at the restart");
    let c = s.udp_client();
    assert_eq!(c.send(&third_party_register(UE1, 600)).status, 200);
    let (info, sig) = protected(&entry, &lab.token(ALICE));
    let (ct2, body2) = upload_multipart_without_mikey(&info, &sig);
    refused(&c.send(&publish(UE1, &ct2, body2)), "the lapsed CSK");
    assert!(rows(s).is_empty());
}

/// What `Server::bind` says when it refuses to start on `dir` (as [`serve_in`], durable).
fn bind_error(dir: &std::path::Path) -> String {
    let lab = mcx_authz::token::LabIdms::ephemeral(&[jsonwebtoken::Algorithm::ES256]).unwrap();
    let mut c = test_config(&lab);
    lab_config(&mut c, dir, true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(mcx_authz::server::Server::bind(c)) {
        Ok(_) => panic!("the server started on an altered sealed CSK"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn key_material_from_our_kms_then_upload_then_bind() {
    let lab = start("e2e", false);
    lab.provision(ALICE);
    lab.provision(BOB);
    let s = lab.server();
    let c = s.udp_client();
    for impu in [UE1, UE2] {
        assert_eq!(c.send(&third_party_register(impu, 600)).status, 200);
    }
    let alice_token = lab.token(ALICE);
    let (cert, keys) = lab.fetch(&alice_token);
    assert_eq!(keys.user_uri, ALICE);
    let now = s.now().0;

    // The upload and the token under its CSK, in one PUBLISH: 200, bound, the CSK kept.
    let (id, csk, message) = mcx_authz::mikey::upload_with(&cert, &keys, SERVER, now).unwrap();
    let entry = CskEntry {
        id,
        csk,
        mc_id: ALICE.into(),
    };
    let (ct, body) = upload_body(&message, &entry, &alice_token);
    let first = publish(UE1, &ct, body.clone());
    let r = c.send(&first);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(rows(s), vec![(UE1.into(), ALICE.into())]);
    assert!(s
        .metrics()
        .contains("mcx_binding_events_total{kind=\"csk_accepted\"} 1"));

    // Later, the token under the kept CSK, no upload: 200 (refresh of the same client).
    let (info, sig) = protected(&entry, &lab.token(ALICE));
    let (ct2, body2) = upload_multipart_without_mikey(&info, &sig);
    let r = c.send(&publish(UE1, &ct2, body2.clone()));
    assert_eq!(r.status, 200, "kept CSK: {}", r.raw);
    // The same from another IMPU: the CSK is tied to UE1 (TS 33.180 5.4).
    let r = c.send(&publish(UE2, &ct2, body2));
    refused(&r, "kept CSK from another IMPU");
    assert_eq!(rejections(s, "csk_other_impu"), 1);

    // The first PUBLISH again, in a new transaction: a replayed I_MESSAGE.
    let r = c.send(&publish(UE1, &ct, body));
    refused(&r, "replayed upload");
    assert_eq!(rejections(s, "key_upload_replayed"), 1);

    // An upload signed as bob, with alice's token under bob's CSK.
    let bob_token = lab.token(BOB);
    let (_, bob_keys) = lab.fetch(&bob_token);
    let (bid, bcsk, bmsg) = mcx_authz::mikey::upload_with(&cert, &bob_keys, SERVER, now).unwrap();
    let bob_entry = CskEntry {
        id: bid,
        csk: bcsk,
        mc_id: BOB.into(),
    };
    let (ct, body) = upload_body(&bmsg, &bob_entry, &lab.token(ALICE));
    refused(&c.send(&publish(UE2, &ct, body)), "upload of another user");
    assert_eq!(rejections(s, "key_upload_wrong_signer"), 1);

    // An upload addressed to another server identity.
    let (oid, ocsk, omsg) =
        mcx_authz::mikey::upload_with(&cert, &keys, "sip:other.example.org", now).unwrap();
    let other = CskEntry {
        id: oid,
        csk: ocsk,
        mc_id: ALICE.into(),
    };
    let (ct, body) = upload_body(&omsg, &other, &lab.token(ALICE));
    refused(
        &c.send(&publish(UE2, &ct, body)),
        "upload to another server",
    );

    // A forged signature (last octet of SIGN flipped).
    let (fid, fcsk, mut fmsg) = mcx_authz::mikey::upload_with(&cert, &keys, SERVER, now).unwrap();
    *fmsg.last_mut().unwrap() ^= 1;
    let forged = CskEntry {
        id: fid,
        csk: fcsk,
        mc_id: ALICE.into(),
    };
    let (ct, body) = upload_body(&fmsg, &forged, &lab.token(ALICE));
    refused(&c.send(&publish(UE2, &ct, body)), "forged upload");

    // Garbage in the application/mikey part.
    let junk = CskEntry {
        id: CskId(0x2000_0001),
        csk: Csk::new([7; 16]),
        mc_id: ALICE.into(),
    };
    let (info, sig) = protected(&junk, &lab.token(ALICE));
    let (ct, body) = upload_multipart(
        Service::Mcptt,
        "bm90IGEgbWlrZXkgbWVzc2FnZQ==",
        &info,
        Some(&sig),
    );
    refused(&c.send(&publish(UE2, &ct, body)), "garbage upload");

    // Two uploads in one body.
    let (tid, tcsk, tmsg) = mcx_authz::mikey::upload_with(&cert, &keys, SERVER, now).unwrap();
    let two = CskEntry {
        id: tid,
        csk: tcsk,
        mc_id: ALICE.into(),
    };
    let (ct, body) = upload_body(&tmsg, &two, &lab.token(ALICE));
    let b64 = mikey::base64_encode(&tmsg);
    let body = body.replacen(
        "--mcx-clause9-boundary\r\n",
        &format!("--mcx-clause9-boundary\r\nContent-Type: application/mikey\r\n\r\n{b64}\r\n--mcx-clause9-boundary\r\n"),
        1,
    );
    refused(&c.send(&publish(UE2, &ct, body)), "two uploads");
    assert_eq!(rejections(s, "key_upload_refused"), 4, "{}", s.metrics());

    // Through all of it, the one binding is alice's on UE1.
    assert_eq!(rows(s), vec![(UE1.into(), ALICE.into())]);
    assert!(s
        .metrics()
        .contains("mcx_binding_events_total{kind=\"csk_accepted\"} 1"));

    // Log-off (Expires: 0) ends the binding; the uploaded CSK goes with it (machine: dropped;
    // key store: forgotten), so a later token under it is refused as under an unknown CSK.
    let (info, sig) = protected(&entry, &lab.token(ALICE));
    let (ct, body) = upload_multipart_without_mikey(&info, &sig);
    let off = publish_to(Service::Mcptt, UE1)
        .header("Expires", "0")
        .body(&ct, body.clone().into_bytes());
    assert_eq!(c.send(&off).status, 200, "log-off");
    assert!(rows(s).is_empty());
    assert!(s
        .metrics()
        .contains("mcx_binding_events_total{kind=\"csk_dropped\"} 1"));
    refused(&c.send(&publish(UE1, &ct, body)), "CSK after log-off");
    assert_eq!(rejections(s, "bad_protection"), 1, "{}", s.metrics());
}

/// The info and signature parts alone (a PUBLISH under a CSK the server already holds).
fn upload_multipart_without_mikey(info: &str, sig: &str) -> (String, String) {
    let b = mcx_authz::protection::BOUNDARY;
    let body = format!(
        "--{b}\r\nContent-Type: application/vnd.3gpp.mcptt-info+xml\r\nContent-ID: <{}>\r\n\r\n{info}\r\n--{b}\r\nContent-Type: application/vnd.3gpp.mcptt-signed+xml\r\n\r\n{sig}\r\n--{b}--\r\n",
        mcx_authz::protection::INFO_CONTENT_ID
    );
    (format!("multipart/mixed;boundary={b}"), body)
}

/// A server without key material for uploads (the in-process tests' ephemeral lab trusts no
/// lab IdMS, so none is created) refuses an upload: 403/101, nothing bound.
#[test]
fn without_kms_material_an_upload_is_refused() {
    let dir = std::env::temp_dir().join(format!("mcx-mikey-upload-{}-none", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.clone();
    let s = TestServer::start(move |c| {
        c.policy.overrides.remove("token_protection");
        c.http.data_dir = Some(d);
    });
    assert!(
        !dir.join("kms").exists(),
        "no lab KMS made for a non-lab IdMS"
    );
    // Material from a community the server does not know.
    let kms = dir.join("elsewhere");
    let (cert, secrets) =
        mcx_authz::mikey::init_community(&kms, "kms.elsewhere.example", 2_592_000, 0).unwrap();
    let now = s.now().0;
    mcx_authz::mikey::provision(&kms, &cert, &secrets, ALICE, now).unwrap();
    let (id, csk, message) = mcx_authz::mikey::lab_upload(&kms, ALICE, SERVER, now).unwrap();
    let c = s.udp_client();
    assert_eq!(c.send(&third_party_register(UE1, 600)).status, 200);
    let mut req = MintRequest::all_services(ALICE, s.now());
    req.expires_in = Some(3600);
    let token = s.lab.mint(&req).unwrap();
    let entry = CskEntry {
        id,
        csk,
        mc_id: ALICE.into(),
    };
    let (ct, body) = upload_body(&message, &entry, &token);
    refused(
        &c.send(&publish(UE1, &ct, body)),
        "upload without KMS material",
    );
    assert_eq!(rejections(&s, "key_upload_refused"), 1);
    assert!(s.bindings().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
