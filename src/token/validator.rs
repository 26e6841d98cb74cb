//! The access-token validator (TS 33.180 B.11, B.12; dossier c.4).
//!
//! Order of checks, each failing with one [`TokenRejection`]:
//! size → JWS shape → header (`alg` on the allow-list, no `crit`) → key by `kid` → signature →
//! claims JSON → `exp`/`nbf`/`iat` with leeway → `iss` → `aud` → MC scopes / MC service ID
//! claims. Nothing from the payload is trusted, or even parsed, before the signature verifies.
//! The `jti` replay window is not here: it is the machine's (`Policy::replay_window_secs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use mcx_model::{
    McId, Service, ServiceSet, TokenId, TokenRejection, TokenVerdict, UnixTime, VerifiedClaims,
};
use serde::Deserialize;

use super::cache::{CachedToken, Lookup, TokenDigest, VerifiedCache};
use super::config::{ServiceScopes, TokenConfigError, ValidatorConfig, REL13_PTT_SCOPE};
use super::keys::{self, JwksFetcher, KeyStore, Refresher, TrustedKey};
use super::lab::LabIdms;

/// Validates access tokens and caches the verified ones. `Send + Sync`; share it in an `Arc`.
pub struct Validator {
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
    max_bytes: usize,
    scopes: ServiceScopes,
    rel13: bool,
    /// The trusted keys, kept current by the refresher (when there is a JWKS URL).
    keys: Arc<KeyStore>,
    /// The JWKS refresher thread: on a timer and on an unknown `kid`.
    refresher: Option<Refresher>,
    /// [`KeyStore::withdrawals`] when the cache was last emptied for a withdrawn key.
    seen_withdrawals: AtomicU64,
    refetch_interval: u64,
    /// The `now` of the last JWKS fetch caused by an unknown `kid`.
    last_refetch: Mutex<Option<u64>>,
    cache: Mutex<VerifiedCache>,
    signature_checks: AtomicU64,
    rejections: [AtomicU64; TokenRejection::ALL.len()],
}

/// Counters of one validator, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidatorStats {
    /// Signature verifications performed (cache hits perform none).
    pub signature_checks: u64,
    /// JWKS fetches from the URL (start-up, timer, unknown-`kid` re-fetches, on demand).
    pub jwks_fetches: u64,
    /// JWKS fetches that failed (the last good key set was kept).
    pub jwks_fetch_failures: u64,
    /// Keys trusted now.
    pub trusted_keys: usize,
    /// Tokens in the verified-token cache now.
    pub cached_tokens: usize,
    /// Rejections so far, by reason label (only reasons seen at least once).
    pub rejections: Vec<(&'static str, u64)>,
}

/// What an HTTP resource server reads from an access token verified by
/// [`Validator::validate_resource`]: the MC service ID claims and the `scope` values as sent
/// (bounded by the token size limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceToken {
    /// The `mcptt_id` claim.
    pub mcptt_id: Option<McId>,
    /// The `mcvideo_id` claim.
    pub mcvideo_id: Option<McId>,
    /// The `mcdata_id` claim.
    pub mcdata_id: Option<McId>,
    /// Every `scope` value, in token order.
    pub scope_values: Vec<String>,
    /// `exp`.
    pub exp: UnixTime,
}

impl ResourceToken {
    /// The MC service ID the token carries for `service`.
    pub fn mc_id(&self, service: Service) -> Option<&McId> {
        match service {
            Service::Mcptt => self.mcptt_id.as_ref(),
            Service::Mcvideo => self.mcvideo_id.as_ref(),
            Service::Mcdata => self.mcdata_id.as_ref(),
        }
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn iter(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            OneOrMany::One(s) => Box::new(std::iter::once(s.as_str())),
            OneOrMany::Many(v) => Box::new(v.iter().map(String::as_str)),
        }
    }
}

