//! The lab IdMS: key generation, a JWKS, and minting of signed access tokens (TS 33.180 B.2.2)
//! so that a lab without an IdMS gets a working token in one command.
//!
//! Keys live in a data dir (default `./mcx-lab/`): `idms-es256.pem` (PKCS#8 private key; one file
//! per algorithm, e.g. `idms-rs256.pem`) and `jwks.json` (the public keys, each with a `kid`,
//! the RFC 7638 thumbprint). Keys are made with aws-lc-rs, the backend jsonwebtoken already uses.
//! Each key is parsed once, so minting costs one signature (≈ 50 µs for ES256).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512,
    RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use mcx_model::{Service, UnixTime};
use serde_json::{json, Value};

use super::config::{TokenConfigError, ValidatorConfig, LAB_ISSUER};

/// The JWKS file in the data dir.
pub const JWKS_FILE: &str = "jwks.json";

/// The `client_id` put in minted tokens unless the request names one.
pub const LAB_CLIENT_ID: &str = "mcx-lab-client";

/// Algorithms the lab IdMS can make keys for.
pub const LAB_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

fn lab_err(e: impl std::fmt::Display) -> TokenConfigError {
    TokenConfigError::Lab(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TokenConfigError + '_ {
    move |source| TokenConfigError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The JOSE name of an algorithm (`ES256`, `EdDSA`, …).
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

/// Parses a JOSE algorithm name that the lab can sign with.
pub fn parse_lab_alg(name: &str) -> Result<Algorithm, TokenConfigError> {
    LAB_ALGORITHMS
        .into_iter()
        .find(|a| alg_name(*a).eq_ignore_ascii_case(name))
        .ok_or_else(|| TokenConfigError::BadAlgorithm(name.to_owned()))
}

/// The key file for `alg` in a data dir (`idms-es256.pem`).
pub fn key_file_name(alg: Algorithm) -> String {
    format!("idms-{}.pem", alg_name(alg).to_ascii_lowercase())
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One lab signing key: parsed once, reused for every token.
pub struct LabKey {
    alg: Algorithm,
    kid: String,
    pkcs8: Vec<u8>,
    signer: Signer,
    jwk: Value,
}

impl std::fmt::Debug for LabKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish()
    }
}

impl LabKey {
    /// Generates a fresh key for `alg` (RSA keys are 2048-bit).
    pub fn generate(alg: Algorithm) -> Result<LabKey, TokenConfigError> {
        let pkcs8: Vec<u8> = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let kp = EcdsaKeyPair::generate(ec_signing(alg)).map_err(lab_err)?;
                kp.to_pkcs8v1().map_err(lab_err)?.as_ref().to_vec()
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(lab_err)?;
                let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).map_err(lab_err)?;
                der.as_ref().to_vec()
            }
            Algorithm::EdDSA => {
                let kp = Ed25519KeyPair::generate().map_err(lab_err)?;
                kp.to_pkcs8v1().map_err(lab_err)?.as_ref().to_vec()
            }
            _ => return Err(TokenConfigError::BadAlgorithm(alg_name(alg).into())),
        };
        LabKey::from_pkcs8(alg, &pkcs8)
    }

    /// Parses a PKCS#8 (DER) private key for `alg`.
    pub fn from_pkcs8(alg: Algorithm, der: &[u8]) -> Result<LabKey, TokenConfigError> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let (signer, thumb_input, mut jwk) = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let kp = EcdsaKeyPair::from_pkcs8(ec_signing(alg), der).map_err(lab_err)?;
                let public = kp.public_key().as_ref();
                let n = (public.len() - 1) / 2;
                let (x, y) = (b64(&public[1..1 + n]), b64(&public[1 + n..]));
                let crv = if alg == Algorithm::ES256 {
                    "P-256"
                } else {
                    "P-384"
                };
                let thumb = format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#);
                let jwk = json!({"kty": "EC", "crv": crv, "x": x, "y": y});
                (Signer::Ecdsa(kp), thumb, jwk)
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let kp = RsaKeyPair::from_pkcs8(der).map_err(lab_err)?;
                let comps = PublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                let (n, e) = (b64(&comps.n), b64(&comps.e));
                let thumb = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
                let jwk = json!({"kty": "RSA", "n": n, "e": e});
                (Signer::Rsa(kp), thumb, jwk)
            }
            Algorithm::EdDSA => {
                let kp = Ed25519KeyPair::from_pkcs8(der).map_err(lab_err)?;
                let x = b64(kp.public_key().as_ref());
                let thumb = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
                (Signer::Ed25519(kp), thumb, jwk)
            }
            _ => return Err(TokenConfigError::BadAlgorithm(alg_name(alg).into())),
        };
        // RFC 7638 thumbprint as the kid.
        let kid = b64(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            thumb_input.as_bytes(),
        )
        .as_ref());
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg_name(alg));
        jwk["use"] = json!("sig");
        Ok(LabKey {
            alg,
            kid,
            pkcs8: der.to_vec(),
            signer,
            jwk,
        })
    }

    /// Parses a `PRIVATE KEY` PEM for `alg`.
    pub fn from_pem(alg: Algorithm, text: &str) -> Result<LabKey, TokenConfigError> {
        let p = pem::parse(text).map_err(lab_err)?;
        if p.tag() != "PRIVATE KEY" {
            return Err(lab_err(format!(
                "expected a PKCS#8 PRIVATE KEY PEM, found {}",
                p.tag()
            )));
        }
        LabKey::from_pkcs8(alg, p.contents())
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM.
    pub fn private_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// The public key as an SPKI `PUBLIC KEY` PEM (for `public_key_pem` configurations).
    pub fn public_pem(&self) -> String {
        let der: Result<PublicKeyX509Der<'static>, _> = match &self.signer {
            Signer::Ecdsa(kp) => kp.public_key().as_der(),
            Signer::Rsa(kp) => kp.public_key().as_der(),
            Signer::Ed25519(kp) => kp.public_key().as_der(),
        };
        // as_der only fails on allocation failure for keys we parsed ourselves.
        let der = der.map(|d| d.as_ref().to_vec()).unwrap_or_default();
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }

    /// The signing algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The key ID (RFC 7638 SHA-256 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (with `kid`, `alg`, `use`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `message` (the JWS signing input) with this key.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TokenConfigError> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ecdsa(kp) => Ok(kp.sign(&rng, message).map_err(lab_err)?.as_ref().to_vec()),
            Signer::Ed25519(kp) => Ok(kp.sign(message).as_ref().to_vec()),
            Signer::Rsa(kp) => {
                let padding: &'static dyn aws_lc_rs::signature::RsaEncoding = match self.alg {
                    Algorithm::RS256 => &RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &RSA_PSS_SHA256,
                    Algorithm::PS384 => &RSA_PSS_SHA384,
                    _ => &RSA_PSS_SHA512,
                };
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(padding, &rng, message, &mut sig).map_err(lab_err)?;
                Ok(sig)
            }
        }
    }

    /// Signs a JWS compact serialization of `header` and `claims` as given (test tooling: the
    /// header is not adjusted, so it may name any `alg` or `kid`).
    pub fn sign_jws(&self, header: &Value, claims: &Value) -> Result<String, TokenConfigError> {
        let mut out = String::with_capacity(512);
        out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).map_err(lab_err)?));
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(lab_err)?));
        let sig = self.sign(out.as_bytes())?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }

    /// The header this key puts on tokens.
    pub fn header(&self) -> Value {
        json!({"alg": alg_name(self.alg), "typ": "JWT", "kid": self.kid})
    }
}

