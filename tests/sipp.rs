//! The SIPp suites of `tests/sipp/` (issue 5 item 3) against the real `mcx-authz serve` binary,
//! each scenario over UDP and over TCP, each against a fresh server so that the whole binding
//! table, the registrations and the counters can be asserted after the run.
//!
//! A scenario passes only if SIPp exits 0 (every response as the XML expects: status, Warning
//! code, SIP-ETag) **and** the server then holds exactly what the scenario's last step implies.
//! Tokens are real ES256 JWTs of the lab IdMS the server trusts: minted with `mcx-authz token
//! mint-csv` for the plain `impu;client_id;mc_id;token` scenarios, with the library for the ones
//! that need extra tokens (a second user, expired, forged, wrongly scoped).
//!
//! Needs `sipp` (Debian sip-tester): a missing sipp fails the tests, naming
//! `bash .ci/install-deps.sh` (which `./test` runs first).

mod external;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use external::*;
use mcx_authz::token::{LabKey, MintRequest};
use mcx_model::UnixTime;

const ALICE: &str = "sip:alice@example.org";
const BOB: &str = "sip:bob@example.org";
/// The clear-token scenarios run post-cr with `token_protection = "optional"`; the protected
/// ones (TS 33.180 clause 9) run post-cr as `serve` runs it (`required`).
const CLEAR: &str = "token_protection = \"optional\"";
/// Bound on one SIPp run (its own `-timeout` is 30 s).
const SIPP_LIMIT: Duration = Duration::from_secs(60);

/// One scenario run: a fresh server, a scratch dir, a transport.
struct Harness {
    server: McxServer,
    tcp: bool,
    name: String,
    // Last, so the server is stopped before its data dir goes.
    scratch: Scratch,
}

impl Harness {
    /// Fails the test when sipp is missing ([`require_tools`]).
    fn start(scenario: &str, tcp: bool, policy: &str) -> Option<Harness> {
        require_tools(&["sipp"]);
        let name = format!("{scenario}-{}", if tcp { "tcp" } else { "udp" });
        let scratch = Scratch::new(&name);
        let server = McxServer::start(&scratch, policy);
        Some(Harness {
            server,
            tcp,
            name,
            scratch,
        })
    }

    /// A fresh IMPU (and a second one) and MC client ID for this run.
    fn ids(&self) -> (String, String, String) {
        let u = format!("{:032x}", rand::random::<u128>());
        (
            format!("sip:ue-{}@ims.example.org", self.name),
            format!("sip:ue-{}-b@ims.example.org", self.name),
            format!(
                "urn:uuid:{}-{}-{}-{}-{}",
                &u[..8],
                &u[8..12],
                &u[12..16],
                &u[16..20],
                &u[20..]
            ),
        )
    }

    /// A one-user CSV from `mcx-authz token mint-csv` (IMPU `sip:<name>0000000@ims.example.org`).
    fn mint_csv(&self, scenario: &str) -> (PathBuf, Vec<String>) {
        let out = self.scratch.join(&format!("{scenario}.csv"));
        let prefix = format!("ue-{}-", self.name);
        let r = run_bounded(
            "mcx-authz token mint-csv",
            Command::new(mcx_bin())
                .args([
                    "token",
                    "mint-csv",
                    "--users",
                    "1",
                    "--impu-prefix",
                    &prefix,
                ])
                .arg("--data-dir")
                .arg(&self.server.lab_dir)
                .arg("--out")
                .arg(&out),
            Duration::from_secs(30),
        );
        assert_eq!(r.code(), Some(0), "mint-csv: {r:?}");
        let fields = read_csv_fields(&out);
        assert_eq!(fields.len(), 4, "{fields:?}");
        (out, fields)
    }

    /// A valid MCPTT token of `mc_id`, an hour long.
    fn token(&self, mc_id: &str) -> String {
        self.server
            .lab
            .mint(&MintRequest {
                mcptt_id: Some(mc_id.to_owned()),
                iat: Some(now()),
                expires_in: Some(3600),
                ..MintRequest::default()
            })
            .expect("mint")
    }

    /// Runs `tests/sipp/<scenario>.xml` once; asserts SIPp exits 0.
    fn sipp_ok(&self, scenario: &str, csv: &std::path::Path, extra: &[&str]) {
        let r = self.sipp(scenario, csv, extra);
        assert_eq!(
            r.code(),
            Some(0),
            "{scenario} over {}: sipp exit {:?} after {:?}\n--- sipp stdout (tail)\n{}\n--- errors\n{}\n--- log\n{}",
            self.transport(),
            r.status,
            r.elapsed,
            r.stdout
                .lines()
                .rev()
                .take(25)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
            tail(&self.scratch.join(&format!("{scenario}.err")), 30),
            tail(&self.scratch.join(&format!("{scenario}.log")), 30),
        );
    }

