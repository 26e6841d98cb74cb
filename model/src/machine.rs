//! The sans-IO authorization state machine: the one type the model checks and the server runs.
//!
//! Contract (after str0m and quinn-proto): the caller feeds one [`Input`] at a time together
//! with the current time, and carries out every [`Output`] returned before the next input. A
//! request input returns exactly one [`Output::Response`] (the last output); [`Input::Tick`] and
//! [`Input::Restart`] return only binding events. The machine reads no clock, draws no random
//! number, verifies no signature and does no IO.
//!
//! Invariant kept by construction: every binding change goes through [`Machine::put_binding`] or
//! [`Machine::take_binding`] (registrations through `put_registration`/`take_registration`), which
//! keep the deadline index in step with the table, so no deadline names state that no longer
//! exists. SIP-ETags are not indexed: a tag is looked up among its IMPU's own bindings.
//!
//! Table shape (issue 15, memory per binding): the state is rooted at the IMPU, as the durable
//! store is ([`ImpuRecord`]). One entry per IMPU holds its third-party registration and its
//! bindings (a slice sorted by key, usually of one), and the deadline index holds one entry per
//! IMPU: the earliest of its registration, publication and (by policy) token deadlines. The IMPU
//! string is held once, by the table's key; every binding key and deadline of that IMPU shares it.

use std::collections::{btree_map, BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::durable::{Change, ImpuRecord, Persist, Reload, Seq, Snapshot};
use crate::ids::{
    CskId, ETag, Impu, KeyMessageId, McId, Service, ServiceSet, TaggedImpu, TokenId, UnixTime,
};
use crate::input::{
    AssertedIdentity, Authorization, EventPackage, IfMatch, Input, KeyUpload, Protection, Publish,
    PublishBody, PublishTarget, RegisterTarget, Settings, ThirdPartyRegister,
};
use crate::output::{
    BadRequest, BindingEvent, BindingKey, CskDropCause, CskEvent, ForbiddenReason, Outcome, Output,
    Response, UnbindCause,
};
use crate::policy::{
    CskTie, FailedReauthorization, ImpuChange, Policy, RegisterToken, TokenExpiry, TokenProtection,
};
use crate::thin_slice::ThinSlice;
use crate::token::{TokenRejection, TokenVerdict};

/// The MCX server's authorization state: registrations, bindings and current publications.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Machine {
    policy: Policy,
    /// Each IMPU's registration and bindings; an IMPU with neither has no entry.
    impus: BTreeMap<Impu, ImpuEntry>,
    /// One entry per IMPU: its earliest deadline and what ends then, earliest first (at equal
    /// times registrations, then publications, then tokens, as [`Deadline`] orders them).
    deadlines: BTreeSet<DeadlineEntry>,
    /// How many bindings the entries hold (derived, kept in step by `put_binding`/`take_binding`).
    binding_count: usize,
    /// CSKs and what each is tied to (TS 33.180 5.4).
    csks: BTreeMap<CskId, Csk>,
    /// I_MESSAGEs accepted, each until it would be stale anyway (RFC 3830 5.4).
    key_messages: Expiring<KeyMessageId, ()>,
    /// Dossier Q-6: the IMPU each bound token belongs to, within the replay window.
    token_owners: Expiring<TokenId, Impu>,
    /// What the input being handled changed, for [`Output::Persist`] (issue 13).
    journal: Journal,
}

/// Durability bookkeeping: the keys the current input changed, and the last [`Seq`] issued.
///
/// Not state in the model's sense, so its `PartialEq`/`Hash` see nothing: between two inputs
/// the dirty sets are always empty (drained at the end of every [`Machine::handle`]), and the
/// sequence number is only a label on outputs: two machines that differ only in it answer every
/// input alike, apart from that label. The model's states therefore do not multiply by it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Journal {
    seq: Seq,
    impus: BTreeSet<Impu>,
    csks: BTreeSet<CskId>,
    replay: Vec<Change>,
}

impl PartialEq for Journal {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Journal {}

impl std::hash::Hash for Journal {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl Journal {
    fn is_empty(&self) -> bool {
        self.impus.is_empty() && self.csks.is_empty() && self.replay.is_empty()
    }
}

/// A CSK the server holds, and what it is tied to (TS 33.180 5.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Csk {
    /// The MC service ID it opens tokens of: the signer of its I_MESSAGE, or the lab table's.
    pub mc_id: McId,
    /// The IMPU it opens tokens from: the IMPU of the upload, or (provisioned) of first use.
    pub impu: Option<Impu>,
    /// Provisioned from configuration rather than uploaded: survives a restart and the end of
    /// its user's bindings (a lab table entry stands for one client device).
    pub provisioned: bool,
}

/// A table whose entries lapse at a time: one map and one time index, kept in step. Lapsed
/// entries are ignored by [`Expiring::get`] and removed by [`Expiring::forget_until`], which
/// the machine calls with every input, so the table holds only what is still in force.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Expiring<K: Ord, V> {
    entries: BTreeMap<K, (V, UnixTime)>,
    by_time: BTreeSet<(UnixTime, K)>,
}

impl<K: Ord + Clone, V> Expiring<K, V> {
    fn new() -> Self {
        Expiring {
            entries: BTreeMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    fn get(&self, k: &K, now: UnixTime) -> Option<&V> {
        self.entries
            .get(k)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v)
    }

    fn insert(&mut self, k: K, v: V, until: UnixTime) {
        if let Some((_, old)) = self.entries.insert(k.clone(), (v, until)) {
            self.by_time.remove(&(old, k.clone()));
        }
        self.by_time.insert((until, k));
    }

    fn remove(&mut self, k: &K) {
        if let Some((_, until)) = self.entries.remove(k) {
            self.by_time.remove(&(until, k.clone()));
        }
    }

    fn forget_until(&mut self, now: UnixTime) {
        while let Some((t, k)) = self.by_time.first().cloned() {
            if t > now {
                break;
            }
            self.by_time.pop_first();
            self.entries.remove(&k);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.by_time.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A third-party registration of one IMPU.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Registration {
    /// When the registration runs out unless refreshed.
    pub expires_at: UnixTime,
    /// The MC service feature tags of the UE's REGISTER, when the S-CSCF passed it on.
    pub services: Option<ServiceSet>,
}

/// One IMPU ↔ MC service ID binding (the value; the key is a [`BindingKey`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding {
    /// The MC service ID, from the verified token's claim (S-1).
    pub mc_id: McId,
    /// The token that vouched for it.
    pub token_id: TokenId,
    /// That token's `exp`.
    pub token_exp: UnixTime,
    /// When the token was accepted.
    pub authorized_at: UnixTime,
    /// The RFC 3903 publication carrying it; `None` for a binding made from a REGISTER-borne
    /// token.
    pub publication: Option<Publication>,
    /// The client's service settings.
    pub settings: Option<Settings>,
}

/// The RFC 3903 event state of one binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Publication {
    /// The current entity-tag.
    pub etag: ETag,
    /// When the publication runs out unless refreshed.
    pub expires_at: UnixTime,
}

/// What one IMPU holds: its third-party registration and its bindings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct ImpuEntry {
    registration: Option<Registration>,
    /// Sorted by key; every key's `impu` is this entry's (the same shared string). Allocated to
    /// its length, the length inside the allocation (8 bytes in the table instead of a boxed
    /// slice's 16 or a vector's 24, and never the vector's default capacity of four).
    bindings: ThinSlice<(BindingKey, Binding)>,
}

impl ImpuEntry {
    fn is_empty(&self) -> bool {
        self.registration.is_none() && self.bindings.is_empty()
    }

