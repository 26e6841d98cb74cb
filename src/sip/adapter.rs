//! From a parsed request to the machine's [`Input`] (TS 24.379 7.3.2–7.3.5; RFC 3903).
//!
//! The edge classifies, it does not decide: identity becomes [`AssertedIdentity`] (P-Asserted-
//! Identity believed only from a trusted SIP core), tokens become [`TokenVerdict`]s through the
//! runtime's validator, bodies become [`PublishBody`]. Only PUBLISH and REGISTER reach the
//! machine; OPTIONS, other methods, ACK and responses are reported as [`Edge`] variants for the
//! runtime to answer (or not) without the machine.

use mcx_model::{
    AssertedIdentity, Authorization, ClientId, ETag, EventPackage, IfMatch, Impu, Input, McId,
    Publish, PublishBody, Service, ServiceSet, Settings, ThirdPartyRegister, TokenRejection,
    TokenVerdict,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::body::{
    self, body_kind, content_type, feature_tag_services, icsi_service, parts, read_info,
    read_message_sip, read_poc_settings, BodyKind, InfoValue,
};
use super::parse::{header_param, Method, SipRequest};
use super::response::ResponseConfig;
use super::uri;

/// The methods this server answers, for `Allow` (RFC 3261 20.5).
pub const ALLOW: &str = "REGISTER, PUBLISH, OPTIONS";

/// Registration duration assumed when a third-party REGISTER carries neither `Expires` nor a
/// Contact `expires` parameter (RFC 3261 10.2.1.1 suggests 3600).
pub const DEFAULT_REGISTER_EXPIRES: u32 = 3600;

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

/// Per-request facts from the runtime.
pub struct EdgeContext<'a> {
    /// The configuration.
    pub config: &'a EdgeConfig,
    /// Whether the previous hop (the source address) is a configured trusted SIP core.
    pub trusted_source: bool,
    /// Validates an access token (the runtime wraps the JWT validator).
    pub validate: &'a mut dyn FnMut(&str) -> TokenVerdict,
    /// A fresh entity-tag the machine may issue (RFC 3903 step 6).
    pub fresh_etag: ETag,
}

/// What the runtime should do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edge {
    /// Give it to the machine and send the [`mcx_model::Response`] it returns (built with
    /// [`crate::sip::response::build_response`]). `notes` are things worth logging that did not
    /// change the input (e.g. an unreadable embedded info body).
    Machine {
        /// The input.
        input: Input,
        /// Log notes.
        notes: Vec<String>,
    },
    /// OPTIONS (SIP core keep-alive): answer 200 with `Allow` ([`ALLOW`]).
    Options,
    /// A method this server does not serve: answer 405 with `Allow` ([`ALLOW`]).
    MethodNotAllowed,
    /// CANCEL: there is never a pending server transaction to cancel (every request is answered
    /// at once), so answer 481 (RFC 3261 9.2).
    NoTransaction,
    /// ACK: never answered (RFC 3261 17.2.1); drop it.
    Absorb,
    /// A REGISTER whose Request-URI is neither the server URI nor a PSI: answer 404.
    NotFound,
    /// Cannot be given to the machine; answer 400 with this reason (e.g. a PUBLISH to a PSI shared
    /// by several services with nothing naming the service).
    BadRequest(String),
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

/// The IMPU from P-Asserted-Identity: the first sip/sips URI, else the first tel URI
/// (RFC 3325 9.1 allows one of each), in [`uri::canonical_impu`] form.
fn asserted_identity(req: &SipRequest, trusted: bool) -> AssertedIdentity {
    if !trusted {
        return AssertedIdentity::Untrusted;
    }
    let pick = |schemes: &[&str]| {
        req.p_asserted_identity.iter().find(|u| {
            let s = u.split(':').next().unwrap_or("");
            schemes.iter().any(|x| s.eq_ignore_ascii_case(x))
        })
    };
    match pick(&["sip", "sips"])
        .or_else(|| pick(&["tel"]))
        .and_then(|u| uri::canonical_impu(u))
    {
        Some(impu) => AssertedIdentity::Trusted(Impu::new(impu)),
        None => AssertedIdentity::Missing,
    }
}

