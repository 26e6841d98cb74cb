//! Parsing a framed message into our own types (RFC 3261 7, 20, 25).
//!
//! This is the in-house parser chosen in `docs/sip-edge.md` over rsip 0.4 and rsipstack 0.7.14:
//! it works on the header block [`crate::sip::framing`] already delimited and checked for UTF-8,
//! unfolds continuation lines (RFC 3261 7.3.1), expands compact forms (RFC 3261 7.3.3, 20), keeps
//! every header in order, and reads typed values only for the headers the MCX server acts on.
//! URIs (sip, sips, tel, IPv6 hosts) are kept as text; [`crate::sip::uri`] compares them.

use std::fmt;

use super::framing::Frame;
use super::scan::unquoted_chars;
use super::uri;

/// A SIP request method (RFC 3261 7.1; methods are case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// REGISTER (RFC 3261).
    Register,
    /// PUBLISH (RFC 3903).
    Publish,
    /// OPTIONS (RFC 3261).
    Options,
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// MESSAGE (RFC 3428).
    Message,
    /// INFO (RFC 6086).
    Info,
    /// PRACK (RFC 3262).
    Prack,
    /// UPDATE (RFC 3311).
    Update,
    /// REFER (RFC 3515).
    Refer,
    /// Any other (extension) method token.
    Other(String),
}

impl Method {
    /// Reads a method token.
    pub fn from_token(s: &str) -> Method {
        match s {
            "REGISTER" => Method::Register,
            "PUBLISH" => Method::Publish,
            "OPTIONS" => Method::Options,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "REFER" => Method::Refer,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Register => "REGISTER",
            Method::Publish => "PUBLISH",
            Method::Options => "OPTIONS",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a response copies from its request (RFC 3261 8.2.6.2): every Via in order, From, To,
/// Call-ID and CSeq, verbatim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyTo {
    /// Via values, one per hop, in order (comma-joined Vias already split).
    pub vias: Vec<String>,
    /// The From value.
    pub from: String,
    /// The To value.
    pub to: String,
    /// The Call-ID value.
    pub call_id: String,
    /// The CSeq value (`<number> <method>`).
    pub cseq: String,
}

/// A parsed SIP request. Header values are unfolded; names are canonical (compact forms
/// expanded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipRequest {
    /// The method.
    pub method: Method,
    /// The Request-URI as written.
    pub request_uri: String,
    /// Via values, one per hop, in order.
    pub vias: Vec<String>,
    /// The `branch` parameter of the topmost Via (the server-transaction key, RFC 3261 17.2.3).
    pub top_branch: Option<String>,
    /// The From value.
    pub from: String,
    /// The To value.
    pub to: String,
    /// The Call-ID.
    pub call_id: String,
    /// The CSeq sequence number.
    pub cseq: u32,
    /// The CSeq method token.
    pub cseq_method: String,
    /// Max-Forwards (mandatory, RFC 3261 8.1.1.6).
    pub max_forwards: u32,
    /// The URIs of all P-Asserted-Identity values (RFC 3325), in order.
    pub p_asserted_identity: Vec<String>,
    /// The event-type of the `Event` header (parameters dropped), if present.
    pub event: Option<String>,
    /// `Expires` in seconds (values above 2^32-1 saturate, RFC 3261 20.19), if present.
    pub expires: Option<u32>,
    /// Every SIP-If-Match entity-tag (RFC 3903 11.3.2), in order.
    pub sip_if_match: Vec<String>,
    /// The Content-Type value, if present.
    pub content_type: Option<String>,
    /// Contact values, one per contact (comma-joined values split), in order.
    pub contact: Vec<String>,
    /// The body.
    pub body: Vec<u8>,
    /// Every header line as (canonical name, unfolded value), in order, including the ones
    /// read into the fields above.
    pub headers: Vec<(String, String)>,
}

impl SipRequest {
    /// What a response to this request copies.
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            vias: self.vias.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            call_id: self.call_id.clone(),
            cseq: format!("{} {}", self.cseq, self.cseq_method),
        }
    }

    /// All values of header `name` (case-insensitive, canonical or compact), in order, unsplit.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }
}

