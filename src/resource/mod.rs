//! The HTTP resource servers that the same access token opens before the MC client ever sends
//! its SIP PUBLISH (TS 33.180 5.1.3.1, figure 5.1.3.1-1 steps C-2, C-4, C-5):
//!
//! - [`kms`]: the KMS of TS 33.180 Annex D under `/keymanagement/identity/v1`;
//! - [`cm`]: the configuration management server of TS 24.484 (XCAP, RFC 4825);
//! - [`gm`]: the group management server of TS 24.481 (XCAP).
//!
//! One listener (plain HTTP, or HTTPS with rustls when a certificate is configured) serves all
//! three from one route table ([`routes`]). Each [`Route`] is declared with its [`Access`] rule,
//! and its handler takes an [`Authorized`], which only [`auth::decide`] can make: the
//! dispatcher validates the bearer token with the shared [`Validator`], decides, and only then
//! calls the handler. Paths are decoded and checked by [`path`] before any route sees them.

pub mod auth;
pub mod cm;
pub mod gm;
pub mod kms;
pub mod path;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use auth::{Access, Authorized, Identity, ServerKind, Target};

use crate::server::Shared;
use crate::token::Validator;

/// `[http]`: the resource servers' listener.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Run the resource servers at all.
    pub enabled: bool,
    /// Listen address; `None` (or `enabled = false`) turns the resource servers off.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain: with [`Self::tls_key`], the listener speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub tls_key: Option<PathBuf>,
    /// Where the lab KMS material (`kms/`), CM documents (`cm/`) and groups (`gm/`) live.
    /// Default: the `[token] data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Status for a request without a token: 401 (RFC 6750 3.1) or 403 (some readings of
    /// TS 24.482). Always with `WWW-Authenticate: Bearer`.
    pub no_token_status: u16,
    /// The `realm` of the `WWW-Authenticate` challenges.
    pub realm: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8090))),
            tls_cert: None,
            tls_key: None,
            data_dir: None,
            no_token_status: 401,
            realm: "mcx-authz".into(),
        }
    }
}

impl HttpConfig {
    /// Checks the settings that the TOML types cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        if !matches!(self.no_token_status, 401 | 403) {
            anyhow::bail!("[http] no_token_status must be 401 or 403");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("[http] tls_cert and tls_key go together");
        }
        Ok(())
    }
}

/// A request handler: reached only with an [`Authorized`] from [`auth::decide`].
pub type Handler = fn(&Ctx, &Authorized, &Target, &Request) -> Response;

/// What a handler may read of the request besides its target.
#[derive(Debug)]
pub struct Request {
    /// The request headers.
    pub headers: HeaderMap,
    /// The request URI as received (for `ClientReqUrl`).
    pub uri: Uri,
}

/// One entry of the route table: a method, a matcher over the decoded path segments, the access
/// rule, and the handler. There is no other way to reach a handler.
pub struct Route {
    /// For logs and docs.
    pub name: &'static str,
    /// The method served (others get 405).
    pub method: Method,
    /// Reads the target from the decoded segments; `None`: not this route.
    pub matcher: fn(&[String]) -> Option<Target>,
    /// Who may call it.
    pub access: Access,
    /// The handler.
    pub handler: Handler,
}

/// Every route of the three servers.
pub fn routes() -> Vec<Route> {
    let mut r = kms::routes();
    r.extend(cm::routes());
    r.extend(gm::routes());
    r
}

/// Shared state of the resource servers.
pub struct Ctx {
    validator: Arc<Validator>,
    clock: Arc<Mutex<Shared>>,
    routes: Vec<Route>,
    data_dir: PathBuf,
    rel13: bool,
    realm: String,
    no_token_status: StatusCode,
}

impl Ctx {
    /// The state for `config`, validating with `validator` and reading the server's clock.
    pub fn new(
        config: &HttpConfig,
        default_data_dir: &Path,
        rel13: bool,
        validator: Arc<Validator>,
        clock: Arc<Mutex<Shared>>,
    ) -> Ctx {
        Ctx {
            validator,
            clock,
            routes: routes(),
            data_dir: config
                .data_dir
                .clone()
                .unwrap_or_else(|| default_data_dir.to_owned()),
            rel13,
            realm: config.realm.clone(),
            no_token_status: StatusCode::from_u16(config.no_token_status)
                .unwrap_or(StatusCode::UNAUTHORIZED),
        }
    }

