//! From a parsed request to the machine's [`Input`] (TS 24.379 7.3.2–7.3.5; RFC 3903).
//!
//! The edge translates, it does not decide: identity becomes [`AssertedIdentity`] (P-Asserted-
//! Identity believed only from a trusted SIP core), the Request-URI a [`PublishTarget`] or
//! [`RegisterTarget`], tokens [`TokenVerdict`]s through the runtime's validator, protected values
//! a [`Protection`] through the runtime's opener, bodies a [`PublishBody`] (with a typed
//! [`MalformedBody`] when unusable). Every authorization answer — 404 for a foreign URI, 400 for
//! an ambiguous PSI or a bad body, 403 for a bad token or bad protection — is the machine's.
//!
//! From an untrusted source nothing past the identity is read: no body is parsed and no token
//! is validated, because the machine refuses an untrusted identity (403) before it looks at
//! the body (`tests/sip_edge.rs` checks both halves of that claim). Only PUBLISH and REGISTER
//! reach the machine; OPTIONS, other methods, ACK and CANCEL are SIP transaction-layer answers
//! ([`Edge`] variants), not authorization decisions.

use mcx_model::{
    AssertedIdentity, Authorization, ClientId, CskId, ETag, EventPackage, IfMatch, Impu, Input,
    MalformedBody, McId, Protection, ProtectionFailure, Publish, PublishBody, PublishTarget,
    RegisterTarget, Service, ServiceSet, Settings, ThirdPartyRegister, TokenVerdict,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::body::{
    body_kind, content_type, parts, read_info, read_message_sip, read_poc_settings, BodyKind,
    InfoValue, Part, ProtectedElement,
};
use super::headers::{feature_tag_services, icsi_service, split_list};
use super::parse::{header_param, Method, SipRequest};
use super::response::ResponseConfig;
use super::uri;

/// Where the edge sits: the URIs it serves and the name it signs warnings with.
///
/// Deserializes from TOML as `psi = { mcptt = "sip:…", … }`, `server_uri = "sip:…"`,
/// `host = "…"`; every field has a lab default (see [`EdgeConfig::default`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeConfig {
    /// The participating-function PSI of each service (TS 24.379 7.3.3: the PUBLISH
    /// Request-URI). Several services may share one PSI; the service then comes from the info
    /// body's type, `Accept-Contact` or `P-Preferred-Service`.
    pub psi: BTreeMap<Service, String>,
    /// The server's own SIP URI, which third-party REGISTERs target (TS 24.229 5.4.1.7; the iFC
    /// names it). A REGISTER to a configured PSI is accepted too.
    pub server_uri: String,
    /// The server's host name: the warn-agent of `Warning: 399 <host> "…"` (TS 24.379 4.4.1).
    pub host: String,
}

impl Default for EdgeConfig {
    /// Lab defaults: host `mcx.example.org`, server URI `sip:mcx.example.org`, PSIs
    /// `sip:mcptt@mcx.example.org`, `sip:mcvideo@…`, `sip:mcdata@…`.
    fn default() -> Self {
        let host = "mcx.example.org".to_owned();
        EdgeConfig {
            psi: Service::ALL
                .into_iter()
                .map(|s| (s, format!("sip:{}@{host}", s.name())))
                .collect(),
            server_uri: format!("sip:{host}"),
            host,
        }
    }
}

impl EdgeConfig {
    /// The response settings that follow from this configuration (`Server: mcx-authz/<ver>`).
    pub fn response_config(&self) -> ResponseConfig {
        ResponseConfig {
            warning_host: self.host.clone(),
            server: Some(format!("mcx-authz/{}", env!("CARGO_PKG_VERSION"))),
        }
    }

    /// The services whose PSI `request_uri` names (see [`uri::same_resource`]).
    pub fn services_at(&self, request_uri: &str) -> ServiceSet {
        self.psi
            .iter()
            .filter(|(_, psi)| uri::same_resource(psi, request_uri))
            .map(|(s, _)| *s)
            .collect()
    }
}

/// A protected value and where it sits, for the runtime's opener (TS 33.180 clause 9): the
/// element, the whole info body it is in (the opener re-reads it with the full xmlenc structure
/// checks), and the message's signature parts with every part a `cid:` reference may name.
#[derive(Clone, Copy, Debug)]
pub struct Sealed<'r> {
    /// The service whose info body it is.
    pub service: Service,
    /// The element's local name, e.g. `mcptt-access-token`.
    pub element: &'r str,
    /// What the body reader saw of it.
    pub seen: &'r ProtectedElement,
    /// The whole info body.
    pub info_body: &'r [u8],
    /// The info part's Content-ID without angle brackets, if it has one.
    pub info_content_id: Option<&'r str>,
    /// The contents of the `application/vnd.3gpp.<svc>-signed+xml` parts, in order.
    pub signatures: &'r [&'r [u8]],
    /// Every part with a Content-ID: (Content-ID without angle brackets, content).
    pub parts: &'r [(&'r str, &'r [u8])],
}

/// Opens a TS 33.180 clause 9 protected value: its plaintext and the CSK that opened it, or why
/// it cannot be opened. The runtime supplies it (decryption and signature verification with
/// CSK-derived keys); the edge only reports what it says.
pub type OpenFn<'a> = dyn FnMut(&Sealed<'_>) -> Result<(String, CskId), ProtectionFailure> + 'a;

