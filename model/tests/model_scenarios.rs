//! Named scenarios, pinned shortest witnesses, and the trace rendering.

use mcx_model::env::{step, Msg, PropertyKind, Req, RequestKind, Sender, Tok, SCENARIOS};
use mcx_model::{EnvAction, McxModel, ModelConfig, NetworkKind, TokenKind, Variant};

/// UE 1 alone (no companion UE): the pinned witnesses below are UE 1's stories, and SIP-ETag
/// numbers and shortest paths do not depend on a companion's set-up.
fn model(v: Variant) -> McxModel {
    ModelConfig::for_variant(v).with_ues(1).into_model()
}

/// The default configuration (UE 1 and the companion UE of user 0).
fn default_model(v: Variant) -> McxModel {
    ModelConfig::for_variant(v).into_model()
}

/// The shortest path (at most 12 actions) to a state where property `name`'s condition holds.
fn shortest_witness(m: &McxModel, name: &str) -> Vec<EnvAction> {
    shortest_to(m, name, true).expect("reachable")
}

/// The shortest path (at most 12 actions) to a state where property `name`'s condition fails.
fn shortest_violation(m: &McxModel, name: &str) -> Vec<EnvAction> {
    shortest_to(m, name, false).expect("violated")
}

fn shortest_to(m: &McxModel, name: &str, holds: bool) -> Option<Vec<EnvAction>> {
    let cond = m
        .catalogue()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no property {name}"))
        .condition;
    m.shortest_path(|s| cond(m, s) == holds, 12)
}

#[test]
fn the_default_companion_ue_is_bound_at_the_start_and_ue1_joins_it() {
    let m = default_model(Variant::PostCr);
    assert_eq!((m.config().ues, m.config().companions), (2, 1));
    // The initial state: the companion (UE2) registered and bound as user 0, nothing else.
    let s0 = m.init_state();
    assert!(m.ue_bound(&s0, 1), "the companion starts bound");
    assert!(!m.ue_bound(&s0, 0));
    assert_eq!(s0.step, 0, "set-up facts are not the run's");
    let cond = m
        .catalogue()
        .into_iter()
        .find(|p| p.name == "two-ues-of-one-user-bound")
        .unwrap()
        .condition;
    assert!(!cond(&m, &s0));
    let path = m.shortest_path(|s| cond(&m, s), 12).expect("reachable");
    let t = m.trace(&path);
    let set_up: Vec<_> = t.steps.iter().filter(|s| s.step == 0).collect();
    assert!(
        set_up
            .iter()
            .all(|s| s.text.contains("UE2") && !s.text.contains("UE1")),
        "{}",
        t.numbered()
    );
    assert_eq!(set_up.len(), 5, "{}", t.numbered());
    let last = t.steps.last().unwrap();
    assert_eq!(last.sender.as_deref(), Some("UE1"), "{}", t.numbered());
    assert_eq!(last.status, Some(200));
    let end = m.run(&path).unwrap().pop().unwrap();
    assert!(m.ue_bound(&end, 0) && m.ue_bound(&end, 1));
    // The companion sends nothing during the run (budget 0).
    assert!(!m.enabled(&end).iter().any(|a| matches!(
        a,
        EnvAction::Authorize { ue: 1, .. } | EnvAction::Deregister(1)
    )));
}

#[test]
fn pre_cr_default_the_attacker_replays_the_companions_clear_token_at_once() {
    // Pre-CR PUBLISH-borne tokens cross the SIP core in clear: the companion's, sent in the
    // set-up, is presented by the attacker from its own IMPU as the first step of the run.
    let m = default_model(Variant::PreCr);
    let path = shortest_violation(&m, "no-impersonation");
    let tok = Tok {
        user: 0,
        issued: 0,
        kind: TokenKind::Valid,
    };
    assert_eq!(
        path,
        vec![EnvAction::Replay {
            token: tok,
            service: 0
        }]
    );
}

