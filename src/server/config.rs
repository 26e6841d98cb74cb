//! The server's configuration: a TOML file whose every table has embedded defaults, so
//! `mcx-authz serve` with no file runs a complete lab server on loopback.
//!
//! ```toml
//! [sip]
//! udp = ["127.0.0.1:5060"]
//! tcp = ["127.0.0.1:5060"]
//! host = "mcx.example.org"            # Warning header host, Server identity
//! trusted_cores = ["127.0.0.0/8", "::1/128"]
//!
//! [[sip.tls]]                        # optional SIP over TLS listeners (server::tls)
//! listen = "127.0.0.1:5061"
//! cert = "tls/server.pem"
//! key = "tls/server.key"
//! client_ca = "tls/ca.pem"
//! trusted_client_names = ["core.ims.example.org"]   # or trusted_client_sha256 = ["ab:cd:…"]
//!
//! [sip.psi]                          # participating-function PSI per service
//! mcptt = "sip:mcptt@mcx.example.org"
//!
//! [admin]
//! listen = "127.0.0.1:8080"
//!
//! [http]                             # KMS, CM and GM servers (crate::resource::HttpConfig)
//! listen = "127.0.0.1:8090"
//! tls_cert = "mcx-lab/http/cert.pem" # with tls_key: HTTPS only
//! tls_key = "mcx-lab/http/key.pem"
//!
//! [policy]
//! variant = "post-cr"                # post-cr: token_protection = "required" (TS 33.180 clause 9)
//! token_protection = "optional"      # any mcx_model::Policy field overrides the variant
//!
//! [protection]                       # TS 33.180 clause 9 keys (docs/tokens.md)
//! kdf = "mc-id-and-xpk-id"           # F.1.4 reading: or "xpk-id-only"
//! [[protection.csk]]                 # lab CSK table (`mcx-authz csk new --mc-id URI`)
//! csk_id = "2ddd5bf0"
//! csk = "e06e651061835473 42d3e8a6ce2540a8"
//! mc_id = "sip:alice@example.org"
//!
//! [mikey]                            # TS 33.180 5.4 CSK uploads (docs/mikey-sakke.md)
//! kms_dir = "mcx-lab/kms"            # default: <[token] data_dir>/kms
//! identity = "sip:mcx.example.org"   # the server's MDSI; default: [sip] server_uri
//! lab_create = true                  # create the lab community / server key set if missing
//!
//! [token]                            # mcx_authz::token::ValidatorConfig
//! jwks_url = "https://idms.example.org/realms/mcx/protocol/openid-connect/certs"
//! issuer = "https://idms.example.org/realms/mcx"
//!
//! [limits]                           # LimitsConfig: bounds under hostile load
//! tcp_max_connections = 1000
//! untrusted_rate_per_sec = 50
//!
//! [store]                            # crate::store::StoreConfig (issue 13)
//! backend = "redb"                   # or "memory": nothing survives a restart
//! dir = "mcx-data"                   # the file is <dir>/mcx.redb
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use ipnet::IpNet;
use mcx_model::{Policy, Service, Variant};
use serde::Deserialize;

pub use super::tls::TlsListenerConfig;
use crate::sip::EdgeConfig;
use crate::token::ValidatorConfig;

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// SIP listeners, trust and PSIs.
    pub sip: SipConfig,
    /// The admin HTTP view.
    pub admin: AdminConfig,
    /// The machine's policy.
    pub policy: PolicyConfig,
    /// Access-token validation.
    pub token: ValidatorConfig,
    /// The KMS, CM and GM resource servers' HTTP listener.
    pub http: crate::resource::HttpConfig,
    /// Bounds under hostile load.
    pub limits: LimitsConfig,
    /// TS 33.180 clause 9: the CSKs and the KDF reading.
    pub protection: ProtectionConfig,
    /// Where the durable state lives (issue 13): redb in `./mcx-data/` by default.
    pub store: crate::store::StoreConfig,
    /// TS 33.180 5.4: CSK uploads (MIKEY-SAKKE) and the KMS material to read them.
    pub mikey: MikeyConfig,
}

