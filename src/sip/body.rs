//! Bodies: Content-Type (RFC 3261 20.15 via `mime`), `multipart/mixed` (RFC 2046 5.1), the MC
//! info bodies (`application/vnd.3gpp.{mcptt,mcvideo,mcdata}-info+xml`, TS 24.379 F.1,
//! TS 24.281, TS 24.282), `application/poc-settings+xml` (RFC 4354, TS 24.379 7.4.1.2.2) and the
//! `message/sip` body of a third-party REGISTER (TS 24.229 5.4.1.7).
//!
//! XML is read with quick-xml as a stream of events: entity references are never expanded
//! (only the five predefined ones and character references are resolved, anything else is an
//! error), a DOCTYPE is refused, nesting is limited to [`MAX_XML_DEPTH`], size to
//! [`MAX_XML_SIZE`], and the document must close every element it opens. Elements are matched
//! on their **local name** (the namespace prefix is ignored), under a root whose local name is
//! the one the body type promises (`mcpttinfo`, `poc-settings`, …): the namespace URIs are only
//! `[I]`-verified in the dossier (c.6) and clients differ in prefixes, so a namespace check would
//! refuse real clients without making the token any more trustworthy (the token is verified on
//! its own).

use std::borrow::Cow;
use std::fmt;

use mcx_model::{Service, ServiceSet, Settings};
use quick_xml::events::Event;
use quick_xml::Reader;

use super::framing::frame_datagram;
use super::parse::{self, header_lines, header_params, split_commas, Method, SipMessage};

/// Deepest XML nesting accepted in an info or settings body.
pub const MAX_XML_DEPTH: usize = 32;
/// Largest XML body accepted (bytes).
pub const MAX_XML_SIZE: usize = 32 * 1024;
/// Most parts accepted in one `multipart/mixed` body.
pub const MAX_PARTS: usize = 16;

/// Why a body could not be used (the machine answers 400 with this text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError(pub String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

fn err<T>(s: impl Into<String>) -> Result<T, BodyError> {
    Err(BodyError(s.into()))
}

/// The body types the edge reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/vnd.3gpp.{mcptt,mcvideo,mcdata}-info+xml`.
    Info(Service),
    /// `application/poc-settings+xml`.
    PocSettings,
    /// `message/sip`.
    MessageSip,
    /// `multipart/mixed` with its boundary.
    Multipart,
    /// Parts of a protected body set that the edge does not read yet (TS 33.180 clause 9):
    /// `application/vnd.3gpp.mcptt-signed+xml` (and twins) and `application/mikey`.
    ProtectionPart,
    /// Anything else.
    Other,
}

/// Parses a Content-Type value with `mime`.
pub fn content_type(value: &str) -> Result<mime::Mime, BodyError> {
    value
        .trim()
        .parse::<mime::Mime>()
        .map_err(|e| BodyError(format!("bad Content-Type {value:?}: {e}")))
}

/// What kind of body a media type names.
pub fn body_kind(m: &mime::Mime) -> BodyKind {
    let essence = m.essence_str();
    match essence {
        "application/vnd.3gpp.mcptt-info+xml" => BodyKind::Info(Service::Mcptt),
        "application/vnd.3gpp.mcvideo-info+xml" => BodyKind::Info(Service::Mcvideo),
        "application/vnd.3gpp.mcdata-info+xml" => BodyKind::Info(Service::Mcdata),
        "application/poc-settings+xml" => BodyKind::PocSettings,
        "message/sip" => BodyKind::MessageSip,
        "multipart/mixed" => BodyKind::Multipart,
        "application/mikey"
        | "application/vnd.3gpp.mcptt-signed+xml"
        | "application/vnd.3gpp.mcvideo-signed+xml"
        | "application/vnd.3gpp.mcdata-signed+xml" => BodyKind::ProtectionPart,
        _ => BodyKind::Other,
    }
}

/// One body part (or a whole single-part body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The part's Content-Type value (`text/plain` when the part has none, RFC 2046 5.1).
    pub content_type: String,
    /// The part's own headers, (name, unfolded value).
    pub headers: Vec<(String, String)>,
    /// The part's content.
    pub body: &'a [u8],
}