fn ec_signing(alg: Algorithm) -> &'static aws_lc_rs::signature::EcdsaSigningAlgorithm {
    if alg == Algorithm::ES384 {
        &ECDSA_P384_SHA384_FIXED_SIGNING
    } else {
        &ECDSA_P256_SHA256_FIXED_SIGNING
    }
}

/// What to put in a minted access token.
#[derive(Clone, Debug, Default)]
pub struct MintRequest {
    /// The `mcptt_id` claim (MCPTT ID).
    pub mcptt_id: Option<String>,
    /// The `mcvideo_id` claim (MCVideo ID).
    pub mcvideo_id: Option<String>,
    /// The `mcdata_id` claim (MCData ID).
    pub mcdata_id: Option<String>,
    /// The `scope` values. `None`: the scope of each service whose MC service ID is given.
    pub scopes: Option<Vec<String>>,
    /// `iat`; `None`: the system clock.
    pub iat: Option<UnixTime>,
    /// `exp`; `None`: `iat + expires_in`.
    pub exp: Option<UnixTime>,
    /// Lifetime when `exp` is not given; `None`: 3600 s.
    pub expires_in: Option<u64>,
    /// `nbf`, if wanted.
    pub nbf: Option<UnixTime>,
    /// `aud` values: none → no claim; one → a string; more → an array.
    pub aud: Vec<String>,
    /// `iss`; `None`: [`LAB_ISSUER`].
    pub iss: Option<String>,
    /// `jti`; `None`: 128 random bits in hex.
    pub jti: Option<String>,
    /// Leave `jti` out altogether.
    pub no_jti: bool,
    /// `sub`, if wanted.
    pub sub: Option<String>,
    /// `client_id`; `None`: [`LAB_CLIENT_ID`].
    pub client_id: Option<String>,
    /// The signing algorithm; `None`: the lab's first key (ES256 unless made otherwise).
    pub alg: Option<Algorithm>,
}