/// `[mikey]`: how the server reads CSK uploads (TS 33.180 5.4; docs/mikey-sakke.md): its own
/// identity (MDSI) and key set, and the KMS certificates it trusts, all from a lab KMS
/// directory in the layout of `mcx-authz kms` (`mcx_sec::kms::layout`). Under
/// `token_protection = "off"` the server holds no CSK and reads no material: an upload is
/// refused as from an unknown KMS.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MikeyConfig {
    /// Read CSK uploads; `false` refuses every upload (as from an unknown KMS).
    pub enabled: bool,
    /// The KMS directory (default: `kms/` in the data dir the KMS resource server reads,
    /// `[http] data_dir` else `[token] data_dir`, where `mcx-authz kms` writes by default).
    /// When neither this nor `identity` is set, missing material only turns uploads off (with a
    /// warning); when set, it stops the server.
    pub kms_dir: Option<std::path::PathBuf>,
    /// The server's identity, which uploads are encrypted to (default: `[sip] server_uri`).
    pub identity: Option<String>,
    /// Lab: create the community when the directory has none (as `mcx-authz kms init`), and
    /// issue the server's key set for the current key period when it is missing or outdated
    /// and the community's secrets are there (as `mcx-authz kms provision`). Default: when the
    /// server trusts the lab IdMS (a lab server, as `serve` on its embedded defaults).
    pub lab_create: Option<bool>,
}

impl Default for MikeyConfig {
    fn default() -> Self {
        MikeyConfig {
            enabled: true,
            kms_dir: None,
            identity: None,
            lab_create: None,
        }
    }
}

/// `[protection]`: the keys the SIP edge opens protected tokens with (TS 33.180 clause 9).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtectionConfig {
    /// Which TS 33.180 F.1.4 parameters the KDF takes (docs/tokens.md, "Readings").
    pub kdf: mcx_sec::kdf::KdfReading,
    /// The lab CSK table (`[[protection.csk]]`); MIKEY-SAKKE uploads come next.
    pub csk: Vec<mcx_sec::csk::CskConfig>,
}

impl ProtectionConfig {
    /// The lab table, checked (hex lengths, duplicates, MC service IDs).
    pub fn table(&self) -> anyhow::Result<mcx_sec::csk::LabCskTable> {
        mcx_sec::csk::LabCskTable::from_config(&self.csk).context("[[protection.csk]]")
    }
}

/// `[sip]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// UDP listen addresses (IPv4 or IPv6).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// TLS listeners (`[[sip.tls]]`), with their certificates and the client certificates that
    /// are trusted SIP cores ([`super::tls`]). None by default.
    pub tls: Vec<TlsListenerConfig>,
    /// Source address ranges of trusted SIP cores: only requests from these have their
    /// P-Asserted-Identity (or third-party REGISTER To) believed.
    pub trusted_cores: Vec<IpNet>,
    /// The server's host name (warn-agent of the Warning header).
    pub host: String,
    /// The server's own SIP URI, which third-party REGISTERs target.
    pub server_uri: String,
    /// The participating-function PSI of each service.
    pub psi: BTreeMap<Service, String>,
    /// Most entries kept for absorbing UDP retransmissions (RFC 3261 17.2.2).
    pub transaction_cache_entries: usize,
    /// Most bytes (keys and cached responses) the UDP transaction cache holds.
    pub transaction_cache_bytes: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        let edge = EdgeConfig::default();
        SipConfig {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            tcp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            tls: Vec::new(),
            trusted_cores: vec![
                "127.0.0.0/8".parse().expect("valid CIDR"),
                "::1/128".parse().expect("valid CIDR"),
            ],
            host: edge.host,
            server_uri: edge.server_uri,
            psi: edge.psi,
            transaction_cache_entries: 200_000,
            transaction_cache_bytes: 64 << 20,
        }
    }
}

impl SipConfig {
    /// The SIP edge's view of this configuration.
    pub fn edge(&self) -> EdgeConfig {
        EdgeConfig {
            psi: self.psi.clone(),
            server_uri: self.server_uri.clone(),
            host: self.host.clone(),
        }
    }

    /// Whether `ip` is a trusted SIP core.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.trusted_cores.iter().any(|net| net.contains(&ip))
    }
}

