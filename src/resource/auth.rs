//! Who may read what on the resource servers: the scopes of TS 33.180 B.4.2.2, the RFC 6750
//! bearer-token answers, and [`decide`], the one function that turns a route's [`Access`] rule,
//! the presented token and the request target into an [`Authorized`] value or a [`Refusal`].
//!
//! A handler can only be reached with an [`Authorized`] in hand, and only this module can make
//! one: the route table ([`super::Route`]) pairs each handler with its `Access`, and the
//! dispatcher calls [`decide`] before the handler. So no route can skip the check, and the
//! scope-separation invariant (a token accepted by one resource server for one service never
//! grants another; docs/ARCHITECTURE.md) is a property of this function alone.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mcx_model::{McId, Service, ServiceSet, TokenRejection};

use crate::token::ResourceToken;

/// The three resource servers of TS 33.180 5.1.3.1 (steps C-2, C-4, C-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// The KMS (TS 33.180 Annex D).
    Kms,
    /// The configuration management server (TS 24.484).
    Cm,
    /// The group management server (TS 24.481).
    Gm,
}

impl ServerKind {
    /// All three.
    pub const ALL: [ServerKind; 3] = [ServerKind::Kms, ServerKind::Cm, ServerKind::Gm];

    fn suffix(self) -> &'static str {
        match self {
            ServerKind::Kms => "key_management_service",
            ServerKind::Cm => "config_management_service",
            ServerKind::Gm => "group_management_service",
        }
    }

    /// The Rel-13 (TS 33.179) scope, which grants MCPTT only and is accepted only behind
    /// `[token] accept_rel13_scope`.
    pub fn rel13_scope(self) -> &'static str {
        match self {
            ServerKind::Kms => "3gpp:mcptt:key_management_server",
            ServerKind::Cm => "3gpp:mcptt:config_management_server",
            ServerKind::Gm => "3gpp:mcptt:group_management_server",
        }
    }

    /// A short name for logs and docs.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Kms => "KMS",
            ServerKind::Cm => "CM",
            ServerKind::Gm => "GM",
        }
    }
}

fn service_word(service: Service) -> &'static str {
    match service {
        Service::Mcptt => "ptt",
        Service::Mcvideo => "video",
        Service::Mcdata => "data",
    }
}

/// The scope that opens `server` for `service` (TS 33.180 B.4.2.2), e.g.
/// `3gpp:mc:ptt_key_management_service`.
pub fn scope(server: ServerKind, service: Service) -> String {
    format!("3gpp:mc:{}_{}", service_word(service), server.suffix())
}

/// The services whose `server` scope the token's scope values grant. Only exact values count:
/// an MC *service* scope (`3gpp:mc:ptt_service`) grants no resource server.
pub fn granted(server: ServerKind, values: &[String], rel13: bool) -> ServiceSet {
    let mut set = ServiceSet::EMPTY;
    for svc in Service::ALL {
        let want = scope(server, svc);
        if values.contains(&want) {
            set.insert(svc);
        }
    }
    if rel13 && values.iter().any(|v| v == server.rel13_scope()) {
        set.insert(Service::Mcptt);
    }
    set
}

/// Whose resource a route serves, checked against the token's MC service IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The token's own MC service IDs (KMS key sets). When the path names an ID it must be one
    /// of them.
    OwnIds,
    /// The path names the user (the XCAP XUI): it must be the token's MC service ID for the
    /// route's service.
    PathUser,
    /// A document shared by all users of the service (service configuration): the scope is
    /// enough.
    AnyUser,
    /// The path names a group: one of the token's MC service IDs (for a granted service) must
    /// be a member of it or authorized for it; through a user's tree the XUI must also be one of
    /// those IDs.
    GroupMember,
}

/// A route's access rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Served without a token (the MCS UE initial configuration, TS 24.484 7.2).
    Public,
    /// A bearer token carrying `server`'s scope for the target's service, and `identity`.
    Bearer(ServerKind, Identity),
}