    /// The entry's earliest deadline and what ends then; at equal times the registration goes
    /// first, then publications, then tokens (`token_ends`: the policy ends bindings at `exp`).
    fn next_deadline(&self, token_ends: bool) -> Option<(UnixTime, Deadline)> {
        let registration = self
            .registration
            .as_ref()
            .map(|r| (r.expires_at, Deadline::Registration));
        let bindings = self.bindings.iter().flat_map(|(_, b)| {
            let publication = b
                .publication
                .as_ref()
                .map(|p| (p.expires_at, Deadline::Publication));
            let token = token_ends.then_some((b.token_exp, Deadline::Token));
            publication.into_iter().chain(token)
        });
        registration.into_iter().chain(bindings).min()
    }
}

/// What ends at a deadline: the registration (and with it every binding of the IMPU), or one
/// binding by its publication or its token. The order is the order of ending at equal times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Deadline {
    Registration,
    Publication,
    Token,
}

impl Deadline {
    /// Its tag in a [`TaggedImpu`]: in the same order as the variants.
    fn tag(self) -> u8 {
        match self {
            Deadline::Registration => 0,
            Deadline::Publication => 1,
            Deadline::Token => 2,
        }
    }

    fn from_tag(tag: u8) -> Deadline {
        match tag {
            0 => Deadline::Registration,
            1 => Deadline::Publication,
            _ => Deadline::Token,
        }
    }
}

/// One entry of the deadline index, `(time, what ends, IMPU)`, in 16 bytes: what ends rides in
/// the IMPU handle's spare bits (issue 15: a tuple took 24). Ordered as the tuple: by time, then
/// [`Deadline`], then IMPU; serialized as the tuple.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct DeadlineEntry {
    at: UnixTime,
    deadline_impu: TaggedImpu,
}

impl DeadlineEntry {
    fn new(at: UnixTime, deadline: Deadline, impu: Impu) -> Self {
        DeadlineEntry {
            at,
            deadline_impu: TaggedImpu::new(impu, deadline.tag()),
        }
    }

    fn deadline(&self) -> Deadline {
        Deadline::from_tag(self.deadline_impu.tag())
    }

    fn parts(&self) -> (UnixTime, Deadline, Impu) {
        (self.at, self.deadline(), self.deadline_impu.impu())
    }
}

impl std::fmt::Debug for DeadlineEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.parts(), f)
    }
}

impl Serialize for DeadlineEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.parts().serialize(s)
    }
}

impl<'de> Deserialize<'de> for DeadlineEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (at, deadline, impu) = <(UnixTime, Deadline, Impu)>::deserialize(d)?;
        Ok(DeadlineEntry::new(at, deadline, impu))
    }
}

impl Machine {
    /// An empty machine with `policy`.
    pub fn new(policy: Policy) -> Self {
        Machine {
            policy,
            impus: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            binding_count: 0,
            csks: BTreeMap::new(),
            key_messages: Expiring::new(),
            token_owners: Expiring::new(),
            journal: Journal::default(),
        }
    }

    /// The last durability sequence number issued ([`Output::Persist`]); after
    /// [`Input::Load`], the store's.
    pub fn last_seq(&self) -> Seq {
        self.journal.seq
    }

