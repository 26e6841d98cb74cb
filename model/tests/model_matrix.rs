//! The expectation table (`model/src/env/properties.rs`, `expected`) checked over a matrix of
//! configurations: every network (ordered, unordered, duplicating) × every variant × attacker
//! on and off, on small sizes (one user, one IMPU, time 0..1), so that a verdict the table does
//! not predict for some configuration fails here and not only in the defaults; and the three
//! post-cr runs that docs/model-results-wave3.md shows side by side for no-impersonation.

use mcx_model::env::PropertyKind;
use mcx_model::{CskTie, McxModel, ModelConfig, NetworkKind, TokenProtection, Variant, Verdict};
use stateright::{Checker, Model};

/// Runs the exhaustive check; returns (property, checker verdict, expected verdict, why) for
/// every property whose verdict differs from the table's.
fn mismatches(cfg: &ModelConfig) -> Vec<String> {
    let model: McxModel = cfg.clone().into_model();
    let checker = model.clone().checker().threads(2).spawn_bfs().join();
    assert!(checker.is_done());
    let discoveries = checker.discoveries();
    let mut out = Vec::new();
    for info in model.catalogue() {
        let verdict = info.kind.verdict(discoveries.contains_key(info.name));
        let want = model
            .expected(info.name)
            .unwrap_or_else(|| panic!("no expectation for {}", info.name));
        if verdict != want.verdict {
            out.push(format!(
                "{} {} attacker={} {}: checker {:?}, table {:?} ({})",
                cfg.variant,
                cfg.network,
                cfg.attacker,
                info.name,
                verdict,
                want.verdict,
                want.because
            ));
        }
    }
    out
}

fn matrix_config(variant: Variant, network: NetworkKind, attacker: bool) -> ModelConfig {
    ModelConfig {
        users: 1,
        impus_per_ue: 1,
        max_time: 1,
        network,
        attacker,
        ..ModelConfig::for_variant(variant)
    }
}

#[test]
fn the_expectation_table_holds_over_the_configuration_matrix() {
    let mut wrong = Vec::new();
    for network in NetworkKind::ALL {
        for variant in Variant::ALL {
            for attacker in [true, false] {
                wrong.extend(mismatches(&matrix_config(variant, network, attacker)));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_catalogue_has_at_least_22_properties_of_which_3_are_eventually() {
    for v in Variant::ALL {
        let m = ModelConfig::for_variant(v).into_model();
        let cat = m.catalogue();
        assert!(cat.len() >= 22, "{v}: {} properties", cat.len());
        let eventually = cat
            .iter()
            .filter(|p| p.kind == PropertyKind::Eventually)
            .count();
        assert!(eventually >= 3, "{v}: {eventually} eventually properties");
        assert_eq!(
            m.properties().len(),
            cat.len(),
            "every catalogue entry is checked"
        );
    }
}

/// The verdict of no-impersonation in `cfg`, the table's, and the shortest counterexample's
/// length when violated.
fn no_impersonation(cfg: ModelConfig) -> (Verdict, Verdict, Option<usize>) {
    let m: McxModel = cfg.into_model();
    let info = m
        .catalogue()
        .into_iter()
        .find(|p| p.name == "no-impersonation")
        .unwrap();
    let path = m.shortest_path(|s| !(info.condition)(&m, s), 12);
    let checker = m.clone().checker().threads(2).spawn_bfs().join();
    let verdict = info
        .kind
        .verdict(checker.discoveries().contains_key(info.name));
    let expected = m.expected(info.name).unwrap().verdict;
    (verdict, expected, path.map(|p| p.len()))
}

#[test]
fn no_impersonation_holds_by_the_mechanism_and_falls_without_it() {
    let small = || ModelConfig {
        impus_per_ue: 1,
        max_time: 1,
        ..ModelConfig::for_variant(Variant::PostCr)
    };
    // 1. The mechanism: UEs upload CSKs, the attacker captures every protected PUBLISH.
    let (v, e, path) = no_impersonation(small());
    assert_eq!((v, e), (Verdict::Holds, Verdict::Holds));
    assert_eq!(path, None, "no counterexample within 12 steps either");
    // 2. Protection optional: the clients (auto) send in clear, and the server takes it.
    let mut optional = small();
    optional.policy.token_protection = TokenProtection::Optional;
    let (v, e, path) = no_impersonation(optional);
    assert_eq!((v, e), (Verdict::Violated, Verdict::Violated));
    assert!(path.is_some_and(|n| n <= 5), "{path:?}");
    // 3. The CSK tie ignored: the captured protected PUBLISH without its I_MESSAGE binds the
    // attacker's IMPU.
    let mut ignored = small();
    ignored.policy.csk_tie = CskTie::Ignored;
    let (v, e, path) = no_impersonation(ignored);
    assert_eq!((v, e), (Verdict::Violated, Verdict::Violated));
    assert!(path.is_some_and(|n| n <= 10), "{path:?}");
    // Optional with clients that protect anyway holds: optional is as strong as its weakest
    // client.
    let mut optional_on = small();
    optional_on.policy.token_protection = TokenProtection::Optional;
    optional_on.ue_protection = mcx_model::env::UeProtection::On;
    let (v, e, _) = no_impersonation(optional_on);
    assert_eq!((v, e), (Verdict::Holds, Verdict::Holds));
    // An on-path attacker that races the first protected PUBLISH wins (spec-level finding).
    let preempts = ModelConfig {
        attacker_preempts: true,
        ..small()
    };
    let (v, e, path) = no_impersonation(preempts);
    assert_eq!((v, e), (Verdict::Violated, Verdict::Violated));
    assert!(path.is_some_and(|n| n <= 5), "{path:?}");
}
