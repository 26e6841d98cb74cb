//! Model ↔ server conformance: what `mcx-authz check` explores is what `mcx-authz serve` does.
//!
//! Each case walks the stateright model (`mcx_model::env`) along a path chosen by proptest from
//! the model's own action alphabet (`McxModel::enabled`: registrations, log-ons with valid,
//! expired, wrongly scoped and forged tokens, PUBLISH authorize / settings-only / refresh /
//! remove, user switch, IMPU change, de-registration, duplicate deliveries, the attacker's replay
//! and forged P-Asserted-Identity, clock ticks, restarts) plus one action the model has no need
//! of: a UDP retransmission. Every request the model delivers to its machine is also sent, as
//! real SIP carrying a real ES256 JWT minted by the lab IdMS, to a running server over UDP (and,
//! in the second property, TCP). After every step the response (status, Warning code, SIP-ETag
//! present) and the whole binding and registration tables must agree. A failing case shrinks to
//! a short action list, printed with the mismatch.
//!
//! `CONFORMANCE_CASES=N` sets the number of cases per transport (default 128, so 256 in all).

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use mcx_authz::server::admin::BindingView;
use mcx_authz::token::LabIdms;
use mcx_model::env::{
    Body, EnvAction, EnvState, McxModel, ModelConfig, Msg, NetworkKind, Req, Sender, Tok, TokenKind,
};
use mcx_model::{FailedReauthorization, ImpuChange, Service, TokenExpiry, Variant};
use proptest::prelude::*;
use stateright::Model;

/// Server time of model tick 0. One tick is one second.
const BASE: u64 = 1_900_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Udp,
    Tcp,
}

/// One generated case: the spec reading, the policy knobs, and the path.
#[derive(Clone, Debug)]
struct Case {
    variant: Variant,
    token_expiry: TokenExpiry,
    failed_reauthorization: FailedReauthorization,
    impu_change: ImpuChange,
    two_services: bool,
    choices: Vec<u16>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(Variant::PreCr), Just(Variant::Ct1Rel18)],
        prop_oneof![
            Just(TokenExpiry::KeepBinding),
            Just(TokenExpiry::EndBinding)
        ],
        prop_oneof![
            Just(FailedReauthorization::KeepBinding),
            Just(FailedReauthorization::DropBinding)
        ],
        prop_oneof![
            Just(ImpuChange::KeepOldBinding),
            Just(ImpuChange::MoveBinding)
        ],
        any::<bool>(),
        proptest::collection::vec(any::<u16>(), 1..48),
    )
        .prop_map(
            |(
                variant,
                token_expiry,
                failed_reauthorization,
                impu_change,
                two_services,
                choices,
            )| Case {
                variant,
                token_expiry,
                failed_reauthorization,
                impu_change,
                two_services,
                choices,
            },
        )
}

impl Case {
    /// A model larger than `check`'s defaults: conformance follows single paths, so the bounds
    /// only need to let every behaviour happen.
    fn model(&self) -> McxModel {
        let mut cfg = ModelConfig::for_variant(self.variant);
        cfg.network = NetworkKind::Duplicating;
        cfg.max_duplicates = 3;
        cfg.attacker_budget = 3;
        cfg.max_time = 12;
        cfg.token_life = 3;
        cfg.publication_ttl = 4;
        cfg.registration_ttl = 6;
        cfg.token_kinds = vec![
            TokenKind::Valid,
            TokenKind::Valid,
            TokenKind::Expired,
            TokenKind::WrongScope,
        ];
        cfg.max_publications = 40;
        cfg.restarts = 1;
        cfg.users = 3;
        cfg.impus_per_ue = 2;
        if self.two_services {
            cfg.services = vec![Service::Mcptt, Service::Mcvideo];
        }
        cfg.policy.token_expiry = self.token_expiry;
        cfg.policy.failed_reauthorization = self.failed_reauthorization;
        cfg.policy.impu_change = self.impu_change;
        cfg.into_model()
    }
}

/// The running server and the translation between model and wire names.
struct Sut<'m> {
    model: &'m McxModel,
    server: TestServer,
    wire: Wire,
    core_udp: UdpClient,
    core_tcp: Option<TcpClient>,
    attacker: UdpClient,
    forger: LabIdms,
    tokens: HashMap<Tok, String>,
    /// Model SIP-ETag number → the server's SIP-ETag.
    etags: BTreeMap<u16, String>,
    /// The last request sent by the SIP core over UDP, and its response.
    last_udp: Option<(Vec<u8>, SipReply)>,
}