    /// The durable form of everything this machine holds (what a store would hold after every
    /// [`Output::Persist`] so far): for tests and `store check`.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            seq: self.journal.seq,
            impus: self
                .impus
                .keys()
                .filter_map(|i| Some((i.clone(), self.impu_record(i)?)))
                .collect(),
            csks: self
                .csks
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            token_owners: self
                .token_owners
                .entries
                .iter()
                .map(|(k, (i, t))| (k.clone(), i.clone(), *t))
                .collect(),
            key_messages: self
                .key_messages
                .entries
                .iter()
                .map(|(k, (_, t))| (k.clone(), *t))
                .collect(),
        }
    }

    /// The aggregate of one IMPU: its registration and bindings; `None` when it has neither.
    fn impu_record(&self, impu: &Impu) -> Option<ImpuRecord> {
        let entry = self.impus.get(impu)?;
        Some(ImpuRecord {
            registration: entry.registration.clone(),
            bindings: entry
                .bindings
                .iter()
                .map(|(k, b)| (k.service, k.client_id.clone(), b.clone()))
                .collect(),
        })
    }

    /// The CSKs held, by identifier.
    pub fn csks(&self) -> impl Iterator<Item = (&CskId, &Csk)> {
        self.csks.iter()
    }

    /// The I_MESSAGEs the replay cache holds (RFC 3830 5.4).
    pub fn key_messages(&self) -> impl Iterator<Item = &KeyMessageId> {
        self.key_messages.entries.keys()
    }

    /// Forgets the remembered I_MESSAGEs for which `dead` holds. For the model checker's state
    /// canonicalization only (`model/src/env`): it passes messages that can never reach the
    /// server again, so no decision changes; the server never calls it.
    #[doc(hidden)]
    pub fn forget_key_messages(&mut self, dead: impl Fn(&KeyMessageId) -> bool) {
        let m = &mut self.key_messages;
        m.entries.retain(|k, _| !dead(k));
        m.by_time.retain(|(_, k)| !dead(k));
    }

    /// How many I_MESSAGEs and token owners are remembered (replay protection), for metrics.
    pub fn replay_entries(&self) -> (usize, usize) {
        (self.key_messages.len(), self.token_owners.len())
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The binding table, in key order.
    pub fn bindings(&self) -> impl Iterator<Item = (&BindingKey, &Binding)> {
        self.impus
            .values()
            .flat_map(|e| e.bindings.iter().map(|(k, b)| (k, b)))
    }

    /// The binding for `key`.
    pub fn binding(&self, key: &BindingKey) -> Option<&Binding> {
        let entry = self.impus.get(&key.impu)?;
        let bindings = entry.bindings.as_slice();
        let i = bindings.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&bindings[i].1)
    }

    /// Number of bindings.
    pub fn binding_count(&self) -> usize {
        self.binding_count
    }

    /// The registrations, in IMPU order.
    pub fn registrations(&self) -> impl Iterator<Item = (&Impu, &Registration)> {
        self.impus
            .iter()
            .filter_map(|(i, e)| Some((i, e.registration.as_ref()?)))
    }

    /// Whether `impu` is registered.
    fn is_registered(&self, impu: &Impu) -> bool {
        self.impus
            .get(impu)
            .is_some_and(|e| e.registration.is_some())
    }

    /// The binding whose current publication `etag` names, if any. A scan of the whole table,
    /// for properties and tests; requests look tags up per (IMPU, service) instead.
    pub fn publication_of(&self, etag: &ETag) -> Option<&BindingKey> {
        self.bindings()
            .find(|(_, b)| b.publication.as_ref().is_some_and(|p| p.etag == *etag))
            .map(|(k, _)| k)
    }

    /// When the caller should next send [`Input::Tick`], if ever.
    pub fn next_deadline(&self) -> Option<UnixTime> {
        self.deadlines.first().map(|e| e.at)
    }

    /// Handles one input at `now` and returns its outputs (see the module docs).
    ///
    /// Durability (issue 13): when the input changed anything that must survive a crash, an
    /// [`Output::Persist`] comes just before the response (or last, for inputs without one), and
    /// the response's [`Response::wait_for`] is the latest sequence number issued: the state the
    /// response observed. A refusal waits too, so that nothing a crash can undo is ever seen.
    pub fn handle(&mut self, now: UnixTime, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        self.key_messages.forget_until(now);
        self.token_owners.forget_until(now);
        let response = match input {
            Input::ThirdPartyRegister(r) => Some(self.third_party_register(now, r, &mut out)),
            Input::Publish(p) => Some(self.publish(now, p, &mut out)),
            Input::Tick => {
                self.tick(now, &mut out);
                None
            }
            Input::Restart => {
                self.restart(&mut out);
                None
            }
            Input::Load(snapshot) => {
                self.load(now, *snapshot, &mut out);
                None
            }
            Input::Reload(reload) => {
                self.reload(*reload);
                None
            }
            Input::ProvisionCsk { csk_id, mc_id } => {
                if !self.csks.contains_key(&csk_id) {
                    self.journal.csks.insert(csk_id.clone());
                    self.csks.insert(
                        csk_id,
                        Csk {
                            mc_id,
                            impu: None,
                            provisioned: true,
                        },
                    );
                }
                None
            }
        };
        if !self.journal.is_empty() {
            let persist = self.drain_journal();
            out.push(Output::Persist(persist));
        }
        if let Some(mut r) = response {
            r.wait_for = self.journal.seq;
            out.push(Output::Response(r));
        }
        out
    }

    /// The changes of the input just handled, as one numbered batch.
    fn drain_journal(&mut self) -> Persist {
        self.journal.seq = Seq(self.journal.seq.0 + 1);
        let impus = std::mem::take(&mut self.journal.impus);
        let csks = std::mem::take(&mut self.journal.csks);
        // Sized once: growing it (a realloc per input) left holes in glibc's heap that cost the
        // resident set ≈ 30 B per binding (issue 15).
        let mut changes = Vec::with_capacity(impus.len() + csks.len() + self.journal.replay.len());
        changes.extend(impus.into_iter().map(|impu| Change::Impu {
            record: self.impu_record(&impu),
            impu,
        }));
        changes.extend(csks.into_iter().map(|csk_id| Change::Csk {
            csk: self.csks.get(&csk_id).cloned(),
            csk_id,
        }));
        changes.append(&mut self.journal.replay);
        Persist {
            seq: self.journal.seq,
            changes,
        }
    }

    /// Start-up: the durable state replaces whatever the machine held; every deadline is armed
    /// again, and whatever ran out while the server was down ends now (expiry is the machine's
    /// decision, from the time passed in, never the store's).
    fn load(&mut self, now: UnixTime, snapshot: Snapshot, out: &mut Vec<Output>) {
        let policy = self.policy.clone();
        *self = Machine::new(policy);
        for (impu, record) in snapshot.impus {
            self.put_record(&impu, record);
        }
        self.csks = snapshot.csks.into_iter().collect();
        for (token_id, impu, until) in snapshot.token_owners {
            self.token_owners.insert(token_id, impu, until);
        }
        for (message_id, until) in snapshot.key_messages {
            self.key_messages.insert(message_id, (), until);
        }
        self.key_messages.forget_until(now);
        self.token_owners.forget_until(now);
        // What was loaded is durable already.
        self.journal = Journal {
            seq: snapshot.seq,
            ..Journal::default()
        };
        self.tick(now, out);
    }

    /// Several instances on one store: the listed keys take the store's current value (see
    /// [`Input::Reload`]). Deadlines follow the tables (`put_*`/`take_*`); nothing is journaled,
    /// since what a reload carries is what the store holds.
    fn reload(&mut self, reload: Reload) {
        for (impu, record) in reload.impus {
            self.take_registration(&impu);
            let keys: Vec<BindingKey> = self.bindings_of(&impu).map(|(k, _)| k.clone()).collect();
            for k in keys {
                self.take_binding(&k);
            }
            if let Some(record) = record {
                self.put_record(&impu, record);
            }
        }
        for (csk_id, csk) in reload.csks {
            match csk {
                Some(c) => self.csks.insert(csk_id, c),
                None => self.csks.remove(&csk_id),
            };
        }
        for (token_id, owner) in reload.token_owners {
            self.token_owners.remove(&token_id);
            if let Some((impu, until)) = owner {
                self.token_owners.insert(token_id, impu, until);
            }
        }
        for (message_id, until) in reload.key_messages {
            self.key_messages.remove(&message_id);
            if let Some(until) = until {
                self.key_messages.insert(message_id, (), until);
            }
        }
        self.journal.impus.clear();
    }

    /// Installs one IMPU's stored registration and bindings (start-up and reload), each through
    /// `put_*` so its deadline is armed.
    fn put_record(&mut self, impu: &Impu, record: ImpuRecord) {
        if let Some(r) = record.registration {
            self.put_registration(impu.clone(), r);
        }
        for (service, client_id, b) in record.bindings {
            let key = BindingKey {
                impu: impu.clone(),
                service,
                client_id,
            };
            self.put_binding(key, b);
        }
    }

    // TS 24.229 5.4.1.7 (third-party REGISTER); TS 24.379 7.3.2; dossier R-24.
    fn third_party_register(
        &mut self,
        now: UnixTime,
        r: ThirdPartyRegister,
        out: &mut Vec<Output>,
    ) -> Response {
        if r.target == RegisterTarget::NotOurs {
            return refusal(Outcome::NotOurResource);
        }
        let impu = match trusted(r.impu) {
            Ok(impu) => impu,
            Err(reason) => return refusal(Outcome::Forbidden(reason)),
        };
        let expires = r.expires.unwrap_or(self.policy.default_register_expires);
        if expires == 0 {
            // User or network de-registration: every binding of the IMPU goes (S-3).
            self.take_registration(&impu);
            self.unbind_impu(&impu, |_| true, UnbindCause::Deregistered, out);
            return Response {
                outcome: Outcome::Registered,
                etag: None,
                expires: Some(0),
                wait_for: Seq::ZERO,
            };
        }
        self.put_registration(
            impu.clone(),
            Registration {
                expires_at: now.plus(expires.into()),
                services: r.services,
            },
        );
        if let Some(services) = r.services {
            // TS 24.379 7.1: re-registration without a service's feature tag logs that service off.
            self.unbind_impu(
                &impu,
                |k| !services.contains(k.service),
                UnbindCause::ServiceLogOff,
                out,
            );
        }
        if self.policy.register_token == RegisterToken::Honour {
            // Pre-CR 33.180 5.1.3.2.2 steps 9–11: a token in the UE's REGISTER binds. The S-CSCF
            // answers the UE whatever we decide (dossier Q-2), so a refusal is only logged.
            for (service, auth) in r.embedded {
                if r.services.is_some_and(|s| !s.contains(service)) {
                    continue;
                }
                let key = BindingKey {
                    impu: impu.clone(),
                    service,
                    client_id: auth.client_id.clone(),
                };
                match self.authorize(now, &key, &auth, None) {
                    Ok(grant) => self.bind(now, key, grant, auth.settings, None, out),
                    Err(_) => self.after_refused_token(&key, out),
                }
            }
        }
        Response {
            outcome: Outcome::Registered,
            etag: None,
            expires: Some(expires),
            wait_for: Seq::ZERO,
        }
    }

    /// A PUBLISH, and the replay cache (RFC 3830 5.4): an I_MESSAGE signed by the presented
    /// token's user that reached us through the SIP core fresh is spent whatever the answer, so
    /// that nobody can take over a CSK whose first PUBLISH was refused (the model's attacker
    /// replayed such a PUBLISH whole from its own IMPU and was bound; docs/model-results-wave3.md).
    fn publish(&mut self, now: UnixTime, p: Publish, out: &mut Vec<Output>) -> Response {
        let spent = self.spent_upload(now, &p);
        let response = self.decide_publish(now, p, out);
        if let (Some((id, until)), false) = (spent, response.outcome.is_success()) {
            // Spent is durable like an accepted upload (issue 13): a crash must not make a
            // refused I_MESSAGE usable again.
            self.journal.replay.push(Change::KeyMessage {
                message_id: id.clone(),
                until,
            });
            self.key_messages.insert(id, (), until);
        }
        response
    }

    /// The I_MESSAGE of `p` that its delivery spends (see [`Machine::publish`]), and until when
    /// it must be remembered.
    fn spent_upload(&self, now: UnixTime, p: &Publish) -> Option<(KeyMessageId, UnixTime)> {
        let (
            AssertedIdentity::Trusted(_),
            PublishTarget::Service(service),
            Some(KeyUpload::Verified {
                message_id,
                sent_at,
                signer: Some(signer),
                ..
            }),
            PublishBody::Authorization(Authorization {
                token: TokenVerdict::Verified(claims),
                ..
            }),
        ) = (&p.impu, &p.target, p.key_upload.as_deref(), &p.body)
        else {
            return None;
        };
        let fresh = now.0.abs_diff(sent_at.0) <= self.policy.key_upload_skew_secs;
        (fresh && claims.mc_id(*service) == Some(signer)).then(|| {
            (
                message_id.clone(),
                sent_at.plus(self.policy.key_upload_skew_secs),
            )
        })
    }

    // RFC 3903 section 6 steps 1–6, with TS 24.379 7.3.3 (authorization), 7.3.4 (settings only)
    // and 7.3.5 (removal) deciding what the body means.
    fn decide_publish(&mut self, now: UnixTime, p: Publish, out: &mut Vec<Output>) -> Response {
        // RFC 3903 step 1.
        let service = match p.target {
            PublishTarget::Service(s) => s,
            PublishTarget::NotOurs => return refusal(Outcome::NotOurResource),
            PublishTarget::AmbiguousPsi => {
                return refusal(Outcome::BadRequest(BadRequest::AmbiguousPsi))
            }
        };
        // RFC 3903 step 2.
        if p.event != EventPackage::PocSettings {
            return refusal(Outcome::BadEvent);
        }
        // TS 24.379 7.3.3 step 1: the IMPU is P-Asserted-Identity, from a trusted hop only (S-2).
        let impu = match trusted(p.impu) {
            Ok(impu) => impu,
            Err(reason) => return refusal(Outcome::Forbidden(reason)),
        };
        // RFC 3903 step 3: the entity-tag must name a current publication of this resource,
        // which for us is (IMPU, service) (dossier Q-14). This comes before any registration
        // check, so that after a restart a refresh gets 412 and the client re-publishes.
        let target = match p.if_match {
            IfMatch::Absent => None,
            IfMatch::Many => return refusal(Outcome::BadRequest(BadRequest::ManyEntityTags)),
            IfMatch::One(tag) => match self.current_publication(&impu, service, &tag) {
                Some(k) => Some(k.clone()),
                None => return refusal(Outcome::ConditionalRequestFailed),
            },
        };
        // RFC 3903 step 4.
        let expires = match p.expires {
            None => self.policy.default_expires.min(self.policy.max_expires),
            Some(0) => 0,
            Some(e) if e < self.policy.min_expires => {
                return refusal(Outcome::IntervalTooBrief {
                    min_expires: self.policy.min_expires,
                })
            }
            Some(e) => e.min(self.policy.max_expires),
        };
        // RFC 3903 step 5.
        let (client_id, body) = match p.body {
            PublishBody::UnsupportedMediaType => return refusal(Outcome::UnsupportedMediaType),
            PublishBody::Malformed(why) => {
                return refusal(Outcome::BadRequest(BadRequest::Body(why)))
            }
            PublishBody::Empty => {
                let Some(key) = target else {
                    return refusal(Outcome::BadRequest(BadRequest::NoBodyNoEntityTag));
                };
                if expires == 0 {
                    return self.remove_publication(&key, out);
                }
                let publication = Publication {
                    etag: p.fresh_etag,
                    expires_at: now.plus(expires.into()),
                };
                self.republish(&key, publication.clone(), None);
                return success(Outcome::Refreshed, publication.etag, expires);
            }
            PublishBody::Authorization(a) => (a.client_id.clone(), Body::Authorization(a)),
            PublishBody::SettingsOnly {
                claimed_mc_id,
                client_id,
                settings,
            } => (
                client_id,
                Body::SettingsOnly {
                    claimed_mc_id,
                    settings,
                },
            ),
        };
        let key = BindingKey {
            impu,
            service,
            client_id,
        };
        if target.as_ref().is_some_and(|t| *t != key) {
            // The entity-tag names another client's publication.
            return refusal(Outcome::ConditionalRequestFailed);
        }
        if expires == 0 {
            // TS 24.379 7.3.5: MC service log-off of this client.
            return self.remove_publication(&key, out);
        }
        let publication = Publication {
            etag: p.fresh_etag,
            expires_at: now.plus(expires.into()),
        };
        match body {
            Body::Authorization(a) => {
                // S-3, our policy: a token binds only an IMPU the SIP core registered here.
                if self.policy.registration_required && !self.is_registered(&key.impu) {
                    return refusal(Outcome::Forbidden(ForbiddenReason::NotRegistered));
                }
                match self.authorize(now, &key, &a, p.key_upload.as_deref()) {
                    Ok(grant) => {
                        let etag = publication.etag.clone();
                        self.bind(now, key, grant, a.settings, Some(publication), out);
                        success(Outcome::Authorized, etag, expires)
                    }
                    // TS 24.379 7.3.3 step 6: 403 with "101 service authorisation failed".
                    Err(reason) => self.refuse_token(&key, reason, out),
                }
            }
            Body::SettingsOnly {
                claimed_mc_id,
                settings,
            } => {
                // TS 24.379 7.3.4: settings only for a client already bound to the MC service ID
                // it names; never binds or rebinds (S-6).
                match self.binding(&key) {
                    Some(b) if b.mc_id == claimed_mc_id => {
                        let etag = publication.etag.clone();
                        self.republish(&key, publication, settings);
                        success(Outcome::SettingsUpdated, etag, expires)
                    }
                    _ => refusal(Outcome::UserUnknown),
                }
            }
        }
    }

    /// Ends everything whose deadline has come, earliest first; at equal times registrations go
    /// before publications, and publications before tokens, each kind in key order.
    ///
    /// The index holds each IMPU's earliest deadline only; ending one thing re-arms the IMPU
    /// with its next (`take_*`), so the order is the same as with one index entry per deadline.
    fn tick(&mut self, now: UnixTime, out: &mut Vec<Output>) {
        while let Some((t, deadline, impu)) = self
            .deadlines
            .first()
            .filter(|e| e.at <= now)
            .map(DeadlineEntry::parts)
        {
            let cause = match deadline {
                Deadline::Registration => {
                    self.take_registration(&impu);
                    self.unbind_impu(&impu, |_| true, UnbindCause::RegistrationExpired, out);
                    continue;
                }
                Deadline::Publication => UnbindCause::PublicationExpired,
                Deadline::Token => UnbindCause::TokenExpired,
            };
            let due = self
                .bindings_of(&impu)
                .find(|(_, b)| match deadline {
                    Deadline::Publication => {
                        b.publication.as_ref().is_some_and(|p| p.expires_at == t)
                    }
                    _ => b.token_exp == t,
                })
                .map(|(k, _)| k.clone());
            match due {
                Some(key) => self.unbind(&key, cause, out),
                // Unreachable while `put_*`/`take_*` keep the index in step; never loop on it.
                None => {
                    self.deadlines
                        .remove(&DeadlineEntry::new(t, deadline, impu));
                }
            }
        }
    }

    fn restart(&mut self, out: &mut Vec<Output>) {
        // A lab restart loses what a crash without a store would: the store forgets it too.
        let impus = std::mem::take(&mut self.impus);
        self.journal.impus.extend(impus.keys().cloned());
        if self.key_messages.len() + self.token_owners.len() > 0 {
            self.journal.replay.push(Change::ClearReplay);
        }
        for (key, b) in impus.into_values().flat_map(|e| e.bindings.into_vec(0)) {
            out.push(Output::Binding(BindingEvent::Unbound {
                key,
                mc_id: b.mc_id,
                cause: UnbindCause::Restart,
            }));
        }
        self.deadlines.clear();
        self.binding_count = 0;
        self.key_messages.clear();
        self.token_owners.clear();
        // A lab restart (`Input::Restart`, volatile state lost) ends the uploaded CSKs with the
        // bindings; provisioned ones are configuration.
        let dropped: Vec<CskId> = self
            .csks
            .iter()
            .filter(|(_, c)| !c.provisioned)
            .map(|(id, _)| id.clone())
            .collect();
        for csk_id in dropped {
            self.drop_csk(csk_id, CskDropCause::Restart, out);
        }
    }

    /// The whole service-authorization decision on a presented token, in the order a reviewer
    /// can follow: the CSK upload's freshness and novelty (RFC 3830 5.4), the token itself
    /// ([`Machine::check_token`]), who signed the upload and which CSK opened the token
    /// (TS 33.180 5.4), and the device limit. Changes nothing.
    fn authorize(
        &self,
        now: UnixTime,
        key: &BindingKey,
        a: &Authorization,
        upload: Option<&KeyUpload>,
    ) -> Result<Grant, TokenRejection> {
        let upload = match upload {
            None => None,
            Some(KeyUpload::Rejected(_)) => return Err(TokenRejection::KeyUploadRefused),
            Some(KeyUpload::Verified {
                csk_id,
                message_id,
                sent_at,
                signer,
            }) => {
                if now.0.abs_diff(sent_at.0) > self.policy.key_upload_skew_secs {
                    return Err(TokenRejection::KeyUploadStale);
                }
                if self.key_messages.get(message_id, now).is_some() {
                    return Err(TokenRejection::KeyUploadReplayed);
                }
                Some((csk_id, message_id, *sent_at, signer))
            }
        };
        let mut grant = self.check_token(now, key.service, &key.impu, a)?;
        if let Some((csk_id, message_id, sent_at, signer)) = upload {
            // TS 33.180 5.4 and dossier Q-6 (a): the CSK's signer is the token's user.
            if signer.as_ref() != Some(&grant.mc_id) {
                return Err(TokenRejection::KeyUploadWrongSigner);
            }
            // A CSK-ID already tied to someone else is not taken over.
            if self.csks.contains_key(csk_id) {
                self.check_csk_tie(csk_id, &key.impu, &grant.mc_id)?;
            }
            grant.upload = Some(AcceptedUpload {
                csk_id: csk_id.clone(),
                message_id: message_id.clone(),
                until: sent_at.plus(self.policy.key_upload_skew_secs),
            });
        }
        if let Protection::Csk(csk_id) = &a.protection {
            let uploaded_here = grant.upload.as_ref().is_some_and(|u| u.csk_id == *csk_id);
            if !uploaded_here {
                self.check_csk_tie(csk_id, &key.impu, &grant.mc_id)?;
            }
        }
        self.check_device_limit(key, &grant.mc_id)?;
        Ok(grant)
    }

    /// TS 33.180 5.4: a CSK opens tokens only of its own user, from its own IMPU.
    fn check_csk_tie(
        &self,
        csk_id: &CskId,
        impu: &Impu,
        mc_id: &McId,
    ) -> Result<(), TokenRejection> {
        let Some(csk) = self.csks.get(csk_id) else {
            return Err(TokenRejection::UnknownCsk);
        };
        if self.policy.csk_tie == CskTie::Ignored {
            return Ok(());
        }
        if csk.mc_id != *mc_id {
            return Err(TokenRejection::CskOtherUser);
        }
        if csk.impu.as_ref().is_some_and(|i| i != impu) {
            return Err(TokenRejection::CskOtherImpu);
        }
        Ok(())
    }

    /// The service-authorization decision on a presented token (TS 24.379 7.3.3 steps 2–3,
    /// TS 33.180 B.10/B.11): protection, verdict, scope, MC service ID claim — in that order.
    /// TS 33.180 B.10/B.11 and the replay window: protection as the policy wants it, the
    /// validator's verdict, scope, the MC service ID claim, and whether the token is bound for
    /// another IMPU within the window — in that order.
    fn check_token(
        &self,
        now: UnixTime,
        service: Service,
        impu: &Impu,
        a: &Authorization,
    ) -> Result<Grant, TokenRejection> {
        match (self.policy.token_protection, &a.protection) {
            (_, Protection::Failed(_)) | (TokenProtection::Off, Protection::Csk(_)) => {
                return Err(TokenRejection::BadProtection)
            }
            (TokenProtection::Required, Protection::Clear) => {
                return Err(TokenRejection::Unprotected)
            }
            _ => {}
        }
        let claims = match &a.token {
            TokenVerdict::Verified(c) => c,
            TokenVerdict::Rejected(r) => return Err(*r),
        };
        if !claims.scopes.contains(service) {
            return Err(TokenRejection::MissingScope);
        }
        let mc_id = claims.mc_id(service).ok_or(TokenRejection::MissingMcId)?;
        if self
            .token_owners
            .get(&claims.token_id, now)
            .is_some_and(|owner| owner != impu)
        {
            return Err(TokenRejection::Replayed);
        }
        Ok(Grant {
            mc_id: mc_id.clone(),
            token_id: claims.token_id.clone(),
            token_exp: claims.exp,
            csk: match &a.protection {
                Protection::Csk(id) => Some(id.clone()),
                _ => None,
            },
            upload: None,
        })
    }

    /// refuse a new client beyond the per-MC-service-ID device limit.
    fn check_device_limit(&self, key: &BindingKey, mc_id: &McId) -> Result<(), TokenRejection> {
        let Some(max) = self.policy.max_devices_per_mc_id else {
            return Ok(());
        };
        let others = self
            .bindings()
            .filter(|(k, b)| k.service == key.service && *k != key && b.mc_id == *mc_id)
            .count();
        if others as u64 >= u64::from(max) {
            Err(TokenRejection::DeviceLimit)
        } else {
            Ok(())
        }
    }

    fn refuse_token(
        &mut self,
        key: &BindingKey,
        reason: TokenRejection,
        out: &mut Vec<Output>,
    ) -> Response {
        self.after_refused_token(key, out);
        refusal(Outcome::ServiceAuthorisationFailed(reason))
    }

    /// with `failed_reauthorization = drop-binding` a refused token also ends the client's
    /// binding (this breaks RFC 3903 atomicity, which the model shows).
    fn after_refused_token(&mut self, key: &BindingKey, out: &mut Vec<Output>) {
        if self.policy.failed_reauthorization == FailedReauthorization::DropBinding {
            self.unbind(key, UnbindCause::FailedReauthorization, out);
        }
    }

    /// Commits a granted authorization: bind, rebind (user switch) or re-authorize.
    fn bind(
        &mut self,
        now: UnixTime,
        key: BindingKey,
        grant: Grant,
        settings: Option<Settings>,
        publication: Option<Publication>,
        out: &mut Vec<Output>,
    ) {
        if self.policy.impu_change == ImpuChange::MoveBinding {
            let moved: Vec<BindingKey> = self
                .bindings()
                .map(|(k, _)| k)
                .filter(|k| {
                    k.service == key.service && k.client_id == key.client_id && k.impu != key.impu
                })
                .cloned()
                .collect();
            for k in moved {
                self.unbind(&k, UnbindCause::MovedToNewImpu, out);
            }
        }
        if self.policy.replay_window_secs > 0 {
            let until = now
                .plus(self.policy.replay_window_secs)
                .min(grant.token_exp);
            self.token_owners
                .insert(grant.token_id.clone(), key.impu.clone(), until);
            self.journal.replay.push(Change::TokenOwner {
                token_id: grant.token_id.clone(),
                impu: key.impu.clone(),
                until,
            });
        }
        let previous = self.binding(&key);
        let previous_mc_id = previous.map(|old| old.mc_id.clone());
        let switched_from = previous
            .filter(|old| old.mc_id != grant.mc_id)
            .map(|old| old.mc_id.clone());
        let (event, settings, publication) = match previous {
            None => (
                Some(BindingEvent::Bound {
                    key: key.clone(),
                    mc_id: grant.mc_id.clone(),
                }),
                settings,
                publication,
            ),
            // Same user re-presents a token: keep what the new request does not replace.
            Some(old) if old.mc_id == grant.mc_id => (
                None,
                settings.or(old.settings),
                publication.or_else(|| old.publication.clone()),
            ),
            // User switch (CR 5.1.3.2.1; dossier Q-10): nothing of the old user survives (S-5),
            // not even its publication: after a switch by a REGISTER-borne token the old user's
            // SIP-ETag no longer names anything (412).
            Some(old) => (
                Some(BindingEvent::Rebound {
                    key: key.clone(),
                    from: old.mc_id.clone(),
                    to: grant.mc_id.clone(),
                }),
                settings,
                publication,
            ),
        };
        let mc_id = self.shared_mc_id(previous_mc_id, grant.mc_id, grant.csk.as_ref());
        // The CSK ties below share the table's copy of the IMPU.
        let impu = self.put_binding(
            key,
            Binding {
                mc_id: mc_id.clone(),
                token_id: grant.token_id,
                token_exp: grant.token_exp,
                authorized_at: now,
                publication,
                settings,
            },
        );
        if let Some(e) = event {
            out.push(Output::Binding(e));
        }
        if let Some(old) = switched_from {
            // CR 5.1.3.2.1 user switch: the old user's CSKs on this IMPU go with it.
            self.release_csks(&impu, &old, CskDropCause::UserSwitch, out);
        }
        if let Some(u) = grant.upload {
            // TS 33.180 5.4: the uploaded CSK is now tied to (IMPU, MC service ID); it replaces
            // an older upload of the same pair.
            let older: Vec<CskId> = self
                .csks
                .iter()
                .filter(|(id, c)| {
                    **id != u.csk_id
                        && !c.provisioned
                        && c.mc_id == mc_id
                        && c.impu.as_ref() == Some(&impu)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in older {
                self.drop_csk(id, CskDropCause::Replaced, out);
            }
            self.journal.replay.push(Change::KeyMessage {
                message_id: u.message_id.clone(),
                until: u.until,
            });
            self.key_messages.insert(u.message_id, (), u.until);
            self.journal.csks.insert(u.csk_id.clone());
            self.csks.insert(
                u.csk_id.clone(),
                Csk {
                    mc_id: mc_id.clone(),
                    impu: Some(impu.clone()),
                    provisioned: false,
                },
            );
            out.push(Output::Csk(CskEvent::Accepted {
                csk_id: u.csk_id,
                impu,
                mc_id,
            }));
        } else if let Some(csk_id) = grant.csk {
            // A provisioned CSK is tied to the IMPU of its first use.
            if let Some(c) = self.csks.get_mut(&csk_id) {
                if c.impu.is_none() {
                    c.impu = Some(impu);
                    self.journal.csks.insert(csk_id);
                }
            }
        }
    }

    /// `mc_id` as a copy the machine already holds, when it holds one: the CSK that opened the
    /// token, or the binding being re-authorized. Equal content, one string per user instead of
    /// one per table that names it (issue 15: memory per binding).
    fn shared_mc_id(&self, previous: Option<McId>, mc_id: McId, csk: Option<&CskId>) -> McId {
        if let Some(c) = csk
            .and_then(|id| self.csks.get(id))
            .filter(|c| c.mc_id == mc_id)
        {
            return c.mc_id.clone();
        }
        match previous {
            Some(p) if p == mc_id => p,
            _ => mc_id,
        }
    }

    /// Drops the CSKs tied to (`impu`, `mc_id`) once no binding of that pair is left: uploaded
    /// ones always, provisioned ones only on a user switch (they stand for a device).
    fn release_csks(
        &mut self,
        impu: &Impu,
        mc_id: &McId,
        cause: CskDropCause,
        out: &mut Vec<Output>,
    ) {
        if self.csks.is_empty() || self.bindings_of(impu).any(|(_, b)| b.mc_id == *mc_id) {
            return;
        }
        let gone: Vec<CskId> = self
            .csks
            .iter()
            .filter(|(_, c)| {
                c.mc_id == *mc_id
                    && c.impu.as_ref() == Some(impu)
                    && (!c.provisioned || cause == CskDropCause::UserSwitch)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.drop_csk(id, cause, out);
        }
    }

    fn drop_csk(&mut self, csk_id: CskId, cause: CskDropCause, out: &mut Vec<Output>) {
        if self.csks.remove(&csk_id).is_some() {
            self.journal.csks.insert(csk_id.clone());
            out.push(Output::Csk(CskEvent::Dropped { csk_id, cause }));
        }
    }

    /// A new entity-tag and expiry for an existing binding's publication (refresh or modify).
    fn republish(
        &mut self,
        key: &BindingKey,
        publication: Publication,
        settings: Option<Settings>,
    ) {
        if let Some(mut b) = self.take_binding(key) {
            b.publication = Some(publication);
            if settings.is_some() {
                b.settings = settings;
            }
            self.put_binding(key.clone(), b);
        }
    }

    fn remove_publication(&mut self, key: &BindingKey, out: &mut Vec<Output>) -> Response {
        self.unbind(key, UnbindCause::PublicationRemoved, out);
        Response {
            outcome: Outcome::Removed,
            etag: None,
            expires: Some(0),
            wait_for: Seq::ZERO,
        }
    }

    fn unbind(&mut self, key: &BindingKey, cause: UnbindCause, out: &mut Vec<Output>) {
        if let Some(b) = self.take_binding(key) {
            out.push(Output::Binding(BindingEvent::Unbound {
                key: key.clone(),
                mc_id: b.mc_id.clone(),
                cause,
            }));
            self.release_csks(&key.impu, &b.mc_id, CskDropCause::NoBindingLeft, out);
        }
    }

    fn unbind_impu(
        &mut self,
        impu: &Impu,
        which: impl Fn(&BindingKey) -> bool,
        cause: UnbindCause,
        out: &mut Vec<Output>,
    ) {
        let keys: Vec<BindingKey> = self
            .bindings_of(impu)
            .map(|(k, _)| k)
            .filter(|k| which(k))
            .cloned()
            .collect();
        for k in keys {
            self.unbind(&k, cause, out);
        }
    }

    /// RFC 3903 step 3: the binding of (IMPU, service) whose current entity-tag is `tag`. The
    /// bindings of one IMPU sit in its own entry, so this scans only that IMPU's clients.
    fn current_publication<'a>(
        &'a self,
        impu: &'a Impu,
        service: Service,
        tag: &ETag,
    ) -> Option<&'a BindingKey> {
        self.bindings_of(impu)
            .find(|(k, b)| {
                k.service == service && b.publication.as_ref().is_some_and(|p| p.etag == *tag)
            })
            .map(|(k, _)| k)
    }

    fn bindings_of<'a>(
        &'a self,
        impu: &Impu,
    ) -> impl Iterator<Item = (&'a BindingKey, &'a Binding)> + 'a {
        self.impus
            .get(impu)
            .into_iter()
            .flat_map(|e| e.bindings.iter().map(|(k, b)| (k, b)))
    }

    /// Changes `impu`'s entry by `change` (given the table's own copy of the IMPU, which keys
    /// and deadlines share instead of holding each its own string) and keeps the deadline index
    /// in step: one look-up of the entry, and the index is touched only when the entry's
    /// earliest deadline moves. An entry left holding nothing is removed. Without `create`, an
    /// IMPU without an entry is left alone and `None` returned.
    fn change_entry<R>(
        &mut self,
        impu: &Impu,
        create: bool,
        change: impl FnOnce(&Impu, &mut ImpuEntry) -> R,
    ) -> Option<R> {
        let token_ends = self.policy.token_expiry == TokenExpiry::EndBinding;
        let mut entry = match self.impus.entry(impu.clone()) {
            btree_map::Entry::Occupied(o) => o,
            btree_map::Entry::Vacant(v) if create => {
                v.insert(ImpuEntry::default());
                match self.impus.entry(impu.clone()) {
                    btree_map::Entry::Occupied(o) => o,
                    btree_map::Entry::Vacant(_) => return None,
                }
            }
            btree_map::Entry::Vacant(_) => return None,
        };
        let stored = entry.key().clone();
        let before = entry.get().next_deadline(token_ends);
        let result = change(&stored, entry.get_mut());
        let after = entry.get().next_deadline(token_ends);
        if entry.get().is_empty() {
            entry.remove();
        }
        if before != after {
            if let Some((t, d)) = before {
                self.deadlines
                    .remove(&DeadlineEntry::new(t, d, stored.clone()));
            }
            if let Some((t, d)) = after {
                self.deadlines.insert(DeadlineEntry::new(t, d, stored));
            }
        }
        Some(result)
    }

    /// Puts a binding under its IMPU's entry (creating it) and returns the table's copy of the
    /// IMPU.
    fn put_binding(&mut self, mut key: BindingKey, b: Binding) -> Impu {
        self.journal.impus.insert(key.impu.clone());
        let impu = key.impu.clone();
        let mut added = false;
        let stored = self.change_entry(&impu, true, |stored, entry| {
            key.impu = stored.clone();
            match entry
                .bindings
                .as_slice()
                .binary_search_by(|(k, _)| k.cmp(&key))
            {
                Ok(i) => entry.bindings.as_mut_slice()[i] = (key, b),
                Err(i) => {
                    let mut bindings = std::mem::take(&mut entry.bindings).into_vec(1);
                    bindings.insert(i, (key, b));
                    entry.bindings = ThinSlice::from_vec(bindings);
                    added = true;
                }
            }
            stored.clone()
        });
        if added {
            self.binding_count += 1;
        }
        stored.unwrap_or(impu)
    }

    fn take_binding(&mut self, key: &BindingKey) -> Option<Binding> {
        let taken = self
            .change_entry(&key.impu, false, |_, entry| {
                let i = entry
                    .bindings
                    .as_slice()
                    .binary_search_by(|(k, _)| k.cmp(key))
                    .ok()?;
                let mut bindings = std::mem::take(&mut entry.bindings).into_vec(0);
                let (_, b) = bindings.remove(i);
                entry.bindings = ThinSlice::from_vec(bindings);
                Some(b)
            })
            .flatten()?;
        self.journal.impus.insert(key.impu.clone());
        self.binding_count -= 1;
        Some(taken)
    }

    fn put_registration(&mut self, impu: Impu, r: Registration) {
        self.journal.impus.insert(impu.clone());
        self.change_entry(&impu, true, |_, entry| entry.registration = Some(r));
    }

    fn take_registration(&mut self, impu: &Impu) -> Option<Registration> {
        let taken = self
            .change_entry(impu, false, |_, entry| entry.registration.take())
            .flatten()?;
        self.journal.impus.insert(impu.clone());
        Some(taken)
    }
}

