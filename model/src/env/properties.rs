//! The named properties: each with a stable name, its kind, the clause it comes from, a one-line
//! meaning, a condition over [`EnvState`], and the verdict each configuration is expected to give
//! (docs/findings.md reports the same table).

use serde::{Deserialize, Serialize};
use stateright::Property;

use crate::ids::UnixTime;
use crate::policy::{FailedReauthorization, RegisterToken, TokenExpiry};

use super::{step, EnvState, McxModel, ModelConfig, NetworkKind, Tok, TokenKind};

/// `always` (a counterexample violates it) or `sometimes` (a witness shows it can happen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyKind {
    /// Holds in every reachable state.
    Always,
    /// Holds in at least one reachable state (reachability: the behaviour is not vacuous).
    Sometimes,
}

impl PropertyKind {
    /// `always` / `sometimes`.
    pub fn name(self) -> &'static str {
        match self {
            PropertyKind::Always => "always",
            PropertyKind::Sometimes => "sometimes",
        }
    }
}

/// A checker verdict. For an `always` property, `Holds` means no counterexample exists; for a
/// `sometimes` property, `Holds` means a witness was found (so `Violated` means unreachable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// See the type docs.
    Holds,
    /// See the type docs.
    Violated,
}

impl Verdict {
    /// `holds` / `violated`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Violated => "violated",
        }
    }
}

/// The verdict expected for a configuration, with the reason it is expected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// The expected verdict.
    pub verdict: Verdict,
    /// Why.
    pub because: &'static str,
}

/// One property of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct PropertyInfo {
    /// Stable name (`s1-authenticated-binding`, …).
    pub name: &'static str,
    /// Always or sometimes.
    pub kind: PropertyKind,
    /// Where it comes from.
    pub clause: &'static str,
    /// One line.
    pub meaning: &'static str,
    /// The condition over a state.
    pub condition: fn(&McxModel, &EnvState) -> bool,
}

impl PropertyInfo {
    /// The stateright property.
    pub fn into_property(self) -> Property<McxModel> {
        match self.kind {
            PropertyKind::Always => Property::always(self.name, self.condition),
            PropertyKind::Sometimes => Property::sometimes(self.name, self.condition),
        }
    }
}

fn no_flag(s: &EnvState, bit: u32) -> bool {
    s.step & bit == 0
}

fn flag(s: &EnvState, bit: u32) -> bool {
    s.step & bit != 0
}

/// S-1: every binding's MC ID is the claim of a genuine IdMS token of that user, unexpired when
/// accepted and scoped for that service.
fn s1(m: &McxModel, s: &EnvState) -> bool {
    let life = m.config().token_life;
    s.server.bindings().all(|(k, b)| {
        let Some(t) = Tok::parse(b.token_id.as_str()) else {
            return false;
        };
        let service = m.config().services.iter().position(|x| *x == k.service);
        t.kind != TokenKind::Forged
            && t.kind != TokenKind::WrongScope
            && UnixTime(t.exp(life)) > b.authorized_at
            && b.token_exp == UnixTime(t.exp(life))
            && service.is_some_and(|i| *m.mc_id(t.user, i as u8) == b.mc_id)
    })
}

/// S-3: every binding's IMPU is registered.
fn s3(_: &McxModel, s: &EnvState) -> bool {
    s.server
        .bindings()
        .all(|(k, _)| s.server.registrations().any(|(i, _)| *i == k.impu))
}

/// S-4: one MC ID per (service, IMPU, client), and each current ETag names exactly one binding.
fn s4(_: &McxModel, s: &EnvState) -> bool {
    let mut keys: Vec<_> = s.server.bindings().map(|(k, _)| k).collect();
    let n = keys.len();
    keys.dedup();
    keys.len() == n
        && s.server.bindings().all(|(k, b)| {
            b.publication
                .as_ref()
                .is_none_or(|p| s.server.publication_of(&p.etag) == Some(k))
        })
}

/// S-9 (state part): no publication outlives its expiry once the clock has passed it.
fn s9(_: &McxModel, s: &EnvState) -> bool {
    let now = UnixTime(u64::from(s.now));
    no_flag(s, step::S9_VIOLATED)
        && s.server
            .bindings()
            .all(|(_, b)| b.publication.as_ref().is_none_or(|p| p.expires_at > now))
}

