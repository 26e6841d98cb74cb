//! The named properties: each with a stable name, its kind, the clause it comes from, a one-line
//! meaning, a condition over [`EnvState`], and the verdict each configuration is expected to give
//! (docs/findings.md reports the same table).

use serde::{Deserialize, Serialize};
use stateright::Property;

use crate::ids::UnixTime;
use crate::output::{BindingEvent, ForbiddenReason, Outcome, Response, UnbindCause};
use crate::policy::{
    CskTie, FailedReauthorization, ImpuChange, RegisterToken, TokenExpiry, TokenProtection,
};
use crate::token::TokenRejection;

use super::{
    Body, CskRef, EnvState, McxModel, ModelConfig, Msg, NetworkKind, Prot, Req, Sender, StepEffect,
    Tok, TokenKind,
};

/// Bits of [`EnvState::step`]: what the last step did.
pub mod step {
    /// A third-party REGISTER from the SIP core was refused.
    pub const REGISTER_REFUSED: u32 = 1 << 0;
    /// S-6: a settings-only PUBLISH bound or rebound.
    pub const S6_VIOLATED: u32 = 1 << 2;
    /// S-7: a non-2xx changed the binding table.
    pub const S7_VIOLATED: u32 = 1 << 3;
    /// S-8: a 2xx carried a reused ETag, or If-Match succeeded with a non-current tag.
    pub const S8_VIOLATED: u32 = 1 << 4;
    /// S-9: after a successful removal the binding or its ETag survived.
    pub const S9_VIOLATED: u32 = 1 << 5;
    /// A UE's token-less (settings-only) PUBLISH got 403 with warning 101: the server made it
    /// depend on a token.
    pub const TOKENLESS_REFUSED: u32 = 1 << 6;
    /// A UE's client got a new binding.
    pub const BOUND: u32 = 1 << 8;
    /// A UE's client was rebound to another user.
    pub const REBOUND: u32 = 1 << 9;
    /// A UE's client was bound under its next IMPU after being bound under the previous one.
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
    /// A UE that had sent a token-less PUBLISH got bound (it sent its token later).
    pub const TOKENLESS_THEN_BOUND: u32 = 1 << 16;
    /// A UE's PUBLISH with SIP-If-Match got 412.
    pub const STALE_ETAG_412: u32 = 1 << 17;
    /// A UE's settings-only PUBLISH got 404 with warning 141.
    pub const SETTINGS_404_141: u32 = 1 << 18;
    /// The attacker's PUBLISH through the SIP core, carrying a token, was refused.
    pub const REPLAY_REFUSED: u32 = 1 << 19;
    /// A binding was refused for the per-MC-service-ID device limit.
    pub const DEVICE_LIMIT_REFUSED: u32 = 1 << 20;
    /// A UE whose client lost its binding in a restart got bound again.
    pub const RECOVERED: u32 = 1 << 21;
    /// A 2xx answered a PUBLISH under a CSK whose I_MESSAGE's IDRi is not the UID of the MC
    /// service ID it bound (TS 33.180 5.4).
    pub const CSK_SIGNER_MISMATCH: u32 = 1 << 22;
    /// A 2xx answered a PUBLISH carrying an I_MESSAGE that had reached the server before.
    pub const I_MESSAGE_REPLAY_ACCEPTED: u32 = 1 << 23;
    /// After a user switch at the server, a CSK of the old user on that IMPU survived.
    pub const CSK_SURVIVED_SWITCH: u32 = 1 << 24;
    /// A PUBLISH carrying an I_MESSAGE that had reached the server before was refused.
    pub const I_MESSAGE_REPLAY_REFUSED: u32 = 1 << 25;
}

/// The users named by each UE client's bindings (bit per user, index per UE).
fn users_per_ue(m: &McxModel, server: &crate::machine::Machine) -> [u8; 4] {
    let mut v = [0u8; 4];
    for (k, b) in server.bindings() {
        if let (Some(ue), Some(user)) = (m.client_ue(&k.client_id), m.mc_id_user(&b.mc_id)) {
            v[ue] |= 1 << user;
        }
    }
    v
}

/// Whether two UEs' clients are bound to one user (on any service) in `s`.
fn two_ues_of_one_user(m: &McxModel, s: &EnvState) -> bool {
    let per_ue = users_per_ue(m, &s.server);
    let mut seen = 0u8;
    per_ue.iter().any(|users| {
        let twice = seen & users != 0;
        seen |= users;
        twice
    })
}

