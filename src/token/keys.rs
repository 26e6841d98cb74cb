//! Trusted IdMS keys: parsed from a JWKS (file, inline or URL) or a PEM public key; the key store
//! the validator reads and the JWKS refresher thread that keeps it current.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::config::TokenConfigError;

/// Largest JWKS document accepted from a URL.
const MAX_JWKS_BYTES: u64 = 1 << 20;

/// One public key the validator trusts.
#[derive(Clone)]
pub(crate) struct TrustedKey {
    /// The JWK `kid`, if any.
    pub kid: Option<String>,
    /// The JWK `alg`, if the key is pinned to one algorithm.
    pub alg: Option<Algorithm>,
    /// The key family (never HMAC).
    pub family: AlgorithmFamily,
    /// The parsed key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish()
    }
}

/// Parses an allow-list entry. `none` and HMAC are never allowed: with them a public key could
/// be used as a shared secret (algorithm confusion).
pub(crate) fn parse_allowed_alg(name: &str) -> Result<Algorithm, TokenConfigError> {
    let alg = match name {
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(TokenConfigError::BadAlgorithm(name.to_owned())),
    };
    Ok(alg)
}

/// Maps a JWS header `alg` string to an algorithm, whether or not it is allowed.
pub(crate) fn header_alg(name: &str) -> Option<Algorithm> {
    parse_allowed_alg(name).ok()
}

/// Parses a JWKS document. Keys meant for encryption (`use: enc`), symmetric keys and keys of
/// unsupported types are skipped; a document with no usable key is an error.
pub(crate) fn parse_jwks(text: &str) -> Result<Vec<TrustedKey>, TokenConfigError> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| TokenConfigError::BadKey(format!("JWKS: {e}")))?;
    let entries = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| TokenConfigError::BadKey("JWKS has no \"keys\" array".into()))?;
    let mut out = Vec::new();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            tracing::warn!(?entry, "skipping a JWK that does not parse");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            // Symmetric (`oct`) keys are never trusted: HMAC is not on any allow-list.
            _ => continue,
        };
        let alg = match jwk.common.key_algorithm {
            Some(ka) => match serde_json::to_value(ka)
                .ok()
                .and_then(|v| v.as_str().and_then(header_alg))
            {
                Some(a) if a.family() == family => Some(a),
                _ => {
                    tracing::warn!(kid = ?jwk.common.key_id, "skipping a JWK whose alg does not fit its key type");
                    continue;
                }
            },
            None => None,
        };
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| TokenConfigError::BadKey(format!("JWK {:?}: {e}", jwk.common.key_id)))?;
        out.push(TrustedKey {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            key,
        });
    }
    if out.is_empty() {
        return Err(TokenConfigError::BadKey(
            "JWKS holds no usable signature key".into(),
        ));
    }
    Ok(out)
}

type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// Parses a PEM public key (EC, RSA or Ed25519, tried in that order).
pub(crate) fn parse_public_pem(
    pem_text: &[u8],
    kid: Option<String>,
) -> Result<TrustedKey, TokenConfigError> {
    let attempts: [(AlgorithmFamily, PemParser); 3] = [
        (AlgorithmFamily::Ec, DecodingKey::from_ec_pem),
        (AlgorithmFamily::Rsa, DecodingKey::from_rsa_pem),
        (AlgorithmFamily::Ed, DecodingKey::from_ed_pem),
    ];
    for (family, parse) in attempts {
        if let Ok(key) = parse(pem_text) {
            return Ok(TrustedKey {
                kid,
                alg: None,
                family,
                key,
            });
        }
    }
    Err(TokenConfigError::BadKey(
        "not an EC, RSA or Ed25519 PEM public key".into(),
    ))
}

/// A blocking HTTP(S) client for the IdMS's JWKS URL, with a bounded timeout and body size.
pub(crate) struct JwksFetcher {
    url: String,
    agent: ureq::Agent,
}

impl JwksFetcher {
    /// A fetcher for `url` whose every fetch ends within `timeout`.
    pub fn new(url: String, timeout: Duration) -> JwksFetcher {
        let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(crypto)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .tls_config(tls)
            .build()
            .into();
        JwksFetcher { url, agent }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetches and parses the JWKS.
    pub fn fetch(&self) -> Result<Vec<TrustedKey>, TokenConfigError> {
        let err = |reason: String| TokenConfigError::Fetch {
            url: self.url.clone(),
            reason,
        };
        let mut resp = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| err(e.to_string()))?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_JWKS_BYTES)
            .read_to_string()
            .map_err(|e| err(e.to_string()))?;
        parse_jwks(&text)
    }
}

