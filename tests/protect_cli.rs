//! `mcx-authz csk new`, `mcx-authz protect [--sign]` and `token mint-csv --protect-csks`:
//! their output opens with the CSKs they name (TS 33.180 clause 9, via mcx-sec) and is what
//! the SIP edge reads.

use std::path::PathBuf;
use std::process::{Command, Output};

use mcx_authz::sip::body;
use mcx_sec::csk::{CskConfig, CskId, LabCskTable};
use mcx_sec::kdf::{CskKeys, KdfReading};
use mcx_sec::xmldsig::{self, MimePart};
use mcx_sec::xmlenc;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcx-authz"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcx-protect-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[derive(serde::Deserialize)]
struct Config {
    protection: Protection,
}

#[derive(serde::Deserialize)]
struct Protection {
    csk: Vec<CskConfig>,
}

fn table(toml_text: &str) -> LabCskTable {
    let c: Config = toml::from_str(toml_text).unwrap();
    LabCskTable::from_config(&c.protection.csk).unwrap()
}

fn mint(dir: &std::path::Path, mc_id: &str) -> String {
    ok(bin()
        .args(["token", "--data-dir"])
        .arg(dir)
        .args(["mint", "--mcptt-id", mc_id])
        .output()
        .unwrap())
    .trim()
    .to_owned()
}

#[test]
fn csk_new_prints_an_entry_the_config_reads() {
    let out = ok(bin()
        .args(["csk", "new", "--mc-id", "sip:alice@example.org"])
        .output()
        .unwrap());
    let t = table(&out);
    assert_eq!(t.len(), 1);
    let (id, mc) = t.ties().next().unwrap();
    assert!(id.has_csk_purpose_tag(), "{id}");
    assert_eq!(mc, "sip:alice@example.org");
    let again = ok(bin()
        .args(["csk", "new", "--mc-id", "sip:alice@example.org"])
        .output()
        .unwrap());
    assert_ne!(out, again, "fresh keys each time");
}

#[test]
fn protect_encrypts_token_and_client_id_and_signs_the_body() {
    let dir = temp_dir("protect");
    let token = mint(&dir, "sip:alice@example.org");
    let csk = "[[protection.csk]]\ncsk_id = \"2ddd5bf0\"\ncsk = \"e06e651061835473 42d3e8a6ce2540a8\"\nmc_id = \"sip:alice@example.org\"\n";
    let t = table(csk);
    let keys = CskKeys {
        store: &t,
        reading: KdfReading::default(),
    };
    let base = [
        "protect",
        "--csk-id",
        "2ddd5bf0",
        "--csk",
        "e06e651061835473 42d3e8a6ce2540a8",
        "--client-id",
        "urn:uuid:00000000-0000-0000-0000-000000000009",
    ];
    let info = ok(bin().args(base).args(["--token", &token]).output().unwrap());
    assert!(!info.contains(&token) && !info.contains("00000009"));
    let r = xmlenc::reveal_info(info.trim().as_bytes(), "mcptt", &keys).unwrap();
    assert_eq!(r.csk_id, Some(CskId(0x2ddd5bf0)));
    assert_eq!(r.opened, ["mcptt-access-token", "mcptt-client-id"]);
    // The revealed body is what the SIP edge reads.
    let mc = body::read_info(mcx_model::Service::Mcptt, r.xml.as_bytes()).unwrap();
    assert_eq!(mc.access_token.unwrap().reveal().unwrap(), token);

    // --sign: a MIME entity whose parts the edge splits and whose signature verifies.
    let entity = ok(bin()
        .args(base)
        .args(["--token", &token, "--sign"])
        .output()
        .unwrap());
    let (head, content) = entity.split_once("\r\n\r\n").unwrap();
    let ct = head.strip_prefix("Content-Type: ").unwrap();
    let parts = body::parts(ct, content.as_bytes()).unwrap();
    assert_eq!(parts.len(), 2);
    let cid = |p: &body::Part<'_>| {
        p.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-ID"))
            .map(|(_, v)| {
                v.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    };
    let info_cid = cid(&parts[0]).unwrap();
    assert_eq!(
        parts[1].content_type,
        "application/vnd.3gpp.mcptt-signed+xml"
    );
    let v = xmldsig::verify(
        parts[1].body,
        &[MimePart {
            content_id: &info_cid,
            body: parts[0].body,
        }],
        &keys,
    )
    .unwrap();
    assert_eq!(v.covered, [info_cid]);
    // A wrong KDF reading on our side opens nothing.
    let other = CskKeys {
        store: &t,
        reading: KdfReading::XpkIdOnly,
    };
    assert!(xmlenc::reveal_info(parts[0].body, "mcptt", &other).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mint_csv_protect_writes_bodies_that_open_with_the_written_csks() {
    let dir = temp_dir("csv");
    let csv = dir.join("users.csv");
    let csks = dir.join("csks.toml");
    let o = bin()
        .args(["token", "--data-dir"])
        .arg(dir.join("idms"))
        .args(["mint-csv", "--users", "5", "--out"])
        .arg(&csv)
        .arg("--protect-csks")
        .arg(&csks)
        .output()
        .unwrap();
    ok(o);
    let t = table(&std::fs::read_to_string(&csks).unwrap());
    assert_eq!(t.len(), 5);
    let keys = CskKeys {
        store: &t,
        reading: KdfReading::default(),
    };
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("SEQUENTIAL"));
    let mut seen = std::collections::BTreeSet::new();
    for line in lines {
        let f: Vec<&str> = line.split(';').collect();
        assert_eq!(f.len(), 6, "{line}");
        let r = xmlenc::reveal_info(f[4].as_bytes(), "mcptt", &keys).unwrap();
        let id = r.csk_id.unwrap();
        assert!(seen.insert(id), "one CSK per user");
        assert_eq!(
            t.ties().find(|(i, _)| *i == id).unwrap().1,
            f[2],
            "the CSK is the user's"
        );
        assert!(r.xml.contains(f[3]), "the token");
        let v = xmldsig::verify(
            f[5].as_bytes(),
            &[MimePart {
                content_id: "info@mcx-authz.lab",
                body: f[4].as_bytes(),
            }],
            &keys,
        )
        .unwrap();
        assert_eq!(v.csk_id, id);
    }
    assert_eq!(seen.len(), 5);
    let _ = std::fs::remove_dir_all(&dir);
}
