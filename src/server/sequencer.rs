//! Per-IMPU ordering without head-of-line blocking (issue 15; RFC 3903 R-35: requests for one
//! resource are processed in arrival order).
//!
//! Requests are submitted in arrival order under a key (the hashed IMPU, [`super::pipeline::shard_key`]).
//! A request that needs a token signature check takes a [`Ticket`] and is checked in parallel,
//! off the ordered path; one that needs none is ready at once. A ready request runs as soon as
//! every earlier request of its key has run, and not later: a REGISTER or a refresh of one IMPU
//! never waits behind the signature check of another IMPU's PUBLISH (the shard workers of the
//! previous design did, whenever two IMPUs hashed to the same worker).
//!
//! Every request takes its place with [`Sequencer::reserve`] in arrival order (the UDP path,
//! `udp.rs`, does so under its receive lock) and is handed in with [`Sequencer::fulfil`] when it
//! is ready (at once, or after its signature check); `fulfil` runs it, and the key's later ready
//! requests, on the calling thread once every earlier request of the key has run. Entries exist
//! only while a key has a request reserved or waiting, so the tables are bounded by the requests
//! in flight, which the caller bounds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Number of independently locked maps.
pub const SHARDS: usize = 64;

/// A place reserved in a key's order for a request being verified.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket must be fulfilled, or the key's later requests never run"]
pub struct Ticket {
    key: u64,
    id: u64,
}

enum Slot<J> {
    Waiting(u64),
    Ready(J),
}

struct Lane<J> {
    queue: VecDeque<Slot<J>>,
    /// Someone is running this lane's ready requests (at most one at a time).
    draining: bool,
}

type Shard<J> = Mutex<HashMap<u64, Lane<J>>>;

/// Orders jobs per key; see the module docs.
pub struct Sequencer<J> {
    shards: Box<[Shard<J>]>,
    next_id: AtomicU64,
}

impl<J> Default for Sequencer<J> {
    fn default() -> Self {
        Self::new()
    }
}

impl<J> Sequencer<J> {
    /// An empty sequencer.
    pub fn new() -> Self {
        Sequencer {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, HashMap<u64, Lane<J>>> {
        // The low bits pick the worker-free shard; the map is keyed by the whole hash.
        self.shards[(key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the next place of `key` for a job still being prepared, in arrival order.
    pub fn reserve(&self, key: u64) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(key);
        shard
            .entry(key)
            .or_insert_with(|| Lane {
                queue: VecDeque::with_capacity(2),
                draining: false,
            })
            .queue
            .push_back(Slot::Waiting(id));
        Ticket { key, id }
    }

    /// Fills a reserved place, then runs (with `run`, on this thread) every job of the key that
    /// is now next in order, unless another thread is already doing so (it then runs them).
    pub fn fulfil(&self, ticket: Ticket, job: J, mut run: impl FnMut(J)) {
        let key = ticket.key;
        let mut shard = self.shard(key);
        let Some(lane) = shard.get_mut(&key) else {
            debug_assert!(false, "a ticket for a key without a lane");
            return;
        };
        if let Some(slot) = lane
            .queue
            .iter_mut()
            .find(|s| matches!(s, Slot::Waiting(id) if *id == ticket.id))
        {
            *slot = Slot::Ready(job);
        }
        if lane.draining {
            return;
        }
        lane.draining = true;
        loop {
            let lane = shard
                .get_mut(&key)
                .expect("the drained lane stays while draining");
            match lane.queue.front() {
                Some(Slot::Ready(_)) => {
                    let Some(Slot::Ready(job)) = lane.queue.pop_front() else {
                        unreachable!()
                    };
                    drop(shard);
                    run(job);
                    shard = self.shard(key);
                }
                Some(Slot::Waiting(_)) => {
                    lane.draining = false;
                    return;
                }
                None => {
                    shard.remove(&key);
                    return;
                }
            }
        }
    }

    /// Keys with requests pending (for tests and metrics).
    pub fn pending_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_idle_key_runs_at_once_and_leaves_nothing() {
        let s = Sequencer::new();
        let mut ran = Vec::new();
        let t = s.reserve(7);
        assert_eq!(s.pending_keys(), 1);
        s.fulfil(t, "register", |j| ran.push(j));
        assert_eq!(ran, ["register"]);
        assert_eq!(s.pending_keys(), 0);
    }

    #[test]
    fn later_requests_of_a_key_wait_for_its_verification_other_keys_do_not() {
        let s = Sequencer::new();
        let mut ran = Vec::new();
        let t = s.reserve(1); // PUBLISH of IMPU 1, in verification
        let refresh = s.reserve(1);
        s.fulfil(refresh, "refresh 1", |j| ran.push(j)); // ready, but behind it
        assert!(ran.is_empty());
        let register = s.reserve(2);
        s.fulfil(register, "register 2", |j| ran.push(j)); // not behind it
        assert_eq!(ran, ["register 2"]);
        let t2 = s.reserve(1); // a second PUBLISH of IMPU 1
        s.fulfil(t2, "publish 1b", |j| ran.push(j)); // done first, but must wait
        assert_eq!(ran, ["register 2"]);
        s.fulfil(t, "publish 1a", |j| ran.push(j));
        assert_eq!(ran, ["register 2", "publish 1a", "refresh 1", "publish 1b"]);
        assert_eq!(s.pending_keys(), 0);
    }

    #[test]
    fn arrival_order_holds_per_key_under_concurrency() {
        // 8 keys, 2 000 requests each, every third one "verified" on another thread after a
        // random delay; each key's jobs must run in submission order.
        let s = Arc::new(Sequencer::<(u64, u32)>::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for n in 0..2000u32 {
            for key in 0..8u64 {
                let t = s.reserve(key);
                if n % 3 == 0 {
                    let (s, log) = (s.clone(), log.clone());
                    handles.push(std::thread::spawn(move || {
                        std::thread::sleep(std::time::Duration::from_micros(
                            u64::from(n * 7 % 13) * 10,
                        ));
                        s.fulfil(t, (key, n), |j| log.lock().unwrap().push(j));
                    }));
                } else {
                    s.fulfil(t, (key, n), |j| log.lock().unwrap().push(j));
                }
            }
            if handles.len() > 64 {
                for h in handles.drain(..) {
                    h.join().unwrap();
                }
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 16_000);
        for key in 0..8 {
            let seq: Vec<u32> = log.iter().filter(|j| j.0 == key).map(|j| j.1).collect();
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "key {key} out of order"
            );
        }
        assert_eq!(s.pending_keys(), 0);
    }
}
