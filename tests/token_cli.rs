//! `mcx-authz token keygen|mint|inspect|verify` from a clean data dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcx-authz"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcx-token-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin()
        .arg("token")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run mcx-authz")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn mint_then_verify_with_no_set_up() {
    let dir = temp_dir("mint");
    // keys are created on first use
    let m = run(&dir, &["mint", "--mcptt-id", "sip:alice@example.org"]);
    assert!(m.status.success(), "{m:?}");
    let token = stdout(&m).trim().to_owned();
    assert_eq!(token.split('.').count(), 3);
    assert!(dir.join("idms-es256.pem").exists());
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("jwks.json")).unwrap()).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");

    let v = run(&dir, &["verify", &token, "--service", "mcptt"]);
    assert_eq!(v.status.code(), Some(0), "{v:?}");
    let out = json(&v);
    assert_eq!(
        out["verdict"]["Verified"]["mcptt_id"],
        "sip:alice@example.org"
    );
    assert_eq!(out["service"]["authorized"], true);

    // The token grants no MCData scope: verified, but not for MCData; exit 1.
    let v = run(&dir, &["verify", &token, "--service", "mcdata"]);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(json(&v)["service"]["reason"], "missing_scope");

    // One hour and a bit later it is expired.
    let exp = out["verdict"]["Verified"]["exp"].as_u64().unwrap();
    let later = (exp + 30).to_string();
    let v = run(&dir, &["verify", &token, "--now", &later]);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(json(&v)["verdict"]["Rejected"], "expired");

    let i = run(&dir, &["inspect", &token]);
    assert!(i.status.success());
    let i = json(&i);
    assert_eq!(i["trusted"], false);
    assert_eq!(i["header"]["alg"], "ES256");
    assert_eq!(i["claims"]["scope"], "openid 3gpp:mc:ptt_service");
    assert_eq!(i["claims"]["iss"], "https://idms.mcx-lab.invalid");

    let v = run(&dir, &["verify", "not-a-token"]);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(json(&v)["verdict"]["Rejected"], "malformed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keygen_other_algorithms_and_verify_with_a_config_file() {
    let dir = temp_dir("keygen");
    let k = run(&dir, &["keygen", "--alg", "EdDSA"]);
    assert!(k.status.success(), "{k:?}");
    assert!(stdout(&k).contains("idms-eddsa.pem"));
    // keygen again keeps the key unless --force
    let again = run(&dir, &["keygen", "--alg", "EdDSA"]);
    assert!(stdout(&again).starts_with("kept"));
    let m = run(
        &dir,
        &[
            "mint",
            "--alg",
            "EdDSA",
            "--mcdata-id",
            "sip:bob@example.org",
            "--aud",
            "mcx.example.org",
        ],
    );
    assert!(m.status.success(), "{m:?}");
    let token = stdout(&m).trim().to_owned();

    // A server config whose [token] table trusts this lab's JWKS file and wants an audience.
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sip]\nlisten = \"127.0.0.1:5060\"\n\n[token]\njwks_file = {:?}\nissuer = \"https://idms.mcx-lab.invalid\"\naudience = [\"mcx.example.org\"]\n",
            dir.join("jwks.json")
        ),
    )
    .unwrap();
    let v = run(
        &dir,
        &[
            "verify",
            &token,
            "--config",
            cfg.to_str().unwrap(),
            "--service",
            "mcdata",
        ],
    );
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));

    // Another audience: refused.
    std::fs::write(
        &cfg,
        format!(
            "jwks_file = {:?}\nissuer = \"https://idms.mcx-lab.invalid\"\naudience = [\"other\"]\n",
            dir.join("jwks.json")
        ),
    )
    .unwrap();
    let v = run(&dir, &["verify", &token, "--config", cfg.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(json(&v)["verdict"]["Rejected"], "wrong_audience");

    // Bad input gets a clear error, not a panic.
    let bad = run(&dir, &["keygen", "--alg", "HS256"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HS256"));
    let _ = std::fs::remove_dir_all(&dir);
}
