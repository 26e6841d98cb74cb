//! What the SIP edge must ignore, or read with care, in a request: one [`Perturbation`] says how
//! to write a [`SipMsg`] differently without changing what it means to the server, and
//! [`SipMsg::render`] is the one function that writes it (issue 16; dossier S-2).
//!
//! Meaning is: the asserted identity (P-Asserted-Identity of a PUBLISH from a trusted SIP core;
//! the To of a third-party REGISTER, TS 24.229 5.4.1.7), the Request-URI's resource, Event,
//! Expires, SIP-If-Match and the bodies' semantic content. Everything else may change:
//! - From and To of a PUBLISH (the same IMPU, another registered IMPU,
//!   `anonymous@anonymous.invalid`, a display name that itself looks like a URI), the From of a
//!   REGISTER (the S-CSCF's), a display name on a REGISTER's To;
//! - Contact (absent, the UE's, another IMPU, two contacts; never an `expires` parameter, which
//!   is meaning on a REGISTER, RFC 3261 10.3 step 7);
//! - P-Asserted-Identity: a display name, a tel URI beside the sip URI in either order, as two
//!   header lines or one comma list (RFC 3325 9.1); from an untrusted source, any value or none;
//! - identity headers the UE writes (P-Preferred-Identity naming another IMPU);
//! - the Request-URI form: URI parameters, scheme and host case, `sips:`;
//! - header names (compact forms, RFC 3261 7.3.3; other letter case), folding (RFC 3261 7.3.1),
//!   whitespace around the colon and the parameters, trailing whitespace;
//! - the order of body parts, an extra unknown part that may be ignored
//!   (`Content-Disposition: …;handling=optional`, RFC 3261 20.11), whitespace between XML
//!   elements.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::SipMsg;

/// How From or To is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Party {
    /// As the builder wrote it.
    #[default]
    AsIs,
    /// Another registered IMPU (for a REGISTER's To: a display name instead, since To is the
    /// identity there).
    OtherImpu,
    /// `"Anonymous" <sip:anonymous@anonymous.invalid>` (RFC 3323).
    Anonymous,
    /// The same URI behind a display name that quotes another IMPU in angle brackets.
    DisplayName,
}

/// How Contact is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Contact {
    /// As the builder wrote it.
    #[default]
    AsIs,
    /// No Contact.
    Absent,
    /// The UE's contact with MC feature tags.
    Ue,
    /// Another IMPU as the contact.
    OtherImpu,
    /// Two contacts in one comma list.
    Two,
}

/// How P-Asserted-Identity is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pai {
    /// As the builder wrote it.
    #[default]
    AsIs,
    /// With a display name (which quotes another IMPU, to catch a careless parser).
    DisplayName,
    /// The sip URI, then a tel URI, as two header lines.
    SipThenTel,
    /// A tel URI, then the sip URI, in one comma list.
    TelThenSip,
    /// A tel URI, then the sip URI, as two header lines. From an untrusted source: none at all.
    TelThenSipLines,
    /// From an untrusted source only: another registered IMPU (trusted: as written).
    Other,
}

/// Identity headers the UE may add.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Extra {
    /// None.
    #[default]
    None,
    /// `P-Preferred-Identity` naming another registered IMPU (RFC 3325: the UE's wish, which only
    /// the SIP core acts on).
    PreferredIdentity,
    /// An unknown header whose value looks like an identity.
    Unknown,
}

/// How the Request-URI is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RequestUri {
    /// As the builder wrote it.
    #[default]
    AsIs,
    /// With URI parameters (`;transport=udp;lr`).
    Params,
    /// Scheme and host in upper case (the user part is case-sensitive, RFC 3261 19.1.4).
    Case,
    /// `sips:` instead of `sip:`.
    Sips,
}

/// How header names are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Names {
    /// As the builder wrote them.
    #[default]
    AsIs,
    /// Compact forms where one exists (RFC 3261 7.3.3).
    Compact,
    /// Lower case.
    Lower,
    /// Upper case.
    Upper,
}

/// Whitespace in header lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Space {
    /// `Name: value`.
    #[default]
    AsIs,
    /// `Name :  value` (HCOLON allows whitespace before the colon).
    AroundColon,
    /// `Name:\tvalue ` with a tab and trailing whitespace, and `SWS ; SWS` around parameters.
    TabsAndParams,
}

/// Body parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parts {
    /// As the builder wrote them.
    #[default]
    AsIs,
    /// In reverse order.
    Reversed,
    /// An unknown optional part first.
    UnknownFirst,
    /// Reversed, and an unknown optional part last.
    ReversedUnknownLast,
}

