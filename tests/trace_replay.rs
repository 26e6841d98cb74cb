//! Model traces replayed with SIPp against the real `mcx-authz serve` (issue 5 item 2).
//!
//! For every variant, the witness of every reachability (`sometimes`) property the model can
//! reach in a small configuration (the shortest path, `McxModel::shortest_path`) is put in the
//! shape of `mcx-authz check --json` (`check::json_report`), turned into a SIPp scenario by the
//! `mcx-authz trace --from` command itself, and run against a fresh server that holds the model's
//! policy, a manual clock at the time base and lab controls (ticks are `POST /clock/advance`).
//! SIPp must exit 0 (every response as the model predicts: status, Warning code, SIP-ETag) and
//! the server's binding and registration tables must then equal the model's final machine state.
//! A negative test runs one generated scenario against a server whose policy changes an answer
//! and asserts that SIPp fails at that response.
//!
//! Needs `sipp` (Debian sip-tester) and `curl`: a missing tool fails the tests, naming
//! `bash .ci/install-deps.sh` (which `./test` runs first).

mod external;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use external::*;
use mcx_authz::cli::check::{json_report, PropertyReport, VariantReport};
use mcx_authz::server::admin::{BindingView, RegistrationView};
use mcx_authz::token::LabIdms;
use mcx_model::env::{EnvAction, EnvState, PropertyKind, Verdict};
use mcx_model::{McxModel, ModelConfig, Variant};

/// Server time of model tick 0.
const BASE: u64 = 1_900_000_000;
/// Bound on one SIPp run.
const SIPP_LIMIT: Duration = Duration::from_secs(60);
/// Breadth-first bound for witnesses.
const MAX_DEPTH: usize = 12;
/// Tools the replay needs: SIPp, and curl for the lab-control `<exec>`s.
const TOOLS: [&str; 2] = ["sipp", "curl"];

/// A configuration small enough for a breadth-first witness search in well under a second, big
/// enough for every reachability property: one UE with two IMPUs, two users, time past a token's
/// life, the attacker (its set-up registration is part of every replay), an unordered network.
fn config(variant: Variant) -> ModelConfig {
    let mut c = ModelConfig::small(variant);
    c.ues = 1;
    c.users = 2;
    c.impus_per_ue = 2;
    c.token_life = 2;
    c.max_time = 2;
    c
}

/// A witness: the property, its actions and the model's final state.
struct Witness {
    property: &'static str,
    actions: Vec<EnvAction>,
    last: EnvState,
}

/// The shortest witness of every `sometimes` property the configuration is expected to reach.
fn witnesses(model: &McxModel) -> Vec<Witness> {
    let mut out = Vec::new();
    for info in model.catalogue() {
        if info.kind != PropertyKind::Sometimes {
            continue;
        }
        let expected = model.expected(info.name).expect("expectation recorded");
        let path = model.shortest_path(|s| (info.condition)(model, s), MAX_DEPTH);
        if expected.verdict == Verdict::Violated {
            assert!(
                path.is_none(),
                "{}: expected unreachable here, found a witness",
                info.name
            );
            continue;
        }
        let actions = path.unwrap_or_else(|| {
            panic!(
                "{}: expected reachable ({}), no witness within {MAX_DEPTH} steps",
                info.name, expected.because
            )
        });
        // An attacker that resends a protected PUBLISH is answered by the CSK tie and the
        // I_MESSAGE replay cache, which need clause 9 and MIKEY-SAKKE on the wire (`trace`
        // refuses such a trace); the machine tests cover those decisions.
        if model
            .trace(&actions)
            .steps
            .iter()
            .any(|s| s.actor == "Attacker" && s.token.as_ref().is_some_and(|t| t.protected))
        {
            continue;
        }
        let states = model.run(&actions).expect("the witness runs");
        assert!((info.condition)(model, states.last().unwrap()));
        out.push(Witness {
            property: info.name,
            last: states.last().unwrap().clone(),
            actions,
        });
    }
    out
}