    fn sipp(&self, scenario: &str, csv: &std::path::Path, extra: &[&str]) -> Finished {
        let sipp = find_tool("sipp").expect("sipp");
        let xml = repo().join(format!("tests/sipp/{scenario}.xml"));
        let port = free_ports(1).to_string();
        let target = self.server.sip(self.tcp).to_string();
        let log = |ext: &str| self.scratch.join(&format!("{scenario}.{ext}"));
        let mut cmd = Command::new(sipp);
        cmd.arg("-sf")
            .arg(&xml)
            .arg(&target)
            .args(["-t", if self.tcp { "t1" } else { "u1" }])
            .args(["-i", "127.0.0.1", "-p", &port, "-m", "1"])
            .arg("-inf")
            .arg(csv)
            .args(["-nostdin", "-timeout", "30s", "-timeout_error"])
            .args(["-default_behaviors", "all,-bye"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(log("err"))
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(log("msg"))
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(log("log"))
            .args(extra)
            .current_dir(&self.scratch.path);
        run_bounded("sipp", &mut cmd, SIPP_LIMIT)
    }

    fn transport(&self) -> &'static str {
        if self.tcp {
            "TCP"
        } else {
            "UDP"
        }
    }

    fn table(&self) -> Vec<(String, String, String, String)> {
        table(&self.server.bindings())
    }
}

fn now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
}

fn publish(status: u16) -> String {
    format!("mcx_sip_requests_total{{method=\"PUBLISH\",status=\"{status}\"}}")
}

fn event(kind: &str) -> String {
    format!("mcx_binding_events_total{{kind=\"{kind}\"}}")
}

fn rejection(reason: &str) -> String {
    format!("mcx_token_rejections_total{{reason=\"{reason}\"}}")
}

fn rejections_total(m: &std::collections::BTreeMap<String, u64>) -> u64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("mcx_token_rejections_total"))
        .map(|(_, v)| v)
        .sum()
}

/// Each scenario as `<scenario>::udp` and `<scenario>::tcp`.
macro_rules! over_udp_and_tcp {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn udp() {
                super::$scenario(false)
            }
            #[test]
            fn tcp() {
                super::$scenario(true)
            }
        }
    )*};
}

over_udp_and_tcp!(
    register_authorize,
    refresh_stale_etag,
    settings_only,
    user_switch,
    impu_change,
    impu_change_move_binding,
    deregistration,
    log_off,
    bad_tokens,
    register_authorize_protected,
    register_publish_mikey,
);

/// OPTIONS, third-party REGISTER, PUBLISH with token: one binding with a publication.
fn register_authorize(tcp: bool) {
    let Some(h) = Harness::start("register_authorize", tcp, CLEAR) else {
        return;
    };
    let (csv, f) = h.mint_csv("register_authorize");
    h.sipp_ok("register_authorize", &csv, &[]);
    let b = h.server.bindings();
    assert_eq!(table(&b), vec![row("mcptt", &f[0], &f[1], &f[2])]);
    assert!(
        b[0].etag.is_some() && b[0].publication_expires.is_some(),
        "{b:?}"
    );
    let regs = h.server.registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[&f[0]], Some(vec!["mcptt".to_owned()]));
    let m = h.server.metrics();
    assert_eq!(metric(&m, &event("bound")), 1, "{m:?}");
    assert_eq!(metric(&m, &publish(200)), 1, "{m:?}");
}

/// Refresh with the current tag (new tag each time), 412 for superseded and unknown tags.
fn refresh_stale_etag(tcp: bool) {
    let Some(h) = Harness::start("refresh_stale_etag", tcp, CLEAR) else {
        return;
    };
    let (csv, f) = h.mint_csv("refresh_stale_etag");
    h.sipp_ok("refresh_stale_etag", &csv, &[]);
    let b = h.server.bindings();
    assert_eq!(table(&b), vec![row("mcptt", &f[0], &f[1], &f[2])]);
    assert!(b[0].etag.is_some(), "{b:?}");
    let m = h.server.metrics();
    assert_eq!(metric(&m, &publish(200)), 3, "{m:?}");
    assert_eq!(metric(&m, &publish(412)), 2, "{m:?}");
    assert_eq!(metric(&m, &event("bound")), 1, "{m:?}");
}