/// Splits a `multipart/mixed` body (RFC 2046 5.1.1): the preamble before the first delimiter
/// and the epilogue after the close delimiter are ignored, as is transport padding (linear
/// white space) after a boundary. The first delimiter may start the body; every later one is
/// `CRLF--boundary`. A missing close delimiter is an error.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, BodyError> {
    if boundary.is_empty() || boundary.len() > 70 {
        return err("multipart boundary must be 1 to 70 characters (RFC 2046 5.1.1)");
    }
    let delim = format!("\r\n--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    // The first delimiter may sit at the very start (no preceding CRLF).
    let mut pos = if body.starts_with(&delim.as_bytes()[2..]) {
        delim.len() - 2
    } else {
        match finder.find(body) {
            Some(i) => i + delim.len(),
            None => return err("multipart body has no boundary delimiter"),
        }
    };
    let mut parts = Vec::new();
    loop {
        // After a delimiter: `--` closes, else transport padding then CRLF.
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        while pos < body.len() && (body[pos] == b' ' || body[pos] == b'\t') {
            pos += 1;
        }
        if !body[pos..].starts_with(b"\r\n") {
            return err("multipart delimiter not followed by CRLF");
        }
        pos += 2;
        let Some(next) = finder.find(&body[pos..]) else {
            return err("multipart body has no close delimiter");
        };
        if parts.len() == MAX_PARTS {
            return err(format!("more than {MAX_PARTS} body parts"));
        }
        parts.push(part(&body[pos..pos + next])?);
        pos += next + delim.len();
    }
}

/// Reads one body part: headers, an empty line, content (RFC 2046 5.1.1 `body-part`).
fn part(raw: &[u8]) -> Result<Part<'_>, BodyError> {
    let (head, body) = if let Some(rest) = raw.strip_prefix(b"\r\n") {
        ("", rest)
    } else {
        match memchr::memmem::find(raw, b"\r\n\r\n") {
            Some(i) => {
                let head = std::str::from_utf8(&raw[..i])
                    .map_err(|_| BodyError("body part headers are not UTF-8".into()))?;
                (head, &raw[i + 4..])
            }
            None => return err("body part without an empty line after its headers"),
        }
    };
    let headers = if head.is_empty() {
        Vec::new()
    } else {
        header_lines(head).map_err(|e| BodyError(format!("body part: {e}")))?
    };
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "Content-Type")
        .map_or_else(|| "text/plain".to_owned(), |(_, v)| v.clone());
    Ok(Part {
        content_type,
        headers,
        body,
    })
}

/// The parts of a body: the parts of a `multipart/mixed`, or the body itself as one part.
pub fn parts<'a>(content_type_value: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, BodyError> {
    let m = content_type(content_type_value)?;
    if body_kind(&m) == BodyKind::Multipart {
        let Some(boundary) = m.get_param(mime::BOUNDARY) else {
            return err("multipart/mixed without a boundary");
        };
        split_multipart(body, boundary.as_str())
    } else {
        Ok(vec![Part {
            content_type: content_type_value.to_owned(),
            headers: Vec::new(),
            body,
        }])
    }
}

/// A value of an info element of type `contentType` (TS 24.379 F.1.2, dossier R-26).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InfoValue {
    /// `type="Normal"` (or no `type`): the value in clear.
    Plain(String),
    /// `type="Encrypted"`: a TS 33.180 clause 9 protected element, not readable here yet.
    Protected(ProtectedElement),
}

/// What an `Encrypted` element carried (an xmlenc `EncryptedData`, dossier R-29), kept so that
/// TS 33.180 clause 9 decryption with CSK-derived keys can be added behind [`InfoValue::reveal`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtectedElement {
    /// `EncryptionMethod/@Algorithm`.
    pub algorithm: Option<String>,
    /// `KeyInfo/KeyName` (base64 CSK-ID).
    pub key_name: Option<String>,
    /// `CipherData/CipherValue` (base64 IV ‖ ciphertext ‖ tag).
    pub cipher_value: Option<String>,
}

