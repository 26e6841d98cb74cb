//! SIP over TLS (RFC 3261 26.3.1, TS 33.210 for the SIP core links): rustls on the aws-lc-rs
//! provider already used for JWS, through tokio-rustls. A TLS listener may ask clients for a
//! certificate; a client whose certificate chains to `client_ca` **and** is named by the
//! listener's `trusted_client_names` (a DNS name the certificate is valid for) or
//! `trusted_client_sha256` (the SHA-256 of its DER) is a trusted SIP core, whatever its source
//! address. Every other client is judged by `[sip] trusted_cores` (its address) like TCP.
//!
//! The lab certificates (a CA, a server and a client certificate) come from [`lab_certificates`]
//! (`mcx-authz tls-lab-certs`, rcgen).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

/// One `[[sip.tls]]` listener.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// The server certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. Without it no client
    /// certificate is asked for, and trust is by source address only.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Require a client certificate (chaining to `client_ca`) of every client.
    #[serde(default)]
    pub require_client_cert: bool,
    /// DNS names (subjectAltName) of client certificates that are trusted SIP cores.
    #[serde(default)]
    pub trusted_client_names: Vec<String>,
    /// SHA-256 fingerprints (hex, `:` allowed) of client certificates that are trusted SIP cores.
    #[serde(default)]
    pub trusted_client_sha256: Vec<String>,
}

/// A TLS listener ready to accept: the rustls acceptor and the trust rule for client
/// certificates.
#[derive(Clone)]
pub struct TlsListener {
    /// The acceptor.
    pub acceptor: tokio_rustls::TlsAcceptor,
    names: Vec<String>,
    fingerprints: Vec<[u8; 32]>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("names", &self.names)
            .field("fingerprints", &self.fingerprints.len())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("PEM certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

fn parse_fingerprint(text: &str) -> anyhow::Result<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    anyhow::ensure!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "trusted_client_sha256 {text:?} is not 32 bytes of hex"
    );
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TlsListener {
    /// Loads the certificates and builds the rustls server configuration.
    pub fn new(cfg: &TlsListenerConfig) -> anyhow::Result<TlsListener> {
        let certs = read_certs(&cfg.cert)?;
        let key = PrivateKeyDer::from_pem_file(&cfg.key)
            .with_context(|| format!("private key in {}", cfg.key.display()))?;
        let names = cfg.trusted_client_names.clone();
        for n in &names {
            ServerName::try_from(n.as_str())
                .with_context(|| format!("trusted_client_names: {n:?} is not a DNS name"))?;
        }
        let fingerprints = cfg
            .trusted_client_sha256
            .iter()
            .map(|f| parse_fingerprint(f))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let config = match &cfg.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots.add(c).context("client_ca certificate")?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                );
                let verifier = if cfg.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(verifier.build().context("client verifier")?)
            }
            None => {
                anyhow::ensure!(
                    names.is_empty() && fingerprints.is_empty() && !cfg.require_client_cert,
                    "trusted_client_names, trusted_client_sha256 and require_client_cert need client_ca"
                );
                builder.with_no_client_auth()
            }
        };
        let config = config
            .with_single_cert(certs, key)
            .context("server certificate and key")?;
        Ok(TlsListener {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            names,
            fingerprints,
        })
    }

    /// Whether the (already chain-verified) client certificate `leaf` makes its sender a
    /// trusted SIP core.
    pub fn trusts(&self, leaf: Option<&CertificateDer<'_>>) -> bool {
        let Some(leaf) = leaf else { return false };
        if self.fingerprints.contains(&fingerprint(leaf)) {
            return true;
        }
        if self.names.is_empty() {
            return false;
        }
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
            return false;
        };
        self.names.iter().any(|n| {
            ServerName::try_from(n.as_str())
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }
}

/// Lab certificates made by [`lab_certificates`], PEM.
#[derive(Debug)]
pub struct LabCertificates {
    /// The lab CA (signs both below; give it as `client_ca` and to the SIP core as its CA).
    pub ca_cert: String,
    /// The server certificate (for `server_names` and 127.0.0.1, ::1).
    pub server_cert: String,
    /// The server's private key (PKCS#8).
    pub server_key: String,
    /// The client (SIP core) certificate, for `client_name`.
    pub client_cert: String,
    /// The client's private key (PKCS#8).
    pub client_key: String,
}

/// Makes a lab CA, a server certificate for `server_names` (plus loopback addresses) and a
/// client certificate for `client_name` (ECDSA P-256, valid for ten years). For labs and tests
/// only: the CA key is thrown away.
pub fn lab_certificates(
    server_names: &[String],
    client_name: &str,
) -> anyhow::Result<LabCertificates> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "mcx-authz lab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let leaf = |names: Vec<String>,
                ips: &[std::net::IpAddr],
                usage: ExtendedKeyUsagePurpose|
     -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names.clone())?;
        for ip in ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        if let Some(cn) = names.first() {
            p.distinguished_name.push(DnType::CommonName, cn.clone());
        }
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let loopback = [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    let (server_cert, server_key) = leaf(
        server_names.to_vec(),
        &loopback,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_cert, client_key) = leaf(
        vec![client_name.to_owned()],
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(LabCertificates {
        ca_cert: ca_cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}

impl LabCertificates {
    /// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut written = Vec::new();
        for (name, text, secret) in [
            ("ca.pem", &self.ca_cert, false),
            ("server.pem", &self.server_cert, false),
            ("server.key", &self.server_key, true),
            ("client.pem", &self.client_cert, false),
            ("client.key", &self.client_key, true),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            if secret {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_certificates_load_and_trust_by_name_or_fingerprint() {
        let lab = lab_certificates(&["mcx.example.org".into()], "core.ims.example.org").unwrap();
        let dir = std::env::temp_dir().join(format!("mcx-tls-unit-{}", std::process::id()));
        lab.write(&dir).unwrap();
        let client = CertificateDer::from_pem_slice(lab.client_cert.as_bytes()).unwrap();
        let server = CertificateDer::from_pem_slice(lab.server_cert.as_bytes()).unwrap();
        let cfg = |names: Vec<String>, sha: Vec<String>| TlsListenerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: Some(dir.join("ca.pem")),
            require_client_cert: false,
            trusted_client_names: names,
            trusted_client_sha256: sha,
        };
        let by_name = TlsListener::new(&cfg(vec!["core.ims.example.org".into()], vec![])).unwrap();
        assert!(by_name.trusts(Some(&client)));
        assert!(!by_name.trusts(Some(&server)), "another certificate");
        assert!(!by_name.trusts(None), "no certificate");
        let hex: String = fingerprint(&client)
            .iter()
            .map(|b| format!("{b:02X}:"))
            .collect();
        let by_pin =
            TlsListener::new(&cfg(vec![], vec![hex.trim_end_matches(':').into()])).unwrap();
        assert!(by_pin.trusts(Some(&client)));
        assert!(!by_pin.trusts(Some(&server)));
        let nobody = TlsListener::new(&cfg(vec![], vec![])).unwrap();
        assert!(
            !nobody.trusts(Some(&client)),
            "a verified certificate alone is not trust"
        );
        assert!(TlsListener::new(&cfg(vec![], vec!["abcd".into()])).is_err());
        let mut no_ca = cfg(vec!["core.ims.example.org".into()], vec![]);
        no_ca.client_ca = None;
        assert!(
            TlsListener::new(&no_ca).is_err(),
            "names need a CA to verify against"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
