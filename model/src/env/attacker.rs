//! The attacker: a subscriber of the same IMS with its own registered IMPU (TS 33.180 5.1.3
//! threat: a compromised or curious SIP core, dossier Q-6). It sees every PUBLISH and REGISTER
//! that crosses the SIP core ([`McxModel::observe`]), protected or not, and with what it saw it
//! can, within its budget:
//!
//! - present a token it read in clear (a REGISTER body, an unprotected PUBLISH) from its own
//!   IMPU, in clear ([`EnvAction::Replay`]) or re-protected under a CSK of its own with its own
//!   I_MESSAGE, which it can sign only as itself ([`EnvAction::Reprotect`]);
//! - replay a protected PUBLISH it captured from its own IMPU, whole with the I_MESSAGE it
//!   carried, or with the `application/mikey` part stripped ([`EnvAction::ReplaySealed`]). It
//!   cannot open a protected token, so it cannot re-protect one;
//! - PUBLISH straight to the server with a forged P-Asserted-Identity ([`EnvAction::ForgePai`]).
//!
//! By default it acts on a request once that request reached the server (an eavesdropper that
//! records and replays); with [`super::ModelConfig::attacker_preempts`] it may act while the
//! original is still in flight (an on-path attacker racing it). Its requests are sent and
//! delivered in one step. What it keeps is bounded: captured tokens die at their `exp`, at most
//! [`super::ModelConfig::attacker_capture`] protected PUBLISHes are kept, and everything is
//! forgotten once its budget is spent.

use serde::{Deserialize, Serialize};

use super::{
    Body, CskRef, EnvAction, EnvState, McxModel, Msg, Prot, Req, Sender, StepEffect, Tok, TokenKind,
};
use crate::policy::TokenProtection;

/// A protected token PUBLISH body the attacker captured (opaque to it: it can only resend it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sealed {
    /// The token inside (the attacker cannot read it; the model keeps it to deliver it).
    pub token: Tok,
    /// Service index of the PUBLISH.
    pub service: u8,
    /// The protection and the I_MESSAGE that travelled with it.
    pub prot: Prot,
}

impl Sealed {
    /// The uploaded CSK it is protected under, if any.
    pub fn csk(&self) -> Option<CskRef> {
        match self.prot {
            Prot::Uploaded { csk, .. } => Some(csk),
            _ => None,
        }
    }
}

impl McxModel {
    /// What the attacker learns from `req` crossing the SIP core: tokens in REGISTER bodies and
    /// unprotected PUBLISHes (readable), and protected PUBLISH bodies (to resend as they are).
    pub(super) fn observe(&self, s: &mut EnvState, from: Sender, req: &Req) {
        if !self.cfg.attacker || from == Sender::Attacker || s.attacker_left == 0 {
            return;
        }
        match req {
            Req::Register { token: Some(t), .. }
            | Req::Publish {
                body:
                    Body::Auth {
                        token: t,
                        prot: Prot::Clear,
                    },
                trusted: true,
                ..
            } => {
                if let Err(pos) = s.captured.binary_search(t) {
                    s.captured.insert(pos, *t);
                }
            }
            Req::Publish {
                body: Body::Auth { token, prot },
                trusted: true,
                service,
                ..
            } => {
                let x = Sealed {
                    token: *token,
                    service: *service,
                    prot: *prot,
                };
                if let Err(pos) = s.sealed.binary_search(&x) {
                    if s.sealed.len() < usize::from(self.cfg.attacker_capture) {
                        s.sealed.insert(pos, x);
                    }
                }
            }
            _ => {}
        }
    }

