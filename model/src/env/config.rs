//! The model's configuration: how many UEs, users and IMPUs, which network, which reading of the
//! spec. [`ModelConfig::for_variant`] gives the defaults `mcx-authz check` uses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::Service;
use crate::policy::{Policy, TokenProtection, Variant};

use super::McxModel;

/// How the SIP core delivers requests to the MCX server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    /// Each sender's requests arrive in the order sent (one FIFO per sender; senders interleave).
    Ordered,
    /// Any in-flight request may arrive next (a PUBLISH may overtake the third-party REGISTER).
    Unordered,
    /// Unordered, and a delivered request may be delivered once more later (bounded by
    /// [`ModelConfig::max_duplicates`]): a retransmission or a duplicate after a failover.
    Duplicating,
}

impl NetworkKind {
    /// Every kind.
    pub const ALL: [NetworkKind; 3] = [
        NetworkKind::Ordered,
        NetworkKind::Unordered,
        NetworkKind::Duplicating,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            NetworkKind::Ordered => "ordered",
            NetworkKind::Unordered => "unordered",
            NetworkKind::Duplicating => "duplicating",
        }
    }
}

impl fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetworkKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetworkKind::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| format!("unknown network {s:?} (ordered, unordered, duplicating)"))
    }
}

/// What kind of access token the IdMS hands out at a log-on (TS 33.180 B.4).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// Genuine, scoped for every configured service, valid for [`ModelConfig::token_life`] ticks.
    #[default]
    Valid,
    /// Genuine but already expired when issued (`exp` = issue time): a stale cached token.
    Expired,
    /// Genuine and unexpired, but without the MC service scopes (e.g. scoped for the KMS only).
    WrongScope,
    /// Not signed by the IdMS: made up by the attacker.
    Forged,
}

impl TokenKind {
    /// The kinds the IdMS issues (everything but [`TokenKind::Forged`]).
    pub const ISSUED: [TokenKind; 3] =
        [TokenKind::Valid, TokenKind::Expired, TokenKind::WrongScope];

    /// A stable label.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Valid => "valid",
            TokenKind::Expired => "expired",
            TokenKind::WrongScope => "wrong-scope",
            TokenKind::Forged => "forged",
        }
    }
}

/// Where a UE carries its access token for the MCX server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Carriage {
    /// Only in PUBLISH (the CR, TS 33.180 5.1.3.2 as changed).
    Publish,
    /// Only in the body of the UE's REGISTER (pre-CR 33.180 5.1.3.2.2): the UE authenticates the
    /// user before it registers, and the S-CSCF passes the body on in the third-party REGISTER.
    Register,
    /// In the REGISTER and again in PUBLISH (TS 24.379 Rel-18 7.1 accepts both).
    Both,
}

impl Carriage {
    /// Whether the UE's REGISTER carries its token (so the UE registers only once it has one).
    pub fn in_register(self) -> bool {
        matches!(self, Carriage::Register | Carriage::Both)
    }

    /// Whether the UE sends its token in PUBLISH.
    pub fn in_publish(self) -> bool {
        matches!(self, Carriage::Publish | Carriage::Both)
    }

    /// A stable label.
    pub fn name(self) -> &'static str {
        match self {
            Carriage::Publish => "publish",
            Carriage::Register => "register",
            Carriage::Both => "both",
        }
    }
}

/// Whether the UEs protect the PUBLISH-borne token per TS 33.180 clause 9 (XML encryption and
/// signature under a CSK they upload with MIKEY-SAKKE, TS 33.180 5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UeProtection {
    /// As the deployment's configuration says (TS 24.379 6.6): the UEs protect exactly when the
    /// server requires it (`token_protection = required`); with `optional` they send in clear.
    Auto,
    /// Every UE protects its token and uploads its CSK.
    On,
    /// No UE protects (a client without clause 9).
    Off,
}

impl UeProtection {
    /// A stable label.
    pub fn name(self) -> &'static str {
        match self {
            UeProtection::Auto => "auto",
            UeProtection::On => "on",
            UeProtection::Off => "off",
        }
    }
}

