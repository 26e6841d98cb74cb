//! The server's shared state: the machine, and what the runtime keeps beside it (clock offset,
//! entity-tag source, UDP transaction cache, counters). One `Mutex` guards it; token signature
//! checks happen before the lock is taken, so the lock is held only for the machine's step.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcx_model::{
    BindingEvent, CskEvent, ETag, Input, Machine, Output, Policy, Response, Seq, UnixTime,
};
use rand::Rng;

/// The clock the machine and the validator are given: real time plus an offset that only the
/// admin view's clock control (off by default) can move forward, or — for conformance tests and
/// scripted lab runs — a manual clock that stands still until moved.
#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: u64,
    manual: Option<u64>,
}

impl Clock {
    /// A clock frozen at `start`, moved only by [`Clock::advance`].
    pub fn manual(start: UnixTime) -> Self {
        Clock {
            offset_secs: 0,
            manual: Some(start.0),
        }
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> UnixTime {
        if let Some(t) = self.manual {
            return UnixTime(t);
        }
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        UnixTime(real + self.offset_secs)
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&mut self, secs: u64) {
        match &mut self.manual {
            Some(t) => *t = t.saturating_add(secs),
            None => self.offset_secs = self.offset_secs.saturating_add(secs),
        }
    }
}

/// Entity-tags that are never reused (RFC 3903 step 6): a random per-process prefix and a
/// counter, so tags stay unique across restarts too. The prefix is 48 random bits (12 hex
/// digits), so that a tag fits the machine's inline identifiers (23 bytes) for the first 2^40
/// tags; a longer one is still valid, only held on the heap (issue 15: memory per binding).
#[derive(Debug)]
pub struct EtagSource {
    prefix: String,
    next: u64,
}

impl EtagSource {
    /// A source with a fresh random prefix.
    pub fn new() -> Self {
        let prefix: u64 = rand::rng().random::<u64>() >> 16;
        EtagSource {
            prefix: format!("{prefix:012x}"),
            next: 0,
        }
    }

    /// The next tag.
    pub fn fresh(&mut self) -> ETag {
        self.next += 1;
        ETag::new(format!("{}.{:x}", self.prefix, self.next))
    }
}

impl Default for EtagSource {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 3261 17.2.2: a retransmitted non-INVITE request gets the same response again and does not
/// reach the machine a second time. Keyed by the top Via branch, sent-by and CSeq method;
/// entries live 32 s (64·T1, Timer J). The table is bounded twice: by entry count and by bytes
/// (keys and cached responses), the oldest entry going first.
#[derive(Debug)]
pub struct TransactionCache {
    entries: HashMap<TxKey, Entry>,
    /// Sequence number → (start, key): the eviction and expiry order. An entry that is forgotten
    /// early ([`TransactionCache::abandon`]) leaves this order too.
    order: BTreeMap<u64, (Instant, TxKey)>,
    next_seq: u64,
    bytes: usize,
    capacity: usize,
    max_bytes: usize,
    evictions: u64,
}

/// A server transaction's name (RFC 3261 17.2.3: top Via branch, sent-by, method, and the
/// source address) as the first 128 bits of its SHA-256: fixed size, so the hot path keeps no
/// per-request string for it (issue 15), and collision-resistant, so no sender can make its
/// request pass for another's retransmission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxKey(u128);

impl TxKey {
    /// The key of these name parts (each length-prefixed, so no two part lists collide).
    pub fn new(parts: &[&[u8]]) -> TxKey {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        TxKey(u128::from_be_bytes(b))
    }
}

impl From<&str> for TxKey {
    fn from(name: &str) -> TxKey {
        TxKey::new(&[name.as_bytes()])
    }
}

impl From<&String> for TxKey {
    fn from(name: &String) -> TxKey {
        TxKey::from(name.as_str())
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    state: CachedTransaction,
}

#[derive(Debug)]
enum CachedTransaction {
    /// Being processed: a retransmission arriving now is absorbed.
    Proceeding,
    /// Answered: a retransmission gets these bytes again, once the state they answer for is
    /// durable (issue 13).
    Completed(Vec<u8>, Seq),
}

/// What to do with a request, according to the transaction cache.
#[derive(Debug, PartialEq, Eq)]
pub enum TransactionState {
    /// A new transaction: process it.
    New,
    /// A retransmission of a request still being processed: drop it.
    Absorb,
    /// A retransmission of an answered request: send this again once `Seq` is durable.
    Retransmit(Vec<u8>, Seq),
}

const TIMER_J: Duration = Duration::from_secs(32);

/// Bytes an entry costs beyond its response: the key (twice: map and order), the map slot, the
/// order node and the `Instant`, roughly.
const ENTRY_OVERHEAD: usize = 96 + 2 * std::mem::size_of::<TxKey>();

fn entry_cost(response: usize) -> usize {
    response + ENTRY_OVERHEAD
}

impl TransactionCache {
    /// A cache holding at most `capacity` transactions and about `max_bytes` bytes.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        TransactionCache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            evictions: 0,
        }
    }