/// Services named by `Accept-Contact` feature tags and `P-Preferred-Service` ICSIs.
fn hinted_services(req: &SipRequest) -> ServiceSet {
    let mut set = ServiceSet::EMPTY;
    for v in req.header_values("Accept-Contact") {
        for c in body::split_list(v) {
            set = set.iter().chain(feature_tag_services(c).iter()).collect();
        }
    }
    for v in req.header_values("P-Preferred-Service") {
        for icsi in body::split_list(v) {
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

fn publish(req: &SipRequest, ctx: &mut EdgeContext<'_>) -> Edge {
    // RFC 3903 step 1: which resource (service) the Request-URI names.
    let candidates = ctx.config.services_at(&req.request_uri);
    let service = if candidates.is_empty() {
        None
    } else if let Some(s) = single(candidates) {
        Some(s)
    } else {
        let narrowed = |hint: ServiceSet| -> ServiceSet {
            hint.iter().filter(|s| candidates.contains(*s)).collect()
        };
        match single(narrowed(info_services(req)))
            .or_else(|| single(narrowed(hinted_services(req))))
        {
            Some(s) => Some(s),
            None => {
                return Edge::BadRequest(
                    "Request-URI is a PSI shared by several MC services and nothing names one"
                        .into(),
                )
            }
        }
    };
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
    let body = match service {
        Some(s) => publish_body(req, s, ctx.validate),
        // No resource here: the machine answers 404 before looking at the body.
        None => PublishBody::Empty,
    };
    Edge::Machine {
        input: Input::Publish(Publish {
            service,
            event,
            impu: asserted_identity(req, ctx.trusted_source),
            if_match,
            expires: req.expires,
            body,
            fresh_etag: ctx.fresh_etag.clone(),
        }),
        notes: Vec::new(),
    }
}

/// The verdict for a token value: protected values cannot be read yet (TS 33.180 clause 9) and
/// count as a token that could not be used.
fn verdict(token: &InfoValue, validate: &mut dyn FnMut(&str) -> TokenVerdict) -> TokenVerdict {
    match token.reveal() {
        Ok(t) => validate(t),
        // TODO(TS 33.180 clause 9): decrypt with CSK-derived keys; until then the machine
        // answers 403 with "101 service authorisation failed".
        Err(_) => TokenVerdict::Rejected(TokenRejection::Malformed),
    }
}

/// Classifies a PUBLISH body for `service` (TS 24.379 7.3.3 vs 7.3.4; RFC 3903 step 5).
pub fn publish_body(
    req: &SipRequest,
    service: Service,
    validate: &mut dyn FnMut(&str) -> TokenVerdict,
) -> PublishBody {
    if req.body.is_empty() {
        return PublishBody::Empty;
    }
    let Some(ct) = &req.content_type else {
        return PublishBody::Malformed("body without Content-Type".into());
    };
    let ps = match parts(ct, &req.body) {
        Ok(ps) => ps,
        Err(e) => return PublishBody::Malformed(e.0),
    };
    let mut info = None;
    let mut settings: Option<Settings> = None;
    for p in &ps {
        let kind = match content_type(&p.content_type) {
            Ok(m) => body_kind(&m),
            Err(e) => return PublishBody::Malformed(e.0),
        };
        match kind {
            BodyKind::Info(s) if s == service => {
                if info.is_some() {
                    return PublishBody::Malformed(format!("two {service} info bodies"));
                }
                match read_info(s, p.body) {
                    Ok(i) => info = Some(i),
                    Err(e) => return PublishBody::Malformed(format!("{service} info body: {e}")),
                }
            }
            BodyKind::PocSettings => {
                if settings.is_some() {
                    return PublishBody::Malformed("two poc-settings bodies".into());
                }
                match read_poc_settings(p.body) {
                    Ok(s) => settings = Some(s.settings),
                    Err(e) => return PublishBody::Malformed(format!("poc-settings body: {e}")),
                }
            }
            // Integrity/key-transport parts of TS 33.180 clause 9: not verified yet, ignored.
            BodyKind::ProtectionPart => {}
            // A part we do not understand that the sender marked optional (RFC 3261 20.11).
            BodyKind::Other if p.is_optional() => {}
            // Another service's info body (a PUBLISH serves one service) and anything else.
            BodyKind::Info(_) | BodyKind::MessageSip | BodyKind::Multipart | BodyKind::Other => {
                return PublishBody::UnsupportedMediaType
            }
        }
    }
    let Some(info) = info else {
        return PublishBody::Malformed(format!("no {service} info body"));
    };
    let client_id = match &info.client_id {
        Some(InfoValue::Plain(c)) => Some(ClientId::new(c.as_str())),
        Some(InfoValue::Protected(_)) => None,
        None => return PublishBody::Malformed(format!("no {service}-client-id")),
    };
    if let Some(token) = &info.access_token {
        let protected = token.is_protected();
        return match client_id {
            Some(client_id) => PublishBody::Authorization(Authorization {
                token: verdict(token, validate),
                protected,
                client_id,
                settings,
            }),
            // A protected client ID cannot be read: the presentation fails as a whole (403/101),
            // and no binding can be keyed by it.
            None => PublishBody::Authorization(Authorization {
                token: TokenVerdict::Rejected(TokenRejection::Malformed),
                protected: true,
                client_id: ClientId::new(""),
                settings,
            }),
        };
    }
    let Some(client_id) = client_id else {
        return PublishBody::Malformed(format!(
            "protected {service}-client-id cannot be read (TS 33.180 clause 9 not supported)"
        ));
    };
    match &info.request_uri {
        Some(InfoValue::Plain(u)) => PublishBody::SettingsOnly {
            claimed_mc_id: McId::new(u.as_str()),
            client_id,
            settings,
        },
        Some(InfoValue::Protected(_)) => PublishBody::Malformed(format!(
            "protected {service}-request-uri cannot be read (TS 33.180 clause 9 not supported)"
        )),
        None => PublishBody::Malformed(format!(
            "{service} info body has neither an access token nor a request URI"
        )),
    }
}

fn register(req: &SipRequest, ctx: &mut EdgeContext<'_>) -> Edge {
    let cfg = ctx.config;
    let ours = uri::same_resource(&cfg.server_uri, &req.request_uri)
        || !cfg.services_at(&req.request_uri).is_empty();
    if !ours {
        return Edge::NotFound;
    }
    // TS 24.229 5.4.1.7: To is the registered IMPU, asserted by the S-CSCF.
    let impu = if !ctx.trusted_source {
        AssertedIdentity::Untrusted
    } else {
        match uri::name_addr_uri(&req.to).and_then(uri::canonical_impu) {
            Some(i) => AssertedIdentity::Trusted(Impu::new(i)),
            None => AssertedIdentity::Missing,
        }
    };
    // RFC 3261 10.3 step 7: a Contact's expires parameter overrides the Expires header.
    let contact_expires = req
        .contact
        .iter()
        .find_map(|c| header_param(c, "expires"))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| v.min(u64::from(u32::MAX)) as u32);
    let expires = contact_expires
        .or(req.expires)
        .unwrap_or(DEFAULT_REGISTER_EXPIRES);
    let mut notes = Vec::new();
    let mut services = None;
    let mut embedded = Vec::new();
    if let (false, Some(ct)) = (req.body.is_empty(), &req.content_type) {
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
                                let Some(token) = &info.access_token else {
                                    continue;
                                };
                                let Some(InfoValue::Plain(client_id)) = &info.client_id else {
                                    notes.push(format!(
                                        "{} info body in UE REGISTER: no readable client id",
                                        info.service
                                    ));
                                    continue;
                                };
                                embedded.push((
                                    info.service,
                                    Authorization {
                                        token: verdict(token, ctx.validate),
                                        protected: token.is_protected(),
                                        client_id: ClientId::new(client_id.as_str()),
                                        settings: None,
                                    },
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
            impu,
            expires,
            services,
            embedded,
        }),
        notes,
    }
}
