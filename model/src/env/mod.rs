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
//! - **UEs that protect** (TS 33.180 clause 9) make a CSK per service and upload it in a
//!   MIKEY-SAKKE I_MESSAGE with the protected PUBLISH (TS 33.180 5.4); see [`ue`].
//! - **The attacker** owns a registered IMPU and sees every request that crosses the SIP core,
//!   protected or not: it presents tokens it read in clear (in clear, or re-protected under its
//!   own CSK), resends captured protected PUBLISHes whole or without their I_MESSAGE, and
//!   PUBLISHes straight to the server with a forged P-Asserted-Identity; see [`attacker`].
//! - **Fresh SIP-ETags** come from a counter in the state (`e0`, `e1`, …) that grows only when
//!   the machine issues one, so "never issued before" is checkable; the counter is bounded by
//!   [`ModelConfig::max_publications`] through [`Model::within_boundary`].
//! - **Step facts.** Properties are `fn` pointers over the state, so what the last step did that
//!   a property must judge (S-2, S-5…S-9 and the reachability properties) is folded into the
//!   bit set [`EnvState::step`] when the step is taken, and cleared on the next step.

//!
//! The environment is split by actor: [`ue`] (the UEs' actions next to their effects),
//! [`network`] (the SIP core and the network), [`attacker`], [`idms`] (tokens and the validator),
//! [`properties`] (the named properties and the step facts they judge), [`search`] (shortest
//! paths) and [`trace`] (rendering), with [`scenarios`] and [`config`] beside them.

mod attacker;
mod config;
mod crash;
pub mod fairness;
mod idms;
mod network;
mod properties;
mod scenarios;
mod search;
mod shared;
pub mod shared_store;
mod trace;
mod ue;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use stateright::{Model, Property};

use crate::durable::Image;
use crate::ids::{ClientId, ETag, Impu, McId, Service, ServiceSet, UnixTime};
use crate::input::{AssertedIdentity, Input, RegisterTarget, ThirdPartyRegister};
use crate::machine::Machine;
use crate::output::{BindingEvent, Output, Response};

pub use attacker::Sealed;
pub use config::{Carriage, ModelConfig, NetworkKind, TokenKind, UeProtection};
pub use idms::{user_name, Tok};
pub use network::{Body, CskRef, Msg, Prot, Req, Sender};
pub use properties::{step, Expectation, PropertyInfo, PropertyKind, Verdict};
pub use scenarios::SCENARIOS;
pub use shared::Shared;
pub use trace::{RequestKind, TokenFact, Trace, TraceStep};
pub use ue::{Pending, UeCsk, UeState};