/// What a request asks for, as the route's matcher read it from the decoded path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The MC service the path names (the XCAP AUID), if any.
    pub service: Option<Service>,
    /// The user the path names (XCAP XUI, or the KMS key-provision URI), if any.
    pub user: Option<String>,
    /// The group the path names, if any.
    pub group: Option<String>,
    /// The remaining segments (document name, node selector, KMS time).
    pub rest: Vec<String>,
}

/// The members and authorized users of the group a request names, looked up by the dispatcher
/// for [`Identity::GroupMember`] routes (`None`: no such group).
pub type GroupAcl<'a> = Option<(&'a [String], &'a [String])>;

/// Proof that [`decide`] let a request through. Only this module makes one.
#[derive(Clone, Debug)]
pub struct Authorized {
    token: Option<ResourceToken>,
    services: ServiceSet,
    ids: Vec<(Service, McId)>,
}

impl Authorized {
    /// The verified token (`None` on a public route).
    pub fn token(&self) -> Option<&ResourceToken> {
        self.token.as_ref()
    }

    /// The services the route's scope was granted for.
    pub fn services(&self) -> ServiceSet {
        self.services
    }

    /// The token's MC service IDs this request may act for: for granted services only, and,
    /// when the path named one, only that one. Distinct values, in service order.
    pub fn ids(&self) -> &[(Service, McId)] {
        &self.ids
    }
}

/// What the `Authorization` header(s) held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bearer {
    /// No bearer credentials (no header, or another scheme).
    Missing,
    /// Unusable: two headers, an empty token, or bytes outside RFC 6750 b64token.
    Malformed(&'static str),
    /// A token.
    Token(String),
}

/// Reads the bearer token (RFC 6750 2.1; the header form only: a token in the query or form
/// body is not looked at).
pub fn bearer(headers: &HeaderMap) -> Bearer {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Bearer::Missing;
    };
    if values.next().is_some() {
        return Bearer::Malformed("more than one Authorization header");
    }
    let Ok(text) = value.to_str() else {
        return Bearer::Malformed("Authorization header is not visible ASCII");
    };
    let text = text.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Bearer::Missing;
    }
    let token = rest.trim();
    if token.is_empty() {
        return Bearer::Malformed("empty bearer token");
    }
    let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    let body = token.trim_end_matches('=');
    if !body.chars().all(b64token) {
        return Bearer::Malformed("bearer token is not a b64token");
    }
    Bearer::Token(token.to_owned())
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token: 401 (or 403 when configured) with a bare `WWW-Authenticate: Bearer`.
    NoToken,
    /// RFC 6750 `invalid_request`: 400.
    InvalidRequest(&'static str),
    /// RFC 6750 `invalid_token` (bad signature, expired, not yet valid, foreign issuer, …): 401.
    InvalidToken(TokenRejection),
    /// RFC 6750 `insufficient_scope`, naming the scope(s) that would do: 403.
    InsufficientScope(Vec<String>),
    /// The token is fine but the resource is another user's (or a group the user is not in): 403.
    NotYours,
}