fn reached(m: &McxModel, property: &str, actions: &[EnvAction]) -> bool {
    let states = m
        .run(actions)
        .unwrap_or_else(|i| panic!("{property}: action {i} not enabled: {actions:?}"));
    let info = m
        .catalogue()
        .into_iter()
        .find(|p| p.name == property)
        .expect("scenario names a property");
    // Step facts last one state, so look along the whole run.
    match info.kind {
        // A scenario for an `always` property is its counterexample.
        PropertyKind::Always | PropertyKind::Eventually => {
            states.iter().any(|s| !(info.condition)(m, s))
        }
        PropertyKind::Sometimes => states.iter().any(|s| (info.condition)(m, s)),
    }
}

#[test]
fn every_scenario_reaches_its_property_where_it_applies() {
    for v in Variant::ALL {
        let mut cfg = ModelConfig::for_variant(v);
        cfg.network = NetworkKind::Duplicating;
        // impu-change needs a second IMPU (ct1-rel18's default has one).
        cfg.impus_per_ue = 2;
        // The duplicate of the first PUBLISH draws a third ETag.
        cfg.max_publications = 3;
        let m = cfg.into_model();
        for (name, property, _) in SCENARIOS {
            let actions = m.scenario(name);
            // Post-CR tokens are protected and never in REGISTER: nothing to replay.
            if let ("replay", Variant::PostCr) = (name, v) {
                assert!(actions.is_none(), "replay must not exist in post-cr");
                continue;
            }
            let actions = actions.unwrap_or_else(|| panic!("{v}: scenario {name} not built"));
            // Post-CR the late duplicate of user A's PUBLISH is protected under A's CSK, which
            // the user switch dropped (TS 33.180 5.4; CR 5.1.3.2.1): the mechanism refuses it.
            if let ("duplicate-after-switch", Variant::PostCr) = (name, v) {
                assert!(
                    !reached(&m, property, &actions),
                    "post-cr: the dropped CSK must stop the late duplicate"
                );
                continue;
            }
            assert!(
                reached(&m, property, &actions),
                "{v}: scenario {name} does not reach {property}"
            );
        }
    }
}

#[test]
fn duplicate_scenario_needs_a_duplicating_network() {
    assert!(model(Variant::PostCr)
        .scenario("duplicate-after-switch")
        .is_none());
    assert!(model(Variant::PostCr)
        .scenario("no-such-scenario")
        .is_none());
}

#[test]
fn a_disabled_action_is_reported_by_index() {
    let m = model(Variant::PostCr);
    // Authorizing before anything happened is not enabled (not registered, no token).
    let r = m.run(&[
        EnvAction::Register(0),
        EnvAction::Authorize { ue: 0, service: 0 },
    ]);
    assert_eq!(r.err(), Some(1));
}

#[test]
fn pinned_shortest_user_switch_witness_post_cr() {
    let m = model(Variant::PostCr);
    let path = shortest_witness(&m, "rebound-after-user-switch");
    let t = m.trace(&path);
    let kinds: Vec<(String, RequestKind)> = t
        .steps
        .iter()
        .map(|s| (s.action.clone(), s.request))
        .collect();
    use RequestKind::*;
    let want: Vec<(String, RequestKind)> = [
        ("log-on", LogOn),
        ("send", Register),
        ("send", PublishAuth),
        ("deliver", Register),
        ("deliver", PublishAuth),
        ("log-on", LogOn),
        ("send", PublishAuth),
        ("deliver", PublishAuth),
    ]
    .into_iter()
    .map(|(a, k)| (a.to_string(), k))
    .collect();
    assert_eq!(kinds, want, "{}", t.numbered());
    let last = t.steps.last().unwrap();
    assert_eq!(last.status, Some(200));
    assert_eq!(
        last.if_match.as_deref(),
        Some("e0"),
        "modify with SIP-If-Match"
    );
    assert_eq!(last.etag.as_deref(), Some("e1"), "a fresh ETag");
    assert!(last.events[0].starts_with("rebound "), "{:?}", last.events);
    let states = m.run(&path).unwrap();
    assert_ne!(states.last().unwrap().step & step::REBOUND, 0);
}

