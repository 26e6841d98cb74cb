//! XML signature (W3C XML Signature 1.1, HMAC) of the MIME bodies of a SIP message, as
//! TS 33.180 clause 9 and TS 24.379 F.6 use it: an `application/vnd.3gpp.mcptt-signed+xml`
//! part whose root `<signatures>` (namespace `urn:3gpp:ns:mcpttSignedDoc:1.0`) holds one
//! `ds:Signature` per signed body (dossier R-28, TS 36.579-1 5.5.13.1).
//!
//! Each signature has exactly one `Reference` whose `URI` is `cid:` + the Content-ID of the
//! signed body (RFC 2392); the digest input is the body part's content octets exactly as they
//! stand between its header block and the next boundary delimiter (no transforms: an external
//! reference without transforms is an octet stream, XML Signature 1.1 4.4.3.2); the digest
//! is SHA-256. `SignatureMethod` is HMAC-SHA-256
//! (`http://www.w3.org/2001/04/xmldsig-more#hmac-sha256`, full 256-bit output; an
//! `HMACOutputLength` is refused) under the CSK's F.1.4 integrity key (FC 0x52);
//! `KeyInfo/KeyName` is the base64 CSK-ID.
//!
//! `SignedInfo` is canonicalized with the `CanonicalizationMethod` it names: Canonical XML 1.0
//! (`http://www.w3.org/TR/2001/REC-xml-c14n-20010315`, the value TS 36.579-1 5.5.13.1 gives
//! for the network side and the one [`sign`] writes) or Exclusive C14N 1.0 (accepted, since
//! 36.579-1 lets the UE use "any value"). Both without comments; anything else is refused.

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;

use crate::csk::CskId;
use crate::kdf::{KeyPurpose, XmlKey, XmlKeys};
use crate::xml::{self, canonicalize, C14n, Element, Limits, Node, Scope, XmlError};
use crate::xmlenc::DSIG_NS;

/// The signed-document namespace of the `<signatures>` root.
pub const SIGNED_DOC_NS: &str = "urn:3gpp:ns:mcpttSignedDoc:1.0";
/// HMAC-SHA-256 (RFC 6931 2.2.2).
pub const HMAC_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256";
/// SHA-256 (XML Encryption 1.1 5.7.2).
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// Canonical XML 1.0 without comments.
pub const C14N_10: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
/// Exclusive XML Canonicalization 1.0 without comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// Most signatures in one signature part (one per signed body; a SIP message has few).
pub const MAX_SIGNATURES: usize = 16;

/// A MIME body part a signature may reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MimePart<'a> {
    /// Its Content-ID without the angle brackets.
    pub content_id: &'a str,
    /// Its content octets.
    pub body: &'a [u8],
}

/// Why a signature part does not verify (each is a refusal under `required`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlDsigError {
    /// Not acceptable XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// Root is not `<signatures>`.
    #[error("signature part root <{0}> is not <signatures>")]
    WrongRoot(String),
    /// No `ds:Signature`.
    #[error("signature part without ds:Signature")]
    NoSignature,
    /// Over [`MAX_SIGNATURES`].
    #[error("more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A missing element.
    #[error("ds:Signature without {0}")]
    Missing(&'static str),
    /// Something not allowed where it stands.
    #[error("unexpected {0} in a signature")]
    Unexpected(String),
    /// A canonicalization other than C14N 1.0 or Exclusive C14N 1.0 without comments.
    #[error("canonicalization {0:?} refused")]
    WrongCanonicalization(String),
    /// A signature method other than HMAC-SHA-256.
    #[error("signature method {0:?} refused (only {HMAC_SHA256})")]
    WrongSignatureMethod(String),
    /// A digest method other than SHA-256.
    #[error("digest method {0:?} refused (only {SHA256})")]
    WrongDigestMethod(String),
    /// `Transforms` on a reference.
    #[error("Reference Transforms refused (the digest is over the body part's octets)")]
    Transforms,
    /// `HMACOutputLength` (truncated HMAC).
    #[error("HMACOutputLength refused")]
    HmacOutputLength,
    /// Not exactly one `Reference`.
    #[error("a ds:Signature must have exactly one Reference, has {0}")]
    References(usize),
    /// A reference URI that is not `cid:`.
    #[error("Reference URI {0:?} is not a cid: URI")]
    NotCid(String),
    /// A `cid:` naming no body part of the message.
    #[error("Reference {0:?} names no body part")]
    UnknownReference(String),
    /// Two signatures over one body.
    #[error("body {0:?} signed twice")]
    DuplicateReference(String),
    /// The body's digest differs.
    #[error("digest of body {0:?} does not match")]
    DigestMismatch(String),
    /// The HMAC over `SignedInfo` differs (wrong key, or `SignedInfo` altered).
    #[error("SignatureValue does not verify")]
    BadSignatureValue,
    /// A `KeyName` that is not base64 of 4 octets.
    #[error("KeyName {0:?} is not base64 of a CSK-ID")]
    BadKeyName(String),
    /// A CSK-ID the server does not know.
    #[error("unknown CSK-ID {0} in KeyName")]
    UnknownKeyName(CskId),
    /// A value that is not base64 (or of the wrong length).
    #[error("{0} is not base64 of the right length")]
    JunkBase64(&'static str),
    /// Signatures under different CSKs.
    #[error("signatures under different CSKs ({0}, {1})")]
    MixedCsks(CskId, CskId),
}

/// What a signature part proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The CSK every signature was made with.
    pub csk_id: CskId,
    /// The Content-IDs of the bodies covered.
    pub covered: Vec<String>,
}