/// The model's configuration. Build one with [`ModelConfig::for_variant`], adjust fields, then
/// call [`ModelConfig::into_model`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The reading of the spec: decides the UEs' token carriage and protection and (unless
    /// overridden in [`ModelConfig::policy`]) the server policy.
    pub variant: Variant,
    /// Number of UEs (one MC client each), companions included. At most 4.
    pub ues: usize,
    /// How many of the UEs (the last ones) are *companion* UEs: a second device of user 0, the
    /// user UE 1 starts with. A companion registers and de-registers one IMPU, logs user 0 on
    /// (and on again for a fresh token), PUBLISHes its token and refreshes; it never changes
    /// IMPU, switches user, logs off, or sends a settings-only or token-less PUBLISH (UE 1
    /// covers those). It brings device limits, two UEs of one user and cross-UE interference
    /// into the default check at a fraction of a full UE's states (docs/benchmarks.md).
    #[serde(default)]
    pub companions: usize,
    /// Requests (PUBLISH, refresh, REGISTER or de-REGISTER) the companion UEs may send in one
    /// run, together, before the environment settles (the settled runs of liveness are not
    /// counted). Bounds how far the companion's steps interleave with UE 1's.
    #[serde(default)]
    pub companion_budget: u8,
    /// Number of MC service users known to the IdMS. At most 4.
    pub users: usize,
    /// IMPUs each UE may register under (IMPU change cycles through them). At most 3.
    pub impus_per_ue: usize,
    /// The MC services the clients use.
    pub services: Vec<Service>,
    /// Network semantics between the SIP core and the MCX server.
    pub network: NetworkKind,
    /// Whether the attacker takes part: its own registered IMPU, everything that crosses the SIP
    /// core (tokens in clear, protected PUBLISHes to resend), and PUBLISH with a forged
    /// P-Asserted-Identity sent straight to the server (`model/src/env/attacker.rs`).
    pub attacker: bool,
    /// Requests the attacker may send in one run.
    pub attacker_budget: u8,
    /// Time runs from 0 to this many ticks.
    pub max_time: u8,
    /// Lifetime of a valid token, in ticks.
    pub token_life: u8,
    /// `Expires` of the UEs' PUBLISH requests, in ticks.
    pub publication_ttl: u8,
    /// `Expires` of registrations, in ticks.
    pub registration_ttl: u8,
    /// The token kinds the IdMS may issue at a log-on.
    pub token_kinds: Vec<TokenKind>,
    /// Bound on successful PUBLISHes (each draws a fresh SIP-ETag); keeps the space finite.
    pub max_publications: u16,
    /// Bound on duplicate deliveries (only with [`NetworkKind::Duplicating`]).
    pub max_duplicates: u8,
    /// Bound on server restarts.
    pub restarts: u8,
    /// Issue 13: the server keeps a durable store and may crash (`kill -9`) and restart from it
    /// at any point between steps (`model/src/env/crash.rs`). A crash that loses nothing leads
    /// back to the state it left, so this costs no state while the crash properties hold.
    #[serde(default)]
    pub crash: bool,
    /// REGISTERs one UE may have in flight at once (2 lets a UE's REGISTERs overtake each
    /// other; an IMPU change always sends two).
    pub max_registers_in_flight: u8,
    /// The server policy the machine runs with (from the variant unless overridden).
    pub policy: Policy,
    /// Whether the environment may settle (liveness, `model/src/env/fairness.rs`); off, the
    /// `eventually` properties hold vacuously and the space is smaller.
    pub liveness: bool,
    /// Where every UE carries its token (`None`: as the variant's preset, see
    /// [`ModelConfig::carriage`]).
    pub carriage: Option<Carriage>,
    /// Whether the UEs protect their PUBLISH-borne token (clause 9) and upload CSKs.
    pub ue_protection: UeProtection,
    /// CSKs reach the server as TS 33.180 5.4 says: each UE uploads a fresh CSK in a MIKEY-SAKKE
    /// I_MESSAGE with its first protected PUBLISH (and again after a user switch, an IMPU change
    /// or a refusal). `false`: the wave-2 shortcut, one CSK per (user, IMPU, service)
    /// provisioned at the server up front, and no upload.
    pub csk_upload: bool,
    /// The attacker may act on a request it saw in the SIP core while that request is still in
    /// flight (an on-path attacker that races the original). `false`: it acts only on what
    /// already reached the server (an eavesdropper that records and replays).
    pub attacker_preempts: bool,
    /// Protected PUBLISHes the attacker keeps at once (deduplicated; further ones are not kept).
    pub attacker_capture: u8,
}

impl ModelConfig {
    /// The defaults of `mcx-authz check --variant <variant>`.
    pub fn for_variant(variant: Variant) -> Self {
        // Sized so that `check --variant all` finishes in a few minutes on 2 cores
        // (docs/benchmarks.md has the measurements): two UEs of user 0 (UE 1, which may also
        // switch to user 1, change IMPU and log off, and a companion UE bound before the run
        // starts that keeps its binding: `companions`), the attacker as a third subscriber, two
        // users, two IMPUs, time 0..2 with tokens living 1 tick and publications 2, so token
        // expiry and publication expiry both happen. A full second UE is out of reach (post-cr
        // with two full UEs and one IMPU passed 9.9 M states unfinished), and even a companion
        // that may send one request during the run multiplies post-cr by about 8. ct1-rel18 gets one IMPU: its
        // question is the token carried twice (REGISTER and PUBLISH), which needs no IMPU
        // change, and with two IMPUs and the attacker's capture of protected PUBLISHes its space
        // passes 7.5 M states and 9 GiB (measured 2026-11-30); with one it is 2.0 M states, 26 s.
        ModelConfig {
            variant,
            ues: 2,
            companions: 1,
            companion_budget: 0,
            users: 2,
            impus_per_ue: if variant == Variant::Ct1Rel18 { 1 } else { 2 },
            services: vec![Service::Mcptt],
            network: NetworkKind::Unordered,
            attacker: true,
            attacker_budget: 1,
            max_time: 2,
            token_life: 1,
            publication_ttl: 2,
            registration_ttl: 8,
            token_kinds: vec![TokenKind::Valid],
            max_publications: 2,
            max_duplicates: 1,
            restarts: 0,
            crash: true,
            max_registers_in_flight: 1,
            policy: variant.policy(),
            liveness: true,
            carriage: None,
            ue_protection: UeProtection::Auto,
            csk_upload: true,
            attacker_preempts: false,
            attacker_capture: 2,
        }
    }