/// RFC 7519 NumericDate: a non-negative JSON number of seconds (fractions are floored).
struct NumericDate(u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(u) = n.as_u64() {
            return Ok(NumericDate(u));
        }
        match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Ok(NumericDate(f.floor() as u64))
            }
            _ => Err(serde::de::Error::custom("NumericDate out of range")),
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    exp: Option<NumericDate>,
    #[serde(default)]
    nbf: Option<NumericDate>,
    #[serde(default)]
    iat: Option<NumericDate>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    scope: Option<OneOrMany>,
    #[serde(default)]
    mcptt_id: Option<String>,
    #[serde(default)]
    mcvideo_id: Option<String>,
    #[serde(default)]
    mcdata_id: Option<String>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.current_keys().len())
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// Builds a validator: loads the trusted keys (fetching the JWKS URL once), and runs the
    /// start-up self-test (sign and verify one token through jsonwebtoken, whose crypto backend
    /// is chosen by a crate feature and would otherwise only fail on first use).
    pub fn new(config: ValidatorConfig) -> Result<Validator, TokenConfigError> {
        self_test()?;
        if config.algorithms.is_empty() {
            return Err(TokenConfigError::NoAlgorithms);
        }
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| keys::parse_allowed_alg(a))
            .collect::<Result<Vec<_>, _>>()?;
        if config.leeway_secs > 300 {
            return Err(TokenConfigError::Invalid(
                "leeway_secs above 300 s is not a clock skew".into(),
            ));
        }
        if config.max_token_bytes < 64 {
            return Err(TokenConfigError::Invalid(
                "max_token_bytes below 64 cannot hold a JWS".into(),
            ));
        }
        let issuer = config.effective_issuer().map(str::to_owned);
        if issuer.is_none() {
            return Err(TokenConfigError::MissingIssuer);
        }

        let mut static_keys = Vec::new();
        if config.trusts_lab() {
            let lab = LabIdms::open_or_create(&config.data_dir)?;
            static_keys.extend(keys::parse_jwks(&lab.jwks().to_string())?);
        }
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|source| TokenConfigError::Io {
                path: path.clone(),
                source,
            })?;
            static_keys.extend(keys::parse_jwks(&text)?);
        }
        if let Some(text) = &config.jwks_json {
            static_keys.extend(keys::parse_jwks(text)?);
        }
        if let Some(path) = &config.public_key_pem {
            let text = std::fs::read(path).map_err(|source| TokenConfigError::Io {
                path: path.clone(),
                source,
            })?;
            static_keys.push(keys::parse_public_pem(
                &text,
                config.public_key_kid.clone(),
            )?);
        }
        let fetch_timeout = Duration::from_millis(config.jwks_fetch_timeout_ms.max(1));
        let fetcher = config
            .jwks_url
            .as_ref()
            .map(|url| JwksFetcher::new(url.clone(), fetch_timeout));
        // The start-up fetch is made here, on the caller's thread: the server builds its
        // validator in `spawn_blocking`.
        let (fetched, fetches) = match &fetcher {
            Some(f) => (f.fetch()?, 1),
            None => (Vec::new(), 0),
        };
        if static_keys.is_empty() && fetched.is_empty() {
            return Err(TokenConfigError::NoKeys);
        }
        let keys = Arc::new(KeyStore::new(static_keys, fetched, fetches));
        let refresher = match fetcher {
            Some(f) => Some(Refresher::start(
                keys.clone(),
                f,
                Duration::from_secs(config.jwks_refresh_interval_secs),
                fetch_timeout,
            )?),
            None => None,
        };
        Ok(Validator {
            algorithms,
            issuer,
            audience: config.audience.clone(),
            leeway: config.leeway_secs,
            max_bytes: config.max_token_bytes,
            scopes: config.scopes.clone(),
            rel13: config.accept_rel13_scope,
            keys,
            refresher,
            seen_withdrawals: AtomicU64::new(0),
            refetch_interval: config.jwks_refetch_interval_secs,
            last_refetch: Mutex::new(None),
            cache: Mutex::new(VerifiedCache::new(config.cache_max_entries)),
            signature_checks: AtomicU64::new(0),
            rejections: Default::default(),
        })
    }

    /// Applies the per-service check the machine makes (scope granted, MC service ID claim
    /// present) to a verdict: for tools (`token verify --service`). The server leaves this to
    /// the machine.
    pub fn for_service(
        verdict: &TokenVerdict,
        service: Service,
    ) -> Result<&VerifiedClaims, TokenRejection> {
        match verdict {
            TokenVerdict::Rejected(r) => Err(*r),
            TokenVerdict::Verified(c) if !c.scopes.contains(service) => {
                Err(TokenRejection::MissingScope)
            }
            TokenVerdict::Verified(c) if c.mc_id(service).is_none() => {
                Err(TokenRejection::MissingMcId)
            }
            TokenVerdict::Verified(c) => Ok(c),
        }
    }

    /// Validates `token` presented at `now` to an HTTP resource server (KMS, CM server, GM
    /// server; TS 33.180 5.1.3.1 steps C-2, C-4, C-5). The same checks as [`Self::validate`] up
    /// to `aud`, and well-formed MC service ID claims (at least one), but no MC *service* scope
    /// is required: each resource server asks for its own scope, so the `scope` values are
    /// returned as sent. Stateless and uncached (each call costs one signature check).
    pub fn validate_resource(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<ResourceToken, TokenRejection> {
        let token = token.trim_ascii();
        let result = if token.len() > self.max_bytes {
            Err(TokenRejection::TooLarge)
        } else {
            self.verify_jws(token, now.0).and_then(|c| {
                let (exp, _, _) = self.check_time_and_origin(&c, now.0)?;
                let (mcptt_id, mcvideo_id, mcdata_id) =
                    mc_id_claims(c.mcptt_id, c.mcvideo_id, c.mcdata_id)?;
                if mcptt_id.is_none() && mcvideo_id.is_none() && mcdata_id.is_none() {
                    return Err(TokenRejection::MissingMcId);
                }
                let mut scope_values = Vec::new();
                if let Some(s) = &c.scope {
                    for item in s.iter() {
                        scope_values.extend(item.split_ascii_whitespace().map(str::to_owned));
                    }
                }
                Ok(ResourceToken {
                    mcptt_id,
                    mcvideo_id,
                    mcdata_id,
                    scope_values,
                    exp: UnixTime(exp),
                })
            })
        };
        if let Err(r) = result {
            self.reject(r);
        }
        result
    }

    /// Fetches the JWKS URL now (no rate limit) on the refresher thread and waits for it;
    /// returns the number of trusted keys. A failed fetch keeps the last good keys. Bounded by
    /// `jwks_fetch_timeout_ms`. The refresher also fetches every `jwks_refresh_interval_secs`
    /// by itself. Without a URL it does nothing.
    pub fn refresh_keys(&self) -> Result<usize, TokenConfigError> {
        let Some(r) = &self.refresher else {
            return Ok(self.current_keys().len());
        };
        r.request().unwrap_or_else(|| {
            Err(TokenConfigError::Invalid(
                "the JWKS refresher did not answer in time".into(),
            ))
        })
    }

    /// Counters for metrics and tests.
    pub fn stats(&self) -> ValidatorStats {
        ValidatorStats {
            signature_checks: self.signature_checks.load(Ordering::Relaxed),
            jwks_fetches: self.keys.fetches(),
            jwks_fetch_failures: self.keys.failures(),
            trusted_keys: self.current_keys().len(),
            cached_tokens: self.lock_cache().len(),
            rejections: TokenRejection::ALL
                .iter()
                .zip(&self.rejections)
                .map(|(r, c)| (r.label(), c.load(Ordering::Relaxed)))
                .filter(|(_, c)| *c > 0)
                .collect(),
        }
    }

    /// Signature verifications performed so far (cache hits perform none).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// Validates without the cache (benchmarks: the cold path).
    #[doc(hidden)]
    pub fn validate_uncached(&self, token: &str, now: UnixTime) -> TokenVerdict {
        let token = token.trim_ascii();
        if token.len() > self.max_bytes {
            return self.reject(TokenRejection::TooLarge);
        }
        let digest = digest(token);
        match self.verify(token, &digest, now.0) {
            Ok(entry) => TokenVerdict::Verified(entry.claims),
            Err(r) => self.reject(r),
        }
    }

    /// Validates `token` at `now`. The hot path: a cached token costs a SHA-256 and a map
    /// lookup; otherwise one signature check. Never reads the clock, keeps no per-presenter
    /// state: whether a token was bound for another IMPU (the replay window, dossier Q-6) is
    /// the machine's decision (`Policy::replay_window_secs`).
    pub fn validate(&self, token: &str, now: UnixTime) -> TokenVerdict {
        // The XML text of <mcpttString> may carry surrounding whitespace.
        let token = token.trim_ascii();
        if token.len() > self.max_bytes {
            return self.reject(TokenRejection::TooLarge);
        }
        let digest = digest(token);
        self.forget_withdrawn();
        let lookup = self.lock_cache().get(&digest, now.0);
        let entry = match lookup {
            Lookup::Hit(entry) => entry,
            Lookup::Expired => return self.reject(TokenRejection::Expired),
            Lookup::NotYetValid => return self.reject(TokenRejection::NotYetValid),
            Lookup::Miss => match self.verify(token, &digest, now.0) {
                Ok(entry) => {
                    self.lock_cache().insert(digest, entry.clone(), now.0);
                    entry
                }
                Err(r) => return self.reject(r),
            },
        };
        TokenVerdict::Verified(entry.claims)
    }

    fn reject(&self, reason: TokenRejection) -> TokenVerdict {
        if let Some(i) = TokenRejection::ALL.iter().position(|r| *r == reason) {
            self.rejections[i].fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(reason = reason.label(), "access token rejected: {reason}");
        TokenVerdict::Rejected(reason)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, VerifiedCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current_keys(&self) -> Arc<Vec<TrustedKey>> {
        self.keys.current()
    }

    /// Empties the verified-token cache when a key went away since the last look (a token
    /// signed by a withdrawn key must be checked again).
    fn forget_withdrawn(&self) {
        let now = self.keys.withdrawals();
        if self.seen_withdrawals.load(Ordering::Acquire) != now {
            self.lock_cache().clear();
            self.seen_withdrawals.store(now, Ordering::Release);
        }
    }

    /// One re-fetch on an unknown `kid`, at most once per `refetch_interval` (by `now`), and
    /// never waiting for another thread's fetch. The fetch runs on the refresher thread; this
    /// thread waits for it (through `block_in_place` on a tokio runtime). Returns whether new
    /// keys were installed.
    fn refetch_for_unknown_kid(&self, now: u64) -> bool {
        let Some(r) = &self.refresher else {
            return false;
        };
        let Ok(mut last) = self.last_refetch.try_lock() else {
            return false;
        };
        if last.is_some_and(|t| now < t.saturating_add(self.refetch_interval)) {
            return false;
        }
        *last = Some(now);
        drop(last);
        let installed = matches!(r.request(), Some(Ok(_)));
        self.forget_withdrawn();
        installed
    }

    fn verify(
        &self,
        token: &str,
        digest: &TokenDigest,
        now: u64,
    ) -> Result<CachedToken, TokenRejection> {
        let claims = self.verify_jws(token, now)?;
        self.check_claims(claims, digest, now)
    }

    /// The JWS part of [`Self::verify`]: shape, header, key, signature; then the claims JSON.
    fn verify_jws(&self, token: &str, now: u64) -> Result<RawClaims, TokenRejection> {
        // JWS compact serialization: exactly three dot-separated parts (RFC 7515 7.1).
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRejection::Malformed);
        };
        let header_bytes = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|_| TokenRejection::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header_bytes).map_err(|_| TokenRejection::Malformed)?;
        // RFC 7515 4.1.11: we understand no extension, so any `crit` is refused.
        if header.crit.is_some() {
            return Err(TokenRejection::Malformed);
        }
        let alg = keys::header_alg(&header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(TokenRejection::AlgorithmNotAllowed)?;

        let key = self.find_key(header.kid.as_deref(), alg, now)?;
        if s64.is_empty() {
            return Err(TokenRejection::BadSignature);
        }
        let message = &token[..h64.len() + 1 + p64.len()];
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        match jsonwebtoken::crypto::verify(s64, message.as_bytes(), &key.key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(TokenRejection::BadSignature),
            Err(e) => {
                return Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::Base64(_) => TokenRejection::Malformed,
                    _ => TokenRejection::BadSignature,
                })
            }
        }

        // Signature good: now the claims may be read.
        let payload = URL_SAFE_NO_PAD
            .decode(p64)
            .map_err(|_| TokenRejection::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| TokenRejection::Malformed)
    }

    fn find_key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: u64,
    ) -> Result<TrustedKey, TokenRejection> {
        let fits = |k: &TrustedKey| k.family == alg.family() && k.alg.is_none_or(|a| a == alg);
        let keys = self.current_keys();
        match kid {
            Some(kid) => {
                let found = keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned();
                let found = match found {
                    Some(k) => k,
                    None => {
                        drop(keys);
                        if !self.refetch_for_unknown_kid(now) {
                            return Err(TokenRejection::UnknownKey);
                        }
                        self.current_keys()
                            .iter()
                            .find(|k| k.kid.as_deref() == Some(kid))
                            .cloned()
                            .ok_or(TokenRejection::UnknownKey)?
                    }
                };
                // The header's alg must fit the named key: no algorithm confusion.
                if fits(&found) {
                    Ok(found)
                } else {
                    Err(TokenRejection::AlgorithmNotAllowed)
                }
            }
            None => {
                // No kid: only unambiguous. With several keys of the family, the IdMS must name one.
                let mut candidates = keys.iter().filter(|k| fits(k));
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Ok(k.clone()),
                    _ => Err(TokenRejection::UnknownKey),
                }
            }
        }
    }

    fn check_claims(
        &self,
        c: RawClaims,
        digest: &TokenDigest,
        now: u64,
    ) -> Result<CachedToken, TokenRejection> {
        let (exp, expired_at, valid_from) = self.check_time_and_origin(&c, now)?;
        // TS 33.180 B.4.2.2 scopes; `scope` is space-separated (RFC 6749 3.3) or, from some
        // IdMSs, an array.
        let mut scopes = ServiceSet::EMPTY;
        if let Some(s) = &c.scope {
            for item in s.iter() {
                for value in item.split_ascii_whitespace() {
                    for svc in Service::ALL {
                        if value == self.scopes.get(svc) {
                            scopes.insert(svc);
                        }
                    }
                    if self.rel13 && value == REL13_PTT_SCOPE {
                        scopes.insert(Service::Mcptt);
                    }
                }
            }
        }
        let (mcptt_id, mcvideo_id, mcdata_id) =
            mc_id_claims(c.mcptt_id, c.mcvideo_id, c.mcdata_id)?;
        if scopes.is_empty() {
            return Err(TokenRejection::MissingScope);
        }
        if mcptt_id.is_none() && mcvideo_id.is_none() && mcdata_id.is_none() {
            return Err(TokenRejection::MissingMcId);
        }
        let token_id = match c.jti {
            Some(j) if !j.is_empty() => TokenId::new(j),
            _ => TokenId::new(hex(digest)),
        };
        Ok(CachedToken {
            claims: VerifiedClaims {
                mcptt_id,
                mcvideo_id,
                mcdata_id,
                scopes,
                exp: UnixTime(exp),
                token_id,
            },
            expired_at,
            valid_from,
        })
    }

    /// `exp`, `nbf`/`iat` (with leeway), `iss` and `aud`: the checks every resource server makes.
    /// Returns `exp`, the instant the token stops being accepted, and the instant it starts.
    fn check_time_and_origin(
        &self,
        c: &RawClaims,
        now: u64,
    ) -> Result<(u64, u64, Option<u64>), TokenRejection> {
        // TS 33.180 B.12: the resource server uses `exp`; a token without one is refused.
        let exp = c.exp.as_ref().ok_or(TokenRejection::Malformed)?.0;
        let expired_at = exp.saturating_add(self.leeway);
        if now >= expired_at {
            return Err(TokenRejection::Expired);
        }
        let starts = [c.nbf.as_ref().map(|d| d.0), c.iat.as_ref().map(|d| d.0)]
            .into_iter()
            .flatten()
            .max();
        let valid_from = starts.map(|s| s.saturating_sub(self.leeway));
        if valid_from.is_some_and(|from| now < from) {
            return Err(TokenRejection::NotYetValid);
        }
        if let Some(expected) = &self.issuer {
            if c.iss.as_deref() != Some(expected.as_str()) {
                return Err(TokenRejection::WrongIssuer);
            }
        }
        if !self.audience.is_empty() {
            let ok = c
                .aud
                .as_ref()
                .is_some_and(|aud| aud.iter().any(|a| self.audience.iter().any(|x| x == a)));
            if !ok {
                return Err(TokenRejection::WrongAudience);
            }
        }
        Ok((exp, expired_at, valid_from))
    }
}