/// The model's state: the server machine and its environment, plus ghost variables.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnvState {
    /// The time, in ticks.
    pub now: u8,
    /// The MCX server: the very machine `mcx-authz serve` runs (shared with the states before
    /// and after until a step changes it; see [`Shared`]).
    pub server: Shared<Machine>,
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
    /// Requests the companion UEs may still send, together (see
    /// [`ModelConfig::companion_budget`]).
    pub companion_left: u8,
    /// Server restarts left.
    pub restarts_left: u8,
    /// The server's durable store, built from its `Persist` batches (`None` unless
    /// [`ModelConfig::crash`]; see [`crash`]).
    pub store: Option<Shared<Image>>,
    /// Tokens the SIP core (and so the attacker) saw unprotected.
    pub captured: Vec<Tok>,
    /// Protected token PUBLISHes the attacker captured (to resend as they are).
    pub sealed: Vec<Sealed>,
    /// Ghost: the CSKs whose I_MESSAGE reached the server (sorted; only those that can arrive
    /// again are kept), so a later delivery of one is a replay.
    pub imsg_seen: Vec<CskRef>,
    /// Ghost: bit `impu * users + user` is set once a UE held that IMPU while that user was
    /// logged on at it.
    pub held: u64,
    /// Ghost: bit `ue * users + user` is set once the *server* switched that UE's client away
    /// from that user (a binding of the client to another user appeared while one to this user
    /// existed), until the user logs on at that UE again (S-5).
    pub switched: u64,
    /// Ghost: 2 bits per SIP-ETag number: the user whose request the 2xx carrying that tag
    /// answered (S-5: a binding's publication belongs to the binding's user).
    pub etag_owner: u64,
    /// Ghost: bit `ue` once the UE sent a token-less PUBLISH (CR 5.1.3.2.1).
    pub tokenless: u8,
    /// Ghost: bit per global IMPU index once a UE's client was bound under that IMPU.
    pub bound_impus: u16,
    /// Ghost: bit `ue` for a UE whose client was bound when the server restarted, until it is
    /// bound again (restart recovery, dossier Q-15).
    pub restart_victims: u8,
    /// Liveness: the environment has settled (no more disturbances; only the fair scheduler of
    /// [`fairness`] acts).
    pub settled: bool,
    /// Liveness: UE requests the fair scheduler may still send (keeps settled runs finite).
    pub settle_left: u8,
    /// Facts about the step that led here (bits of [`step`]).
    pub step: u32,
    /// Derived from `server` and `store` (so it adds no state): the server holds a registration
    /// or binding that its store does not hold as the server does. Recomputed by each step that
    /// changed either, inherited otherwise (property *acknowledged-implies-durable*).
    pub durable_gap: bool,
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
    /// The attacker presents a token it read in clear, in clear, in a PUBLISH from its own IMPU
    /// via the SIP core.
    Replay {
        /// The token.
        token: Tok,
        /// Service index.
        service: u8,
    },
    /// The attacker presents a token it read in clear protected under a CSK of its own, with
    /// its own I_MESSAGE (signed as itself: it holds no user's signing key), from its own IMPU.
    Reprotect {
        /// The token.
        token: Tok,
        /// Service index.
        service: u8,
    },
    /// The attacker resends a protected PUBLISH body it captured, from its own IMPU via the SIP
    /// core: whole (with the I_MESSAGE it carried) or with the `application/mikey` part
    /// stripped.
    ReplaySealed {
        /// What it captured.
        sealed: Sealed,
        /// Send it without the I_MESSAGE it carried.
        strip_upload: bool,
    },
    /// The attacker registers its own IMPU again (after a server restart lost it); free of
    /// budget, as any subscriber may re-register.
    AttackerRegister,
    /// The attacker sends a PUBLISH straight to the server claiming a UE's IMPU.
    ForgePai {
        /// The victim's global IMPU index.
        impu: u8,
    },
    /// Time advances one tick.
    Tick,
    /// The server restarts and loses its volatile state.
    Restart,
    /// The server is killed (`kill -9`) and restarts from its durable store (issue 13).
    Crash,
    /// A user starts to log on at a UE that holds no token; the IdMS answers later with
    /// [`EnvAction::LogOn`]. Until then the UE's PUBLISH goes without a token (CR 5.1.3.2.1).
    BeginLogOn {
        /// The UE.
        ue: u8,
        /// The user.
        user: u8,
    },
    /// From a quiescent state, the environment stops disturbing (liveness: see [`fairness`]).
    Settle,
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
    /// The checker's fast path ([`Model::next_state`]): `input` is left out (nothing judges
    /// it; only traces show it), which spares a copy of every input, and a whole store snapshot
    /// per crash.
    lean: bool,
}

impl EnvState {
    fn with_durable_gap(mut self) -> Self {
        self.durable_gap = !crash::server_in_store(&self);
        self
    }
}

impl StepEffect {
    /// Records the input the machine got, unless on the checker's fast path.
    fn record(&mut self, input: impl FnOnce() -> Input) {
        if !self.lean {
            self.input = Some(input());
        }
    }
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
    /// Crash restarts already computed, shared by the checker's threads (see [`crash::Loads`]).
    loads: std::sync::Arc<crash::Loads>,
    /// SIP-ETags the initial state has already drawn (the companion UEs' first PUBLISHes); the
    /// bound [`ModelConfig::max_publications`] counts the ones drawn after.
    base_etags: u16,
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
        let mut model = McxModel {
            cfg,
            impus,
            clients,
            mc_ids,
            impu_index,
            mc_id_user,
            service_set,
            loads: Default::default(),
            base_etags: 0,
        };
        model.base_etags = model.init_state().next_etag;
        model
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

    /// The single initial state at time 0: nobody registered but the attacker and the
    /// companion UEs (see [`ModelConfig::companions`]).
    pub fn init_state(&self) -> EnvState {
        self.set_up(|_, _| {})
    }

