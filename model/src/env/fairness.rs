//! Liveness under stated fairness.
//!
//! stateright judges an `eventually` property on *terminal* states: every maximal path must pass
//! through a state where the condition holds. The environment as a whole never stops (users log
//! on and off, time passes), so liveness is checked the way it is argued: from any quiescent state
//! (nothing in flight, no PUBLISH transaction open) the environment may [`EnvAction::Settle`].
//! From then on these fairness assumptions hold, and nothing else happens:
//!
//! - **the network is fair and loses nothing**: every request in flight is delivered (duplicates
//!   left behind by a duplicating network too);
//! - **the UE keeps retrying**: a registered UE refreshes each publication it holds once
//!   (dossier Q-15: this is how it learns of a restart), re-registers after a bare 403 (its IMPU
//!   is unknown to the server), re-registers to carry a new token (REGISTER option), and sends
//!   its token for every service until one PUBLISH with it succeeds — within a budget of
//!   [`McxModel::settle_budget`] requests, so settled runs are finite and a livelock shows up as a
//!   terminal state that never met the condition;
//! - **no disturbance**: no log-on, log-off, user switch, IMPU change or de-registration, no
//!   attacker request, no restart, and the clock stands still (retries happen well within the
//!   token and registration lifetimes).
//!
//! The settled phase is deterministic (one enabled action per state) and the conditions only hold
//! in settled states, so stateright's `eventually` check is exact here: a path that settles and
//! ends without the condition is a counterexample, a path that never settles is not maximal
//! (Settle stays enabled from every quiescent state).

use super::{EnvAction, EnvState, McxModel, Pending, Sender};
use crate::output::{ForbiddenReason, Outcome};

/// [`super::UeState::fair`] bit: the UE's token for service `s` got a 2xx (bits 0..3).
pub const ACKED: u8 = 1;
/// [`super::UeState::fair`] bit: the UE refreshed its publication for service `s` (bits 3..6).
pub const REFRESHED: u8 = 1 << 3;
/// [`super::UeState::fair`] bit: the server answered a bare 403 (IMPU not registered there).
pub const NEEDS_REGISTER: u8 = 1 << 6;

impl McxModel {
    /// UE requests a settled run may send: per UE one registration, one refresh and two token
    /// PUBLISHes per service, and one re-registration.
    pub fn settle_budget(&self) -> u8 {
        (self.cfg.ues * (2 + 3 * self.cfg.services.len())) as u8
    }

    /// Whether `Settle` is enabled: liveness is on and nothing is in flight, or the bound on
    /// publications is reached (there the next successful PUBLISH would leave the explored space,
    /// and a state whose every successor lies outside would count as the end of a run).
    pub(super) fn may_settle(&self, s: &EnvState) -> bool {
        self.cfg.liveness
            && !s.settled
            && ((s.net.is_empty() && s.ues.iter().all(|u| u.pending.is_none()))
                || s.next_etag >= self.base_etags + self.cfg.max_publications)
    }

    /// The one action the fair scheduler takes in a settled state (`None`: the run ends).
    pub(super) fn fair_action(&self, s: &EnvState) -> Option<EnvAction> {
        if let Some(m) = s.net.first() {
            return Some(EnvAction::Deliver {
                msg: m.clone(),
                keep_copy: false,
            });
        }
        if s.settle_left == 0 {
            return None;
        }
        for (i, u) in s.ues.iter().enumerate() {
            let ue = i as u8;
            if !u.registered || u.pending.is_some() {
                continue;
            }
            let carriage = self.cfg.carriage(i);
            let usable = u.token.is_some_and(|t| self.usable(t, s.now));
            if u.fair & NEEDS_REGISTER != 0
                || (carriage.in_register() && usable && (u.reg_token != u.token || !u.mc_tags))
            {
                return Some(EnvAction::Register(ue));
            }
            if !u.mc_tags {
                continue;
            }
            for service in 0..self.cfg.services.len() as u8 {
                if u.etags[usize::from(service)].is_some() && u.fair & (REFRESHED << service) == 0 {
                    return Some(EnvAction::Refresh { ue, service });
                }
            }
            if usable && carriage.in_publish() {
                for service in 0..self.cfg.services.len() as u8 {
                    if u.fair & (ACKED << service) == 0 {
                        return Some(EnvAction::Authorize { ue, service });
                    }
                }
            }
        }
        None
    }

    /// Book-keeping of a settled step: the budget and what the UE has done.
    pub(super) fn fair_step(&self, s: &mut EnvState, action: &EnvAction) {
        match *action {
            EnvAction::Register(ue) => {
                s.settle_left -= 1;
                s.ues[usize::from(ue)].fair &= !NEEDS_REGISTER;
            }
            EnvAction::Refresh { ue, service } => {
                s.settle_left -= 1;
                s.ues[usize::from(ue)].fair |= REFRESHED << service;
            }
            EnvAction::Authorize { .. } => s.settle_left -= 1,
            _ => {}
        }
    }

    /// The UE's retry state after the response to its PUBLISH (settled runs only).
    pub(super) fn fair_response(&self, s: &mut EnvState, ue: u8, p: Pending, outcome: &Outcome) {
        let u = &mut s.ues[usize::from(ue)];
        match (p, outcome) {
            (Pending::Authorize(x), o) if o.is_success() => u.fair |= ACKED << x,
            (_, Outcome::Forbidden(ForbiddenReason::NotRegistered)) => u.fair |= NEEDS_REGISTER,
            _ => {}
        }
    }

    /// Whether `t` is a valid token not yet expired at `now`.
    pub fn usable(&self, t: super::Tok, now: u8) -> bool {
        t.kind == super::TokenKind::Valid && t.exp(self.cfg.token_life) > u64::from(now)
    }

    /// Whether UE `ue` is in the situation the first liveness property is about: registered with
    /// the MC feature tags, a user logged on with a usable token of their own, and no attacker
    /// request sent so far.
    pub fn eager(&self, s: &EnvState, ue: usize) -> bool {
        let u = &s.ues[ue];
        let untouched = !self.cfg.attacker || s.attacker_left == self.cfg.attacker_budget;
        untouched
            && u.registered
            && u.mc_tags
            && u.token
                .is_some_and(|t| Some(t.user) == u.user && self.usable(t, s.now))
    }

    /// Whether the server binds UE `ue`'s client, under its current IMPU, to its user on every
    /// service.
    pub fn ue_bound(&self, s: &EnvState, ue: usize) -> bool {
        let u = &s.ues[ue];
        let Some(user) = u.user else { return false };
        let impu = self.impu(self.ue_impu(ue, u.impu));
        let client = self.client(Sender::Ue(ue as u8));
        (0..self.cfg.services.len() as u8).all(|i| {
            let key = crate::output::BindingKey {
                impu: impu.clone(),
                service: self.service(i),
                client_id: client.clone(),
            };
            s.server
                .binding(&key)
                .is_some_and(|b| b.mc_id == *self.mc_id(user, i))
        })
    }
}
