//! The KMS, CM and GM resource servers (issue 11; TS 33.180 5.1.3.1 steps C-2, C-4, C-5) over
//! real HTTP (ureq) against an in-process `mcx-authz` server: the RFC 6750 answers, the full
//! scope × resource × identity matrix (the scope-separation invariant of docs/ARCHITECTURE.md),
//! the Annex D XML shape with the Streamwide v5 KMS material, XCAP ETags, group membership,
//! HTTPS, and a proptest of path handling.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::TestServer;
use mcx_authz::token::{LabIdms, MintRequest};
use mcx_model::UnixTime;

const ALICE: &str = "sip:alice@streamwide.com";
const BOB: &str = "sip:bob@streamwide.com";
const CAROL: &str = "sip:carol@streamwide.com";
const GROUP: &str = "sip:fire-1@streamwide.com";
const KMS_ROOT: &str = "/keymanagement/identity/v1";
const NS: &str = "urn:3gpp:ns:mcsecKMSInterface:1.0";
/// The vector key period (UserKeyPeriod 16777215, offset 0).
const VECTOR_PERIOD: u64 = 236;
const PERIOD_SECS: u64 = 16_777_215;
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// A marker inside bob's stored profile: it must never reach anyone but bob.
const BOB_SECRET: &str = "BOB-PROFILE-SECRET";
/// A file in the data dir outside every served tree.
const TOP_SECRET: &str = "TOP-SECRET-OUTSIDE-THE-TREES";

/// A scratch data dir, removed on drop.
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The lab data: the Streamwide v5 KMS community and key sets of alice, bob and the GMS; bob's
/// stored MCPTT profile; one group with alice as member and the GMS as authorized user.
fn lab_data() -> DataDir {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mcx-resource-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kms-streamwide-v5");
    copy_dir(&fixtures, &dir.join("kms"));
    let bob_dir = dir.join("cm/org.3gpp.mcptt.user-profile/users").join(BOB);
    std::fs::create_dir_all(&bob_dir).unwrap();
    std::fs::write(
        bob_dir.join("mcptt-user-profile-0.xml"),
        format!("<mcptt-user-profile xmlns=\"urn:3gpp:mcptt:user-profile:1.0\" XUI-URI=\"{BOB}\"><Name>{BOB_SECRET}</Name></mcptt-user-profile>"),
    )
    .unwrap();
    std::fs::write(dir.join("secret.txt"), TOP_SECRET).unwrap();
    std::fs::write(dir.join("cm").join("secret.txt"), TOP_SECRET).unwrap();
    mcx_authz::resource::gm::add_group(
        &dir,
        mcx_authz::resource::gm::Group {
            id: GROUP.into(),
            display_name: Some("Fire 1".into()),
            members: vec![ALICE.into()],
            authorized: vec!["gms@streamwide.com".into()],
        },
    )
    .unwrap();
    DataDir(dir)
}

struct Lab {
    server: TestServer,
    data: DataDir,
    base: String,
    agent: ureq::Agent,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(20)))
        .build()
        .into()
}

fn start(adjust: impl FnOnce(&mut mcx_authz::server::ServerConfig)) -> Lab {
    let data = lab_data();
    let dir = data.0.clone();
    let server = TestServer::start(move |c| {
        c.http.data_dir = Some(dir);
        adjust(c);
    });
    let base = format!("http://{}", server.http.expect("HTTP listener"));
    Lab {
        server,
        data,
        base,
        agent: agent(),
    }
}

/// One answer: status, headers we look at, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    www: Option<String>,
    etag: Option<String>,
    content_type: Option<String>,
    body: String,
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut r = r.expect("HTTP exchange");
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    let (www, etag, content_type) = (h("www-authenticate"), h("etag"), h("content-type"));
    Answer {
        status: r.status().as_u16(),
        www,
        etag,
        content_type,
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

impl Lab {
    fn now(&self) -> UnixTime {
        self.server.now()
    }

    fn mint(&self, req: MintRequest) -> String {
        self.server.lab.mint(&req).expect("mint")
    }

    /// A token for `mcptt_id` (also as MCVideo and MCData ID) with exactly `scopes`.
    fn token(&self, mc_id: &str, scopes: &[&str]) -> String {
        let mut req = MintRequest::all_services(mc_id, self.now());
        req.scopes = Some(scopes.iter().map(|s| s.to_string()).collect());
        self.mint(req)
    }

    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        answer(req.call())
    }

    fn get_if_none_match(&self, path: &str, token: Option<&str>, etag: &str) -> Answer {
        let mut req = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("If-None-Match", etag);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        answer(req.call())
    }

    fn post(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        answer(req.send_empty())
    }
}

