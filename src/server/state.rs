//! The server's shared state: the machine, and what the runtime keeps beside it (clock offset,
//! entity-tag source, UDP transaction cache, counters). One `Mutex` guards it; token signature
//! checks happen before the lock is taken, so the lock is held only for the machine's step.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcx_model::{BindingEvent, CskEvent, ETag, Input, Machine, Output, Policy, Response, UnixTime};
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
/// counter, so tags stay unique across restarts too.
#[derive(Debug)]
pub struct EtagSource {
    prefix: String,
    next: u64,
}

impl EtagSource {
    /// A source with a fresh random prefix.
    pub fn new() -> Self {
        let prefix: u64 = rand::rng().random();
        EtagSource {
            prefix: format!("{prefix:016x}"),
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
/// entries live 32 s (64·T1, Timer J) and the table is bounded.
#[derive(Debug)]
pub struct TransactionCache {
    entries: HashMap<TxKey, CachedTransaction>,
    order: VecDeque<(Instant, TxKey)>,
    capacity: usize,
}

/// A server transaction's name (RFC 3261 17.2.3: top Via branch, sent-by, method, and the
/// source address), as the first 128 bits of its SHA-256: fixed size, so the hot path keeps no
/// per-request string, and collision-resistant, so no sender can make its request pass for
/// another's retransmission.
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

#[derive(Debug)]
enum CachedTransaction {
    /// Being processed: a retransmission arriving now is absorbed.
    Proceeding,
    /// Answered: a retransmission gets these bytes again.
    Completed(Vec<u8>),
}

/// What to do with a request, according to the transaction cache.
#[derive(Debug, PartialEq, Eq)]
pub enum TransactionState {
    /// A new transaction: process it.
    New,
    /// A retransmission of a request still being processed: drop it.
    Absorb,
    /// A retransmission of an answered request: send this again.
    Retransmit(Vec<u8>),
}

const TIMER_J: Duration = Duration::from_secs(32);

impl TransactionCache {
    /// A cache holding at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        TransactionCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Looks `key` up; a new key is recorded as proceeding.
    pub fn begin(&mut self, key: TxKey, now: Instant) -> TransactionState {
        self.expire(now);
        match self.entries.get(&key) {
            Some(CachedTransaction::Proceeding) => TransactionState::Absorb,
            Some(CachedTransaction::Completed(bytes)) => {
                TransactionState::Retransmit(bytes.clone())
            }
            None => {
                while self.entries.len() >= self.capacity {
                    match self.order.pop_front() {
                        Some((_, old)) => {
                            self.entries.remove(&old);
                        }
                        None => break,
                    }
                }
                self.entries.insert(key, CachedTransaction::Proceeding);
                self.order.push_back((now, key));
                TransactionState::New
            }
        }
    }

    /// Records the final response of `key`.
    pub fn complete(&mut self, key: TxKey, response: &[u8]) {
        if let Some(e) = self.entries.get_mut(&key) {
            *e = CachedTransaction::Completed(response.to_vec());
        }
    }

    /// Forgets `key` (a request dropped without response).
    pub fn abandon(&mut self, key: TxKey) {
        self.entries.remove(&key);
    }

    /// Number of transactions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no transaction is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < TIMER_J {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.entries.remove(&key);
            }
        }
    }
}

/// Counters for `GET /metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by (method, status).
    pub requests: BTreeMap<(String, u16), u64>,
    /// Token refusals by reason label.
    pub token_rejections: BTreeMap<&'static str, u64>,
    /// Binding events by kind (`bound`, `rebound`, `unbound_<cause>`).
    pub binding_events: BTreeMap<String, u64>,
    /// Messages dropped without response, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
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
}

impl Shared {
    /// Fresh state for `policy`.
    pub fn new(policy: Policy, transaction_cache_entries: usize) -> Self {
        Shared {
            machine: Machine::new(policy),
            clock: Clock::default(),
            etags: EtagSource::new(),
            transactions: TransactionCache::new(transaction_cache_entries),
            metrics: Metrics::default(),
        }
    }

    /// Feeds one input to the machine at `now` (read once per request by the caller); counts and
    /// logs the binding events and returns the response, if the input was a request.
    pub fn step(&mut self, now: UnixTime, input: Input) -> Option<Response> {
        let mut response = None;
        for output in self.machine.handle(now, input) {
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
                Output::Csk(event) => {
                    // The key store is the shell's: it keeps an accepted CSK and forgets
                    // (zeroizes) a dropped one. This build holds no CSK bytes yet.
                    tracing::info!(?event, "csk");
                    let kind = match event {
                        CskEvent::Accepted { .. } => "csk_accepted",
                        CskEvent::Dropped { .. } => "csk_dropped",
                    };
                    *self.metrics.binding_events.entry(kind.into()).or_default() += 1;
                }
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
        let mut c = TransactionCache::new(2);
        let t0 = Instant::now();
        let k = |n: &str| TxKey::new(&[n.as_bytes()]);
        assert_eq!(c.begin(k("a"), t0), TransactionState::New);
        assert_eq!(c.begin(k("a"), t0), TransactionState::Absorb);
        c.complete(k("a"), b"SIP/2.0 200 OK");
        assert_eq!(
            c.begin(k("a"), t0),
            TransactionState::Retransmit(b"SIP/2.0 200 OK".to_vec())
        );
        assert_eq!(c.begin(k("b"), t0), TransactionState::New);
        // Capacity 2: a third transaction evicts the oldest.
        assert_eq!(c.begin(k("c"), t0), TransactionState::New);
        assert_eq!(c.len(), 2);
        assert_eq!(c.begin(k("a"), t0), TransactionState::New);
        // Timer J.
        let later = t0 + TIMER_J + Duration::from_secs(1);
        assert_eq!(c.begin(k("z"), later), TransactionState::New);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn transaction_keys_do_not_run_parts_together() {
        assert_ne!(TxKey::new(&[b"ab", b"c"]), TxKey::new(&[b"a", b"bc"]));
        assert_eq!(TxKey::new(&[b"ab", b"c"]), TxKey::new(&[b"ab", b"c"]));
    }

    #[test]
    fn etags_are_unique_across_sources() {
        let mut a = EtagSource::new();
        let mut b = EtagSource::new();
        let tags: std::collections::HashSet<ETag> =
            (0..100).flat_map(|_| [a.fresh(), b.fresh()]).collect();
        assert_eq!(tags.len(), 200);
    }
}