/// No impersonation: a binding (IMPU, MC ID) exists only if that user's UE held that IMPU while
/// the user was logged on at it.
fn no_impersonation(m: &McxModel, s: &EnvState) -> bool {
    s.server.bindings().all(
        |(k, b)| match (m.impu_index(&k.impu), m.mc_id_user(&b.mc_id)) {
            (Some(i), Some(u)) => m.held(s, i, u),
            _ => false,
        },
    )
}

/// Registration never waits for a token (CR R-13): no UE is kept from registering for want of a
/// token, and the server refuses no third-party REGISTER from the SIP core.
fn registration_never_waits(m: &McxModel, s: &EnvState) -> bool {
    no_flag(s, step::REGISTER_REFUSED)
        && s.ues.iter().enumerate().all(|(i, u)| {
            u.registered || u.token.is_some() || !m.config().carriage(i).in_register()
        })
}

fn token_expiry_per_policy(m: &McxModel, s: &EnvState) -> bool {
    match m.config().policy.token_expiry {
        TokenExpiry::EndBinding => flag(s, step::UNBOUND_TOKEN_EXPIRED),
        TokenExpiry::KeepBinding => {
            let now = UnixTime(u64::from(s.now));
            s.server
                .bindings()
                .any(|(k, b)| m.client_ue(&k.client_id).is_some() && b.token_exp <= now)
        }
    }
}

