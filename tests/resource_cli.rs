//! The resource servers as a lab runs them: the `mcx-authz` binary (`serve` on the embedded
//! defaults, only its listeners moved to free loopback ports), tokens from `token mint --scope`,
//! groups from `groups add`, a certificate from `http cert`, the KMS material in the lab data
//! dir; requests over real HTTP. The "Done when" list, end to end.

mod external;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use external::*;

const ALICE: &str = "sip:alice@streamwide.com";
const BOB: &str = "sip:bob@streamwide.com";
const GROUP: &str = "sip:fire-1@streamwide.com";

fn cli(args: &[&str], lab: &Path) -> String {
    let out = run_bounded(
        "mcx-authz",
        Command::new(mcx_bin())
            .args(args)
            .arg("--data-dir")
            .arg(lab),
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), Some(0), "mcx-authz {args:?}: {out:?}");
    out.stdout
}

fn mint(lab: &Path, mc_id: &str, scopes: &[&str]) -> String {
    let mut args = vec!["token", "mint", "--mcptt-id", mc_id];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    cli(&args, lab).trim().to_owned()
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

fn request(
    agent: &ureq::Agent,
    post: bool,
    url: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    let resp = if post {
        let mut r = agent.post(url);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r.send_empty()
    } else {
        let mut r = agent.get(url);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r.call()
    };
    let mut resp = resp.expect("HTTP exchange");
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), www, body)
}

#[test]
fn lab_flow_on_the_shipped_binary() {
    let scratch = Scratch::new("resource-cli");
    let server = McxServer::start(&scratch, "");
    let lab = server.lab_dir.clone();
    let base = format!(
        "http://{}",
        server
            .http
            .expect("the serve output names the KMS listener")
    );
    // The lab data the server reads by default: the KMS material beside the IdMS key.
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kms-streamwide-v5"),
        &lab.join("kms"),
    );
    cli(&["groups", "add", "--id", GROUP, "--member", ALICE], &lab);
    assert!(cli(&["groups", "list"], &lab).contains(GROUP));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();

    // A token with only the MCPTT service scope: 403 insufficient_scope at the KMS.
    let ptt_only = mint(&lab, ALICE, &["3gpp:mc:ptt_service"]);
    let (status, www, _) = request(
        &agent,
        true,
        &format!("{base}/keymanagement/identity/v1/keyprov"),
        Some(&ptt_only),
    );
    assert_eq!(status, 403);
    assert!(
        www.contains("insufficient_scope") && www.contains("3gpp:mc:ptt_key_management_service"),
        "{www}"
    );

    // The KMS scope: alice's key set (the vectors' period, asked by time) and nobody else's.
    let kms = mint(&lab, ALICE, &["3gpp:mc:ptt_key_management_service"]);
    let time = format!("{:016X}", (236u64 * 16_777_215 + 1000) << 32);
    let (status, _, body) = request(
        &agent,
        true,
        &format!("{base}/keymanagement/identity/v1/keyprov/sip%3Aalice%40streamwide.com/{time}"),
        Some(&kms),
    );
    assert_eq!(status, 200, "{body}");
    let doc = roxmltree::Document::parse(&body).unwrap();
    let users: Vec<&str> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "KmsKeySet")
        .flat_map(|ks| ks.children().filter(|c| c.tag_name().name() == "UserUri"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(users, [ALICE]);

    // Alice's CM token cannot read bob's profile, reads her own.
    let cm = mint(&lab, ALICE, &["3gpp:mc:ptt_config_management_service"]);
    let profile = |who: &str| {
        format!(
            "{base}/xcap-root/org.3gpp.mcptt.user-profile/users/{}/mcptt-user-profile-0.xml",
            who.replace(':', "%3A").replace('@', "%40")
        )
    };
    assert_eq!(request(&agent, false, &profile(BOB), Some(&cm)).0, 403);
    assert_eq!(request(&agent, false, &profile(ALICE), Some(&cm)).0, 200);

    // An expired token (minted with the same lab IdMS an hour after its exp): 401 invalid_token.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = server
        .lab
        .mint(&mcx_authz::token::MintRequest {
            mcptt_id: Some(ALICE.into()),
            scopes: Some(vec!["3gpp:mc:ptt_config_management_service".into()]),
            iat: Some(mcx_model::UnixTime(now - 7200)),
            exp: Some(mcx_model::UnixTime(now - 3600)),
            ..Default::default()
        })
        .unwrap();
    let (status, www, _) = request(&agent, false, &profile(ALICE), Some(&expired));
    assert_eq!(status, 401);
    assert!(www.contains("invalid_token"), "{www}");

    // The UE initial configuration needs no token.
    let (status, _, body) = request(
        &agent,
        false,
        &format!("{base}/xcap-root/org.3gpp.mcptt.ue-init-config/global/mcptt-ue-init-config.xml"),
        None,
    );
    assert_eq!(status, 200, "{body}");

    // The group document goes to its member only.
    let group = format!(
        "{base}/xcap-root/org.openmobilealliance.groups/global/byGroupID/{}",
        GROUP.replace(':', "%3A").replace('@', "%40")
    );
    let gm = |who| mint(&lab, who, &["3gpp:mc:ptt_group_management_service"]);
    assert_eq!(request(&agent, false, &group, Some(&gm(ALICE))).0, 200);
    assert_eq!(request(&agent, false, &group, Some(&gm(BOB))).0, 403);

    // http cert writes a key pair the [http] table can name.
    let out = cli(&["http", "cert"], &lab);
    assert!(out.contains("tls_cert"), "{out}");
    let pem = std::fs::read_to_string(lab.join("http/cert.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(std::fs::read_to_string(lab.join("http/key.pem"))
        .unwrap()
        .contains("PRIVATE KEY"));
}
