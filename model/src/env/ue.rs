//! The UEs: one MC client each, with the actions a UE can take (register, log a user on, PUBLISH
//! for authorization, settings, refresh and removal, log off, change IMPU, de-register) next to
//! their effects, and the UE's view of the responses it gets.
//!
//! A UE keeps one PUBLISH transaction outstanding at a time. The S-CSCF answers a UE's REGISTER
//! itself (dossier Q-2), so REGISTERs do not block the UE; at most
//! [`super::ModelConfig::max_registers_in_flight`] are in flight per UE.

use serde::{Deserialize, Serialize};

use super::{
    Body, CskRef, EnvAction, EnvState, McxModel, Msg, Prot, Req, Sender, StepEffect, Tok, TokenKind,
};

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

/// A CSK a UE's client made for one service (TS 33.180 5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UeCsk {
    /// The CSK.
    pub csk: CskRef,
    /// A 2xx answered the PUBLISH that carried its I_MESSAGE: the server holds it, and later
    /// PUBLISHes go without the I_MESSAGE.
    pub acked: bool,
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
    /// What it has done since the environment settled (bits of [`super::fairness`]; always 0
    /// before).
    pub fair: u8,
    /// Its CSK per service, when protection is on and CSKs are uploaded. The client makes a
    /// fresh one (and sends its I_MESSAGE with the next protected PUBLISH) when it has none: at
    /// first, after a user switch or log-off, after an IMPU change or de-registration (the
    /// server ties a CSK to the IMPU), and after any non-2xx to a PUBLISH that used it (the
    /// server may have dropped it, and an I_MESSAGE is never sent twice).
    pub csks: Vec<Option<UeCsk>>,
}

