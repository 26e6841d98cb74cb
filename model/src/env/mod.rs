//! The stateright environment model: UEs, an IdMS, a SIP core, a network and an attacker around
//! the very [`Machine`] the server runs.
//!
//! Every request reaches the server as [`Machine::handle`]`(now, Input::…)`; the model only
//! decides *which* request arrives *when*. Design (docs/model.md has the long form):
//!
//! - **Time** is a small integer (`UnixTime(t)`, `0..=max_time`); [`EnvAction::Tick`] advances it
//!   and feeds [`Input::Tick`].
//! - **Tokens** are abstract ([`Tok`]: user, issue time, kind). The validator runs at delivery
//!   time: forged → bad signature, `exp <= now` → expired, else the claims (scopes empty for a
//!   wrongly scoped token). The machine sees only the [`TokenVerdict`].
//! - **UEs** keep one PUBLISH transaction outstanding at a time. The S-CSCF answers a UE's
//!   REGISTER itself (dossier Q-2) and forwards a third-party REGISTER with the IMPU, the MC
//!   feature tags and — for clients that use the REGISTER option — the token from the body.
//! - **The network** holds the requests in flight from the SIP core to the server; its kind
//!   decides which may arrive next. A duplicating network may keep a copy of a delivered request
//!   and deliver it again later (bounded).
//! - **The attacker** owns a registered IMPU, sees every token that crosses the SIP core
//!   unprotected (REGISTER bodies always; PUBLISH tokens unless protected per TS 33.180 clause 9)
//!   and replays it from its own IMPU; it also PUBLISHes straight to the server with a forged
//!   P-Asserted-Identity.
//! - **Fresh SIP-ETags** come from a counter in the state (`e0`, `e1`, …) that grows only when
//!   the machine issues one, so "never issued before" is checkable; the counter is bounded by
//!   [`ModelConfig::max_publications`] through [`Model::within_boundary`].
//! - **Step facts.** Properties are `fn` pointers over the state, so what the last step did that
//!   a property must judge (S-2, S-5…S-9 and the reachability properties) is folded into the
//!   bit set [`EnvState::step`] when the step is taken, and cleared on the next step.

mod config;
mod properties;
mod scenarios;
mod trace;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use stateright::{Model, Property};

use crate::ids::{ClientId, CskId, ETag, Impu, McId, Service, ServiceSet, TokenId, UnixTime};
use crate::input::{
    AssertedIdentity, Authorization, EventPackage, IfMatch, Input, Protection, Publish,
    PublishBody, PublishTarget, RegisterTarget, Settings, ThirdPartyRegister,
};
use crate::machine::Machine;
use crate::output::{BindingEvent, Output, Response, UnbindCause};
use crate::token::{TokenRejection, TokenVerdict, VerifiedClaims};

pub use config::{Carriage, ModelConfig, NetworkKind, TokenKind};
pub use properties::{Expectation, PropertyInfo, PropertyKind, Verdict};
pub use scenarios::SCENARIOS;
pub use trace::{RequestKind, TokenFact, Trace, TraceStep};

/// An abstract access token as the IdMS issued it (or the attacker made it up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tok {
    /// The user it was issued to (index; user 0 is "A").
    pub user: u8,
    /// The tick it was issued at.
    pub issued: u8,
    /// Valid, expired, wrongly scoped or forged.
    pub kind: TokenKind,
}

impl Tok {
    /// The `exp` claim in ticks.
    pub fn exp(&self, token_life: u8) -> u64 {
        match self.kind {
            TokenKind::Expired => u64::from(self.issued),
            _ => u64::from(self.issued) + u64::from(token_life),
        }
    }

    /// The `jti`: `tok-A-t0-valid`.
    pub fn id(&self) -> String {
        format!(
            "tok-{}-t{}-{}",
            user_name(self.user),
            self.issued,
            self.kind.name()
        )
    }

    /// Parses [`Tok::id`].
    pub fn parse(id: &str) -> Option<Tok> {
        let rest = id.strip_prefix("tok-")?;
        let mut parts = rest.splitn(3, '-');
        let user = parts.next()?;
        let issued = parts.next()?.strip_prefix('t')?.parse().ok()?;
        let kind = match parts.next()? {
            "valid" => TokenKind::Valid,
            "expired" => TokenKind::Expired,
            "wrong-scope" => TokenKind::WrongScope,
            "forged" => TokenKind::Forged,
            _ => return None,
        };
        let [c] = user.as_bytes() else { return None };
        Some(Tok {
            user: c.checked_sub(b'A')?,
            issued,
            kind,
        })
    }
}

/// The user's display name: A, B, C, D.
pub fn user_name(user: u8) -> char {
    char::from(b'A' + user)
}

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Sender {
    /// UE number `n` (0-based; shown as UE1, UE2, …).
    Ue(u8),
    /// The attacker.
    Attacker,
}

/// A request in flight from the SIP core (or, forged, from the attacker) to the MCX server.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Msg {
    /// The sender.
    pub from: Sender,
    /// A duplicate of a request delivered before (its response reaches nobody).
    pub dup: bool,
    /// The request.
    pub req: Req,
}

/// The requests the server receives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Req {
    /// Third-party REGISTER (TS 24.229 5.4.1.7).
    Register {
        /// Global IMPU index.
        impu: u8,
        /// `Expires` in ticks; 0 de-registers.
        expires: u8,
        /// Whether the UE's REGISTER carried the MC service feature tags (no tags = MC service
        /// log-off, TS 24.379 7.1).
        mc_tags: bool,
        /// The token in the UE's REGISTER body, if any.
        token: Option<Tok>,
    },
    /// PUBLISH `Event: poc-settings` (TS 24.379 7.3).
    Publish {
        /// Global IMPU index of P-Asserted-Identity.
        impu: u8,
        /// Whether it came through the SIP core (else the attacker sent it straight to the
        /// server, and P-Asserted-Identity is forged).
        trusted: bool,
        /// Index into [`ModelConfig::services`].
        service: u8,
        /// `SIP-If-Match` (ETag number).
        if_match: Option<u16>,
        /// `Expires` in ticks; 0 removes.
        expires: u8,
        /// The body.
        body: Body,
    },
}