fn enc(s: &str) -> String {
    s.replace(':', "%3A").replace('@', "%40")
}

fn profile_path(svc: &str, user: &str) -> String {
    format!(
        "/xcap-root/org.3gpp.{svc}.user-profile/users/{}/{svc}-user-profile-0.xml",
        enc(user)
    )
}

fn group_path() -> String {
    format!(
        "/xcap-root/org.openmobilealliance.groups/global/byGroupID/{}",
        enc(GROUP)
    )
}

/// The `<NTP time hex>` segment for a time inside the vectors' key period.
fn vector_period_time() -> String {
    let ntp_secs = VECTOR_PERIOD * PERIOD_SECS + 1000;
    format!("{:016X}", ntp_secs << 32)
}

fn scope(server: &str, svc: &str) -> String {
    format!("3gpp:mc:{svc}_{server}_management_service")
}

fn assert_insufficient_scope(a: &Answer, needed: &str) {
    assert_eq!(a.status, 403, "{a:?}");
    let www = a.www.as_deref().expect("WWW-Authenticate");
    assert!(
        www.starts_with("Bearer ") && www.contains("error=\"insufficient_scope\""),
        "{www}"
    );
    assert!(www.contains(needed), "{www} should name {needed}");
}

fn assert_invalid_token(a: &Answer) {
    assert_eq!(a.status, 401, "{a:?}");
    let www = a.www.as_deref().expect("WWW-Authenticate");
    assert!(www.contains("error=\"invalid_token\""), "{www}");
}

/// The `KmsKeySet`s of a `KmsResponse`, as (UserUri, UserID, KeyPeriodNo, UserDecryptKey),
/// after checking the Annex D envelope.
fn key_sets(xml: &str) -> Vec<(String, String, u64, String)> {
    let doc = roxmltree::Document::parse(xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "KmsResponse");
    assert_eq!(root.tag_name().namespace(), Some(NS));
    for child in ["UserUri", "KmsUri", "Time", "ClientReqUrl", "KmsMessage"] {
        assert!(
            root.children().any(|c| c.tag_name().name() == child),
            "KmsResponse lacks {child}: {xml}"
        );
    }
    let msg = root
        .children()
        .find(|c| c.tag_name().name() == "KmsMessage")
        .unwrap();
    let prov = msg
        .children()
        .find(|c| c.tag_name().name() == "KmsKeyProv")
        .expect("KmsKeyProv");
    let text = |n: roxmltree::Node, name: &str| {
        n.children()
            .find(|c| c.tag_name().name() == name && c.tag_name().namespace() == Some(NS))
            .and_then(|c| c.text())
            .unwrap_or_else(|| panic!("KmsKeySet lacks {name}"))
            .to_owned()
    };
    prov.children()
        .filter(|c| c.tag_name().name() == "KmsKeySet")
        .map(|ks| {
            for name in ["UserSigningKeySSK", "UserPubTokenPVT", "KmsUri"] {
                text(ks, name);
            }
            (
                text(ks, "UserUri"),
                text(ks, "UserID"),
                text(ks, "KeyPeriodNo").parse().unwrap(),
                text(ks, "UserDecryptKey"),
            )
        })
        .collect()
}

fn kms_error_code(xml: &str) -> u16 {
    let doc = roxmltree::Document::parse(xml).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().namespace(), Some(NS));
    let err = doc
        .descendants()
        .find(|n| n.tag_name().name() == "KmsError")
        .unwrap_or_else(|| panic!("no KmsError in {xml}"));
    err.children()
        .find(|c| c.tag_name().name() == "ErrorCode")
        .and_then(|c| c.text())
        .unwrap()
        .parse()
        .unwrap()
}