/// The catalogue, in report order.
pub fn catalogue() -> Vec<PropertyInfo> {
    use PropertyKind::{Always, Sometimes};
    vec![
        PropertyInfo {
            name: "s1-authenticated-binding",
            kind: Always,
            clause: "TS 33.180 5.1.3.2 (CR), B.11/B.12; dossier S-1",
            meaning: "every binding's MC service ID is the claim of a genuine IdMS token for that user, unexpired when accepted and scoped for the service",
            condition: s1,
        },
        PropertyInfo {
            name: "s2-impu-from-sip-core",
            kind: Always,
            clause: "TS 24.379 7.3.3 step 1, TS 24.229 5.4.1.7; dossier S-2",
            meaning: "a binding's IMPU is the P-Asserted-Identity (or registered IMPU) the SIP core asserted on the request that made it",
            condition: |_, s| no_flag(s, step::S2_VIOLATED),
        },
        PropertyInfo {
            name: "s3-no-binding-without-registration",
            kind: Always,
            clause: "TS 24.379 7.3.2, TS 24.229 5.4.1.7; dossier S-3",
            meaning: "every bound IMPU has a third-party registration at the server",
            condition: s3,
        },
        PropertyInfo {
            name: "s4-one-mc-id-per-client",
            kind: Always,
            clause: "TS 24.379 7.3.3 (CR 5.1.3.2.1 user switch); dossier S-4",
            meaning: "at most one MC service ID per (service, IMPU, MC client ID), and each current SIP-ETag names exactly that binding",
            condition: s4,
        },
        PropertyInfo {
            name: "s5-user-switch-isolation",
            kind: Always,
            clause: "CR 5.1.3.2.1 (R-14), dossier Q-10; dossier S-5",
            meaning: "once a user switched away from (or logged off) a UE's client, that client is not bound to the user again unless the user logs on there again",
            condition: |_, s| no_flag(s, step::S5_VIOLATED),
        },
        PropertyInfo {
            name: "s6-settings-only-never-binds",
            kind: Always,
            clause: "TS 24.379 7.3.4; dossier S-6",
            meaning: "a settings-only PUBLISH never creates a binding and never changes a binding's MC service ID",
            condition: |_, s| no_flag(s, step::S6_VIOLATED),
        },
        PropertyInfo {
            name: "s7-failure-atomicity",
            kind: Always,
            clause: "RFC 3903 section 6; dossier S-7, Q-9",
            meaning: "any non-2xx response leaves the binding table unchanged",
            condition: |_, s| no_flag(s, step::S7_VIOLATED),
        },
        PropertyInfo {
            name: "s8-etag-freshness",
            kind: Always,
            clause: "RFC 3903 sections 6 step 3 and 6; dossier S-8, Q-14",
            meaning: "every 2xx to PUBLISH carries a SIP-ETag never issued before, and SIP-If-Match succeeds only with the current tag of that IMPU's publication",
            condition: |_, s| no_flag(s, step::S8_VIOLATED),
        },
        PropertyInfo {
            name: "s9-removal-is-total",
            kind: Always,
            clause: "TS 24.379 7.3.5, RFC 3903 section 6; dossier S-9",
            meaning: "after a successful Expires: 0 PUBLISH, or once a publication's expiry has passed, neither its binding nor its SIP-ETag remains",
            condition: s9,
        },
        PropertyInfo {
            name: "no-impersonation",
            kind: Always,
            clause: "TS 33.180 5.1.3.2 (CR), R-15 clause 9 protection; dossier Q-6, Q-3",
            meaning: "an IMPU is bound to a user's MC service ID only if that user's UE held that IMPU while the user was logged on",
            condition: no_impersonation,
        },
        PropertyInfo {
            name: "registration-never-waits-for-token",
            kind: Always,
            clause: "CR R-13 (TS 33.180 5.1.3.2); dossier L-4, Q-1",
            meaning: "a UE without a token can complete SIP registration, and no third-party REGISTER is refused",
            condition: registration_never_waits,
        },
        PropertyInfo {
            name: "bound",
            kind: Sometimes,
            clause: "TS 24.379 7.3.3; dossier L-2",
            meaning: "a UE's client gets bound to an MC service ID",
            condition: |_, s| flag(s, step::BOUND),
        },
        PropertyInfo {
            name: "rebound-after-user-switch",
            kind: Sometimes,
            clause: "CR 5.1.3.2.1 (R-14); dossier L-5, Q-10",
            meaning: "a UE's bound client is rebound to another user's MC service ID",
            condition: |_, s| flag(s, step::REBOUND),
        },
        PropertyInfo {
            name: "rebound-after-impu-change",
            kind: Sometimes,
            clause: "CR 5.1.3.2.1 (R-14); dossier Q-13",
            meaning: "a UE's client is bound under an IMPU it moved to after its first one",
            condition: |_, s| flag(s, step::BOUND_NEW_IMPU),
        },
        PropertyInfo {
            name: "unbound-after-deregistration",
            kind: Sometimes,
            clause: "TS 24.229 5.4.1.7, TS 24.379 7.3.2; dossier L-3",
            meaning: "a de-registration removes a UE's binding",
            condition: |_, s| flag(s, step::UNBOUND_DEREGISTERED),
        },
        PropertyInfo {
            name: "unbound-after-log-off",
            kind: Sometimes,
            clause: "TS 24.379 7.3.5 and 7.1; dossier L-3",
            meaning: "an MC service log-off (PUBLISH Expires: 0, or REGISTER without the feature tag) removes a UE's binding",
            condition: |_, s| flag(s, step::UNBOUND_LOG_OFF),
        },
        PropertyInfo {
            name: "token-expiry-per-policy",
            kind: Sometimes,
            clause: "TS 33.180 B.12; dossier Q-4, L-6",
            meaning: "at a token's exp the binding ends (policy end-binding) or is kept (policy keep-binding), as configured",
            condition: token_expiry_per_policy,
        },
        PropertyInfo {
            name: "register-token-binds",
            kind: Sometimes,
            clause: "pre-CR TS 33.180 5.1.3.2.2, TS 24.379 7.1/7.3.2; dossier R-24, Q-1",
            meaning: "a token carried in REGISTER makes a binding",
            condition: |_, s| flag(s, step::BOUND_BY_REGISTER),
        },
        PropertyInfo {
            name: "publish-before-registration",
            kind: Sometimes,
            clause: "TS 24.379 7.3.3, TS 24.229 5.4.1.7; dossier S-3, Q-2",
            meaning: "a UE's PUBLISH reaches the server before its third-party REGISTER and is refused with 403",
            condition: |_, s| flag(s, step::PUBLISH_NOT_REGISTERED),
        },
    ]
}

