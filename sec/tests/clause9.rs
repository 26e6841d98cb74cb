//! TS 33.180 clause 9 in mcx-sec: round trips (proptest) and the negative catalogue of issue 9
//! (unknown KeyName, wrong key, flipped tag, wrong Algorithm, Encrypted without EncryptedData,
//! two EncryptedData, junk base64, oversize, failed signatures).

use base64::Engine as _;
use mcx_sec::csk::{Csk, CskEntry, CskId, LabCskTable};
use mcx_sec::kdf::{derive_xml_key, CskKeys, FixedKeys, KdfReading, KeyPurpose, XmlKey};
use mcx_sec::xmldsig::{self, MimePart, XmlDsigError};
use mcx_sec::xmlenc::{self, PlaintextForm, XmlEncError};
use proptest::prelude::*;

const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
const CLIENT: &str = "urn:uuid:00000000-0000-0000-0000-000000000001";

fn alice() -> CskEntry {
    CskEntry {
        id: CskId(0x2ddd5bf0),
        csk: Csk::from_hex("e06e651061835473 42d3e8a6ce2540a8").unwrap(),
        mc_id: "sip:alice@example.org".into(),
    }
}

fn bob() -> CskEntry {
    CskEntry {
        id: CskId(0x21111111),
        csk: Csk::new([0x42; 16]),
        mc_id: "sip:bob@example.org".into(),
    }
}

fn table() -> LabCskTable {
    let mut t = LabCskTable::default();
    t.insert(alice()).unwrap();
    t.insert(bob()).unwrap();
    t
}

fn info(token: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0"><mcptt-Params><mcptt-access-token type="Normal"><mcpttString>{token}</mcpttString></mcptt-access-token><mcptt-client-id type="Normal"><mcpttString>{CLIENT}</mcpttString></mcptt-client-id></mcptt-Params></mcpttinfo>"#
    )
}

fn conf_key(e: &CskEntry) -> XmlKey {
    derive_xml_key(e, KeyPurpose::Confidentiality, KdfReading::default()).unwrap()
}

fn counter_iv() -> impl FnMut() -> [u8; 12] {
    let mut n = 0u8;
    move || {
        n += 1;
        [n; 12]
    }
}

fn protect(e: &CskEntry, form: PlaintextForm) -> String {
    xmlenc::protect_info(
        info(TOKEN).as_bytes(),
        "mcptt",
        &["mcptt-access-token", "mcptt-client-id"],
        form,
        e.id,
        &conf_key(e),
        &mut counter_iv(),
    )
    .unwrap()
}

fn reveal(body: &str) -> Result<xmlenc::RevealedInfo, XmlEncError> {
    let t = table();
    xmlenc::reveal_info(
        body.as_bytes(),
        "mcptt",
        &CskKeys {
            store: &t,
            reading: KdfReading::default(),
        },
    )
}