    /// A small configuration for fast tests: UE 1 alone (no companion), one IMPU, time 0..1.
    pub fn small(variant: Variant) -> Self {
        ModelConfig {
            impus_per_ue: 1,
            max_time: 1,
            ..ModelConfig::for_variant(variant).with_ues(1)
        }
    }

    /// Whether UE `ue` (0-based) is a companion UE (see [`ModelConfig::companions`]).
    pub fn is_companion(&self, ue: usize) -> bool {
        ue + self.companions >= self.ues
    }

    /// Sets the number of UEs, keeping the default's companion (when there is room for it):
    /// `--ues 1` is UE 1 alone, `--ues 3` two full UEs and the companion.
    pub fn with_ues(mut self, ues: usize) -> Self {
        self.ues = ues;
        self.companions = self.companions.min(ues.saturating_sub(1));
        self
    }

    /// Where UE `ue` carries its token in this variant.
    ///
    /// - `post-cr`: PUBLISH only.
    /// - `pre-cr`: the first UE uses the REGISTER option (5.1.3.2.2), the others PUBLISH
    ///   (5.1.3.2.3): both client kinds coexist, as the pre-CR text lets each client choose.
    /// - `ct1-rel18`: REGISTER and PUBLISH both (TS 24.379 7.1 as it still reads).
    pub fn carriage(&self, ue: usize) -> Carriage {
        if let Some(c) = self.carriage {
            return c;
        }
        match self.variant {
            Variant::PostCr => Carriage::Publish,
            Variant::PreCr if ue == 0 => Carriage::Register,
            Variant::PreCr => Carriage::Publish,
            Variant::Ct1Rel18 => Carriage::Both,
        }
    }

    /// Whether UEs protect the PUBLISH-borne token per TS 33.180 clause 9 (the CR, R-15). A
    /// protected token is opaque to the SIP core. REGISTER bodies are never protected.
    pub fn protects_tokens(&self) -> bool {
        match self.ue_protection {
            UeProtection::On => true,
            UeProtection::Off => false,
            UeProtection::Auto => self.policy.token_protection == TokenProtection::Required,
        }
    }

    /// Checks the sizes and returns the model.
    ///
    /// # Panics
    /// When a size is out of range (more than 4 UEs or users, more than 3 IMPUs per UE, no
    /// service, no token kind); the CLI checks these before.
    pub fn into_model(self) -> McxModel {
        if let Err(e) = self.validate() {
            panic!("invalid model configuration: {e}");
        }
        McxModel::new(self)
    }

    /// Why this configuration cannot be modelled, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=4).contains(&self.ues) {
            return Err(format!("ues must be 1..=4, not {}", self.ues));
        }
        if self.companions >= self.ues {
            return Err(format!(
                "companions must be fewer than the UEs ({} of {}): UE 1 is always a full UE",
                self.companions, self.ues
            ));
        }
        if !(1..=4).contains(&self.users) {
            return Err(format!("users must be 1..=4, not {}", self.users));
        }
        if !(1..=3).contains(&self.impus_per_ue) {
            return Err(format!(
                "impus per UE must be 1..=3, not {}",
                self.impus_per_ue
            ));
        }
        if self.services.is_empty() || self.services.len() > 3 {
            return Err("between one and three services".into());
        }
        if self.token_kinds.is_empty() || self.token_kinds.contains(&TokenKind::Forged) {
            return Err("the IdMS issues valid, expired or wrong-scope tokens".into());
        }
        if self.attacker_budget > 11 {
            return Err("at most 11 attacker requests".into());
        }
        if self.publication_ttl == 0 || self.registration_ttl == 0 {
            return Err("publication and registration TTLs must be at least one tick".into());
        }
        Ok(())
    }

    /// The policy the machine runs with in the model: [`ModelConfig::policy`] with RFC 3903
    /// durations scaled to ticks (`min_expires` 1, `default_expires` = publication TTL).
    pub fn machine_policy(&self) -> Policy {
        Policy {
            min_expires: 1,
            default_expires: u32::from(self.publication_ttl),
            max_expires: u32::MAX,
            ..self.policy.clone()
        }
    }

    /// Whether these are the default sizes for the variant (the expectations recorded in
    /// `properties.rs` are per configuration; this tells the CLI whether it ran the
    /// configuration that docs/findings.md reports).
    pub fn is_default(&self) -> bool {
        *self == ModelConfig::for_variant(self.variant)
    }
}