    /// The server's clock (the same one the machine and the admin view's clock control use).
    pub fn now(&self) -> mcx_model::UnixTime {
        self.clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clock
            .now()
    }

    /// The lab data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// The axum router: one fallback that dispatches through the route table.
pub fn router(ctx: Arc<Ctx>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(ctx)
}

async fn dispatch(
    State(ctx): State<Arc<Ctx>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let ctx2 = ctx.clone();
    match tokio::task::spawn_blocking(move || handle(&ctx2, method, uri, headers)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "resource handler failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Routing, the access decision, then the handler (blocking: signature check and file reads).
pub fn handle(ctx: &Ctx, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let segs = match path::segments(uri.path()) {
        Ok(s) => s,
        Err(path::PathError::TooLong) => {
            return (StatusCode::URI_TOO_LONG, "request path too long\n").into_response()
        }
        Err(path::PathError::Bad(why)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("bad request path: {why}\n"),
            )
                .into_response()
        }
    };
    let Some((route, target)) = ctx
        .routes
        .iter()
        .find_map(|r| (r.matcher)(&segs).map(|t| (r, t)))
    else {
        return (StatusCode::NOT_FOUND, "no such resource\n").into_response();
    };
    if method != route.method {
        let mut resp = (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
        if let Ok(v) = HeaderValue::from_str(route.method.as_str()) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    }
    let bearer = auth::bearer(&headers);
    let verdict = match (&route.access, &bearer) {
        (Access::Bearer(..), auth::Bearer::Token(t)) => {
            Some(ctx.validator.validate_resource(t, ctx.now()))
        }
        _ => None,
    };
    let groups;
    let acl = match (&route.access, &target.group) {
        (Access::Bearer(_, Identity::GroupMember), Some(id)) => {
            groups = gm::load_groups(&ctx.data_dir);
            groups
                .iter()
                .find(|g| g.id == *id)
                .map(|g| (g.members.as_slice(), g.authorized.as_slice()))
        }
        _ => None,
    };
    let decided = auth::decide(route.access, &target, &bearer, verdict, acl, ctx.rel13);
    match decided {
        Ok(authorized) => {
            let req = Request { headers, uri };
            (route.handler)(ctx, &authorized, &target, &req)
        }
        Err(refusal) => {
            tracing::info!(route = route.name, ?refusal, "resource request refused");
            let mut resp = auth::refusal_response(&refusal, &ctx.realm, ctx.no_token_status);
            if let Access::Bearer(ServerKind::Kms, _) = route.access {
                // The KMS answers in its own XML, with the RFC 6750 status and challenge.
                let status = resp.status();
                let challenge = resp.headers().get(header::WWW_AUTHENTICATE).cloned();
                resp = kms::error_response(ctx, "", status, &kms_reason(&refusal), &uri);
                if let Some(c) = challenge {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
                }
            }
            resp
        }
    }
}

fn kms_reason(r: &auth::Refusal) -> String {
    match r {
        auth::Refusal::NoToken => "no access token".into(),
        auth::Refusal::InvalidRequest(w) => format!("invalid request: {w}"),
        auth::Refusal::InvalidToken(t) => format!("invalid token: {}", t.label()),
        auth::Refusal::InsufficientScope(s) => format!("insufficient scope: needs {}", s.join(" ")),
        auth::Refusal::NotYours => "the token does not carry this MC service ID".into(),
    }
}

/// An XCAP document answer (RFC 4825 7.10, 7.11): a strong ETag over the bytes, and 304 when
/// `If-None-Match` names it (or is `*`).
pub fn xcap_document(headers: &HeaderMap, content_type: &str, body: Vec<u8>) -> Response {
    let digest = Sha256::digest(&body);
    let etag = format!(
        "\"{}\"",
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag);
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if !matches {
        if let Ok(v) = HeaderValue::from_str(content_type) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
    }
    resp
}

/// Reads a lab file of at most `max` bytes; `Ok(None)` when it does not exist.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Ok(None);
    }
    let mut out = Vec::new();
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(Some(out))
}

/// XML character-data and attribute escaping.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// A plain-text error answer.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}