impl McxModel {
    /// The actions each idle UE may take (a UE with a PUBLISH transaction open waits for its
    /// response).
    pub(super) fn ue_actions(&self, s: &EnvState, actions: &mut Vec<EnvAction>) {
        let n_services = self.cfg.services.len() as u8;
        for (i, u) in s.ues.iter().enumerate() {
            let ue = i as u8;
            if u.pending.is_some() {
                continue;
            }
            // A user logs on when nobody is, another user logs on (user switch), or the same
            // user logs on again once the token is no longer usable (token refresh).
            let usable = u.token.is_some_and(|t| {
                t.kind == TokenKind::Valid && t.exp(self.cfg.token_life) > u64::from(s.now)
            });
            // A companion UE (config.rs) is used by user 0 only, keeps one IMPU, and neither
            // sends settings-only or token-less PUBLISHes nor logs off.
            let companion = self.cfg.is_companion(i);
            // Whether it may still send a request (LogOn sends none).
            let sends = !companion || s.companion_left > 0;
            let users = if companion { 1 } else { self.cfg.users as u8 };
            for user in 0..users {
                if u.user == Some(user) && usable {
                    continue;
                }
                if !companion && u.user.is_none() && u.token.is_none() && !u.registered {
                    // The user starts to authenticate before the initial registration and the
                    // IdMS answers later (CR 5.1.3.2.1: meanwhile registration and the UE's
                    // PUBLISH proceed without a token).
                    actions.push(EnvAction::BeginLogOn { ue, user });
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
            let carriage = self.cfg.carriage(i);
            // The UE is idle here, so whatever it has in flight are REGISTERs.
            let flying = self.in_flight(s, Sender::Ue(ue));
            let may_register = sends && flying < usize::from(self.cfg.max_registers_in_flight);
            // SIP registration never waits for a token (pre-CR and CR 5.1.3.2.1 alike): a
            // REGISTER-option client registers without one and re-registers once it has it.
            if may_register {
                let needs = !u.registered
                    || (carriage.in_register() && (u.reg_token != u.token || !u.mc_tags));
                if needs {
                    actions.push(EnvAction::Register(ue));
                }
            }
            if u.registered && may_register {
                actions.push(EnvAction::Deregister(ue));
            }
            if !companion
                && u.registered
                && flying == 0
                && usize::from(u.impu) + 1 < self.cfg.impus_per_ue
            {
                actions.push(EnvAction::ChangeImpu(ue));
            }
            for service in (0..n_services).filter(|_| sends) {
                let etag = u.etags[usize::from(service)];
                if u.registered && u.mc_tags && u.token.is_some() && carriage.in_publish() {
                    actions.push(EnvAction::Authorize { ue, service });
                }
                // Settings only: with a token in hand, or the token-less PUBLISH of the CR
                // ("shall proceed without the inclusion of the access token").
                if !companion && u.registered && u.mc_tags && u.user.is_some() {
                    actions.push(EnvAction::Settings { ue, service });
                }
                if etag.is_some() {
                    actions.push(EnvAction::Refresh { ue, service });
                    if u.user.is_none() {
                        actions.push(EnvAction::Remove { ue, service });
                    }
                }
            }
            if !companion && u.user.is_some() {
                actions.push(EnvAction::LogOff(ue));
            }
        }
    }

    /// Applies a UE action to `s`; `None` when it changes nothing.
    pub(super) fn apply_ue(&self, s: &mut EnvState, action: &EnvAction) -> Option<()> {
        let n_services = self.cfg.services.len() as u8;
        if let EnvAction::Register(ue)
        | EnvAction::Deregister(ue)
        | EnvAction::Authorize { ue, .. }
        | EnvAction::Refresh { ue, .. } = *action
        {
            if self.cfg.is_companion(usize::from(ue)) && !s.settled {
                s.companion_left = s.companion_left.checked_sub(1)?;
            }
        }
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
                    s,
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
                u.csks.iter_mut().for_each(|c| *c = None);
                let impu = self.ue_impu(usize::from(ue), impu);
                self.send(
                    s,
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
                u.csks.iter_mut().for_each(|c| *c = None);
                let (old, new) = (
                    self.ue_impu(usize::from(ue), old),
                    self.ue_impu(usize::from(ue), new),
                );
                self.send(
                    s,
                    Sender::Ue(ue),
                    Req::Register {
                        impu: old,
                        expires: 0,
                        mc_tags: false,
                        token: None,
                    },
                );
                self.send(
                    s,
                    Sender::Ue(ue),
                    Req::Register {
                        impu: new,
                        expires: self.cfg.registration_ttl,
                        mc_tags: true,
                        token,
                    },
                );
            }
            EnvAction::BeginLogOn { ue, user } => {
                let u = &mut s.ues[usize::from(ue)];
                if u.user.is_some() || u.token.is_some() {
                    return None;
                }
                u.user = Some(user);
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
                if u.user != Some(user) {
                    // A user switch: the old user's CSKs are not used for the new user.
                    u.csks.iter_mut().for_each(|c| *c = None);
                }
                u.user = Some(user);
                u.token = Some(tok);
            }
            EnvAction::Authorize { ue, service } => {
                let token = s.ues[usize::from(ue)].token?;
                let prot = self.protect(s, ue, service, token);
                let u = &s.ues[usize::from(ue)];
                let req = Req::Publish {
                    impu: self.ue_impu(usize::from(ue), u.impu),
                    trusted: true,
                    service,
                    if_match: u.etags[usize::from(service)],
                    expires: self.cfg.publication_ttl,
                    body: Body::Auth { token, prot },
                };
                s.ues[usize::from(ue)].pending = Some(Pending::Authorize(service));
                self.send(s, Sender::Ue(ue), req);
            }
            EnvAction::Settings { ue, service } => {
                let u = &s.ues[usize::from(ue)];
                if u.token.is_none() {
                    // Ghost: this UE sent the CR's token-less PUBLISH.
                    s.tokenless |= 1 << ue;
                }
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
                self.send(s, Sender::Ue(ue), req);
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
                self.send(s, Sender::Ue(ue), req);
            }
            EnvAction::LogOff(ue) => {
                let carriage = self.cfg.carriage(usize::from(ue));
                let u = &mut s.ues[usize::from(ue)];
                u.user.take()?;
                u.token = None;
                u.csks.iter_mut().for_each(|c| *c = None);
                // The registration no longer stands for a token: a new log-on re-registers.
                u.reg_token = None;
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
                    self.send(s, Sender::Ue(ue), req);
                } else if carriage.in_register() && u.registered && u.mc_tags {
                    // TS 24.379 7.1: re-REGISTER without the MC service feature tags.
                    let u = &mut s.ues[usize::from(ue)];
                    u.mc_tags = false;
                    u.reg_token = None;
                    self.send(
                        s,
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
            _ => return None,
        }
        Some(())
    }

    /// How UE `ue` protects `token` for `service` in the PUBLISH it is about to send (TS 33.180
    /// clause 9 and 5.4): in clear, under a provisioned CSK, or under its own CSK, making one and
    /// sending its I_MESSAGE along when it has none the server acknowledged.
    fn protect(&self, s: &mut EnvState, ue: u8, service: u8, token: Tok) -> Prot {
        if !self.cfg.protects_tokens() {
            return Prot::Clear;
        }
        let impu = self.ue_impu(usize::from(ue), s.ues[usize::from(ue)].impu);
        if !self.cfg.csk_upload {
            return Prot::Provisioned {
                user: token.user,
                impu,
            };
        }
        let now = s.now;
        match s.ues[usize::from(ue)].csks[usize::from(service)] {
            Some(UeCsk { csk, acked: true }) => Prot::Uploaded { csk, upload: None },
            _ => {
                // A fresh CSK whose I_MESSAGE is signed as the UE's user and made now.
                let csk = CskRef {
                    owner: Sender::Ue(ue),
                    signer: Some(token.user),
                    gen: self.fresh_gen(s, ue, token.user),
                };
                s.ues[usize::from(ue)].csks[usize::from(service)] =
                    Some(UeCsk { csk, acked: false });
                Prot::Uploaded {
                    csk,
                    upload: Some(now),
                }
            }
        }
    }

    /// The smallest CSK number of UE `ue` for `user` that names nothing anywhere: not a CSK the
    /// server holds, not an I_MESSAGE it remembers, not one in flight or kept by the attacker,
    /// not one of the UE's own. Such a name is as good as a never-used one (the state
    /// canonicalization forgets remembered I_MESSAGEs that can never arrive again), and reusing
    /// it keeps the state space finite without a counter.
    fn fresh_gen(&self, s: &EnvState, ue: u8, user: u8) -> u8 {
        let mut used = 0u32;
        let mut mark = |r: Option<CskRef>| {
            if let Some(r) = r {
                if r.owner == Sender::Ue(ue) && r.signer == Some(user) && r.gen < 32 {
                    used |= 1 << r.gen;
                }
            }
        };
        for (id, _) in s.server.csks() {
            mark(CskRef::parse(id.as_str()));
        }
        for id in s.server.key_messages() {
            mark(id.as_str().strip_prefix("imsg-").and_then(CskRef::parse));
        }
        for m in &s.net {
            mark(m.req.csk());
        }
        for x in &s.sealed {
            mark(x.csk());
        }
        for c in s.ues[usize::from(ue)].csks.iter().flatten() {
            mark(Some(c.csk));
        }
        used.trailing_ones() as u8
    }

    /// The UE's view of the response to its own PUBLISH.
    pub(super) fn ue_response(&self, s: &mut EnvState, msg: Option<&Msg>, effect: &StepEffect) {
        if let Some(Msg {
            from: Sender::Ue(ue),
            dup: false,
            req: Req::Publish { .. },
            ..
        }) = msg
        {
            let settled = s.settled;
            let u = &mut s.ues[usize::from(*ue)];
            if let (Some(p), Some(r)) = (u.pending.take(), &effect.response) {
                if settled {
                    self.fair_response(s, *ue, p, &r.outcome);
                }
                let u = &mut s.ues[usize::from(*ue)];
                let (svc, remove) = match p {
                    Pending::Authorize(x) | Pending::Settings(x) | Pending::Refresh(x) => {
                        (x, false)
                    }
                    Pending::Remove(x) => (x, true),
                };
                if let (
                    Pending::Authorize(x),
                    Some(Req::Publish {
                        body:
                            Body::Auth {
                                prot: Prot::Uploaded { csk, .. },
                                ..
                            },
                        ..
                    }),
                ) = (p, msg.map(|m| &m.req))
                {
                    let slot = &mut u.csks[usize::from(x)];
                    if slot.is_some_and(|c| c.csk == *csk) {
                        *slot = if r.outcome.is_success() {
                            Some(UeCsk {
                                csk: *csk,
                                acked: true,
                            })
                        } else {
                            None
                        };
                    }
                }
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
}
