//! Interop oracle: Debian's `xmlsec1` (libxmlsec1, OpenSSL) encrypts and signs, mcx-sec decrypts
//! and verifies; mcx-sec encrypts and signs, xmlsec1 decrypts and verifies.
//!
//! xmlsec1 knows nothing of TS 33.180 F.1.4, so it is given the derived keys (FC 0x51 for
//! AES-128-GCM, FC 0x52 for HMAC-SHA-256) named by the base64 CSK-ID; mcx-sec derives them
//! itself from the CSK in a lab table. `cid:` references are resolved with `--url-map`.
//!
//! These tests FAIL when xmlsec1 is missing: `apt-get install -y xmlsec1` (or
//! `.ci/install-deps.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mcx_sec::csk::{Csk, CskEntry, CskId, LabCskTable};
use mcx_sec::kdf::{CskKeys, FixedKeys, KdfReading};
use mcx_sec::xmldsig::{self, MimePart, XmlDsigError};
use mcx_sec::xmlenc::{self, PlaintextForm, XmlEncError};

const TOKEN: &str =
    "eyJhbGciOiJFUzI1NiJ9.eyJtY3B0dF9pZCI6InNpcDphbGljZUBleGFtcGxlLm9yZyJ9.c2lnbmF0dXJl";
const CLIENT: &str = "urn:uuid:00000000-0000-0000-0000-000000000001";
const CID: &str = "info@example.org";

fn alice() -> CskEntry {
    CskEntry {
        id: CskId(0x2ddd5bf0),
        csk: Csk::from_hex("e06e651061835473 42d3e8a6ce2540a8").unwrap(),
        mc_id: "sip:alice@example.org".into(),
    }
}