/// The `check --json` report holding these witnesses (the shape `mcx-authz trace --from` reads).
fn check_json(model: &McxModel, ws: &[Witness]) -> String {
    let cfg = model.config().clone();
    let properties = model
        .catalogue()
        .into_iter()
        .map(|info| {
            let w = ws.iter().find(|w| w.property == info.name);
            let expected = model.expected(info.name).unwrap();
            PropertyReport {
                name: info.name,
                kind: info.kind,
                clause: info.clause,
                meaning: info.meaning,
                verdict: if w.is_some() {
                    Verdict::Holds
                } else {
                    expected.verdict
                },
                expected: expected.verdict,
                expected_because: expected.because,
                trace: w.map(|w| model.trace(&w.actions).steps),
                mermaid: None,
            }
        })
        .collect();
    let report = VariantReport {
        variant: cfg.variant,
        default_config: cfg.is_default(),
        config: cfg,
        unique_states: 0,
        generated_states: 0,
        max_depth: MAX_DEPTH,
        seconds: 0.0,
        threads: 1,
        properties,
    };
    serde_json::to_string_pretty(&json_report(&report)).unwrap()
}

/// `mcx-authz serve` with a generated `server.toml` (listeners moved to ephemeral loopback
/// ports, the admin view to `admin`), and the lab IdMS in `lab`.
/// The server under replay: the shared harness's `McxServer`, on the generated `server.toml`
/// with the admin view on the port the scenario's clock calls were generated for.
struct Server {
    udp: SocketAddr,
    admin: SocketAddr,
    _inner: McxServer,
}

impl Server {
    fn start(scratch: &Scratch, server_toml: &str, admin: SocketAddr, lab: &Path) -> Server {
        let text = server_toml
            .replace("\"127.0.0.1:5060\"", "\"127.0.0.1:0\"")
            .replace("\"127.0.0.1:8080\"", &format!("\"{admin}\""));
        assert!(
            text.contains(&format!("listen = \"{admin}\"")),
            "server.toml without the admin listener:\n{server_toml}"
        );
        let config = scratch.join("server.toml");
        std::fs::write(&config, text).unwrap();
        let inner = McxServer::spawn(scratch, &config, lab.to_path_buf());
        assert_eq!(inner.admin, admin);
        Server {
            udp: inner.udp,
            admin: inner.admin,
            _inner: inner,
        }
    }

    fn bindings(&self) -> Vec<BindingView> {
        serde_json::from_str(&http_get(self.admin, "/bindings")).unwrap()
    }

    fn registrations(&self) -> Vec<RegistrationView> {
        serde_json::from_str(&http_get(self.admin, "/registrations")).unwrap()
    }
}