    /// Looks `key` up; a new key is recorded as proceeding.
    pub fn begin(&mut self, key: impl Into<TxKey>, now: Instant) -> TransactionState {
        let key = key.into();
        self.expire(now);
        match self.entries.get(&key).map(|e| &e.state) {
            Some(CachedTransaction::Proceeding) => TransactionState::Absorb,
            Some(CachedTransaction::Completed(bytes, seq)) => {
                TransactionState::Retransmit(bytes.clone(), *seq)
            }
            None => {
                let cost = entry_cost(0);
                self.make_room(cost);
                let seq = self.next_seq;
                self.next_seq += 1;
                self.entries.insert(
                    key,
                    Entry {
                        seq,
                        state: CachedTransaction::Proceeding,
                    },
                );
                self.order.insert(seq, (now, key));
                self.bytes += cost;
                TransactionState::New
            }
        }
    }

    /// Records the final response of `key`, to be sent once `wait_for` is durable.
    pub fn complete(&mut self, key: impl Into<TxKey>, response: &[u8], wait_for: Seq) {
        let Some(e) = self.entries.get_mut(&key.into()) else {
            return;
        };
        let old = match &e.state {
            CachedTransaction::Completed(b, _) => b.len(),
            CachedTransaction::Proceeding => 0,
        };
        e.state = CachedTransaction::Completed(response.to_vec(), wait_for);
        self.bytes = self.bytes - old + response.len();
        // The entry itself is the newest: evict older ones only.
        let seq = e.seq;
        while self.bytes > self.max_bytes {
            match self.order.first_key_value() {
                Some((&oldest, _)) if oldest != seq => {
                    self.remove_seq(oldest);
                    self.evictions += 1;
                }
                _ => break,
            }
        }
    }

    /// Forgets `key` (a request dropped without response): from the table and from the
    /// eviction order.
    pub fn abandon(&mut self, key: impl Into<TxKey>) {
        if let Some(e) = self.entries.get(&key.into()) {
            let seq = e.seq;
            self.remove_seq(seq);
        }
    }

    /// Number of transactions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no transaction is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (keys, responses and a per-entry overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries evicted before Timer J because the table was full (count or bytes).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    fn make_room(&mut self, cost: usize) {
        while !self.order.is_empty()
            && (self.entries.len() >= self.capacity || self.bytes + cost > self.max_bytes)
        {
            if let Some((&oldest, _)) = self.order.first_key_value() {
                self.remove_seq(oldest);
                self.evictions += 1;
            }
        }
    }