/// Settings-only PUBLISH: own MC ID 200; another MC ID, an unbound client 404/141; stale 412.
/// The refusals leave alice's binding as it was, and bind nobody else.
fn settings_only(tcp: bool) {
    let Some(h) = Harness::start("settings_only", tcp, CLEAR) else {
        return;
    };
    let (impu, _, client) = h.ids();
    let csv = h.scratch.join("settings_only.csv");
    write_csv(&csv, &[&impu, &client, ALICE, &h.token(ALICE), BOB]);
    h.sipp_ok("settings_only", &csv, &[]);
    assert_eq!(h.table(), vec![row("mcptt", &impu, &client, ALICE)]);
    let m = h.server.metrics();
    assert_eq!(metric(&m, &publish(404)), 2, "{m:?}");
    assert_eq!(metric(&m, &publish(412)), 1, "{m:?}");
    assert_eq!(metric(&m, &event("bound")), 1, "{m:?}");
}

/// User B logs on to the client user A was on: one binding, B's.
fn user_switch(tcp: bool) {
    let Some(h) = Harness::start("user_switch", tcp, CLEAR) else {
        return;
    };
    let (impu, _, client) = h.ids();
    let csv = h.scratch.join("user_switch.csv");
    write_csv(
        &csv,
        &[&impu, &client, ALICE, &h.token(ALICE), BOB, &h.token(BOB)],
    );
    h.sipp_ok("user_switch", &csv, &[]);
    assert_eq!(h.table(), vec![row("mcptt", &impu, &client, BOB)]);
}

fn impu_change_csv(h: &Harness) -> (PathBuf, String, String, String) {
    let (impu_a, impu_b, client) = h.ids();
    let csv = h.scratch.join("impu_change.csv");
    write_csv(
        &csv,
        &[
            &impu_a,
            &client,
            ALICE,
            &h.token(ALICE),
            &impu_b,
            &h.token(ALICE),
        ],
    );
    (csv, impu_a, impu_b, client)
}

/// The client authorizes under IMPU A, then B; `keep-old-binding` (default): both stay.
fn impu_change(tcp: bool) {
    let Some(h) = Harness::start("impu_change", tcp, CLEAR) else {
        return;
    };
    let (csv, impu_a, impu_b, client) = impu_change_csv(&h);
    h.sipp_ok("impu_change", &csv, &[]);
    let mut both = vec![
        row("mcptt", &impu_a, &client, ALICE),
        row("mcptt", &impu_b, &client, ALICE),
    ];
    both.sort();
    assert_eq!(h.table(), both);
}

/// The same under `impu_change = "move-binding"`: only B's binding is left.
fn impu_change_move_binding(tcp: bool) {
    let Some(h) = Harness::start(
        "impu_change_move",
        tcp,
        &format!("{CLEAR}\nimpu_change = \"move-binding\""),
    ) else {
        return;
    };
    let (csv, _, impu_b, client) = impu_change_csv(&h);
    h.sipp_ok(
        "impu_change",
        &csv,
        &["-set", "impu_change", "move-binding"],
    );
    assert_eq!(h.table(), vec![row("mcptt", &impu_b, &client, ALICE)]);
}

/// De-registration ends the binding (a settings-only PUBLISH after it gets 404/141, registered
/// or not); after re-registration a new token binds again, so the scenario ends with one binding
/// and a live registration.
fn deregistration(tcp: bool) {
    let Some(h) = Harness::start("deregistration", tcp, CLEAR) else {
        return;
    };
    let (impu, _, client) = h.ids();
    let csv = h.scratch.join("deregistration.csv");
    write_csv(
        &csv,
        &[&impu, &client, ALICE, &h.token(ALICE), &h.token(ALICE)],
    );
    h.sipp_ok("deregistration", &csv, &[]);
    assert_eq!(h.table(), vec![row("mcptt", &impu, &client, ALICE)]);
    assert!(h.server.registrations().contains_key(&impu));
    let m = h.server.metrics();
    assert_eq!(metric(&m, &event("unbound_deregistered")), 1, "{m:?}");
    // Settings only, unbound: once before and once after re-registration.
    assert_eq!(metric(&m, &publish(404)), 2, "{m:?}");
    assert_eq!(metric(&m, &publish(403)), 0, "{m:?}");
    assert_eq!(rejections_total(&m), 0, "{m:?}");
}

