//! Target profiles (`--target profile.toml`): what `mcx-authz replay` and `mcx-authz trace`
//! must know of an MCX server to aim a model trace at it. The default profile is mcx-authz
//! itself ([`DEFAULT_PROFILE`]); docs/interop.md explains every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mcx_model::Service;
use serde::Deserialize;

/// mcx-authz's own profile, embedded.
pub const DEFAULT_PROFILE: &str = include_str!("default-target.toml");

/// A target profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the target is, for the report.
    pub name: String,
    /// Where and how requests go.
    pub sip: SipTarget,
    /// How the model's identities are named at the target.
    pub identities: Identities,
    /// How tokens are minted.
    pub token: TokenProfile,
    /// How model time is played.
    pub clock: Clock,
    /// Expires values.
    #[serde(default)]
    pub expires: ExpiresProfile,
    /// TS 33.180 clause 9.
    pub protection: ProtectionProfile,
    /// The directory the profile was read from (relative paths are resolved against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[sip]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTarget {
    /// The target's SIP address.
    pub address: SocketAddr,
    /// The transport: `udp`.
    pub transport: String,
    /// Request-URI of the third-party REGISTER.
    pub server_uri: String,
    /// The S-CSCF in From and Contact of the third-party REGISTER.
    pub scscf_uri: String,
    /// The PSI of each service.
    pub psi: Psi,
}

/// `[sip.psi]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Psi {
    /// MCPTT participating function.
    pub mcptt: String,
    /// MCVideo.
    pub mcvideo: String,
    /// MCData.
    pub mcdata: String,
}

/// `[identities]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identities {
    /// Host part of every IMPU.
    pub impu_domain: String,
    /// Host part of every MC service ID (`{service}` is replaced by the service name).
    pub mc_id_domain: String,
}

/// `[token]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenProfile {
    /// The lab IdMS directory (its first key signs).
    pub data_dir: PathBuf,
    /// `iss`; empty: the lab IdMS's issuer.
    #[serde(default)]
    pub issuer: String,
    /// `aud`.
    #[serde(default)]
    pub audience: Vec<String>,
}

/// `[clock]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clock {
    /// How ticks are played.
    pub mode: ClockMode,
    /// Base URL of the lab controls (mode `lab`).
    #[serde(default)]
    pub lab_url: Option<String>,
    /// Seconds per model tick.
    pub tick_secs: u64,
}

/// How model time is played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockMode {
    /// The target's lab controls: `POST /clock/advance?secs=N` (its answer is the new time),
    /// `POST /restart`.
    Lab,
    /// Wall-clock time, `tick_secs` per tick; restarts cannot be replayed.
    RealTime,
}

/// `[expires]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiresProfile {
    /// PUBLISH Expires (non-zero ones); unset: model ticks × tick_secs.
    pub publish: Option<u32>,
    /// REGISTER Expires (non-zero ones); unset: model ticks × tick_secs.
    pub register: Option<u32>,
}

/// `[protection]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionProfile {
    /// Which tokens go protected.
    pub tokens: ProtectTokens,
    /// Seed of the lab CSKs.
    #[serde(default)]
    pub csk_seed: String,
}

/// Which tokens go protected per TS 33.180 clause 9.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectTokens {
    /// Those the model's UEs protect (post-cr).
    AsModel,
    /// None: the target does not implement clause 9.
    Never,
}

