//! XML encryption (W3C XML Encryption 1.1) of `contentType` elements of an MC info body, as
//! TS 33.180 clause 9 and TS 24.379 6.6 / F.1 use it: an element such as
//! `<mcptt-access-token type="Encrypted">` holds one `xenc:EncryptedData` in place of its
//! `<mcpttString>` (dossier ).
//!
//! - `EncryptionMethod/@Algorithm` is `http://www.w3.org/2009/xmlenc11#aes128-gcm` and nothing
//!   else is accepted;
//! - `ds:KeyInfo/ds:KeyName` is the base64 of the 4-octet CSK-ID; the key is the CSK's
//!   F.1.4 confidentiality key (FC 0x51, see [`crate::kdf`]);
//! - `CipherData/CipherValue` is base64(IV (12 octets) || ciphertext || tag (16 octets))
//!   (XML Encryption 1.1, 5.2.4), no additional authenticated data.
//!
//! The plaintext is the encrypted element's content. Two forms are accepted
//! ([`PlaintextForm`]): the bare value (`eyJ...`) and the serialized value element
//! (`<mcpttString>eyJ...</mcpttString>`, what an xmlenc `#Content` encryption of the element's
//! content yields); [`PlaintextForm::ValueElement`] is what this crate writes.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use base64::Engine as _;

use crate::csk::CskId;
use crate::kdf::{KeyPurpose, XmlKey, XmlKeys};
use crate::xml::{self, Element, Limits, Node, XmlError};