/// Log-off by PUBLISH Expires: 0, then by re-registration without `+g.3gpp.mcptt`: nothing is
/// bound, and the IMPU stays registered for no MC service.
fn log_off(tcp: bool) {
    let Some(h) = Harness::start("log_off", tcp, CLEAR) else {
        return;
    };
    let (impu, _, client) = h.ids();
    let csv = h.scratch.join("log_off.csv");
    write_csv(
        &csv,
        &[&impu, &client, ALICE, &h.token(ALICE), &h.token(ALICE)],
    );
    h.sipp_ok("log_off", &csv, &[]);
    assert_eq!(h.table(), vec![]);
    assert_eq!(h.server.registrations().get(&impu), Some(&Some(vec![])));
    let m = h.server.metrics();
    assert_eq!(
        metric(&m, &event("unbound_publication_removed")),
        1,
        "{m:?}"
    );
    assert_eq!(metric(&m, &event("unbound_service_log_off")), 1, "{m:?}");
}

/// Expired, forged, wrongly scoped, garbage and `alg: none` tokens: each 403/101 for its own
/// reason, none binds; the valid token then binds.
fn bad_tokens(tcp: bool) {
    let Some(h) = Harness::start("bad_tokens", tcp, CLEAR) else {
        return;
    };
    let (impu, _, client) = h.ids();
    let t = now();
    let lab = &h.server.lab;
    let expired = lab
        .mint(&MintRequest {
            mcptt_id: Some(ALICE.into()),
            iat: Some(UnixTime(t.0 - 7200)),
            expires_in: Some(3600),
            ..MintRequest::default()
        })
        .expect("mint");
    // Signed by a key the server does not trust, under the trusted key's kid.
    let forger = LabKey::generate(jsonwebtoken::Algorithm::ES256).expect("key");
    let claims = MintRequest {
        mcptt_id: Some(ALICE.into()),
        iat: Some(t),
        ..MintRequest::default()
    }
    .claims(lab.issuer());
    let forged = forger
        .sign_jws(&lab.keys()[0].header(), &claims)
        .expect("sign");
    let wrong_scope = lab
        .mint(&MintRequest {
            mcptt_id: Some(ALICE.into()),
            scopes: Some(vec!["openid".into(), "3gpp:mc:video_service".into()]),
            iat: Some(t),
            ..MintRequest::default()
        })
        .expect("mint");
    let csv = h.scratch.join("bad_tokens.csv");
    write_csv(
        &csv,
        &[
            &impu,
            &client,
            ALICE,
            &h.token(ALICE),
            &expired,
            &forged,
            &wrong_scope,
        ],
    );
    h.sipp_ok("bad_tokens", &csv, &[]);
    assert_eq!(h.table(), vec![row("mcptt", &impu, &client, ALICE)]);
    let m = h.server.metrics();
    for reason in [
        "expired",
        "bad_signature",
        "missing_scope",
        "malformed",
        "algorithm_not_allowed",
    ] {
        assert_eq!(metric(&m, &rejection(reason)), 1, "{reason}: {m:?}");
    }
    assert_eq!(metric(&m, &publish(403)), 5, "{m:?}");
    assert_eq!(metric(&m, &event("bound")), 1, "{m:?}");
}

/// The harness notices a server that answers otherwise: `impu_change.xml` expecting
/// `keep-old-binding` against a `move-binding` server must make SIPp exit non-zero (the PUBLISH
/// under A gets 404/141 where the scenario expects 200).
#[test]
fn a_server_answering_otherwise_fails_the_scenario() {
    let Some(h) = Harness::start(
        "impu_change_mismatch",
        false,
        &format!("{CLEAR}\nimpu_change = \"move-binding\""),
    ) else {
        return;
    };
    let (csv, _, impu_b, client) = impu_change_csv(&h);
    let r = h.sipp("impu_change", &csv, &[]);
    assert_eq!(r.code(), Some(1), "sipp should fail the call: {r:?}");
    let err = std::fs::read_to_string(h.scratch.join("impu_change.err")).unwrap_or_default();
    assert!(err.contains("404"), "sipp's error log names the 404: {err}");
    // What the move-binding server holds at that point.
    assert_eq!(h.table(), vec![row("mcptt", &impu_b, &client, ALICE)]);
}