/// `[limits]`: what one sender, or many, can make the server hold. Every limit has a counter in
/// `/metrics` (docs/ARCHITECTURE.md, "Bounded under hostile load").
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most SIP connections (TCP and TLS) open at once, per listener; one more is accepted and
    /// closed at once (`mcx_tcp_refused_total{reason="cap"}`). Each costs a file descriptor:
    /// keep it under `ulimit -n`.
    pub tcp_max_connections: usize,
    /// Most connections open at once from one address that is not a trusted SIP core
    /// (`reason="per_source"`).
    pub tcp_max_connections_per_source: usize,
    /// A connection with no byte received for this long is closed (`mcx_tcp_timeouts_total
    /// {kind="idle"}`). RFC 5626 CRLF keep-alives count as traffic.
    pub tcp_idle_timeout_secs: u64,
    /// A message whose first byte has arrived must be complete within this time, else the
    /// connection is closed (`kind="message"`): the slowloris bound.
    pub tcp_message_timeout_ms: u64,
    /// A TLS handshake must complete within this time (`kind="handshake"`).
    pub tls_handshake_timeout_ms: u64,
    /// Messages per second accepted from one address that is not a trusted SIP core (token
    /// bucket; UDP datagrams and stream messages alike; TCP/TLS connection attempts count as
    /// one). 0 turns the limit off. Excess is dropped (`mcx_rate_limited_total`).
    pub untrusted_rate_per_sec: u32,
    /// The bucket size: a burst of this many messages passes at once.
    pub untrusted_burst: u32,
    /// Most untrusted addresses tracked; beyond it, new addresses share one bucket.
    pub rate_limit_sources: usize,
    /// Pause before a listener that stopped (a panic outside a request) is started again; the
    /// listener is `down` in `/healthz` meanwhile.
    pub listener_restart_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            tcp_max_connections: 1000,
            tcp_max_connections_per_source: 32,
            tcp_idle_timeout_secs: 300,
            tcp_message_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            untrusted_rate_per_sec: 50,
            untrusted_burst: 100,
            rate_limit_sources: 10_000,
            listener_restart_ms: 1000,
        }
    }
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address of the admin view; keep it on loopback.
    pub listen: Option<SocketAddr>,
    /// Lab controls for scripted runs and conformance tests: `POST /clock/advance?secs=N` moves
    /// the server's clock forward (token, publication and registration expiry without waiting),
    /// `POST /restart` makes the machine lose everything as a restart without a store would
    /// (the durable store forgets it too: `Input::Restart` persists the removals). Off by
    /// default.
    pub lab_controls: bool,
    /// Freeze the server's clock at this Unix time; it then moves only by `POST /clock/advance`
    /// (which this turns on). For conformance tests and scripted lab runs; unset by default.
    pub manual_clock_start: Option<u64>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            lab_controls: false,
            manual_clock_start: None,
        }
    }
}

/// `[policy]`: a variant preset, then field-by-field overrides.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// The preset (`post-cr`, `pre-cr`, `ct1-rel18`).
    pub variant: Variant,
    /// Overrides, with the same names as [`mcx_model::Policy`]'s fields.
    #[serde(flatten)]
    pub overrides: toml::Table,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            variant: Variant::PostCr,
            overrides: toml::Table::new(),
        }
    }
}

impl PolicyConfig {
    /// The machine's policy: the variant's, with the overrides applied.
    ///
    /// The variant's `token_protection` is run as it says (post-cr: `required`, TS 33.180
    /// clause 9; dossier Q-16); an explicit `token_protection` overrides it.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let base = toml::Value::try_from(self.variant.policy()).context("serialising policy")?;
        let mut table = match base {
            toml::Value::Table(t) => t,
            _ => anyhow::bail!("policy did not serialise as a table"),
        };
        for (k, v) in &self.overrides {
            if !table.contains_key(k) && k != "max_devices_per_mc_id" {
                anyhow::bail!("unknown policy field {k:?}");
            }
            table.insert(k.clone(), v.clone());
        }
        toml::Value::Table(table)
            .try_into()
            .context("invalid [policy] override")
    }
}

impl ServerConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<ServerConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        ServerConfig::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> anyhow::Result<ServerConfig> {
        let config: ServerConfig = toml::from_str(text)?;
        config.policy.policy()?;
        config.protection.table()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcx_model::TokenProtection;

