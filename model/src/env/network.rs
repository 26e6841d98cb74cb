//! The SIP core and the network between it and the MCX server.
//!
//! The SIP core is a pure function of a UE's request: it asserts the UE's current IMPU
//! (P-Asserted-Identity, TS 24.229 5.4.1.7 for the third-party REGISTER) and shows what crosses
//! it to the attacker ([`McxModel::observe`]). The network holds the requests in flight to the
//! server; its kind decides which may arrive next, and a duplicating network may deliver one
//! request twice (bounded). Delivery turns a request into the machine's [`Input`].

use serde::{Deserialize, Serialize};

use crate::ids::{CskId, KeyMessageId, ServiceSet, UnixTime};
use crate::input::{
    AssertedIdentity, Authorization, EventPackage, IfMatch, Input, KeyUpload, Protection, Publish,
    PublishBody, PublishTarget, RegisterTarget, Settings, ThirdPartyRegister,
};

use super::{EnvAction, EnvState, McxModel, NetworkKind, StepEffect, Tok};

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
    /// Overtaken: a request its sender sent later was delivered first (ghost, for S-5: a stale
    /// request is not the UE's current word).
    pub stale: bool,
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
        /// How it is protected (TS 33.180 clause 9), with the CSK upload that travels along.
        prot: Prot,
    },
    /// Settings only, claiming this user's MC service ID (TS 24.379 7.3.4).
    Settings {
        /// The user whose MC ID `<mcptt-request-uri>` names.
        user: u8,
    },
}

/// A CSK in the model (TS 33.180 5.4): who generated it, whose identity signs its I_MESSAGE
/// (IDRi), and its number among its owner's CSKs. Its CSB-ID and the I_MESSAGE's identity are
/// derived from these ([`CskRef::csk_id`], [`CskRef::message_id`]): one I_MESSAGE per CSK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CskRef {
    /// The UE whose client generated it, or the attacker.
    pub owner: Sender,
    /// The user whose MC service ID's MIKEY-SAKKE UID is the I_MESSAGE's IDRi; `None` for the
    /// attacker, who can sign only as itself (it holds no user's SSK).
    pub signer: Option<u8>,
    /// Its number among its owner's CSKs.
    pub gen: u8,
}

impl CskRef {
    /// The CSK's identifier (CSB-ID): `csk-ue1-A0`, `csk-att0`.
    pub fn csk_id(&self) -> CskId {
        CskId::new(self.label(""))
    }

    /// The identity of the one I_MESSAGE that carries it.
    pub fn message_id(&self) -> KeyMessageId {
        KeyMessageId::new(self.label("imsg-"))
    }

    /// `prefix` and the CSK's name, formatted inline (no heap: the checker names CSKs at every
    /// delivery).
    fn label(&self, prefix: &str) -> String {
        match (self.owner, self.signer) {
            (Sender::Ue(n), Some(u)) => {
                format!(
                    "{prefix}csk-ue{}-{}{}",
                    n + 1,
                    super::user_name(u),
                    self.gen
                )
            }
            (Sender::Ue(n), None) => format!("{prefix}csk-ue{}-{}", n + 1, self.gen),
            (Sender::Attacker, _) => format!("{prefix}csk-att{}", self.gen),
        }
    }

    /// Parses [`CskRef::csk_id`] (for judging the server's CSK table).
    pub fn parse(id: &str) -> Option<CskRef> {
        let rest = id.strip_prefix("csk-")?;
        if let Some(g) = rest.strip_prefix("att") {
            return Some(CskRef {
                owner: Sender::Attacker,
                signer: None,
                gen: g.parse().ok()?,
            });
        }
        let rest = rest.strip_prefix("ue")?;
        let (n, rest) = rest.split_once('-')?;
        let n: u8 = n.parse().ok()?;
        let mut chars = rest.chars();
        let u = chars.next()?;
        let gen = chars.as_str().parse().ok()?;
        Some(CskRef {
            owner: Sender::Ue(n.checked_sub(1)?),
            signer: Some((u as u8).checked_sub(b'A')?),
            gen,
        })
    }
}

/// How a token travels in PUBLISH (TS 33.180 clause 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Prot {
    /// In clear: the SIP core reads it.
    Clear,
    /// Protected under a CSK provisioned at the server up front for (user, IMPU, service)
    /// ([`super::ModelConfig::csk_upload`] off; the IMPU is the sender's when it protected).
    Provisioned {
        /// The user of the CSK.
        user: u8,
        /// The global IMPU index the sender protected it for.
        impu: u8,
    },
    /// Protected under an uploaded CSK; `upload` is the tick the I_MESSAGE carrying that CSK
    /// was made (its MIKEY T payload) when this PUBLISH carries it (TS 33.180 5.4: with, or
    /// before, the first protected token).
    Uploaded {
        /// The CSK.
        csk: CskRef,
        /// The I_MESSAGE's timestamp, when this PUBLISH carries the I_MESSAGE.
        upload: Option<u8>,
    },
}

impl Prot {
    /// Whether the token is protected (opaque to the SIP core).
    pub fn protected(&self) -> bool {
        !matches!(self, Prot::Clear)
    }
}

