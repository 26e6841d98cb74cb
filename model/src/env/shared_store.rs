//! Two server instances on one store (issue 13): a small model of its own, beside the
//! environment model. `mcx-authz check --shared-store` runs it.
//!
//! Two [`Machine`]s (instances A and B) share a versioned store: one row per IMPU (the
//! [`ImpuRecord`] and a version drawn from a counter that never goes back), as
//! `src/store/shared.rs` keeps in PostgreSQL. A fixed set of requests for one (MCPTT, IMPU, MC
//! client) is delivered, each to either instance, in any order; each instance handles one request
//! at a time in two atomic steps, interleaved in every way with the other instance's:
//!
//! 1. **Decide:** read the IMPU's row; if its version is not the one the instance holds (or the
//!    last attempt conflicted), give the machine [`Input::Reload`]; run the request.
//! 2. **Commit:** write the [`Persist`] batch as a compare-and-set on the version read. On success
//!    the response and the binding events count as sent; on a conflict they are dropped and the
//!    request goes back to step 1 (the conflict is an input: the reload).
//!
//! A request that persists nothing is answered at step 1 (a refusal is linearized at its read).
//!
//! Ghost state: the MC service IDs *acknowledged bound* to the client: added by a sent
//! `Bound`/`Rebound`, removed by a sent `Rebound`/`Unbound` (what a UE and the logs were told).
//!
//! - **one-mc-id-per-client-across-instances** (issue 13): never two MC service IDs acknowledged
//!   bound to one (service, IMPU, MC client ID) at once (TS 33.180 5.1.3: the binding is one
//!   IMPU ↔ one MC service ID).
//! - **store-holds-the-acknowledged-binding** (issue 13, "persist, then send"): what is
//!   acknowledged bound is exactly what the store holds for the client.
//! - **a-conflict-is-reloaded** (sometimes): a compare-and-set conflict happens (so the property
//!   above covers the reload path), and **every-request-answered** (sometimes).
//!
//! [`WriteRule::Blind`] is the mutation: the commit writes whatever the version, and the first
//! property fails (A binds user 1, B, which read before A's commit, binds user 2 as new).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use stateright::{Model, Property};

use crate::durable::{Change, ImpuRecord, Persist, Reload};
use crate::ids::{ClientId, ETag, Impu, McId, Service, ServiceSet, TokenId, UnixTime};
use crate::input::{
    AssertedIdentity, Authorization, EventPackage, IfMatch, Input, Protection, Publish,
    PublishBody, PublishTarget, RegisterTarget, ThirdPartyRegister,
};
use crate::machine::Machine;
use crate::output::{BindingEvent, Output};
use crate::policy::{Policy, TokenProtection};
use crate::token::{TokenVerdict, VerifiedClaims};

/// How an instance writes its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteRule {
    /// Per-IMPU compare-and-set on the version read (what the server does).
    CompareAndSet,
    /// Mutation: write whatever the store holds now.
    Blind,
}

/// The requests, each delivered once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Request {
    /// Third-party REGISTER of the IMPU (3600 s).
    Register,
    /// PUBLISH with user `n`'s token for the one MC client.
    Publish(u8),
    /// De-registration (expires 0): every binding of the IMPU ends.
    Deregister,
}

/// The model: which requests, and the write rule.
#[derive(Clone, Debug)]
pub struct SharedStoreModel {
    /// The requests delivered (each once, to either instance).
    pub requests: Vec<Request>,
    /// The write rule.
    pub write: WriteRule,
}

impl Default for SharedStoreModel {
    /// REGISTER, user 1's and user 2's PUBLISH, de-registration; compare-and-set.
    fn default() -> Self {
        SharedStoreModel {
            requests: vec![
                Request::Register,
                Request::Publish(1),
                Request::Publish(2),
                Request::Deregister,
            ],
            write: WriteRule::CompareAndSet,
        }
    }
}

/// One instance's request in hand.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// No request.
    Idle,
    /// Request `0` delivered (or conflicted, with `reload_all`): next, read and decide.
    Deliver {
        /// Index into [`SharedStoreModel::requests`].
        request: usize,
        /// The last attempt conflicted: reload whatever the version.
        reload_all: bool,
    },
    /// Decided: the batch to commit on `read_version`, and what is sent if it commits.
    Decided {
        /// The request.
        request: usize,
        /// The version read (`None`: no row).
        read_version: Option<u64>,
        /// The batch.
        batch: Persist,
        /// The binding events sent on success.
        events: Vec<BindingEvent>,
    },
}

/// One server instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Its machine.
    pub machine: Machine,
    /// The version of the IMPU's row it last read or wrote.
    pub version: Option<u64>,
    /// The request in hand.
    pub phase: Phase,
}