/// What a verified, correctly scoped token grants.
struct Grant {
    mc_id: McId,
    token_id: TokenId,
    token_exp: UnixTime,
    /// The CSK that opened the token, if it came protected.
    csk: Option<CskId>,
    /// The CSK upload to commit along with the binding.
    upload: Option<AcceptedUpload>,
}

/// A verified, fresh, never-seen I_MESSAGE signed by the token's user.
struct AcceptedUpload {
    csk_id: CskId,
    message_id: KeyMessageId,
    /// Until when the message must be remembered: after that it is stale anyway.
    until: UnixTime,
}

enum Body {
    Authorization(Authorization),
    SettingsOnly {
        claimed_mc_id: McId,
        settings: Option<Settings>,
    },
}

fn trusted(identity: AssertedIdentity) -> Result<Impu, ForbiddenReason> {
    match identity {
        AssertedIdentity::Trusted(impu) => Ok(impu),
        AssertedIdentity::Untrusted => Err(ForbiddenReason::UntrustedSource),
        AssertedIdentity::Missing => Err(ForbiddenReason::NoAssertedIdentity),
    }
}

fn refusal(outcome: Outcome) -> Response {
    Response {
        outcome,
        etag: None,
        expires: None,
        wait_for: Seq::ZERO,
    }
}