fn b64(text: &str, what: &'static str, len: usize) -> Result<Vec<u8>, XmlDsigError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > 4 * len.div_ceil(3) + 4 {
        return Err(XmlDsigError::JunkBase64(what));
    }
    let v = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| XmlDsigError::JunkBase64(what))?;
    if v.len() != len {
        return Err(XmlDsigError::JunkBase64(what));
    }
    Ok(v)
}

/// RFC 2392: a `cid:` URL is the URL-encoded `addr-spec` of the Content-ID.
fn cid_of(uri: &str) -> Result<String, XmlDsigError> {
    let not = || XmlDsigError::NotCid(uri.chars().take(80).collect());
    let rest = uri
        .get(..4)
        .filter(|s| s.eq_ignore_ascii_case("cid:"))
        .map(|_| &uri[4..])
        .ok_or_else(not)?;
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let h = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(not)?;
            out.push(h);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| not())?;
    if s.is_empty() {
        return Err(not());
    }
    Ok(s)
}

fn one<'e>(parent: &'e Element, local: &'static str) -> Result<&'e Element, XmlDsigError> {
    let mut it = parent.elements().filter(|e| e.is(DSIG_NS, local));
    let first = it.next().ok_or(XmlDsigError::Missing(local))?;
    if it.next().is_some() {
        return Err(XmlDsigError::Unexpected(format!("second <{local}>")));
    }
    Ok(first)
}

fn only(parent: &Element, allowed: &[&str]) -> Result<(), XmlDsigError> {
    if !parent.only_whitespace_text() {
        return Err(XmlDsigError::Unexpected(format!(
            "text in <{}>",
            parent.local
        )));
    }
    for e in parent.elements() {
        if e.ns.as_deref() != Some(DSIG_NS) || !allowed.contains(&e.local.as_str()) {
            return Err(XmlDsigError::Unexpected(format!(
                "<{}> in <{}>",
                e.local, parent.local
            )));
        }
    }
    Ok(())
}

/// Verifies a signature part against the message's body parts with the keys `keys` finds.
/// Every signature must verify and all must be under one CSK.
pub fn verify(
    doc: &[u8],
    parts: &[MimePart<'_>],
    keys: &dyn XmlKeys,
) -> Result<Verified, XmlDsigError> {
    let root = xml::parse_bytes(doc, Limits::default())?;
    if root.local != "signatures" {
        return Err(XmlDsigError::WrongRoot(
            root.local.chars().take(60).collect(),
        ));
    }
    let root_scope = root.scope_inside(&Scope::new());
    let mut csk: Option<CskId> = None;
    let mut covered: Vec<String> = Vec::new();
    let mut count = 0usize;
    for n in &root.children {
        let sig = match n {
            Node::Text(t) if t.chars().all(|c| c.is_ascii_whitespace()) => continue,
            Node::Text(_) => return Err(XmlDsigError::Unexpected("text in <signatures>".into())),
            Node::Element(e) if e.is(DSIG_NS, "Signature") => e,
            Node::Element(e) => {
                return Err(XmlDsigError::Unexpected(format!(
                    "<{}> in <signatures>",
                    e.local
                )))
            }
        };
        count += 1;
        if count > MAX_SIGNATURES {
            return Err(XmlDsigError::TooManySignatures);
        }
        let (id, cid) = verify_one(sig, &root_scope, parts, keys)?;
        match csk {
            Some(prev) if prev != id => return Err(XmlDsigError::MixedCsks(prev, id)),
            _ => csk = Some(id),
        }
        if covered.contains(&cid) {
            return Err(XmlDsigError::DuplicateReference(cid));
        }
        covered.push(cid);
    }
    Ok(Verified {
        csk_id: csk.ok_or(XmlDsigError::NoSignature)?,
        covered,
    })
}

fn verify_one(
    sig: &Element,
    root_scope: &Scope,
    parts: &[MimePart<'_>],
    keys: &dyn XmlKeys,
) -> Result<(CskId, String), XmlDsigError> {
    only(sig, &["SignedInfo", "SignatureValue", "KeyInfo"])?;
    let signed_info = one(sig, "SignedInfo")?;
    only(
        signed_info,
        &["CanonicalizationMethod", "SignatureMethod", "Reference"],
    )?;
    let c14n_el = one(signed_info, "CanonicalizationMethod")?;
    let c14n = match c14n_el.get_attr("Algorithm").unwrap_or("") {
        C14N_10 => C14n::Inclusive,
        EXC_C14N => C14n::Exclusive,
        other => {
            return Err(XmlDsigError::WrongCanonicalization(
                other.chars().take(120).collect(),
            ))
        }
    };
    if c14n_el.elements().next().is_some() {
        return Err(XmlDsigError::Unexpected(
            "CanonicalizationMethod parameters".into(),
        ));
    }
    let method = one(signed_info, "SignatureMethod")?;
    let alg = method.get_attr("Algorithm").unwrap_or("");
    if alg != HMAC_SHA256 {
        return Err(XmlDsigError::WrongSignatureMethod(
            alg.chars().take(120).collect(),
        ));
    }
    if method.elements().any(|e| e.local == "HMACOutputLength") {
        return Err(XmlDsigError::HmacOutputLength);
    }
    only(method, &[])?;
    let refs: Vec<&Element> = signed_info
        .elements()
        .filter(|e| e.is(DSIG_NS, "Reference"))
        .collect();
    if refs.len() != 1 {
        return Err(XmlDsigError::References(refs.len()));
    }
    let reference = refs[0];
    if reference.elements().any(|e| e.local == "Transforms") {
        return Err(XmlDsigError::Transforms);
    }
    only(reference, &["DigestMethod", "DigestValue"])?;
    let digest_alg = one(reference, "DigestMethod")?
        .get_attr("Algorithm")
        .unwrap_or("");
    if digest_alg != SHA256 {
        return Err(XmlDsigError::WrongDigestMethod(
            digest_alg.chars().take(120).collect(),
        ));
    }
    let cid = cid_of(reference.get_attr("URI").unwrap_or(""))?;
    let want = b64(
        &one(reference, "DigestValue")?.text_content(),
        "DigestValue",
        32,
    )?;
    let key_info = one(sig, "KeyInfo")?;
    let name = one(key_info, "KeyName")?.text_content();
    let id = CskId::from_key_name(&name)
        .map_err(|_| XmlDsigError::BadKeyName(name.trim().chars().take(40).collect()))?;
    let sig_value = b64(
        &one(sig, "SignatureValue")?.text_content(),
        "SignatureValue",
        32,
    )?;
    let part = parts
        .iter()
        .find(|p| p.content_id == cid)
        .ok_or_else(|| XmlDsigError::UnknownReference(cid.clone()))?;
    if digest::digest(&digest::SHA256, part.body).as_ref() != want.as_slice() {
        return Err(XmlDsigError::DigestMismatch(cid));
    }
    let key = keys
        .xml_key(id, KeyPurpose::Integrity)
        .ok_or(XmlDsigError::UnknownKeyName(id))?;
    let scope = sig.scope_inside(root_scope);
    let canonical = canonicalize(signed_info, &scope, c14n);
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, key.octets()),
        canonical.as_bytes(),
        &sig_value,
    )
    .map_err(|_| XmlDsigError::BadSignatureValue)?;
    Ok((id, cid))
}