/// The one access decision of the resource servers. Pure: the token is already validated
/// (`verdict`, present exactly when `bearer` held a token), the group ACL already looked up.
pub fn decide(
    access: Access,
    target: &Target,
    bearer: &Bearer,
    verdict: Option<Result<ResourceToken, TokenRejection>>,
    group: GroupAcl<'_>,
    rel13: bool,
) -> Result<Authorized, Refusal> {
    let (server, identity) = match access {
        Access::Public => {
            return Ok(Authorized {
                token: None,
                services: ServiceSet::EMPTY,
                ids: Vec::new(),
            })
        }
        Access::Bearer(server, identity) => (server, identity),
    };
    match bearer {
        Bearer::Missing => return Err(Refusal::NoToken),
        Bearer::Malformed(why) => return Err(Refusal::InvalidRequest(why)),
        Bearer::Token(_) => {}
    }
    let token = match verdict {
        Some(Ok(t)) => t,
        Some(Err(r)) => return Err(Refusal::InvalidToken(r)),
        // A token was presented but not validated: never let that through.
        None => return Err(Refusal::InvalidToken(TokenRejection::Malformed)),
    };
    let held = granted(server, &token.scope_values, rel13);
    // The services this request is about: the one the path names, or any.
    let wanted: Vec<Service> = match target.service {
        Some(s) => vec![s],
        None => Service::ALL.to_vec(),
    };
    let mut services = ServiceSet::EMPTY;
    for s in &wanted {
        if held.contains(*s) {
            services.insert(*s);
        }
    }
    if services.is_empty() {
        return Err(Refusal::InsufficientScope(
            wanted.iter().map(|s| scope(server, *s)).collect(),
        ));
    }
    let mut ids: Vec<(Service, McId)> = Vec::new();
    for s in Service::ALL {
        if let (true, Some(id)) = (services.contains(s), token.mc_id(s)) {
            if !ids.iter().any(|(_, known)| known == id) {
                ids.push((s, id.clone()));
            }
        }
    }
    match identity {
        Identity::AnyUser => {}
        Identity::OwnIds | Identity::PathUser => {
            if let Some(user) = &target.user {
                ids.retain(|(_, id)| id.as_str() == user);
            }
            if identity == Identity::PathUser && target.user.is_none() {
                ids.clear();
            }
            if ids.is_empty() {
                return Err(Refusal::NotYours);
            }
        }
        Identity::GroupMember => {
            if let Some(user) = &target.user {
                ids.retain(|(_, id)| id.as_str() == user);
            }
            let Some((members, authorized)) = group else {
                // An unknown group is answered as a group the user is not in: no oracle.
                return Err(Refusal::NotYours);
            };
            ids.retain(|(_, id)| members.iter().chain(authorized).any(|m| m == id.as_str()));
            if ids.is_empty() {
                return Err(Refusal::NotYours);
            }
        }
    }
    Ok(Authorized {
        token: Some(token),
        services,
        ids,
    })
}