/// The runtime's [`OpenFn`] for one request.
pub type Opener<'a> = &'a mut OpenFn<'a>;

/// Per-request facts from the runtime.
pub struct EdgeContext<'a> {
    /// The configuration.
    pub config: &'a EdgeConfig,
    /// Whether the previous hop (the source address) is a configured trusted SIP core.
    pub trusted_source: bool,
    /// Validates an access token (the runtime wraps the JWT validator). Called only for requests
    /// from a trusted source.
    pub validate: &'a mut dyn FnMut(&str) -> TokenVerdict,
    /// Opens protected values.
    pub open: Opener<'a>,
    /// Receives each `application/mikey` part of a PUBLISH body it reads (TS 33.180 5.4: a CSK
    /// upload), before any protected value is opened, so the opener may try the uploaded CSK.
    pub key_transport: &'a mut dyn FnMut(&[u8]),
    /// A fresh entity-tag the machine may issue (RFC 3903 step 6).
    pub fresh_etag: ETag,
}

/// What the runtime should do with a request.
// One per request, returned and consumed at once: boxing the input would cost an allocation per
// request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edge {
    /// Give it to the machine and send the [`mcx_model::Response`] it returns (built with
    /// [`crate::sip::response::build_response`]). `notes` are things worth logging that the
    /// input does not say (e.g. the parser's words behind a [`MalformedBody`]).
    Machine {
        /// The input.
        input: Input,
        /// Log notes.
        notes: Vec<String>,
    },
    /// OPTIONS (SIP core keep-alive): answer 200 with `Allow` ([`super::response::ALLOW`]).
    Options,
    /// A method this server does not serve: answer 405 with `Allow` ([`super::response::ALLOW`]).
    MethodNotAllowed,
    /// CANCEL: there is never a pending server transaction to cancel (every request is answered
    /// at once), so answer 481 (RFC 3261 9.2).
    NoTransaction,
    /// ACK: never answered (RFC 3261 17.2.1); drop it.
    Absorb,
}

/// Turns a parsed request into what the runtime does with it.
pub fn classify(req: &SipRequest, ctx: &mut EdgeContext<'_>) -> Edge {
    match req.method {
        Method::Publish => publish(req, ctx),
        Method::Register => register(req, ctx),
        Method::Options => Edge::Options,
        Method::Ack => Edge::Absorb,
        Method::Cancel => Edge::NoTransaction,
        _ => Edge::MethodNotAllowed,
    }
}

/// The IMPU a request concerns, in the machine's canonical form: P-Asserted-Identity for a
/// PUBLISH (the first sip/sips URI, else the first tel URI: RFC 3325 9.1 allows one of each),
/// To for a third-party REGISTER (TS 24.229 5.4.1.7). Whether it is *believed* depends on the
/// source ([`AssertedIdentity`]); the runtime also shards requests by it (RFC 3903 R-35), so
/// one rule serves both.
pub fn identity_of(req: &SipRequest) -> Option<String> {
    match req.method {
        Method::Register => uri::name_addr_uri(&req.to).and_then(uri::canonical_impu),
        _ => {
            let pick = |schemes: &[&str]| {
                req.p_asserted_identity.iter().find(|u| {
                    let s = u.split(':').next().unwrap_or("");
                    schemes.iter().any(|x| s.eq_ignore_ascii_case(x))
                })
            };
            pick(&["sip", "sips"])
                .or_else(|| pick(&["tel"]))
                .and_then(|u| uri::canonical_impu(u))
        }
    }
}

fn asserted_identity(req: &SipRequest, trusted: bool) -> AssertedIdentity {
    if !trusted {
        return AssertedIdentity::Untrusted;
    }
    match identity_of(req) {
        Some(impu) => AssertedIdentity::Trusted(Impu::new(impu)),
        None => AssertedIdentity::Missing,
    }
}

/// Services named by `Accept-Contact` feature tags and `P-Preferred-Service` ICSIs.
fn hinted_services(req: &SipRequest) -> ServiceSet {
    let mut set = ServiceSet::EMPTY;
    for v in req.header_values("Accept-Contact") {
        for c in split_list(v) {
            set = set.iter().chain(feature_tag_services(c).iter()).collect();
        }
    }
    for v in req.header_values("P-Preferred-Service") {
        for icsi in split_list(v) {
            if let Some(s) = icsi_service(icsi) {
                set.insert(s);
            }
        }
    }
    set
}

/// The media types of the body's parts, as far as they can be read.
fn info_services(req: &SipRequest) -> ServiceSet {
    let Some(ct) = &req.content_type else {
        return ServiceSet::EMPTY;
    };
    let Ok(ps) = parts(ct, &req.body) else {
        return ServiceSet::EMPTY;
    };
    ps.iter()
        .filter_map(
            |p| match content_type(&p.content_type).map(|m| body_kind(&m)) {
                Ok(BodyKind::Info(s)) => Some(s),
                _ => None,
            },
        )
        .collect()
}

fn single(set: ServiceSet) -> Option<Service> {
    let mut it = set.iter();
    match (it.next(), it.next()) {
        (Some(s), None) => Some(s),
        _ => None,
    }
}