impl Profile {
    /// Parses a profile; relative paths are against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> anyhow::Result<Profile> {
        let mut p: Profile = toml::from_str(text).context("target profile")?;
        p.base_dir = base_dir.to_owned();
        p.check()?;
        Ok(p)
    }

    /// The embedded default profile (mcx-authz), paths relative to the current directory.
    pub fn default_profile() -> Profile {
        Profile::parse(DEFAULT_PROFILE, Path::new(".")).expect("the embedded profile parses")
    }

    /// Reads a profile file.
    pub fn read(path: &Path) -> anyhow::Result<Profile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Profile::parse(&text, base).with_context(|| format!("in {}", path.display()))
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.sip.transport != "udp" {
            bail!(
                "transport {:?}: the replay client speaks SIP over UDP only",
                self.sip.transport
            );
        }
        for (what, uri) in [
            ("server_uri", &self.sip.server_uri),
            ("scscf_uri", &self.sip.scscf_uri),
            ("psi.mcptt", &self.sip.psi.mcptt),
            ("psi.mcvideo", &self.sip.psi.mcvideo),
            ("psi.mcdata", &self.sip.psi.mcdata),
        ] {
            if !(uri.starts_with("sip:") || uri.starts_with("sips:"))
                || uri.contains([' ', '\r', '\n', '<', '>'])
            {
                bail!("[sip] {what} = {uri:?} is not a SIP URI");
            }
        }
        for (what, d) in [
            ("impu_domain", &self.identities.impu_domain),
            ("mc_id_domain", &self.identities.mc_id_domain),
        ] {
            if d.is_empty() || d.contains(['@', ' ', '<', '>', ';', '\r', '\n']) {
                bail!("[identities] {what} = {d:?} is not a host name");
            }
        }
        if self.clock.tick_secs == 0 {
            bail!("[clock] tick_secs must be at least 1");
        }
        if self.clock.mode == ClockMode::Lab && self.clock.lab_url.is_none() {
            bail!("[clock] mode = \"lab\" needs lab_url");
        }
        if self.protection.tokens == ProtectTokens::AsModel && self.protection.csk_seed.is_empty() {
            bail!("[protection] tokens = \"as-model\" needs csk_seed");
        }
        Ok(())
    }

    /// The PSI of `service`.
    pub fn psi(&self, service: Service) -> &str {
        match service {
            Service::Mcptt => &self.sip.psi.mcptt,
            Service::Mcvideo => &self.sip.psi.mcvideo,
            Service::Mcdata => &self.sip.psi.mcdata,
        }
    }

    /// The lab IdMS directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join(&self.token.data_dir)
    }

    /// The MC service ID domain of `service`.
    pub fn mc_id_domain(&self, service: &str) -> String {
        self.identities.mc_id_domain.replace("{service}", service)
    }

    /// Rewrites a request rendered for mcx-authz's defaults (the trace writer's templates) for
    /// this target: the Request-URI and, for a third-party REGISTER, the S-CSCF.
    pub fn retarget(&self, msg: &str) -> String {
        let (first, rest) = msg.split_once('\n').unwrap_or((msg, ""));
        let first = if let Some(t) = first.strip_prefix("PUBLISH ") {
            let uri = t.split(' ').next().unwrap_or("");
            let service = Service::ALL
                .into_iter()
                .find(|s| uri == format!("sip:{}@{}", s.name(), crate::trace::sipp::PSI_HOST));
            match service {
                Some(s) => format!("PUBLISH {} SIP/2.0", self.psi(s)),
                None => first.to_owned(),
            }
        } else if first.starts_with("REGISTER ") {
            format!("REGISTER {} SIP/2.0", self.sip.server_uri)
        } else {
            first.to_owned()
        };
        let rest = if first.starts_with("REGISTER ") {
            rest.replace(crate::trace::sipp::SCSCF_URI, &self.sip.scscf_uri)
        } else {
            rest.to_owned()
        };
        format!("{first}\n{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_is_mcx_authz() {
        let p = Profile::default_profile();
        assert_eq!(p.sip.server_uri, crate::trace::sipp::SERVER_URI);
        assert_eq!(p.clock.mode, ClockMode::Lab);
        assert_eq!(p.protection.tokens, ProtectTokens::AsModel);
        assert_eq!(p.mc_id_domain("mcptt"), "mcptt.example");
        // Retargeting for the defaults changes nothing.
        let msg = "PUBLISH sip:mcptt@mcx.example.org SIP/2.0\nVia: x\n";
        assert_eq!(p.retarget(msg), msg);
    }

    #[test]
    fn retarget_and_bad_profiles() {
        let text = DEFAULT_PROFILE
            .replace("\"sip:mcx.example.org\"", "\"sip:as.vendor.test\"")
            .replace(
                "\"sip:mcptt@mcx.example.org\"",
                "\"sip:ptt-psi@vendor.test\"",
            );
        let p = Profile::parse(&text, Path::new("/x")).unwrap();
        assert_eq!(
            p.retarget("PUBLISH sip:mcptt@mcx.example.org SIP/2.0\nTo: <a>\n"),
            "PUBLISH sip:ptt-psi@vendor.test SIP/2.0\nTo: <a>\n"
        );
        assert!(p
            .retarget("REGISTER sip:mcx.example.org SIP/2.0\nFrom: <sip:scscf.ims.example.org>\n")
            .starts_with("REGISTER sip:as.vendor.test SIP/2.0\n"));
        assert_eq!(p.data_dir(), Path::new("/x/lab"));
        for bad in [
            DEFAULT_PROFILE.replace("transport = \"udp\"", "transport = \"tcp\""),
            DEFAULT_PROFILE.replace("tick_secs = 1", "tick_secs = 0"),
            DEFAULT_PROFILE.replace("impu_domain = \"ims.example\"", "impu_domain = \"a@b\""),
            DEFAULT_PROFILE.replace("[sip]", "[sip]\nbogus = 1"),
        ] {
            assert!(Profile::parse(&bad, Path::new(".")).is_err(), "{bad}");
        }
    }
}