fn fixture_field(file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/kms-streamwide-v5")
            .join(file),
    )
    .unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    match &v[key] {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---- The "Done when" list, one test each. ----

#[test]
fn done_when_mcptt_service_scope_alone_gets_insufficient_scope_at_keyprov() {
    let lab = start(|_| {});
    let t = lab.token(ALICE, &["openid", "3gpp:mc:ptt_service"]);
    let a = lab.post(&format!("{KMS_ROOT}/keyprov"), Some(&t));
    assert_insufficient_scope(&a, "3gpp:mc:ptt_key_management_service");
    assert_eq!(kms_error_code(&a.body), 403);
}

#[test]
fn done_when_kms_scope_gets_key_prov_for_exactly_its_own_mc_service_ids() {
    let lab = start(|_| {});
    let time = vector_period_time();
    // Alice's own key set, for the requested period: the Streamwide v5 material as published.
    let t = lab.token(ALICE, &[&scope("key", "ptt")]);
    let a = lab.post(
        &format!("{KMS_ROOT}/keyprov/{}/{time}", enc(ALICE)),
        Some(&t),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.content_type.as_deref(), Some("application/xml"));
    let sets = key_sets(&a.body);
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].0, ALICE);
    assert_eq!(sets[0].1, fixture_field("keysets/alice.toml", "UserID"));
    assert_eq!(sets[0].2, VECTOR_PERIOD);
    assert_eq!(
        sets[0].3,
        fixture_field("keysets/alice.toml", "UserDecryptKey")
    );
    // Not bob's, through the path.
    let a = lab.post(&format!("{KMS_ROOT}/keyprov/{}/{time}", enc(BOB)), Some(&t));
    assert_eq!(a.status, 403, "{a:?}");
    assert!(!a
        .body
        .contains(&fixture_field("keysets/bob.toml", "UserDecryptKey")));

    // Current period: give alice and bob key sets for it (a copy of the vector material under
    // the current KeyPeriodNo: this checks period selection, not the keys).
    let now_ntp = lab.now().0 + NTP_UNIX_OFFSET;
    let current = now_ntp / PERIOD_SECS;
    for who in ["alice", "bob"] {
        let text =
            std::fs::read_to_string(lab.data.0.join(format!("kms/keysets/{who}.toml"))).unwrap();
        let text = text.replace(
            &format!("KeyPeriodNo = {VECTOR_PERIOD}"),
            &format!("KeyPeriodNo = {current}"),
        );
        std::fs::write(
            lab.data.0.join(format!("kms/keysets/{who}-current.toml")),
            text,
        )
        .unwrap();
    }
    // A token carrying alice as MCPTT ID and bob as MCData ID, with both KMS scopes, gets both;
    // with only the MCPTT KMS scope, only alice's.
    let mut req = MintRequest {
        mcptt_id: Some(ALICE.into()),
        mcdata_id: Some(BOB.into()),
        iat: Some(lab.now()),
        ..MintRequest::default()
    };
    req.scopes = Some(vec![scope("key", "ptt"), scope("key", "data")]);
    let both = lab.mint(req.clone());
    req.scopes = Some(vec![scope("key", "ptt")]);
    let ptt_only = lab.mint(req);
    let a = lab.post(&format!("{KMS_ROOT}/keyprov"), Some(&both));
    assert_eq!(a.status, 200, "{a:?}");
    let mut users: Vec<(String, u64)> = key_sets(&a.body).into_iter().map(|s| (s.0, s.2)).collect();
    users.sort();
    assert_eq!(
        users,
        [(ALICE.to_owned(), current), (BOB.to_owned(), current)]
    );
    let a = lab.post(&format!("{KMS_ROOT}/keyprov"), Some(&ptt_only));
    let users: Vec<(String, u64)> = key_sets(&a.body).into_iter().map(|s| (s.0, s.2)).collect();
    assert_eq!(users, [(ALICE.to_owned(), current)]);
    // Current and requested period together.
    let a = lab.post(
        &format!("{KMS_ROOT}/keyprov/{}/{time}", enc(ALICE)),
        Some(&ptt_only),
    );
    let mut periods: Vec<u64> = key_sets(&a.body).into_iter().map(|s| s.2).collect();
    periods.sort();
    assert_eq!(periods, [VECTOR_PERIOD, current]);
    // A user with no key set gets a KmsError, not a key.
    let carol = lab.token(CAROL, &[&scope("key", "ptt")]);
    let a = lab.post(&format!("{KMS_ROOT}/keyprov"), Some(&carol));
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(kms_error_code(&a.body), 404);
    assert!(!a.body.contains("KmsKeySet"));
}

#[test]
fn done_when_alice_cannot_read_bobs_user_profile() {
    let lab = start(|_| {});
    let t = lab.token(ALICE, &[&scope("config", "ptt")]);
    let a = lab.get(&profile_path("mcptt", BOB), Some(&t));
    assert_eq!(a.status, 403, "{a:?}");
    assert!(!a.body.contains(BOB_SECRET));
    // Her own: a generated default profile naming her.
    let a = lab.get(&profile_path("mcptt", ALICE), Some(&t));
    assert_eq!(a.status, 200, "{a:?}");
    let doc = roxmltree::Document::parse(&a.body).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "mcptt-user-profile");
    assert_eq!(doc.root_element().attribute("XUI-URI"), Some(ALICE));
    // Bob reads his stored one.
    let t = lab.token(BOB, &[&scope("config", "ptt")]);
    let a = lab.get(&profile_path("mcptt", BOB), Some(&t));
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains(BOB_SECRET));
}

