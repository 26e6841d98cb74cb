//! Where the spec is open, the machine takes a named policy. Each policy answers one open
//! question of the dossier (section (d)); the model shows what each answer implies.
//! [`Variant`] presets bundle the readings of the spec that `mcx-authz check` compares.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The machine's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct Policy {
    /// Q-4: does token expiry end the binding?
    pub token_expiry: TokenExpiry,
    /// Q-9: does a refused re-authorization keep or drop the existing binding?
    pub failed_reauthorization: FailedReauthorization,
    /// Q-18: at most this many clients bound to one MC service ID per service (`None`: no limit).
    pub max_devices_per_mc_id: Option<u32>,
    /// Q-1/Q-3: is an access token inside a third-party REGISTER honoured?
    pub register_token: RegisterToken,
    /// Q-16: must a PUBLISH-borne token be protected per TS 33.180 clause 9?
    pub token_protection: TokenProtection,
    /// Q-13: when a client authorizes under a new IMPU, what happens to its binding under the old
    /// one?
    pub impu_change: ImpuChange,
    /// TS 33.180 5.4: is a CSK tied to its (IMPU, MC service ID)? `ignored` exists only to show,
    /// in the model, what the tie prevents.
    pub csk_tie: CskTie,
    /// Dossier Q-6: a token bound for one IMPU is refused from another IMPU for this many seconds
    /// (capped at the token's `exp`); 0 turns the window off.
    pub replay_window_secs: u64,
    /// RFC 3830 5.4: an I_MESSAGE whose timestamp is further than this from now is refused.
    pub key_upload_skew_secs: u64,
    /// S-3: refuse a token-bearing PUBLISH from an IMPU with no third-party registration here
    /// (answered 403 with `Warning: 399 … "registration_required …"`).
    pub registration_required: bool,
    /// RFC 3261 10.2.1.1: registration duration when a third-party REGISTER carries neither
    /// `Expires` nor a Contact `expires`.
    pub default_register_expires: u32,
    /// RFC 3903 step 4: `Expires` used when a PUBLISH has none.
    pub default_expires: u32,
    /// RFC 3903 step 4: below this (and above 0) a PUBLISH gets 423 with `Min-Expires`.
    pub min_expires: u32,
    /// RFC 3903 step 4: the server shortens longer requested durations to this.
    pub max_expires: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Variant::PostCr.policy()
    }
}

/// Q-4: what token expiry does to a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenExpiry {
    /// The binding outlives the token (TS 33.180 B.12 only rejects expired tokens when
    /// presented).
    KeepBinding,
    /// The binding ends at the token's `exp`.
    EndBinding,
}

/// Q-9: what a refused re-authorization does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailedReauthorization {
    /// RFC 3903 atomicity: a non-2xx changes nothing.
    KeepBinding,
    /// Security first: the client's binding is dropped along with the 403.
    DropBinding,
}

/// Q-1/Q-3: is a token embedded in the UE's REGISTER honoured?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegisterToken {
    /// The CR: the token travels only in PUBLISH; a REGISTER-borne token is ignored.
    Ignore,
    /// Pre-CR and TS 24.379 Rel-18 7.1: a token in the REGISTER binds.
    Honour,
}

/// Q-16: must the PUBLISH-borne token be protected (TS 33.180 clause 9)?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenProtection {
    /// Clause 9 is not in use: tokens in clear are accepted, protected ones refused.
    Off,
    /// TS 24.379 6.6: protection depends on configuration; tokens in clear and protected ones
    /// are both accepted.
    Optional,
    /// The CR (5.1.3.2.1): "the access token shall be protected as defined in clause 9".
    Required,
}

/// TS 33.180 5.4: "the MC server … associates the CSK with the IMPU and the MC service ID".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CskTie {
    /// A CSK opens only tokens of the MC service ID it was uploaded (or provisioned) for, and
    /// only from the IMPU it was uploaded from (or, provisioned, first used from).
    Enforced,
    /// Ablation: any known CSK opens any token from any IMPU.
    Ignored,
}

/// Q-13: a client authorizes under a new IMPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImpuChange {
    /// The old IMPU's binding stays until its de-registration arrives.
    KeepOldBinding,
    /// The old IMPU's binding of the same client and service is removed.
    MoveBinding,
}

/// A reading of the spec: the policy of the server and the behaviour of the UEs in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// TS 33.180 5.1.3 as changed by the CR: the token travels only in PUBLISH, protected per
    /// clause 9; registration never waits for a token.
    PostCr,
    /// TS 33.180 before the CR (Rel-14..18): the UE carries its token in REGISTER *or* PUBLISH.
    PreCr,
    /// TS 24.379 Rel-18 clause 7.1 as it still reads: REGISTER and PUBLISH both accepted, the
    /// token unprotected unless configured.
    Ct1Rel18,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 3] = [Variant::PostCr, Variant::PreCr, Variant::Ct1Rel18];

    /// The variant's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Variant::PostCr => "post-cr",
            Variant::PreCr => "pre-cr",
            Variant::Ct1Rel18 => "ct1-rel18",
        }
    }

    /// The server policy this reading implies. Where the reading is silent the conservative
    /// choice is made: RFC 3903 atomicity, bindings outlive the token, no device limit.
    pub fn policy(self) -> Policy {
        let (register_token, token_protection) = match self {
            Variant::PostCr => (RegisterToken::Ignore, TokenProtection::Required),
            Variant::PreCr => (RegisterToken::Honour, TokenProtection::Optional),
            Variant::Ct1Rel18 => (RegisterToken::Honour, TokenProtection::Optional),
        };
        Policy {
            token_expiry: TokenExpiry::KeepBinding,
            failed_reauthorization: FailedReauthorization::KeepBinding,
            max_devices_per_mc_id: None,
            register_token,
            token_protection,
            impu_change: ImpuChange::KeepOldBinding,
            csk_tie: CskTie::Enforced,
            replay_window_secs: 0,
            key_upload_skew_secs: 300,
            registration_required: true,
            default_register_expires: 3600,
            default_expires: 3600,
            min_expires: 60,
            max_expires: u32::MAX,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| format!("unknown variant {s:?} (post-cr, pre-cr, ct1-rel18)"))
    }
}
