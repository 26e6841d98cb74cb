//! `mcx-authz check --variant all --json` (issue 12): every variant reports at least 22
//! properties, at least 3 of them `eventually`, every verdict as the expectation table predicts,
//! and exit 0; and the CLI's axis flags reach the model (post-cr with protection optional breaks
//! no-impersonation, with a counterexample). Small sizes (one user, one IMPU, time 0..1) keep it
//! to seconds; the full configuration matrix is `model/tests/model_matrix.rs`.

use std::process::Command;

fn check(args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcx-authz"))
        .args(["check", "--json", "--quiet", "--threads", "2"])
        .args(["--impus", "1", "--max-time", "1"])
        .args(args)
        .output()
        .expect("run mcx-authz check");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn check_all_reports_22_properties_3_eventually_per_variant_as_expected() {
    let (code, json) = check(&["--variant", "all", "--users", "1"]);
    assert_eq!(code, 0, "{json:#}");
    let variants = json.as_array().expect("an array for --variant all");
    assert_eq!(variants.len(), 3);
    for v in variants {
        let props = v["properties"].as_array().unwrap();
        let eventually = props.iter().filter(|p| p["kind"] == "eventually").count();
        assert!(props.len() >= 22, "{}: {}", v["variant"], props.len());
        assert!(eventually >= 3, "{}: {eventually}", v["variant"]);
        assert_eq!(v["as_expected"], true, "{}", v["variant"]);
        for p in props {
            assert_eq!(
                p["verdict"], p["expected"],
                "{} {}",
                v["variant"], p["name"]
            );
        }
    }
}

#[test]
fn the_axis_flags_reach_the_model() {
    let verdict = |json: &serde_json::Value, name: &str| {
        json["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    let (code, mechanism) = check(&["--variant", "post-cr", "--users", "2"]);
    assert_eq!(code, 0);
    assert_eq!(verdict(&mechanism, "no-impersonation")["verdict"], "holds");
    assert_eq!(
        mechanism["config"]["policy"]["token_protection"],
        "required"
    );
    let (code, optional) = check(&[
        "--variant",
        "post-cr",
        "--users",
        "2",
        "--token-protection",
        "optional",
    ]);
    assert_eq!(code, 0, "as the table predicts");
    let p = verdict(&optional, "no-impersonation");
    assert_eq!(p["verdict"], "violated");
    // Set-up steps (step 0: the companion UE's registration and first PUBLISH) build the
    // initial state; the counterexample proper follows them.
    let proper = |t: &Vec<serde_json::Value>| t.iter().filter(|s| s["step"] != 0).count();
    assert!(
        p["trace"].as_array().is_some_and(|t| proper(t) <= 5),
        "{p:#}"
    );
    assert_eq!(optional["config"]["policy"]["token_protection"], "optional");
    let (_, mixed) = check(&[
        "--variant",
        "post-cr",
        "--carriage",
        "both",
        "--csk-tie",
        "ignored",
        "--ue-protection",
        "on",
        "--users",
        "1",
    ]);
    assert_eq!(mixed["config"]["carriage"], "both");
    assert_eq!(mixed["config"]["policy"]["csk_tie"], "ignored");
    assert_eq!(mixed["config"]["ue_protection"], "on");
}

/// Issue 13: `check --shared-store` runs the two-instance model: its properties hold with the
/// compare-and-set at the pinned state count, and the blind-write mutation breaks
/// one-mc-id-per-client-across-instances with a counterexample (exit 1).
#[test]
fn check_shared_store_holds_and_its_mutation_fails() {
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mcx-authz"))
            .args(["check", "--shared-store", "--json", "--threads", "2"])
            .args(extra)
            .output()
            .expect("run mcx-authz check");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), json)
    };
    let verdict = |json: &serde_json::Value, name: &str| {
        json["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {json:#}"))["verdict"]
            .clone()
    };
    let (code, cas) = run(&[]);
    assert_eq!(code, 0, "{cas:#}");
    assert_eq!(cas["unique_states"], cas["pinned_states"]);
    assert_eq!(
        cas["unique_states"],
        mcx_model::env::shared_store::PINNED_STATES
    );
    assert_eq!(
        verdict(&cas, "one-mc-id-per-client-across-instances"),
        "holds"
    );
    assert_eq!(verdict(&cas, "a-conflict-is-reloaded"), "holds");
    let (code, blind) = run(&["--blind-write"]);
    assert_eq!(code, 1, "{blind:#}");
    assert_eq!(
        verdict(&blind, "one-mc-id-per-client-across-instances"),
        "fails"
    );
    let path = blind["properties"][0]["path"]
        .as_array()
        .expect("a counterexample");
    assert!(path.len() >= 6, "{path:?}");
}