impl Req {
    /// The uploaded CSK the request's token is protected under, if any.
    pub fn csk(&self) -> Option<CskRef> {
        match self {
            Req::Publish {
                body:
                    Body::Auth {
                        prot: Prot::Uploaded { csk, .. },
                        ..
                    },
                ..
            } => Some(*csk),
            _ => None,
        }
    }

    /// The token the request carries, if any.
    pub fn token(&self) -> Option<Tok> {
        match self {
            Req::Register { token, .. } => *token,
            Req::Publish {
                body: Body::Auth { token, .. },
                ..
            } => Some(*token),
            Req::Publish { .. } => None,
        }
    }
}

impl McxModel {
    /// Requests of `from` in flight (not counting duplicates).
    pub(super) fn in_flight(&self, state: &EnvState, from: Sender) -> usize {
        state
            .net
            .iter()
            .filter(|m| m.from == from && !m.dup)
            .count()
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
                    Body::Auth { token, prot } => PublishBody::Authorization(Authorization {
                        token: self.validate(*token, now),
                        protection: match prot {
                            Prot::Clear => Protection::Clear,
                            Prot::Provisioned { user, impu } => {
                                Protection::Csk(Self::csk(*user, *impu, *service))
                            }
                            Prot::Uploaded { csk, .. } => Protection::Csk(csk.csk_id()),
                        },
                        client_id: client,
                        settings: None,
                    }),
                    Body::Settings { user } => PublishBody::SettingsOnly {
                        claimed_mc_id: self.mc_id(*user, *service).clone(),
                        client_id: client,
                        // The settings say whose they are, so S-5 can tell.
                        settings: Some(Settings {
                            user_profile_index: Some(*user),
                            ..Settings::default()
                        }),
                    },
                },
                key_upload: match body {
                    Body::Auth {
                        token,
                        prot:
                            Prot::Uploaded {
                                csk,
                                upload: Some(sent),
                            },
                    } => Some(Box::new(KeyUpload::Verified {
                        csk_id: csk.csk_id(),
                        message_id: csk.message_id(),
                        sent_at: UnixTime(u64::from(*sent)),
                        // The shell names the token's MC service ID whose MIKEY-SAKKE UID is the
                        // I_MESSAGE's IDRi (TS 33.180 F.2.1), if any.
                        signer: csk
                            .signer
                            .filter(|u| *u == token.user)
                            .map(|u| self.mc_id(u, *service).clone()),
                    })),
                    _ => None,
                },
                fresh_etag: Self::etag(fresh_etag),
            }),
        }
    }

    /// The provisioned CSK of `user` on IMPU `impu` for `service`.
    pub fn csk(user: u8, impu: u8, service: u8) -> CskId {
        CskId::new(format!("csk-{}-i{impu}-s{service}", super::user_name(user)))
    }

    /// The SIP core forwards `req` from `from` to the server: the attacker sees it on the way
    /// (and, unless it pre-empts, may act on it once it reached the server).
    pub(super) fn send(&self, s: &mut EnvState, from: Sender, req: Req) {
        if self.cfg.attacker_preempts {
            self.observe(s, from, &req);
        }
        s.net.push(Msg {
            from,
            dup: false,
            stale: false,
            req,
        });
    }

    /// Sorts the requests in flight so that equal multisets are equal states.
    pub(super) fn canonical_net(&self, net: &mut [Msg]) {
        // A stable sort by sender keeps each sender's requests in the order sent: the per-sender
        // FIFO of the ordered network, and on the others what tells an overtaken request.
        net.sort_by_key(|m| (m.dup, m.from));
    }

    /// The network's actions: deliver any request that may arrive next (keeping a copy on a
    /// duplicating network while the duplicate budget lasts).
    pub(super) fn network_actions(&self, s: &EnvState, actions: &mut Vec<EnvAction>) {
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
    }

    /// Delivers `msg` (removing it from the network, or leaving a duplicate behind).
    pub(super) fn apply_delivery(
        &self,
        last: &EnvState,
        s: &mut EnvState,
        msg: &Msg,
        keep_copy: bool,
        effect: &mut StepEffect,
    ) -> Option<()> {
        let pos = s.net.iter().position(|m| m == msg)?;
        let msg = s.net.remove(pos);
        if !msg.dup && msg.req.token().is_some() {
            // Each sender's requests stay in the order sent: the ones before this token-bearing
            // one are overtaken (a later word on who the user is arrived first).
            for m in s.net[..pos].iter_mut() {
                if m.from == msg.from && !m.dup {
                    m.stale = true;
                }
            }
        }
        if keep_copy {
            s.dups_left -= 1;
            s.net.push(Msg {
                dup: true,
                stale: true,
                ..msg.clone()
            });
        }
        if !self.cfg.attacker_preempts && !msg.dup {
            self.observe(s, msg.from, &msg.req);
        }
        self.deliver(last, s, &msg, effect);
        Some(())
    }

    /// The machine handles `msg` at the current time; [`McxModel::absorb`] records the rest.
    pub(super) fn deliver(
        &self,
        last: &EnvState,
        s: &mut EnvState,
        msg: &Msg,
        effect: &mut StepEffect,
    ) {
        let input = self.input_for(msg, s.now, s.next_etag);
        effect.record(|| input.clone());
        let out = s
            .server
            .make_mut()
            .handle(UnixTime(u64::from(s.now)), input);
        self.absorb(last, s, Some(msg), out, effect);
    }
}