/// `mcx-authz trace --from report.json --property P` into `out`.
fn generate(
    report: &Path,
    variant: Variant,
    property: &str,
    out: &Path,
    lab: &Path,
    admin: SocketAddr,
) {
    let r = run_bounded(
        "mcx-authz trace",
        Command::new(mcx_bin())
            .arg("trace")
            .arg("--from")
            .arg(report)
            .args(["--variant", variant.name(), "--property", property])
            .arg("--out")
            .arg(out)
            .arg("--data-dir")
            .arg(lab)
            .args(["--time-base", &BASE.to_string()])
            .args(["--clock-url", &format!("http://{admin}")])
            .args(["--settle-ms", "400", "--response-timeout-ms", "3000"]),
        Duration::from_secs(30),
    );
    assert_eq!(r.code(), Some(0), "mcx-authz trace: {r:?}");
    assert!(r.stdout.contains("sipp -sf scenario.xml"), "{}", r.stdout);
    for f in [
        "scenario.xml",
        "tokens.csv",
        "trace.itf.json",
        "server.toml",
        "README",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}

/// Runs `out/scenario.xml` against `udp` over UDP.
fn sipp(out: &Path, udp: SocketAddr) -> Finished {
    let port = free_ports(1).to_string();
    let mut cmd = Command::new(find_tool("sipp").unwrap());
    cmd.arg("-sf")
        .arg(out.join("scenario.xml"))
        .arg(udp.to_string())
        .arg("-inf")
        .arg(out.join("tokens.csv"))
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .args(["-default_behaviors", "all,-bye"])
        .args(["-i", "127.0.0.1", "-p", &port])
        .arg("-trace_err")
        .arg("-error_file")
        .arg(out.join("sipp.err"))
        .arg("-trace_logs")
        .arg("-log_file")
        .arg(out.join("sipp.log"))
        .env("PATH", path_with(&TOOLS))
        .current_dir(out);
    run_bounded("sipp", &mut cmd, SIPP_LIMIT)
}

/// The model's machine as the admin view shows it (times shifted by the base; ETags by
/// presence, since the server draws its own).
fn model_tables(s: &EnvState) -> (Vec<BindingView>, Vec<(String, u64)>) {
    let mut b: Vec<BindingView> = mcx_authz::server::admin::binding_views(&s.server)
        .into_iter()
        .map(|v| BindingView {
            token_exp: BASE + v.token_exp,
            etag: v.etag.map(|_| "present".to_owned()),
            publication_expires: v.publication_expires.map(|t| BASE + t),
            ..v
        })
        .collect();
    b.sort_by(|x, y| (&x.impu, &x.service, &x.client_id).cmp(&(&y.impu, &y.service, &y.client_id)));
    let mut r: Vec<(String, u64)> = s
        .server
        .registrations()
        .map(|(i, r)| (i.to_string(), BASE + r.expires_at.0))
        .collect();
    r.sort();
    (b, r)
}

fn server_tables(server: &Server) -> (Vec<BindingView>, Vec<(String, u64)>) {
    let mut b: Vec<BindingView> = server
        .bindings()
        .into_iter()
        .map(|mut v| {
            v.etag = v.etag.map(|_| "present".to_owned());
            v
        })
        .collect();
    b.sort_by(|x, y| (&x.impu, &x.service, &x.client_id).cmp(&(&y.impu, &y.service, &y.client_id)));
    let mut r: Vec<(String, u64)> = server
        .registrations()
        .into_iter()
        .map(|r| (r.impu, r.expires_at))
        .collect();
    r.sort();
    (b, r)
}

fn report_failure(what: &str, out: &Path, r: &Finished) -> String {
    format!(
        "{what}: sipp exit {:?} after {:?}\n--- sipp errors\n{}\n--- sipp log\n{}\n--- sipp stdout (tail)\n{}",
        r.status,
        r.elapsed,
        tail(&out.join("sipp.err"), 30),
        tail(&out.join("sipp.log"), 30),
        r.stdout.lines().rev().take(15).collect::<Vec<_>>().join("\n"),
    )
}

/// Every witness of `variant`, replayed.
fn replay_witnesses(variant: Variant) {
    require_tools(&TOOLS);
    let model = config(variant).into_model();
    let ws = witnesses(&model);
    assert!(
        ws.iter().any(|w| w.property == "bound") && ws.len() >= 6,
        "{variant}: only {:?}",
        ws.iter().map(|w| w.property).collect::<Vec<_>>()
    );
    let scratch = Scratch::new(&format!("trace-{variant}"));
    let report = scratch.join("check.json");
    std::fs::write(&report, check_json(&model, &ws)).unwrap();
    let mut replayed = Vec::new();
    for w in &ws {
        let dir = Scratch::new(&format!("trace-{variant}-{}", w.property));
        let lab = dir.join("lab");
        LabIdms::keygen(&lab, jsonwebtoken::Algorithm::ES256, false).expect("lab IdMS");
        let out = dir.join("out");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_ports(1)).parse().unwrap();
        generate(&report, variant, w.property, &out, &lab, admin);
        let server_toml = std::fs::read_to_string(out.join("server.toml")).unwrap();
        let server = Server::start(&dir, &server_toml, admin, &lab);
        let r = sipp(&out, server.udp);
        assert_eq!(
            r.code(),
            Some(0),
            "{}",
            report_failure(&format!("{variant} {}", w.property), &out, &r)
        );
        // Every predicted response was logged by the scenario, one line each.
        let log = std::fs::read_to_string(out.join("sipp.log")).unwrap_or_default();
        let sent = model
            .trace(&w.actions)
            .steps
            .iter()
            .filter(|s| {
                mcx_authz::trace::sipp::is_delivery(s) && s.via.as_deref() == Some("sip-core")
            })
            .count()
            + usize::from(model.config().attacker);
        assert_eq!(
            log.matches("as predicted").count(),
            sent,
            "{variant} {}: responses checked\n{log}",
            w.property
        );
        assert_eq!(
            server_tables(&server),
            model_tables(&w.last),
            "{variant} {}: the server's tables after the replay differ from the model's final machine state",
            w.property
        );
        replayed.push(w.property);
    }
    eprintln!("{variant}: replayed {replayed:?}");
}

