//! Validator configuration: the server's TOML `[token]` table maps onto [`ValidatorConfig`].
//!
//! With no key source configured the validator trusts the lab IdMS in [`ValidatorConfig::data_dir`]
//! (creating its key on first use), so a token from `mcx-authz token mint` is accepted with no
//! set-up. As soon as a real IdMS is configured (`jwks_url`, `jwks_file`, `jwks_json` or
//! `public_key_pem`) the lab key is no longer trusted unless `trust_lab_idms = true` says so.

use std::path::PathBuf;

use mcx_model::Service;
use serde::Deserialize;

/// The issuer (`iss`) the lab IdMS puts in its tokens and the default validator expects.
pub const LAB_ISSUER: &str = "https://idms.mcx-lab.invalid";

/// The default lab data dir (overridable with `--data-dir`).
pub const DEFAULT_DATA_DIR: &str = "./mcx-lab";

/// Rel-13 (TS 33.179) form of the MCPTT scope, accepted only when
/// [`ValidatorConfig::accept_rel13_scope`] is set.
pub const REL13_PTT_SCOPE: &str = "3gpp:mcptt:ptt_server";

/// How access tokens are validated (TS 33.180 B.11/B.12, dossier c.4).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ValidatorConfig {
    /// The IdMS's JWKS URL (`https://…/certs`). Fetched at start, every
    /// [`Self::jwks_refresh_interval_secs`], and on an unknown `kid` (at most once per
    /// [`Self::jwks_refetch_interval_secs`]), always on a dedicated thread after start.
    pub jwks_url: Option<String>,
    /// A JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS given inline as JSON text (tests, or a key pasted into the config).
    pub jwks_json: Option<String>,
    /// A PEM public key (SPKI `PUBLIC KEY`, or `RSA PUBLIC KEY`). Matches tokens without a `kid`
    /// or with [`Self::public_key_kid`].
    pub public_key_pem: Option<PathBuf>,
    /// The `kid` of [`Self::public_key_pem`], when tokens name it.
    pub public_key_kid: Option<String>,
    /// Trust the lab IdMS in [`Self::data_dir`]. `None` (default): trust it only when no other
    /// key source is configured.
    pub trust_lab_idms: Option<bool>,
    /// The lab IdMS data dir (`idms-es256.pem`, `jwks.json`).
    pub data_dir: PathBuf,
    /// Expected `iss`. Defaults to [`LAB_ISSUER`] when only the lab IdMS is trusted; required
    /// when a real IdMS is configured (TS 33.180 leaves it open, dossier Q-11; we check it).
    pub issuer: Option<String>,
    /// Accepted `aud` values; when non-empty the token's `aud` must name one of them.
    pub audience: Vec<String>,
    /// JWS algorithm allow-list. `none` and HMAC (`HS*`) are refused at configuration time, so
    /// a public key can never be used as an HMAC secret.
    pub algorithms: Vec<String>,
    /// Clock-skew leeway for `exp`, `nbf` and `iat`, in seconds (TS 33.180 B.2.1: at most 30 s).
    pub leeway_secs: u64,
    /// The scope each service requires (TS 33.180 B.4.2.2).
    pub scopes: ServiceScopes,
    /// Accept the Rel-13 scope `3gpp:mcptt:ptt_server` as granting MCPTT.
    pub accept_rel13_scope: bool,
    /// Largest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Most verified tokens kept in the cache.
    pub cache_max_entries: usize,
    /// Least time between two JWKS fetches caused by unknown `kid`s, in seconds.
    pub jwks_refetch_interval_secs: u64,
    /// The JWKS URL is fetched again every this many seconds (on the refresher thread; a failed
    /// fetch keeps the last good keys). 0 turns the timer off.
    pub jwks_refresh_interval_secs: u64,
    /// Bound on one JWKS fetch (connect + TLS + body), in milliseconds.
    pub jwks_fetch_timeout_ms: u64,
}