/// The MC service ID claims: absent, or a non-empty string without surrounding whitespace.
#[allow(clippy::type_complexity)]
fn mc_id_claims(
    mcptt_id: Option<String>,
    mcvideo_id: Option<String>,
    mcdata_id: Option<String>,
) -> Result<(Option<McId>, Option<McId>, Option<McId>), TokenRejection> {
    let id = |v: Option<String>| -> Result<Option<McId>, TokenRejection> {
        match v {
            None => Ok(None),
            Some(s) if s.is_empty() || s.trim() != s => Err(TokenRejection::Malformed),
            Some(s) => Ok(Some(McId::new(s))),
        }
    };
    Ok((id(mcptt_id)?, id(mcvideo_id)?, id(mcdata_id)?))
}

fn digest(token: &str) -> TokenDigest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Signs and verifies one ES256 token through jsonwebtoken, turning a missing crypto backend
/// (which jsonwebtoken reports by panicking) into an error.
fn self_test() -> Result<(), TokenConfigError> {
    static RESULT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    RESULT
        .get_or_init(|| {
            std::panic::catch_unwind(|| -> Result<(), String> {
                use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
                let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|e| e.to_string())?;
                let der = kp.to_pkcs8v1().map_err(|e| e.to_string())?;
                let enc = jsonwebtoken::EncodingKey::from_ec_der(der.as_ref());
                let claims = serde_json::json!({"exp": 4_000_000_000u64, "sub": "self-test"});
                let token = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(Algorithm::ES256),
                    &claims,
                    &enc,
                )
                .map_err(|e| e.to_string())?;
                use aws_lc_rs::signature::KeyPair as _;
                let dec = jsonwebtoken::DecodingKey::from_ec_der(kp.public_key().as_ref());
                let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
                v.validate_exp = false;
                v.required_spec_claims.clear();
                jsonwebtoken::decode::<serde_json::Value>(&token, &dec, &v)
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
            .unwrap_or_else(|_| Err("jsonwebtoken panicked: no crypto backend".into()))
        })
        .clone()
        .map_err(TokenConfigError::SelfTest)
}