#[test]
fn pinned_shortest_replay_counterexample_pre_cr() {
    let m = model(Variant::PreCr);
    let path = shortest_violation(&m, "no-impersonation");
    let tok = Tok {
        user: 0,
        issued: 0,
        kind: TokenKind::Valid,
    };
    assert_eq!(
        path,
        vec![
            EnvAction::LogOn {
                ue: 0,
                user: 0,
                kind: TokenKind::Valid
            },
            EnvAction::Register(0),
            // The attacker acts on what reached the server (ModelConfig::attacker_preempts).
            EnvAction::Deliver {
                msg: Msg {
                    from: Sender::Ue(0),
                    dup: false,
                    stale: false,
                    req: Req::Register {
                        impu: 0,
                        expires: 8,
                        mc_tags: true,
                        token: Some(tok),
                    },
                },
                keep_copy: false,
            },
            EnvAction::Replay {
                token: tok,
                service: 0
            },
        ]
    );
    let t = m.trace(&path);
    let last = t.steps.last().unwrap();
    assert_eq!(last.actor, "Attacker");
    assert_eq!(last.impu.as_deref(), Some("sip:attacker@ims.example"));
    assert_eq!(last.status, Some(200));
    assert_eq!(last.token.as_ref().unwrap().id, "tok-A-t0-valid");
    assert!(!last.token.as_ref().unwrap().protected);
    let mermaid = t.mermaid(1, true);
    assert!(mermaid.starts_with("sequenceDiagram\n"));
    for lane in ["UE1", "Attacker", "IdMS", "SIP core", "MCX server"] {
        assert!(mermaid.contains(lane), "{lane} missing:\n{mermaid}");
    }
    assert!(t.numbered().contains("  4. [t=0] Attacker"));
}

#[test]
fn post_cr_attacker_sees_no_token() {
    // Walk the `user-switch` scenario: every token crossed the SIP core, none could be read; the
    // attacker captured the protected PUBLISHes (to resend them as they are).
    let m = model(Variant::PostCr);
    let states = m.run(&m.scenario("user-switch").unwrap()).unwrap();
    assert!(states.iter().all(|s| s.captured.is_empty()));
    assert!(states.iter().any(|s| !s.sealed.is_empty()));
    // The same scenario in ct1-rel18 exposes tokens.
    let m = model(Variant::Ct1Rel18);
    let states = m.run(&m.scenario("user-switch").unwrap()).unwrap();
    assert!(states.iter().any(|s| !s.captured.is_empty()));
}

#[test]
fn forged_pai_is_refused_with_403() {
    let m = model(Variant::PostCr);
    let mut actions = m.scenario("bound").unwrap();
    actions.push(EnvAction::ForgePai { impu: 0 });
    let t = m.trace(&actions);
    let last = t.steps.last().unwrap();
    assert_eq!(last.via.as_deref(), Some("direct"));
    assert_eq!(last.status, Some(403));
    assert_eq!(last.outcome.as_deref(), Some("untrusted_source"));
    assert!(last.events.is_empty());
}

#[test]
fn token_ids_round_trip() {
    for kind in [
        TokenKind::Valid,
        TokenKind::Expired,
        TokenKind::WrongScope,
        TokenKind::Forged,
    ] {
        let t = Tok {
            user: 3,
            issued: 2,
            kind,
        };
        assert_eq!(Tok::parse(&t.id()), Some(t));
    }
    assert_eq!(Tok::parse("tok-A-tx-valid"), None);
    assert_eq!(Tok::parse("tok-AB-t0-valid"), None);
    assert_eq!(Tok::parse("nonsense"), None);
}

#[test]
fn trace_steps_serialize_with_the_fields_the_trace_command_reads() {
    let m = model(Variant::PostCr);
    let t = m.trace(&m.scenario("log-off").unwrap());
    let v = serde_json::to_value(&t.steps).unwrap();
    let last = &v.as_array().unwrap().last().unwrap();
    for f in [
        "step",
        "time",
        "actor",
        "sender",
        "action",
        "request",
        "via",
        "impu",
        "client_id",
        "user",
        "mc_id",
        "token",
        "if_match",
        "expires",
        "status",
        "etag",
        "events",
    ] {
        assert!(last.get(f).is_some(), "field {f} missing in {last}");
    }
    assert_eq!(last["request"], "remove");
    assert_eq!(last["status"], 200);
    assert_eq!(last["expires"], 0);
    let first_send = t.steps.iter().find(|s| s.action == "deliver").unwrap();
    assert_eq!(first_send.sender.as_deref(), Some("UE1"));
    assert_eq!(first_send.via.as_deref(), Some("sip-core"));
}