#[test]
fn done_when_expired_token_gets_401_invalid_token() {
    let lab = start(|_| {});
    let now = lab.now().0;
    let expired = lab.mint(MintRequest {
        mcptt_id: Some(ALICE.into()),
        scopes: Some(vec![scope("config", "ptt")]),
        iat: Some(UnixTime(now - 7200)),
        exp: Some(UnixTime(now - 3600)),
        ..MintRequest::default()
    });
    let a = lab.get(&profile_path("mcptt", ALICE), Some(&expired));
    assert_invalid_token(&a);
    assert!(a.www.unwrap().contains("expired"));
    // A token that was good expires with the server's clock.
    let t = lab.token(ALICE, &[&scope("config", "ptt")]);
    assert_eq!(lab.get(&profile_path("mcptt", ALICE), Some(&t)).status, 200);
    lab.server.advance(3600 + 31);
    assert_invalid_token(&lab.get(&profile_path("mcptt", ALICE), Some(&t)));
}

#[test]
fn done_when_ue_initial_configuration_needs_no_token() {
    let lab = start(|_| {});
    let path = "/xcap-root/org.3gpp.mcptt.ue-init-config/global/mcptt-ue-init-config.xml";
    let a = lab.get(path, None);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/vnd.3gpp.mcptt-ue-init-config+xml")
    );
    roxmltree::Document::parse(&a.body).expect("well-formed XML");
    let etag = a.etag.expect("ETag");
    let b = lab.get_if_none_match(path, None, &etag);
    assert_eq!(b.status, 304, "{b:?}");
    assert!(b.body.is_empty());
    // Everything else needs one.
    let a = lab.get(&profile_path("mcptt", ALICE), None);
    assert_eq!(a.status, 401);
}

#[test]
fn done_when_group_document_goes_only_to_members() {
    let lab = start(|_| {});
    let gm = scope("group", "ptt");
    let alice = lab.token(ALICE, &[&gm]);
    let a = lab.get(&group_path(), Some(&alice));
    assert_eq!(a.status, 200, "{a:?}");
    let doc = roxmltree::Document::parse(&a.body).unwrap();
    let list_service = doc
        .descendants()
        .find(|n| n.tag_name().name() == "list-service")
        .unwrap();
    assert_eq!(list_service.attribute("uri"), Some(GROUP));
    let entries: Vec<&str> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "entry")
        .filter_map(|n| n.attribute("uri"))
        .collect();
    assert_eq!(entries, [ALICE]);
    // ETag / If-None-Match.
    let b = lab.get_if_none_match(&group_path(), Some(&alice), a.etag.as_deref().unwrap());
    assert_eq!(b.status, 304);
    // Through alice's tree too; not through bob's with alice's token.
    let in_tree = |user: &str| {
        format!(
            "/xcap-root/org.openmobilealliance.groups/users/{}/{}",
            enc(user),
            enc(GROUP)
        )
    };
    assert_eq!(lab.get(&in_tree(ALICE), Some(&alice)).status, 200);
    assert_eq!(lab.get(&in_tree(BOB), Some(&alice)).status, 403);
    // Bob is not a member: 403, and an unknown group looks the same.
    let bob = lab.token(BOB, &[&gm]);
    let a = lab.get(&group_path(), Some(&bob));
    assert_eq!(a.status, 403, "{a:?}");
    assert!(!a.body.contains(ALICE));
    let unknown =
        "/xcap-root/org.openmobilealliance.groups/global/byGroupID/sip%3Anone%40streamwide.com";
    assert_eq!(lab.get(unknown, Some(&alice)).status, 403);
    // The GMS is authorized for the group without being a member.
    let gms = lab.token("gms@streamwide.com", &[&gm]);
    assert_eq!(lab.get(&group_path(), Some(&gms)).status, 200);
}

// ---- The matrix. ----