/// The XML Encryption namespace (the F.1 schema imports it).
pub const XMLENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";
/// The XML Signature namespace (`ds:KeyInfo`).
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The one encryption algorithm accepted.
pub const AES128_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
/// `EncryptedData/@Type` for element content.
pub const TYPE_CONTENT: &str = "http://www.w3.org/2001/04/xmlenc#Content";
/// Largest decoded CipherValue (IV, ciphertext and tag), octets.
pub const MAX_CIPHER_OCTETS: usize = 8 * 1024;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a protected element could not be opened (each is a refusal under `required`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlEncError {
    /// The document itself is not acceptable XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The body's root is not the MC info root.
    #[error("root element <{0}> is not the MC info root")]
    WrongRoot(String),
    /// `type="Encrypted"` without an `EncryptedData`.
    #[error("type=\"Encrypted\" without xenc:EncryptedData")]
    NoEncryptedData,
    /// More than one `EncryptedData` in one element.
    #[error("two xenc:EncryptedData in one element")]
    TwoEncryptedData,
    /// Something else where only `EncryptedData` (or one of its parts) may be.
    #[error("unexpected {0} in an encrypted element")]
    Unexpected(String),
    /// No `EncryptionMethod`.
    #[error("xenc:EncryptedData without EncryptionMethod")]
    NoEncryptionMethod,
    /// An algorithm other than AES-128-GCM.
    #[error("encryption algorithm {0:?} refused (only {AES128_GCM})")]
    WrongAlgorithm(String),
    /// An `EncryptedData/@Type` other than element content.
    #[error("EncryptedData Type {0:?} refused")]
    UnsupportedType(String),
    /// No `ds:KeyInfo/ds:KeyName`.
    #[error("xenc:EncryptedData without ds:KeyInfo/ds:KeyName")]
    NoKeyName,
    /// A `KeyName` that is not base64 of 4 octets.
    #[error("KeyName {0:?} is not base64 of a CSK-ID")]
    BadKeyName(String),
    /// A CSK-ID the server does not know.
    #[error("unknown CSK-ID {0} in KeyName")]
    UnknownKeyName(CskId),
    /// No `CipherData/CipherValue`.
    #[error("xenc:EncryptedData without CipherData/CipherValue")]
    NoCipherValue,
    /// A `CipherReference` (detached ciphertext) instead of a value.
    #[error("CipherReference refused (the ciphertext must be inline)")]
    CipherReference,
    /// CipherValue is not base64.
    #[error("CipherValue is not base64")]
    JunkBase64,
    /// CipherValue too large.
    #[error("CipherValue over {0} octets")]
    Oversize(usize),
    /// CipherValue shorter than IV and tag.
    #[error("CipherValue shorter than IV and tag")]
    TooShort,
    /// Authentication failed: wrong key, flipped tag or ciphertext.
    #[error("decryption failed (wrong key, or ciphertext or tag altered)")]
    Decrypt,
    /// The plaintext is neither a bare value nor a value element.
    #[error("decrypted content: {0}")]
    BadPlaintext(&'static str),
    /// Elements of one body encrypted under different CSKs.
    #[error("elements encrypted under different CSKs ({0}, {1})")]
    MixedCsks(CskId, CskId),
}

/// The plaintext form of an encrypted element's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaintextForm {
    /// The value alone: `eyJ...`.
    Bare,
    /// The serialized value element: `<mcpttString>eyJ...</mcpttString>`.
    ValueElement,
}

/// One opened element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The CSK it was encrypted under.
    pub csk_id: CskId,
    /// The value in clear (trimmed).
    pub value: String,
    /// The form the plaintext had.
    pub form: PlaintextForm,
    /// The value element's local name when the form was [`PlaintextForm::ValueElement`].
    pub value_element: Option<String>,
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn b64_decode(text: &str) -> Result<Vec<u8>, XmlEncError> {
    let compact: String = text.chars().filter(|c| !is_xml_space(*c)).collect();
    if compact.len() > MAX_CIPHER_OCTETS.div_ceil(3) * 4 {
        return Err(XmlEncError::Oversize(MAX_CIPHER_OCTETS));
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| XmlEncError::JunkBase64)
}

/// The one `xenc:EncryptedData` child of an encrypted element.
fn the_encrypted_data(holder: &Element) -> Result<&Element, XmlEncError> {
    let mut found: Option<&Element> = None;
    for n in &holder.children {
        match n {
            Node::Text(t) if t.chars().all(is_xml_space) => {}
            Node::Text(_) => return Err(XmlEncError::Unexpected("text".into())),
            Node::Element(e) if e.is(XMLENC_NS, "EncryptedData") => {
                if found.is_some() {
                    return Err(XmlEncError::TwoEncryptedData);
                }
                found = Some(e);
            }
            Node::Element(e) => return Err(XmlEncError::Unexpected(format!("<{}>", e.local))),
        }
    }
    found.ok_or(XmlEncError::NoEncryptedData)
}

/// The parts of an `EncryptedData`, checked.
struct Parsed {
    csk_id: CskId,
    cipher: Vec<u8>,
}

fn parse_encrypted_data(ed: &Element) -> Result<Parsed, XmlEncError> {
    match ed.get_attr("Type") {
        None | Some(TYPE_CONTENT) => {}
        Some(t) => return Err(XmlEncError::UnsupportedType(t.chars().take(80).collect())),
    }
    if !ed.only_whitespace_text() {
        return Err(XmlEncError::Unexpected("text".into()));
    }
    let (mut method, mut key_info, mut cipher_data) = (None, None, None);
    for e in ed.elements() {
        let slot = if e.is(XMLENC_NS, "EncryptionMethod") {
            &mut method
        } else if e.is(DSIG_NS, "KeyInfo") {
            &mut key_info
        } else if e.is(XMLENC_NS, "CipherData") {
            &mut cipher_data
        } else if e.is(XMLENC_NS, "EncryptionProperties") {
            continue;
        } else {
            return Err(XmlEncError::Unexpected(format!("<{}>", e.local)));
        };
        if slot.replace(e).is_some() {
            return Err(XmlEncError::Unexpected(format!("second <{}>", e.local)));
        }
    }
    let method = method.ok_or(XmlEncError::NoEncryptionMethod)?;
    let alg = method.get_attr("Algorithm").unwrap_or("");
    if alg != AES128_GCM {
        return Err(XmlEncError::WrongAlgorithm(alg.chars().take(120).collect()));
    }
    if method.elements().next().is_some() || !method.only_whitespace_text() {
        return Err(XmlEncError::Unexpected(
            "EncryptionMethod parameters".into(),
        ));
    }
    let key_info = key_info.ok_or(XmlEncError::NoKeyName)?;
    let mut names = key_info.elements().filter(|e| e.is(DSIG_NS, "KeyName"));
    let key_name = names.next().ok_or(XmlEncError::NoKeyName)?;
    if names.next().is_some() {
        return Err(XmlEncError::Unexpected("second <KeyName>".into()));
    }
    let name_text = key_name.text_content();
    let csk_id = CskId::from_key_name(&name_text)
        .map_err(|_| XmlEncError::BadKeyName(name_text.trim().chars().take(40).collect()))?;
    let cipher_data = cipher_data.ok_or(XmlEncError::NoCipherValue)?;
    if cipher_data
        .elements()
        .any(|e| e.is(XMLENC_NS, "CipherReference"))
    {
        return Err(XmlEncError::CipherReference);
    }
    let mut values = cipher_data
        .elements()
        .filter(|e| e.is(XMLENC_NS, "CipherValue"));
    let value = values.next().ok_or(XmlEncError::NoCipherValue)?;
    if values.next().is_some() || value.elements().next().is_some() {
        return Err(XmlEncError::Unexpected("CipherValue structure".into()));
    }
    let cipher = b64_decode(&value.text_content())?;
    if cipher.len() > MAX_CIPHER_OCTETS {
        return Err(XmlEncError::Oversize(MAX_CIPHER_OCTETS));
    }
    if cipher.len() < IV_LEN + TAG_LEN {
        return Err(XmlEncError::TooShort);
    }
    Ok(Parsed { csk_id, cipher })
}

fn gcm_key(key: &XmlKey) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key.octets()).expect("a 16-octet AES-128 key"))
}