    /// The attacker's actions while its budget lasts.
    pub(super) fn attacker_actions(&self, s: &EnvState, actions: &mut Vec<EnvAction>) {
        if s.attacker_left == 0 {
            return;
        }
        if !s
            .server
            .registrations()
            .any(|(i, _)| i == self.impu(self.attacker_impu()))
        {
            actions.push(EnvAction::AttackerRegister);
        }
        let n_services = self.cfg.services.len() as u8;
        // Re-protecting a token read in clear is worth trying only against a server that
        // refuses clear tokens; against any other, presenting it in clear is the stronger move.
        let reprotect = self.cfg.policy.token_protection == TokenProtection::Required;
        for t in &s.captured {
            for service in 0..n_services {
                actions.push(EnvAction::Replay { token: *t, service });
                if reprotect {
                    actions.push(EnvAction::Reprotect { token: *t, service });
                }
            }
        }
        for x in &s.sealed {
            actions.push(EnvAction::ReplaySealed {
                sealed: *x,
                strip_upload: false,
            });
            if matches!(
                x.prot,
                Prot::Uploaded {
                    upload: Some(_),
                    ..
                }
            ) {
                actions.push(EnvAction::ReplaySealed {
                    sealed: *x,
                    strip_upload: true,
                });
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

    /// The attacker's request is sent and delivered.
    pub(super) fn apply_attack(
        &self,
        last: &EnvState,
        s: &mut EnvState,
        action: &EnvAction,
        effect: &mut StepEffect,
    ) -> Option<()> {
        let msg = self.attacker_msg(last, action)?;
        s.attacker_left -= 1;
        self.deliver(last, s, &msg, effect);
        Some(())
    }

    /// What the attacker saw matters only while it can still act, and only for tokens that are
    /// not yet expired (a replayed expired token is refused like any expired token).
    pub(super) fn forget_useless(&self, s: &mut EnvState) {
        if s.attacker_left == 0 {
            s.captured.clear();
            s.sealed.clear();
        } else {
            let (now, life) = (u64::from(s.now), self.cfg.token_life);
            s.captured.retain(|t| t.exp(life) > now);
            s.sealed.retain(|x| x.token.exp(life) > now);
        }
    }

    /// The attacker's own CSK for its next request (it signs its I_MESSAGE as itself).
    fn attacker_csk(&self, s: &EnvState) -> CskRef {
        CskRef {
            owner: Sender::Attacker,
            signer: None,
            gen: self.cfg.attacker_budget - s.attacker_left,
        }
    }

    /// The request an attacker action sends.
    pub fn attacker_msg(&self, s: &EnvState, action: &EnvAction) -> Option<Msg> {
        // Through the SIP core from the attacker's own registered IMPU, as an initial PUBLISH
        // (SIP headers are not protected: the attacker sets them as it likes).
        let own = |service: u8, body: Body| Req::Publish {
            impu: self.attacker_impu(),
            trusted: true,
            service,
            if_match: None,
            expires: self.cfg.publication_ttl,
            body,
        };
        let req = match *action {
            EnvAction::Replay { token, service } => own(
                service,
                Body::Auth {
                    token,
                    prot: Prot::Clear,
                },
            ),
            EnvAction::Reprotect { token, service } => own(
                service,
                Body::Auth {
                    token,
                    prot: Prot::Uploaded {
                        csk: self.attacker_csk(s),
                        upload: Some(s.now),
                    },
                },
            ),
            EnvAction::ReplaySealed {
                sealed,
                strip_upload,
            } => {
                let prot = match sealed.prot {
                    Prot::Uploaded { csk, .. } if strip_upload => {
                        Prot::Uploaded { csk, upload: None }
                    }
                    p => p,
                };
                own(
                    sealed.service,
                    Body::Auth {
                        token: sealed.token,
                        prot,
                    },
                )
            }
            EnvAction::AttackerRegister => Req::Register {
                impu: self.attacker_impu(),
                expires: 255,
                mc_tags: true,
                token: None,
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
                    prot: Prot::Clear,
                },
            },
            _ => return None,
        };
        Some(Msg {
            from: Sender::Attacker,
            dup: false,
            stale: false,
            req,
        })
    }
}