/// Why a protected value cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotReadable;

impl InfoValue {
    /// The value in clear. Today a protected value is never readable; TS 33.180 clause 9
    /// decryption slots in here.
    pub fn reveal(&self) -> Result<&str, NotReadable> {
        match self {
            InfoValue::Plain(s) => Ok(s),
            InfoValue::Protected(_) => Err(NotReadable),
        }
    }

    /// Whether the element was protected (`type="Encrypted"`).
    pub fn is_protected(&self) -> bool {
        matches!(self, InfoValue::Protected(_))
    }
}

/// The elements of an MC info body the participating function uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McInfo {
    /// Which service's body (from its media type).
    pub service: Service,
    /// `<mcptt-access-token>` (or twin) `<mcpttString>`.
    pub access_token: Option<InfoValue>,
    /// `<mcptt-client-id>` (or twin) `<mcpttString>`.
    pub client_id: Option<InfoValue>,
    /// `<mcptt-request-uri>` (or twin) `<mcpttURI>`.
    pub request_uri: Option<InfoValue>,
}

/// Which field an element feeds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Token,
    ClientId,
    RequestUri,
}

/// A bounded XML event stream: DOCTYPE refused, depth and size capped, entities not expanded,
/// balanced close required. Calls `on` for each start (`Some(name)`, attributes via `attr`),
/// each end (`None`) and text.
struct Xml<'a> {
    reader: Reader<&'a [u8]>,
    depth: usize,
    root_seen: bool,
}

enum XmlEvent<'a> {
    Start {
        local: String,
        type_attr: Option<String>,
        algorithm: Option<String>,
        id: Option<String>,
        empty: bool,
    },
    End,
    Text(Cow<'a, str>),
}

impl<'a> Xml<'a> {
    fn new(xml: &'a str) -> Result<Self, BodyError> {
        if xml.len() > MAX_XML_SIZE {
            return err(format!("XML body over {MAX_XML_SIZE} bytes"));
        }
        let mut reader = Reader::from_str(xml);
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        Ok(Xml {
            reader,
            depth: 0,
            root_seen: false,
        })
    }

    /// The next event, or `None` at a clean end of document.
    fn next(&mut self) -> Result<Option<XmlEvent<'a>>, BodyError> {
        loop {
            let ev = self
                .reader
                .read_event()
                .map_err(|e| BodyError(format!("XML: {e}")))?;
            match ev {
                Event::DocType(_) => return err("XML with a DOCTYPE is refused"),
                Event::Start(_) | Event::Empty(_) if self.depth == 0 && self.root_seen => {
                    return err("XML has more than one root element");
                }
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let empty = matches!(ev, Event::Empty(_));
                    let local = s.local_name().as_ref().to_owned();
                    let mut type_attr = None;
                    let mut algorithm = None;
                    let mut id = None;
                    for a in s.attributes() {
                        let a = a.map_err(|e| BodyError(format!("XML attribute: {e}")))?;
                        let name = a.key.local_name();
                        if name.as_ref() == "type" {
                            type_attr = Some(a.value.into_owned());
                        } else if name.as_ref() == "Algorithm" {
                            algorithm = Some(a.value.into_owned());
                        } else if name.as_ref() == "id" {
                            id = Some(a.value.into_owned());
                        }
                    }
                    self.root_seen = true;
                    if !empty {
                        self.depth += 1;
                        if self.depth > MAX_XML_DEPTH {
                            return err(format!("XML nested deeper than {MAX_XML_DEPTH}"));
                        }
                    }
                    return Ok(Some(XmlEvent::Start {
                        local,
                        type_attr,
                        algorithm,
                        id,
                        empty,
                    }));
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(Some(XmlEvent::End));
                }
                Event::Text(t) => {
                    let text = t.xml10_content();
                    if self.depth == 0 && !text.trim().is_empty() {
                        return err("text outside the root element");
                    }
                    return Ok(Some(XmlEvent::Text(text)));
                }
                Event::CData(c) => return Ok(Some(XmlEvent::Text(c.into_inner()))),
                Event::GeneralRef(r) => {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        return Ok(Some(XmlEvent::Text(Cow::Owned(c.to_string()))));
                    }
                    let name = r.xml10_content();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => return Ok(Some(XmlEvent::Text(Cow::Borrowed(s)))),
                        None => return err(format!("undefined XML entity &{name};")),
                    }
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => {
                    if self.depth != 0 {
                        return err("XML ends before its elements are closed");
                    }
                    if !self.root_seen {
                        return err("XML has no root element");
                    }
                    return Ok(None);
                }
            }
        }
    }
}

