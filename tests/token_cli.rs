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

#[test]
fn mint_csv_writes_sipp_users_whose_tokens_verify() {
    use mcx_authz::token::{Validator, ValidatorConfig};
    use mcx_model::{Service, TokenVerdict, UnixTime};

    let dir = temp_dir("mint-csv");
    let out = dir.join("users.csv");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let m = run(
        &dir,
        &[
            "mint-csv",
            "--users",
            "300",
            "--first",
            "41",
            "--impu-prefix",
            "lab-",
            "--expires-in",
            "600",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(m.status.success(), "{m:?}");
    let finished = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 301, "SEQUENTIAL + one line per user");
    assert_eq!(lines[0], "SEQUENTIAL");

    // As `mcx-authz token verify` without --config: the lab IdMS in the data dir is trusted.
    let validator = Validator::new(ValidatorConfig {
        data_dir: dir.clone(),
        ..ValidatorConfig::default()
    })
    .unwrap();
    let now = UnixTime(finished);
    let mut jtis = std::collections::HashSet::new();
    let mut clients = std::collections::HashSet::new();
    for (i, line) in lines[1..].iter().enumerate() {
        let n = 41 + i;
        let f: Vec<&str> = line.split(';').collect();
        assert_eq!(f.len(), 4, "{line}");
        assert_eq!(f[0], format!("sip:lab-{n:07}@ims.example.org"));
        assert_eq!(f[2], format!("sip:user{n:07}@example.org"));
        let uuid = f[1].strip_prefix("urn:uuid:").expect("urn:uuid client ID");
        assert_eq!(uuid.len(), 36, "{uuid}");
        assert_eq!(
            u128::from_str_radix(&uuid.replace('-', ""), 16).unwrap(),
            n as u128 + 1,
            "client ID from the user number"
        );
        assert!(clients.insert(f[1].to_owned()));
        let verdict = validator.validate(f[3], now);
        let TokenVerdict::Verified(claims) = &verdict else {
            panic!("line {n}: {verdict:?}");
        };
        assert_eq!(
            claims.mcptt_id.as_ref().map(|id| id.to_string()).as_deref(),
            Some(f[2])
        );
        assert!(Validator::for_service(&verdict, Service::Mcptt).is_ok());
        assert!((started + 600..=finished + 600).contains(&claims.exp.0));
        assert!(jtis.insert(claims.token_id.to_string()), "jti unique");
    }
    // Ten minutes later every token is expired.
    let later = UnixTime(finished + 700);
    assert!(matches!(
        validator.validate(lines[1].split(';').nth(3).unwrap(), later),
        TokenVerdict::Rejected(_)
    ));

    // `--out -` writes the same format to stdout; a prefix that would break the CSV is refused.
    let o = run(&dir, &["mint-csv", "--users", "2", "--out", "-"]);
    assert!(o.status.success(), "{o:?}");
    let s = stdout(&o);
    let l: Vec<&str> = s.lines().collect();
    assert_eq!(l.len(), 3);
    assert!(l[1].starts_with("sip:ue0000000@ims.example.org;urn:uuid:00000000-0000-0000-0000-000000000001;sip:user0000000@example.org;ey"));
    let bad = run(
        &dir,
        &[
            "mint-csv",
            "--users",
            "1",
            "--impu-prefix",
            "a;b",
            "--out",
            "-",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--impu-prefix"));
    assert!(bad.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_into_a_closed_pipe_does_not_panic() {
    // `mcx-authz token verify … | head -c0`: the reader is gone before anything is written.
    let dir = temp_dir("epipe");
    let m = run(&dir, &["mint", "--mcptt-id", "sip:alice@example.org"]);
    let token = stdout(&m).trim().to_owned();
    for args in [
        vec!["verify", token.as_str()],
        vec!["inspect", token.as_str()],
        vec!["mint", "--mcptt-id", "sip:bob@example.org"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = bin()
            .arg("token")
            .arg("--data-dir")
            .arg(&dir)
            .args(&args)
            .stdout(writer)
            .output()
            .expect("run mcx-authz");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