/// A PUBLISH body in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Body {
    /// No body (refresh or removal).
    Empty,
    /// Service authorization with a token (TS 24.379 7.3.3).
    Auth {
        /// The token.
        token: Tok,
        /// Protected per TS 33.180 clause 9.
        protected: bool,
    },
    /// Settings only, claiming this user's MC service ID (TS 24.379 7.3.4).
    Settings {
        /// The user whose MC ID `<mcptt-request-uri>` names.
        user: u8,
    },
}

/// What a UE is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Pending {
    /// A PUBLISH with a token, for service index `n`.
    Authorize(u8),
    /// A settings-only PUBLISH.
    Settings(u8),
    /// A body-less refresh.
    Refresh(u8),
    /// A removal (`Expires: 0`).
    Remove(u8),
}

/// One UE (with one MC client) as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UeState {
    /// Which of its IMPUs it uses (0-based).
    pub impu: u8,
    /// Registered with the S-CSCF (the UE's view).
    pub registered: bool,
    /// Whether its registration carries the MC feature tags.
    pub mc_tags: bool,
    /// The logged-on MC service user.
    pub user: Option<u8>,
    /// The user's access token.
    pub token: Option<Tok>,
    /// The token its last REGISTER carried.
    pub reg_token: Option<Tok>,
    /// The SIP-ETag it holds, per service.
    pub etags: Vec<Option<u16>>,
    /// Its outstanding PUBLISH transaction.
    pub pending: Option<Pending>,
}

/// The model's state: the server machine and its environment, plus ghost variables.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnvState {
    /// The time, in ticks.
    pub now: u8,
    /// The MCX server: the very machine `mcx-authz serve` runs.
    pub server: Machine,
    /// The UEs.
    pub ues: Vec<UeState>,
    /// Requests in flight (kept in a canonical order).
    pub net: Vec<Msg>,
    /// The next fresh SIP-ETag number (ghost: every tag below was issued once).
    pub next_etag: u16,
    /// Duplicate deliveries left.
    pub dups_left: u8,
    /// Attacker requests left.
    pub attacker_left: u8,
    /// Server restarts left.
    pub restarts_left: u8,
    /// Tokens the SIP core (and so the attacker) saw unprotected.
    pub captured: Vec<Tok>,
    /// Ghost: bit `impu * users + user` is set once a UE held that IMPU while that user was
    /// logged on at it.
    pub held: u64,
    /// Ghost: bit `ue * users + user` is set while the user has switched away from (or logged off)
    /// that UE's client and not logged on there again.
    pub switched_away: u64,
    /// Facts about the step that led here (bits of [`step`]).
    pub step: u32,
}

/// Bits of [`EnvState::step`]: what the last step did.
pub mod step {
    /// S-2: a binding was made from a request not asserted by the SIP core, or under another IMPU.
    pub const S2_VIOLATED: u32 = 1 << 0;
    /// S-5: a UE's client was bound to a user who had switched away from it.
    pub const S5_VIOLATED: u32 = 1 << 1;
    /// S-6: a settings-only PUBLISH bound or rebound.
    pub const S6_VIOLATED: u32 = 1 << 2;
    /// S-7: a non-2xx changed the binding table.
    pub const S7_VIOLATED: u32 = 1 << 3;
    /// S-8: a 2xx carried a reused ETag, or If-Match succeeded with a non-current tag.
    pub const S8_VIOLATED: u32 = 1 << 4;
    /// S-9: after a successful removal the binding or its ETag survived.
    pub const S9_VIOLATED: u32 = 1 << 5;
    /// A third-party REGISTER from the SIP core was refused.
    pub const REGISTER_REFUSED: u32 = 1 << 6;
    /// A UE's client got a new binding.
    pub const BOUND: u32 = 1 << 8;
    /// A UE's client was rebound to another user.
    pub const REBOUND: u32 = 1 << 9;
    /// A UE's client was bound under one of its later IMPUs.
    pub const BOUND_NEW_IMPU: u32 = 1 << 10;
    /// A UE's binding ended by de-registration.
    pub const UNBOUND_DEREGISTERED: u32 = 1 << 11;
    /// A UE's binding ended by MC service log-off (PUBLISH Expires 0 or REGISTER without tags).
    pub const UNBOUND_LOG_OFF: u32 = 1 << 12;
    /// A binding ended at token expiry.
    pub const UNBOUND_TOKEN_EXPIRED: u32 = 1 << 13;
    /// A binding was made from a REGISTER-borne token.
    pub const BOUND_BY_REGISTER: u32 = 1 << 14;
    /// A UE's PUBLISH got 403 because its IMPU was not (yet) registered.
    pub const PUBLISH_NOT_REGISTERED: u32 = 1 << 15;
}