/// RFC 3903 step 1: which resource (service) the Request-URI names. A PSI shared by several
/// services is narrowed by the info body's type, then by `Accept-Contact`/`P-Preferred-Service`.
fn publish_target(req: &SipRequest, config: &EdgeConfig) -> PublishTarget {
    let candidates = config.services_at(&req.request_uri);
    if candidates.is_empty() {
        return PublishTarget::NotOurs;
    }
    if let Some(s) = single(candidates) {
        return PublishTarget::Service(s);
    }
    let narrowed = |hint: ServiceSet| -> ServiceSet {
        hint.iter().filter(|s| candidates.contains(*s)).collect()
    };
    match single(narrowed(info_services(req))).or_else(|| single(narrowed(hinted_services(req)))) {
        Some(s) => PublishTarget::Service(s),
        None => PublishTarget::AmbiguousPsi,
    }
}

fn publish(req: &SipRequest, ctx: &mut EdgeContext<'_>) -> Edge {
    let target = publish_target(req, ctx.config);
    let event = match req.event.as_deref() {
        Some(e) if e.eq_ignore_ascii_case("poc-settings") => EventPackage::PocSettings,
        Some(_) => EventPackage::Other,
        None => EventPackage::Missing,
    };
    let if_match = match &req.sip_if_match[..] {
        [] => IfMatch::Absent,
        [one] => IfMatch::One(ETag::new(one.as_str())),
        _ => IfMatch::Many,
    };
    let impu = asserted_identity(req, ctx.trusted_source);
    let mut notes = Vec::new();
    let body = match (target, &impu) {
        // Read the body only when the machine will: for one of our resources, from a trusted
        // SIP core (no signature check for an untrusted packet).
        (PublishTarget::Service(s), AssertedIdentity::Trusted(_)) => {
            publish_body(req, s, ctx, &mut notes)
        }
        _ => PublishBody::Empty,
    };
    Edge::Machine {
        input: Input::Publish(Publish {
            target,
            event,
            impu,
            if_match,
            expires: req.expires,
            body,
            key_upload: None,
            fresh_etag: ctx.fresh_etag.clone(),
        }),
        notes,
    }
}

/// The parts of the message the opener may need besides the element (see [`Sealed`]).
struct Envelope<'r> {
    service: Service,
    info_body: &'r [u8],
    info_content_id: Option<&'r str>,
    signatures: Vec<&'r [u8]>,
    parts: Vec<(&'r str, &'r [u8])>,
}

/// A value in clear, or opened by the runtime's opener; `Err` says why not.
fn open_value(
    value: &InfoValue,
    element: &str,
    env: &Envelope<'_>,
    open: &mut OpenFn<'_>,
) -> Result<(String, Option<CskId>), ProtectionFailure> {
    match value {
        InfoValue::Plain(v) => Ok((v.clone(), None)),
        InfoValue::Protected(p) => open(&Sealed {
            service: env.service,
            element,
            seen: p,
            info_body: env.info_body,
            info_content_id: env.info_content_id,
            signatures: &env.signatures,
            parts: &env.parts,
        })
        .map(|(v, csk)| (v, Some(csk))),
    }
}

/// A part's `Content-ID` without its angle brackets (RFC 2045 7, RFC 2392).
fn content_id<'p>(p: &'p Part<'_>) -> Option<&'p str> {
    p.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-ID"))
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .unwrap_or(v)
        })
}

/// An access token and its client as the machine sees them: the validator's verdict and how
/// the token arrived (TS 33.180 clause 9). A value that cannot be opened is reported as
/// [`Protection::Failed`]; the machine refuses it (403/101) — the edge never does.
fn authorization(
    token: &InfoValue,
    client_id: &InfoValue,
    settings: Option<Settings>,
    env: &Envelope<'_>,
    ctx: &mut EdgeContext<'_>,
) -> Authorization {
    let svc = env.service.name();
    let opened = open_value(token, &format!("{svc}-access-token"), env, ctx.open).and_then(|t| {
        open_value(client_id, &format!("{svc}-client-id"), env, ctx.open).map(|c| (t, c))
    });
    // TS 33.180 clause 9 protects one message under one CSK: a client ID opened under another
    // CSK than the token's is a failed protection.
    let opened = opened.and_then(|(t, c)| match (&t.1, &c.1) {
        (Some(a), Some(b)) if a != b => Err(ProtectionFailure::Malformed),
        _ => Ok((t, c)),
    });
    match opened {
        Ok(((token, csk), (client_id, _))) => Authorization {
            token: (ctx.validate)(&token),
            protection: csk.map_or(Protection::Clear, Protection::Csk),
            client_id: ClientId::new(client_id),
            settings,
        },
        Err(failure) => Authorization {
            // Not looked at: the machine refuses the protection first.
            token: TokenVerdict::Rejected(mcx_model::TokenRejection::BadProtection),
            protection: Protection::Failed(failure),
            client_id: match client_id {
                InfoValue::Plain(c) => ClientId::new(c.as_str()),
                InfoValue::Protected(_) => ClientId::new(""),
            },
            settings,
        },
    }
}

