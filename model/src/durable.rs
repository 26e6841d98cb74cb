//! Durability as data (issue 13): what the machine asks the shell to make durable, and what the
//! shell hands back at start-up. The machine stays sans-IO: it emits [`Persist`] for every
//! change that must survive a crash and stamps each response with the [`Seq`] it waits for; the
//! driver sends no response before that sequence number is durable (persist, then send, as in
//! raft-rs's `Ready`). At start-up the driver reads the store into a [`Snapshot`] and feeds it as
//! [`crate::Input::Load`]; the machine re-arms every deadline from the time passed in.
//!
//! Keys are partitioned by IMPU: one [`ImpuRecord`] per IMPU holds its third-party registration
//! and every binding of that IMPU (with their publications), so one SIP transaction writes one
//! key. Beside them: the CSKs and what each is tied to (TS 33.180 5.4), the replay window's token
//! owners (dossier Q-6) and the I_MESSAGEs already accepted (RFC 3830 5.4). [`Image`] is the pure
//! in-memory store: the model's durable state, the shell's `memory` backend, and the oracle the
//! embedded store's tests compare against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, CskId, Impu, KeyMessageId, Service, TokenId, UnixTime};
use crate::machine::{Binding, Csk, Registration};

/// A durability sequence number: the `n`-th [`Persist`] the machine emitted. [`Seq::ZERO`] is
/// "nothing to wait for". Numbers grow by one per persisting input and restart from the
/// durable store's own count after a restart ([`crate::Machine::resume_seq`]).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Nothing to wait for.
    pub const ZERO: Seq = Seq(0);
}

/// Changes that must be durable before any response that observed them is sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Persist {
    /// This batch's number.
    pub seq: Seq,
    /// What changed; each change replaces (or removes) one key.
    pub changes: Vec<Change>,
}

/// One key's new value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// The whole aggregate of one IMPU after the change; `None` deletes it (no registration and
    /// no binding left).
    Impu {
        /// The IMPU.
        impu: Impu,
        /// Its registration and bindings.
        record: Option<ImpuRecord>,
    },
    /// A CSK and its tie (TS 33.180 5.4); `None`: dropped.
    Csk {
        /// The key's identifier.
        csk_id: CskId,
        /// The tie.
        csk: Option<Csk>,
    },
    /// Dossier Q-6: `token_id` is bound for `impu` until `until` (replay window).
    TokenOwner {
        /// The token.
        token_id: TokenId,
        /// Its IMPU.
        impu: Impu,
        /// End of the window; the store may forget the entry after it.
        until: UnixTime,
    },
    /// RFC 3830 5.4: the I_MESSAGE `message_id` was accepted; refused again until `until`.
    KeyMessage {
        /// The message.
        message_id: KeyMessageId,
        /// When it would be stale anyway.
        until: UnixTime,
    },
    /// A lab restart ([`crate::Input::Restart`]) forgot the replay window and the accepted
    /// I_MESSAGEs: the store forgets them too.
    ClearReplay,
}

/// Everything one IMPU holds: its third-party registration and every binding under it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImpuRecord {
    /// The registration, if any.
    pub registration: Option<Registration>,
    /// The bindings of this IMPU, by (service, MC client ID), in key order.
    pub bindings: Vec<(Service, ClientId, Binding)>,
}

/// The whole durable state, as the store hands it to [`crate::Input::Load`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last [`Seq`] made durable.
    pub seq: Seq,
    /// Per-IMPU aggregates.
    pub impus: Vec<(Impu, ImpuRecord)>,
    /// CSK ties.
    pub csks: Vec<(CskId, Csk)>,
    /// Replay window entries (lapsed ones are ignored by the machine).
    pub token_owners: Vec<(TokenId, Impu, UnixTime)>,
    /// Accepted I_MESSAGEs (lapsed ones are ignored by the machine).
    pub key_messages: Vec<(KeyMessageId, UnixTime)>,
}

/// Several instances on one store (issue 13): what the shared store holds *now* for some keys,
/// fed as [`crate::Input::Reload`] before an input is decided from them (the instance's cached
/// copy may be older than another instance's write) and after a compare-and-set conflict (the
/// instance's own speculative change is undone). `None`: the store has no such key. Keys not
/// listed keep what the machine holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reload {
    /// Per-IMPU aggregates.
    pub impus: Vec<(Impu, Option<ImpuRecord>)>,
    /// CSK ties.
    pub csks: Vec<(CskId, Option<Csk>)>,
    /// Replay-window token owners: (IMPU, until).
    pub token_owners: Vec<(TokenId, Option<(Impu, UnixTime)>)>,
    /// Accepted or spent I_MESSAGEs: until when.
    pub key_messages: Vec<(KeyMessageId, Option<UnixTime>)>,
}