impl MintRequest {
    /// A request for an MCPTT, MCVideo and MCData token of one user (all three IDs the same URI,
    /// all three scopes), valid for an hour from `iat`.
    pub fn all_services(mc_id: &str, iat: UnixTime) -> MintRequest {
        MintRequest {
            mcptt_id: Some(mc_id.to_owned()),
            mcvideo_id: Some(mc_id.to_owned()),
            mcdata_id: Some(mc_id.to_owned()),
            iat: Some(iat),
            ..MintRequest::default()
        }
    }

    /// The claims object this request makes.
    pub fn claims(&self, default_issuer: &str) -> Value {
        let iat = self.iat.map(|t| t.0).unwrap_or_else(system_now);
        let exp = self
            .exp
            .map(|t| t.0)
            .unwrap_or_else(|| iat.saturating_add(self.expires_in.unwrap_or(3600)));
        let scopes = match &self.scopes {
            Some(s) => s.join(" "),
            None => {
                let ids = [
                    (Service::Mcptt, &self.mcptt_id),
                    (Service::Mcvideo, &self.mcvideo_id),
                    (Service::Mcdata, &self.mcdata_id),
                ];
                let mut s = String::from("openid");
                for (svc, id) in ids {
                    if id.is_some() {
                        let _ = write!(s, " {}", svc.scope());
                    }
                }
                s
            }
        };
        let mut c = json!({
            "iss": self.iss.as_deref().unwrap_or(default_issuer),
            "iat": iat,
            "exp": exp,
            "scope": scopes,
            "client_id": self.client_id.as_deref().unwrap_or(LAB_CLIENT_ID),
        });
        if let Some(v) = &self.mcptt_id {
            c["mcptt_id"] = json!(v);
        }
        if let Some(v) = &self.mcvideo_id {
            c["mcvideo_id"] = json!(v);
        }
        if let Some(v) = &self.mcdata_id {
            c["mcdata_id"] = json!(v);
        }
        if let Some(v) = self.nbf {
            c["nbf"] = json!(v.0);
        }
        match self.aud.as_slice() {
            [] => {}
            [one] => c["aud"] = json!(one),
            many => c["aud"] = json!(many),
        }
        if let Some(v) = &self.sub {
            c["sub"] = json!(v);
        }
        if !self.no_jti {
            let jti = match &self.jti {
                Some(j) => j.clone(),
                None => format!("{:032x}", rand::random::<u128>()),
            };
            c["jti"] = json!(jti);
        }
        c
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The lab IdMS: one or more signing keys, their JWKS, and the lab issuer.
#[derive(Debug)]
pub struct LabIdms {
    dir: Option<PathBuf>,
    issuer: String,
    keys: Vec<LabKey>,
}

impl LabIdms {
    /// Opens the lab IdMS in `dir`, creating the directory and an ES256 key on first use, and
    /// (re)writes `jwks.json` when it does not match the keys.
    pub fn open_or_create(dir: &Path) -> Result<LabIdms, TokenConfigError> {
        let mut lab = LabIdms::open(dir)?;
        if lab.keys.is_empty() {
            lab = LabIdms::keygen(dir, Algorithm::ES256, false)?;
        }
        Ok(lab)
    }

    /// Opens the keys present in `dir` (possibly none).
    pub fn open(dir: &Path) -> Result<LabIdms, TokenConfigError> {
        let mut keys = Vec::new();
        for alg in LAB_ALGORITHMS {
            let path = dir.join(key_file_name(alg));
            match std::fs::read_to_string(&path) {
                Ok(text) => keys.push(
                    LabKey::from_pem(alg, &text)
                        .map_err(|e| lab_err(format!("{}: {e}", path.display())))?,
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        let lab = LabIdms {
            dir: Some(dir.to_owned()),
            issuer: LAB_ISSUER.to_owned(),
            keys,
        };
        if !lab.keys.is_empty() {
            lab.write_jwks_if_changed()?;
        }
        Ok(lab)
    }

    /// Makes a key for `alg` in `dir` (keeping an existing one unless `force`), and rewrites
    /// `jwks.json`. Private key files are created with mode 0600 on Unix.
    pub fn keygen(dir: &Path, alg: Algorithm, force: bool) -> Result<LabIdms, TokenConfigError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(key_file_name(alg));
        if force || !path.exists() {
            let key = LabKey::generate(alg)?;
            write_private(&path, key.private_pem().as_bytes())?;
        }
        let mut lab = LabIdms::open(dir)?;
        // Put the requested algorithm's key first, so it is the minting default of this value.
        if let Some(pos) = lab.keys.iter().position(|k| k.alg == alg) {
            let k = lab.keys.remove(pos);
            lab.keys.insert(0, k);
        }
        Ok(lab)
    }

    /// A lab IdMS held only in memory, with a fresh key per algorithm (tests, load generators).
    pub fn ephemeral(algs: &[Algorithm]) -> Result<LabIdms, TokenConfigError> {
        let keys = algs
            .iter()
            .map(|a| LabKey::generate(*a))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabIdms {
            dir: None,
            issuer: LAB_ISSUER.to_owned(),
            keys,
        })
    }

    /// The data dir, when the lab lives on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The issuer minted tokens carry by default.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing keys, minting default first.
    pub fn keys(&self) -> &[LabKey] {
        &self.keys
    }

    /// The key for `alg`, if the lab has one.
    pub fn key(&self, alg: Algorithm) -> Option<&LabKey> {
        self.keys.iter().find(|k| k.alg == alg)
    }

    /// The public JWKS of every lab key.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }

    /// A validator configuration that trusts exactly this lab IdMS (inline JWKS, lab issuer).
    pub fn validator_config(&self) -> ValidatorConfig {
        ValidatorConfig {
            jwks_json: Some(self.jwks().to_string()),
            trust_lab_idms: Some(false),
            issuer: Some(self.issuer.clone()),
            data_dir: self
                .dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(super::config::DEFAULT_DATA_DIR)),
            ..ValidatorConfig::default()
        }
    }

    /// Mints a signed access token.
    pub fn mint(&self, req: &MintRequest) -> Result<String, TokenConfigError> {
        let key = match req.alg {
            Some(alg) => self.key(alg).ok_or_else(|| {
                lab_err(format!(
                    "the lab has no {} key (run token keygen --alg {})",
                    alg_name(alg),
                    alg_name(alg)
                ))
            })?,
            None => self
                .keys
                .first()
                .ok_or_else(|| lab_err("the lab has no key"))?,
        };
        key.sign_jws(&key.header(), &req.claims(&self.issuer))
    }

    fn write_jwks_if_changed(&self) -> Result<(), TokenConfigError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(JWKS_FILE);
        let text = serde_json::to_string_pretty(&self.jwks()).map_err(lab_err)? + "\n";
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TokenConfigError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))
}
