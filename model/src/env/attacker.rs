//! The attacker: a subscriber of the same IMS with its own registered IMPU (TS 33.180 5.1.3
//! threat: a compromised or curious SIP core, dossier Q-6). It sees every request that crosses
//! the SIP core ([`McxModel::observe`]), keeps the tokens it could read, replays them from its
//! own IMPU through the SIP core, and PUBLISHes straight to the server with a forged
//! P-Asserted-Identity. Its requests are sent and delivered in one step: when it sends relative
//! to its own delivery does not matter, when it sends relative to the UEs does.

use super::{Body, EnvAction, EnvState, McxModel, Msg, Req, Sender, StepEffect, Tok, TokenKind};

impl McxModel {
    /// What the attacker learns from `req` crossing the SIP core: REGISTER bodies always,
    /// PUBLISH tokens unless protected per TS 33.180 clause 9.
    pub(super) fn observe(&self, s: &mut EnvState, from: Sender, req: &Req) {
        if !self.cfg.attacker || from == Sender::Attacker {
            return;
        }
        let seen = match req {
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
            if let Err(pos) = s.captured.binary_search(&t) {
                s.captured.insert(pos, t);
            }
        }
    }

    /// The attacker's actions while its budget lasts.
    pub(super) fn attacker_actions(&self, s: &EnvState, actions: &mut Vec<EnvAction>) {
        let n_services = self.cfg.services.len() as u8;
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
        } else {
            let (now, life) = (u64::from(s.now), self.cfg.token_life);
            s.captured.retain(|t| t.exp(life) > now);
        }
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
            stale: false,
            req,
        })
    }
}