#[test]
fn witnesses_replay_post_cr() {
    replay_witnesses(Variant::PostCr);
}

#[test]
fn witnesses_replay_pre_cr() {
    replay_witnesses(Variant::PreCr);
}

#[test]
fn witnesses_replay_ct1_rel18() {
    replay_witnesses(Variant::Ct1Rel18);
}

/// A server whose policy changes one answer fails the generated scenario at that answer: the
/// `bound` witness PUBLISHes with `Expires: 2` (ticks), and a server with `min_expires = 60`
/// answers 423 (RFC 3903 step 4) where the model predicts 200.
#[test]
fn a_server_with_another_policy_fails_the_replay() {
    require_tools(&TOOLS);
    let variant = Variant::PostCr;
    let model = config(variant).into_model();
    let ws: Vec<Witness> = witnesses(&model)
        .into_iter()
        .filter(|w| w.property == "bound")
        .collect();
    assert_eq!(ws.len(), 1);
    let dir = Scratch::new("trace-negative");
    let report = dir.join("check.json");
    std::fs::write(&report, check_json(&model, &ws)).unwrap();
    let lab = dir.join("lab");
    LabIdms::keygen(&lab, jsonwebtoken::Algorithm::ES256, false).unwrap();
    let out = dir.join("out");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_ports(1)).parse().unwrap();
    generate(&report, variant, "bound", &out, &lab, admin);
    let server_toml = std::fs::read_to_string(out.join("server.toml")).unwrap();
    assert!(server_toml.contains("\nmin_expires = 1\n"), "{server_toml}");
    let other = server_toml.replace("\nmin_expires = 1\n", "\nmin_expires = 60\n");
    let server = Server::start(&dir, &other, admin, &lab);
    let r = sipp(&out, server.udp);
    assert_ne!(
        r.code(),
        Some(0),
        "{}",
        report_failure("a server with min_expires 60 passed the replay", &out, &r)
    );
    assert!(r.status.is_some(), "sipp hung until the limit");
    let errors = std::fs::read_to_string(out.join("sipp.err")).unwrap_or_default();
    assert!(
        errors.contains("423"),
        "SIPp should fail on the 423 where the model predicts 200:\n{errors}"
    );
}

/// `mcx-authz trace --scenario` without lab controls: ticks become pauses, restarts comments;
/// the forged-PAI request of the attacker is a comment; the ITF document has one state per step
/// plus the initial one. (Generation only; no server.)
#[test]
fn scenario_generation_without_clock_control() {
    let dir = Scratch::new("trace-gen");
    let out = dir.join("out");
    let lab = dir.join("lab");
    let r = run_bounded(
        "mcx-authz trace",
        Command::new(mcx_bin())
            .arg("trace")
            .args(["--scenario", "token-expiry", "--variant", "ct1-rel18"])
            .arg("--out")
            .arg(&out)
            .arg("--data-dir")
            .arg(&lab)
            .args(["--tick-ms", "250", "--time-base", &BASE.to_string()]),
        Duration::from_secs(30),
    );
    assert_eq!(r.code(), Some(0), "{r:?}");
    let xml = std::fs::read_to_string(out.join("scenario.xml")).unwrap();
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(&xml, opts).expect("well-formed XML");
    let cfg = ModelConfig::for_variant(Variant::Ct1Rel18);
    let ticks = usize::from(cfg.token_life);
    assert_eq!(xml.matches("<pause milliseconds=\"250\"/>").count(), ticks);
    assert!(!xml.contains("<exec"));
    let itf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trace.itf.json")).unwrap())
            .unwrap();
    let model = cfg.into_model();
    let steps = model.trace(&model.scenario("token-expiry").unwrap()).steps;
    assert_eq!(itf["states"].as_array().unwrap().len(), steps.len() + 1);
    assert_eq!(itf["#meta"]["format"], "ITF");
    assert_eq!(itf["states"][0]["#meta"]["index"], 0);
    // The default's companion UE is registered and bound in set-up steps, numbered 0, before
    // the scenario's first step.
    let set_up = steps.iter().filter(|s| s.step == 0).count();
    assert_eq!(
        set_up, 5,
        "REGISTER, its delivery, log-on, PUBLISH, its delivery"
    );
    assert_eq!(itf["states"][set_up]["step"]["#bigint"], "0");
    assert_eq!(itf["states"][set_up + 1]["step"]["#bigint"], "1");
    // Unknown scenario and missing --property get clear errors.
    let bad = run_bounded(
        "mcx-authz trace",
        Command::new(mcx_bin())
            .arg("trace")
            .args(["--scenario", "no-such", "--variant", "post-cr"])
            .arg("--out")
            .arg(dir.join("bad"))
            .arg("--data-dir")
            .arg(&lab),
        Duration::from_secs(30),
    );
    assert_ne!(bad.code(), Some(0));
    assert!(bad.stderr.contains("unknown scenario"), "{}", bad.stderr);
}