/// A status line (RFC 3261 7.2). The server sends no requests, so a response reaching it is
/// ignored; only the status is kept for logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipResponse {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
}

/// A parsed SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipMessage {
    /// A request.
    Request(Box<SipRequest>),
    /// A response.
    Response(SipResponse),
}

/// A message that could not be parsed or failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The status to answer with if [`ParseError::reply_to`] is set: 400, or 505 for a SIP
    /// version other than 2.0.
    pub status: u16,
    /// Why, in words fit for a reason phrase or a log line.
    pub reason: String,
    /// What a response needs, when the start line was a request and Via, From, To, Call-ID and
    /// CSeq could be read; `None` means drop the message (no response can be formed).
    pub reply_to: Option<Box<ReplyTo>>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ParseError {}

/// The canonical name for a header name, expanding compact forms (RFC 3261 7.3.3 and the IANA
/// SIP header registry) and fixing the case of the headers the server reads.
pub fn canonical_name(name: &str) -> String {
    const NAMES: &[(&str, &str)] = &[
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("f", "From"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("t", "To"),
        ("v", "Via"),
        ("o", "Event"),
        ("r", "Refer-To"),
        ("u", "Allow-Events"),
        ("x", "Session-Expires"),
        ("a", "Accept-Contact"),
        ("j", "Reject-Contact"),
        ("d", "Request-Disposition"),
        ("b", "Referred-By"),
        ("y", "Identity"),
        ("Call-ID", "Call-ID"),
        ("Contact", "Contact"),
        ("Content-Encoding", "Content-Encoding"),
        ("Content-Length", "Content-Length"),
        ("Content-Type", "Content-Type"),
        ("From", "From"),
        ("Subject", "Subject"),
        ("Supported", "Supported"),
        ("To", "To"),
        ("Via", "Via"),
        ("Event", "Event"),
        ("Refer-To", "Refer-To"),
        ("Allow-Events", "Allow-Events"),
        ("Session-Expires", "Session-Expires"),
        ("Accept-Contact", "Accept-Contact"),
        ("Reject-Contact", "Reject-Contact"),
        ("Request-Disposition", "Request-Disposition"),
        ("Referred-By", "Referred-By"),
        ("Identity", "Identity"),
        ("CSeq", "CSeq"),
        ("Max-Forwards", "Max-Forwards"),
        ("Expires", "Expires"),
        ("P-Asserted-Identity", "P-Asserted-Identity"),
        ("P-Preferred-Identity", "P-Preferred-Identity"),
        ("P-Preferred-Service", "P-Preferred-Service"),
        ("SIP-If-Match", "SIP-If-Match"),
        ("SIP-ETag", "SIP-ETag"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |(_, c)| (*c).to_owned())
}

/// RFC 3261 25.1 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// Splits a header block (start line excluded) into (canonical name, unfolded value) pairs.
/// A continuation line (starting with SP or HTAB) joins the previous value with one SP
/// (RFC 3261 7.3.1).
pub fn header_lines(lines: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in lines.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = out.last_mut() else {
                return Err("continuation line before any header".into());
            };
            let cont = line.trim_matches([' ', '\t']);
            if !cont.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(cont);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("header line without a colon: {:?}", truncate(line)));
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(format!("bad header name {:?}", truncate(name)));
        }
        if value.contains(['\r', '\n']) {
            return Err(format!("bare CR or LF in header {name}"));
        }
        out.push((
            canonical_name(name),
            value.trim_matches([' ', '\t']).to_owned(),
        ));
    }
    Ok(out)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Splits a header value at commas that are outside quoted strings and angle brackets