    #[test]
    fn defaults_are_a_loopback_lab_server() {
        let c = ServerConfig::parse("").unwrap();
        assert!(c.sip.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(c.sip.is_trusted("::1".parse().unwrap()));
        assert!(c.sip.is_trusted("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!c.sip.is_trusted("192.0.2.1".parse().unwrap()));
        let p = c.policy.policy().unwrap();
        assert_eq!(p.token_protection, TokenProtection::Required);
        assert_eq!(p.register_token, Variant::PostCr.policy().register_token);
        assert!(c.protection.csk.is_empty());
        assert_eq!(c.protection.kdf, mcx_sec::kdf::KdfReading::McIdAndXpkId);
    }

    #[test]
    fn token_protection_is_the_variants_unless_set() {
        for text in ["[policy]\n", "[policy]\nvariant = \"post-cr\"\n"] {
            let p = ServerConfig::parse(text).unwrap().policy.policy().unwrap();
            assert_eq!(p.token_protection, TokenProtection::Required, "{text}");
        }
        for v in ["pre-cr", "ct1-rel18"] {
            let p = ServerConfig::parse(&format!("[policy]\nvariant = \"{v}\"\n"))
                .unwrap()
                .policy
                .policy()
                .unwrap();
            assert_eq!(p.token_protection, TokenProtection::Optional, "{v}");
        }
        for (text, want) in [
            ("optional", TokenProtection::Optional),
            ("off", TokenProtection::Off),
        ] {
            let p = ServerConfig::parse(&format!("[policy]\ntoken_protection = \"{text}\"\n"))
                .unwrap()
                .policy
                .policy()
                .unwrap();
            assert_eq!(p.token_protection, want);
        }
    }

    #[test]
    fn the_csk_table_and_kdf_reading_are_read_and_checked() {
        let c = ServerConfig::parse(
            "[protection]\nkdf = \"xpk-id-only\"\n[[protection.csk]]\ncsk_id = \"2ddd5bf0\"\ncsk = \"e06e651061835473 42d3e8a6ce2540a8\"\nmc_id = \"sip:alice@example.org\"\n",
        )
        .unwrap();
        assert_eq!(c.protection.kdf, mcx_sec::kdf::KdfReading::XpkIdOnly);
        assert_eq!(c.protection.table().unwrap().len(), 1);
        let short = "[[protection.csk]]\ncsk_id = \"2ddd5bf\"\ncsk = \"e06e651061835473 42d3e8a6ce2540a8\"\nmc_id = \"sip:a@example.org\"\n";
        assert!(ServerConfig::parse(short).is_err());
        let twice = "[[protection.csk]]\ncsk_id = \"2ddd5bf0\"\ncsk = \"e06e651061835473 42d3e8a6ce2540a8\"\nmc_id = \"sip:a@example.org\"\n".repeat(2);
        assert!(ServerConfig::parse(&twice).is_err());
        assert!(ServerConfig::parse("[protection]\nkdf = \"both\"\n").is_err());
    }

    #[test]
    fn policy_overrides_apply_and_unknown_fields_are_refused() {
        let c = ServerConfig::parse(
            "[policy]\nvariant = \"pre-cr\"\ntoken_expiry = \"end-binding\"\nmax_devices_per_mc_id = 2\n",
        )
        .unwrap();
        let p = c.policy.policy().unwrap();
        assert_eq!(p.token_expiry, mcx_model::TokenExpiry::EndBinding);
        assert_eq!(p.max_devices_per_mc_id, Some(2));
        assert_eq!(p.register_token, mcx_model::RegisterToken::Honour);
        assert!(ServerConfig::parse("[policy]\ntoken_expiry_typo = 1\n").is_err());
        assert!(ServerConfig::parse("[policy]\ntoken_expiry = \"sometimes\"\n").is_err());
        assert!(ServerConfig::parse("[sip]\nbogus = 1\n").is_err());
    }

    #[test]
    fn limits_have_defaults_and_can_be_set() {
        let c = ServerConfig::parse("").unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert!(c.limits.tcp_max_connections > 0 && c.limits.untrusted_rate_per_sec > 0);
        let c = ServerConfig::parse(
            "[limits]\ntcp_max_connections = 7\nuntrusted_rate_per_sec = 0\n\n[sip]\ntransaction_cache_bytes = 4096\n",
        )
        .unwrap();
        assert_eq!(c.limits.tcp_max_connections, 7);
        assert_eq!(c.limits.untrusted_rate_per_sec, 0);
        assert_eq!(c.sip.transaction_cache_bytes, 4096);
        assert!(ServerConfig::parse("[limits]\ntcp_max_conections = 7\n").is_err());
    }

    #[test]
    fn the_store_is_redb_in_mcx_data_unless_set() {
        use crate::store::{Backend, StoreConfig};
        let c = ServerConfig::parse("").unwrap();
        assert_eq!(c.store, StoreConfig::redb("mcx-data"));
        let c = ServerConfig::parse("[store]\nbackend = \"memory\"\n").unwrap();
        assert_eq!(c.store.backend, Backend::Memory);
        let c = ServerConfig::parse("[store]\ndir = \"/var/lib/mcx\"\n").unwrap();
        assert_eq!(c.store, StoreConfig::redb("/var/lib/mcx"));
        assert!(ServerConfig::parse("[store]\nbackend = \"redis\"\n").is_err());
        assert!(ServerConfig::parse("[store]\npath = \"x\"\n").is_err());
    }
}