/// The HTTP answer to a refusal (RFC 6750 3, 3.1). `no_token_status` is 401 unless configured
/// to 403 (some readings of TS 24.482).
pub fn refusal_response(refusal: &Refusal, realm: &str, no_token_status: StatusCode) -> Response {
    let quoted = |s: &str| s.replace(['"', '\\'], "");
    let realm = quoted(realm);
    let (status, challenge, body) = match refusal {
        Refusal::NoToken => (
            no_token_status,
            Some(format!("Bearer realm=\"{realm}\"")),
            "an access token is required (Authorization: Bearer)\n".to_owned(),
        ),
        Refusal::InvalidRequest(why) => (
            StatusCode::BAD_REQUEST,
            Some(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{}\"",
                quoted(why)
            )),
            format!("invalid request: {why}\n"),
        ),
        Refusal::InvalidToken(r) => (
            StatusCode::UNAUTHORIZED,
            Some(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                r.label()
            )),
            format!("invalid token: {}\n", r.label()),
        ),
        Refusal::InsufficientScope(scopes) => {
            let scopes = quoted(&scopes.join(" "));
            (
                StatusCode::FORBIDDEN,
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{scopes}\""
                )),
                format!("insufficient scope: needs {scopes}\n"),
            )
        }
        Refusal::NotYours => (
            StatusCode::FORBIDDEN,
            None,
            "the token does not grant this resource\n".to_owned(),
        ),
    };
    let mut resp = (status, body).into_response();
    if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcx_model::UnixTime;

    fn token(scopes: &[&str], ptt: Option<&str>, data: Option<&str>) -> ResourceToken {
        ResourceToken {
            mcptt_id: ptt.map(McId::new),
            mcvideo_id: None,
            mcdata_id: data.map(McId::new),
            scope_values: scopes.iter().map(|s| s.to_string()).collect(),
            exp: UnixTime(u64::MAX),
        }
    }

    fn run(
        access: Access,
        target: &Target,
        t: ResourceToken,
        group: GroupAcl<'_>,
    ) -> Result<Authorized, Refusal> {
        decide(
            access,
            target,
            &Bearer::Token("x".into()),
            Some(Ok(t)),
            group,
            false,
        )
    }

    /// Scope separation, exhaustively over the nine resource scopes (and the three MC service
    /// scopes): a token holding exactly one scope is let through by exactly the server and
    /// service that scope names.
    #[test]
    fn one_scope_opens_one_server_for_one_service() {
        let mut all: Vec<String> = Vec::new();
        for k in ServerKind::ALL {
            for s in Service::ALL {
                all.push(scope(k, s));
            }
        }
        all.extend(Service::ALL.iter().map(|s| s.scope().to_owned()));
        for held in &all {
            for k in ServerKind::ALL {
                for s in Service::ALL {
                    let target = Target {
                        service: Some(s),
                        ..Target::default()
                    };
                    let t = token(&[held.as_str()], Some("sip:a@x"), Some("sip:a@x"));
                    let t = ResourceToken {
                        mcvideo_id: Some(McId::new("sip:a@x")),
                        ..t
                    };
                    let got = run(Access::Bearer(k, Identity::AnyUser), &target, t, None);
                    assert_eq!(got.is_ok(), *held == scope(k, s), "{held} at {k:?}/{s:?}");
                    if let Err(e) = got {
                        assert_eq!(e, Refusal::InsufficientScope(vec![scope(k, s)]));
                    }
                }
            }
        }
    }

    #[test]
    fn rel13_aliases_grant_mcptt_only_and_only_when_switched_on() {
        let v = vec!["3gpp:mcptt:key_management_server".to_owned()];
        assert!(granted(ServerKind::Kms, &v, false).is_empty());
        let g = granted(ServerKind::Kms, &v, true);
        assert!(g.contains(Service::Mcptt) && !g.contains(Service::Mcdata));
        assert!(granted(ServerKind::Cm, &v, true).is_empty());
    }

    #[test]
    fn identity_rules() {
        let t = || {
            token(
                &["3gpp:mc:ptt_config_management_service"],
                Some("sip:alice@x"),
                None,
            )
        };
        let at = |user: &str| Target {
            service: Some(Service::Mcptt),
            user: Some(user.into()),
            ..Target::default()
        };
        let cm = Access::Bearer(ServerKind::Cm, Identity::PathUser);
        assert!(run(cm, &at("sip:alice@x"), t(), None).is_ok());
        assert_eq!(
            run(cm, &at("sip:bob@x"), t(), None).unwrap_err(),
            Refusal::NotYours
        );
        let gm = Access::Bearer(ServerKind::Gm, Identity::GroupMember);
        let gt = || {
            token(
                &["3gpp:mc:ptt_group_management_service"],
                Some("sip:alice@x"),
                None,
            )
        };
        let target = Target {
            group: Some("sip:g@x".into()),
            ..Target::default()
        };
        let members = vec!["sip:alice@x".to_owned()];
        let none: Vec<String> = Vec::new();
        assert!(run(gm, &target, gt(), Some((&members, &none))).is_ok());
        assert_eq!(
            run(gm, &target, gt(), Some((&none, &none))).unwrap_err(),
            Refusal::NotYours
        );
        assert_eq!(run(gm, &target, gt(), None).unwrap_err(), Refusal::NotYours);
        assert!(run(gm, &target, gt(), Some((&none, &members))).is_ok());
    }

    #[test]
    fn bearer_header_forms() {
        let h = |vals: &[&str]| {
            let mut m = HeaderMap::new();
            for v in vals {
                m.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            bearer(&m)
        };
        assert_eq!(h(&[]), Bearer::Missing);
        assert_eq!(h(&["Basic YWxhZGRpbjpvcGVuc2VzYW1l"]), Bearer::Missing);
        assert_eq!(
            h(&["bearer abc.def.ghi"]),
            Bearer::Token("abc.def.ghi".into())
        );
        assert!(matches!(h(&["Bearer "]), Bearer::Malformed(_)));
        assert!(matches!(h(&["Bearer a b"]), Bearer::Malformed(_)));
        assert!(matches!(h(&["Bearer a", "Bearer b"]), Bearer::Malformed(_)));
    }
}