/// The whole state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SharedState {
    /// Instances A and B.
    pub instances: [Instance; 2],
    /// The store's row for the IMPU, with its version.
    pub row: Option<(ImpuRecord, u64)>,
    /// The last version drawn.
    pub last_version: u64,
    /// Requests not delivered yet (indexes).
    pub undelivered: BTreeSet<usize>,
    /// Ghost: MC service IDs acknowledged bound to the client.
    pub acknowledged: BTreeSet<McId>,
    /// Ghost: a compare-and-set conflict happened.
    pub conflicted: bool,
}

/// What the checker may do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SharedAction {
    /// Request `request` reaches instance `instance`.
    Deliver {
        /// 0 = A, 1 = B.
        instance: usize,
        /// Index into [`SharedStoreModel::requests`].
        request: usize,
    },
    /// The instance reads the row and decides.
    Decide(usize),
    /// The instance commits.
    Commit(usize),
}

const NOW: UnixTime = UnixTime(100);

fn impu() -> Impu {
    Impu::new("sip:ue@ims.example.org")
}

fn mc_id(user: u8) -> McId {
    McId::new(format!("sip:user{user}@mcx.example.org"))
}

fn policy() -> Policy {
    Policy {
        token_protection: TokenProtection::Optional,
        ..Policy::default()
    }
}

impl SharedStoreModel {
    fn input(&self, instance: usize, request: usize) -> Input {
        match self.requests[request] {
            Request::Register | Request::Deregister => {
                Input::ThirdPartyRegister(ThirdPartyRegister {
                    target: RegisterTarget::Ours,
                    impu: AssertedIdentity::Trusted(impu()),
                    expires: Some(if self.requests[request] == Request::Register {
                        3600
                    } else {
                        0
                    }),
                    services: None,
                    embedded: Vec::new(),
                })
            }
            Request::Publish(user) => Input::Publish(Publish {
                target: PublishTarget::Service(Service::Mcptt),
                event: EventPackage::PocSettings,
                impu: AssertedIdentity::Trusted(impu()),
                if_match: IfMatch::Absent,
                expires: Some(3600),
                body: PublishBody::Authorization(Authorization {
                    token: TokenVerdict::Verified(VerifiedClaims {
                        mcptt_id: Some(mc_id(user)),
                        mcvideo_id: None,
                        mcdata_id: None,
                        scopes: ServiceSet::only(Service::Mcptt),
                        exp: UnixTime(10_000),
                        token_id: TokenId::new(format!("jti-{user}")),
                    }),
                    protection: Protection::Clear,
                    client_id: ClientId::new("client-1"),
                    settings: None,
                }),
                key_upload: None,
                fresh_etag: ETag::new(format!("{}{request}", ["a", "b"][instance])),
            }),
        }
    }

    /// Sends `events`: the ghost follows what was told.
    fn acknowledge(state: &mut SharedState, events: &[BindingEvent]) {
        for e in events {
            match e {
                BindingEvent::Bound { mc_id, .. } => {
                    state.acknowledged.insert(mc_id.clone());
                }
                BindingEvent::Rebound { from, to, .. } => {
                    state.acknowledged.remove(from);
                    state.acknowledged.insert(to.clone());
                }
                BindingEvent::Unbound { mc_id, .. } => {
                    state.acknowledged.remove(mc_id);
                }
            }
        }
    }

    /// The MC service IDs the store holds for the client.
    pub fn stored(state: &SharedState) -> BTreeSet<McId> {
        state
            .row
            .iter()
            .flat_map(|(r, _)| &r.bindings)
            .map(|(_, _, b)| b.mc_id.clone())
            .collect()
    }
}

impl Model for SharedStoreModel {
    type State = SharedState;
    type Action = SharedAction;

    fn init_states(&self) -> Vec<SharedState> {
        let instance = Instance {
            machine: Machine::new(policy()),
            version: None,
            phase: Phase::Idle,
        };
        vec![SharedState {
            instances: [instance.clone(), instance],
            row: None,
            last_version: 0,
            undelivered: (0..self.requests.len()).collect(),
            acknowledged: BTreeSet::new(),
            conflicted: false,
        }]
    }

    fn actions(&self, state: &SharedState, actions: &mut Vec<SharedAction>) {
        for (i, inst) in state.instances.iter().enumerate() {
            match inst.phase {
                Phase::Idle => {
                    for &request in &state.undelivered {
                        actions.push(SharedAction::Deliver {
                            instance: i,
                            request,
                        });
                    }
                }
                Phase::Deliver { .. } => actions.push(SharedAction::Decide(i)),
                Phase::Decided { .. } => actions.push(SharedAction::Commit(i)),
            }
        }
    }