/// Classifies a PUBLISH body for `service` (TS 24.379 7.3.3 vs 7.3.4; RFC 3903 step 5). The
/// parser's own words behind a [`MalformedBody`] go to `notes`.
pub fn publish_body(
    req: &SipRequest,
    service: Service,
    ctx: &mut EdgeContext<'_>,
    notes: &mut Vec<String>,
) -> PublishBody {
    if req.body.is_empty() {
        return PublishBody::Empty;
    }
    let mut malformed = |kind: MalformedBody, why: String| {
        notes.push(why);
        PublishBody::Malformed(kind)
    };
    let Some(ct) = &req.content_type else {
        return malformed(
            MalformedBody::NoContentType,
            "body without Content-Type".into(),
        );
    };
    let ps = match parts(ct, &req.body) {
        Ok(ps) => ps,
        Err(e) => return malformed(MalformedBody::BadMultipart, e.0),
    };
    let mut info = None;
    let mut settings: Option<Settings> = None;
    let mut env = Envelope {
        service,
        info_body: &[],
        info_content_id: None,
        signatures: Vec::new(),
        parts: ps
            .iter()
            .filter_map(|p| content_id(p).map(|c| (c, p.body)))
            .collect(),
    };
    let signed_type = format!("application/vnd.3gpp.{}-signed+xml", service.name());
    for p in &ps {
        let m = match content_type(&p.content_type) {
            Ok(m) => m,
            Err(e) => return malformed(MalformedBody::BadContentType, e.0),
        };
        let kind = body_kind(&m);
        match kind {
            BodyKind::Info(s) if s == service => {
                if info.is_some() {
                    return malformed(
                        MalformedBody::DuplicateInfo,
                        format!("two {service} info bodies"),
                    );
                }
                env.info_body = p.body;
                env.info_content_id = content_id(p);
                match read_info(s, p.body) {
                    Ok(i) => info = Some(i),
                    Err(e) => {
                        return malformed(
                            MalformedBody::BadInfo,
                            format!("{service} info body: {e}"),
                        )
                    }
                }
            }
            BodyKind::PocSettings => {
                if settings.is_some() {
                    return malformed(
                        MalformedBody::DuplicateSettings,
                        "two poc-settings bodies".into(),
                    );
                }
                match read_poc_settings(p.body) {
                    Ok(s) => settings = Some(s.settings),
                    Err(e) => {
                        return malformed(
                            MalformedBody::BadSettings,
                            format!("poc-settings body: {e}"),
                        )
                    }
                }
            }
            // TS 33.180 clause 9: the signature parts go to the runtime's opener with the
            // protected values; the key-transport part (MIKEY, TS 33.180 5.4) to the runtime's
            // upload check, which also gives the opener the uploaded CSK.
            BodyKind::ProtectionPart => {
                if m.essence_str() == signed_type {
                    env.signatures.push(p.body);
                } else if m.essence_str() == "application/mikey" {
                    (ctx.key_transport)(p.body);
                }
            }
            // A part we do not understand that the sender marked optional (RFC 3261 20.11).
            BodyKind::Other if p.is_optional() => {}
            // Another service's info body (a PUBLISH serves one service) and anything else.
            BodyKind::Info(_) | BodyKind::MessageSip | BodyKind::Multipart | BodyKind::Other => {
                return PublishBody::UnsupportedMediaType
            }
        }
    }
    let Some(info) = info else {
        return malformed(MalformedBody::NoInfo, format!("no {service} info body"));
    };
    let Some(client_id) = &info.client_id else {
        return malformed(MalformedBody::NoClientId, format!("no {service}-client-id"));
    };
    if let Some(token) = &info.access_token {
        return PublishBody::Authorization(authorization(token, client_id, settings, &env, ctx));
    }
    let Some(request_uri) = &info.request_uri else {
        return malformed(
            MalformedBody::NoTokenNorRequestUri,
            format!("{service} info body has neither an access token nor a request URI"),
        );
    };
    // TS 24.379 7.3.4: settings only. Protected values are opened; one that cannot be opened
    // makes the body unusable (there is no token whose refusal would carry Warning 101).
    let svc = service.name();
    match (
        open_value(client_id, &format!("{svc}-client-id"), &env, ctx.open),
        open_value(request_uri, &format!("{svc}-request-uri"), &env, ctx.open),
    ) {
        (Ok((client_id, _)), Ok((request_uri, _))) => PublishBody::SettingsOnly {
            claimed_mc_id: McId::new(request_uri),
            client_id: ClientId::new(client_id),
            settings,
        },
        (Err(f), _) | (_, Err(f)) => malformed(
            MalformedBody::UnreadableProtectedValue,
            format!("protected value in a settings-only {service} body: {f:?}"),
        ),
    }
}