/// (RFC 3261 7.3.1: `field-value *(COMMA field-value)`); parts are trimmed, empty parts dropped.
pub fn split_commas(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut angle, mut start) = (false, 0);
    for (i, c) in unquoted_chars(value) {
        match c {
            '<' => angle = true,
            '>' => angle = false,
            ',' if !angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// Header parameters of a Via, From/To, Contact or Event value: the `;name[=value]` list after
/// the URI (after `>` in name-addr form, after the first token in a Via or Event). Names are
/// lower-cased; quoted values are unquoted.
pub fn header_params(value: &str) -> Vec<(String, Option<String>)> {
    let rest = params_part(value);
    if rest.is_empty() {
        return Vec::new();
    }
    split_unquoted(rest, ';')
        .into_iter()
        .filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            Some(match p.split_once('=') {
                Some((n, v)) => (
                    n.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_owned()),
                ),
                None => (p.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

/// The `;…` parameter list of a header value, from its first `;`: after the `>` closing a
/// name-addr, else the first `;` outside quotes. Empty when there is none. (It keeps its leading
/// `;`: `header_params` skips the empty piece before it.)
fn params_part(value: &str) -> &str {
    let mut angle_open = false;
    for (i, c) in unquoted_chars(value) {
        match c {
            '<' => angle_open = true,
            // A `>` that closes no `<` (not valid in a display name, RFC 3261 25.1) ends nothing.
            '>' if angle_open => {
                let rest = &value[i..];
                return find_unquoted(rest, ';').map_or("", |s| &rest[s..]);
            }
            ';' if !angle_open => return &value[i..],
            _ => {}
        }
    }
    ""
}

/// The value of header parameter `name` (lower-case), if present with a value.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    header_params(value)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    unquoted_chars(s)
        .find(|&(_, c)| c == needle)
        .map(|(i, _)| i)
}

fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in unquoted_chars(s).filter(|&(_, c)| c == sep) {
        parts.push(&s[start..i]);
        start = i + 1;
    }
    parts.push(&s[start..]);
    parts
}

fn parse_u32_saturating(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u32::MAX as u64) as u32),
    )
}

/// Parses a framed message, validating a request's mandatory headers (RFC 3261 8.1.1).
pub fn parse(frame: &Frame) -> Result<SipMessage, ParseError> {
    parse_inner(frame, true)
}

/// Parses the REGISTER carried in a `message/sip` body: same syntax, but Max-Forwards is not
/// required (it is the UE's request as the S-CSCF saw it, not one addressed to us).
pub(crate) fn parse_embedded(frame: &Frame) -> Result<SipMessage, ParseError> {
    parse_inner(frame, false)
}

/// `s` without `prefix` (ASCII, compared case-insensitively), never slicing inside a character.
pub(crate) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        // The prefix is ASCII, so its length is a character boundary of `s`.
        s.get(prefix.len()..)
    } else {
        None
    }
}

fn bad(reason: impl Into<String>, reply_to: Option<ReplyTo>) -> ParseError {
    ParseError {
        status: 400,
        reason: reason.into(),
        reply_to: reply_to.map(Box::new),
    }
}