impl<'m> Sut<'m> {
    fn start(model: &'m McxModel, wire: Wire) -> Sut<'m> {
        let policy = model.config().machine_policy();
        let server = TestServer::start(|c| {
            let table = match toml::Value::try_from(&policy).expect("policy as TOML") {
                toml::Value::Table(t) => t,
                _ => unreachable!("a struct serialises as a table"),
            };
            c.policy.overrides = table;
            c.admin.manual_clock_start = Some(BASE);
            c.token.leeway_secs = 0;
            c.sip.trusted_cores = vec!["127.0.0.1/32".parse().unwrap()];
        });
        let core_udp = UdpClient::new(server.udp);
        let attacker = UdpClient::bind_from("127.0.0.2", server.udp);
        let core_tcp = (wire == Wire::Tcp).then(|| TcpClient::connect(server.tcp));
        let mut sut = Sut {
            model,
            server,
            wire,
            core_udp,
            core_tcp,
            attacker,
            forger: LabIdms::ephemeral(&[jsonwebtoken::Algorithm::ES256]).unwrap(),
            tokens: HashMap::new(),
            etags: BTreeMap::new(),
            last_udp: None,
        };
        // The model starts with the attacker registered at tick 0 (its own IMS subscription).
        if model.config().attacker {
            let impu = model.impu(model.attacker_impu()).to_string();
            let services: Vec<Service> = model.config().services.clone();
            let r = sut.send_core(&with_embedded(
                third_party_register(&impu, 255),
                &services,
                true,
                None,
                "attacker-client",
            ));
            assert_eq!(r.status, 200);
        }
        sut
    }

    fn jwt(&mut self, tok: Tok) -> String {
        if let Some(t) = self.tokens.get(&tok) {
            return t.clone();
        }
        // The same token the trace replay mints for this abstract token (jti = the model's id).
        let req = mcx_authz::trace::tokens::mint_request(self.model, &tok, BASE);
        let lab = if tok.kind == TokenKind::Forged {
            &self.forger
        } else {
            &self.server.lab
        };
        let jwt = lab.mint(&req).expect("mint");
        self.tokens.insert(tok, jwt.clone());
        jwt
    }

    fn server_etag(&self, n: u16) -> String {
        self.etags
            .get(&n)
            .cloned()
            .unwrap_or_else(|| format!("never-issued-{n}"))
    }

    /// The SIP request a model message becomes.
    fn sip_for(&mut self, msg: &Msg) -> SipMsg {
        let client = self.model.client(msg.from).to_string();
        match &msg.req {
            Req::Register {
                impu,
                expires,
                mc_tags,
                token,
            } => {
                let impu = self.model.impu(*impu).to_string();
                let jwt = token.map(|t| self.jwt(t));
                let services = self.model.config().services.clone();
                with_embedded(
                    third_party_register(&impu, u32::from(*expires)),
                    &services,
                    *mc_tags,
                    jwt.as_deref(),
                    &client,
                )
            }
            Req::Publish {
                impu,
                service,
                if_match,
                expires,
                body,
                ..
            } => {
                let service = self.model.service(*service);
                let impu = self.model.impu(*impu).to_string();
                let mut m = publish_to(service, &impu).header("Expires", &expires.to_string());
                if let Some(n) = if_match {
                    m = m.header("SIP-If-Match", &self.server_etag(*n));
                }
                let info = match body {
                    Body::Empty => None,
                    Body::Auth { token, protected } => {
                        assert!(!protected, "the SIP edge has no TS 33.180 clause 9 yet; conformance runs unprotected variants");
                        let jwt = self.jwt(*token);
                        Some(info_body(service, Some(&jwt), None, &client))
                    }
                    Body::Settings { user } => {
                        let svc_index = self
                            .model
                            .config()
                            .services
                            .iter()
                            .position(|s| *s == service)
                            .unwrap() as u8;
                        let mc_id = self.model.mc_id(*user, svc_index).to_string();
                        Some(info_body(service, None, Some(&mc_id), &client))
                    }
                };
                match info {
                    Some((ct, xml)) => {
                        let (ct, bytes) = multipart(&[
                            (ct.as_str(), xml),
                            ("application/poc-settings+xml", settings_xml(&client)),
                        ]);
                        m.body(&ct, bytes)
                    }
                    None => m,
                }
            }
        }
    }

    fn send_core(&mut self, m: &SipMsg) -> SipReply {
        match self.wire {
            Wire::Udp => {
                let bytes = m.to_bytes(&self.core_udp.local());
                let r = self.core_udp.send_raw(&bytes);
                self.last_udp = Some((bytes, r.clone()));
                r
            }
            Wire::Tcp => self.core_tcp.as_mut().expect("TCP client").send(m),
        }
    }

    fn deliver(&mut self, msg: &Msg) -> SipReply {
        let m = self.sip_for(msg);
        let trusted = match &msg.req {
            Req::Publish { trusted, .. } => *trusted,
            Req::Register { .. } => true,
        };
        if trusted {
            self.send_core(&m)
        } else {
            // The attacker skips the SIP core: it sends from an address that is not one.
            self.attacker.send(&m)
        }
    }

    fn bindings(&self) -> Vec<BindingView> {
        let mut v = self.server.bindings();
        v.sort_by(|a, b| {
            (&a.impu, &a.service, &a.client_id).cmp(&(&b.impu, &b.service, &b.client_id))
        });
        v
    }

    fn registrations(&self) -> Vec<(String, u64)> {
        let v: Vec<serde_json::Value> =
            serde_json::from_str(&http(self.server.admin, "GET", "/registrations")).unwrap();
        let mut out: Vec<(String, u64)> = v
            .iter()
            .map(|r| {
                (
                    r["impu"].as_str().unwrap().to_owned(),
                    r["expires_at"].as_u64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// Adds the `message/sip` body a third-party REGISTER carries: the UE's REGISTER, with the MC
/// feature tags in its Contact when `mc_tags`, and a token body per service when given.
fn with_embedded(
    reg: SipMsg,
    services: &[Service],
    mc_tags: bool,
    token: Option<&str>,
    client: &str,
) -> SipMsg {
    let impu = reg
        .headers
        .iter()
        .find(|(n, _)| n == "To")
        .map(|(_, v)| v.trim_matches(['<', '>']).to_owned())
        .unwrap();
    let tags: String = if mc_tags {
        services
            .iter()
            .map(|s| format!(";+{}", s.feature_tag()))
            .collect()
    } else {
        String::new()
    };
    let (ct, body) = match token {
        Some(t) => {
            let parts: Vec<(String, String)> = services
                .iter()
                .map(|s| info_body(*s, Some(t), None, client))
                .collect();
            let refs: Vec<(&str, String)> =
                parts.iter().map(|(c, x)| (c.as_str(), x.clone())).collect();
            let (ct, bytes) = multipart(&refs);
            (Some(ct), bytes)
        }
        None => (None, Vec::new()),
    };
    let mut ue = format!(
        "REGISTER sip:ims.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKue\r\nFrom: <{impu}>;tag=ue\r\nTo: <{impu}>\r\nCall-ID: ue-reg@192.0.2.10\r\nCSeq: 1 REGISTER\r\nContact: <sip:ue@192.0.2.10:5060>{tags}\r\n"
    );
    if let Some(ct) = ct {
        ue.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    ue.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = ue.into_bytes();
    bytes.extend(body);
    reg.body("message/sip", bytes)
}

fn describe(model: &McxModel, a: &EnvAction) -> String {
    match a {
        EnvAction::Deliver { msg, keep_copy } => {
            let who = match msg.from {
                Sender::Ue(n) => format!("UE{}", n + 1),
                Sender::Attacker => "attacker".into(),
            };
            let dup = if msg.dup {
                " (duplicate)"
            } else if *keep_copy {
                " (copy kept)"
            } else {
                ""
            };
            match &msg.req {
                Req::Register {
                    impu,
                    expires,
                    mc_tags,
                    token,
                } => format!(
                    "deliver {who} REGISTER {} Expires {expires}{}{}{dup}",
                    model.impu(*impu),
                    if *mc_tags { "" } else { " no-MC-tags" },
                    token
                        .map(|t| format!(" token {}", t.id()))
                        .unwrap_or_default()
                ),
                Req::Publish {
                    impu,
                    trusted,
                    service,
                    if_match,
                    expires,
                    body,
                } => format!(
                    "deliver {who} PUBLISH {} {} If-Match {:?} Expires {expires} {:?}{}{dup}",
                    model.service(*service),
                    model.impu(*impu),
                    if_match,
                    body,
                    if *trusted {
                        ""
                    } else {
                        " (forged PAI, untrusted source)"
                    }
                ),
            }
        }
        other => format!("{other:?}"),
    }
}

/// Compares the model's machine with the server's tables.
fn compare_tables(sut: &Sut<'_>, state: &EnvState) -> Result<(), String> {
    let mut expected: Vec<BindingView> = mcx_authz::server::admin::binding_views(&state.server)
        .into_iter()
        .map(|v| BindingView {
            token_exp: BASE + v.token_exp,
            etag: v.etag.map(|tag| {
                let n = McxModel::etag_number(&mcx_model::ETag::new(tag)).expect("model ETag");
                sut.server_etag(n)
            }),
            publication_expires: v.publication_expires.map(|t| BASE + t),
            ..v
        })
        .collect();
    expected.sort_by(|a, b| {
        (&a.impu, &a.service, &a.client_id).cmp(&(&b.impu, &b.service, &b.client_id))
    });
    let actual = sut.bindings();
    if expected != actual {
        return Err(format!(
            "binding tables differ\n  model:  {expected:?}\n  server: {actual:?}"
        ));
    }
    let mut regs: Vec<(String, u64)> = state
        .server
        .registrations()
        .map(|(i, r)| (i.to_string(), BASE + r.expires_at.0))
        .collect();
    regs.sort();
    let actual = sut.registrations();
    if regs != actual {
        return Err(format!(
            "registration tables differ\n  model:  {regs:?}\n  server: {actual:?}"
        ));
    }
    Ok(())
}

/// What a case went through (to show agreement is not vacuous).
#[derive(Debug, Default)]
struct Coverage {
    delivered: usize,
    statuses: std::collections::BTreeSet<u16>,
    events: std::collections::BTreeSet<String>,
}

/// Sends a delivered request to the server and compares its answer with the model's.
fn deliver_and_compare(
    sut: &mut Sut<'_>,
    msg: &Msg,
    effect: &mcx_model::env::StepEffect,
    coverage: &mut Coverage,
) -> Result<(), String> {
    let reply = sut.deliver(msg);
    coverage.delivered += 1;
    coverage.statuses.insert(reply.status);
    let Some(expected) = &effect.response else {
        return Err("model delivered a request without a response".into());
    };
    let got = (reply.status, reply.mc_warning(), reply.etag().is_some());
    let want = (
        expected.status(),
        expected.warning().and_then(|w| w.mc_code()),
        expected.etag.is_some(),
    );
    if got != want {
        return Err(format!(
            "response differs: model {want:?} ({:?}), server {got:?}\n{}",
            expected.outcome, reply.raw
        ));
    }
    if let (Some(tag), Some(server_tag)) = (&expected.etag, reply.etag()) {
        sut.etags
            .insert(McxModel::etag_number(tag).expect("model ETag"), server_tag);
    }
    Ok(())
}

/// Runs one case; on a mismatch returns the path so far and what differed.
fn run_case(case: &Case, wire: Wire) -> Result<Coverage, String> {
    let model = case.model();
    let mut sut = Sut::start(&model, wire);
    let mut state = model.init_state();
    let mut path: Vec<String> = Vec::new();
    let fail = |path: &[String], why: String| -> Result<Coverage, String> {
        Err(format!(
            "{why}\nafter {} steps ({wire:?}, {case:?}):\n  {}",
            path.len(),
            path.join("\n  ")
        ))
    };
    let mut coverage = Coverage::default();
    for &choice in &case.choices {
        let mut enabled = model.enabled(&state);
        let retransmit_possible = wire == Wire::Udp && sut.last_udp.is_some();
        let n = enabled.len() + usize::from(retransmit_possible);
        if n == 0 {
            break;
        }
        let pick = usize::from(choice) % n;
        if pick == enabled.len() {
            // RFC 3261 17.2.2: a retransmission of the last request is answered from the
            // transaction with the same bytes and never reaches the machine.
            let (bytes, first) = sut.last_udp.clone().expect("checked above");
            path.push("retransmit the last UDP request".into());
            let again = sut.core_udp.send_raw(&bytes);
            if again.raw != first.raw {
                return fail(
                    &path,
                    format!(
                        "retransmission answered differently:\n{}\nthen\n{}",
                        first.raw, again.raw
                    ),
                );
            }
            if let Err(e) = compare_tables(&sut, &state) {
                return fail(&path, e);
            }
            continue;
        }
        let action = enabled.swap_remove(pick);
        path.push(describe(&model, &action));
        let Some((next, effect)) = model.apply(&state, &action) else {
            return fail(&path, "model refused an enabled action".into());
        };
        if !model.within_boundary(&next) {
            break;
        }
        match &action {
            EnvAction::Deliver { msg, .. } => {
                if let Err(e) = deliver_and_compare(&mut sut, msg, &effect, &mut coverage) {
                    return fail(&path, e);
                }
            }
            EnvAction::Tick => sut.server.advance(1),
            EnvAction::Restart => {
                http(sut.server.admin, "POST", "/restart");
            }
            _ => match model.attacker_msg(&state, &action) {
                // The attacker's replay and forged PUBLISH are sent and delivered in one step.
                Some(msg) => {
                    if let Err(e) = deliver_and_compare(&mut sut, &msg, &effect, &mut coverage) {
                        return fail(&path, e);
                    }
                }
                // UE-local steps (log-on, queueing a request) reach the server only when the
                // network delivers them.
                None if effect.input.is_some() => {
                    return fail(&path, format!("unexpected server input for {action:?}"));
                }
                None => {}
            },
        }
        if let Err(e) = compare_tables(&sut, &next) {
            return fail(&path, e);
        }
        for e in &effect.events {
            coverage.events.insert(match e {
                mcx_model::BindingEvent::Bound { .. } => "bound".to_owned(),
                mcx_model::BindingEvent::Rebound { .. } => "rebound".to_owned(),
                mcx_model::BindingEvent::Unbound { cause, .. } => {
                    format!("unbound_{}", cause.label())
                }
            });
        }
        state = next;
    }
    Ok(coverage)
}

fn cases() -> u32 {
    std::env::var("CONFORMANCE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn model_and_server_agree_over_udp(case in case()) {
        if let Err(e) = run_case(&case, Wire::Udp) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn model_and_server_agree_over_tcp(case in case()) {
        if let Err(e) = run_case(&case, Wire::Tcp) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The conformance walks must actually reach the server: together they deliver requests, bind,
/// rebind, refuse and unbind for several causes (otherwise agreement would be vacuous).
#[test]
fn conformance_paths_exercise_the_server() {
    let mut all = Coverage::default();
    for seed in 0..64u16 {
        let case = Case {
            variant: if seed % 2 == 0 {
                Variant::Ct1Rel18
            } else {
                Variant::PreCr
            },
            token_expiry: if seed % 3 == 0 {
                TokenExpiry::EndBinding
            } else {
                TokenExpiry::KeepBinding
            },
            failed_reauthorization: FailedReauthorization::KeepBinding,
            impu_change: ImpuChange::KeepOldBinding,
            two_services: seed % 4 == 1,
            choices: (0..160u16)
                .map(|i| i.wrapping_mul(7919).wrapping_add(seed.wrapping_mul(40_503)))
                .collect(),
        };
        let c = run_case(&case, Wire::Udp).expect("conformance");
        all.delivered += c.delivered;
        all.statuses.extend(c.statuses);
        all.events.extend(c.events);
    }
    for status in [200, 403, 404, 412] {
        assert!(
            all.statuses.contains(&status),
            "no {status} in {:?}",
            all.statuses
        );
    }
    for event in [
        "bound",
        "rebound",
        "unbound_deregistered",
        "unbound_publication_removed",
    ] {
        assert!(all.events.contains(event), "no {event} in {:?}", all.events);
    }
    assert!(all.delivered >= 200, "only {} deliveries", all.delivered);
}

#[test]
fn one_long_walk_agrees() {
    let case = Case {
        variant: Variant::Ct1Rel18,
        token_expiry: TokenExpiry::EndBinding,
        failed_reauthorization: FailedReauthorization::KeepBinding,
        impu_change: ImpuChange::KeepOldBinding,
        two_services: false,
        choices: (0..200u16).map(|i| i.wrapping_mul(7919)).collect(),
    };
    let c = run_case(&case, Wire::Udp).expect("conformance");
    assert!(c.delivered >= 10, "only {} deliveries", c.delivered);
}