/// Scope separation (docs/ARCHITECTURE.md): every single-scope token (the nine resource
/// scopes and the three MC service scopes) against every resource, as its owner and as
/// another user. A request succeeds exactly when the scope names that server and that service
/// and the resource is the token's user's (or a group the user is in); a wrong scope is 403
/// insufficient_scope naming the scope needed; another user's resource is 403.
#[test]
fn scope_separation_matrix() {
    let lab = start(|_| {});
    let time = vector_period_time();
    let mut scopes: Vec<String> = Vec::new();
    for server in ["key", "config", "group"] {
        for svc in ["ptt", "video", "data"] {
            scopes.push(scope(server, svc));
        }
    }
    for svc in ["ptt", "video", "data"] {
        scopes.push(format!("3gpp:mc:{svc}_service"));
    }
    // (name, method, path, server, service or any, owner-only resource?)
    struct Res {
        name: String,
        post: bool,
        path: String,
        server: &'static str,
        service: Option<&'static str>,
        owner: Option<&'static str>,
    }
    let mut resources = Vec::new();
    for (user, label) in [(ALICE, "own"), (BOB, "other")] {
        resources.push(Res {
            name: format!("kms keyprov {label}"),
            post: true,
            path: format!("{KMS_ROOT}/keyprov/{}/{time}", enc(user)),
            server: "key",
            service: None,
            owner: Some(user),
        });
        for (svc, w) in [("mcptt", "ptt"), ("mcvideo", "video"), ("mcdata", "data")] {
            resources.push(Res {
                name: format!("cm {svc} profile {label}"),
                post: false,
                path: profile_path(svc, user),
                server: "config",
                service: Some(w),
                owner: Some(user),
            });
        }
    }
    resources.push(Res {
        name: "kms init".into(),
        post: true,
        path: format!("{KMS_ROOT}/init"),
        server: "key",
        service: None,
        owner: None,
    });
    resources.push(Res {
        name: "kms certcache".into(),
        post: true,
        path: format!("{KMS_ROOT}/certcache"),
        server: "key",
        service: None,
        owner: None,
    });
    for (svc, w) in [("mcptt", "ptt"), ("mcvideo", "video"), ("mcdata", "data")] {
        resources.push(Res {
            name: format!("cm {svc} service config"),
            post: false,
            path: format!("/xcap-root/org.3gpp.{svc}.service-config/global/service-config.xml"),
            server: "config",
            service: Some(w),
            owner: None,
        });
    }
    resources.push(Res {
        name: "gm group (alice member)".into(),
        post: false,
        path: group_path(),
        server: "group",
        service: None,
        owner: Some(ALICE),
    });
    let mut checked = 0;
    for held in &scopes {
        let t = lab.token(ALICE, &[held.as_str()]);
        for r in &resources {
            let a = if r.post {
                lab.post(&r.path, Some(&t))
            } else {
                lab.get(&r.path, Some(&t))
            };
            let scope_ok = match r.service {
                Some(svc) => *held == scope(r.server, svc),
                None => ["ptt", "video", "data"]
                    .iter()
                    .any(|svc| *held == scope(r.server, svc)),
            };
            let owner_ok = r.owner.is_none_or(|o| o == ALICE);
            let what = format!("{held} at {}", r.name);
            if !scope_ok {
                let needed = scope(r.server, r.service.unwrap_or("ptt"));
                assert_eq!(a.status, 403, "{what}: {a:?}");
                assert_insufficient_scope(&a, &needed);
            } else if !owner_ok {
                assert_eq!(a.status, 403, "{what}: {a:?}");
                assert!(
                    a.www
                        .as_deref()
                        .is_none_or(|w| !w.contains("insufficient_scope")),
                    "{what}: {a:?}"
                );
            } else {
                assert_eq!(a.status, 200, "{what}: {a:?}");
            }
            assert!(!a.body.contains(BOB_SECRET), "{what}");
            checked += 1;
        }
    }
    assert_eq!(checked, scopes.len() * resources.len());
    assert_eq!(checked, 12 * 14);
}

