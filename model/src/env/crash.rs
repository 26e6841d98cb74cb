//! Crash and restart with a durable store (issue 13).
//!
//! The environment keeps the server's store beside the machine ([`EnvState::store`]): an
//! [`Image`] built only from the machine's [`Output::Persist`](crate::Output::Persist) batches,
//! in the order the machine emitted them, exactly as the server's writer applies them to redb.
//!
//! [`EnvAction::Crash`](super::EnvAction::Crash) is `kill -9` and a restart: every change that is
//! not in the store is dropped, and so is every response not yet sent; the machine is then what
//! [`Input::Load`] makes of the store at the current time. The server's driver sends a response
//! only once the batch it waits for ([`crate::Response::wait_for`]) is durable, so a model step
//! (deliver, handle, persist, send) is atomic with respect to a crash: a crash inside a step
//! loses that step's change *and* its response, which to the UE is the request lost on the way
//! (over UDP it retransmits; `tests/durability.rs` kills the real server mid-request). Crashes
//! between steps are what the model explores; the properties below say that they lose nothing.
//!
//! - **acknowledged-implies-durable** (issue 13; the raft-rs rule "persist, then send"): in
//!   every state, every registration and binding the server holds, each acknowledged with a 2xx
//!   (to the S-CSCF or the UE) when it was made, is in the store as the server holds it. A
//!   machine that forgot to persist a change (a refresh's new SIP-ETag, an unbind, a CSK tie)
//!   violates this at once.
//! - **no-binding-lost-across-restart** (issue 13; dossier Q-15 is the volatile case, where the
//!   UE must recover by 412): after a crash the server holds every binding it held before, with
//!   the same MC service ID and SIP-ETag, so a UE's refresh still gets 200.
//!
//! A crash that loses nothing leads back to the very state it left (the step facts included):
//! exploring crashes costs no state when the properties hold.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{EnvState, McxModel, Shared, StepEffect};
use crate::durable::{Image, Persist};
use crate::ids::UnixTime;
use crate::input::Input;
use crate::machine::Machine;
use crate::output::Output;

/// Step fact: a crash lost a binding (see [`no_binding_lost`]). High bit: clear of the bits of
/// [`super::step`].
pub const LOST_BINDING: u32 = 1 << 31;

/// The store at the start: what the start-up (provisioned CSKs, the attacker's registration)
/// persisted. `None` when crashes are not explored.
pub(super) fn initial_store(crash: bool, server: &Machine) -> Option<Image> {
    crash.then(|| {
        let mut image = Image::new();
        let snapshot = server.snapshot();
        for (impu, record) in snapshot.impus {
            image.apply_change(&crate::durable::Change::Impu {
                impu,
                record: Some(record),
            });
        }
        for (csk_id, csk) in snapshot.csks {
            image.apply_change(&crate::durable::Change::Csk {
                csk_id,
                csk: Some(csk),
            });
        }
        image
    })
}

/// What [`Input::Load`] of a store makes at a time: the same for every state that holds that
/// store at that time (most steps change neither), so the checker loads each (store, time) once.
/// Bounded: forgotten wholesale past [`Loads::CAPACITY`] entries.
#[derive(Debug, Default)]
pub(super) struct Loads {
    memo: Mutex<HashMap<(u64, u8), Vec<LoadEntry>>>,
}

type LoadEntry = (Shared<Image>, Shared<Machine>, Vec<Output>);

impl Loads {
    const CAPACITY: usize = 1 << 14;

    /// The machine (and its outputs) that loading `store` at tick `now` makes; `load` computes
    /// it the first time.
    fn load(
        &self,
        store: &Shared<Image>,
        now: u8,
        load: impl FnOnce() -> (Machine, Vec<Output>),
    ) -> (Shared<Machine>, Vec<Output>) {
        let key = (store.digest(), now);
        if let Ok(memo) = self.memo.lock() {
            if let Some((_, m, out)) = memo
                .get(&key)
                .and_then(|v| v.iter().find(|(s, _, _)| s == store))
            {
                return (m.clone(), out.clone());
            }
        }
        let (machine, out) = load();
        let machine = Shared::new(machine);
        if let Ok(mut memo) = self.memo.lock() {
            if memo.len() >= Self::CAPACITY {
                memo.clear();
            }
            memo.entry(key)
                .or_default()
                .push((store.clone(), machine.clone(), out.clone()));
        }
        (machine, out)
    }
}

/// The driver's writer: a batch becomes durable before the response that waits for it is sent
/// (the environment hands the response to the UE after this).
pub(super) fn persisted(s: &mut EnvState, batch: &Persist) {
    if let Some(store) = s.store.as_mut().filter(|_| !batch.changes.is_empty()) {
        let store = store.make_mut();
        for c in &batch.changes {
            store.apply_change(c);
        }
    }
}

impl McxModel {
    /// `kill -9`, then a restart that loads the store at the current time.
    pub(super) fn crash(&self, last: &EnvState, s: &mut EnvState, effect: &mut StepEffect) {
        let Some(store) = &s.store else {
            return;
        };
        let now = UnixTime(u64::from(s.now));
        let (server, out) = self.loads.load(store, s.now, || {
            let mut server = Machine::new(self.cfg.machine_policy());
            let out = server.handle(now, Input::Load(Box::new(store.snapshot())));
            (server, out)
        });
        effect.record(|| Input::Load(Box::new(store.snapshot())));
        // Most crashes lose nothing and load the very machine they killed: keep sharing it.
        s.server = if server == last.server {
            last.server.clone()
        } else {
            server
        };
        for o in out {
            match o {
                Output::Binding(e) => effect.events.push(e),
                Output::Persist(p) => persisted(s, &p),
                Output::Response(_) | Output::Csk(_) => {}
            }
        }
        let lost = last.server.bindings().any(|(k, b)| {
            s.server
                .binding(k)
                .is_none_or(|after| after.mc_id != b.mc_id || after.publication != b.publication)
        });
        if lost {
            s.step |= LOST_BINDING;
        } else if s.server.same(&last.server) {
            // Nothing lost, nothing changed: the very state the crash left (facts included).
            s.step = last.step;
        }
    }
}