fn decrypt(key: &XmlKey, cipher: &[u8]) -> Result<Vec<u8>, XmlEncError> {
    let (iv, rest) = cipher.split_at(IV_LEN);
    let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| XmlEncError::TooShort)?;
    let mut buf = rest.to_vec();
    let plain = gcm_key(key)
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .map_err(|_| XmlEncError::Decrypt)?;
    Ok(plain.to_vec())
}

/// Opens the content of an encrypted element (`holder` is e.g. `<mcptt-access-token
/// type="Encrypted">`); `value_prefix` is the service name (`mcptt`), whose `String`, `URI`
/// or `Boolean` element may wrap the value.
pub fn open_element(
    holder: &Element,
    value_prefix: &str,
    keys: &dyn XmlKeys,
) -> Result<Opened, XmlEncError> {
    let parsed = parse_encrypted_data(the_encrypted_data(holder)?)?;
    let key = keys
        .xml_key(parsed.csk_id, KeyPurpose::Confidentiality)
        .ok_or(XmlEncError::UnknownKeyName(parsed.csk_id))?;
    let plain = decrypt(&key, &parsed.cipher)?;
    let text = String::from_utf8(plain).map_err(|_| XmlEncError::BadPlaintext("not UTF-8"))?;
    let trimmed = text.trim_matches(is_xml_space);
    if trimmed.is_empty() {
        return Err(XmlEncError::BadPlaintext("empty"));
    }
    if trimmed.starts_with('<') {
        let limits = Limits {
            max_bytes: MAX_CIPHER_OCTETS,
            max_depth: 2,
            max_nodes: 4,
            allow_unbound_prefixes: true,
        };
        let el = xml::parse(trimmed, limits)
            .map_err(|_| XmlEncError::BadPlaintext("not a value element"))?;
        let suffix = el.local.strip_prefix(value_prefix).unwrap_or("");
        if !matches!(suffix, "String" | "URI" | "Boolean") {
            return Err(XmlEncError::BadPlaintext(
                "not a String, URI or Boolean value element",
            ));
        }
        if el.elements().next().is_some() {
            return Err(XmlEncError::BadPlaintext(
                "value element with child elements",
            ));
        }
        let value = el.text_content().trim_matches(is_xml_space).to_owned();
        if value.is_empty() {
            return Err(XmlEncError::BadPlaintext("empty value element"));
        }
        return Ok(Opened {
            csk_id: parsed.csk_id,
            value,
            form: PlaintextForm::ValueElement,
            value_element: Some(el.local),
        });
    }
    if trimmed.contains(['<', '&']) {
        return Err(XmlEncError::BadPlaintext("markup in a bare value"));
    }
    Ok(Opened {
        csk_id: parsed.csk_id,
        value: trimmed.to_owned(),
        form: PlaintextForm::Bare,
        value_element: None,
    })
}