#[test]
fn no_token_bad_tokens_and_the_403_setting() {
    let lab = start(|_| {});
    let path = profile_path("mcptt", ALICE);
    // No token: 401, a bare Bearer challenge.
    let a = lab.get(&path, None);
    assert_eq!(a.status, 401);
    let www = a.www.unwrap();
    assert!(
        www.starts_with("Bearer realm=") && !www.contains("error="),
        "{www}"
    );
    // Not a bearer scheme: the same.
    let a = answer(
        lab.agent
            .get(format!("{}{path}", lab.base))
            .header("Authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
            .call(),
    );
    assert_eq!(a.status, 401);
    // Garbage: invalid_token (or invalid_request for a non-b64token).
    assert_invalid_token(&lab.get(&path, Some("not.a.jwt")));
    let a = answer(
        lab.agent
            .get(format!("{}{path}", lab.base))
            .header("Authorization", "Bearer a b")
            .call(),
    );
    assert_eq!(a.status, 400);
    assert!(a.www.unwrap().contains("invalid_request"));
    let cm = scope("config", "ptt");
    let now = lab.now().0;
    // Not yet valid (issued an hour from now).
    let future = lab.mint(MintRequest {
        mcptt_id: Some(ALICE.into()),
        scopes: Some(vec![cm.clone()]),
        iat: Some(UnixTime(now + 3600)),
        ..MintRequest::default()
    });
    assert_invalid_token(&lab.get(&path, Some(&future)));
    // Foreign issuer.
    let foreign_iss = lab.mint(MintRequest {
        mcptt_id: Some(ALICE.into()),
        scopes: Some(vec![cm.clone()]),
        iat: Some(UnixTime(now)),
        iss: Some("https://idms.elsewhere.invalid".into()),
        ..MintRequest::default()
    });
    let a = lab.get(&path, Some(&foreign_iss));
    assert_invalid_token(&a);
    assert!(a.www.unwrap().contains("issuer"), "the reason is named");
    // Signed by another IdMS.
    let other = LabIdms::ephemeral(&[jsonwebtoken::Algorithm::ES256]).unwrap();
    let foreign_key = other
        .mint(&MintRequest {
            mcptt_id: Some(ALICE.into()),
            scopes: Some(vec![cm.clone()]),
            iat: Some(UnixTime(now)),
            ..MintRequest::default()
        })
        .unwrap();
    assert_invalid_token(&lab.get(&path, Some(&foreign_key)));
    // The KMS answers the same statuses in KmsError form.
    let a = lab.post(&format!("{KMS_ROOT}/init"), Some(&foreign_key));
    assert_invalid_token(&a);
    assert_eq!(kms_error_code(&a.body), 401);

    // no_token_status = 403.
    let lab403 = start(|c| c.http.no_token_status = 403);
    let a = lab403.get(&path, None);
    assert_eq!(a.status, 403);
    assert!(a.www.unwrap().starts_with("Bearer"));
}

#[test]
fn kms_init_and_certcache_have_the_annex_d_shape() {
    let lab = start(|_| {});
    let t = lab.token(ALICE, &[&scope("key", "ptt")]);
    let a = lab.post(&format!("{KMS_ROOT}/init"), Some(&t));
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.content_type.as_deref(), Some("application/xml"));
    let doc = roxmltree::Document::parse(&a.body).unwrap();
    let root = doc.root_element();
    assert_eq!(
        (root.tag_name().namespace(), root.tag_name().name()),
        (Some(NS), "KmsResponse")
    );
    let cert = doc
        .descendants()
        .find(|n| n.tag_name().name() == "KmsCertificate")
        .expect("KmsInit/KmsCertificate");
    assert_eq!(cert.parent().unwrap().tag_name().name(), "KmsInit");
    let field = |name: &str| {
        cert.children()
            .find(|c| c.tag_name().name() == name)
            .and_then(|c| c.text())
            .unwrap_or_else(|| panic!("KmsCertificate lacks {name}"))
            .to_owned()
    };
    assert_eq!(field("KmsUri"), "kms.mydev.streamwide.com");
    assert_eq!(field("UserIdFormat"), "2");
    assert_eq!(field("UserKeyPeriod"), "16777215");
    assert_eq!(field("UserKeyOffset"), "0");
    assert_eq!(
        field("PubEncKey"),
        fixture_field("certificate.toml", "PubEncKey")
    );
    assert_eq!(
        field("PubAuthKey"),
        fixture_field("certificate.toml", "PubAuthKey")
    );
    let user = root
        .children()
        .find(|c| c.tag_name().name() == "UserUri")
        .unwrap();
    assert_eq!(user.text(), Some(ALICE));

    let a = lab.post(&format!("{KMS_ROOT}/certcache"), Some(&t));
    assert_eq!(a.status, 200, "{a:?}");
    let doc = roxmltree::Document::parse(&a.body).unwrap();
    let cache = doc
        .descendants()
        .find(|n| n.tag_name().name() == "KmsCertCache")
        .expect("KmsCertCache");
    assert!(cache
        .children()
        .any(|c| c.tag_name().name() == "KmsCertificate"));
    // GET is not the KMS method; a bad time is a KmsError 400.
    assert_eq!(lab.get(&format!("{KMS_ROOT}/init"), Some(&t)).status, 405);
    let a = lab.post(
        &format!("{KMS_ROOT}/keyprov/{}/12345", enc(ALICE)),
        Some(&t),
    );
    assert_eq!(a.status, 400);
    assert_eq!(kms_error_code(&a.body), 400);
    // No community: a KmsError, not a made-up certificate.
    std::fs::remove_file(lab.data.0.join("kms/certificate.toml")).unwrap();
    let a = lab.post(&format!("{KMS_ROOT}/init"), Some(&t));
    assert_eq!(a.status, 503);
    assert_eq!(kms_error_code(&a.body), 503);
}