/// One way of writing a request differently without changing its meaning. `Debug` prints only
/// what differs from "as built" (proptest prints whole cases).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Perturbation {
    pub from: Party,
    pub to: Party,
    pub contact: Contact,
    pub pai: Pai,
    pub extra: Extra,
    pub request_uri: RequestUri,
    pub names: Names,
    pub fold: bool,
    pub space: Space,
    pub parts: Parts,
    pub xml_space: bool,
    /// Which other registered IMPU the perturbations name (modulo their number).
    pub other: u8,
}

impl Perturbation {
    /// A perturbation from one number (for deterministic walks): each field from a few bits.
    pub fn pick(n: u64) -> Perturbation {
        let f = |shift: u32, k: u64| ((n >> shift) % k) as usize;
        Perturbation::from_indices([
            f(0, 4),
            f(2, 4),
            f(4, 5),
            f(8, 6),
            f(12, 3),
            f(14, 4),
            f(16, 4),
            f(18, 2),
            f(19, 3),
            f(21, 4),
            f(23, 2),
            f(24, 256),
        ])
    }

    fn from_indices(i: [usize; 12]) -> Perturbation {
        use Party as P;
        let party = [P::AsIs, P::OtherImpu, P::Anonymous, P::DisplayName];
        Perturbation {
            from: party[i[0]],
            to: party[i[1]],
            contact: [
                Contact::AsIs,
                Contact::Absent,
                Contact::Ue,
                Contact::OtherImpu,
                Contact::Two,
            ][i[2]],
            pai: [
                Pai::AsIs,
                Pai::DisplayName,
                Pai::SipThenTel,
                Pai::TelThenSip,
                Pai::TelThenSipLines,
                Pai::Other,
            ][i[3]],
            extra: [Extra::None, Extra::PreferredIdentity, Extra::Unknown][i[4]],
            request_uri: [
                RequestUri::AsIs,
                RequestUri::Params,
                RequestUri::Case,
                RequestUri::Sips,
            ][i[5]],
            names: [Names::AsIs, Names::Compact, Names::Lower, Names::Upper][i[6]],
            fold: i[7] == 1,
            space: [Space::AsIs, Space::AroundColon, Space::TabsAndParams][i[8]],
            parts: [
                Parts::AsIs,
                Parts::Reversed,
                Parts::UnknownFirst,
                Parts::ReversedUnknownLast,
            ][i[9]],
            xml_space: i[10] == 1,
            other: i[11] as u8,
        }
    }

    /// Whether this is the identity perturbation (the request written as built).
    pub fn is_none(&self) -> bool {
        *self == Perturbation::default()
    }
}

/// Every field varied independently; shrinks field by field towards "as built".
pub fn perturbation() -> impl Strategy<Value = Perturbation> {
    (
        (
            0..4usize,
            0..4usize,
            0..5usize,
            0..6usize,
            0..3usize,
            0..4usize,
        ),
        (
            0..4usize,
            0..2usize,
            0..3usize,
            0..4usize,
            0..2usize,
            0..256usize,
        ),
    )
        .prop_map(|((a, b, c, d, e, f), (g, h, i, j, k, l))| {
            Perturbation::from_indices([a, b, c, d, e, f, g, h, i, j, k, l])
        })
}

/// What the renderer needs to know beyond the message: the IMPUs it may name instead.
#[derive(Clone, Debug)]
pub struct Context {
    /// Registered IMPUs other than the request's own (at least one).
    pub others: Vec<String>,
    /// Whether the request comes from a trusted SIP core (decides what [`Pai`] may do).
    pub trusted: bool,
}

impl Context {
    fn other(&self, p: &Perturbation) -> &str {
        &self.others[usize::from(p.other) % self.others.len()]
    }
}

const TEL: &str = "tel:+15550100199";
const BOUNDARY: &str = "mcx-perturbed-boundary";

fn compact(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "from" => "f",
        "to" => "t",
        "contact" => "m",
        "call-id" => "i",
        "content-type" => "c",
        "content-length" => "l",
        "via" => "v",
        "event" => "o",
        "accept-contact" => "a",
        "supported" => "k",
        _ => return None,
    })
}