/// One step of the environment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EnvAction {
    /// The UE registers its current IMPU (or re-registers to carry a new token).
    Register(u8),
    /// The UE de-registers.
    Deregister(u8),
    /// The UE de-registers its IMPU and registers its next one (IMPUs are used in order, each
    /// once, which bounds the space).
    ChangeImpu(u8),
    /// A user logs on at the UE and the IdMS issues a token of this kind (a user switch when
    /// another user was logged on).
    LogOn {
        /// The UE.
        ue: u8,
        /// The user.
        user: u8,
        /// What the IdMS issues.
        kind: TokenKind,
    },
    /// The UE's client sends PUBLISH with the token for service index `service`.
    Authorize {
        /// The UE.
        ue: u8,
        /// Service index.
        service: u8,
    },
    /// Settings-only PUBLISH.
    Settings {
        /// The UE.
        ue: u8,
        /// Service index.
        service: u8,
    },
    /// Body-less PUBLISH refresh.
    Refresh {
        /// The UE.
        ue: u8,
        /// Service index.
        service: u8,
    },
    /// The user logs off (PUBLISH `Expires: 0`, or REGISTER without MC feature tags for a
    /// REGISTER-option client).
    LogOff(u8),
    /// PUBLISH `Expires: 0` for a service left over after log-off.
    Remove {
        /// The UE.
        ue: u8,
        /// Service index.
        service: u8,
    },
    /// The network delivers a request (keeping a copy for later when `keep_copy`).
    Deliver {
        /// The request.
        msg: Msg,
        /// Duplicating network: keep a copy to deliver again.
        keep_copy: bool,
    },
    /// The attacker replays a token it saw, in a PUBLISH from its own IMPU via the SIP core.
    Replay {
        /// The token.
        token: Tok,
        /// Service index.
        service: u8,
    },
    /// The attacker sends a PUBLISH straight to the server claiming a UE's IMPU.
    ForgePai {
        /// The victim's global IMPU index.
        impu: u8,
    },
    /// Time advances one tick.
    Tick,
    /// The server restarts and loses its volatile state.
    Restart,
}

/// What a delivery or clock step did at the server (for traces).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepEffect {
    /// The input the machine got.
    pub input: Option<Input>,
    /// The response.
    pub response: Option<Response>,
    /// The binding events.
    pub events: Vec<BindingEvent>,
}

/// The stateright model (build it with [`ModelConfig::into_model`]).
#[derive(Clone, Debug)]
pub struct McxModel {
    cfg: ModelConfig,
    impus: Vec<Impu>,
    clients: Vec<ClientId>,
    /// `mc_ids[user][service index]`.
    mc_ids: Vec<Vec<McId>>,
    impu_index: HashMap<Impu, u8>,
    mc_id_user: HashMap<McId, u8>,
    service_set: ServiceSet,
}