fn register(req: &SipRequest, ctx: &mut EdgeContext<'_>) -> Edge {
    let cfg = ctx.config;
    let target = if uri::same_resource(&cfg.server_uri, &req.request_uri)
        || !cfg.services_at(&req.request_uri).is_empty()
    {
        RegisterTarget::Ours
    } else {
        RegisterTarget::NotOurs
    };
    let impu = asserted_identity(req, ctx.trusted_source);
    // RFC 3261 10.3 step 7: a Contact's expires parameter overrides the Expires header.
    let contact_expires = req
        .contact
        .iter()
        .find_map(|c| header_param(c, "expires"))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| v.min(u64::from(u32::MAX)) as u32);
    let expires = contact_expires.or(req.expires);
    let mut notes = Vec::new();
    let mut services = None;
    let mut embedded = Vec::new();
    let readable = target == RegisterTarget::Ours && matches!(impu, AssertedIdentity::Trusted(_));
    if let (true, false, Some(ct)) = (readable, req.body.is_empty(), &req.content_type) {
        match parts(ct, &req.body) {
            Ok(ps) => {
                for p in ps {
                    let is_sip = content_type(&p.content_type)
                        .is_ok_and(|m| body_kind(&m) == BodyKind::MessageSip);
                    if !is_sip {
                        continue;
                    }
                    match read_message_sip(p.body) {
                        Ok(reg) => {
                            let before: ServiceSet = services.unwrap_or_default();
                            services = Some(before.iter().chain(reg.services.iter()).collect());
                            notes.extend(reg.notes);
                            for info in reg.infos {
                                let (Some(token), Some(client_id)) =
                                    (&info.access_token, &info.client_id)
                                else {
                                    if info.access_token.is_some() {
                                        notes.push(format!(
                                            "{} info body in UE REGISTER: no client id",
                                            info.service
                                        ));
                                    }
                                    continue;
                                };
                                // The embedded REGISTER's info body is not kept as bytes: a
                                // protected value there cannot be re-read and fails (the
                                // post-CR reading ignores REGISTER tokens anyway).
                                let env = Envelope {
                                    service: info.service,
                                    info_body: &[],
                                    info_content_id: None,
                                    signatures: Vec::new(),
                                    parts: Vec::new(),
                                };
                                embedded.push((
                                    info.service,
                                    authorization(token, client_id, None, &env, ctx),
                                ));
                            }
                        }
                        // The 200 OK the S-CSCF may add (TS 24.229 5.4.1.7A) lands here too.
                        Err(e) => notes.push(e.0),
                    }
                }
            }
            Err(e) => notes.push(format!("third-party REGISTER body: {e}")),
        }
    }
    Edge::Machine {
        input: Input::ThirdPartyRegister(ThirdPartyRegister {
            target,
            impu,
            expires,
            services,
            embedded,
        }),
        notes,
    }
}

#[cfg(test)]
mod tests {
    //! What the fixture and translation tests do not pin down (found by `mutants.sh`): what the
    //! clause-9 opener is given, one CSK per message, and which third-party REGISTERs are read.
    use super::*;
    use crate::sip::framing::frame_datagram;
    use crate::sip::parse::{parse, SipMessage};
    use mcx_model::{Impu, TokenId, TokenRejection, UnixTime, VerifiedClaims};
    use std::cell::RefCell;

    const IMPU: &str = "sip:alice@ims.example.org";
    const CLIENT: &str = "urn:uuid:00000000-0000-4000-8000-000000000001";

    /// A PUBLISH to the MCPTT PSI from the asserted [`IMPU`] (`Event: poc-settings`).
    fn mcptt_publish(content_type: &str, body: &str) -> SipRequest {
        request(
            "PUBLISH sip:mcptt@mcx.example.org",
            &format!("P-Asserted-Identity: <{IMPU}>\r\nEvent: poc-settings\r\n"),
            content_type,
            body,
        )
    }

    fn request(start: &str, extra_headers: &str, content_type: &str, body: &str) -> SipRequest {
        let method = start.split(' ').next().unwrap();
        let text = format!(
            "{start} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: <{IMPU}>;tag=1\r\nTo: <{IMPU}>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\n{extra_headers}Content-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let frame = frame_datagram(text.as_bytes()).expect("frames");
        match parse(&frame).expect("parses") {
            SipMessage::Request(r) => *r,
            SipMessage::Response(r) => panic!("{r:?}"),
        }
    }

    fn encrypted(element: &str) -> String {
        format!(
            "<{element} type=\"Encrypted\"><xenc:EncryptedData \
             xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" \
             Type=\"http://www.w3.org/2001/04/xmlenc#Content\"><xenc:EncryptionMethod \
             Algorithm=\"http://www.w3.org/2009/xmlenc11#aes128-gcm\"/><xenc:CipherData>\
             <xenc:CipherValue>AAECAwQFBgcICQoL</xenc:CipherValue></xenc:CipherData>\
             </xenc:EncryptedData></{element}>"
        )
    }

    fn mcptt_info(token: &str, client_id: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
             <mcpttinfo xmlns=\"urn:3gpp:ns:mcpttInfo:1.0\"><mcptt-Params>{token}{client_id}\
             </mcptt-Params></mcpttinfo>"
        )
    }

    fn verified(token: &str) -> TokenVerdict {
        TokenVerdict::Verified(VerifiedClaims {
            mcptt_id: Some(McId::new("sip:alice@mcptt.example.org")),
            mcvideo_id: None,
            mcdata_id: None,
            scopes: ServiceSet::ALL,
            exp: UnixTime(4_000_000_000),
            token_id: TokenId::new(token),
        })
    }

    /// What the opener was shown for one protected value.
    #[derive(Debug, PartialEq)]
    struct Shown {
        element: String,
        info_content_id: Option<String>,
        signatures: Vec<String>,
        parts: Vec<(String, String)>,
        info_body_is_the_info_part: bool,
    }