/// The `CipherValue` text of the first encrypted element.
fn cipher_value(body: &str) -> String {
    let a = body.find("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
    let b = body[a..].find('<').unwrap() + a;
    body[a..b].to_owned()
}

fn with_cipher(body: &str, new: &str) -> String {
    body.replacen(&cipher_value(body), new, 1)
}

#[test]
fn both_plaintext_forms_round_trip_and_reveal_for_a_plain_reader() {
    for form in [PlaintextForm::ValueElement, PlaintextForm::Bare] {
        let body = protect(&alice(), form);
        assert!(!body.contains(TOKEN) && !body.contains(CLIENT));
        assert_eq!(body.matches("type=\"Encrypted\"").count(), 2);
        let r = reveal(&body).unwrap();
        assert_eq!(r.csk_id, Some(alice().id));
        assert_eq!(r.opened, ["mcptt-access-token", "mcptt-client-id"]);
        assert!(r.xml.contains(&format!(
            "<mcptt-access-token type=\"Normal\"><mcpttString>{TOKEN}</mcpttString></mcptt-access-token>"
        )));
        assert!(r.xml.contains(CLIENT));
    }
}

#[test]
fn a_clear_body_reveals_unchanged_with_no_csk() {
    let r = reveal(&info(TOKEN)).unwrap();
    assert_eq!(r.csk_id, None);
    assert!(r.opened.is_empty());
    assert!(r.xml.contains(TOKEN));
}

#[test]
fn the_default_reading_is_the_one_that_opens() {
    let body = protect(&alice(), PlaintextForm::ValueElement);
    let t = table();
    let other = xmlenc::reveal_info(
        body.as_bytes(),
        "mcptt",
        &CskKeys {
            store: &t,
            reading: KdfReading::XpkIdOnly,
        },
    );
    assert_eq!(other.unwrap_err(), XmlEncError::Decrypt);
}

#[test]
fn negative_catalogue_xmlenc() {
    let good = protect(&alice(), PlaintextForm::ValueElement);
    let key_name = alice().id.key_name();
    // Unknown KeyName.
    let unknown = good.replace(&key_name, &CskId(0x2fffffff).key_name());
    assert_eq!(
        reveal(&unknown).unwrap_err(),
        XmlEncError::UnknownKeyName(CskId(0x2fffffff))
    );
    // Wrong key: bob's CSK-ID on alice's ciphertext.
    let wrong = good.replace(&key_name, &bob().id.key_name());
    assert_eq!(reveal(&wrong).unwrap_err(), XmlEncError::Decrypt);
    // Flipped tag bit (last octet of the CipherValue).
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(cipher_value(&good))
        .unwrap();
    *raw.last_mut().unwrap() ^= 1;
    let flipped = with_cipher(
        &good,
        &base64::engine::general_purpose::STANDARD.encode(&raw),
    );
    assert_eq!(reveal(&flipped).unwrap_err(), XmlEncError::Decrypt);
    // Flipped ciphertext bit.
    *raw.last_mut().unwrap() ^= 1;
    raw[14] ^= 0x80;
    let flipped_ct = with_cipher(
        &good,
        &base64::engine::general_purpose::STANDARD.encode(&raw),
    );
    assert_eq!(reveal(&flipped_ct).unwrap_err(), XmlEncError::Decrypt);
    // Wrong Algorithm (CBC, and GCM-256).
    for alg in [
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
        "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    ] {
        let b = good.replacen(xmlenc::AES128_GCM, alg, 1);
        assert_eq!(
            reveal(&b).unwrap_err(),
            XmlEncError::WrongAlgorithm(alg.into())
        );
    }
    // No EncryptionMethod.
    let no_method = good.replacen(
        &format!(
            "<xenc:EncryptionMethod Algorithm=\"{}\"/>",
            xmlenc::AES128_GCM
        ),
        "",
        1,
    );
    assert_eq!(
        reveal(&no_method).unwrap_err(),
        XmlEncError::NoEncryptionMethod
    );
    // Encrypted without EncryptedData.
    let empty = info(TOKEN).replacen(
        "<mcptt-access-token type=\"Normal\">",
        "<mcptt-access-token type=\"Encrypted\">",
        1,
    );
    assert_eq!(
        reveal(&empty).unwrap_err(),
        XmlEncError::Unexpected("<mcpttString>".into())
    );
    let bare = info(TOKEN).replacen(
        &format!("<mcptt-access-token type=\"Normal\"><mcpttString>{TOKEN}</mcpttString>"),
        "<mcptt-access-token type=\"Encrypted\"> ",
        1,
    );
    assert_eq!(reveal(&bare).unwrap_err(), XmlEncError::NoEncryptedData);
    // Two EncryptedData.
    let a = good.find("<xenc:EncryptedData").unwrap();
    let b = good.find("</xenc:EncryptedData>").unwrap() + "</xenc:EncryptedData>".len();
    let two = format!("{}{}{}", &good[..b], &good[a..b], &good[b..]);
    assert_eq!(reveal(&two).unwrap_err(), XmlEncError::TwoEncryptedData);
    // Junk base64.
    assert_eq!(
        reveal(&with_cipher(&good, "@@@@")).unwrap_err(),
        XmlEncError::JunkBase64
    );
    // Too short to hold IV and tag.
    assert_eq!(
        reveal(&with_cipher(&good, "AAAA")).unwrap_err(),
        XmlEncError::TooShort
    );
    // Oversize CipherValue (within the document bound).
    let huge = "A".repeat(12_000);
    assert_eq!(
        reveal(&with_cipher(&good, &huge)).unwrap_err(),
        XmlEncError::Oversize(xmlenc::MAX_CIPHER_OCTETS)
    );
    // Oversize document.
    let big = with_cipher(&good, &"A".repeat(40_000));
    assert!(matches!(reveal(&big).unwrap_err(), XmlEncError::Xml(_)));
    // Bad KeyName.
    let bad_name = good.replace(&key_name, "not-base64");
    assert_eq!(
        reveal(&bad_name).unwrap_err(),
        XmlEncError::BadKeyName("not-base64".into())
    );
    // No KeyInfo.
    let k0 = good.find("<ds:KeyInfo").unwrap();
    let k1 = good.find("</ds:KeyInfo>").unwrap() + "</ds:KeyInfo>".len();
    let no_key = format!("{}{}", &good[..k0], &good[k1..]);
    assert_eq!(reveal(&no_key).unwrap_err(), XmlEncError::NoKeyName);
    // CipherReference.
    let c0 = good.find("<xenc:CipherValue>").unwrap();
    let c1 = good.find("</xenc:CipherValue>").unwrap() + "</xenc:CipherValue>".len();
    let cref = format!(
        "{}<xenc:CipherReference URI=\"cid:x\"/>{}",
        &good[..c0],
        &good[c1..]
    );
    assert_eq!(reveal(&cref).unwrap_err(), XmlEncError::CipherReference);
    // Element-type encryption.
    let el_type = good.replacen(
        xmlenc::TYPE_CONTENT,
        "http://www.w3.org/2001/04/xmlenc#Element",
        1,
    );
    assert!(matches!(
        reveal(&el_type).unwrap_err(),
        XmlEncError::UnsupportedType(_)
    ));
    // EncryptedData in a foreign namespace is not EncryptedData.
    let foreign = good.replace(xmlenc::XMLENC_NS, "urn:evil");
    assert!(matches!(
        reveal(&foreign).unwrap_err(),
        XmlEncError::Unexpected(_)
    ));
    // DOCTYPE.
    let doctype = format!("<!DOCTYPE mcpttinfo>{good}");
    assert!(matches!(reveal(&doctype).unwrap_err(), XmlEncError::Xml(_)));
}

#[test]
fn elements_under_two_csks_are_refused() {
    let mut iv = counter_iv();
    let one = xmlenc::protect_info(
        info(TOKEN).as_bytes(),
        "mcptt",
        &["mcptt-access-token"],
        PlaintextForm::Bare,
        alice().id,
        &conf_key(&alice()),
        &mut iv,
    )
    .unwrap();
    let two = xmlenc::protect_info(
        one.as_bytes(),
        "mcptt",
        &["mcptt-client-id"],
        PlaintextForm::Bare,
        bob().id,
        &conf_key(&bob()),
        &mut iv,
    )
    .unwrap();
    assert_eq!(
        reveal(&two).unwrap_err(),
        XmlEncError::MixedCsks(alice().id, bob().id)
    );
}

#[test]
fn plaintexts_that_are_neither_form_are_refused() {
    let keys = FixedKeys::derive(&alice(), KdfReading::default()).unwrap();
    for (plain, want) in [
        (
            "<other>x</other>",
            "not a String, URI or Boolean value element",
        ),
        (
            "<mcpttString><b/>x</mcpttString>",
            "value element with child elements",
        ),
        ("a&amp;b", "markup in a bare value"),
        ("  ", "empty"),
    ] {
        let ed = xmlenc::encrypted_data(
            plain,
            PlaintextForm::Bare,
            "mcpttString",
            alice().id,
            &keys.confidentiality,
            [9; 12],
        );
        let holder = mcx_sec::xml::Element::new(None, "mcptt-access-token", None)
            .attr("type", "Encrypted")
            .child(ed);
        assert_eq!(
            xmlenc::open_element(&holder, "mcptt", &keys).unwrap_err(),
            XmlEncError::BadPlaintext(want),
            "{plain:?}"
        );
    }
}

// ---- signatures ----

const INFO_CID: &str = "info@example.org";

fn integrity(e: &CskEntry) -> XmlKey {
    derive_xml_key(e, KeyPurpose::Integrity, KdfReading::default()).unwrap()
}

fn verify(doc: &str, body: &[u8]) -> Result<xmldsig::Verified, XmlDsigError> {
    let t = table();
    xmldsig::verify(
        doc.as_bytes(),
        &[MimePart {
            content_id: INFO_CID,
            body,
        }],
        &CskKeys {
            store: &t,
            reading: KdfReading::default(),
        },
    )
}

#[test]
fn a_signature_verifies_and_names_what_it_covers() {
    let body = protect(&alice(), PlaintextForm::ValueElement);
    let doc = xmldsig::sign(
        &[MimePart {
            content_id: INFO_CID,
            body: body.as_bytes(),
        }],
        alice().id,
        &integrity(&alice()),
    );
    assert!(doc.starts_with("<signatures xmlns=\"urn:3gpp:ns:mcpttSignedDoc:1.0\">"));
    let v = verify(&doc, body.as_bytes()).unwrap();
    assert_eq!(v.csk_id, alice().id);
    assert_eq!(v.covered, [INFO_CID]);
}

#[test]
fn negative_catalogue_xmldsig() {
    let body = protect(&alice(), PlaintextForm::ValueElement);
    let parts = [MimePart {
        content_id: INFO_CID,
        body: body.as_bytes(),
    }];
    let doc = xmldsig::sign(&parts, alice().id, &integrity(&alice()));
    // The body altered by one octet.
    let mut altered = body.clone().into_bytes();
    altered[10] ^= 1;
    assert_eq!(
        verify(&doc, &altered).unwrap_err(),
        XmlDsigError::DigestMismatch(INFO_CID.into())
    );
    // The signature made with a wrong key (bob's key, alice's KeyName).
    let forged = xmldsig::sign(&parts, alice().id, &integrity(&bob()));
    assert_eq!(
        verify(&forged, body.as_bytes()).unwrap_err(),
        XmlDsigError::BadSignatureValue
    );
    // Unknown KeyName.
    let unknown = doc.replace(&alice().id.key_name(), &CskId(0x2fffffff).key_name());
    assert_eq!(
        verify(&unknown, body.as_bytes()).unwrap_err(),
        XmlDsigError::UnknownKeyName(CskId(0x2fffffff))
    );
    // SignedInfo altered (a reference to another part is also an unknown reference).
    let other_ref = doc.replace("cid:info@example.org", "cid:other@example.org");
    assert_eq!(
        verify(&other_ref, body.as_bytes()).unwrap_err(),
        XmlDsigError::UnknownReference("other@example.org".into())
    );
    // Canonicalization switched to exclusive: SignedInfo bytes change, the HMAC fails.
    let exc = doc.replace(xmldsig::C14N_10, xmldsig::EXC_C14N);
    assert_eq!(
        verify(&exc, body.as_bytes()).unwrap_err(),
        XmlDsigError::BadSignatureValue
    );
    // Methods refused.
    let sha1 = doc.replace(
        xmldsig::HMAC_SHA256,
        "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
    );
    assert!(matches!(
        verify(&sha1, body.as_bytes()).unwrap_err(),
        XmlDsigError::WrongSignatureMethod(_)
    ));
    let dsha1 = doc.replace(xmldsig::SHA256, "http://www.w3.org/2000/09/xmldsig#sha1");
    assert!(matches!(
        verify(&dsha1, body.as_bytes()).unwrap_err(),
        XmlDsigError::WrongDigestMethod(_)
    ));
    let c14n11 = doc.replace(xmldsig::C14N_10, "http://www.w3.org/2006/12/xml-c14n11");
    assert!(matches!(
        verify(&c14n11, body.as_bytes()).unwrap_err(),
        XmlDsigError::WrongCanonicalization(_)
    ));
    let trunc = doc.replace(
        &format!("<ds:SignatureMethod Algorithm=\"{}\"/>", xmldsig::HMAC_SHA256),
        &format!("<ds:SignatureMethod Algorithm=\"{}\"><ds:HMACOutputLength>8</ds:HMACOutputLength></ds:SignatureMethod>", xmldsig::HMAC_SHA256),
    );
    assert_eq!(
        verify(&trunc, body.as_bytes()).unwrap_err(),
        XmlDsigError::HmacOutputLength
    );
    let transforms = doc.replace(
        "<ds:DigestMethod",
        "<ds:Transforms><ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/></ds:Transforms><ds:DigestMethod",
    );
    assert_eq!(
        verify(&transforms, body.as_bytes()).unwrap_err(),
        XmlDsigError::Transforms
    );
    let not_cid = doc.replace("cid:info@example.org", "http://example.org/x");
    assert!(matches!(
        verify(&not_cid, body.as_bytes()).unwrap_err(),
        XmlDsigError::NotCid(_)
    ));
    // Junk base64 in SignatureValue.
    let a = doc.find("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
    let b = doc[a..].find('<').unwrap() + a;
    let junk = format!("{}@@@{}", &doc[..a], &doc[b..]);
    assert_eq!(
        verify(&junk, body.as_bytes()).unwrap_err(),
        XmlDsigError::JunkBase64("SignatureValue")
    );
    // No signature, wrong root.
    let none = "<signatures xmlns=\"urn:3gpp:ns:mcpttSignedDoc:1.0\"/>";
    assert_eq!(
        verify(none, body.as_bytes()).unwrap_err(),
        XmlDsigError::NoSignature
    );
    assert!(matches!(
        verify("<x/>", body.as_bytes()).unwrap_err(),
        XmlDsigError::WrongRoot(_)
    ));
    // The same body signed twice.
    let s0 = doc.find("<ds:Signature ").unwrap();
    let s1 = doc.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let twice = format!("{}{}{}", &doc[..s1], &doc[s0..s1], &doc[s1..]);
    assert_eq!(
        verify(&twice, body.as_bytes()).unwrap_err(),
        XmlDsigError::DuplicateReference(INFO_CID.into())
    );
}

#[test]
fn exclusive_c14n_signatures_verify_too() {
    // Built by hand: sign() writes inclusive; a UE may use exclusive (TS 36.579-1 5.5.13.1).
    use mcx_sec::xml::{canonicalize, C14n, Element, Scope};
    let body = b"<mcpttinfo/>";
    let key = integrity(&alice());
    let ds = Some("ds");
    let dsig = mcx_sec::xmlenc::DSIG_NS;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let si = Element::new(ds, "SignedInfo", Some(dsig))
        .child(
            Element::new(ds, "CanonicalizationMethod", Some(dsig))
                .attr("Algorithm", xmldsig::EXC_C14N),
        )
        .child(
            Element::new(ds, "SignatureMethod", Some(dsig)).attr("Algorithm", xmldsig::HMAC_SHA256),
        )
        .child(
            Element::new(ds, "Reference", Some(dsig))
                .attr("URI", "cid:info@example.org")
                .child(
                    Element::new(ds, "DigestMethod", Some(dsig)).attr("Algorithm", xmldsig::SHA256),
                )
                .child(Element::new(ds, "DigestValue", Some(dsig)).text(&b64(digest.as_ref()))),
        );
    let mut scope = Scope::new();
    scope.insert(None, xmldsig::SIGNED_DOC_NS.into());
    scope.insert(Some("ds".into()), dsig.into());
    let c = canonicalize(&si, &scope, C14n::Exclusive);
    assert!(
        !c.contains("mcpttSignedDoc"),
        "exclusive drops the unused default namespace: {c}"
    );
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.octets()),
        c.as_bytes(),
    );
    let doc =
        Element::new(None, "signatures", Some(xmldsig::SIGNED_DOC_NS))
            .declare(None, xmldsig::SIGNED_DOC_NS)
            .child(
                Element::new(ds, "Signature", Some(dsig))
                    .declare(ds, dsig)
                    .child(si)
                    .child(Element::new(ds, "SignatureValue", Some(dsig)).text(&b64(mac.as_ref())))
                    .child(Element::new(ds, "KeyInfo", Some(dsig)).child(
                        Element::new(ds, "KeyName", Some(dsig)).text(&alice().id.key_name()),
                    )),
            )
            .to_xml();
    assert_eq!(verify(&doc, body).unwrap().csk_id, alice().id);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any printable value survives protect -> reveal in either form, under any CSK.
    #[test]
    fn protect_then_reveal_round_trips(
        value in "[!-~&&[^<>&\"']]{1,200}",
        id in 0u32..,
        key in proptest::array::uniform16(any::<u8>()),
        bare in any::<bool>(),
    ) {
        let e = CskEntry { id: CskId(id), csk: Csk::new(key), mc_id: "sip:p@example.org".into() };
        let mut t = LabCskTable::default();
        t.insert(e.clone()).unwrap();
        let form = if bare { PlaintextForm::Bare } else { PlaintextForm::ValueElement };
        let body = xmlenc::protect_info(
            info(&value).as_bytes(), "mcptt", &["mcptt-access-token"], form, e.id, &conf_key(&e), &mut counter_iv(),
        ).unwrap();
        let r = xmlenc::reveal_info(body.as_bytes(), "mcptt", &CskKeys { store: &t, reading: KdfReading::default() }).unwrap();
        prop_assert_eq!(r.csk_id, Some(e.id));
        let want = format!("<mcpttString>{value}</mcpttString>");
        prop_assert!(r.xml.contains(&want));
    }

    /// Any body signs and verifies; any single-octet change to it fails the digest.
    #[test]
    fn sign_then_verify_round_trips(body in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<prop::sample::Index>()) {
        let doc = xmldsig::sign(&[MimePart { content_id: INFO_CID, body: &body }], alice().id, &integrity(&alice()));
        prop_assert_eq!(verify(&doc, &body).unwrap().csk_id, alice().id);
        if !body.is_empty() {
            let mut b = body.clone();
            b[flip.index(body.len())] ^= 0x01;
            prop_assert_eq!(verify(&doc, &b).unwrap_err(), XmlDsigError::DigestMismatch(INFO_CID.into()));
        }
    }

    /// Arbitrary bytes never panic the openers.
    #[test]
    fn openers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = reveal(&String::from_utf8_lossy(&bytes));
        let _ = verify(&String::from_utf8_lossy(&bytes), b"x");
    }
}