fn xml_text(body: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(body).map_err(|_| BodyError("XML body is not UTF-8".into()))
}

/// Reads an MC info body of `service` (root `<mcpttinfo>`, `<mcvideoinfo>` or `<mcdatainfo>`).
///
/// `<{svc}-access-token>` and `<{svc}-client-id>` take their value from a `<{svc}String>` child,
/// `<{svc}-request-uri>` from a `<{svc}URI>` child; `type="Encrypted"` makes the value
/// [`InfoValue::Protected`]. A repeated element is an error.
pub fn read_info(service: Service, body: &[u8]) -> Result<McInfo, BodyError> {
    let svc = service.name();
    let root = format!("{svc}info");
    let (token_el, client_el, uri_el) = (
        format!("{svc}-access-token"),
        format!("{svc}-client-id"),
        format!("{svc}-request-uri"),
    );
    let (string_el, uri_value_el) = (format!("{svc}String"), format!("{svc}URI"));
    let mut xml = Xml::new(xml_text(body)?)?;
    let mut info = McInfo {
        service,
        access_token: None,
        client_id: None,
        request_uri: None,
    };
    // The field being read: (field, depth of its element, protected?, collected value).
    let mut current: Option<(Field, usize, Option<ProtectedElement>, Option<String>)> = None;
    // Inside the value child (`<mcpttString>`/`<mcpttURI>`) or a protected leaf we record.
    let mut capture: Option<&'static str> = None;
    let mut first = true;
    while let Some(ev) = xml.next()? {
        match ev {
            XmlEvent::Start {
                local,
                type_attr,
                algorithm,
                empty,
                ..
            } => {
                if first {
                    if local != root {
                        return err(format!("root element <{local}>, expected <{root}>"));
                    }
                    first = false;
                    continue;
                }
                if let Some((field, depth, prot, _)) = &mut current {
                    let child_depth = *depth + 1;
                    let cur_depth = if empty { xml.depth + 1 } else { xml.depth };
                    if let Some(p) = prot {
                        match local.as_str() {
                            "EncryptionMethod" if algorithm.is_some() => p.algorithm = algorithm,
                            "KeyName" if !empty => capture = Some("KeyName"),
                            "CipherValue" if !empty => capture = Some("CipherValue"),
                            _ => {}
                        }
                    } else if cur_depth == child_depth && !empty {
                        let want = match field {
                            Field::RequestUri => &uri_value_el,
                            _ => &string_el,
                        };
                        if local == *want {
                            capture = Some("value");
                        }
                    }
                    continue;
                }
                let field = if local == token_el {
                    Field::Token
                } else if local == client_el {
                    Field::ClientId
                } else if local == uri_el {
                    Field::RequestUri
                } else {
                    continue;
                };
                let slot_taken = match field {
                    Field::Token => info.access_token.is_some(),
                    Field::ClientId => info.client_id.is_some(),
                    Field::RequestUri => info.request_uri.is_some(),
                };
                if slot_taken {
                    return err(format!("<{local}> appears twice"));
                }
                let prot = match type_attr.as_deref() {
                    None | Some("Normal") => None,
                    Some("Encrypted") => Some(ProtectedElement::default()),
                    Some(other) => return err(format!("<{local}> has type={other:?}")),
                };
                if empty {
                    // `<… type="Encrypted"/>`: protected but without its EncryptedData; the
                    // opener says so (a failed protection, 403/101), not the body reader.
                    let Some(p) = prot else {
                        return err(format!("<{local}> is empty"));
                    };
                    let v = InfoValue::Protected(p);
                    match field {
                        Field::Token => info.access_token = Some(v),
                        Field::ClientId => info.client_id = Some(v),
                        Field::RequestUri => info.request_uri = Some(v),
                    }
                    continue;
                }
                current = Some((field, xml.depth, prot, None));
            }
            XmlEvent::Text(t) => {
                let (Some(what), Some((_, _, prot, value))) = (capture, &mut current) else {
                    continue;
                };
                let slot = match (what, prot) {
                    ("KeyName", Some(p)) => p.key_name.get_or_insert_with(String::new),
                    ("CipherValue", Some(p)) => p.cipher_value.get_or_insert_with(String::new),
                    _ => value.get_or_insert_with(String::new),
                };
                slot.push_str(&t);
            }
            XmlEvent::End => {
                capture = None;
                if let Some((field, depth, prot, value)) = current.take() {
                    if xml.depth >= depth {
                        current = Some((field, depth, prot, value));
                        continue;
                    }
                    let v = match prot {
                        Some(mut p) => {
                            trim_in_place(&mut p.key_name);
                            trim_in_place(&mut p.cipher_value);
                            InfoValue::Protected(p)
                        }
                        None => match value.as_deref().map(str::trim) {
                            Some(v) if !v.is_empty() => InfoValue::Plain(v.to_owned()),
                            _ => {
                                let name = match field {
                                    Field::Token => &token_el,
                                    Field::ClientId => &client_el,
                                    Field::RequestUri => &uri_el,
                                };
                                return err(format!("<{name}> has no value"));
                            }
                        },
                    };
                    match field {
                        Field::Token => info.access_token = Some(v),
                        Field::ClientId => info.client_id = Some(v),
                        Field::RequestUri => info.request_uri = Some(v),
                    }
                }
            }
        }
    }
    Ok(info)
}