/// Steps the model: each intent, then every request in flight delivered (first deliverable
/// first, no copies kept).
fn walk(model: &McxModel, intents: &[EnvAction]) -> (Vec<EnvAction>, EnvState) {
    let mut s = model.init_state();
    let mut actions = Vec::new();
    let step = |s: &mut EnvState, a: EnvAction, actions: &mut Vec<EnvAction>| {
        assert!(model.enabled(s).contains(&a), "{a:?} not enabled");
        *s = model.apply(s, &a).expect("applies").0;
        actions.push(a);
    };
    for a in intents {
        step(&mut s, a.clone(), &mut actions);
        while let Some(d) = model
            .enabled(&s)
            .into_iter()
            .find(|a| matches!(a, EnvAction::Deliver { msg, keep_copy: false } if !msg.dup))
        {
            step(&mut s, d, &mut actions);
        }
    }
    (actions, s)
}

/// A refused token: the scenario checks the TS 24.379 warning code. The replay of an expired
/// token's 403 passes; the same scenario expecting another code fails at that response.
#[test]
fn warning_codes_are_checked() {
    require_tools(&TOOLS);
    let variant = Variant::PostCr;
    let mut cfg = config(variant);
    cfg.token_kinds = vec![mcx_model::TokenKind::Expired];
    let model = cfg.into_model();
    let (actions, last) = walk(
        &model,
        &[
            EnvAction::LogOn {
                ue: 0,
                user: 0,
                kind: mcx_model::TokenKind::Expired,
            },
            EnvAction::Register(0),
            EnvAction::Authorize { ue: 0, service: 0 },
        ],
    );
    let steps = model.trace(&actions).steps;
    let refused = steps.last().unwrap();
    assert_eq!(refused.status, Some(403), "{}", refused.text);
    let warning = refused.warning.clone().expect("a warning");
    assert!(warning.contains("\"101 "), "{warning}");
    let ws = [Witness {
        property: "bound",
        actions,
        last,
    }];
    let dir = Scratch::new("trace-warning");
    let report = dir.join("check.json");
    std::fs::write(&report, check_json(&model, &ws)).unwrap();
    let lab = dir.join("lab");
    LabIdms::keygen(&lab, jsonwebtoken::Algorithm::ES256, false).unwrap();
    let out = dir.join("out");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_ports(1)).parse().unwrap();
    generate(&report, variant, "bound", &out, &lab, admin);
    let xml = std::fs::read_to_string(out.join("scenario.xml")).unwrap();
    let check = "399 [^ ]+ &quot;101 ";
    assert_eq!(xml.matches(check).count(), 1, "{xml}");
    let server_toml = std::fs::read_to_string(out.join("server.toml")).unwrap();
    let server = Server::start(&dir, &server_toml, admin, &lab);
    let r = sipp(&out, server.udp);
    assert_eq!(
        r.code(),
        Some(0),
        "{}",
        report_failure("expired token", &out, &r)
    );
    assert_eq!(server_tables(&server), model_tables(&ws[0].last));
    // The same scenario, expecting warning 102 instead of 101, fails.
    let wrong = dir.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::write(
        wrong.join("scenario.xml"),
        xml.replace(check, "399 [^ ]+ &quot;102 "),
    )
    .unwrap();
    std::fs::copy(out.join("tokens.csv"), wrong.join("tokens.csv")).unwrap();
    let r = sipp(&wrong, server.udp);
    assert_ne!(
        r.code(),
        Some(0),
        "{}",
        report_failure("a wrong warning code passed", &wrong, &r)
    );
    assert!(r.status.is_some(), "sipp hung until the limit");
}