    fn next_state(&self, last: &SharedState, action: SharedAction) -> Option<SharedState> {
        let mut s = last.clone();
        match action {
            SharedAction::Deliver { instance, request } => {
                s.undelivered.remove(&request);
                s.instances[instance].phase = Phase::Deliver {
                    request,
                    reload_all: false,
                };
            }
            SharedAction::Decide(i) => {
                let Phase::Deliver {
                    request,
                    reload_all,
                } = s.instances[i].phase
                else {
                    return None;
                };
                let read_version = s.row.as_ref().map(|(_, v)| *v);
                let inst = &mut s.instances[i];
                if reload_all || inst.version != read_version {
                    let reload = Reload {
                        impus: vec![(impu(), s.row.as_ref().map(|(r, _)| r.clone()))],
                        ..Reload::default()
                    };
                    inst.machine.handle(NOW, Input::Reload(Box::new(reload)));
                    inst.version = read_version;
                }
                let outputs = inst.machine.handle(NOW, self.input(i, request));
                let mut batch = None;
                let mut events = Vec::new();
                for o in outputs {
                    match o {
                        Output::Persist(p) => batch = Some(p),
                        Output::Binding(e) => events.push(e),
                        Output::Response(_) | Output::Csk(_) => {}
                    }
                }
                match batch {
                    None => {
                        inst.phase = Phase::Idle;
                        Self::acknowledge(&mut s, &events);
                    }
                    Some(batch) => {
                        inst.phase = Phase::Decided {
                            request,
                            read_version,
                            batch,
                            events,
                        }
                    }
                }
            }
            SharedAction::Commit(i) => {
                let Phase::Decided {
                    request,
                    read_version,
                    batch,
                    events,
                } = std::mem::replace(&mut s.instances[i].phase, Phase::Idle)
                else {
                    return None;
                };
                let current = s.row.as_ref().map(|(_, v)| *v);
                if self.write == WriteRule::CompareAndSet && current != read_version {
                    s.conflicted = true;
                    s.instances[i].phase = Phase::Deliver {
                        request,
                        reload_all: true,
                    };
                    return Some(s);
                }
                for c in &batch.changes {
                    if let Change::Impu { record, .. } = c {
                        s.row = record.clone().map(|r| {
                            s.last_version += 1;
                            (r, s.last_version)
                        });
                    }
                }
                s.instances[i].version = s.row.as_ref().map(|(_, v)| *v);
                Self::acknowledge(&mut s, &events);
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "one-mc-id-per-client-across-instances",
                |_, s: &SharedState| s.acknowledged.len() <= 1,
            ),
            Property::always(
                "store-holds-the-acknowledged-binding",
                |_, s: &SharedState| {
                    // Between a commit and nothing else: every instance idle or undecided.
                    s.acknowledged == SharedStoreModel::stored(s)
                },
            ),
            Property::sometimes("a-conflict-is-reloaded", |_, s: &SharedState| s.conflicted),
            Property::sometimes("every-request-answered", |_, s: &SharedState| {
                s.undelivered.is_empty()
                    && s.instances.iter().all(|i| i.phase == Phase::Idle)
                    && !s.acknowledged.is_empty()
            }),
        ]
    }
}

/// Each property's meaning, for `mcx-authz check --shared-store`.
pub const SHARED_PROPERTIES: [(&str, &str); 4] = [
    (
        "one-mc-id-per-client-across-instances",
        "never two MC service IDs acknowledged bound to one (service, IMPU, MC client ID), whichever instance answered",
    ),
    (
        "store-holds-the-acknowledged-binding",
        "what was acknowledged bound is what the shared store holds",
    ),
    (
        "a-conflict-is-reloaded",
        "a compare-and-set conflict happens, is reloaded and re-run (witness)",
    ),
    (
        "every-request-answered",
        "every request answered with a binding left (witness)",
    ),
];

/// The default model's unique state count (`mcx-authz check --shared-store` prints it).
pub const PINNED_STATES: usize = 1027;

#[cfg(test)]
mod tests {
    use super::*;
    use stateright::Checker;

    fn check(model: SharedStoreModel) -> (usize, Vec<&'static str>) {
        let checker = model.checker().spawn_bfs().join();
        let found = checker.discoveries();
        let mut failing: Vec<&'static str> = Vec::new();
        for p in checker.model().properties() {
            let found = found.contains_key(p.name);
            let bad = match p.expectation {
                stateright::Expectation::Always | stateright::Expectation::Eventually => found,
                stateright::Expectation::Sometimes => !found,
            };
            if bad {
                failing.push(p.name);
            }
        }
        (checker.unique_state_count(), failing)
    }

    /// Compare-and-set: every property as expected, and the state count pinned (a change to the
    /// machine that changes it is seen here; update the number and docs/model.md together).
    #[test]
    fn compare_and_set_keeps_one_mc_id_per_client() {
        let (states, failing) = check(SharedStoreModel::default());
        assert!(failing.is_empty(), "{failing:?}");
        assert_eq!(states, PINNED_STATES);
    }

    /// The mutation: a blind write leaves two MC service IDs acknowledged for one client.
    #[test]
    fn a_blind_write_breaks_one_mc_id_per_client() {
        let (_, failing) = check(SharedStoreModel {
            write: WriteRule::Blind,
            ..SharedStoreModel::default()
        });
        assert!(
            failing.contains(&"one-mc-id-per-client-across-instances"),
            "{failing:?}"
        );
        assert!(failing.contains(&"a-conflict-is-reloaded"), "{failing:?}");
    }
}