fn parse_inner(frame: &Frame, strict: bool) -> Result<SipMessage, ParseError> {
    let (start, rest) = frame.head.split_once("\r\n").unwrap_or((&frame.head, ""));
    // Status line: SIP-Version SP Status-Code SP Reason-Phrase (RFC 3261 7.2).
    // Byte-wise prefix checks: the start line may hold any UTF-8, and slicing a `str` inside a
    // multi-byte character would panic (found by cargo-fuzz).
    if let Some(status_rest) = strip_prefix_ignore_case(start, "SIP/2.0 ") {
        let mut it = status_rest.splitn(2, ' ');
        let code = it.next().unwrap_or("");
        let status = match code.parse::<u16>() {
            Ok(s) if code.len() == 3 && (100..700).contains(&s) => s,
            _ => return Err(bad(format!("bad status code {:?}", truncate(code)), None)),
        };
        return Ok(SipMessage::Response(SipResponse {
            status,
            reason: it.next().unwrap_or("").to_owned(),
        }));
    }
    // Request-Line: Method SP Request-URI SP SIP-Version (RFC 3261 7.1).
    let parts: Vec<&str> = start.split(' ').collect();
    let [method, request_uri, version] = parts[..] else {
        return Err(bad(format!("bad start line {:?}", truncate(start)), None));
    };
    if !is_token(method) {
        return Err(bad(format!("bad method {:?}", truncate(method)), None));
    }
    let headers = header_lines(rest).map_err(|e| bad(e, None))?;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        let mut e = bad(
            format!("SIP version {:?} not supported", truncate(version)),
            reply_to_from_headers(&headers),
        );
        if version.len() > 4 && strip_prefix_ignore_case(version, "SIP/").is_some() {
            e.status = 505;
        } else {
            e.reply_to = None;
        }
        return Err(e);
    }
    if !uri::is_plausible_uri(request_uri) {
        return Err(bad(
            format!("bad Request-URI {:?}", truncate(request_uri)),
            reply_to_from_headers(&headers),
        ));
    }
    let method = Method::from_token(method);
    build_request(method, request_uri, headers, frame, strict)
}

/// Best-effort reading of what a 400 needs, from unvalidated headers: one each of From, To,
/// Call-ID and CSeq, and at least one Via (comma-joined Vias split).
pub(crate) fn reply_to_from_headers(headers: &[(String, String)]) -> Option<ReplyTo> {
    let one = |name: &str| {
        let mut it = headers.iter().filter(|(n, _)| n == name);
        match (it.next(), it.next()) {
            (Some((_, v)), None) if !v.is_empty() => Some(v.clone()),
            _ => None,
        }
    };
    let vias: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n == "Via")
        .flat_map(|(_, v)| split_commas(v))
        .map(str::to_owned)
        .collect();
    if vias.is_empty() {
        return None;
    }
    Some(ReplyTo {
        vias,
        from: one("From")?,
        to: one("To")?,
        call_id: one("Call-ID")?,
        cseq: one("CSeq")?,
    })
}