const fn holds(because: &'static str) -> Option<Expectation> {
    Some(Expectation {
        verdict: Verdict::Holds,
        because,
    })
}

const fn violated(because: &'static str) -> Option<Expectation> {
    Some(Expectation {
        verdict: Verdict::Violated,
        because,
    })
}

/// The verdict expected for `name` under `cfg`, with the reason. These are predictions written
/// down before the checker ran on each configuration; `mcx-authz check` exits 1 when the checker
/// disagrees.
pub fn expected(name: &str, cfg: &ModelConfig) -> Option<Expectation> {
    let register_carriers = (0..cfg.ues).any(|i| cfg.carriage(i).in_register());
    let exposed = register_carriers || !cfg.protects_tokens();
    let reordering = cfg.network != NetworkKind::Ordered;
    let bad_tokens = cfg.token_kinds.iter().any(|k| *k != TokenKind::Valid)
        || cfg.max_time >= cfg.token_life
        || cfg.attacker;
    match name {
        "s1-authenticated-binding"
        | "s2-impu-from-sip-core"
        | "s3-no-binding-without-registration"
        | "s4-one-mc-id-per-client"
        | "s6-settings-only-never-binds"
        | "s8-etag-freshness"
        | "s9-removal-is-total" => holds("kept by the machine for every environment behaviour"),
        "s5-user-switch-isolation" => {
            if cfg.network == NetworkKind::Duplicating {
                violated("a delayed duplicate of an initial PUBLISH (no SIP-If-Match) rebinds the user who switched away")
            } else if reordering && register_carriers {
                violated("two REGISTERs of one UE are reordered: the old user's REGISTER-borne token arrives last")
            } else {
                holds("one outstanding PUBLISH per client and in-order REGISTERs")
            }
        }
        "s7-failure-atomicity" => {
            if cfg.policy.failed_reauthorization == FailedReauthorization::DropBinding && bad_tokens
            {
                violated("failed_reauthorization = drop-binding removes the binding on a 403")
            } else {
                holds("failed_reauthorization = keep-binding: a 403 changes nothing")
            }
        }
        "no-impersonation" => {
            if cfg.attacker && exposed {
                violated("the SIP core sees the token unprotected and the attacker replays it from its own IMPU")
            } else {
                holds("no token crosses the SIP core unprotected")
            }
        }
        "registration-never-waits-for-token" => {
            if register_carriers {
                violated("a REGISTER-option client registers only once it holds a token")
            } else {
                holds("the token travels only in PUBLISH")
            }
        }
        "bound" | "unbound-after-deregistration" | "unbound-after-log-off" => {
            holds("reachable in every variant")
        }
        "rebound-after-user-switch" => {
            if cfg.users >= 2 {
                holds("a second user logs on at a bound client")
            } else {
                violated("only one user")
            }
        }
        "rebound-after-impu-change" => {
            if cfg.impus_per_ue >= 2 {
                holds("a UE moves to its second IMPU and authorizes again")
            } else {
                violated("one IMPU per UE")
            }
        }
        "token-expiry-per-policy" => {
            if cfg.max_time >= cfg.token_life {
                holds("time runs past a valid token's exp")
            } else {
                violated("time stops before any token expires")
            }
        }
        "register-token-binds" => {
            if register_carriers && cfg.policy.register_token == RegisterToken::Honour {
                holds("a REGISTER-option client's token is honoured")
            } else {
                violated("no REGISTER-borne token is honoured")
            }
        }
        "publish-before-registration" => {
            // Only a token-bearing PUBLISH needs a registration (S-3 policy); a refresh or a
            // settings-only PUBLISH is answered 412 or 404/141 first.
            if !(0..cfg.ues).any(|u| cfg.carriage(u).in_publish()) {
                violated("no UE carries its token in PUBLISH, and only that PUBLISH needs a registration")
            } else if reordering || cfg.restarts > 0 {
                holds("the network may deliver a PUBLISH before the third-party REGISTER")
            } else {
                violated("per-UE FIFO: the third-party REGISTER always arrives first")
            }
        }
        _ => None,
    }
}
