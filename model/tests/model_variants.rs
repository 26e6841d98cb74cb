//! The model's verdicts and sizes, pinned per variant on small configurations (one IMPU per UE,
//! so `rebound-after-impu-change` is unreachable there; a few seconds in debug). The default sizes are checked by `mcx-authz check --variant all` (docs/model.md).
//!
//! Each test states the violated set by hand, so a change to the machine, the environment or the
//! expectation table that moves a verdict fails here and must be explained in docs/findings.md.

use std::collections::BTreeSet;

use mcx_model::env::PropertyKind;
use mcx_model::{
    FailedReauthorization, McxModel, ModelConfig, NetworkKind, TokenExpiry, Variant, Verdict,
};
use stateright::{Checker, Model};

struct Outcome {
    unique: usize,
    /// Names whose verdict is `violated` (always: counterexample found; sometimes: unreachable).
    violated: BTreeSet<&'static str>,
}

fn check(cfg: ModelConfig) -> Outcome {
    let model: McxModel = cfg.into_model();
    let checker = model.clone().checker().spawn_bfs().join();
    assert!(checker.is_done());
    let discoveries = checker.discoveries();
    let mut violated = BTreeSet::new();
    for info in model.catalogue() {
        let found = discoveries.contains_key(info.name);
        let verdict = match (info.kind, found) {
            (PropertyKind::Always, false) | (PropertyKind::Sometimes, true) => Verdict::Holds,
            _ => Verdict::Violated,
        };
        let expected = model
            .expected(info.name)
            .expect("every property has an expectation");
        assert_eq!(
            verdict, expected.verdict,
            "{}: checker says {verdict:?}, the expectation table says {:?} ({})",
            info.name, expected.verdict, expected.because
        );
        if verdict == Verdict::Violated {
            violated.insert(info.name);
        }
    }
    Outcome {
        unique: checker.unique_state_count(),
        violated,
    }
}

fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

#[test]
fn post_cr_small_holds_everything_but_the_register_option() {
    let o = check(ModelConfig::small(Variant::PostCr));
    assert_eq!(
        o.violated,
        set(&["rebound-after-impu-change", "register-token-binds"])
    );
    assert_eq!(o.unique, 6086);
}

#[test]
fn pre_cr_small_breaks_impersonation_switch_isolation_and_registration() {
    let o = check(ModelConfig::small(Variant::PreCr));
    assert_eq!(
        o.violated,
        set(&[
            "no-impersonation",
            "publish-before-registration",
            "rebound-after-impu-change",
            "registration-never-waits-for-token",
            "s5-user-switch-isolation",
        ])
    );
    assert_eq!(o.unique, 34905);
}

#[test]
fn ct1_rel18_small_breaks_what_pre_cr_breaks() {
    let o = check(ModelConfig::small(Variant::Ct1Rel18));
    assert_eq!(
        o.violated,
        set(&[
            "no-impersonation",
            "rebound-after-impu-change",
            "registration-never-waits-for-token",
            "s5-user-switch-isolation",
        ])
    );
    assert_eq!(o.unique, 73328);
}

#[test]
fn post_cr_duplicating_network_breaks_user_switch_isolation() {
    let cfg = ModelConfig {
        network: NetworkKind::Duplicating,
        ..ModelConfig::small(Variant::PostCr)
    };
    let o = check(cfg);
    assert_eq!(
        o.violated,
        set(&[
            "rebound-after-impu-change",
            "register-token-binds",
            "s5-user-switch-isolation",
        ])
    );
}

#[test]
fn post_cr_drop_binding_breaks_failure_atomicity() {
    let mut cfg = ModelConfig::small(Variant::PostCr);
    cfg.policy.failed_reauthorization = FailedReauthorization::DropBinding;
    let o = check(cfg);
    assert_eq!(
        o.violated,
        set(&[
            "rebound-after-impu-change",
            "register-token-binds",
            "s7-failure-atomicity",
        ])
    );
}

#[test]
fn post_cr_ordered_network_never_publishes_before_registration() {
    let cfg = ModelConfig {
        network: NetworkKind::Ordered,
        ..ModelConfig::small(Variant::PostCr)
    };
    let o = check(cfg);
    assert_eq!(
        o.violated,
        set(&[
            "publish-before-registration",
            "rebound-after-impu-change",
            "register-token-binds",
        ])
    );
}

#[test]
fn post_cr_without_attacker_and_with_end_binding_still_holds() {
    let mut cfg = ModelConfig {
        attacker: false,
        ..ModelConfig::small(Variant::PostCr)
    };
    cfg.policy.token_expiry = TokenExpiry::EndBinding;
    let o = check(cfg);
    assert_eq!(
        o.violated,
        set(&["rebound-after-impu-change", "register-token-binds"])
    );
}

#[test]
fn pre_cr_without_attacker_has_no_impersonation() {
    let cfg = ModelConfig {
        attacker: false,
        ..ModelConfig::small(Variant::PreCr)
    };
    let o = check(cfg);
    assert!(!o.violated.contains("no-impersonation"));
    assert!(o.violated.contains("registration-never-waits-for-token"));
}