impl Reload {
    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.impus.is_empty()
            && self.csks.is_empty()
            && self.token_owners.is_empty()
            && self.key_messages.is_empty()
    }
}

/// A store held in memory: the [`Persist`] batches applied in order. The model's durable state,
/// the server's `memory` backend and the embedded store's test oracle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Image {
    seq: Seq,
    impus: BTreeMap<Impu, ImpuRecord>,
    csks: BTreeMap<CskId, Csk>,
    token_owners: BTreeMap<TokenId, (Impu, UnixTime)>,
    key_messages: BTreeMap<KeyMessageId, UnixTime>,
}

impl Image {
    /// An empty store.
    pub fn new() -> Self {
        Image::default()
    }

    /// Applies one batch (batches must come in [`Seq`] order).
    pub fn apply(&mut self, p: &Persist) {
        for c in &p.changes {
            self.apply_change(c);
        }
        self.seq = self.seq.max(p.seq);
    }

    /// Applies one change.
    pub fn apply_change(&mut self, c: &Change) {
        match c {
            Change::Impu { impu, record } => match record {
                Some(r) => {
                    self.impus.insert(impu.clone(), r.clone());
                }
                None => {
                    self.impus.remove(impu);
                }
            },
            Change::Csk { csk_id, csk } => match csk {
                Some(c) => {
                    self.csks.insert(csk_id.clone(), c.clone());
                }
                None => {
                    self.csks.remove(csk_id);
                }
            },
            Change::TokenOwner {
                token_id,
                impu,
                until,
            } => {
                self.token_owners
                    .insert(token_id.clone(), (impu.clone(), *until));
            }
            Change::KeyMessage { message_id, until } => {
                self.key_messages.insert(message_id.clone(), *until);
            }
            Change::ClearReplay => {
                self.token_owners.clear();
                self.key_messages.clear();
            }
        }
    }

    /// Forgets replay entries whose time has passed (garbage collection only: the machine
    /// ignores lapsed entries anyway).
    pub fn collect_garbage(&mut self, now: UnixTime) {
        self.token_owners.retain(|_, (_, until)| *until > now);
        self.key_messages.retain(|_, until| *until > now);
    }

    /// Whether [`Image::collect_garbage`] at `now` would forget anything.
    pub fn has_garbage(&self, now: UnixTime) -> bool {
        self.token_owners.values().any(|(_, until)| *until <= now)
            || self.key_messages.values().any(|until| *until <= now)
    }

    /// Whether a remembered I_MESSAGE satisfies `pred` (the model checker asks before
    /// [`Image::forget_key_messages`], so that a store it would not change stays shared).
    #[doc(hidden)]
    pub fn has_key_message(&self, pred: impl Fn(&KeyMessageId) -> bool) -> bool {
        self.key_messages.keys().any(pred)
    }

    /// Forgets remembered I_MESSAGEs for which `dead` holds: the checker's reduction, the same
    /// one it applies to the machine ([`crate::Machine::forget_key_messages`]), so that the store
    /// and the machine stay equal and a crash that loses nothing leads back to the same state.
    #[doc(hidden)]
    pub fn forget_key_messages(&mut self, dead: impl Fn(&KeyMessageId) -> bool) {
        self.key_messages.retain(|id, _| !dead(id));
    }

    /// The last sequence number applied.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The aggregate of `impu`.
    pub fn impu(&self, impu: &Impu) -> Option<&ImpuRecord> {
        self.impus.get(impu)
    }

    /// Everything, for [`crate::Input::Load`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            seq: self.seq,
            impus: self
                .impus
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            csks: self
                .csks
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            token_owners: self
                .token_owners
                .iter()
                .map(|(k, (i, t))| (k.clone(), i.clone(), *t))
                .collect(),
            key_messages: self
                .key_messages
                .iter()
                .map(|(k, t)| (k.clone(), *t))
                .collect(),
        }
    }

    /// Number of IMPU aggregates held.
    pub fn impu_count(&self) -> usize {
        self.impus.len()
    }
}