#[test]
fn xcap_etag_and_if_none_match_on_profiles_and_service_config() {
    let lab = start(|_| {});
    let t = lab.token(ALICE, &[&scope("config", "data")]);
    let path = profile_path("mcdata", ALICE);
    let a = lab.get(&path, Some(&t));
    assert_eq!(a.status, 200);
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/vnd.3gpp.mcdata-user-profile+xml")
    );
    let etag = a.etag.unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert_eq!(lab.get_if_none_match(&path, Some(&t), &etag).status, 304);
    assert_eq!(
        lab.get_if_none_match(&path, Some(&t), "\"other\"").status,
        200
    );
    assert_eq!(lab.get_if_none_match(&path, Some(&t), "*").status, 304);
    // A stored document replaces the default, and its ETag changes with it.
    let dir = lab
        .data
        .0
        .join("cm/org.3gpp.mcdata.user-profile/users")
        .join(ALICE);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mcdata-user-profile-0.xml"),
        "<mcdata-user-profile/>",
    )
    .unwrap();
    let b = lab.get_if_none_match(&path, Some(&t), &etag);
    assert_eq!(b.status, 200);
    assert_eq!(b.body, "<mcdata-user-profile/>");
    assert_ne!(b.etag.unwrap(), etag);
    // With a stored profile, other indexes are not invented.
    let other = path.replace("profile-0", "profile-7");
    assert_eq!(lab.get(&other, Some(&t)).status, 404);
}

#[test]
fn https_with_a_lab_certificate() {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let (cert_pem, key_pem) = mcx_authz::resource::tls::lab_certificate(&names).unwrap();
    let data = lab_data();
    let (cert, key) = (data.0.join("cert.pem"), data.0.join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    let dir = data.0.clone();
    let server = TestServer::start(move |c| {
        c.http.data_dir = Some(dir);
        c.http.tls_cert = Some(cert);
        c.http.tls_key = Some(key);
    });
    let addr = server.http.unwrap();
    let root = ureq::tls::Certificate::from_pem(cert_pem.as_bytes())
        .unwrap()
        .to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[root]))
        .build();
    let https: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_global(Some(std::time::Duration::from_secs(20)))
        .build()
        .into();
    let mut req = MintRequest::all_services(ALICE, server.now());
    req.scopes = Some(vec![scope("key", "ptt")]);
    let t = server.lab.mint(&req).unwrap();
    let a = answer(
        https
            .post(format!("https://localhost:{}{KMS_ROOT}/init", addr.port()))
            .header("Authorization", format!("Bearer {t}"))
            .send_empty(),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("KmsInit"));
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = agent()
        .get(format!(
            "http://{addr}/xcap-root/org.3gpp.mcptt.ue-init-config/global/mcptt-ue-init-config.xml"
        ))
        .call();
    assert!(plain.is_err(), "{plain:?}");
}

#[test]
fn overlong_and_escaping_paths_over_the_wire() {
    let lab = start(|_| {});
    let t = lab.token(ALICE, &[&scope("config", "ptt")]);
    let long = format!("/xcap-root/{}", "a".repeat(3000));
    assert_eq!(lab.get(&long, Some(&t)).status, 414);
    for p in [
        "/xcap-root/org.3gpp.mcptt.user-profile/users/sip%3Aalice%40streamwide.com/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/xcap-root/org.3gpp.mcptt.user-profile/users/sip%3Aalice%40streamwide.com/..%2Fsecret.txt",
        "/xcap-root/org.3gpp.mcptt.user-profile/users/%2e%2e/secret.txt",
    ] {
        let a = lab.get(p, Some(&t));
        assert_eq!(a.status, 400, "{p}: {a:?}");
        assert!(!a.body.contains(TOP_SECRET));
    }
}

// ---- Path handling, in process: never panics, never serves outside the user's tree. ----