/// The URI inside a name-addr value (`"x" <uri>;p` → `uri`), or the value itself.
fn uri_of(value: &str) -> &str {
    match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// The header parameters after a name-addr (`<uri>;tag=1` → `;tag=1`).
fn params_of(value: &str) -> &str {
    match value.rfind('>') {
        Some(b) => &value[b + 1..],
        None => "",
    }
}

fn request_uri(uri: &str, form: RequestUri) -> String {
    match form {
        RequestUri::AsIs => uri.to_owned(),
        RequestUri::Params => format!("{uri};transport=udp;lr"),
        RequestUri::Case => {
            let (scheme, rest) = uri.split_once(':').unwrap_or(("sip", uri));
            let (user, host) = match rest.rsplit_once('@') {
                Some((u, h)) => (format!("{u}@"), h),
                None => (String::new(), rest),
            };
            format!(
                "{}:{user}{}",
                scheme.to_ascii_uppercase(),
                host.to_ascii_uppercase()
            )
        }
        RequestUri::Sips => match uri.strip_prefix("sip:") {
            Some(rest) => format!("sips:{rest}"),
            None => uri.to_owned(),
        },
    }
}

/// Pretty-prints XML: a newline and indentation between adjacent tags (never inside text).
fn xml_spaced(xml: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(xml);
    if !s.trim_start().starts_with('<') {
        return xml.to_vec();
    }
    s.replace("><", ">\r\n  <").into_bytes()
}

/// Writes body parts as one body: (Content-Type value, bytes), perturbed.
pub fn assemble(parts: &[(String, Vec<u8>)], p: &Perturbation) -> (String, Vec<u8>) {
    let mut parts: Vec<(String, Vec<u8>, bool)> = parts
        .iter()
        .map(|(ct, b)| {
            let b = if p.xml_space && ct.contains("xml") {
                xml_spaced(b)
            } else {
                b.clone()
            };
            (ct.clone(), b, false)
        })
        .collect();
    let unknown = || {
        (
            "application/x-unknown-to-mcx+xml".to_owned(),
            b"<x><impu>sip:somebody@ims.example</impu></x>".to_vec(),
            true,
        )
    };
    match p.parts {
        Parts::AsIs => {}
        Parts::Reversed => parts.reverse(),
        Parts::UnknownFirst => parts.insert(0, unknown()),
        Parts::ReversedUnknownLast => {
            parts.reverse();
            parts.push(unknown());
        }
    }
    if parts.len() == 1 {
        let (ct, b, _) = parts.pop().expect("one part");
        return (ct, b);
    }
    // A boundary no part contains (a nested multipart, as in message/sip, has its own).
    let boundary = (1..)
        .map(|n| format!("{BOUNDARY}-{n}"))
        .find(|b| {
            !parts
                .iter()
                .any(|(_, c, _)| c.windows(b.len()).any(|w| w == b.as_bytes()))
        })
        .expect("some boundary is free");
    let mut body = Vec::new();
    for (ct, content, optional) in &parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {ct}\r\n").as_bytes());
        if *optional {
            body.extend_from_slice(b"Content-Disposition: render;handling=optional\r\n");
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed;boundary={boundary}"), body)
}

impl SipMsg {
    /// The request as bytes sent from `local`, written as `p` says (see the module docs).
    pub fn render(&self, local: &SocketAddr, p: &Perturbation, ctx: &Context) -> Vec<u8> {
        let register = self.method.eq_ignore_ascii_case("REGISTER");
        let other = ctx.other(p);
        let mut headers: Vec<(String, String)> = vec![(
            "Via".into(),
            format!("SIP/2.0/UDP {local};branch={}", self.branch),
        )];
        let mut pai_done = false;
        for (n, v) in &self.headers {
            let lower = n.to_ascii_lowercase();
            match lower.as_str() {
                "from" => headers.push((n.clone(), party(v, p.from, other, false))),
                "to" => headers.push((n.clone(), party(v, p.to, other, register))),
                "contact" => {
                    if let Some(c) = contact(v, p.contact, other) {
                        headers.push((n.clone(), c));
                    }
                }
                "p-asserted-identity" if !pai_done => {
                    pai_done = true;
                    headers.extend(pai(v, p.pai, other, ctx.trusted));
                }
                _ => headers.push((n.clone(), v.clone())),
            }
        }
        if p.contact != Contact::AsIs
            && p.contact != Contact::Absent
            && !self
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("contact"))
        {
            if let Some(c) = contact("", p.contact, other) {
                headers.push(("Contact".into(), c));
            }
        }
        match p.extra {
            Extra::None => {}
            Extra::PreferredIdentity => {
                headers.push(("P-Preferred-Identity".into(), format!("<{other}>")))
            }
            Extra::Unknown => headers.push(("X-Asserted-Identity".into(), format!("<{other}>"))),
        }
        let body = match &self.parts {
            Some(parts) => {
                let (ct, b) = assemble(parts, p);
                headers.push(("Content-Type".into(), ct));
                b
            }
            None => self.body.clone(),
        };
        headers.push(("Content-Length".into(), body.len().to_string()));

        let mut s = format!(
            "{} {} SIP/2.0\r\n",
            self.method,
            request_uri(&self.uri, p.request_uri)
        );
        for (n, v) in &headers {
            let name = match p.names {
                Names::AsIs => n.clone(),
                Names::Compact => compact(n).map_or_else(|| n.clone(), str::to_owned),
                Names::Lower => n.to_ascii_lowercase(),
                Names::Upper => n.to_ascii_uppercase(),
            };
            let value = match p.space {
                Space::TabsAndParams if v.contains('>') => {
                    let (head, params) = v.split_at(v.rfind('>').unwrap() + 1);
                    format!("{head}{}", params.replace(';', " ; "))
                }
                _ => v.clone(),
            };
            let colon = match p.space {
                Space::AsIs => ": ",
                Space::AroundColon => " :  ",
                Space::TabsAndParams => ":\t",
            };
            let colon = if p.fold {
                // RFC 3261 7.3.1: the value on a continuation line.
                format!("{}\r\n ", colon.trim_end())
            } else {
                colon.to_owned()
            };
            let trail = if p.space == Space::TabsAndParams {
                " \t"
            } else {
                ""
            };
            s.push_str(&format!("{name}{colon}{value}{trail}\r\n"));
        }
        s.push_str("\r\n");
        let mut b = s.into_bytes();
        b.extend_from_slice(&body);
        b
    }
}

fn party(value: &str, form: Party, other: &str, is_identity: bool) -> String {
    let uri = uri_of(value);
    let params = params_of(value);
    match (form, is_identity) {
        (Party::AsIs, _) => value.to_owned(),
        // A REGISTER's To is the identity: only its display name may change.
        (_, true) | (Party::DisplayName, false) => {
            format!("\"UE <{other}>\" <{uri}>{params}")
        }
        (Party::OtherImpu, false) => format!("<{other}>{params}"),
        (Party::Anonymous, false) => {
            format!("\"Anonymous\" <sip:anonymous@anonymous.invalid>{params}")
        }
    }
}

fn contact(value: &str, form: Contact, other: &str) -> Option<String> {
    match form {
        Contact::AsIs => Some(value.to_owned()),
        Contact::Absent => None,
        Contact::Ue => Some("<sip:ue@192.0.2.10:5060>;+g.3gpp.mcptt;+g.3gpp.mcvideo".into()),
        Contact::OtherImpu => Some(format!("<{other}>")),
        Contact::Two => Some(format!("<sip:ue@192.0.2.10:5060>, \"x\" <{other}>")),
    }
}

/// The P-Asserted-Identity header lines for `value` (one name-addr).
fn pai(value: &str, form: Pai, other: &str, trusted: bool) -> Vec<(String, String)> {
    let name = || "P-Asserted-Identity".to_owned();
    let uri = uri_of(value);
    if !trusted {
        // Nothing an untrusted source writes here is believed.
        return match form {
            Pai::AsIs => vec![(name(), value.to_owned())],
            Pai::DisplayName => vec![(name(), format!("\"Victim\" <{other}>"))],
            Pai::SipThenTel => vec![(name(), format!("<{other}>")), (name(), format!("<{TEL}>"))],
            Pai::TelThenSip => vec![(name(), format!("<{TEL}>, <{uri}>"))],
            Pai::TelThenSipLines => vec![],
            Pai::Other => vec![(name(), format!("<{other}>"))],
        };
    }
    match form {
        Pai::AsIs | Pai::Other => vec![(name(), value.to_owned())],
        Pai::DisplayName => vec![(name(), format!("\"Alice <{other}>\" <{uri}>"))],
        Pai::SipThenTel => vec![(name(), value.to_owned()), (name(), format!("<{TEL}>"))],
        Pai::TelThenSip => vec![(name(), format!("<{TEL}>, {value}"))],
        Pai::TelThenSipLines => vec![(name(), format!("<{TEL}>")), (name(), value.to_owned())],
    }
}

impl std::fmt::Display for Perturbation {
    /// The fields that differ from "as built", e.g. `from=OtherImpu pai=TelThenSip other=3`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = Perturbation::default();
        let mut out: Vec<String> = Vec::new();
        macro_rules! field {
            ($($name:ident),*) => {$(
                if self.$name != d.$name {
                    out.push(format!("{}={:?}", stringify!($name), self.$name));
                }
            )*};
        }
        field!(
            from,
            to,
            contact,
            pai,
            extra,
            request_uri,
            names,
            fold,
            space,
            parts,
            xml_space
        );
        if out.is_empty() {
            return f.write_str("as built");
        }
        write!(f, "{} other={}", out.join(" "), self.other)
    }
}

impl std::fmt::Debug for Perturbation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{self}]")
    }
}