/// The keys the validator trusts now: the static ones (lab, file, inline, PEM) plus the last
/// good set fetched from the JWKS URL. Shared between the validator and its refresher thread.
pub(crate) struct KeyStore {
    static_keys: Vec<TrustedKey>,
    keys: RwLock<Arc<Vec<TrustedKey>>>,
    /// Bumped whenever a key goes away: the validator then empties its verified-token cache (a
    /// token signed by a withdrawn key must be checked again).
    withdrawals: AtomicU64,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl KeyStore {
    /// A store holding `static_keys` plus `fetched`.
    pub fn new(static_keys: Vec<TrustedKey>, fetched: Vec<TrustedKey>, fetches: u64) -> KeyStore {
        let mut all = static_keys.clone();
        all.extend(fetched);
        KeyStore {
            static_keys,
            keys: RwLock::new(Arc::new(all)),
            withdrawals: AtomicU64::new(0),
            fetches: AtomicU64::new(fetches),
            failures: AtomicU64::new(0),
        }
    }

    /// The keys now.
    pub fn current(&self) -> Arc<Vec<TrustedKey>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times a key went away so far.
    pub fn withdrawals(&self) -> u64 {
        self.withdrawals.load(Ordering::Acquire)
    }

    /// Fetches so far (successful or not).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Failed fetches so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Fetches with `fetcher` and installs the result; on failure the keys stay as they are
    /// (the last good set). Returns the number of trusted keys.
    fn refresh(&self, fetcher: &JwksFetcher) -> Result<usize, TokenConfigError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match fetcher.fetch() {
            Ok(fetched) => Ok(self.install(fetched)),
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    url = fetcher.url(),
                    "JWKS fetch failed, keeping the last good keys: {e}"
                );
                Err(e)
            }
        }
    }

    fn install(&self, fetched: Vec<TrustedKey>) -> usize {
        let mut all = self.static_keys.clone();
        all.extend(fetched);
        let n = all.len();
        let mut guard = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let withdrawn = guard.iter().any(|old| {
            !all.iter()
                .any(|new| new.kid == old.kid && new.family == old.family)
        });
        *guard = Arc::new(all);
        drop(guard);
        if withdrawn {
            self.withdrawals.fetch_add(1, Ordering::AcqRel);
        }
        n
    }
}

type RefreshReply = mpsc::SyncSender<Result<usize, TokenConfigError>>;

/// The JWKS refresher: a dedicated thread (`jwks-refresh`) that owns the blocking fetch, so no
/// async runtime thread ever waits on the IdMS. It fetches every `interval` (when not zero) and
/// whenever asked ([`Refresher::request`]); a failed fetch keeps the last good key set. The
/// thread ends when the refresher is dropped.
pub(crate) struct Refresher {
    tx: Mutex<mpsc::Sender<Option<RefreshReply>>>,
    timeout: Duration,
}

impl Refresher {
    /// Starts the thread.
    pub fn start(
        store: Arc<KeyStore>,
        fetcher: JwksFetcher,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Refresher, TokenConfigError> {
        let (tx, rx) = mpsc::channel::<Option<RefreshReply>>();
        std::thread::Builder::new()
            .name("jwks-refresh".into())
            .spawn(move || loop {
                let asked = if interval.is_zero() {
                    rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(interval)
                };
                match asked {
                    Ok(reply) => {
                        let result = store.refresh(&fetcher);
                        if let Some(reply) = reply {
                            let _ = reply.try_send(result);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let _ = store.refresh(&fetcher);
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|e| {
                TokenConfigError::Invalid(format!("cannot start the JWKS refresher: {e}"))
            })?;
        Ok(Refresher {
            tx: Mutex::new(tx),
            timeout,
        })
    }

    /// Asks for a fetch now and waits for its outcome (at most the fetch timeout and a second).
    /// Inside a multi-threaded tokio runtime the wait goes through `block_in_place`, so the
    /// runtime moves its other tasks to another thread meanwhile; inside a current-thread runtime
    /// it does not wait (the fetch still happens, and its keys serve the next token).
    pub fn request(&self) -> Option<Result<usize, TokenConfigError>> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Some(reply_tx));
        if sent.is_err() {
            return None;
        }
        let wait = || {
            reply_rx
                .recv_timeout(self.timeout + Duration::from_secs(1))
                .ok()
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            Ok(_) => None,
            Err(_) => wait(),
        }
    }
}