mod paths {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, Method, Uri};
    use mcx_authz::resource::{handle, Ctx, HttpConfig};
    use proptest::prelude::*;

    struct Fixture {
        ctx: Ctx,
        token: String,
        _data: DataDir,
        bob_key: String,
    }

    fn fixture() -> &'static Fixture {
        static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        F.get_or_init(|| {
            let data = lab_data();
            let lab = LabIdms::ephemeral(&[jsonwebtoken::Algorithm::ES256]).unwrap();
            let validator =
                Arc::new(mcx_authz::token::Validator::new(lab.validator_config()).unwrap());
            let policy = mcx_model::Variant::PostCr.policy();
            let shared = Arc::new(std::sync::Mutex::new(mcx_authz::server::Shared::new(
                policy,
                16,
                1 << 20,
            )));
            let config = HttpConfig {
                data_dir: Some(data.0.clone()),
                ..HttpConfig::default()
            };
            let ctx = Ctx::new(&config, &data.0, false, validator, shared);
            let mut scopes = Vec::new();
            for server in ["key", "config", "group"] {
                for svc in ["ptt", "video", "data"] {
                    scopes.push(scope(server, svc));
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let mut req = MintRequest::all_services(ALICE, UnixTime(now));
            req.scopes = Some(scopes);
            req.expires_in = Some(24 * 3600);
            let token = lab.mint(&req).unwrap();
            Fixture {
                ctx,
                token,
                _data: data,
                bob_key: fixture_field("keysets/bob.toml", "UserDecryptKey"),
            }
        })
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("xcap-root".to_owned()),
            Just("org.3gpp.mcptt.user-profile".to_owned()),
            Just("org.3gpp.mcptt.service-config".to_owned()),
            Just("org.openmobilealliance.groups".to_owned()),
            Just("users".to_owned()),
            Just("global".to_owned()),
            Just("byGroupID".to_owned()),
            Just("keymanagement".to_owned()),
            Just("identity".to_owned()),
            Just("v1".to_owned()),
            Just("keyprov".to_owned()),
            Just(enc(ALICE)),
            Just(enc(BOB)),
            Just(BOB.to_owned()),
            Just(enc(GROUP)),
            Just("mcptt-user-profile-0.xml".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("%2e%2e".to_owned()),
            Just("%2E.".to_owned()),
            Just("..%2f..%2fsecret.txt".to_owned()),
            Just("secret.txt".to_owned()),
            Just("%00".to_owned()),
            Just("%".to_owned()),
            Just("%c0%ae%c0%ae".to_owned()),
            Just(String::new()),
            "[ -~]{0,40}",
            proptest::collection::vec(any::<u8>(), 0..24)
                .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
            (1usize..5000).prop_map(|n| "x".repeat(n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 768, .. ProptestConfig::default() })]

        #[test]
        fn any_path_is_answered_without_panic_and_never_outside_the_users_tree(
            segs in proptest::collection::vec(segment(), 0..9),
            post in any::<bool>(),
        ) {
            let f = fixture();
            let path = format!("/{}", segs.join("/"));
            // Only what an HTTP request line can carry reaches the server.
            let Ok(uri) = path.parse::<Uri>() else { return Ok(()) };
            let mut headers = HeaderMap::new();
            headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {}", f.token)).unwrap());
            let method = if post { Method::POST } else { Method::GET };
            let resp = handle(&f.ctx, method, uri, headers);
            let status = resp.status();
            prop_assert!(!status.is_server_error(), "{path}: {status}");
            let body = futures_body(resp);
            prop_assert!(!body.contains(BOB_SECRET), "{path} served bob's profile");
            prop_assert!(!body.contains(TOP_SECRET), "{path} served a file outside the trees");
            prop_assert!(!body.contains(&f.bob_key), "{path} served bob's key");
        }
    }

    fn futures_body(resp: axum::response::Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(axum::body::to_bytes(resp.into_body(), 1 << 22))
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `Validator::validate_resource` takes a token scoped only for a resource server, which the
/// SIP side (`validate`) refuses as `MissingScope`; it still refuses what `validate` refuses
/// for the token itself.
#[test]
fn validate_resource_accepts_narrow_tokens_the_sip_side_refuses() {
    use mcx_authz::token::Validator;
    use mcx_model::{TokenRejection, TokenVerdict};
    let lab = LabIdms::ephemeral(&[jsonwebtoken::Algorithm::ES256]).unwrap();
    let v = Validator::new(lab.validator_config()).unwrap();
    let now = UnixTime(1_900_000_000);
    let mut req = MintRequest::all_services(ALICE, now);
    req.scopes = Some(vec![scope("key", "ptt")]);
    let t = lab.mint(&req).unwrap();
    assert_eq!(
        v.validate(&t, now),
        TokenVerdict::Rejected(TokenRejection::MissingScope)
    );
    let got = v.validate_resource(&t, now).unwrap();
    assert_eq!(got.scope_values, [scope("key", "ptt")]);
    assert_eq!(got.mcptt_id.as_ref().map(|m| m.as_str()), Some(ALICE));
    // Tampered signature, expiry, no MC service ID claim.
    let (head, sig) = t.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}.{flipped}{}", &sig[1..]);
    assert_eq!(
        v.validate_resource(&tampered, now),
        Err(TokenRejection::BadSignature)
    );
    assert_eq!(
        v.validate_resource(&t, UnixTime(now.0 + 3600 + 31)),
        Err(TokenRejection::Expired)
    );
    let no_id = lab
        .mint(&MintRequest {
            scopes: Some(vec![scope("key", "ptt")]),
            iat: Some(now),
            ..MintRequest::default()
        })
        .unwrap();
    assert_eq!(
        v.validate_resource(&no_id, now),
        Err(TokenRejection::MissingMcId)
    );
}
