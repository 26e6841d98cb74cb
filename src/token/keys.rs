//! Trusted IdMS keys: parsed from a JWKS (file, inline or URL) or a PEM public key.

use std::sync::Arc;
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
