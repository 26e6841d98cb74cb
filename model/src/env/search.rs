//! Search: running action lists, the enabled actions, state fingerprints, and the breadth-first
//! search for the shortest path to a state (witnesses and counterexamples as short as they come).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use stateright::Model;

use super::{EnvAction, EnvState, McxModel};

impl McxModel {
    /// Every action enabled in `state`, in a fixed order.
    pub fn enabled(&self, state: &EnvState) -> Vec<EnvAction> {
        let mut v = Vec::new();
        self.actions(state, &mut v);
        v
    }

    /// Runs `actions` from the initial state; returns every state visited (the initial state
    /// first), or the index of the first action that is not enabled.
    pub fn run(&self, actions: &[EnvAction]) -> Result<Vec<EnvState>, usize> {
        let mut states = vec![self.init_state()];
        for (i, a) in actions.iter().enumerate() {
            let last = states.last().expect("never empty");
            if !self.enabled(last).contains(a) {
                return Err(i);
            }
            match self.next_state(last, a.clone()) {
                Some(s) if self.within_boundary(&s) => states.push(s),
                _ => return Err(i),
            }
        }
        Ok(states)
    }

    /// A stable hash of a state (for the shortest-path search).
    pub fn fingerprint(state: &EnvState) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        state.hash(&mut h);
        h.finish()
    }

    /// Shortest action sequence (breadth first, single thread) from the initial state to a state
    /// satisfying `goal`, exploring at most `max_depth` steps: pass a `sometimes` property's
    /// condition for its witness, an `always` property's negation for its counterexample.
    /// Deterministic: among paths of the same length the first in action order wins.
    pub fn shortest_path(
        &self,
        goal: impl Fn(&EnvState) -> bool,
        max_depth: usize,
    ) -> Option<Vec<EnvAction>> {
        let init = self.init_state();
        if goal(&init) {
            return Some(vec![]);
        }
        let mut parent: HashMap<u64, (u64, EnvAction)> = HashMap::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let root = Self::fingerprint(&init);
        seen.insert(root);
        let mut frontier = vec![(root, init)];
        let mut actions = Vec::new();
        for _ in 0..max_depth {
            let mut next_frontier = Vec::new();
            for (fp, s) in &frontier {
                actions.clear();
                self.actions(s, &mut actions);
                for a in actions.drain(..) {
                    let Some(n) = self.next_state(s, a.clone()) else {
                        continue;
                    };
                    if !self.within_boundary(&n) {
                        continue;
                    }
                    let nfp = Self::fingerprint(&n);
                    if !seen.insert(nfp) {
                        continue;
                    }
                    parent.insert(nfp, (*fp, a));
                    if goal(&n) {
                        let mut path = Vec::new();
                        let mut cur = nfp;
                        while let Some((p, a)) = parent.get(&cur) {
                            path.push(a.clone());
                            cur = *p;
                        }
                        path.reverse();
                        return Some(path);
                    }
                    next_frontier.push((nfp, n));
                }
            }
            if next_frontier.is_empty() {
                return None;
            }
            frontier = next_frontier;
        }
        None
    }

    /// The shortest run that ends (no action enabled) without ever passing through a state that
    /// satisfies `cond`: an `eventually` property's counterexample. Searches settled runs only
    /// (the only runs that end); `None` when there is none within `max_depth` steps.
    pub fn eventually_counterexample(
        &self,
        cond: impl Fn(&EnvState) -> bool,
        max_depth: usize,
    ) -> Option<Vec<EnvAction>> {
        let ends_badly = |s: &EnvState| s.settled && !cond(s) && self.enabled(s).is_empty();
        // The conditions hold only in settled states and settled runs are deterministic, so a
        // run whose end fails `cond` passed no state satisfying it after settling; check that
        // along the path before offering it.
        let path = self.shortest_path(ends_badly, max_depth)?;
        let states = self.run(&path).ok()?;
        states.iter().all(|s| !cond(s)).then_some(path)
    }
}