#[cfg(test)]
mod tests {
    //! What the token catalogue does not pin down (found by `mutants.sh`): the size limit at
    //! its edge on every entry point, RFC 7519 NumericDate at its edges, the cold path and the
    //! resource-server entry point's claims.
    use super::*;
    use crate::token::{LabIdms, MintRequest};
    use serde_json::json;

    const NOW: UnixTime = UnixTime(1_800_000_000);
    const ALICE: &str = "sip:alice@example.org";

    fn lab() -> LabIdms {
        LabIdms::ephemeral(&[Algorithm::ES256]).expect("lab")
    }

    fn validator_with(lab: &LabIdms, f: impl FnOnce(&mut ValidatorConfig)) -> Validator {
        let mut cfg = lab.validator_config();
        f(&mut cfg);
        Validator::new(cfg).expect("validator")
    }

    fn token(lab: &LabIdms) -> String {
        lab.mint(&MintRequest::all_services(ALICE, NOW)).unwrap()
    }

    /// A token signed by the lab key with these claims changed from a valid token's.
    fn token_with(lab: &LabIdms, change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut claims = MintRequest::all_services(ALICE, NOW).claims(lab.issuer());
        change(&mut claims);
        let key = lab.key(Algorithm::ES256).unwrap();
        key.sign_jws(&key.header(), &claims).unwrap()
    }

