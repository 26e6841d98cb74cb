//! Named scenarios: action lists that step the environment deterministically to the behaviour a
//! property names. The conformance test replays them against the running server; the model tests
//! check that each reaches its property.

use stateright::Model;

use super::{EnvAction, EnvState, McxModel, NetworkKind, TokenKind};

/// Every scenario: (name, the property whose witness or counterexample it reaches, what it does).
pub const SCENARIOS: [(&str, &str, &str); 8] = [
    (
        "bound",
        "bound",
        "user A logs on at UE1, UE1 registers and authorizes",
    ),
    (
        "user-switch",
        "rebound-after-user-switch",
        "after `bound`, user B logs on at UE1 and UE1 authorizes again",
    ),
    (
        "impu-change",
        "rebound-after-impu-change",
        "after `bound`, UE1 de-registers its IMPU, registers its second one and authorizes",
    ),
    (
        "deregistration",
        "unbound-after-deregistration",
        "after `bound`, UE1 de-registers",
    ),
    (
        "log-off",
        "unbound-after-log-off",
        "after `bound`, user A logs off",
    ),
    (
        "token-expiry",
        "token-expiry-per-policy",
        "after `bound`, time runs past the token's exp",
    ),
    (
        "replay",
        "no-impersonation",
        "after `bound`, the attacker replays the token the SIP core saw, from its own IMPU",
    ),
    (
        "duplicate-after-switch",
        "s5-user-switch-isolation",
        "UE1's initial PUBLISH for A is duplicated; B logs on and authorizes; the duplicate arrives",
    ),
];

struct Builder<'a> {
    m: &'a McxModel,
    state: EnvState,
    actions: Vec<EnvAction>,
}

impl Builder<'_> {
    fn act(&mut self, a: EnvAction) -> Option<()> {
        if !self.m.enabled(&self.state).contains(&a) {
            return None;
        }
        let next = self.m.next_state(&self.state, a.clone())?;
        if !self.m.within_boundary(&next) {
            return None;
        }
        self.state = next;
        self.actions.push(a);
        Some(())
    }

    /// Delivers the first deliverable request (in action order), without keeping a copy.
    fn deliver_one(&mut self, keep_copy: bool) -> Option<()> {
        let a = self.m.enabled(&self.state).into_iter().find(|a| {
            matches!(a, EnvAction::Deliver { msg, keep_copy: k } if *k == keep_copy && !msg.dup)
        })?;
        self.act(a)
    }

    fn deliver_all(&mut self) -> Option<()> {
        while self.state.net.iter().any(|m| !m.dup) {
            self.deliver_one(false)?;
        }
        Some(())
    }

    fn log_on(&mut self, ue: u8, user: u8) -> Option<()> {
        self.act(EnvAction::LogOn {
            ue,
            user,
            kind: TokenKind::Valid,
        })
    }

    /// Sends the token the way this UE carries it, and lets the network deliver.
    fn authorize(&mut self, ue: u8) -> Option<()> {
        if self.m.config().carriage(usize::from(ue)).in_publish() {
            self.act(EnvAction::Authorize { ue, service: 0 })?;
        } else {
            self.act(EnvAction::Register(ue))?;
        }
        self.deliver_all()
    }

    fn bound(&mut self) -> Option<()> {
        self.log_on(0, 0)?;
        self.act(EnvAction::Register(0))?;
        self.deliver_all()?;
        if self.m.config().carriage(0).in_publish() {
            self.authorize(0)?;
        }
        Some(())
    }
}

impl McxModel {
    /// The action list of scenario `name` (see [`SCENARIOS`]) for this configuration, or `None`
    /// when the scenario cannot happen here (e.g. `replay` without the attacker or with every
    /// token protected, `duplicate-after-switch` without a duplicating network or with fewer
    /// than three publications allowed).
    pub fn scenario(&self, name: &str) -> Option<Vec<EnvAction>> {
        let mut b = Builder {
            m: self,
            state: self.init_state(),
            actions: vec![],
        };
        match name {
            "bound" => b.bound()?,
            "user-switch" => {
                b.bound()?;
                b.log_on(0, 1)?;
                b.authorize(0)?;
            }
            "impu-change" => {
                b.bound()?;
                b.act(EnvAction::ChangeImpu(0))?;
                b.deliver_all()?;
                if self.config().carriage(0).in_publish() {
                    b.authorize(0)?;
                }
            }
            "deregistration" => {
                b.bound()?;
                b.act(EnvAction::Deregister(0))?;
                b.deliver_all()?;
            }
            "log-off" => {
                b.bound()?;
                b.act(EnvAction::LogOff(0))?;
                b.deliver_all()?;
            }
            "token-expiry" => {
                b.bound()?;
                for _ in 0..self.config().token_life {
                    b.act(EnvAction::Tick)?;
                }
            }
            "replay" => {
                b.bound()?;
                let token = *b.state.captured.first()?;
                b.act(EnvAction::Replay { token, service: 0 })?;
                b.deliver_all()?;
            }
            "duplicate-after-switch" => {
                if self.config().network != NetworkKind::Duplicating {
                    return None;
                }
                b.log_on(0, 0)?;
                b.act(EnvAction::Register(0))?;
                if self.config().carriage(0).in_publish() {
                    b.deliver_all()?;
                    b.act(EnvAction::Authorize { ue: 0, service: 0 })?;
                }
                // The request carrying A's token is delivered and a copy stays in the network.
                b.deliver_one(true)?;
                b.log_on(0, 1)?;
                b.authorize(0)?;
                let dup =
                    b.m.enabled(&b.state)
                        .into_iter()
                        .find(|a| matches!(a, EnvAction::Deliver { msg, .. } if msg.dup))?;
                b.act(dup)?;
            }
            _ => return None,
        }
        Some(b.actions)
    }
}
