//! `mcx-authz mikey inspect` on the Streamwide vectors, and the lab KMS tools end to end:
//! `kms init`, `kms provision`, `mikey make-csk`, `mikey inspect`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sec/tests/vectors");

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcx-authz"))
}

fn vector(name: &str) -> String {
    format!("{VECTORS}/{name}")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run mcx-authz")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {o:?}"))
}

fn csk_message() -> String {
    std::fs::read_to_string(vector("test2_csk.b64"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn inspect_decapsulates_the_streamwide_csk_with_the_vector_key_set() {
    let init = vector("streamwide/kms_init.toml");
    let gms = vector("streamwide/gms.toml");
    let o = run(&[
        "mikey",
        "inspect",
        "--kms-init",
        &init,
        "--key-set",
        &gms,
        &csk_message(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("signature: valid"), "{text}");
    assert!(text.contains("key_id: 2ddd5bf0"), "{text}");
    assert!(
        text.contains("key: e06e65106183547342d3e8a6ce2540a8"),
        "{text}"
    );
    assert!(text.contains("IDRkmsi"), "{text}");

    let o = run(&[
        "mikey",
        "inspect",
        "--json",
        "--kms-init",
        &init,
        "--key-set",
        &gms,
        &csk_message(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let v = json(&o);
    assert_eq!(v["signature"], "valid");
    assert_eq!(v["key_id"], "2ddd5bf0");
    assert_eq!(v["key"], "e06e65106183547342d3e8a6ce2540a8");
    assert_eq!(v["header"]["purpose"], 2);
    assert_eq!(v["payloads"][0]["payload"], "T");
}

#[test]
fn inspect_reads_stdin_and_prints_payloads_without_material() {
    let mut child = bin()
        .args(["mikey", "inspect", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", csk_message()).as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let v = json(&o);
    assert_eq!(v["header"]["csb_id"], "2ddd5bf0");
    assert!(v["signature"].is_null() && v["key"].is_null());
}

#[test]
fn inspect_with_the_wrong_key_set_says_so_and_exits_1() {
    let o = run(&[
        "mikey",
        "inspect",
        "--json",
        "--kms-init",
        &vector("streamwide/kms_init.toml"),
        "--key-set",
        &vector("streamwide/alice.toml"),
        &csk_message(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v = json(&o);
    assert_eq!(v["signature"], "valid"); // alice signed it
    assert!(v["key"].is_null());
    assert!(v["key_error"].as_str().unwrap().contains("IDRr"), "{v}");

    let o = run(&["mikey", "inspect", "bm90IG1pa2V5"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("MIKEY"),
        "{o:?}"
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcx-mikey-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn lab_kms_issues_keys_that_carry_a_csk_to_the_server() {
    let dir = temp_dir("lab");
    let d = dir.to_str().unwrap();
    let now = "1764500000";
    let o = run(&["kms", "init", "--dir", d, "--now", now]);
    assert!(o.status.success(), "{o:?}");
    // A second init does not silently replace the community.
    assert!(!run(&["kms", "init", "--dir", d]).status.success());
    let o = run(&[
        "kms",
        "provision",
        "--dir",
        d,
        "--uri",
        "sip:alice@example.org",
        "--now",
        now,
    ]);
    assert!(o.status.success(), "{o:?}");
    let alice = PathBuf::from(stdout(&o).trim());
    assert_eq!(alice, dir.join("keysets/sip_alice@example.org.toml"));
    let server = dir.join("keysets/sip_mcx.example.org.toml");
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join("secrets.toml")), 0o600);
        assert_eq!(mode(&alice), 0o600);
        assert_eq!(mode(&server), 0o600);
    }
    let cert = std::fs::read_to_string(dir.join("certificate.toml")).unwrap();
    for name in [
        "KmsUri",
        "UserKeyPeriod",
        "UserKeyOffset",
        "PubEncKey",
        "PubAuthKey",
    ] {
        assert!(cert.contains(name), "{cert}");
    }

    let o = run(&[
        "mikey",
        "make-csk",
        "--dir",
        d,
        "--from",
        "sip:alice@example.org",
        "--now",
        now,
    ]);
    assert!(o.status.success(), "{o:?}");
    let made = json(&o);
    let o = run(&[
        "mikey",
        "inspect",
        "--json",
        "--kms-init",
        dir.join("certificate.toml").to_str().unwrap(),
        "--key-set",
        server.to_str().unwrap(),
        made["message"].as_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let v = json(&o);
    assert_eq!(v["signature"], "valid");
    assert_eq!(v["key"], made["csk"]);
    assert_eq!(v["key_id"], made["csk_id"]);
    assert_eq!(v["header"]["purpose"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}