/// TS 33.180 clause 9 on the wire, post-cr as `serve` runs it (`token_protection = required`):
/// the token in clear gets 403/101, then token and client ID encrypted under the user's lab CSK
/// with the info body signed bind. The CSV and the CSK table come from `mcx-authz token mint-csv
/// --protect-csks`, minted before the server starts (the CSKs are config).
fn register_authorize_protected(tcp: bool) {
    require_tools(&["sipp"]);
    let name = format!(
        "register_authorize_protected-{}",
        if tcp { "tcp" } else { "udp" }
    );
    let scratch = Scratch::new(&name);
    let (lab_dir, csv, csks) = mint_protected(&scratch, 1, &format!("ue-{name}-"));
    let f = read_csv_fields(&csv);
    assert_eq!(f.len(), 6, "{f:?}");
    let config = scratch.join("mcx.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n{}",
            std::fs::read_to_string(&csks).expect("csks.toml")
        ),
    )
    .expect("write config");
    let server = McxServer::spawn(&scratch, &config, lab_dir);
    let h = Harness {
        server,
        tcp,
        name,
        scratch,
    };
    h.sipp_ok("register_authorize_protected", &csv, &[]);
    assert_eq!(h.table(), vec![row("mcptt", &f[0], &f[1], &f[2])]);
    let m = h.server.metrics();
    assert_eq!(metric(&m, &rejection("unprotected")), 1, "{m:?}");
    assert_eq!(metric(&m, &publish(403)), 1, "{m:?}");
    assert_eq!(metric(&m, &publish(200)), 1, "{m:?}");
}

/// What `mcx-authz protect --mikey --sign --json` prints.
struct Upload {
    csk_id: String,
    mikey: String,
    info: String,
    signature: String,
}

/// A CSK upload signed as `signer` (default: the token's MC service ID) with the lab KMS in
/// `kms`, and `token`/`client` encrypted and signed under its CSK.
fn protect_mikey(kms: &std::path::Path, token: &str, client: &str, signer: Option<&str>) -> Upload {
    let mut cmd = Command::new(mcx_bin());
    cmd.args(["protect", "--mikey", "--sign", "--json", "--token", token])
        .args(["--client-id", client])
        .arg("--kms-dir")
        .arg(kms);
    if let Some(s) = signer {
        cmd.args(["--mc-id", s]);
    }
    let r = run_bounded(
        "mcx-authz protect --mikey",
        &mut cmd,
        Duration::from_secs(60),
    );
    assert_eq!(r.code(), Some(0), "protect --mikey: {r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("protect --json");
    let field = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {v}"))
            .to_owned()
    };
    Upload {
        csk_id: field("csk_id"),
        mikey: field("mikey"),
        info: field("info"),
        signature: field("signature"),
    }
}

/// `mcx-authz kms provision` of `uri` in the server's lab KMS (which `serve` created).
fn provision(kms: &std::path::Path, uri: &str) {
    let r = run_bounded(
        "mcx-authz kms provision",
        Command::new(mcx_bin())
            .args(["kms", "provision", "--uri", uri, "--dir"])
            .arg(kms),
        Duration::from_secs(60),
    );
    assert_eq!(r.code(), Some(0), "kms provision: {r:?}");
}

/// TS 33.180 5.4 on the wire against `serve` on its embedded defaults (post-cr,
/// `token_protection = required`, the lab KMS `serve` creates in its data dir): the CSK upload
/// made by the lab KMS tools and the token encrypted under that CSK, in one PUBLISH, bind; the
/// same PUBLISH replayed and an upload signed as another user are refused (403/101) and leave
/// the binding as it was.
fn register_publish_mikey(tcp: bool) {
    let Some(h) = Harness::start("register_publish_mikey", tcp, "") else {
        return;
    };
    let (impu, _, client) = h.ids();
    let kms = h.server.lab_dir.join("kms");
    provision(&kms, ALICE);
    provision(&kms, BOB);
    let token = h.token(ALICE);
    let own = protect_mikey(&kms, &token, &client, None);
    let other = protect_mikey(&kms, &token, &client, Some(BOB));
    let csv = h.scratch.join("register_publish_mikey.csv");
    write_csv(
        &csv,
        &[
            &impu,
            &client,
            ALICE,
            &own.mikey,
            &own.info,
            &own.signature,
            &other.mikey,
            &other.info,
            &other.signature,
        ],
    );
    h.sipp_ok("register_publish_mikey", &csv, &[]);
    assert_eq!(h.table(), vec![row("mcptt", &impu, &client, ALICE)]);
    let m = h.server.metrics();
    assert_eq!(metric(&m, &publish(200)), 1, "{m:?}");
    assert_eq!(metric(&m, &publish(403)), 2, "{m:?}");
    assert_eq!(metric(&m, &rejection("key_upload_replayed")), 1, "{m:?}");
    assert_eq!(
        metric(&m, &rejection("key_upload_wrong_signer")),
        1,
        "{m:?}"
    );
    assert_eq!(rejections_total(&m), 2, "{m:?}");
    assert_eq!(metric(&m, &event("bound")), 1, "{m:?}");
    assert_eq!(metric(&m, &event("csk_accepted")), 1, "{m:?}");
    assert_ne!(own.csk_id, other.csk_id);
}