/// Property **acknowledged-implies-durable**: every registration and binding the server holds
/// is in the store, as the server holds it (vacuous when crashes are not explored). Judged on
/// [`EnvState::durable_gap`], which each step that changes the server or the store recomputes
/// with [`server_in_store`] (the comparison takes a snapshot of the machine: too dear for every
/// state when most steps change neither).
pub(super) fn acknowledged_durable(_: &McxModel, s: &EnvState) -> bool {
    !s.durable_gap
}

/// Whether every registration and binding the server holds is in the store, as the server holds
/// it (true when crashes are not explored).
pub(super) fn server_in_store(s: &EnvState) -> bool {
    let Some(store) = &s.store else {
        return true;
    };
    let mine = s.server.snapshot();
    mine.impus
        .iter()
        .all(|(impu, record)| store.impu(impu) == Some(record))
}

/// Property **no-binding-lost-across-restart**: no crash lost a binding.
pub(super) fn no_binding_lost(_: &McxModel, s: &EnvState) -> bool {
    s.step & LOST_BINDING == 0
}

/// The two properties, for the catalogue.
pub(super) fn properties() -> [super::PropertyInfo; 2] {
    use super::PropertyKind::Always;
    [
        super::PropertyInfo {
            name: "acknowledged-implies-durable",
            kind: Always,
            clause: "issue 13 (persist, then send: the raft-rs Ready rule); RFC 3903 6 (a 2xx creates the publication the client then refreshes)",
            meaning: "every registration and binding the server holds (each acknowledged with a 2xx) is in its durable store as the server holds it: no 2xx for a change a crash can lose",
            condition: acknowledged_durable,
        },
        super::PropertyInfo {
            name: "no-binding-lost-across-restart",
            kind: Always,
            clause: "issue 13; TS 24.379 7.3.3 (a bound client stays bound until log-off or expiry), dossier Q-15 (the volatile restart it replaces)",
            meaning: "after kill -9 and a restart from the store, the server holds every binding it held before, with the same MC service ID and SIP-ETag",
            condition: no_binding_lost,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{EnvAction, ModelConfig};
    use crate::policy::Variant;
    use stateright::Model;

    /// A model with crashes, walked until a UE is bound.
    fn bound_state() -> (McxModel, EnvState) {
        let mut cfg = ModelConfig::for_variant(Variant::PostCr);
        cfg.crash = true;
        let model = cfg.into_model();
        let mut s = model.init_state();
        // Breadth-first until some state holds a UE binding (bounded: the model is small).
        let mut frontier = vec![s.clone()];
        for _ in 0..12 {
            let mut next = Vec::new();
            for st in &frontier {
                let mut actions = Vec::new();
                model.actions(st, &mut actions);
                for a in actions {
                    if matches!(a, EnvAction::Crash) {
                        continue;
                    }
                    if let Some(n) = model.next_state(st, a) {
                        if n.server
                            .bindings()
                            .any(|(k, _)| model.client_ue(&k.client_id).is_some())
                        {
                            return (model, n);
                        }
                        next.push(n);
                    }
                }
            }
            next.truncate(200);
            frontier = next;
        }
        s.step = 0;
        panic!("no bound state within 12 steps");
    }

    #[test]
    fn a_crash_loses_nothing_the_machine_persisted() {
        let (model, s) = bound_state();
        assert!(acknowledged_durable(&model, &s));
        assert!(server_in_store(&s));
        let after = model.next_state(&s, EnvAction::Crash).expect("crash");
        assert!(no_binding_lost(&model, &after));
        assert_eq!(after, s, "a crash that loses nothing is a self-loop");
    }

    #[test]
    fn a_crash_is_loaded_once_per_store_and_time_and_the_same_as_a_fresh_load() {
        let (model, s) = bound_state();
        let first = model.next_state(&s, EnvAction::Crash).expect("crash");
        let calls = std::cell::Cell::new(0);
        let store = s.store.as_ref().expect("crashes explored");
        let fresh = || {
            calls.set(calls.get() + 1);
            let mut m = Machine::new(model.config().machine_policy());
            let out = m.handle(
                UnixTime(u64::from(s.now)),
                Input::Load(Box::new(store.snapshot())),
            );
            (m, out)
        };
        // The crash above filled the memo: the same store at the same time is not loaded again.
        let (memo, _) = model.loads.load(store, s.now, fresh);
        assert_eq!(calls.get(), 0);
        assert_eq!(*memo, fresh().0);
        assert_eq!(*first.server, *memo);
        // Another time is another entry.
        let (_, _) = model.loads.load(store, s.now + 1, fresh);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn a_change_left_out_of_the_store_is_caught_by_both_properties() {
        let (model, mut s) = bound_state();
        // As if the driver had sent the 2xx without persisting: the store lacks the binding.
        let impu = s
            .server
            .bindings()
            .map(|(k, _)| k.impu.clone())
            .find(|i| model.impu_index(i) != Some(model.attacker_impu()))
            .unwrap();
        s.store
            .as_mut()
            .unwrap()
            .make_mut()
            .apply_change(&crate::durable::Change::Impu { impu, record: None });
        assert!(!server_in_store(&s));
        let after = model.next_state(&s, EnvAction::Crash).expect("crash");
        assert!(
            !no_binding_lost(&model, &after),
            "the crash lost the binding"
        );
    }
}