    fn remove_seq(&mut self, seq: u64) {
        if let Some((_, key)) = self.order.remove(&seq) {
            if let Some(e) = self.entries.remove(&key) {
                let response = match &e.state {
                    CachedTransaction::Completed(b, _) => b.len(),
                    CachedTransaction::Proceeding => 0,
                };
                self.bytes -= entry_cost(response);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((&seq, (at, _))) = self.order.first_key_value() {
            if now.duration_since(*at) < TIMER_J {
                break;
            }
            self.remove_seq(seq);
        }
    }
}

/// The methods `/metrics` names; any other method is counted as `other`, so that invented
/// method names cannot grow the label set.
const METHOD_LABELS: [&str; 14] = [
    "REGISTER",
    "PUBLISH",
    "OPTIONS",
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "INFO",
    "PRACK",
    "UPDATE",
    "REFER",
];

/// The `/metrics` label of a method: one of [`METHOD_LABELS`], `INVALID`/`UNFRAMED` (messages
/// refused before they had a method), or `other`.
pub fn method_label(method: &str) -> &'static str {
    METHOD_LABELS
        .iter()
        .chain(&["INVALID", "UNFRAMED"])
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// Counters for `GET /metrics`. Every map has a bounded key set: method labels
/// ([`method_label`]) × the statuses the server sends, rejection reasons, binding event kinds,
/// drop reasons.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Requests by (method label, status).
    pub requests: BTreeMap<(&'static str, u16), u64>,
    /// Token refusals by reason label.
    pub token_rejections: BTreeMap<&'static str, u64>,
    /// Binding events by kind (`bound`, `rebound`, `unbound_<cause>`).
    pub binding_events: BTreeMap<String, u64>,
    /// Messages dropped without response, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl Metrics {
    /// Counts one answered request of `method` (any token: it is reduced to a bounded label).
    pub fn count_request(&mut self, method: &str, status: u16) {
        *self
            .requests
            .entry((method_label(method), status))
            .or_default() += 1;
    }
}

/// Everything behind the server's one lock.
#[derive(Debug)]
pub struct Shared {
    /// The authorization machine: the same type `mcx-authz check` explores.
    pub machine: Machine,
    /// The clock.
    pub clock: Clock,
    /// Entity-tags.
    pub etags: EtagSource,
    /// UDP retransmission absorption.
    pub transactions: TransactionCache,
    /// Counters.
    pub metrics: Metrics,
    /// The CSK store the SIP edge opens protected values with: a CSK the machine drops is
    /// forgotten there.
    pub keys: Option<std::sync::Arc<crate::protection::KeyStore>>,
    /// The durable store the machine's [`Output::Persist`] batches go to (issue 13); `None`:
    /// nothing is kept (`[store] backend = "memory"`).
    pub store: Option<std::sync::Arc<crate::store::Store>>,
    /// Several instances on one PostgreSQL (`[store] shared = true`): every input runs against
    /// it (read first, compare-and-set, reload and re-run on a conflict); `store` is then `None`.
    pub shared_store: Option<crate::store::shared::SharedPg>,
}

impl Shared {
    /// Fresh state for `policy`.
    pub fn new(
        policy: Policy,
        transaction_cache_entries: usize,
        transaction_cache_bytes: usize,
    ) -> Self {
        Shared {
            machine: Machine::new(policy),
            clock: Clock::default(),
            etags: EtagSource::new(),
            transactions: TransactionCache::new(transaction_cache_entries, transaction_cache_bytes),
            metrics: Metrics::default(),
            keys: None,
            store: None,
            shared_store: None,
        }
    }

    /// Feeds one input to the machine at `now` (read once per request by the caller); counts and
    /// logs the binding events and returns the response, if the input was a request.
    pub fn step(&mut self, now: UnixTime, input: Input) -> Option<Response> {
        let mut response = None;
        let outputs = match self.shared_store.as_mut() {
            None => self.machine.handle(now, input),
            Some(db) => {
                // Committed (compare-and-set) before this returns; `Persist` below is then
                // already durable. The blocking client runs off the async runtime's thread.
                let machine = &mut self.machine;
                let ran = std::thread::scope(|scope| {
                    scope
                        .spawn(move || db.step(machine, now, input))
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                });
                match ran {
                    Ok(outputs) => outputs,
                    Err(crate::store::shared::Contention) => {
                        *self.metrics.dropped.entry("store_contention").or_default() += 1;
                        return None;
                    }
                }
            }
        };
        let mut persist = Vec::new();
        for output in outputs {
            match output {
                Output::Response(r) => {
                    if let mcx_model::Outcome::ServiceAuthorisationFailed(reason) = &r.outcome {
                        *self
                            .metrics
                            .token_rejections
                            .entry(reason.label())
                            .or_default() += 1;
                    }
                    response = Some(r);
                }
                Output::Binding(event) => self.record(&event),
                // Issue 13: queued in the order the machine numbered them (this lock orders
                // them); the response waits for it. Submitted after the other outputs, so that
                // the CSK an accepted upload keeps is sealed into the same batch as its tie.
                Output::Persist(batch) => persist.push(batch),
                Output::Csk(event) => {
                    // The key store is the shell's: it keeps an accepted upload's CSK (staged by
                    // the pipeline with this request) and forgets (zeroizes) a dropped one.
                    tracing::info!(?event, "csk");
                    match (&event, &self.keys) {
                        (CskEvent::Accepted { csk_id, mc_id, .. }, Some(keys)) => {
                            let kept = keys.accept(csk_id, mc_id);
                            if !kept {
                                tracing::error!(%csk_id, "accepted CSK upload not kept (no staged key, or the table is full)");
                            }
                        }
                        (CskEvent::Dropped { csk_id, .. }, Some(keys)) => keys.forget(csk_id),
                        _ => {}
                    }
                    let kind = match event {
                        CskEvent::Accepted { .. } => "csk_accepted",
                        CskEvent::Dropped { .. } => "csk_dropped",
                    };
                    *self.metrics.binding_events.entry(kind.into()).or_default() += 1;
                }
            }
        }
        let sealed = self
            .keys
            .as_ref()
            .map(|k| k.take_sealed())
            .unwrap_or_default();
        if let (Some(db), false) = (self.shared_store.as_mut(), sealed.is_empty()) {
            // Shared store: the tie is committed already; its sealed key follows before the
            // response (a crash between leaves a tie without a key: it fails closed).
            let ran = std::thread::scope(|scope| {
                scope
                    .spawn(|| db.store_sealed(&sealed))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            if let Err(e) = ran {
                tracing::error!(error = %format!("{e:#}"), "storing an uploaded CSK's sealed key failed: stopping (fail-stop)");
                eprintln!("mcx-authz: storing an uploaded CSK's sealed key failed: {e:#}; stopping (fail-stop)");
                std::process::exit(70);
            }
            return response;
        }
        if let Some(store) = &self.store {
            // The machine emits one batch per input; the sealed keys ride the last.
            let last = persist.len().saturating_sub(1);
            let mut sealed = Some(sealed);
            for (i, batch) in persist.into_iter().enumerate() {
                let keys = if i == last { sealed.take() } else { None };
                store.submit(batch, keys.unwrap_or_default(), now);
            }
        }
        response
    }

    /// Sends [`Input::Tick`] if a deadline has passed.
    pub fn tick_if_due(&mut self) {
        let now = self.clock.now();
        if self.machine.next_deadline().is_some_and(|d| d <= now) {
            self.step(now, Input::Tick);
        }
    }

    fn record(&mut self, event: &BindingEvent) {
        let kind = match event {
            BindingEvent::Bound { key, mc_id } => {
                tracing::info!(service = %key.service, impu = %key.impu, client_id = %key.client_id, mc_id = %mc_id, "bound");
                "bound".to_owned()
            }
            BindingEvent::Rebound { key, from, to } => {
                tracing::info!(service = %key.service, impu = %key.impu, client_id = %key.client_id, from = %from, to = %to, "rebound (user switch)");
                "rebound".to_owned()
            }
            BindingEvent::Unbound { key, mc_id, cause } => {
                tracing::info!(service = %key.service, impu = %key.impu, client_id = %key.client_id, mc_id = %mc_id, cause = cause.label(), "unbound");
                format!("unbound_{}", cause.label())
            }
        };
        *self.metrics.binding_events.entry(kind).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_cache_absorbs_then_retransmits_then_forgets() {
        let mut c = TransactionCache::new(2, usize::MAX);
        let t0 = Instant::now();
        assert_eq!(c.begin("a", t0), TransactionState::New);
        assert_eq!(c.begin("a", t0), TransactionState::Absorb);
        c.complete("a", b"SIP/2.0 200 OK", Seq(3));
        assert_eq!(
            c.begin("a", t0),
            TransactionState::Retransmit(b"SIP/2.0 200 OK".to_vec(), Seq(3))
        );
        assert_eq!(c.begin("b", t0), TransactionState::New);
        // Capacity 2: a third transaction evicts the oldest.
        assert_eq!(c.begin("c", t0), TransactionState::New);
        assert_eq!(c.len(), 2);
        assert_eq!(c.begin("a", t0), TransactionState::New);
        // Timer J.
        let later = t0 + TIMER_J + Duration::from_secs(1);
        assert_eq!(c.begin("z", later), TransactionState::New);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn transaction_keys_do_not_run_parts_together() {
        assert_ne!(TxKey::new(&[b"ab", b"c"]), TxKey::new(&[b"a", b"bc"]));
        assert_eq!(TxKey::new(&[b"ab", b"c"]), TxKey::new(&[b"ab", b"c"]));
        assert_ne!(TxKey::new(&[b"ab", b"c"]), TxKey::new(&[b"ab", b"c", b""]));
    }

    #[test]
    fn etags_are_unique_across_sources() {
        let mut a = EtagSource::new();
        let mut b = EtagSource::new();
        let tags: std::collections::HashSet<ETag> =
            (0..100).flat_map(|_| [a.fresh(), b.fresh()]).collect();
        assert_eq!(tags.len(), 200);
    }

    #[test]
    fn abandon_leaves_the_eviction_order_too() {
        let mut c = TransactionCache::new(2, usize::MAX);
        let t0 = Instant::now();
        // Many ACK-like transactions: begun, then abandoned. None may linger in the order.
        for i in 0..10_000 {
            let key = format!("ack-{i}");
            assert_eq!(c.begin(&key, t0), TransactionState::New);
            c.abandon(&key);
        }
        assert_eq!((c.len(), c.order.len(), c.bytes()), (0, 0, 0));
        // A key abandoned then begun again is one entry, and evicting it removes it once.
        c.begin("a", t0);
        c.abandon("a");
        c.begin("a", t0);
        c.begin("b", t0);
        assert_eq!((c.len(), c.order.len()), (2, 2));
        c.begin("c", t0);
        assert_eq!(
            c.begin("b", t0),
            TransactionState::Absorb,
            "b survives, a went"
        );
        assert_eq!(c.evictions(), 1);
    }

    #[test]
    fn transaction_cache_is_bounded_in_bytes() {
        let budget = 64 * 1024;
        let mut c = TransactionCache::new(1_000_000, budget);
        let t0 = Instant::now();
        let response = vec![b'x'; 4000];
        for i in 0..1000 {
            let key = format!("z9hG4bK-{i}");
            assert_eq!(c.begin(&key, t0), TransactionState::New);
            c.complete(&key, &response, Seq::ZERO);
            assert!(c.bytes() <= budget, "{} > {budget} after {i}", c.bytes());
        }
        assert!(c.len() < 20, "{}", c.len());
        assert!(c.evictions() > 900);
        // The newest answer is still there to retransmit.
        assert_eq!(
            c.begin("z9hG4bK-999", t0),
            TransactionState::Retransmit(response.clone(), Seq::ZERO)
        );
        // Bytes accounting returns to zero when everything expires.
        c.expire(t0 + TIMER_J);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn invented_methods_share_one_label() {
        let mut m = Metrics::default();
        for i in 0..10_000 {
            m.count_request(&format!("X{i}"), 405);
        }
        m.count_request("PUBLISH", 200);
        m.count_request("INVALID", 400);
        assert_eq!(m.requests.len(), 3);
        assert_eq!(m.requests[&("other", 405)], 10_000);
    }
}