    /// Builds the initial state from time 0 with nobody registered but the attacker, calling
    /// `visit` with each set-up step and the state it is taken in (traces show them as step 0).
    ///
    /// A companion UE starts where UE 1 may get to: registered (its third-party REGISTER
    /// delivered), user 0 logged on with a token issued at time 0, and bound (its token PUBLISH,
    /// with the I_MESSAGE of its CSK when it protects, delivered and answered). It gets there by
    /// the model's own steps, so the server, its store, the UE's view and the ghosts agree (the
    /// attacker saw that PUBLISH cross the SIP core, as it sees every other, until its token
    /// expires); the steps' facts are cleared, as the checker starts here.
    pub fn set_up(&self, mut visit: impl FnMut(&EnvState, &EnvAction)) -> EnvState {
        let mut s = self.empty_state();
        let kind = self.cfg.token_kinds[0];
        for ue in (0..self.cfg.ues).filter(|i| self.cfg.is_companion(*i)) {
            let ue = ue as u8;
            let mut steps = vec![EnvAction::Register(ue)];
            if self.cfg.carriage(usize::from(ue)).in_publish() {
                steps.push(EnvAction::LogOn { ue, user: 0, kind });
                steps.extend(
                    (0..self.cfg.services.len() as u8)
                        .map(|service| EnvAction::Authorize { ue, service }),
                );
            } else {
                // A REGISTER-option companion carries its token in the REGISTER.
                steps.insert(0, EnvAction::LogOn { ue, user: 0, kind });
            }
            for step in steps {
                // Set-up requests are not the run's: they spend no companion budget.
                s.companion_left = 1;
                visit(&s, &step);
                s = self
                    .apply(&s, &step)
                    .expect("a companion UE's first steps")
                    .0;
                if let Some(msg) = s.net.iter().find(|m| m.from == Sender::Ue(ue)).cloned() {
                    let deliver = EnvAction::Deliver {
                        msg,
                        keep_copy: false,
                    };
                    visit(&s, &deliver);
                    s = self.apply(&s, &deliver).expect("delivered").0;
                }
            }
        }
        s.step = 0;
        s.companion_left = if self.cfg.companions > 0 {
            self.cfg.companion_budget
        } else {
            0
        };
        s
    }

    /// Time 0 with nobody registered but the attacker.
    fn empty_state(&self) -> EnvState {
        let mut server = Machine::new(self.cfg.machine_policy());
        // Without uploads (the wave-2 shortcut): one provisioned CSK per (user, IMPU, service),
        // tied to the user's MC service ID. With uploads the server starts with no CSK.
        let provisioned = if self.cfg.csk_upload {
            0
        } else {
            self.cfg.users as u8
        };
        for user in 0..provisioned {
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
            store: crash::initial_store(self.cfg.crash, &server).map(Shared::new),
            server: Shared::new(server),
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
                    fair: 0,
                    csks: vec![None; self.cfg.services.len()],
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
            companion_left: 0,
            captured: Vec::new(),
            sealed: Vec::new(),
            imsg_seen: Vec::new(),
            held: 0,
            switched: 0,
            etag_owner: 0,
            tokenless: 0,
            bound_impus: 0,
            restart_victims: 0,
            settled: false,
            settle_left: 0,
            step: 0,
            durable_gap: false,
        }
        .with_durable_gap()
    }

    /// Applies `action`; returns the next state and what the server did, or `None` when the
    /// action changes nothing.
    pub fn apply(&self, last: &EnvState, action: &EnvAction) -> Option<(EnvState, StepEffect)> {
        self.step_with(last, action, StepEffect::default())
    }