fn success(outcome: Outcome, etag: ETag, expires: u32) -> Response {
    Response {
        outcome,
        etag: Some(etag),
        expires: Some(expires),
        wait_for: Seq::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiring_entry_lapses_at_its_time_and_is_forgotten_from_then() {
        // The replay tables (token owners, I_MESSAGEs): an entry is in force while its time is
        // still ahead, and `forget_until(t)` drops everything whose time is `t` or earlier.
        let mut e: Expiring<u32, &str> = Expiring::new();
        e.insert(1, "a", UnixTime(10));
        e.insert(2, "b", UnixTime(20));
        assert_eq!(e.get(&1, UnixTime(9)), Some(&"a"));
        assert_eq!(e.get(&1, UnixTime(10)), None, "lapsed at its time");
        e.forget_until(UnixTime(9));
        assert_eq!(e.len(), 2);
        e.forget_until(UnixTime(10));
        assert_eq!(e.len(), 1);
        assert_eq!(e.by_time.len(), 1);
        // A new time replaces the old one in the index too.
        e.insert(2, "c", UnixTime(30));
        assert_eq!(e.by_time.len(), 1);
        e.forget_until(UnixTime(25));
        assert_eq!(e.get(&2, UnixTime(25)), Some(&"c"));
        e.remove(&2);
        assert_eq!((e.len(), e.by_time.len()), (0, 0));
        e.insert(3, "d", UnixTime(40));
        e.insert(4, "e", UnixTime(50));
        e.clear();
        assert_eq!((e.len(), e.by_time.len()), (0, 0));
    }

    #[test]
    fn a_deadline_entry_orders_and_serializes_as_its_tuple() {
        let impus = [
            "sip:a@example.org",
            "sip:b@example.org",
            "sip:ab@example.org",
        ];
        let kinds = [
            Deadline::Registration,
            Deadline::Publication,
            Deadline::Token,
        ];
        let mut tuples = Vec::new();
        for t in [0, 7, u64::MAX] {
            for d in kinds {
                for i in impus {
                    tuples.push((UnixTime(t), d, Impu::new(i)));
                }
            }
        }
        let entries: Vec<DeadlineEntry> = tuples
            .iter()
            .map(|(t, d, i)| DeadlineEntry::new(*t, *d, i.clone()))
            .collect();
        for (a, ta) in entries.iter().zip(&tuples) {
            assert_eq!(a.parts(), *ta);
            assert_eq!(
                serde_json::to_string(a).unwrap(),
                serde_json::to_string(ta).unwrap()
            );
            let back: DeadlineEntry =
                serde_json::from_str(&serde_json::to_string(a).unwrap()).unwrap();
            assert_eq!(back, *a);
            assert_eq!(format!("{a:?}"), format!("{ta:?}"));
            for (b, tb) in entries.iter().zip(&tuples) {
                assert_eq!(a.cmp(b), ta.cmp(tb), "{ta:?} against {tb:?}");
                assert_eq!(a == b, ta == tb);
            }
        }
    }

    #[test]
    fn the_tables_entries_keep_their_sizes() {
        // The memory budget per binding (issue 15: ≤ 512 B at 10^6, docs/benchmarks.md) rests on
        // these sizes; a field added to one of them shows here before it shows in the bench.
        use std::mem::size_of;
        assert_eq!(size_of::<Impu>(), 8);
        assert_eq!(size_of::<CskId>(), 16);
        assert_eq!(size_of::<DeadlineEntry>(), 16);
        assert_eq!(size_of::<ImpuEntry>(), 24);
        assert_eq!(size_of::<Csk>(), 24);
        assert_eq!(size_of::<(BindingKey, Binding)>(), 96);
    }
}