impl McxModel {
    /// Judges the step from `last` to `s`: sets [`EnvState::step`] (bits of [`step`]) from the
    /// state before and after, the request, the response and the events, and keeps the ghost
    /// variables (`switched`, `etag_owner`, `bound_impus`, `restart_victims`) in step.
    pub(super) fn judge_step(
        &self,
        last: &EnvState,
        s: &mut EnvState,
        msg: Option<&Msg>,
        fresh: u16,
        effect: &StepEffect,
    ) {
        let mut flags = 0;
        let status = effect.response.as_ref().map(Response::status);
        let outcome = effect.response.as_ref().map(|r| &r.outcome);
        let by_register = matches!(msg.map(|m| &m.req), Some(Req::Register { .. }));
        let mut legit = 0u64;

        for e in &effect.events {
            match e {
                BindingEvent::Bound { key, .. } | BindingEvent::Rebound { key, .. } => {
                    if by_register {
                        flags |= step::BOUND_BY_REGISTER;
                    }
                    let Some(ue) = self.client_ue(&key.client_id) else {
                        continue;
                    };
                    flags |= if matches!(e, BindingEvent::Bound { .. }) {
                        step::BOUND
                    } else {
                        step::REBOUND
                    };
                    if let Some(g) = self.impu_index(&key.impu) {
                        // Bound under IMPU k > 0 after having been bound under IMPU k - 1.
                        if g > self.ue_impu(ue, 0) && s.bound_impus & (1 << (g - 1)) != 0 {
                            flags |= step::BOUND_NEW_IMPU;
                        }
                        s.bound_impus |= 1 << g;
                    }
                    // S-5 ghost: a bind made by a request that was not overtaken by a later
                    // one of its UE (nor is a duplicate) is the UE's current word, and ends any
                    // earlier switch away from that user.
                    let to = match e {
                        BindingEvent::Bound { mc_id, .. } => mc_id,
                        BindingEvent::Rebound { to, .. } => to,
                        BindingEvent::Unbound { .. } => unreachable!(),
                    };
                    if let (Some(user), Some(false)) = (self.mc_id_user(to), msg.map(|m| m.stale)) {
                        legit |= self.switch_bit(ue as u8, user);
                    }
                    if s.tokenless & (1 << ue) != 0 {
                        flags |= step::TOKENLESS_THEN_BOUND;
                        s.tokenless &= !(1 << ue);
                    }
                    if s.restart_victims & (1 << ue) != 0 {
                        flags |= step::RECOVERED;
                        s.restart_victims &= !(1 << ue);
                    }
                }
                BindingEvent::Unbound { key, cause, .. } => {
                    let ue = self.client_ue(&key.client_id);
                    match cause {
                        UnbindCause::Deregistered if ue.is_some() => {
                            flags |= step::UNBOUND_DEREGISTERED
                        }
                        UnbindCause::PublicationRemoved | UnbindCause::ServiceLogOff
                            if ue.is_some() =>
                        {
                            flags |= step::UNBOUND_LOG_OFF
                        }
                        UnbindCause::TokenExpired => flags |= step::UNBOUND_TOKEN_EXPIRED,
                        UnbindCause::Restart => {
                            if let Some(ue) = ue {
                                s.restart_victims |= 1 << ue;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }

        // TS 33.180 5.4 and Q-10: a user switch at the server drops the old user's CSKs on that
        // IMPU (unless a binding of the old user is left there).
        for e in &effect.events {
            if let BindingEvent::Rebound { key, from, .. } = e {
                let left = s
                    .server
                    .bindings()
                    .any(|(k, b)| k.impu == key.impu && b.mc_id == *from);
                let survives = s
                    .server
                    .csks()
                    .any(|(_, c)| c.mc_id == *from && c.impu.as_ref() == Some(&key.impu));
                if !left && survives {
                    flags |= step::CSK_SURVIVED_SWITCH;
                }
            }
        }
        if let Some(Msg {
            from,
            req:
                Req::Publish {
                    impu,
                    service,
                    body: Body::Auth { prot, .. },
                    ..
                },
            ..
        }) = msg
        {
            let ok = effect
                .response
                .as_ref()
                .is_some_and(|r| r.outcome.is_success());
            // TS 33.180 5.4: what a protected PUBLISH bound rests on a CSK signed as that user.
            let signer = match *prot {
                Prot::Clear => None,
                Prot::Provisioned { user, .. } => Some(Some(user)),
                Prot::Uploaded { csk, .. } => Some(csk.signer),
            };
            if let (true, Some(signer)) = (ok, signer) {
                let key = crate::output::BindingKey {
                    impu: self.impu(*impu).clone(),
                    service: self.service(*service),
                    client_id: self.client(*from).clone(),
                };
                let bound = s
                    .server
                    .binding(&key)
                    .and_then(|b| self.mc_id_user(&b.mc_id));
                if bound.is_none() || bound != signer {
                    flags |= step::CSK_SIGNER_MISMATCH;
                }
            }
            // RFC 3830 5.4: an I_MESSAGE is accepted at most once.
            if let Prot::Uploaded {
                csk,
                upload: Some(_),
            } = prot
            {
                match last.imsg_seen.binary_search(csk) {
                    Ok(_) => {
                        flags |= if ok {
                            step::I_MESSAGE_REPLAY_ACCEPTED
                        } else {
                            step::I_MESSAGE_REPLAY_REFUSED
                        }
                    }
                    Err(_) => {
                        if let Err(pos) = s.imsg_seen.binary_search(csk) {
                            s.imsg_seen.insert(pos, *csk);
                        }
                    }
                }
            }
        }

        // S-5 ghost: the server switched a client from user A to user B when a binding of the
        // client to B appeared while one to A existed.
        if !effect.events.is_empty() {
            let before = users_per_ue(self, &last.server);
            let after = users_per_ue(self, &s.server);
            for ue in 0..self.cfg.ues {
                let new = after[ue] & !before[ue];
                if new != 0 {
                    for old in 0..self.cfg.users as u8 {
                        if before[ue] & (1 << old) != 0 && new & (1 << old) == 0 {
                            s.switched |= self.switch_bit(ue as u8, old);
                        }
                    }
                }
            }
            s.switched &= !legit;
        }

        let before = &last.server;
        let after = &s.server;
        if let (Some(msg), Some(status)) = (msg, status) {
            let ok = status / 100 == 2;
            let from_ue = matches!(msg.from, Sender::Ue(_)) && !msg.dup;
            // S-7: a non-2xx leaves the binding table as it was (RFC 3903 atomicity).
            if !ok && !before.bindings().eq(after.bindings()) {
                flags |= step::S7_VIOLATED;
            }
            if let Some(Outcome::ServiceAuthorisationFailed(TokenRejection::DeviceLimit)) = outcome
            {
                flags |= step::DEVICE_LIMIT_REFUSED;
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
                    trusted,
                } => {
                    if from_ue {
                        match outcome {
                            Some(Outcome::Forbidden(ForbiddenReason::NotRegistered)) => {
                                flags |= step::PUBLISH_NOT_REGISTERED
                            }
                            Some(Outcome::ConditionalRequestFailed) if if_match.is_some() => {
                                flags |= step::STALE_ETAG_412
                            }
                            Some(Outcome::UserUnknown) if matches!(body, Body::Settings { .. }) => {
                                flags |= step::SETTINGS_404_141
                            }
                            Some(Outcome::ServiceAuthorisationFailed(_))
                                if matches!(body, Body::Settings { .. }) =>
                            {
                                flags |= step::TOKENLESS_REFUSED
                            }
                            _ => {}
                        }
                    }
                    if msg.from == Sender::Attacker
                        && *trusted
                        && matches!(body, Body::Auth { .. })
                        && !ok
                    {
                        flags |= step::REPLAY_REFUSED;
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
                            match Self::etag_number(tag) {
                                Some(n) if n >= fresh => {
                                    // Ghost: whose request this tag answered.
                                    let owner = match body {
                                        Body::Auth { token, .. } => Some(token.user),
                                        Body::Settings { user } => Some(*user),
                                        Body::Empty => if_match.and_then(|e| etag_owner(s, e)),
                                    };
                                    if let (Some(o), true) = (owner, n < 32) {
                                        s.etag_owner &= !(3 << (2 * n));
                                        s.etag_owner |= u64::from(o) << (2 * n);
                                    }
                                }
                                _ => flags |= step::S8_VIOLATED,
                            }
                        }
                        let before = &last.server;
                        let after = &s.server;
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
    }

    /// Forgets ghost history no property can ask about any more, so that states equal in
    /// everything that matters are equal: owners of SIP-ETags nobody holds or names, the
    /// token-less mark of a UE once it was bound, IMPUs a UE has moved past.
    pub(super) fn canonical_ghosts(&self, s: &mut EnvState) {
        let mut live = 0u64;
        let mut keep = |n: u16| {
            if n < 32 {
                live |= 3 << (2 * n);
            }
        };
        for (_, b) in s.server.bindings() {
            if let Some(n) = b
                .publication
                .as_ref()
                .and_then(|p| Self::etag_number(&p.etag))
            {
                keep(n);
            }
        }
        for u in &s.ues {
            u.etags.iter().flatten().for_each(|n| keep(*n));
        }
        for m in &s.net {
            if let Req::Publish {
                if_match: Some(n), ..
            } = m.req
            {
                keep(n);
            }
        }
        s.etag_owner &= live;
        // The server's replay cache, likewise: a remembered I_MESSAGE that can never reach it
        // again (UEs never resend one) decides nothing, so forgetting it merges states that
        // differ only in dead history (and lets `fresh_gen` reuse its name).
        if s.server.key_messages().next().is_some() {
            let live: Vec<_> = s
                .net
                .iter()
                .filter_map(|m| match &m.req {
                    Req::Publish {
                        body:
                            Body::Auth {
                                prot:
                                    Prot::Uploaded {
                                        csk,
                                        upload: Some(_),
                                    },
                                ..
                            },
                        ..
                    } => Some(csk.message_id()),
                    _ => None,
                })
                .chain(s.sealed.iter().filter_map(|x| match x.prot {
                    Prot::Uploaded {
                        csk,
                        upload: Some(_),
                    } => Some(csk.message_id()),
                    _ => None,
                }))
                .collect();
            let dead = |id: &crate::ids::KeyMessageId| !live.contains(id);
            if s.server.key_messages().any(dead) {
                s.server.make_mut().forget_key_messages(dead);
            }
            if let Some(store) = s.store.as_mut().filter(|x| x.has_key_message(dead)) {
                store.make_mut().forget_key_messages(dead);
            }
        }
        // The replay ghost, likewise: only I_MESSAGEs that can arrive again.
        if !s.imsg_seen.is_empty() {
            let live: Vec<CskRef> = s
                .net
                .iter()
                .filter_map(|m| m.req.csk())
                .chain(s.sealed.iter().filter_map(|x| x.csk()))
                .collect();
            s.imsg_seen.retain(|c| live.contains(c));
        }
        let mut past = 0u16;
        for (i, u) in s.ues.iter().enumerate() {
            for k in 0..u.impu.saturating_sub(1) {
                past |= 1 << self.ue_impu(i, k);
            }
        }
        s.bound_impus &= !past;
    }

    pub(super) fn switch_bit(&self, ue: u8, user: u8) -> u64 {
        1 << (usize::from(ue) * self.cfg.users + usize::from(user))
    }

    pub(super) fn held_bit(&self, impu: u8, user: u8) -> u64 {
        1 << (usize::from(impu) * self.cfg.users + usize::from(user))
    }

    /// Whether a UE ever held IMPU `impu` while `user` was logged on at it (ghost).
    pub fn held(&self, state: &EnvState, impu: u8, user: u8) -> bool {
        state.held & self.held_bit(impu, user) != 0
    }

    /// The property catalogue with conditions (see [`PropertyInfo`]).
    pub fn catalogue(&self) -> Vec<PropertyInfo> {
        catalogue()
    }

    /// The verdict this configuration is expected to give for property `name`.
    pub fn expected(&self, name: &str) -> Option<Expectation> {
        expected(name, &self.cfg)
    }
}

/// `always` (a counterexample violates it), `sometimes` (a witness shows it can happen) or
/// `eventually` (every fair run gets there; see `fairness.rs` for the fairness assumptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyKind {
    /// Holds in every reachable state.
    Always,
    /// Holds in at least one reachable state (reachability: the behaviour is not vacuous).
    Sometimes,
    /// Holds at some point of every maximal run (runs end only after the environment settled).
    Eventually,
}

impl PropertyKind {
    /// `always` / `sometimes` / `eventually`.
    pub fn name(self) -> &'static str {
        match self {
            PropertyKind::Always => "always",
            PropertyKind::Sometimes => "sometimes",
            PropertyKind::Eventually => "eventually",
        }
    }

    /// The verdict when the checker did (`true`) or did not find a discovery: a counterexample
    /// for `always` and `eventually`, a witness for `sometimes`.
    pub fn verdict(self, discovered: bool) -> Verdict {
        match (self, discovered) {
            (PropertyKind::Sometimes, true)
            | (PropertyKind::Always | PropertyKind::Eventually, false) => Verdict::Holds,
            _ => Verdict::Violated,
        }
    }
}

/// A checker verdict. For an `always` or `eventually` property, `Holds` means no counterexample
/// exists; for a `sometimes` property, `Holds` means a witness was found (so `Violated` means
/// unreachable).
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
    /// Always, sometimes or eventually.
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
            PropertyKind::Eventually => Property::eventually(self.name, self.condition),
        }
    }
}

fn no_flag(s: &EnvState, bit: u32) -> bool {
    s.step & bit == 0
}

fn flag(s: &EnvState, bit: u32) -> bool {
    s.step & bit != 0
}

/// The user whose request the 2xx carrying SIP-ETag number `n` answered (ghost).
/// `None` beyond the 32 tags the ghost has room for (larger runs go unjudged there).
fn etag_owner(s: &EnvState, n: u16) -> Option<u8> {
    (n < 32).then(|| ((s.etag_owner >> (2 * n)) & 3) as u8)
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

/// S-5, judged on the server's tables: once the server switched a UE's client from user A to
/// user B, no binding of that client names A (on any service, under any IMPU) unless a request
/// of the UE that was neither a duplicate nor overtaken by a later one bound A there again; and
/// every binding's publication and settings are its own user's (the SIP-ETag answered that
/// user's request, the settings came from that user). A REGISTER or PUBLISH still in flight while
/// the UE's user switches locally is not a switch at the server.
fn s5(m: &McxModel, s: &EnvState) -> bool {
    s.server.bindings().all(|(k, b)| {
        let Some(user) = m.mc_id_user(&b.mc_id) else {
            return true;
        };
        let not_switched_away = m
            .client_ue(&k.client_id)
            .is_none_or(|ue| s.switched & m.switch_bit(ue as u8, user) == 0);
        let own_publication = b.publication.as_ref().is_none_or(|p| {
            McxModel::etag_number(&p.etag)
                .is_some_and(|n| etag_owner(s, n).is_none_or(|o| o == user))
        });
        let own_settings = b
            .settings
            .is_none_or(|x| x.user_profile_index.is_none_or(|u| u == user));
        not_switched_away && own_publication && own_settings
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

/// TS 33.180 5.4: every CSK the server holds is tied to the MC service ID whose MIKEY-SAKKE UID
/// is its I_MESSAGE's IDRi (the model knows who really signed each CSK), and every 2xx to a
/// protected PUBLISH bound the user who signed the CSK it came under.
fn csk_signer(m: &McxModel, s: &EnvState) -> bool {
    no_flag(s, step::CSK_SIGNER_MISMATCH)
        && s.server.csks().all(|(id, c)| {
            let signer = match CskRef::parse(id.as_str()) {
                Some(r) => r.signer,
                // Provisioned (`csk-A-i0-s0`): the lab table's user.
                None => id
                    .as_str()
                    .strip_prefix("csk-")
                    .and_then(|r| r.bytes().next())
                    .and_then(|b| b.checked_sub(b'A')),
            };
            signer.is_some() && signer == m.mc_id_user(&c.mc_id)
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

/// Liveness 1: every UE that is registered with a usable token of its logged-on user, with no
/// attacker request sent, is bound (under its current IMPU, to its user, on every service).
fn bound_eventually(m: &McxModel, s: &EnvState) -> bool {
    // Liveness off: no run settles and the property holds vacuously.
    !m.config().liveness
        || s.settled && (0..m.config().ues).all(|ue| !m.eager(s, ue) || m.ue_bound(s, ue))
}

/// Liveness 2: no IMPU a UE does not hold registered (it de-registered it, or moved away from
/// it) is bound at the server.
fn unbound_eventually(m: &McxModel, s: &EnvState) -> bool {
    // Liveness off: no run settles and the property holds vacuously.
    !m.config().liveness
        || s.settled
            && s.server.bindings().all(|(k, _)| {
                let Some(g) = m.impu_index(&k.impu) else {
                    return true;
                };
                if g == m.attacker_impu() {
                    return true;
                }
                let ue = usize::from(g) / m.config().impus_per_ue;
                let u = &s.ues[ue];
                u.registered && m.ue_impu(ue, u.impu) == g
            })
}

/// Liveness 3: every UE whose client lost its binding in a restart, and that is registered with a
/// usable token (no attacker request sent), is bound again.
fn recovers_eventually(m: &McxModel, s: &EnvState) -> bool {
    // Liveness off: no run settles and the property holds vacuously.
    !m.config().liveness
        || s.settled
            && (0..m.config().ues).all(|ue| {
                s.restart_victims & (1 << ue) == 0 || !m.eager(s, ue) || m.ue_bound(s, ue)
            })
}

/// The catalogue, in report order.
pub fn catalogue() -> Vec<PropertyInfo> {
    use PropertyKind::{Always, Eventually, Sometimes};
    vec![
        PropertyInfo {
            name: "s1-authenticated-binding",
            kind: Always,
            clause: "TS 33.180 5.1.3.2 (CR), B.11/B.12; dossier S-1",
            meaning: "every binding's MC service ID is the claim of a genuine IdMS token for that user, unexpired when accepted and scoped for the service",
            condition: s1,
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
            clause: "CR 5.1.3.2.1 (R-14), dossier Q-10, Q-13; dossier S-5",
            meaning: "once the server switched a UE's client from user A to user B, no binding of that client names A on any service or IMPU (unless a current request of the UE binds A again: not a duplicate, not overtaken), and every binding's publication and settings are its own user's",
            condition: s5,
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
            name: "csk-signer-is-bound-user",
            kind: Always,
            clause: "TS 33.180 5.4 (the MC server associates the CSK with the IMPU and the MC service ID; IDRi is the UID of the MC service ID, F.2.1)",
            meaning: "every CSK the server holds is tied to the MC service ID whose UID is its I_MESSAGE's IDRi, and a protected PUBLISH binds only the user who signed its CSK",
            condition: csk_signer,
        },
        PropertyInfo {
            name: "replayed-i-message-refused",
            kind: Always,
            clause: "TS 33.180 5.4, RFC 3830 5.4 (replay protection), RFC 6509",
            meaning: "a PUBLISH carrying an I_MESSAGE that already reached the server is never answered 2xx",
            condition: |_, s| no_flag(s, step::I_MESSAGE_REPLAY_ACCEPTED),
        },
        PropertyInfo {
            name: "user-switch-drops-old-csk",
            kind: Always,
            clause: "TS 33.180 5.4; CR 5.1.3.2.1 (user switch); dossier Q-10",
            meaning: "once the server switched a client on an IMPU from user A to user B, no CSK of A tied to that IMPU survives (unless A still has a binding there)",
            condition: |_, s| no_flag(s, step::CSK_SURVIVED_SWITCH),
        },
        PropertyInfo {
            name: "no-token-needed-to-register-or-publish",
            kind: Always,
            clause: "CR 5.1.3.2.1 (R-13): \"the SIP PUBLISH message shall proceed without the inclusion of the access token\"; pre-CR: REGISTER \"shall not be delayed\"",
            meaning: "the server refuses no third-party REGISTER from the SIP core, and never answers a UE's token-less PUBLISH with 403 (101): neither depends on a token",
            condition: |_, s| no_flag(s, step::REGISTER_REFUSED | step::TOKENLESS_REFUSED),
        },
        PropertyInfo {
            name: "bound",
            kind: Sometimes,
            clause: "TS 24.379 7.3.3; dossier L-2",
            meaning: "a UE's client gets bound to an MC service ID",
            condition: |_, s| flag(s, step::BOUND),
        },
        PropertyInfo {
            name: "token-less-publish-then-bound",
            kind: Sometimes,
            clause: "CR 5.1.3.2.1 (R-13), Step C-3",
            meaning: "a UE sends its PUBLISH without a token while it has none, sends the token later, and is bound",
            condition: |_, s| flag(s, step::TOKENLESS_THEN_BOUND),
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
            meaning: "a UE's client, bound under its first IMPU, is bound again under the IMPU it moved to",
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
        PropertyInfo {
            name: "stale-etag-gets-412",
            kind: Sometimes,
            clause: "RFC 3903 section 6 step 3; TS 24.379 7.3; dossier Q-15",
            meaning: "a UE's PUBLISH whose SIP-If-Match names no current publication gets 412 (and the UE starts over with an initial PUBLISH)",
            condition: |_, s| flag(s, step::STALE_ETAG_412),
        },
        PropertyInfo {
            name: "settings-without-binding-gets-404-141",
            kind: Sometimes,
            clause: "TS 24.379 7.3.4, 4.4.2 (warning 141)",
            meaning: "a UE's settings-only PUBLISH for a client with no binding gets 404 with warning 141",
            condition: |_, s| flag(s, step::SETTINGS_404_141),
        },
        PropertyInfo {
            name: "replay-refused",
            kind: Sometimes,
            clause: "TS 33.180 5.1.3.2.1 (CR), clause 9, 5.4 (CSK tie); dossier Q-6",
            meaning: "the attacker's PUBLISH through the SIP core carrying a token it captured is refused",
            condition: |_, s| flag(s, step::REPLAY_REFUSED),
        },
        PropertyInfo {
            name: "two-ues-of-one-user-bound",
            kind: Sometimes,
            clause: "TS 33.180 5.1.3.2.1 (one user, several MC clients); dossier Q-18",
            meaning: "the clients of two UEs are bound to the same user's MC service ID at once (with the default companion UE: UE 1 is bound as user 0 while the companion's binding stands)",
            condition: |m, s| flag(s, step::BOUND) && two_ues_of_one_user(m, s),
        },
        PropertyInfo {
            name: "device-limit-refused",
            kind: Sometimes,
            clause: "dossier Q-18 (policy max_devices_per_mc_id)",
            meaning: "a bind beyond the per-MC-service-ID device limit is refused",
            condition: |_, s| flag(s, step::DEVICE_LIMIT_REFUSED),
        },
        PropertyInfo {
            name: "recovered-after-restart",
            kind: Sometimes,
            clause: "TS 24.379 7.3, RFC 3903 (412); dossier Q-15",
            meaning: "a UE whose binding was lost in a server restart is bound again",
            condition: |_, s| flag(s, step::RECOVERED),
        },
        PropertyInfo {
            name: "eventually-bound",
            kind: Eventually,
            clause: "TS 33.180 5.1.3.2.1 Steps 1-3; dossier L-2 (fairness: env/fairness.rs)",
            meaning: "a registered UE with a valid token that keeps retrying is eventually bound, when no attacker acts and nothing is lost",
            condition: bound_eventually,
        },
        PropertyInfo {
            name: "eventually-unbound-after-deregistration",
            kind: Eventually,
            clause: "TS 24.229 5.4.1.7, TS 24.379 7.3.2; dossier L-3 (fairness: env/fairness.rs)",
            meaning: "an IMPU its UE de-registered (or moved away from) is eventually unbound",
            condition: unbound_eventually,
        },
        PropertyInfo {
            name: "eventually-recovers-after-restart",
            kind: Eventually,
            clause: "RFC 3903 (412), TS 24.379 7.3; dossier Q-15 (fairness: env/fairness.rs)",
            meaning: "after a server restart, a UE that keeps refreshing (412, then an initial PUBLISH; a bare 403, then a re-registration) eventually has its binding back",
            condition: recovers_eventually,
        },
    ]
    .into_iter()
    .chain(super::crash::properties())
    .collect()
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
/// down from the mechanism before the checker ran on each configuration; `mcx-authz check` exits
/// 1 when the checker disagrees, and `model/tests/model_matrix.rs` checks them over a matrix.
pub fn expected(name: &str, cfg: &ModelConfig) -> Option<Expectation> {
    let carriers = |f: fn(super::Carriage) -> bool| (0..cfg.ues).any(|i| f(cfg.carriage(i)));
    let register_carriers = carriers(super::Carriage::in_register);
    let register_only = carriers(|c| !c.in_publish());
    let publish_carriers = carriers(super::Carriage::in_publish);
    let honour = cfg.policy.register_token == RegisterToken::Honour;
    let protects = cfg.protects_tokens();
    let exposed = register_carriers || !protects;
    // What crosses the SIP core: tokens in clear (REGISTER bodies; PUBLISH without clause 9),
    // and protected PUBLISH bodies the attacker can only resend.
    let clear_seen = register_carriers || (publish_carriers && !protects);
    let sealed_seen = publish_carriers && protects;
    let accepts_clear = cfg.policy.token_protection != TokenProtection::Required;
    let accepts_protected = cfg.policy.token_protection != TokenProtection::Off;
    let tie_ignored = cfg.policy.csk_tie == CskTie::Ignored;
    // A UE that carries its token only in PUBLISH in a form the server refuses is never bound.
    let starved = (0..cfg.ues).any(|i| cfg.carriage(i) == super::Carriage::Publish)
        && ((protects && !accepts_protected) || (!protects && !accepts_clear));
    let reordering = cfg.network != NetworkKind::Ordered;
    let duplicating = cfg.network == NetworkKind::Duplicating;
    let switch = cfg.users >= 2;
    let bad_tokens = cfg.token_kinds.iter().any(|k| *k != TokenKind::Valid)
        || cfg.max_time >= cfg.token_life
        || cfg.attacker;
    let devices = cfg.ues + usize::from(cfg.attacker && exposed);
    let device_limited = cfg
        .policy
        .max_devices_per_mc_id
        .is_some_and(|n| (n as usize) < devices);
    let ue_device_limited = cfg
        .policy
        .max_devices_per_mc_id
        .is_some_and(|n| (n as usize) < cfg.ues);
    // The companion UEs hold every device slot of user 0 for the whole run: bound in the
    // set-up, their publications outlive the run, and no restart empties the binding table.
    let companions_hold_user0 = cfg.companions > 0
        && cfg
            .policy
            .max_devices_per_mc_id
            .is_some_and(|n| (n as usize) <= cfg.companions)
        && cfg.max_time < cfg.publication_ttl
        && cfg.restarts == 0;
    match name {
        "acknowledged-implies-durable" | "no-binding-lost-across-restart" => {
            holds("every change is persisted before its response is sent, and Load restores it")
        }
        "s1-authenticated-binding"
        | "s3-no-binding-without-registration"
        | "s4-one-mc-id-per-client"
        | "s6-settings-only-never-binds"
        | "s8-etag-freshness"
        | "s9-removal-is-total" => holds("kept by the machine for every environment behaviour"),
        "no-token-needed-to-register-or-publish" => {
            holds("the machine refuses no third-party REGISTER and answers settings only with 200 or 404/141")
        }
        "s5-user-switch-isolation" => {
            let csk_stops_stale = protects && accepts_protected && !register_carriers;
            if switch && duplicating && csk_stops_stale {
                holds("a late duplicate of the old user's PUBLISH is protected under the CSK the user switch dropped (TS 33.180 5.4): refused")
            } else if switch && duplicating {
                violated("a late duplicate of the old user's initial PUBLISH (no SIP-If-Match) or REGISTER rebinds the client the server had switched to another user")
            } else if switch
                && reordering
                && honour
                && (0..cfg.ues).any(|i| cfg.carriage(i) == super::Carriage::Both)
            {
                violated("the token travels in REGISTER and in PUBLISH: the old user's REGISTER is overtaken by the new user's PUBLISH and rebinds the old user")
            } else if switch && cfg.services.len() >= 2 {
                violated("a user switch is made service by service: the old user's binding on the other service survives the switch on the first")
            } else if switch
                && reordering
                && cfg.impus_per_ue >= 2
                && cfg.policy.impu_change == ImpuChange::KeepOldBinding
            {
                violated("IMPU change then user switch: the new user is bound under the new IMPU before the old IMPU's de-REGISTER arrives, and impu_change = keep-old-binding keeps the old user's binding")
            } else {
                holds("each switch replaces the binding it concerns; in-order delivery per UE")
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
            let sealed_open = cfg.attacker && sealed_seen && accepts_protected;
            if cfg.attacker && clear_seen && accepts_clear {
                violated("the SIP core sees the token in clear, the server accepts tokens in clear, and the attacker presents it from its own IMPU")
            } else if sealed_open && tie_ignored {
                violated("csk_tie = ignored: the attacker replays a captured protected PUBLISH without its I_MESSAGE from its own IMPU, and the victim's CSK opens it there")
            } else if sealed_open && cfg.attacker_preempts {
                violated("the attacker races the victim's first protected PUBLISH: its copy, sent from its own IMPU, reaches the server first, and nothing in the I_MESSAGE or the protected token names the IMPU, so the CSK is tied to the attacker's IMPU")
            } else if sealed_open && !cfg.csk_upload && (reordering || cfg.restarts > 0) {
                violated("a provisioned CSK is tied to the IMPU of its first successful use: the victim's first PUBLISH is refused (not yet registered) and the attacker's copy from its own IMPU is that first use")
            } else if sealed_open && cfg.csk_upload && cfg.restarts > 0 {
                violated("a restart empties the server's I_MESSAGE replay cache and drops the victim's CSK: the attacker replays the captured first PUBLISH whole from its own IMPU and it is accepted as new")
            } else if cfg.attacker && (clear_seen || sealed_seen) {
                holds("clear tokens are refused (protection required) or never cross; a captured protected PUBLISH replayed whole is a replayed I_MESSAGE, without it the CSK is tied to the victim's IMPU, and re-protected under the attacker's CSK its I_MESSAGE is not signed as the token's user (TS 33.180 5.4)")
            } else {
                holds("no attacker, or no token crosses the SIP core")
            }
        }
        "csk-signer-is-bound-user" => holds("the machine accepts an I_MESSAGE only when it is signed as the token's user, and a CSK opens only tokens of the MC service ID it was accepted for (or, tie ignored, the UEs and the attacker never put a token under another user's CSK)"),
        "replayed-i-message-refused" => {
            if cfg.csk_upload
                && sealed_seen
                && accepts_protected
                && cfg.restarts > 0
                && (cfg.attacker || duplicating)
            {
                violated("the replay cache is volatile: after a restart an I_MESSAGE seen before (a duplicate, or the attacker's replay) is accepted again")
            } else {
                holds("the machine remembers every I_MESSAGE signed by the token's user that reached it, accepted or refused, for as long as it would be fresh")
            }
        }
        "user-switch-drops-old-csk" => holds("the machine releases the old user's CSKs on that IMPU when it rebinds the client"),
        "bound" | "unbound-after-deregistration" | "unbound-after-log-off"
        | "token-less-publish-then-bound"
            if companions_hold_user0 && cfg.users == 1 =>
        {
            violated("user 0's device slots are the companion UEs' for the whole run, and UE 1 has no other user")
        }
        "bound" | "unbound-after-deregistration" | "unbound-after-log-off"
        | "token-less-publish-then-bound" | "settings-without-binding-gets-404-141" => {
            holds("reachable in every variant")
        }
        "rebound-after-user-switch" => {
            if switch && companions_hold_user0 && cfg.users == 2 {
                violated("user 0's device slots are the companion UEs' for the whole run: UE 1 is bound only as user 1, with no other user to switch to")
            } else if switch {
                holds("a second user logs on at a bound client")
            } else {
                violated("only one user")
            }
        }
        "rebound-after-impu-change" => {
            if cfg.impus_per_ue >= 2 {
                holds("a UE bound under its first IMPU moves to its second and authorizes again")
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
            if register_carriers && honour {
                holds("a REGISTER-option client's token is honoured")
            } else {
                violated("no REGISTER-borne token is honoured")
            }
        }
        "publish-before-registration" => {
            // Only a token-bearing PUBLISH needs a registration (S-3 policy); a refresh or a
            // settings-only PUBLISH is answered 412 or 404/141 first.
            // A companion UE is registered and bound before the run starts: it sends a token
            // PUBLISH to a server that does not know its IMPU only after a restart (one request
            // of budget), or after a de-REGISTER and a new REGISTER (three).
            let publishers = |budget: u8| {
                (0..cfg.ues).any(|u| {
                    cfg.carriage(u).in_publish()
                        && (!cfg.is_companion(u) || cfg.companion_budget >= budget)
                })
            };
            if !(0..cfg.ues).any(|u| cfg.carriage(u).in_publish()) {
                violated("no UE carries its token in PUBLISH, and only that PUBLISH needs a registration")
            } else if (reordering && publishers(3)) || (cfg.restarts > 0 && publishers(1)) {
                holds("the network may deliver a PUBLISH before the third-party REGISTER")
            } else if !publishers(1) {
                violated("the only UE that carries its token in PUBLISH is a companion UE that sends nothing during the run (it was registered and bound in the set-up)")
            } else {
                violated("per-UE FIFO: the third-party REGISTER always arrives first")
            }
        }
        "stale-etag-gets-412" => {
            if cfg.max_time >= cfg.publication_ttl
                || duplicating
                || cfg.restarts > 0
                || (register_carriers
                    && honour
                    && switch
                    && !(companions_hold_user0 && cfg.users == 2))
                || (cfg.policy.failed_reauthorization == FailedReauthorization::DropBinding
                    && bad_tokens)
                || (cfg.policy.token_expiry == TokenExpiry::EndBinding
                    && cfg.max_time >= cfg.token_life)
            {
                holds("a publication expires, is replaced by a duplicate, is lost in a restart, or is dropped (user switch by a REGISTER-borne token, drop-binding, end-binding) while the UE still holds its SIP-ETag")
            } else {
                violated("the UE's SIP-ETag is always current")
            }
        }
        "replay-refused" => {
            if cfg.attacker && sealed_seen && (cfg.csk_upload || !tie_ignored || !accepts_protected) {
                holds("a captured protected PUBLISH replayed from the attacker's IMPU is refused: its I_MESSAGE was seen, or its CSK is tied to the victim's IMPU")
            } else if cfg.attacker && clear_seen && !accepts_clear {
                holds("a token read in clear is refused in clear (protection required) and re-protected under the attacker's CSK (not signed as its user)")
            } else if cfg.attacker && exposed && device_limited {
                holds("the replayed token would exceed the device limit")
            } else if cfg.attacker
                && clear_seen
                && cfg.token_kinds.contains(&TokenKind::WrongScope)
            {
                holds("a captured wrongly scoped token is refused")
            } else {
                violated("nothing refuses a replayed token that is still valid")
            }
        }
        "two-ues-of-one-user-bound" => {
            // A UE's client can be bound when the server takes its token where it carries it.
            let bindable = |i: usize| match cfg.carriage(i) {
                super::Carriage::Register => honour,
                super::Carriage::Publish => !starved,
                super::Carriage::Both => honour || !starved,
            };
            let bindable_ues = (0..cfg.ues).filter(|i| bindable(*i)).count();
            if cfg.ues < 2 {
                violated("one UE")
            } else if cfg.policy.max_devices_per_mc_id.is_some_and(|n| n < 2) {
                violated("the device limit allows one client per MC service ID")
            } else if bindable_ues < 2 || !cfg.token_kinds.contains(&TokenKind::Valid) {
                violated("fewer than two UEs whose token the server accepts")
            } else {
                holds("UE 1 is bound as user 0 while the companion UE (or another UE) of user 0 is bound")
            }
        }
        "device-limit-refused" => {
            if device_limited {
                holds("more clients of one user than the device limit")
            } else {
                violated("no device limit, or no more clients than it allows")
            }
        }
        "recovered-after-restart" => {
            if cfg.restarts > 0 {
                holds("a bound UE refreshes after the restart, gets 412 (or 403), and publishes again")
            } else {
                violated("no restart")
            }
        }
        "eventually-bound" | "eventually-recovers-after-restart" => {
            if !cfg.liveness {
                holds("liveness off: no settled run")
            } else if name == "eventually-recovers-after-restart" && cfg.restarts == 0 {
                holds("no restart")
            } else if register_only && !honour {
                violated("a REGISTER-only client against a server that ignores REGISTER-borne tokens is never bound")
            } else if ue_device_limited {
                violated("the device limit leaves one UE of the user unbound for ever")
            } else if starved && name == "eventually-bound" {
                violated("a PUBLISH-option UE sends its token in a form the server refuses (protected to a server with protection off, or in clear to one that requires it)")
            } else if switch
                && protects
                && !cfg.csk_upload
                && publish_carriers
                && name == "eventually-bound"
            {
                violated("provisioned CSKs (no upload): the machine drops a user's CSK at a user switch (TS 33.180 5.4) and nothing provisions it again, so a user who switches back is refused (unknown CSK) for ever")
            } else if duplicating && register_only && name == "eventually-bound" {
                violated("a late duplicate of the UE's de-REGISTER arrives after its new REGISTER and de-registers the IMPU at the server; a REGISTER-only client never PUBLISHes, so it never gets the 403 that would make it re-register (the machine's input has no CSeq: RFC 3261 10.3 ordering would discard the stale request; see docs/model-results-wave3.md)")
            } else {
                holds("the UE's retries reach the server and its token is accepted")
            }
        }
        "eventually-unbound-after-deregistration" => {
            if cfg.liveness && duplicating && register_carriers && honour {
                violated("a duplicate of an earlier REGISTER carrying a token arrives after the de-registration and binds the IMPU again")
            } else {
                holds("the de-REGISTER reaches the server and removes every binding of the IMPU")
            }
        }
        _ => None,
    }
}