    fn verdict_of(r: Result<ResourceToken, TokenRejection>) -> Result<(), TokenRejection> {
        r.map(|_| ())
    }

    #[test]
    fn a_token_of_exactly_max_token_bytes_is_accepted_and_one_byte_more_is_too_large() {
        // The limit is inclusive on all three entry points.
        let lab = lab();
        let t = token(&lab);
        let at = validator_with(&lab, |c| c.max_token_bytes = t.len());
        assert!(matches!(at.validate(&t, NOW), TokenVerdict::Verified(_)));
        assert!(matches!(
            at.validate_uncached(&t, NOW),
            TokenVerdict::Verified(_)
        ));
        assert_eq!(verdict_of(at.validate_resource(&t, NOW)), Ok(()));
        let below = validator_with(&lab, |c| c.max_token_bytes = t.len() - 1);
        let too_large = TokenVerdict::Rejected(TokenRejection::TooLarge);
        assert_eq!(below.validate(&t, NOW), too_large);
        assert_eq!(below.validate_uncached(&t, NOW), too_large);
        assert_eq!(
            verdict_of(below.validate_resource(&t, NOW)),
            Err(TokenRejection::TooLarge)
        );
        // A short token is not "too large" either (the comparison is not equality).
        assert_eq!(
            below.validate("a.b.c", NOW),
            TokenVerdict::Rejected(TokenRejection::Malformed)
        );
        assert_eq!(
            below.validate_uncached("a.b.c", NOW),
            TokenVerdict::Rejected(TokenRejection::Malformed)
        );
        assert_eq!(
            verdict_of(below.validate_resource("a.b.c", NOW)),
            Err(TokenRejection::Malformed)
        );
    }