impl McxModel {
    fn new(cfg: ModelConfig) -> Self {
        let mut impus = Vec::new();
        for ue in 0..cfg.ues {
            for k in 0..cfg.impus_per_ue {
                impus.push(Impu::new(format!(
                    "sip:ue{}-{}@ims.example",
                    ue + 1,
                    char::from(b'a' + k as u8)
                )));
            }
        }
        impus.push(Impu::new("sip:attacker@ims.example"));
        let mut clients: Vec<ClientId> = (0..cfg.ues)
            .map(|ue| ClientId::new(format!("ue{}-client", ue + 1)))
            .collect();
        clients.push(ClientId::new("attacker-client"));
        let mc_ids: Vec<Vec<McId>> = (0..cfg.users as u8)
            .map(|u| {
                cfg.services
                    .iter()
                    .map(|s| McId::new(format!("sip:user{}@{}.example", user_name(u), s.name())))
                    .collect()
            })
            .collect();
        let impu_index = impus
            .iter()
            .enumerate()
            .map(|(i, x)| (x.clone(), i as u8))
            .collect();
        let mc_id_user = mc_ids
            .iter()
            .enumerate()
            .flat_map(|(u, ids)| ids.iter().map(move |id| (id.clone(), u as u8)))
            .collect();
        let service_set = cfg.services.iter().copied().collect();
        McxModel {
            cfg,
            impus,
            clients,
            mc_ids,
            impu_index,
            mc_id_user,
            service_set,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The IMPU with global index `i` (UE IMPUs first, the attacker's last).
    pub fn impu(&self, i: u8) -> &Impu {
        &self.impus[usize::from(i)]
    }

    /// The global index of UE `ue`'s IMPU number `k`.
    pub fn ue_impu(&self, ue: usize, k: u8) -> u8 {
        (ue * self.cfg.impus_per_ue) as u8 + k
    }

    /// The attacker's IMPU index.
    pub fn attacker_impu(&self) -> u8 {
        (self.cfg.ues * self.cfg.impus_per_ue) as u8
    }

    /// The IMPU index of an IMPU string, if the model knows it.
    pub fn impu_index(&self, impu: &Impu) -> Option<u8> {
        self.impu_index.get(impu).copied()
    }

    /// The MC client ID of a sender.
    pub fn client(&self, from: Sender) -> &ClientId {
        match from {
            Sender::Ue(n) => &self.clients[usize::from(n)],
            Sender::Attacker => &self.clients[self.cfg.ues],
        }
    }

    /// The UE whose client this is.
    pub fn client_ue(&self, client: &ClientId) -> Option<usize> {
        self.clients[..self.cfg.ues]
            .iter()
            .position(|c| c == client)
    }

    /// The MC service ID of `user` for service index `service`.
    pub fn mc_id(&self, user: u8, service: u8) -> &McId {
        &self.mc_ids[usize::from(user)][usize::from(service)]
    }

    /// The user whose MC service ID this is.
    pub fn mc_id_user(&self, mc_id: &McId) -> Option<u8> {
        self.mc_id_user.get(mc_id).copied()
    }

    /// The service with index `i`.
    pub fn service(&self, i: u8) -> Service {
        self.cfg.services[usize::from(i)]
    }

    /// The SIP-ETag text for number `n`.
    pub fn etag(n: u16) -> ETag {
        ETag::new(format!("e{n}"))
    }

    /// The number of an ETag made by [`McxModel::etag`].
    pub fn etag_number(tag: &ETag) -> Option<u16> {
        tag.as_str().strip_prefix('e')?.parse().ok()
    }

    /// The single initial state: nobody registered but the attacker, time 0.
    pub fn init_state(&self) -> EnvState {
        let mut server = Machine::new(self.cfg.machine_policy());
        // Clause 9 keys: one provisioned CSK per (user, IMPU), tied to the user's MC service ID.
        for user in 0..self.cfg.users as u8 {
            for impu in 0..self.impus.len() as u8 {
                for service in 0..self.cfg.services.len() as u8 {
                    server.handle(
                        UnixTime(0),
                        Input::ProvisionCsk {
                            csk_id: Self::csk(user, impu, service),
                            mc_id: self.mc_id(user, service).clone(),
                        },
                    );
                }
            }
        }
        if self.cfg.attacker {
            // The attacker is a subscriber of the same IMS with its own registered IMPU.
            server.handle(
                UnixTime(0),
                Input::ThirdPartyRegister(ThirdPartyRegister {
                    target: RegisterTarget::Ours,
                    impu: AssertedIdentity::Trusted(self.impu(self.attacker_impu()).clone()),
                    expires: Some(255),
                    services: Some(self.service_set),
                    embedded: vec![],
                }),
            );
        }
        EnvState {
            now: 0,
            server,
            ues: (0..self.cfg.ues)
                .map(|_| UeState {
                    impu: 0,
                    registered: false,
                    mc_tags: false,
                    user: None,
                    token: None,
                    reg_token: None,
                    etags: vec![None; self.cfg.services.len()],
                    pending: None,
                })
                .collect(),
            net: Vec::new(),
            next_etag: 0,
            dups_left: if self.cfg.network == NetworkKind::Duplicating {
                self.cfg.max_duplicates
            } else {
                0
            },
            attacker_left: if self.cfg.attacker {
                self.cfg.attacker_budget
            } else {
                0
            },
            restarts_left: self.cfg.restarts,
            captured: Vec::new(),
            held: 0,
            switched_away: 0,
            step: 0,
        }
    }

    /// Every action enabled in `state`, in a fixed order.
    pub fn enabled(&self, state: &EnvState) -> Vec<EnvAction> {
        let mut v = Vec::new();
        self.actions(state, &mut v);
        v
    }

    /// Runs `actions` from the initial state; returns every state visited (the initial state
    /// first), or the index of the first action that is not enabled.
    pub fn run(&self, actions: &[EnvAction]) -> Result<Vec<EnvState>, usize> {
        let mut states = vec![self.init_state()];
        for (i, a) in actions.iter().enumerate() {
            let last = states.last().expect("never empty");
            if !self.enabled(last).contains(a) {
                return Err(i);
            }
            match self.next_state(last, a.clone()) {
                Some(s) if self.within_boundary(&s) => states.push(s),
                _ => return Err(i),
            }
        }
        Ok(states)
    }

    fn in_flight(&self, state: &EnvState, from: Sender) -> usize {
        state
            .net
            .iter()
            .filter(|m| m.from == from && !m.dup)
            .count()
    }

    fn validate(&self, tok: Tok, now: u8) -> TokenVerdict {
        // The model's validator: TS 33.180 B.11/B.12 reduced to genuine / expired / claims.
        if tok.kind == TokenKind::Forged {
            return TokenVerdict::Rejected(TokenRejection::BadSignature);
        }
        let exp = tok.exp(self.cfg.token_life);
        if exp <= u64::from(now) {
            return TokenVerdict::Rejected(TokenRejection::Expired);
        }
        let id = |s: Service| {
            self.cfg
                .services
                .iter()
                .position(|x| *x == s)
                .map(|i| self.mc_id(tok.user, i as u8).clone())
        };
        TokenVerdict::Verified(VerifiedClaims {
            mcptt_id: id(Service::Mcptt),
            mcvideo_id: id(Service::Mcvideo),
            mcdata_id: id(Service::Mcdata),
            scopes: if tok.kind == TokenKind::WrongScope {
                ServiceSet::EMPTY
            } else {
                ServiceSet::ALL
            },
            exp: UnixTime(exp),
            token_id: TokenId::new(tok.id()),
        })
    }

    /// The machine input a request becomes at delivery time `now`.
    pub fn input_for(&self, msg: &Msg, now: u8, fresh_etag: u16) -> Input {
        let client = self.client(msg.from).clone();
        match &msg.req {
            Req::Register {
                impu,
                expires,
                mc_tags,
                token,
            } => Input::ThirdPartyRegister(ThirdPartyRegister {
                target: RegisterTarget::Ours,
                impu: AssertedIdentity::Trusted(self.impu(*impu).clone()),
                expires: Some(u32::from(*expires)),
                services: Some(if *mc_tags {
                    self.service_set
                } else {
                    ServiceSet::EMPTY
                }),
                embedded: match token {
                    Some(t) if *mc_tags => self
                        .cfg
                        .services
                        .iter()
                        .map(|s| {
                            (
                                *s,
                                Authorization {
                                    token: self.validate(*t, now),
                                    protection: Protection::Clear,
                                    client_id: client.clone(),
                                    settings: None,
                                },
                            )
                        })
                        .collect(),
                    _ => vec![],
                },
            }),
            Req::Publish {
                impu,
                trusted,
                service,
                if_match,
                expires,
                body,
            } => Input::Publish(Publish {
                target: PublishTarget::Service(self.service(*service)),
                event: EventPackage::PocSettings,
                impu: if *trusted {
                    AssertedIdentity::Trusted(self.impu(*impu).clone())
                } else {
                    AssertedIdentity::Untrusted
                },
                if_match: match if_match {
                    Some(n) => IfMatch::One(Self::etag(*n)),
                    None => IfMatch::Absent,
                },
                expires: Some(u32::from(*expires)),
                body: match body {
                    Body::Empty => PublishBody::Empty,
                    Body::Auth { token, protected } => PublishBody::Authorization(Authorization {
                        token: self.validate(*token, now),
                        protection: if *protected {
                            Protection::Csk(Self::csk(token.user, *impu, *service))
                        } else {
                            Protection::Clear
                        },
                        client_id: client,
                        settings: None,
                    }),
                    Body::Settings { user } => PublishBody::SettingsOnly {
                        claimed_mc_id: self.mc_id(*user, *service).clone(),
                        client_id: client,
                        settings: Some(Settings::default()),
                    },
                },
                key_upload: None,
                fresh_etag: Self::etag(fresh_etag),
            }),
        }
    }

    /// The provisioned CSK of `user` on IMPU `impu` for `service`.
    pub fn csk(user: u8, impu: u8, service: u8) -> CskId {
        CskId::new(format!("csk-{}-i{impu}-s{service}", user_name(user)))
    }

    fn send(&self, s: &mut EnvState, from: Sender, req: Req) {
        if self.cfg.attacker {
            // What the SIP core sees in clear: REGISTER bodies, unprotected PUBLISH tokens.
            let seen = match &req {
                Req::Register { token, .. } => *token,
                Req::Publish {
                    body:
                        Body::Auth {
                            token,
                            protected: false,
                        },
                    trusted: true,
                    ..
                } => Some(*token),
                _ => None,
            };
            if let Some(t) = seen {
                if from != Sender::Attacker {
                    if let Err(pos) = s.captured.binary_search(&t) {
                        s.captured.insert(pos, t);
                    }
                }
            }
        }
        s.net.push(Msg {
            from,
            dup: false,
            req,
        });
    }

    fn canonical_net(&self, net: &mut [Msg]) {
        match self.cfg.network {
            // Per-sender FIFO: a stable sort by sender keeps each sender's order.
            NetworkKind::Ordered => net.sort_by_key(|m| (m.dup, m.from)),
            NetworkKind::Unordered | NetworkKind::Duplicating => net.sort(),
        }
    }

    /// Applies `action`; returns the next state and what the server did, or `None` when the
    /// action changes nothing.
    pub fn apply(&self, last: &EnvState, action: &EnvAction) -> Option<(EnvState, StepEffect)> {
        let mut s = last.clone();
        s.step = 0;
        let mut effect = StepEffect::default();
        let n_services = self.cfg.services.len() as u8;
        match *action {
            EnvAction::Register(ue) => {
                let u = &s.ues[usize::from(ue)];
                let carriage = self.cfg.carriage(usize::from(ue));
                let token = if carriage.in_register() {
                    u.token
                } else {
                    None
                };
                let impu = self.ue_impu(usize::from(ue), u.impu);
                let u = &mut s.ues[usize::from(ue)];
                u.registered = true;
                u.mc_tags = true;
                u.reg_token = token;
                self.send(
                    &mut s,
                    Sender::Ue(ue),
                    Req::Register {
                        impu,
                        expires: self.cfg.registration_ttl,
                        mc_tags: true,
                        token,
                    },
                );
            }
            EnvAction::Deregister(ue) => {
                let u = &mut s.ues[usize::from(ue)];
                let impu = u.impu;
                u.registered = false;
                u.mc_tags = false;
                u.reg_token = None;
                u.etags.iter_mut().for_each(|e| *e = None);
                let impu = self.ue_impu(usize::from(ue), impu);
                self.send(
                    &mut s,
                    Sender::Ue(ue),
                    Req::Register {
                        impu,
                        expires: 0,
                        mc_tags: false,
                        token: None,
                    },
                );
            }
            EnvAction::ChangeImpu(ue) => {
                let carriage = self.cfg.carriage(usize::from(ue));
                let u = &mut s.ues[usize::from(ue)];
                let old = u.impu;
                let new = old + 1;
                let token = if carriage.in_register() {
                    u.token
                } else {
                    None
                };
                u.impu = new;
                u.mc_tags = true;
                u.reg_token = token;
                u.etags.iter_mut().for_each(|e| *e = None);
                let (old, new) = (
                    self.ue_impu(usize::from(ue), old),
                    self.ue_impu(usize::from(ue), new),
                );
                self.send(
                    &mut s,
                    Sender::Ue(ue),
                    Req::Register {
                        impu: old,
                        expires: 0,
                        mc_tags: false,
                        token: None,
                    },
                );
                self.send(
                    &mut s,
                    Sender::Ue(ue),
                    Req::Register {
                        impu: new,
                        expires: self.cfg.registration_ttl,
                        mc_tags: true,
                        token,
                    },
                );
            }
            EnvAction::LogOn { ue, user, kind } => {
                let tok = Tok {
                    user,
                    issued: s.now,
                    kind,
                };
                let u = &mut s.ues[usize::from(ue)];
                if u.token == Some(tok) {
                    return None;
                }
                if let Some(old) = u.user.filter(|old| *old != user) {
                    s.switched_away |= self.switch_bit(ue, old);
                }
                s.switched_away &= !self.switch_bit(ue, user);
                let u = &mut s.ues[usize::from(ue)];
                u.user = Some(user);
                u.token = Some(tok);
            }
            EnvAction::Authorize { ue, service } => {
                let u = &s.ues[usize::from(ue)];
                let req = Req::Publish {
                    impu: self.ue_impu(usize::from(ue), u.impu),
                    trusted: true,
                    service,
                    if_match: u.etags[usize::from(service)],
                    expires: self.cfg.publication_ttl,
                    body: Body::Auth {
                        token: u.token?,
                        protected: self.cfg.protects_tokens(),
                    },
                };
                s.ues[usize::from(ue)].pending = Some(Pending::Authorize(service));
                self.send(&mut s, Sender::Ue(ue), req);
            }
            EnvAction::Settings { ue, service } => {
                let u = &s.ues[usize::from(ue)];
                let req = Req::Publish {
                    impu: self.ue_impu(usize::from(ue), u.impu),
                    trusted: true,
                    service,
                    if_match: u.etags[usize::from(service)],
                    expires: self.cfg.publication_ttl,
                    body: Body::Settings { user: u.user? },
                };
                s.ues[usize::from(ue)].pending = Some(Pending::Settings(service));
                self.send(&mut s, Sender::Ue(ue), req);
            }
            EnvAction::Refresh { ue, service } | EnvAction::Remove { ue, service } => {
                let remove = matches!(action, EnvAction::Remove { .. });
                let u = &s.ues[usize::from(ue)];
                let req = Req::Publish {
                    impu: self.ue_impu(usize::from(ue), u.impu),
                    trusted: true,
                    service,
                    if_match: Some(u.etags[usize::from(service)]?),
                    expires: if remove { 0 } else { self.cfg.publication_ttl },
                    body: Body::Empty,
                };
                s.ues[usize::from(ue)].pending = Some(if remove {
                    Pending::Remove(service)
                } else {
                    Pending::Refresh(service)
                });
                self.send(&mut s, Sender::Ue(ue), req);
            }
            EnvAction::LogOff(ue) => {
                let carriage = self.cfg.carriage(usize::from(ue));
                let u = &mut s.ues[usize::from(ue)];
                let user = u.user.take()?;
                u.token = None;
                s.switched_away |= self.switch_bit(ue, user);
                let u = &s.ues[usize::from(ue)];
                let impu = self.ue_impu(usize::from(ue), u.impu);
                if let Some(service) = (0..n_services).find(|i| u.etags[usize::from(*i)].is_some())
                {
                    // TS 24.379 7.3.5: PUBLISH with Expires: 0.
                    let req = Req::Publish {
                        impu,
                        trusted: true,
                        service,
                        if_match: u.etags[usize::from(service)],
                        expires: 0,
                        body: Body::Empty,
                    };
                    s.ues[usize::from(ue)].pending = Some(Pending::Remove(service));
                    self.send(&mut s, Sender::Ue(ue), req);
                } else if carriage.in_register() && u.registered && u.mc_tags {
                    // TS 24.379 7.1: re-REGISTER without the MC service feature tags.
                    let u = &mut s.ues[usize::from(ue)];
                    u.mc_tags = false;
                    u.reg_token = None;
                    self.send(
                        &mut s,
                        Sender::Ue(ue),
                        Req::Register {
                            impu,
                            expires: self.cfg.registration_ttl,
                            mc_tags: false,
                            token: None,
                        },
                    );
                }
            }
            EnvAction::Deliver { ref msg, keep_copy } => {
                let pos = s.net.iter().position(|m| m == msg)?;
                let msg = s.net.remove(pos);
                if keep_copy {
                    s.dups_left -= 1;
                    s.net.push(Msg {
                        dup: true,
                        ..msg.clone()
                    });
                }
                self.deliver(last, &mut s, &msg, &mut effect);
            }
            EnvAction::Replay { .. } | EnvAction::ForgePai { .. } => {
                // The attacker's own request goes straight through: when it is sent relative to
                // its delivery does not matter, when it is sent relative to the UEs does.
                let msg = self.attacker_msg(last, action)?;
                s.attacker_left -= 1;
                self.deliver(last, &mut s, &msg, &mut effect);
            }
            EnvAction::Tick => {
                s.now += 1;
                let out = s.server.handle(UnixTime(u64::from(s.now)), Input::Tick);
                effect.input = Some(Input::Tick);
                self.absorb(last, &mut s, None, out, &mut effect);
            }
            EnvAction::Restart => {
                s.restarts_left -= 1;
                let out = s.server.handle(UnixTime(u64::from(s.now)), Input::Restart);
                effect.input = Some(Input::Restart);
                self.absorb(last, &mut s, None, out, &mut effect);
            }
        }
        self.canonical_net(&mut s.net);
        // What the attacker saw matters only while it can still act, and only for tokens that
        // are not yet expired (a replayed expired token is refused like any expired token).
        if s.attacker_left == 0 {
            s.captured.clear();
        } else {
            let (now, life) = (u64::from(s.now), self.cfg.token_life);
            s.captured.retain(|t| t.exp(life) > now);
        }
        // Ghost: which (IMPU, user) pairs a UE has held while the user was logged on.
        for (i, u) in s.ues.iter().enumerate() {
            if let (true, Some(user)) = (u.registered, u.user) {
                s.held |= self.held_bit(self.ue_impu(i, u.impu), user);
            }
        }
        Some((s, effect))
    }

    /// The request an attacker action sends.
    pub fn attacker_msg(&self, s: &EnvState, action: &EnvAction) -> Option<Msg> {
        let req = match *action {
            // Replay through the SIP core from the attacker's own registered IMPU.
            EnvAction::Replay { token, service } => Req::Publish {
                impu: self.attacker_impu(),
                trusted: true,
                service,
                if_match: None,
                expires: self.cfg.publication_ttl,
                body: Body::Auth {
                    token,
                    protected: false,
                },
            },
            // Straight to the server, claiming the victim's IMPU in P-Asserted-Identity.
            EnvAction::ForgePai { impu } => Req::Publish {
                impu,
                trusted: false,
                service: 0,
                if_match: None,
                expires: self.cfg.publication_ttl,
                body: Body::Auth {
                    token: s.captured.first().copied().unwrap_or(Tok {
                        user: 0,
                        issued: s.now,
                        kind: TokenKind::Forged,
                    }),
                    protected: false,
                },
            },
            _ => return None,
        };
        Some(Msg {
            from: Sender::Attacker,
            dup: false,
            req,
        })
    }

    fn deliver(&self, last: &EnvState, s: &mut EnvState, msg: &Msg, effect: &mut StepEffect) {
        let input = self.input_for(msg, s.now, s.next_etag);
        effect.input = Some(input.clone());
        let out = s.server.handle(UnixTime(u64::from(s.now)), input);
        self.absorb(last, s, Some(msg), out, effect);
    }

    /// Records the outputs of one machine step: ETag counter, UE response handling, step facts.
    fn absorb(
        &self,
        last: &EnvState,
        s: &mut EnvState,
        msg: Option<&Msg>,
        out: Vec<Output>,
        effect: &mut StepEffect,
    ) {
        for o in out {
            match o {
                Output::Response(r) => effect.response = Some(r),
                Output::Binding(e) => effect.events.push(e),
                Output::Csk(_) => {}
            }
        }
        let fresh = s.next_etag;
        if let Some(r) = &effect.response {
            if r.etag.as_ref().and_then(Self::etag_number) == Some(fresh) {
                s.next_etag += 1;
            }
        }
        let before = &last.server;
        let after = &s.server;
        let mut flags = 0;
        let status = effect.response.as_ref().map(Response::status);

        // Binding events: S-2, S-5 and the reachability facts.
        for e in &effect.events {
            let (key, mc_id) = match e {
                BindingEvent::Bound { key, mc_id } => {
                    if let Some(ue) = self.client_ue(&key.client_id) {
                        flags |= step::BOUND;
                        if self.impu_index(&key.impu) != Some(self.ue_impu(ue, 0)) {
                            flags |= step::BOUND_NEW_IMPU;
                        }
                    }
                    (key, mc_id)
                }
                BindingEvent::Rebound { key, to, .. } => {
                    if self.client_ue(&key.client_id).is_some() {
                        flags |= step::REBOUND;
                    }
                    (key, to)
                }
                BindingEvent::Unbound { key, cause, .. } => {
                    let ue = self.client_ue(&key.client_id).is_some();
                    match cause {
                        UnbindCause::Deregistered if ue => flags |= step::UNBOUND_DEREGISTERED,
                        UnbindCause::PublicationRemoved | UnbindCause::ServiceLogOff if ue => {
                            flags |= step::UNBOUND_LOG_OFF
                        }
                        UnbindCause::TokenExpired => flags |= step::UNBOUND_TOKEN_EXPIRED,
                        _ => {}
                    }
                    continue;
                }
            };
            // S-2: a binding is made only from a request the SIP core asserted, under that IMPU.
            let asserted = match msg.map(|m| &m.req) {
                Some(Req::Register { impu, .. }) => Some(*impu),
                Some(Req::Publish {
                    impu,
                    trusted: true,
                    ..
                }) => Some(*impu),
                _ => None,
            };
            if asserted.is_none() || asserted != self.impu_index(&key.impu) {
                flags |= step::S2_VIOLATED;
            }
            if matches!(msg.map(|m| &m.req), Some(Req::Register { .. })) {
                flags |= step::BOUND_BY_REGISTER;
            }
            // S-5: never bind a UE's client to a user who switched away from it.
            if let (Some(ue), Some(user)) = (self.client_ue(&key.client_id), self.mc_id_user(mc_id))
            {
                if s.switched_away & self.switch_bit(ue as u8, user) != 0 {
                    flags |= step::S5_VIOLATED;
                }
            }
        }

        if let (Some(msg), Some(status)) = (msg, status) {
            let ok = status / 100 == 2;
            // S-7: a non-2xx leaves the binding table as it was (RFC 3903 atomicity).
            if !ok && !before.bindings().eq(after.bindings()) {
                flags |= step::S7_VIOLATED;
            }
            match &msg.req {
                Req::Register { .. } => {
                    if !ok {
                        flags |= step::REGISTER_REFUSED;
                    }
                }
                Req::Publish {
                    impu,
                    service,
                    if_match,
                    expires,
                    body,
                    ..
                } => {
                    if status == 403
                        && matches!(msg.from, Sender::Ue(_))
                        && effect.response.as_ref().is_some_and(|r| {
                            r.outcome
                                == crate::output::Outcome::Forbidden(
                                    crate::output::ForbiddenReason::NotRegistered,
                                )
                        })
                    {
                        flags |= step::PUBLISH_NOT_REGISTERED;
                    }
                    // S-6: settings only never creates a binding nor changes an MC service ID.
                    if matches!(body, Body::Settings { .. })
                        && after
                            .bindings()
                            .any(|(k, b)| before.binding(k).map(|x| &x.mc_id) != Some(&b.mc_id))
                    {
                        flags |= step::S6_VIOLATED;
                    }
                    // S-8: a 2xx carries a tag never issued before, and If-Match succeeds only
                    // with the current tag of a publication of this IMPU and service.
                    if ok {
                        let tag = effect.response.as_ref().and_then(|r| r.etag.as_ref());
                        if let Some(tag) = tag {
                            if Self::etag_number(tag).is_none_or(|n| n < fresh) {
                                flags |= step::S8_VIOLATED;
                            }
                        }
                        if let Some(n) = if_match {
                            let want = Self::etag(*n);
                            let current = before.bindings().any(|(k, b)| {
                                b.publication.as_ref().is_some_and(|p| p.etag == want)
                                    && self.impu_index(&k.impu) == Some(*impu)
                                    && k.service == self.service(*service)
                            });
                            if !current {
                                flags |= step::S8_VIOLATED;
                            }
                            // S-9: after a successful removal nothing of the publication is left.
                            if *expires == 0
                                && (after.publication_of(&want).is_some()
                                    || before
                                        .publication_of(&want)
                                        .is_some_and(|k| after.binding(k).is_some()))
                            {
                                flags |= step::S9_VIOLATED;
                            }
                        }
                    }
                }
            }
        }
        s.step = flags;

        // The UE's view of its response.
        if let Some(Msg {
            from: Sender::Ue(ue),
            dup: false,
            req: Req::Publish { .. },
        }) = msg
        {
            let u = &mut s.ues[usize::from(*ue)];
            if let (Some(p), Some(r)) = (u.pending.take(), &effect.response) {
                let (svc, remove) = match p {
                    Pending::Authorize(x) | Pending::Settings(x) | Pending::Refresh(x) => {
                        (x, false)
                    }
                    Pending::Remove(x) => (x, true),
                };
                let e = &mut u.etags[usize::from(svc)];
                match r.status() {
                    200 if !remove => *e = r.etag.as_ref().and_then(Self::etag_number),
                    // Removed, or the server no longer knows the publication (412, 404/141):
                    // the next PUBLISH is an initial one (TS 24.379 7.3; dossier Q-15).
                    200 | 404 | 412 => *e = None,
                    _ => {}
                }
            }
        }
    }

    fn switch_bit(&self, ue: u8, user: u8) -> u64 {
        1 << (usize::from(ue) * self.cfg.users + usize::from(user))
    }

    fn held_bit(&self, impu: u8, user: u8) -> u64 {
        1 << (usize::from(impu) * self.cfg.users + usize::from(user))
    }

    /// Whether a UE ever held IMPU `impu` while `user` was logged on at it (ghost).
    pub fn held(&self, state: &EnvState, impu: u8, user: u8) -> bool {
        state.held & self.held_bit(impu, user) != 0
    }

    /// The property catalogue with conditions (see [`PropertyInfo`]).
    pub fn catalogue(&self) -> Vec<PropertyInfo> {
        properties::catalogue()
    }

    /// The verdict this configuration is expected to give for property `name`.
    pub fn expected(&self, name: &str) -> Option<Expectation> {
        properties::expected(name, &self.cfg)
    }

    /// A stable hash of a state (for the shortest-path search).
    pub fn fingerprint(state: &EnvState) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        state.hash(&mut h);
        h.finish()
    }
}

impl Model for McxModel {
    type State = EnvState;
    type Action = EnvAction;

    fn init_states(&self) -> Vec<EnvState> {
        vec![self.init_state()]
    }

    fn actions(&self, s: &EnvState, actions: &mut Vec<EnvAction>) {
        let n_services = self.cfg.services.len() as u8;
        for (i, u) in s.ues.iter().enumerate() {
            let ue = i as u8;
            if u.pending.is_some() {
                continue;
            }
            let carriage = self.cfg.carriage(i);
            // The UE is idle here, so whatever it has in flight are REGISTERs.
            let flying = self.in_flight(s, Sender::Ue(ue));
            let may_register = flying < usize::from(self.cfg.max_registers_in_flight);
            // Pre-CR 5.1.3.2.2: a REGISTER-option client registers only with a token in hand.
            let can_register = !carriage.in_register() || u.token.is_some();
            if may_register && can_register {
                let needs = !u.registered
                    || (carriage.in_register() && (u.reg_token != u.token || !u.mc_tags));
                if needs {
                    actions.push(EnvAction::Register(ue));
                }
            }
            if u.registered && may_register {
                actions.push(EnvAction::Deregister(ue));
            }
            if u.registered
                && flying == 0
                && usize::from(u.impu) + 1 < self.cfg.impus_per_ue
                && can_register
            {
                actions.push(EnvAction::ChangeImpu(ue));
            }
            // A user logs on when nobody is, another user logs on (user switch), or the same
            // user logs on again once the token is no longer usable (token refresh).
            let usable = u.token.is_some_and(|t| {
                t.kind == TokenKind::Valid && t.exp(self.cfg.token_life) > u64::from(s.now)
            });
            for user in 0..self.cfg.users as u8 {
                if u.user == Some(user) && usable {
                    continue;
                }
                for kind in &self.cfg.token_kinds {
                    let tok = Tok {
                        user,
                        issued: s.now,
                        kind: *kind,
                    };
                    if u.token != Some(tok) {
                        actions.push(EnvAction::LogOn {
                            ue,
                            user,
                            kind: *kind,
                        });
                    }
                }
            }
            for service in 0..n_services {
                let etag = u.etags[usize::from(service)];
                if u.registered && u.mc_tags && u.token.is_some() && carriage.in_publish() {
                    actions.push(EnvAction::Authorize { ue, service });
                }
                if u.registered && u.mc_tags && u.user.is_some() {
                    actions.push(EnvAction::Settings { ue, service });
                }
                if etag.is_some() {
                    actions.push(EnvAction::Refresh { ue, service });
                    if u.user.is_none() {
                        actions.push(EnvAction::Remove { ue, service });
                    }
                }
            }
            if u.user.is_some() {
                actions.push(EnvAction::LogOff(ue));
            }
        }
        // The network.
        let mut seen: Vec<&Msg> = Vec::new();
        for (i, m) in s.net.iter().enumerate() {
            let head = match self.cfg.network {
                NetworkKind::Ordered => {
                    m.dup || !s.net[..i].iter().any(|x| x.from == m.from && !x.dup)
                }
                _ => true,
            };
            if !head || seen.contains(&m) {
                continue;
            }
            seen.push(m);
            actions.push(EnvAction::Deliver {
                msg: m.clone(),
                keep_copy: false,
            });
            if s.dups_left > 0 && !m.dup {
                actions.push(EnvAction::Deliver {
                    msg: m.clone(),
                    keep_copy: true,
                });
            }
        }
        // The attacker.
        if s.attacker_left > 0 {
            for t in &s.captured {
                for service in 0..n_services {
                    actions.push(EnvAction::Replay { token: *t, service });
                }
            }
            for (i, u) in s.ues.iter().enumerate() {
                if u.registered {
                    actions.push(EnvAction::ForgePai {
                        impu: self.ue_impu(i, u.impu),
                    });
                }
            }
        }
        if s.now < self.cfg.max_time {
            actions.push(EnvAction::Tick);
        }
        if s.restarts_left > 0 {
            actions.push(EnvAction::Restart);
        }
    }

    fn next_state(&self, last: &EnvState, action: EnvAction) -> Option<EnvState> {
        self.apply(last, &action).map(|(s, _)| s)
    }

    fn within_boundary(&self, s: &EnvState) -> bool {
        s.next_etag <= self.cfg.max_publications
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::catalogue()
            .into_iter()
            .map(PropertyInfo::into_property)
            .collect()
    }

    fn format_action(&self, action: &EnvAction) -> String {
        trace::format_action(self, action)
    }

    fn format_step(&self, last: &EnvState, action: EnvAction) -> Option<String> {
        let step = self.describe(last, &action, 0)?;
        let (next, _) = self.apply(last, &action)?;
        Some(format!(
            "{}\n\n{}",
            step.text,
            trace::format_state(self, &next)
        ))
    }
}