    fn step_with(
        &self,
        last: &EnvState,
        action: &EnvAction,
        mut effect: StepEffect,
    ) -> Option<(EnvState, StepEffect)> {
        let mut s = last.clone();
        s.step = 0;
        match action {
            EnvAction::Deliver { msg, keep_copy } => {
                self.apply_delivery(last, &mut s, msg, *keep_copy, &mut effect)?
            }
            EnvAction::AttackerRegister => {
                let msg = self.attacker_msg(last, action)?;
                self.deliver(last, &mut s, &msg, &mut effect);
            }
            EnvAction::Replay { .. }
            | EnvAction::Reprotect { .. }
            | EnvAction::ReplaySealed { .. }
            | EnvAction::ForgePai { .. } => self.apply_attack(last, &mut s, action, &mut effect)?,
            EnvAction::Tick => {
                s.now += 1;
                let out = s
                    .server
                    .make_mut()
                    .handle(UnixTime(u64::from(s.now)), Input::Tick);
                effect.record(|| Input::Tick);
                self.absorb(last, &mut s, None, out, &mut effect);
            }
            EnvAction::Restart => {
                s.restarts_left -= 1;
                let out = s
                    .server
                    .make_mut()
                    .handle(UnixTime(u64::from(s.now)), Input::Restart);
                effect.record(|| Input::Restart);
                self.absorb(last, &mut s, None, out, &mut effect);
            }
            EnvAction::Crash => self.crash(last, &mut s, &mut effect),
            EnvAction::Settle => {
                s.settled = true;
                s.settle_left = self.settle_budget();
            }
            _ => self.apply_ue(&mut s, action)?,
        }
        if s.settled {
            self.fair_step(&mut s, action);
        }
        self.canonical_net(&mut s.net);
        self.forget_useless(&mut s);
        self.canonical_ghosts(&mut s);
        // Ghost: which (IMPU, user) pairs a UE has held while the user was logged on.
        for (i, u) in s.ues.iter().enumerate() {
            if let (true, Some(user)) = (u.registered, u.user) {
                s.held |= self.held_bit(self.ue_impu(i, u.impu), user);
            }
        }
        // A step that handled a request without changing the server (a refusal, a tick with no
        // deadline due) shares the server of the state before rather than holding an equal copy;
        // likewise the store. Then both digests are brought up to date.
        if !s.server.same(&last.server) && *s.server == *last.server {
            s.server = last.server.clone();
        }
        s.server.seal();
        if let (Some(now), Some(before)) = (&mut s.store, &last.store) {
            if !now.same(before) && **now == **before {
                *now = before.clone();
            }
            now.seal();
        }
        let same_store = match (&s.store, &last.store) {
            (Some(a), Some(b)) => a.same(b),
            (a, b) => a.is_none() && b.is_none(),
        };
        s.durable_gap = if s.server.same(&last.server) && same_store {
            last.durable_gap
        } else {
            !crash::server_in_store(&s)
        };
        Some((s, effect))
    }

    /// Records the outputs of one machine step: ETag counter, step facts, the UE's view.
    fn absorb(
        &self,
        last: &EnvState,
        s: &mut EnvState,
        msg: Option<&Msg>,
        out: Vec<Output>,
        effect: &mut StepEffect,
    ) {
        // The machine forgot lapsed replay entries at this step; the store's garbage collection
        // does the same, so that a store and a machine that agree hash alike.
        let now = UnixTime(u64::from(s.now));
        if let Some(store) = s.store.as_mut().filter(|x| x.has_garbage(now)) {
            store.make_mut().collect_garbage(now);
        }
        for o in out {
            match o {
                Output::Response(r) => effect.response = Some(r),
                Output::Binding(e) => effect.events.push(e),
                Output::Csk(_) => {}
                Output::Persist(p) => crash::persisted(s, &p),
            }
        }
        let fresh = s.next_etag;
        if let Some(r) = &effect.response {
            if r.etag.as_ref().and_then(Self::etag_number) == Some(fresh) {
                s.next_etag += 1;
            }
        }
        self.judge_step(last, s, msg, fresh, effect);
        self.ue_response(s, msg, effect);
    }
}

impl Model for McxModel {
    type State = EnvState;
    type Action = EnvAction;

    fn init_states(&self) -> Vec<EnvState> {
        vec![self.init_state()]
    }

    fn actions(&self, s: &EnvState, actions: &mut Vec<EnvAction>) {
        if s.settled {
            actions.extend(self.fair_action(s));
            return;
        }
        if self.may_settle(s) {
            actions.push(EnvAction::Settle);
        }
        self.ue_actions(s, actions);
        self.network_actions(s, actions);
        self.attacker_actions(s, actions);
        if s.now < self.cfg.max_time {
            actions.push(EnvAction::Tick);
        }
        if s.restarts_left > 0 {
            actions.push(EnvAction::Restart);
        }
        if self.cfg.crash {
            actions.push(EnvAction::Crash);
        }
    }

    fn next_state(&self, last: &EnvState, action: EnvAction) -> Option<EnvState> {
        let lean = StepEffect {
            lean: true,
            ..StepEffect::default()
        };
        self.step_with(last, &action, lean).map(|(s, _)| s)
    }

    fn within_boundary(&self, s: &EnvState) -> bool {
        // A settled run is finite by its budget; cutting it here would fake a terminal state.
        let settled = if s.settled {
            u16::from(self.settle_budget())
        } else {
            0
        };
        s.next_etag <= self.base_etags + self.cfg.max_publications + settled
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