fn trim_in_place(s: &mut Option<String>) {
    if let Some(v) = s {
        *v = v.trim().to_owned();
    }
}

/// A client's `application/poc-settings+xml` (RFC 4354; TS 24.379 7.4.1.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PocSettings {
    /// `<entity id>`: the MC client's instance ID URN.
    pub entity_id: Option<String>,
    /// The settings the participating function keeps.
    pub settings: Settings,
}

/// Reads a `poc-settings` document: the first `<entity>`'s `id` and its `<answer-mode>` (automatic|manual),
/// `<user-profile-index>` (inside `<selected-user-profile-index>`) and `<multiplex-support>`.
pub fn read_poc_settings(body: &[u8]) -> Result<PocSettings, BodyError> {
    let mut xml = Xml::new(xml_text(body)?)?;
    let mut out = PocSettings::default();
    let mut first = true;
    let mut entity_depth: Option<usize> = None;
    let mut entities = 0;
    let mut capture: Option<String> = None;
    let mut text = String::new();
    while let Some(ev) = xml.next()? {
        match ev {
            XmlEvent::Start {
                local, id, empty, ..
            } => {
                if first {
                    if local != "poc-settings" {
                        return err(format!("root element <{local}>, expected <poc-settings>"));
                    }
                    first = false;
                    continue;
                }
                if local == "entity" && entity_depth.is_none() {
                    entities += 1;
                    if entities == 1 {
                        out.entity_id = id;
                    }
                    if entities == 1 && !empty {
                        entity_depth = Some(xml.depth);
                    }
                    continue;
                }
                if entity_depth.is_some() && !empty {
                    capture = Some(local);
                    text.clear();
                }
            }
            XmlEvent::Text(t) => {
                if capture.is_some() {
                    text.push_str(&t);
                }
            }
            XmlEvent::End => {
                if let Some(name) = capture.take() {
                    let v = text.trim();
                    let s = &mut out.settings;
                    match name.as_str() {
                        "answer-mode" => {
                            s.answer_mode_automatic = Some(match v {
                                "automatic" => true,
                                "manual" => false,
                                _ => return err(format!("answer-mode {v:?}")),
                            })
                        }
                        "user-profile-index" => {
                            s.user_profile_index = Some(
                                v.parse()
                                    .map_err(|_| BodyError(format!("user-profile-index {v:?}")))?,
                            )
                        }
                        "multiplex-support" => {
                            s.multiplex_support = Some(match v {
                                "true" | "1" => true,
                                "false" | "0" => false,
                                _ => return err(format!("multiplex-support {v:?}")),
                            })
                        }
                        _ => {}
                    }
                }
                if entity_depth.is_some_and(|d| xml.depth < d) {
                    entity_depth = None;
                }
            }
        }
    }
    Ok(out)
}