/// The signature part (a whole `<signatures>` document) over `parts`, one `ds:Signature`
/// each, with `csk_id`'s integrity `key`, `SignedInfo` in Canonical XML 1.0.
pub fn sign(parts: &[MimePart<'_>], csk_id: CskId, key: &XmlKey) -> String {
    let ds = Some("ds");
    let hkey = hmac::Key::new(hmac::HMAC_SHA256, key.octets());
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut root =
        Element::new(None, "signatures", Some(SIGNED_DOC_NS)).declare(None, SIGNED_DOC_NS);
    let root_scope = root.scope_inside(&Scope::new());
    for p in parts {
        let digest = digest::digest(&digest::SHA256, p.body);
        let signed_info = Element::new(ds, "SignedInfo", Some(DSIG_NS))
            .child(
                Element::new(ds, "CanonicalizationMethod", Some(DSIG_NS))
                    .attr("Algorithm", C14N_10),
            )
            .child(
                Element::new(ds, "SignatureMethod", Some(DSIG_NS)).attr("Algorithm", HMAC_SHA256),
            )
            .child(
                Element::new(ds, "Reference", Some(DSIG_NS))
                    .attr("URI", &format!("cid:{}", cid_encode(p.content_id)))
                    .child(
                        Element::new(ds, "DigestMethod", Some(DSIG_NS)).attr("Algorithm", SHA256),
                    )
                    .child(
                        Element::new(ds, "DigestValue", Some(DSIG_NS)).text(&b64(digest.as_ref())),
                    ),
            );
        let shell = Element::new(ds, "Signature", Some(DSIG_NS)).declare(ds, DSIG_NS);
        let scope = shell.scope_inside(&root_scope);
        let canonical = canonicalize(&signed_info, &scope, C14n::Inclusive);
        let value = hmac::sign(&hkey, canonical.as_bytes());
        let sig = shell
            .child(signed_info)
            .child(Element::new(ds, "SignatureValue", Some(DSIG_NS)).text(&b64(value.as_ref())))
            .child(
                Element::new(ds, "KeyInfo", Some(DSIG_NS))
                    .child(Element::new(ds, "KeyName", Some(DSIG_NS)).text(&csk_id.key_name())),
            );
        root = root.child(sig);
    }
    root.to_xml()
}

/// RFC 2392 `cid:` encoding of a Content-ID (percent-encodes what a URL may not hold).
fn cid_encode(id: &str) -> String {
    let mut s = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}