/// The scope string that grants each MC service.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceScopes {
    /// Grants MCPTT (default `3gpp:mc:ptt_service`).
    pub mcptt: String,
    /// Grants MCVideo (default `3gpp:mc:video_service`).
    pub mcvideo: String,
    /// Grants MCData (default `3gpp:mc:data_service`).
    pub mcdata: String,
}

impl Default for ServiceScopes {
    fn default() -> Self {
        ServiceScopes {
            mcptt: Service::Mcptt.scope().to_owned(),
            mcvideo: Service::Mcvideo.scope().to_owned(),
            mcdata: Service::Mcdata.scope().to_owned(),
        }
    }
}

impl ServiceScopes {
    /// The scope configured for `service`.
    pub fn get(&self, service: Service) -> &str {
        match service {
            Service::Mcptt => &self.mcptt,
            Service::Mcvideo => &self.mcvideo,
            Service::Mcdata => &self.mcdata,
        }
    }
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            jwks_url: None,
            jwks_file: None,
            jwks_json: None,
            public_key_pem: None,
            public_key_kid: None,
            trust_lab_idms: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            issuer: None,
            audience: Vec::new(),
            algorithms: ["ES256", "RS256", "PS256", "EdDSA"]
                .into_iter()
                .map(String::from)
                .collect(),
            leeway_secs: 30,
            scopes: ServiceScopes::default(),
            accept_rel13_scope: false,
            max_token_bytes: 8192,
            cache_max_entries: 100_000,
            jwks_refetch_interval_secs: 60,
            jwks_refresh_interval_secs: 300,
            jwks_fetch_timeout_ms: 2000,
        }
    }
}

impl ValidatorConfig {
    /// Whether a key source other than the lab IdMS is configured.
    pub fn has_external_keys(&self) -> bool {
        self.jwks_url.is_some()
            || self.jwks_file.is_some()
            || self.jwks_json.is_some()
            || self.public_key_pem.is_some()
    }

    /// Whether the lab IdMS in [`Self::data_dir`] is trusted.
    pub fn trusts_lab(&self) -> bool {
        self.trust_lab_idms.unwrap_or(!self.has_external_keys())
    }

    /// The issuer the validator will require, if any can be decided.
    pub fn effective_issuer(&self) -> Option<&str> {
        match &self.issuer {
            Some(i) => Some(i.as_str()),
            None if !self.has_external_keys() => Some(LAB_ISSUER),
            None => None,
        }
    }
}

/// Why a validator could not be built. Only configuration and start-up; per-token outcomes are
/// [`mcx_model::TokenVerdict`]s.
#[derive(Debug, thiserror::Error)]
pub enum TokenConfigError {
    /// No trusted key at all.
    #[error("no trusted signing key: configure jwks_url, jwks_file, jwks_json or public_key_pem")]
    NoKeys,
    /// A real IdMS is configured but no issuer.
    #[error("issuer is required when a real IdMS is configured (set [token] issuer)")]
    MissingIssuer,
    /// An algorithm name that is unknown, or never allowed (`none`, `HS*`).
    #[error(
        "algorithm {0:?} cannot be allowed (only ES256/ES384, RS256/384/512, PS256/384/512, EdDSA)"
    )]
    BadAlgorithm(String),
    /// The allow-list is empty.
    #[error("the algorithm allow-list is empty")]
    NoAlgorithms,
    /// A key file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A key or JWKS could not be parsed.
    #[error("bad key material ({0})")]
    BadKey(String),
    /// The JWKS URL could not be fetched.
    #[error("cannot fetch JWKS from {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The lab IdMS could not be opened or created.
    #[error("lab IdMS: {0}")]
    Lab(String),
    /// The start-up self-test (sign and verify one token) failed.
    #[error("start-up self-test failed: {0}")]
    SelfTest(String),
    /// A numeric setting is out of range.
    #[error("{0}")]
    Invalid(String),
}