/// The MC services a Contact (or Accept-Contact) value names by feature tag: `+g.3gpp.mcptt`,
/// `+g.3gpp.mcvideo`, `+g.3gpp.mcdata` (and its `.sds`/`.fd` sub-tags), and the ICSI values in
/// `+g.3gpp.icsi-ref` (percent-encoded, comma-separated, TS 24.229 7.9.2).
pub fn feature_tag_services(value: &str) -> ServiceSet {
    let mut set = ServiceSet::EMPTY;
    for (name, v) in header_params(value) {
        match name.as_str() {
            "+g.3gpp.mcptt" => set.insert(Service::Mcptt),
            "+g.3gpp.mcvideo" => set.insert(Service::Mcvideo),
            "+g.3gpp.mcdata" | "+g.3gpp.mcdata.sds" | "+g.3gpp.mcdata.fd" => {
                set.insert(Service::Mcdata)
            }
            "+g.3gpp.icsi-ref" => {
                if let Some(v) = v {
                    for icsi in v.split(',') {
                        if let Some(s) = icsi_service(&percent_decode(icsi.trim())) {
                            set.insert(s);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    set
}

/// The service an ICSI names (`urn:urn-7:3gpp-service.ims.icsi.mcptt`, dossier c.6).
pub fn icsi_service(icsi: &str) -> Option<Service> {
    let rest = icsi
        .trim()
        .to_ascii_lowercase()
        .strip_prefix("urn:urn-7:3gpp-service.ims.icsi.")?
        .to_owned();
    Service::ALL.into_iter().find(|s| rest == s.name())
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One MC info body found in the UE's REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedInfo {
    /// The service of the info body.
    pub service: Service,
    /// The access token, if any.
    pub access_token: Option<InfoValue>,
    /// The MC client ID, if any.
    pub client_id: Option<InfoValue>,
}

/// What the `message/sip` body of a third-party REGISTER says about the UE (TS 24.229
/// 5.4.1.7, TS 24.379 7.3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedRegister {
    /// MC services named by the feature tags of the UE REGISTER's Contacts.
    pub services: ServiceSet,
    /// The info bodies it carried.
    pub infos: Vec<EmbeddedInfo>,
    /// Parts that could not be read (for the log).
    pub notes: Vec<String>,
}

/// Reads the UE's REGISTER from a `message/sip` body. The S-CSCF may include the UE's REGISTER
/// and the 200 OK it got (TS 24.229 5.4.1.7A); responses are skipped by the caller.
pub fn read_message_sip(body: &[u8]) -> Result<EmbeddedRegister, BodyError> {
    let frame = frame_datagram(body).map_err(|e| BodyError(format!("message/sip: {e}")))?;
    let req = match parse::parse_embedded(&frame) {
        Ok(SipMessage::Request(r)) if r.method == Method::Register => r,
        Ok(SipMessage::Request(r)) => {
            return err(format!("message/sip carries a {} not a REGISTER", r.method))
        }
        Ok(SipMessage::Response(_)) => return err("message/sip carries a response"),
        Err(e) => return err(format!("message/sip: {e}")),
    };
    let mut out = EmbeddedRegister::default();
    for c in &req.contact {
        for s in feature_tag_services(c).iter() {
            out.services.insert(s);
        }
    }
    if req.body.is_empty() {
        return Ok(out);
    }
    let Some(ct) = &req.content_type else {
        out.notes
            .push("UE REGISTER body without Content-Type".into());
        return Ok(out);
    };
    for p in parts(ct, &req.body)? {
        let kind = content_type(&p.content_type).map(|m| body_kind(&m));
        if let Ok(BodyKind::Info(service)) = kind {
            match read_info(service, p.body) {
                Ok(info) => out.infos.push(EmbeddedInfo {
                    service,
                    access_token: info.access_token,
                    client_id: info.client_id,
                }),
                Err(e) => out.notes.push(format!("{service} info body: {e}")),
            }
        }
    }
    Ok(out)
}

/// The values of a comma-separated header, split (re-exported for the adapter).
pub(crate) fn split_list(v: &str) -> Vec<&str> {
    split_commas(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_with_preamble_padding_epilogue() {
        let body = b"preamble\r\n--b1 \t\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\n\r\ntwo\r\n--b1--\r\nepilogue";
        let p = split_multipart(body, "b1").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].body, b"one");
        assert_eq!(p[1].body, b"two");
        assert_eq!(p[1].content_type, "text/plain");
        assert!(split_multipart(b"--b1\r\n\r\none\r\n", "b1").is_err());
    }

    #[test]
    fn info_plain_and_encrypted() {
        let xml = br#"<?xml version="1.0"?><mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0"><mcptt-Params>
<mcptt-access-token type="Encrypted"><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"><xenc:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes128-gcm"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:KeyName>a2V5</ds:KeyName></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>Y2lwaGVy</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></mcptt-access-token>
<mcptt-client-id type="Normal"><mcpttString>urn:uuid:1&amp;2</mcpttString></mcptt-client-id></mcptt-Params></mcpttinfo>"#;
        let info = read_info(Service::Mcptt, xml).unwrap();
        assert_eq!(
            info.access_token,
            Some(InfoValue::Protected(ProtectedElement {
                algorithm: Some("http://www.w3.org/2009/xmlenc11#aes128-gcm".into()),
                key_name: Some("a2V5".into()),
                cipher_value: Some("Y2lwaGVy".into()),
            }))
        );
        assert_eq!(
            info.client_id,
            Some(InfoValue::Plain("urn:uuid:1&2".into()))
        );
        assert!(read_info(Service::Mcvideo, xml).is_err());
    }

    #[test]
    fn xml_guards() {
        assert!(read_info(
            Service::Mcptt,
            b"<!DOCTYPE x [<!ENTITY a \"b\">]><mcpttinfo/>"
        )
        .unwrap_err()
        .0
        .contains("DOCTYPE"));
        assert!(read_info(Service::Mcptt, b"<mcpttinfo><a>")
            .unwrap_err()
            .0
            .contains("closed"));
        assert!(read_info(Service::Mcptt, b"<mcpttinfo>&lol;</mcpttinfo>").is_err());
        let deep = format!(
            "<mcpttinfo>{}{}</mcpttinfo>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert!(read_info(Service::Mcptt, deep.as_bytes())
            .unwrap_err()
            .0
            .contains("deeper"));
    }

    #[test]
    fn poc_settings() {
        let xml = br#"<poc-settings xmlns="urn:oma:params:xml:ns:poc:poc-settings" xmlns:m="urn:3gpp:mcsSettings:1.0"><entity id="urn:uuid:c1"><am-settings><answer-mode>manual</answer-mode></am-settings><m:selected-user-profile-index><m:user-profile-index>3</m:user-profile-index></m:selected-user-profile-index><m:multiplex-support>true</m:multiplex-support></entity></poc-settings>"#;
        let s = read_poc_settings(xml).unwrap();
        assert_eq!(s.entity_id.as_deref(), Some("urn:uuid:c1"));
        assert_eq!(
            s.settings,
            Settings {
                answer_mode_automatic: Some(false),
                user_profile_index: Some(3),
                multiplex_support: Some(true)
            }
        );
    }

    #[test]
    fn feature_tags() {
        let s = feature_tag_services("<sip:u@[2001:db8::5]:5060>;+sip.instance=\"<urn:uuid:1>\";+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mcvideo,urn%3Aurn-7%3A3gpp-service.ims.icsi.mcdata\";+g.3gpp.mcptt");
        assert_eq!(s, ServiceSet::ALL);
    }
}