struct Lab {
    dir: PathBuf,
    table: LabCskTable,
    keys: FixedKeys,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let dir =
            std::env::temp_dir().join(format!("mcx-sec-xmlsec1-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let keys = FixedKeys::derive(&alice(), KdfReading::default()).unwrap();
        std::fs::write(dir.join("conf.key"), keys.confidentiality.octets()).unwrap();
        std::fs::write(dir.join("int.key"), keys.integrity.octets()).unwrap();
        let mut table = LabCskTable::default();
        table.insert(alice()).unwrap();
        Lab { dir, table, keys }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    fn write(&self, f: &str, data: &[u8]) -> PathBuf {
        let p = self.path(f);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn store_keys(&self) -> CskKeys<'_, LabCskTable> {
        CskKeys {
            store: &self.table,
            reading: KdfReading::default(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn xmlsec1(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new("xmlsec1");
    for a in args {
        c.arg(a);
    }
    c.output()
        .expect("xmlsec1 is required for the clause-9 interop oracle: apt-get install -y xmlsec1")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "xmlsec1 failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn strip_decl(s: &str) -> &str {
    match s.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").unwrap().1.trim(),
        None => s.trim(),
    }
}

fn info(token_type: &str, client_type: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0"><mcptt-Params><mcptt-access-token type="{token_type}"><mcpttString>{TOKEN}</mcpttString></mcptt-access-token><mcptt-client-id type="{client_type}"><mcpttString>{CLIENT}</mcpttString></mcptt-client-id></mcptt-Params></mcpttinfo>"#
    )
}

fn enc_template(key_name: &str) -> String {
    format!(
        r#"<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Type="http://www.w3.org/2001/04/xmlenc#Content"><xenc:EncryptionMethod Algorithm="{}"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:KeyName>{key_name}</ds:KeyName></ds:KeyInfo><xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedData>"#,
        xmlenc::AES128_GCM
    )
}

/// xmlsec1 encrypts the content of `<mcptt-access-token>` (the serialized `<mcpttString>`
/// form); mcx-sec opens it with the CSK from its table.
#[test]
fn xmlsec1_encrypts_element_content_and_we_decrypt() {
    let lab = Lab::new("enc-content");
    let key_name = alice().id.key_name();
    let doc = lab.write("doc.xml", info("Encrypted", "Normal").as_bytes());
    let tmpl = lab.write("tmpl.xml", enc_template(&key_name).as_bytes());
    let out = ok(xmlsec1(&[
        &"encrypt",
        &format!("--aeskey:{key_name}"),
        &lab.path("conf.key"),
        &"--xml-data",
        &doc,
        &"--node-xpath",
        &"//*[local-name()='mcptt-access-token']",
        &tmpl,
    ]));
    assert!(!out.contains(TOKEN), "xmlsec1 encrypted the token");
    assert!(out.contains("<xenc:CipherValue>"));
    let r = xmlenc::reveal_info(out.as_bytes(), "mcptt", &lab.store_keys()).unwrap();
    assert_eq!(r.csk_id, Some(alice().id));
    assert_eq!(r.opened, ["mcptt-access-token"]);
    assert!(
        r.xml
            .contains(&format!("<mcpttString>{TOKEN}</mcpttString>")),
        "{}",
        r.xml
    );
    // The same output with one CipherValue character changed fails as Decrypt.
    let i = out.find("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len() + 20;
    let mut bad = out.clone().into_bytes();
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        xmlenc::reveal_info(&bad, "mcptt", &lab.store_keys()).unwrap_err(),
        XmlEncError::Decrypt
    );
}

/// xmlsec1 encrypts the bare token (binary data); placed in the element, mcx-sec opens it.
#[test]
fn xmlsec1_encrypts_a_bare_value_and_we_decrypt() {
    let lab = Lab::new("enc-bare");
    let key_name = alice().id.key_name();
    let data = lab.write("token.txt", TOKEN.as_bytes());
    let tmpl = lab.write("tmpl.xml", enc_template(&key_name).as_bytes());
    let ed = ok(xmlsec1(&[
        &"encrypt",
        &format!("--aeskey:{key_name}"),
        &lab.path("conf.key"),
        &"--binary-data",
        &data,
        &tmpl,
    ]));
    let body = info("Normal", "Normal").replacen(
        &format!("<mcptt-access-token type=\"Normal\"><mcpttString>{TOKEN}</mcpttString>"),
        &format!("<mcptt-access-token type=\"Encrypted\">{}", strip_decl(&ed)),
        1,
    );
    let r = xmlenc::reveal_info(body.as_bytes(), "mcptt", &lab.store_keys()).unwrap();
    assert_eq!(r.csk_id, Some(alice().id));
    assert!(r
        .xml
        .contains(&format!("<mcpttString>{TOKEN}</mcpttString>")));
}

/// mcx-sec encrypts (both forms); xmlsec1 decrypts to the same plaintext.
#[test]
fn we_encrypt_and_xmlsec1_decrypts() {
    let lab = Lab::new("dec");
    let key_name = alice().id.key_name();
    for (form, want) in [
        (PlaintextForm::ValueElement, format!("<mcptt-access-token type=\"Encrypted\"><mcpttString>{TOKEN}</mcpttString></mcptt-access-token>")),
        (PlaintextForm::Bare, format!("<mcptt-access-token type=\"Encrypted\">{TOKEN}</mcptt-access-token>")),
    ] {
        let mut n = 0u8;
        let body = xmlenc::protect_info(
            info("Normal", "Normal").as_bytes(),
            "mcptt",
            &["mcptt-access-token"],
            form,
            alice().id,
            &lab.keys.confidentiality,
            &mut || {
                n += 1;
                [n; 12]
            },
        )
        .unwrap();
        let f = lab.write("ours.xml", body.as_bytes());
        let out = ok(xmlsec1(&[&"decrypt", &format!("--aeskey:{key_name}"), &lab.path("conf.key"), &f]));
        assert!(out.contains(&want), "{form:?}: {out}");
    }
}

fn sig_template(c14n: &str, key_name: &str) -> String {
    format!(
        r#"<signatures xmlns="urn:3gpp:ns:mcpttSignedDoc:1.0"><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{c14n}"/><ds:SignatureMethod Algorithm="{}"/><ds:Reference URI="cid:{CID}"><ds:DigestMethod Algorithm="{}"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:KeyName>{key_name}</ds:KeyName></ds:KeyInfo></ds:Signature></signatures>"#,
        xmldsig::HMAC_SHA256,
        xmldsig::SHA256
    )
}

/// xmlsec1 signs the info body by `cid:` (inclusive and exclusive C14N); mcx-sec verifies.
#[test]
fn xmlsec1_signs_and_we_verify() {
    let lab = Lab::new("sign");
    let key_name = alice().id.key_name();
    let body = info("Normal", "Normal");
    let body_file = lab.write("body.xml", body.as_bytes());
    for c14n in [xmldsig::C14N_10, xmldsig::EXC_C14N] {
        let tmpl = lab.write("sig.xml", sig_template(c14n, &key_name).as_bytes());
        let signed = ok(xmlsec1(&[
            &"sign",
            &format!("--hmackey:{key_name}"),
            &lab.path("int.key"),
            &format!("--url-map:cid:{CID}"),
            &body_file,
            &tmpl,
        ]));
        let parts = [MimePart {
            content_id: CID,
            body: body.as_bytes(),
        }];
        let v = xmldsig::verify(signed.as_bytes(), &parts, &lab.store_keys()).unwrap();
        assert_eq!(
            (v.csk_id, v.covered.as_slice()),
            (alice().id, &[CID.to_owned()][..]),
            "{c14n}"
        );
        let mut altered = body.clone().into_bytes();
        altered[60] ^= 0x20;
        assert_eq!(
            xmldsig::verify(
                signed.as_bytes(),
                &[MimePart {
                    content_id: CID,
                    body: &altered
                }],
                &lab.store_keys()
            )
            .unwrap_err(),
            XmlDsigError::DigestMismatch(CID.into())
        );
    }
}

/// mcx-sec signs; xmlsec1 verifies, and refuses the signature over an altered body.
#[test]
fn we_sign_and_xmlsec1_verifies() {
    let lab = Lab::new("verify");
    let key_name = alice().id.key_name();
    let body = info("Normal", "Normal");
    let body_file = lab.write("body.xml", body.as_bytes());
    let doc = xmldsig::sign(
        &[MimePart {
            content_id: CID,
            body: body.as_bytes(),
        }],
        alice().id,
        &lab.keys.integrity,
    );
    let sig = lab.write("ours.xml", doc.as_bytes());
    let verify = |body: &Path| {
        xmlsec1(&[
            &"verify",
            &format!("--hmackey:{key_name}"),
            &lab.path("int.key"),
            &format!("--url-map:cid:{CID}"),
            &body,
            &sig,
        ])
    };
    let good = verify(&body_file);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let altered = lab.write(
        "altered.xml",
        body.replace("mcptt-Params", "mcptt-params").as_bytes(),
    );
    assert!(
        !verify(&altered).status.success(),
        "xmlsec1 must refuse an altered body"
    );
}