    /// Classifies `req` from a trusted core with an opener that opens each element under the
    /// CSK `csk_for(element)`; returns the edge's answer, what the opener saw and what the
    /// validator was given.
    fn classify_with(
        req: &SipRequest,
        csk_for: &dyn Fn(&str) -> &'static str,
        trusted: bool,
    ) -> (Edge, Vec<Shown>, Vec<String>) {
        let shown = RefCell::new(Vec::new());
        let validated = RefCell::new(Vec::new());
        let mut validate = |t: &str| {
            validated.borrow_mut().push(t.to_owned());
            verified(t)
        };
        let mut open = |s: &Sealed<'_>| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            shown.borrow_mut().push(Shown {
                element: s.element.to_owned(),
                info_content_id: s.info_content_id.map(str::to_owned),
                signatures: s.signatures.iter().map(|b| text(b)).collect(),
                parts: s
                    .parts
                    .iter()
                    .map(|(c, b)| ((*c).to_owned(), text(b)))
                    .collect(),
                info_body_is_the_info_part: text(s.info_body).contains("<mcpttinfo"),
            });
            let value = if s.element.ends_with("client-id") {
                CLIENT.to_owned()
            } else {
                "opened.token".to_owned()
            };
            Ok((value, CskId::new(csk_for(s.element))))
        };
        let config = EdgeConfig::default();
        let mut ctx = EdgeContext {
            config: &config,
            trusted_source: trusted,
            validate: &mut validate,
            open: &mut open,
            key_transport: &mut |_: &[u8]| {},
            fresh_etag: ETag::new("fresh"),
        };
        let edge = classify(req, &mut ctx);
        (edge, shown.into_inner(), validated.into_inner())
    }

    /// Whether the edge hands the machine a PUBLISH whose body type it does not take (415).
    fn is_unsupported(edge: &Edge) -> bool {
        matches!(
            edge,
            Edge::Machine {
                input: Input::Publish(Publish {
                    body: PublishBody::UnsupportedMediaType,
                    ..
                }),
                ..
            }
        )
    }

    fn authorization_of(edge: Edge) -> Authorization {
        match edge {
            Edge::Machine {
                input:
                    Input::Publish(Publish {
                        body: PublishBody::Authorization(a),
                        ..
                    }),
                ..
            } => a,
            other => panic!("not an authorization: {other:?}"),
        }
    }

    /// A PUBLISH whose token and client ID are both protected (TS 33.180 9.3.3, 9.3.4), with
    /// the info part's Content-ID, a signature part and an unrelated part with a Content-ID.
    fn protected_publish() -> SipRequest {
        let info = mcptt_info(
            &encrypted("mcptt-access-token"),
            &encrypted("mcptt-client-id"),
        );
        let body = format!(
            "--b1\r\nContent-Type: application/vnd.3gpp.mcptt-info+xml\r\n\
             Content-ID: <info@ue>\r\n\r\n{info}\r\n\
             --b1\r\nContent-Type: application/vnd.3gpp.mcptt-signed+xml\r\n\
             Content-ID: <sig@ue>\r\n\r\n<signature/>\r\n\
             --b1\r\nContent-Type: text/plain\r\nContent-ID: extra@ue\r\n\
             Content-Disposition: render;handling=optional\r\n\r\nextra\r\n--b1--\r\n"
        );
        request(
            "PUBLISH sip:mcptt@mcx.example.org",
            &format!("P-Asserted-Identity: <{IMPU}>\r\nEvent: poc-settings\r\nExpires: 3600\r\n"),
            "multipart/mixed;boundary=b1",
            &body,
        )
    }

    #[test]
    fn the_opener_is_given_the_info_part_its_content_id_the_signatures_and_every_cid_part() {
        // TS 33.180 9.3.4: a signature covers the parts it names by `cid:` (RFC 2392), so the
        // opener needs the info part's Content-ID (without angle brackets), the mcptt-signed
        // parts, and every part that has a Content-ID.
        let (edge, shown, validated) = classify_with(&protected_publish(), &|_| "csk-1", true);
        let a = authorization_of(edge);
        assert_eq!(a.protection, Protection::Csk(CskId::new("csk-1")));
        assert_eq!(a.client_id, ClientId::new(CLIENT));
        assert_eq!(
            validated,
            ["opened.token"],
            "the validator sees the plaintext"
        );
        assert_eq!(
            shown.iter().map(|s| s.element.as_str()).collect::<Vec<_>>(),
            ["mcptt-access-token", "mcptt-client-id"]
        );
        for s in &shown {
            assert_eq!(s.info_content_id.as_deref(), Some("info@ue"));
            assert_eq!(s.signatures, ["<signature/>"]);
            assert!(s.info_body_is_the_info_part);
            let cids: Vec<&str> = s.parts.iter().map(|(c, _)| c.as_str()).collect();
            assert_eq!(cids, ["info@ue", "sig@ue", "extra@ue"]);
            assert_eq!(s.parts[2].1, "extra");
        }
    }

    #[test]
    fn a_client_id_opened_under_another_csk_than_the_token_is_a_failed_protection() {
        // TS 33.180 clause 9: one message is protected under one CSK.
        let req = protected_publish();
        let (edge, _, validated) = classify_with(
            &req,
            &|e| {
                if e.ends_with("client-id") {
                    "csk-2"
                } else {
                    "csk-1"
                }
            },
            true,
        );
        let a = authorization_of(edge);
        assert_eq!(
            a.protection,
            Protection::Failed(ProtectionFailure::Malformed)
        );
        assert_eq!(
            a.token,
            TokenVerdict::Rejected(TokenRejection::BadProtection)
        );
        assert!(validated.is_empty(), "a failed protection is not validated");
        // A protected client ID is not reported in clear when the protection failed.
        assert_eq!(a.client_id, ClientId::new(""));
    }

    #[test]
    fn a_clear_token_is_clear_even_with_a_protected_client_id() {
        // Only the token's CSK makes the protection `Csk`; a clear token is `Clear`.
        let info = mcptt_info(
            "<mcptt-access-token type=\"Normal\"><mcpttString>clear.token</mcpttString></mcptt-access-token>",
            &encrypted("mcptt-client-id"),
        );
        let req = mcptt_publish("application/vnd.3gpp.mcptt-info+xml", &info);
        let (edge, shown, validated) = classify_with(&req, &|_| "csk-1", true);
        let a = authorization_of(edge);
        assert_eq!(a.protection, Protection::Clear);
        assert_eq!(validated, ["clear.token"]);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].info_content_id, None);
        assert!(shown[0].parts.is_empty() && shown[0].signatures.is_empty());
    }

    #[test]
    fn another_services_info_body_beside_ours_is_unsupported_not_a_second_info_body() {
        // TS 24.379 7.3.3: a PUBLISH to the MCPTT PSI carries the MCPTT info body; an MCVideo
        // info body is a type this request does not take (415, RFC 3261 21.4.13), in either
        // order, and it is neither read as ours nor counted as a duplicate of ours (400).
        let theirs =
            "<mcvideoinfo xmlns=\"urn:3gpp:ns:mcvideoInfo:1.0\"><mcvideo-Params/></mcvideoinfo>";
        let part = |ct: &str, body: &str| format!("--b1\r\nContent-Type: {ct}\r\n\r\n{body}\r\n");
        let mcptt = part("application/vnd.3gpp.mcptt-info+xml", CLEAR_INFO);
        let mcvideo = part("application/vnd.3gpp.mcvideo-info+xml", theirs);
        for body in [
            format!("{mcptt}{mcvideo}--b1--\r\n"),
            format!("{mcvideo}{mcptt}--b1--\r\n"),
        ] {
            let req = mcptt_publish("multipart/mixed;boundary=b1", &body);
            let (edge, _, validated) = classify_with(&req, &|_| "k", true);
            assert!(is_unsupported(&edge), "{edge:?}");
            assert!(validated.is_empty(), "no token is validated: {validated:?}");
        }
    }

    #[test]
    fn an_unknown_part_is_skipped_only_when_its_sender_marked_it_optional() {
        // RFC 3261 20.11: `handling=optional` lets a recipient skip a part it does not
        // understand; without it (the default is `required`) the request is 415 (21.4.13).
        for (disposition, optional) in [
            ("Content-Disposition: render;handling=optional\r\n", true),
            ("Content-Disposition: render;handling=required\r\n", false),
            ("", false),
        ] {
            let body = format!(
                "--b1\r\nContent-Type: application/vnd.3gpp.mcptt-info+xml\r\n\r\n{CLEAR_INFO}\r\n\
                 --b1\r\nContent-Type: text/plain\r\n{disposition}\r\nextra\r\n--b1--\r\n"
            );
            let req = mcptt_publish("multipart/mixed;boundary=b1", &body);
            let (edge, _, validated) = classify_with(&req, &|_| "k", true);
            if optional {
                assert_eq!(authorization_of(edge).protection, Protection::Clear);
                assert_eq!(validated, ["ue.token"]);
            } else {
                assert!(is_unsupported(&edge), "{disposition:?}: {edge:?}");
            }
        }
    }

    #[test]
    fn transaction_layer_methods_are_answered_by_the_edge_and_ack_never() {
        // RFC 3261 17.2.1: an ACK is never answered (not even 405); 9.2: a CANCEL with no
        // pending transaction gets 481; 11.2: OPTIONS 200 with Allow; others 405 (20.5).
        for (method, expected) in [
            ("ACK", Edge::Absorb),
            ("CANCEL", Edge::NoTransaction),
            ("OPTIONS", Edge::Options),
            ("INVITE", Edge::MethodNotAllowed),
            ("MESSAGE", Edge::MethodNotAllowed),
        ] {
            let req = request(
                &format!("{method} sip:mcptt@mcx.example.org"),
                "",
                "text/plain",
                "",
            );
            assert_eq!(classify_with(&req, &|_| "k", true).0, expected, "{method}");
        }
    }

    #[test]
    fn a_shared_psi_takes_the_service_from_the_info_body_before_the_feature_tags() {
        // TS 24.379 7.3.3: several services may share one PSI; the info body's type says which
        // service a PUBLISH is for, and Accept-Contact / P-Preferred-Service only when it does not.
        let shared = EdgeConfig {
            psi: Service::ALL
                .into_iter()
                .map(|s| (s, "sip:mc@mcx.example.org".to_owned()))
                .collect(),
            ..EdgeConfig::default()
        };
        let info =
            "<mcvideoinfo xmlns=\"urn:3gpp:ns:mcvideoInfo:1.0\"><mcvideo-Params/></mcvideoinfo>";
        for hints in ["", "Accept-Contact: *;+g.3gpp.mcptt;require;explicit\r\n"] {
            let req = request(
                "PUBLISH sip:mc@mcx.example.org",
                &format!("P-Asserted-Identity: <{IMPU}>\r\n{hints}"),
                "application/vnd.3gpp.mcvideo-info+xml",
                info,
            );
            assert_eq!(
                publish_target(&req, &shared),
                PublishTarget::Service(Service::Mcvideo),
                "{hints:?}"
            );
        }
        let bodiless = request(
            "PUBLISH sip:mc@mcx.example.org",
            &format!("P-Asserted-Identity: <{IMPU}>\r\n"),
            "text/plain",
            "",
        );
        assert_eq!(
            publish_target(&bodiless, &shared),
            PublishTarget::AmbiguousPsi
        );
    }

    fn third_party_register(request_uri: &str, ue_info: &str) -> SipRequest {
        let ue = format!(
            "REGISTER sip:ims.example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKu\r\n\
             From: <{IMPU}>;tag=u\r\nTo: <{IMPU}>\r\nCall-ID: u1\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:alice@192.0.2.10>;+g.3gpp.mcptt\r\n\
             Content-Type: application/vnd.3gpp.mcptt-info+xml\r\nContent-Length: {}\r\n\r\n{ue_info}",
            ue_info.len()
        );
        request(
            &format!("REGISTER {request_uri}"),
            "Contact: <sip:scscf.ims.example.org>\r\nExpires: 600000\r\n",
            "message/sip",
            &ue,
        )
    }

    fn register_of(edge: Edge) -> (ThirdPartyRegister, Vec<String>) {
        match edge {
            Edge::Machine {
                input: Input::ThirdPartyRegister(r),
                notes,
            } => (r, notes),
            other => panic!("not a REGISTER: {other:?}"),
        }
    }

    const CLEAR_INFO: &str = "<mcpttinfo xmlns=\"urn:3gpp:ns:mcpttInfo:1.0\"><mcptt-Params>\
        <mcptt-access-token type=\"Normal\"><mcpttString>ue.token</mcpttString></mcptt-access-token>\
        <mcptt-client-id type=\"Normal\"><mcpttString>urn:uuid:00000000-0000-4000-8000-000000000001</mcpttString></mcptt-client-id>\
        </mcptt-Params></mcpttinfo>";

    #[test]
    fn a_third_party_register_to_a_psi_is_ours_and_to_another_uri_is_not() {
        // TS 24.229 5.4.1.7: the iFC sends the third-party REGISTER to the server's URI; a
        // configured PSI names this server too. Another URI is not ours (the machine: 404).
        for (uri, target) in [
            ("sip:mcx.example.org", RegisterTarget::Ours),
            ("sip:mcvideo@mcx.example.org", RegisterTarget::Ours),
            ("sip:other.example.org", RegisterTarget::NotOurs),
        ] {
            let (r, _) = register_of(
                classify_with(&third_party_register(uri, CLEAR_INFO), &|_| "k", true).0,
            );
            assert_eq!(r.target, target, "{uri}");
            assert_eq!(r.impu, AssertedIdentity::Trusted(Impu::new(IMPU)));
        }
    }

    #[test]
    fn only_a_trusted_third_party_register_for_us_has_its_body_read() {
        // Ours, trusted: the UE's REGISTER is read (services, its token validated).
        let (r, _, validated) = classify_with(
            &third_party_register("sip:mcx.example.org", CLEAR_INFO),
            &|_| "k",
            true,
        );
        let (r, _) = register_of(r);
        assert_eq!(r.services, Some(ServiceSet::only(Service::Mcptt)));
        assert_eq!(r.embedded.len(), 1);
        assert_eq!(validated, ["ue.token"]);
        // Not ours, or from an untrusted source: nothing past the identity is read.
        for (uri, trusted) in [
            ("sip:other.example.org", true),
            ("sip:mcx.example.org", false),
        ] {
            let (e, _, validated) =
                classify_with(&third_party_register(uri, CLEAR_INFO), &|_| "k", trusted);
            let (r, notes) = register_of(e);
            assert_eq!((r.services, r.embedded.len()), (None, 0), "{uri} {trusted}");
            assert!(validated.is_empty() && notes.is_empty(), "{uri} {trusted}");
        }
    }

    #[test]
    fn an_embedded_token_without_a_client_id_is_noted_and_not_used() {
        let info = "<mcpttinfo xmlns=\"urn:3gpp:ns:mcpttInfo:1.0\"><mcptt-Params>\
            <mcptt-access-token type=\"Normal\"><mcpttString>ue.token</mcpttString></mcptt-access-token>\
            </mcptt-Params></mcpttinfo>";
        let (e, _, validated) = classify_with(
            &third_party_register("sip:mcx.example.org", info),
            &|_| "k",
            true,
        );
        let (r, notes) = register_of(e);
        assert!(r.embedded.is_empty() && validated.is_empty());
        assert_eq!(notes, ["mcptt info body in UE REGISTER: no client id"]);
        // A client ID without a token: nothing to use, nothing to note.
        let info = "<mcpttinfo xmlns=\"urn:3gpp:ns:mcpttInfo:1.0\"><mcptt-Params>\
            <mcptt-client-id type=\"Normal\"><mcpttString>urn:uuid:00000000-0000-4000-8000-000000000001</mcpttString></mcptt-client-id>\
            </mcptt-Params></mcpttinfo>";
        let (e, _, _) = classify_with(
            &third_party_register("sip:mcx.example.org", info),
            &|_| "k",
            true,
        );
        let (r, notes) = register_of(e);
        assert!(r.embedded.is_empty());
        assert!(notes.is_empty(), "{notes:?}");
    }
}