    #[test]
    fn the_cold_path_checks_the_signature_every_time_and_caches_nothing() {
        let lab = lab();
        let v = validator_with(&lab, |_| {});
        let t = token(&lab);
        for n in 1..=2 {
            let TokenVerdict::Verified(c) = v.validate_uncached(&t, NOW) else {
                panic!("not verified")
            };
            assert_eq!(c.mcptt_id, Some(McId::new(ALICE)));
            assert_eq!(v.signature_checks(), n);
        }
        assert_eq!(v.stats().cached_tokens, 0);
        assert_eq!(
            v.validate_uncached(&t, UnixTime(NOW.0 + 7200)),
            TokenVerdict::Rejected(TokenRejection::Expired)
        );
    }

    #[test]
    fn numeric_date_takes_a_fraction_floored_and_refuses_negative_or_beyond_u64() {
        // RFC 7519 2: NumericDate is a JSON number of seconds, "non-integer values can be
        // represented"; a value that is negative or does not fit is not a date here.
        let lab = lab();
        let v = validator_with(&lab, |_| {});
        let fractional = token_with(&lab, |c| c["exp"] = json!(1_800_003_600.75));
        let TokenVerdict::Verified(c) = v.validate(&fractional, NOW) else {
            panic!("a fractional exp is a NumericDate")
        };
        assert_eq!(c.exp, UnixTime(1_800_003_600));
        for bad in [
            json!(-1.5),
            json!(18_446_744_073_709_551_616.0_f64),
            json!(2e19),
        ] {
            let t = token_with(&lab, |c| c["exp"] = bad.clone());
            assert_eq!(
                v.validate(&t, NOW),
                TokenVerdict::Rejected(TokenRejection::Malformed),
                "exp {bad}"
            );
        }
    }