fn build_request(
    method: Method,
    request_uri: &str,
    headers: Vec<(String, String)>,
    frame: &Frame,
    strict: bool,
) -> Result<SipMessage, ParseError> {
    // What a 400 needs is only gathered when a 400 is sent.
    let reply_to = || reply_to_from_headers(&headers);
    let fail = |reason: String| Err(bad(reason, reply_to()));
    let all = |name: &'static str| headers.iter().filter(move |(n, _)| n == name);
    let single = |name: &'static str| -> Result<Option<&str>, ParseError> {
        let mut it = all(name);
        match (it.next(), it.next()) {
            (None, _) => Ok(None),
            (Some((_, v)), None) => Ok(Some(v.as_str())),
            (Some(_), Some(_)) => Err(bad(format!("more than one {name}"), reply_to())),
        }
    };
    let required = |name: &'static str| -> Result<&str, ParseError> {
        match single(name)? {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => Err(bad(format!("empty {name}"), reply_to())),
            None => Err(bad(format!("missing {name}"), reply_to())),
        }
    };

    // RFC 3261 8.1.1: To, From, CSeq, Call-ID, Max-Forwards and Via are mandatory.
    let vias: Vec<String> = all("Via")
        .flat_map(|(_, v)| split_commas(v))
        .map(str::to_owned)
        .collect();
    if vias.is_empty() {
        return fail("missing Via".into());
    }
    for via in &vias {
        let proto = via.split([' ', '\t']).next().unwrap_or("");
        if !proto.to_ascii_uppercase().starts_with("SIP/2.0/") {
            return fail(format!("bad Via {:?}", truncate(via)));
        }
    }
    let top_branch = header_param(&vias[0], "branch");
    let from = required("From")?;
    let to = required("To")?;
    for (name, v) in [("From", from), ("To", to)] {
        if uri::name_addr_uri(v).is_none() {
            return fail(format!("{name} has no URI"));
        }
    }
    let call_id = required("Call-ID")?;
    let cseq_raw = required("CSeq")?;
    let mut cs = cseq_raw.split_whitespace();
    let (cseq, cseq_method) = match (cs.next(), cs.next(), cs.next()) {
        (Some(n), Some(m), None) if n.bytes().all(|b| b.is_ascii_digit()) => match n.parse::<u32>()
        {
            // RFC 3261 8.1.1.5: the number must be below 2^31.
            Ok(n) if n < 1 << 31 => (n, m),
            _ => return fail(format!("bad CSeq number {:?}", truncate(n))),
        },
        _ => return fail(format!("bad CSeq {:?}", truncate(cseq_raw))),
    };
    if cseq_method != method.as_str() {
        return fail(format!(
            "CSeq method {} does not match {}",
            truncate(cseq_method),
            method
        ));
    }
    let max_forwards = match single("Max-Forwards")? {
        Some(v) => match parse_u32_saturating(v) {
            Some(n) => n,
            None => return fail(format!("bad Max-Forwards {:?}", truncate(v))),
        },
        None if strict => return fail("missing Max-Forwards".into()),
        None => 70,
    };
    let mut p_asserted_identity = Vec::new();
    for (_, v) in all("P-Asserted-Identity") {
        for part in split_commas(v) {
            match uri::name_addr_uri(part) {
                Some(u) => p_asserted_identity.push(u.to_owned()),
                None => return fail(format!("bad P-Asserted-Identity {:?}", truncate(part))),
            }
        }
    }
    let event = match single("Event")? {
        Some(v) => {
            let ty = v.split(';').next().unwrap_or("").trim();
            if !is_token(ty) {
                return fail(format!("bad Event {:?}", truncate(v)));
            }
            Some(ty.to_owned())
        }
        None => None,
    };
    let expires = match single("Expires")? {
        Some(v) => match parse_u32_saturating(v) {
            Some(n) => Some(n),
            None => return fail(format!("bad Expires {:?}", truncate(v))),
        },
        None => None,
    };
    let sip_if_match: Vec<String> = all("SIP-If-Match")
        .flat_map(|(_, v)| split_commas(v))
        .map(str::to_owned)
        .collect();
    let content_type = single("Content-Type")?.map(str::to_owned);
    let contact: Vec<String> = all("Contact")
        .flat_map(|(_, v)| split_commas(v))
        .map(str::to_owned)
        .collect();
    let call_id = call_id.to_owned();
    let cseq_method = cseq_method.to_owned();
    let (from, to) = (from.to_owned(), to.to_owned());
    Ok(SipMessage::Request(Box::new(SipRequest {
        method,
        request_uri: request_uri.to_owned(),
        vias,
        top_branch,
        from,
        to,
        call_id,
        cseq,
        cseq_method,
        max_forwards,
        p_asserted_identity,
        event,
        expires,
        sip_if_match,
        content_type,
        contact,
        body: frame.body.clone(),
        headers,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::framing::frame_datagram;

    fn req(s: &str) -> Result<SipMessage, ParseError> {
        parse(&frame_datagram(s.as_bytes()).unwrap())
    }

    const BASE: &str = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n";

    #[test]
    fn compact_and_folded() {
        let m = req("OPTIONS sip:x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKa,\r\n SIP/2.0/TCP g\r\nf: <sip:a@x>;tag=1\r\nt: <sip:b@x>\r\ni: c\r\nCSeq: 1\r\n\tOPTIONS\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n").unwrap();
        let SipMessage::Request(r) = m else { panic!() };
        assert_eq!(r.vias.len(), 2);
        assert_eq!(r.top_branch.as_deref(), Some("z9hG4bKa"));
        assert_eq!(r.call_id, "c");
        assert_eq!(r.cseq_method, "OPTIONS");
    }

    #[test]
    fn extension_method_and_response() {
        let m = req(&format!(
            "FOO sip:x SIP/2.0\r\n{}\r\n",
            BASE.replace("1 OPTIONS", "1 FOO")
        ))
        .unwrap();
        assert!(matches!(m, SipMessage::Request(r) if r.method == Method::Other("FOO".into())));
        let m = req(&format!("SIP/2.0 200 OK\r\n{BASE}\r\n")).unwrap();
        assert!(matches!(
            m,
            SipMessage::Response(SipResponse { status: 200, .. })
        ));
    }

    #[test]
    fn missing_max_forwards_is_a_400_with_reply_to() {
        let e = req(&format!(
            "OPTIONS sip:x SIP/2.0\r\n{}\r\n",
            BASE.replace("Max-Forwards: 70\r\n", "")
        ))
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.reason.contains("Max-Forwards"));
        assert_eq!(e.reply_to.unwrap().call_id, "c");
    }

    #[test]
    fn bad_version_is_505() {
        let e = req(&format!("OPTIONS sip:x SIP/3.0\r\n{BASE}\r\n")).unwrap_err();
        assert_eq!(e.status, 505);
        assert!(e.reply_to.is_some());
    }

    #[test]
    fn cseq_method_mismatch() {
        let e = req(&format!("PUBLISH sip:x SIP/2.0\r\n{BASE}\r\n")).unwrap_err();
        assert!(e.reason.contains("CSeq method"));
    }

    #[test]
    fn header_params_quoted_and_name_addr() {
        let p =
            header_params("<sip:a@x;lr>;+g.3gpp.icsi-ref=\"urn%3Aa;b\";expires=5;+g.3gpp.mcptt");
        assert_eq!(p[0], ("+g.3gpp.icsi-ref".into(), Some("urn%3Aa;b".into())));
        assert_eq!(p[1], ("expires".into(), Some("5".into())));
        assert_eq!(p[2], ("+g.3gpp.mcptt".into(), None));
        assert_eq!(
            split_commas("\"a,b\" <sip:x>, <sip:y,z>, tel:1"),
            vec!["\"a,b\" <sip:x>", "<sip:y,z>", "tel:1"]
        );
    }

    #[test]
    fn escaped_quotes_stay_inside_quoted_strings() {
        // RFC 3261 25.1 quoted-pair: `\"` does not end the quoted string, in any scan.
        let p = header_params("<sip:a@x>;note=\"a\\\";b\";expires=5");
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[1], ("expires".into(), Some("5".into())));
        assert_eq!(
            split_commas("\"x\\\",y\" <sip:a@x>, <sip:b@x>"),
            vec!["\"x\\\",y\" <sip:a@x>", "<sip:b@x>"]
        );
    }

    fn opts(headers: &str) -> Result<SipMessage, ParseError> {
        req(&format!("OPTIONS sip:x SIP/2.0\r\n{headers}\r\n"))
    }

    fn request_of(m: Result<SipMessage, ParseError>) -> SipRequest {
        match m {
            Ok(SipMessage::Request(r)) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_line_needs_a_three_digit_code_from_100_to_699() {
        // RFC 3261 7.2, 25.1: Status-Code = 3DIGIT; 1xx to 6xx.
        for (line, status) in [("SIP/2.0 100 Trying", 100), ("SIP/2.0 699 Ouch", 699)] {
            let m = req(&format!("{line}\r\n{BASE}\r\n")).unwrap();
            let SipMessage::Response(r) = m else {
                panic!("{line}")
            };
            assert_eq!(r.status, status);
            assert_eq!(r.reason, line[12..]);
        }
        for line in [
            "SIP/2.0 0200 OK",
            "SIP/2.0 099 X",
            "SIP/2.0 700 X",
            "SIP/2.0 20 X",
        ] {
            let e = req(&format!("{line}\r\n{BASE}\r\n")).unwrap_err();
            assert_eq!((e.status, e.reply_to), (400, None), "{line}");
        }
    }

    #[test]
    fn only_another_sip_version_is_505_and_garbage_is_dropped() {
        // RFC 3261 21.5.7: 505 for a SIP version we do not support; a request whose version is
        // not SIP at all gets no response (nothing says it is SIP).
        let m = req(&format!("OPTIONS sip:x sip/2.0\r\n{BASE}\r\n"));
        assert!(matches!(m, Ok(SipMessage::Request(_))), "{m:?}");
        for (version, status, replies) in [
            ("SIP/3.0", 505, true),
            ("SIP/", 400, false),
            ("HTTP/1.1", 400, false),
            ("SIP", 400, false),
        ] {
            let e = req(&format!("OPTIONS sip:x {version}\r\n{BASE}\r\n")).unwrap_err();
            assert_eq!(
                (e.status, e.reply_to.is_some()),
                (status, replies),
                "{version}"
            );
        }
    }

    #[test]
    fn cseq_is_digits_below_2_to_the_31_and_one_method() {
        // RFC 3261 8.1.1.5: the sequence number is a 32-bit unsigned integer below 2**31.
        let ok = request_of(opts(&BASE.replace("CSeq: 1 ", "CSeq: 2147483647 ")));
        assert_eq!(ok.cseq, 2_147_483_647);
        for bad in ["CSeq: 2147483648 ", "CSeq: +1 ", "CSeq: 1 1 "] {
            let e = opts(&BASE.replace("CSeq: 1 ", bad)).unwrap_err();
            assert!(e.reason.starts_with("bad CSeq"), "{bad}: {}", e.reason);
            assert_eq!(e.status, 400);
        }
        let e = opts(&BASE.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")).unwrap_err();
        assert_eq!(e.reason, "CSeq method INVITE does not match OPTIONS");
    }

    #[test]
    fn a_mandatory_header_that_is_empty_or_repeated_is_named() {
        let e = opts(&BASE.replace("Call-ID: c", "Call-ID:")).unwrap_err();
        assert_eq!(e.reason, "empty Call-ID");
        assert_eq!(e.to_string(), "empty Call-ID");
        let e = opts(&format!("{BASE}Call-ID: d\r\n")).unwrap_err();
        assert_eq!(e.reason, "more than one Call-ID");
        // With two Call-IDs a response cannot say which: no reply_to, the message is dropped.
        assert!(e.reply_to.is_none());
        let e = opts(&format!("{BASE}Expires: 1\r\nExpires: 2\r\n")).unwrap_err();
        assert_eq!(e.reason, "more than one Expires");
        let r = e.reply_to.expect("reply_to");
        assert_eq!(
            (r.from.as_str(), r.cseq.as_str()),
            ("<sip:a@x>;tag=1", "1 OPTIONS")
        );
    }

    #[test]
    fn reply_to_is_read_from_every_via_and_one_each_of_from_to_call_id_cseq() {
        let headers = "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b\r\nVia: SIP/2.0/TCP c\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";
        let lines = header_lines(headers.trim_end()).unwrap();
        let r = reply_to_from_headers(&lines).unwrap();
        assert_eq!(r.vias.len(), 3);
        assert_eq!((r.to.as_str(), r.call_id.as_str()), ("<sip:b@x>", "c"));
        let two_from = header_lines(&format!("{}\r\nFrom: <sip:z@x>", headers.trim_end())).unwrap();
        assert_eq!(reply_to_from_headers(&two_from), None);
        let empty_to = header_lines(&headers.trim_end().replace("To: <sip:b@x>", "To:")).unwrap();
        assert_eq!(reply_to_from_headers(&empty_to), None);
        let no_via: Vec<_> = lines.iter().filter(|(n, _)| n != "Via").cloned().collect();
        assert_eq!(reply_to_from_headers(&no_via), None);
    }

    #[test]
    fn max_forwards_is_required_except_in_an_embedded_register() {
        let embedded = "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n";
        let frame = frame_datagram(embedded.as_bytes()).unwrap();
        let r = request_of(parse_embedded(&frame));
        assert_eq!(r.max_forwards, 70);
        assert!(parse(&frame).unwrap_err().reason.contains("Max-Forwards"));
    }

    #[test]
    fn event_expires_and_max_forwards_values() {
        // RFC 3265 7.2.1 / RFC 6665 8.2.1: the event type is a token before any parameters.
        let r = request_of(opts(&format!(
            "{BASE}Event: poc-settings;id=7\r\nExpires: 99999999999\r\n"
        )));
        assert_eq!(r.event.as_deref(), Some("poc-settings"));
        // RFC 3261 20.19: a value too large saturates.
        assert_eq!(r.expires, Some(u32::MAX));
        for (h, reason) in [
            ("Event: poc settings", "bad Event"),
            ("Event: ;id=1", "bad Event"),
            ("Expires: -1", "bad Expires"),
            ("Expires: 1a", "bad Expires"),
        ] {
            let e = opts(&format!("{BASE}{h}\r\n")).unwrap_err();
            assert!(e.reason.starts_with(reason), "{h}: {}", e.reason);
        }
        let e = opts(&BASE.replace("Max-Forwards: 70", "Max-Forwards: x")).unwrap_err();
        assert!(e.reason.starts_with("bad Max-Forwards"), "{}", e.reason);
        assert_eq!(parse_u32_saturating(" 12 "), Some(12));
        assert_eq!(parse_u32_saturating(""), None);
    }

    #[test]
    fn continuation_lines_join_with_one_space_and_blank_ones_add_nothing() {
        // RFC 3261 7.3.1: a line starting with whitespace continues the previous value.
        let h = header_lines("Subject:\r\n  first\r\n\t second\r\n   \r\nX-Custom: y").unwrap();
        assert_eq!(h[0], ("Subject".into(), "first second".into()));
        assert_eq!(h[1], ("X-Custom".into(), "y".into()));
        assert!(header_lines(" leading").is_err());
        assert!(header_lines("Bad Name: v").is_err());
    }

    #[test]
    fn error_reasons_quote_at_most_40_characters() {
        let name = format!("{}@", "n".repeat(50));
        let e = header_lines(&format!("{name}: v")).unwrap_err();
        assert_eq!(e, format!("bad header name {:?}", "n".repeat(40)));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn methods_read_and_print_as_their_tokens() {
        for m in [
            "REGISTER",
            "PUBLISH",
            "OPTIONS",
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "SUBSCRIBE",
            "NOTIFY",
            "MESSAGE",
            "INFO",
            "PRACK",
            "UPDATE",
            "REFER",
            "FOO",
        ] {
            let method = Method::from_token(m);
            assert_eq!(method.to_string(), m);
            assert_eq!(method.as_str(), m);
        }
        // Methods are case-sensitive (RFC 3261 7.1).
        assert_eq!(
            Method::from_token("publish"),
            Method::Other("publish".into())
        );
    }

    #[test]
    fn params_of_a_name_addr_without_parameters_are_none() {
        assert!(header_params("<sip:a@x>").is_empty());
        // A stray `>` before the name-addr closes nothing: the URI's own `;x=1` stays the URI's.
        assert_eq!(
            header_params("Bob> <sip:a@x;x=1>;tag=t"),
            [("tag".to_owned(), Some("t".to_owned()))]
        );
        // A URI whose last parameter is empty (`;>`) still ends at its `>`.
        assert_eq!(
            header_params("<sip:a@x;>;tag=t"),
            [("tag".to_owned(), Some("t".to_owned()))]
        );
        assert!(header_params("<sip:a@x;lr> junk").is_empty());
        assert_eq!(
            header_params("<sip:a@x> ;tag=1"),
            vec![("tag".to_owned(), Some("1".to_owned()))]
        );
        assert_eq!(
            header_param("SIP/2.0/UDP h;branch=z9hG4bK1;rport", "rport"),
            None
        );
        assert_eq!(split_unquoted("a;b", ';'), ["a", "b"]);
    }
}