/// Opens the one `type="Encrypted"` element whose local name is `local` (e.g.
/// `mcptt-access-token`) in the MC info body of service `svc` (root `<{svc}info>`). The body is
/// read with the same bounds as [`reveal_info`]; the element must appear once.
pub fn open_in_body(
    body: &[u8],
    svc: &str,
    local: &str,
    keys: &dyn XmlKeys,
) -> Result<Opened, XmlEncError> {
    let root = xml::parse_bytes(body, Limits::default())?;
    if root.local != format!("{svc}info") {
        return Err(XmlEncError::WrongRoot(
            root.local.chars().take(60).collect(),
        ));
    }
    let mut found: Vec<&Element> = Vec::new();
    find_all(&root, local, &mut found);
    match found.as_slice() {
        [holder] if holder.get_attr("type") == Some("Encrypted") => open_element(holder, svc, keys),
        [_] => Err(XmlEncError::Unexpected(format!(
            "<{local}> is not type=\"Encrypted\""
        ))),
        [] => Err(XmlEncError::Unexpected(format!("no <{local}>"))),
        _ => Err(XmlEncError::Unexpected(format!("<{local}> twice"))),
    }
}

fn find_all<'e>(el: &'e Element, local: &str, out: &mut Vec<&'e Element>) {
    for c in el.elements() {
        if c.local == local {
            out.push(c);
        } else {
            find_all(c, local, out);
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `xenc:EncryptedData` for `value` (the content of an element whose value element is
/// `value_element`, e.g. `mcpttString`) under `csk_id`'s confidentiality `key`, with `iv`
/// (12 random octets, never reused under one key).
pub fn encrypted_data(
    value: &str,
    form: PlaintextForm,
    value_element: &str,
    csk_id: CskId,
    key: &XmlKey,
    iv: [u8; IV_LEN],
) -> Element {
    let plain = match form {
        PlaintextForm::Bare => value.to_owned(),
        PlaintextForm::ValueElement => {
            format!("<{value_element}>{}</{value_element}>", escape(value))
        }
    };
    let mut buf = plain.into_bytes();
    gcm_key(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buf)
        .expect("AES-GCM sealing of a bounded buffer");
    let mut cipher = iv.to_vec();
    cipher.extend_from_slice(&buf);
    let x = Some("xenc");
    let ds = Some("ds");
    Element::new(x, "EncryptedData", Some(XMLENC_NS))
        .declare(x, XMLENC_NS)
        .attr("Type", TYPE_CONTENT)
        .child(Element::new(x, "EncryptionMethod", Some(XMLENC_NS)).attr("Algorithm", AES128_GCM))
        .child(
            Element::new(ds, "KeyInfo", Some(DSIG_NS))
                .declare(ds, DSIG_NS)
                .child(Element::new(ds, "KeyName", Some(DSIG_NS)).text(&csk_id.key_name())),
        )
        .child(
            Element::new(x, "CipherData", Some(XMLENC_NS)).child(
                Element::new(x, "CipherValue", Some(XMLENC_NS))
                    .text(&base64::engine::general_purpose::STANDARD.encode(&cipher)),
            ),
        )
}

/// An MC info body with its encrypted elements opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevealedInfo {
    /// The body with each encrypted element's content replaced by its value element and its
    /// `type` set to `Normal`: readable by a reader that knows nothing of clause 9.
    pub xml: String,
    /// The local names of the elements that were encrypted, in document order.
    pub opened: Vec<String>,
    /// The CSK they were all encrypted under (`None` when nothing was encrypted).
    pub csk_id: Option<CskId>,
}

fn value_element_for(holder_local: &str, svc: &str) -> String {
    if holder_local.ends_with("-request-uri") {
        format!("{svc}URI")
    } else {
        format!("{svc}String")
    }
}

/// Opens every `type="Encrypted"` element of the MC info body of service `svc` (`mcptt`,
/// `mcvideo`, `mcdata`; root `<{svc}info>`). All must be under one CSK.
pub fn reveal_info(
    body: &[u8],
    svc: &str,
    keys: &dyn XmlKeys,
) -> Result<RevealedInfo, XmlEncError> {
    let mut root = xml::parse_bytes(body, Limits::default())?;
    if root.local != format!("{svc}info") {
        return Err(XmlEncError::WrongRoot(
            root.local.chars().take(60).collect(),
        ));
    }
    let mut opened = Vec::new();
    let mut csk_id = None;
    reveal_in(&mut root, svc, keys, &mut opened, &mut csk_id)?;
    Ok(RevealedInfo {
        xml: root.to_xml(),
        opened,
        csk_id,
    })
}

fn reveal_in(
    el: &mut Element,
    svc: &str,
    keys: &dyn XmlKeys,
    opened: &mut Vec<String>,
    csk_id: &mut Option<CskId>,
) -> Result<(), XmlEncError> {
    for n in &mut el.children {
        let Node::Element(child) = n else { continue };
        let encrypted = child
            .attrs
            .iter()
            .any(|a| a.prefix.is_none() && a.local == "type" && a.value == "Encrypted");
        if !encrypted {
            reveal_in(child, svc, keys, opened, csk_id)?;
            continue;
        }
        let o = open_element(child, svc, keys)?;
        match *csk_id {
            Some(prev) if prev != o.csk_id => return Err(XmlEncError::MixedCsks(prev, o.csk_id)),
            _ => *csk_id = Some(o.csk_id),
        }
        let local = o
            .value_element
            .unwrap_or_else(|| value_element_for(&child.local, svc));
        let value =
            Element::new(child.prefix.as_deref(), &local, child.ns.as_deref()).text(&o.value);
        child.children = vec![Node::Element(value)];
        for a in &mut child.attrs {
            if a.prefix.is_none() && a.local == "type" {
                a.value = "Normal".into();
            }
        }
        opened.push(child.local.clone());
    }
    Ok(())
}

/// Encrypts the content of the elements named in `locals` (e.g. `mcptt-access-token`) of an
/// MC info body under `csk_id`'s confidentiality `key`; each gets a fresh IV from `next_iv`.
/// An element that is already encrypted or absent is left as it is.
pub fn protect_info(
    body: &[u8],
    svc: &str,
    locals: &[&str],
    form: PlaintextForm,
    csk_id: CskId,
    key: &XmlKey,
    next_iv: &mut dyn FnMut() -> [u8; IV_LEN],
) -> Result<String, XmlEncError> {
    let mut root = xml::parse_bytes(body, Limits::default())?;
    if root.local != format!("{svc}info") {
        return Err(XmlEncError::WrongRoot(
            root.local.chars().take(60).collect(),
        ));
    }
    protect_in(&mut root, svc, locals, form, csk_id, key, next_iv);
    Ok(root.to_xml())
}

fn protect_in(
    el: &mut Element,
    svc: &str,
    locals: &[&str],
    form: PlaintextForm,
    csk_id: CskId,
    key: &XmlKey,
    next_iv: &mut dyn FnMut() -> [u8; IV_LEN],
) {
    for n in &mut el.children {
        let Node::Element(child) = n else { continue };
        if !locals.contains(&child.local.as_str()) || child.get_attr("type") == Some("Encrypted") {
            protect_in(child, svc, locals, form, csk_id, key, next_iv);
            continue;
        }
        let wanted = value_element_for(&child.local, svc);
        let value = child
            .elements()
            .find(|e| e.local == wanted)
            .map(|e| e.text_content())
            .unwrap_or_else(|| child.text_content());
        let value = value.trim_matches(is_xml_space).to_owned();
        let ed = encrypted_data(&value, form, &wanted, csk_id, key, next_iv());
        child.children = vec![Node::Element(ed)];
        child
            .attrs
            .retain(|a| !(a.prefix.is_none() && a.local == "type"));
        child.attrs.push(xml::Attr {
            prefix: None,
            local: "type".into(),
            ns: None,
            value: "Encrypted".into(),
        });
    }
}