    #[test]
    fn an_mc_service_id_claim_that_is_empty_or_padded_is_malformed() {
        let lab = lab();
        let v = validator_with(&lab, |_| {});
        for bad in ["", " sip:alice@example.org", "sip:alice@example.org "] {
            let t = token_with(&lab, |c| c["mcvideo_id"] = json!(bad));
            assert_eq!(
                v.validate(&t, NOW),
                TokenVerdict::Rejected(TokenRejection::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_resource_server_needs_one_mc_service_id_and_gets_each_as_sent() {
        // TS 33.180 5.1.3.1 C-4: the KMS, CM and GM servers read the MC service ID claims.
        let lab = lab();
        let v = validator_with(&lab, |_| {});
        let only_mcdata = token_with(&lab, |c| {
            let o = c.as_object_mut().unwrap();
            o.remove("mcptt_id");
            o.remove("mcvideo_id");
            o["scope"] = json!(["openid", "3gpp:mcdata"]);
        });
        let r = v
            .validate_resource(&only_mcdata, NOW)
            .expect("one ID is enough");
        assert_eq!(r.mc_id(Service::Mcdata), Some(&McId::new(ALICE)));
        assert_eq!(r.mc_id(Service::Mcptt), None);
        assert_eq!(r.mc_id(Service::Mcvideo), None);
        assert_eq!(r.scope_values, ["openid", "3gpp:mcdata"]);
        assert_eq!(r.exp, UnixTime(NOW.0 + 3600));
        let mcvideo = token_with(&lab, |c| {
            c.as_object_mut().unwrap().remove("mcptt_id");
            c["mcvideo_id"] = json!("sip:bob@example.org");
        });
        let r = v.validate_resource(&mcvideo, NOW).unwrap();
        assert_eq!(
            r.mc_id(Service::Mcvideo),
            Some(&McId::new("sip:bob@example.org"))
        );
        let none = token_with(&lab, |c| {
            let o = c.as_object_mut().unwrap();
            for k in ["mcptt_id", "mcvideo_id", "mcdata_id"] {
                o.remove(k);
            }
        });
        assert_eq!(
            verdict_of(v.validate_resource(&none, NOW)),
            Err(TokenRejection::MissingMcId)
        );
        assert_eq!(
            v.stats().rejections,
            [(TokenRejection::MissingMcId.label(), 1)]
        );
    }

    #[test]
    fn one_mc_service_id_of_any_service_is_enough_on_the_sip_path() {
        // TS 33.180 B.4.2.2: the token carries the MC service ID of each service it grants; a
        // token for MCVideo or MCData alone has no mcptt_id, and is not refused for that.
        let lab = lab();
        let v = validator_with(&lab, |_| {});
        for only in ["mcptt_id", "mcvideo_id", "mcdata_id"] {
            let t = token_with(&lab, |c| {
                let o = c.as_object_mut().unwrap();
                for k in ["mcptt_id", "mcvideo_id", "mcdata_id"] {
                    if k != only {
                        o.remove(k);
                    }
                }
            });
            let TokenVerdict::Verified(c) = v.validate(&t, NOW) else {
                panic!("{only} alone: {:?}", v.validate(&t, NOW));
            };
            let ids = [&c.mcptt_id, &c.mcvideo_id, &c.mcdata_id];
            assert_eq!(ids.iter().filter(|i| i.is_some()).count(), 1, "{only}");
        }
    }

    #[test]
    fn the_rel13_scope_grants_mcptt_only_when_configured_and_only_itself() {
        // Rel-13 IdMSs grant MCPTT with `3gpp:mcptt:ptt_server` (accept_rel13_scope); no other
        // scope value grants MCPTT through it.
        let lab = lab();
        let with_scope = |scope: &str| token_with(&lab, |c| c["scope"] = json!(scope));
        let rel13 = validator_with(&lab, |c| c.accept_rel13_scope = true);
        let plain = validator_with(&lab, |_| {});
        let scopes = |v: &Validator, t: &str| match v.validate(t, NOW) {
            TokenVerdict::Verified(c) => Ok(c.scopes),
            TokenVerdict::Rejected(r) => Err(r),
        };
        let ptt = with_scope(&format!("openid {REL13_PTT_SCOPE}"));
        assert!(scopes(&rel13, &ptt).unwrap().contains(Service::Mcptt));
        assert_eq!(scopes(&plain, &ptt), Err(TokenRejection::MissingScope));
        let video = with_scope(&format!("openid {}", Service::Mcvideo.scope()));
        let s = scopes(&rel13, &video).unwrap();
        assert!(
            s.contains(Service::Mcvideo) && !s.contains(Service::Mcptt),
            "{s:?}"
        );
    }

    #[test]
    fn an_empty_jti_is_no_token_id_and_the_digest_names_the_token() {
        // RFC 7519 4.1.7: jti is the token's unique identifier; an empty one identifies nothing,
        // so the token is named by its SHA-256, as a token without jti is.
        let lab = lab();
        let v = validator_with(&lab, |_| {});
        for jti in [Some(""), None] {
            let t = token_with(&lab, |c| match jti {
                Some(j) => c["jti"] = json!(j),
                None => {
                    c.as_object_mut().unwrap().remove("jti");
                }
            });
            let TokenVerdict::Verified(c) = v.validate(&t, NOW) else {
                panic!("{jti:?}");
            };
            assert_eq!(c.token_id, TokenId::new(hex(&digest(&t))), "{jti:?}");
        }
        let named = token_with(&lab, |c| c["jti"] = json!("t-1"));
        let TokenVerdict::Verified(c) = v.validate(&named, NOW) else {
            panic!("named");
        };
        assert_eq!(c.token_id, TokenId::new("t-1"));
    }

    #[test]
    fn a_signature_that_is_not_base64url_is_malformed_not_a_bad_signature() {
        let lab = lab();
        let v = validator_with(&lab, |_| {});
        let t = token(&lab);
        let head = &t[..t.rfind('.').unwrap()];
        assert_eq!(
            v.validate(&format!("{head}.!!!!"), NOW),
            TokenVerdict::Rejected(TokenRejection::Malformed)
        );
        assert_eq!(
            v.validate(&format!("{head}.AAAA"), NOW),
            TokenVerdict::Rejected(TokenRejection::BadSignature)
        );
    }

    #[test]
    fn debug_names_the_policy_not_the_keys() {
        let lab = lab();
        let v = validator_with(&lab, |_| {});
        let text = format!("{v:?}");
        assert!(text.starts_with("Validator"), "{text}");
        assert!(
            text.contains("ES256") && text.contains(lab.issuer()),
            "{text}"
        );
        assert!(text.contains("keys: 1"), "{text}");
    }
}
