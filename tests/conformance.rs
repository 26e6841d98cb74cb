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

use common::perturb::{self, perturbation, Perturbation};
use common::*;
use mcx_authz::server::admin::BindingView;
use mcx_authz::token::LabIdms;
use mcx_model::env::{
    Body, EnvAction, EnvState, McxModel, ModelConfig, Msg, NetworkKind, Prot, Req, Sender, Tok,
    TokenKind,
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
    /// How the request of step i is written (issue 16: what the edge must ignore); a step
    /// without one sends the request as built.
    perturbations: Vec<Perturbation>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(Variant::PreCr),
            Just(Variant::Ct1Rel18),
            Just(Variant::PostCr)
        ],
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
        proptest::collection::vec(perturbation(), 0..48),
    )
        .prop_map(
            |(
                variant,
                token_expiry,
                failed_reauthorization,
                impu_change,
                two_services,
                choices,
                perturbations,
            )| Case {
                variant,
                token_expiry,
                failed_reauthorization,
                impu_change,
                two_services,
                choices,
                perturbations,
            },
        )
}

impl Case {
    /// A model larger than `check`'s defaults: conformance follows single paths, so the bounds
    /// only need to let every behaviour happen.
    fn model(&self) -> McxModel {
        // UE 1 alone: the server on the wire starts with only the attacker registered, not
        // with the default's companion UE bound (`ModelConfig::companions`).
        let mut cfg = ModelConfig::for_variant(self.variant).with_ues(1);
        // The server on the wire gets its CSKs from the lab table (`conformance_csks`): the
        // model's provisioned CSKs, no MIKEY-SAKKE upload.
        cfg.csk_upload = false;
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
        // Settling (the fair scheduler of the liveness properties) is a checking device, not a
        // SIP event: the walks explore the environment's own actions only.
        cfg.liveness = false;
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
    /// PUBLISHes sent with a TS 33.180 clause 9 protected body.
    protected_sent: usize,
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
            // TS 33.180 clause 9: the model's provisioned CSKs, one per (user, IMPU, service).
            c.protection.csk = conformance_csks(model)
                .iter()
                .map(|e| mcx_sec::csk::CskConfig {
                    csk_id: e.id.to_string(),
                    csk: e.csk.to_hex(),
                    mc_id: e.mc_id.clone(),
                })
                .collect();
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
            protected_sent: 0,
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
                &Perturbation::default(),
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

    /// The SIP request a model message becomes (`p` also reorders the parts inside a
    /// third-party REGISTER's `message/sip` body).
    fn sip_for(&mut self, msg: &Msg, p: &Perturbation) -> SipMsg {
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
                    p,
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
                let service_index = service;
                let service = self.model.service(*service);
                let impu = self.model.impu(*impu).to_string();
                let mut m = publish_to(service, &impu).header("Expires", &expires.to_string());
                if let Some(n) = if_match {
                    m = m.header("SIP-If-Match", &self.server_etag(*n));
                }
                let info = match body {
                    Body::Empty => None,
                    Body::Auth { token, prot } => {
                        let jwt = self.jwt(*token);
                        let info = info_body(service, Some(&jwt), None, &client);
                        if let Prot::Provisioned { user, impu } = prot {
                            // Encrypted and signed under the model's provisioned CSK of (user,
                            // IMPU, service) — the one the model's machine is told about (the
                            // attacker's resend keeps the victim's).
                            let body = protected_body(
                                &csk_entry(self.model, *user, *impu, *service_index),
                                service,
                                &info.1,
                                &settings_xml(&client),
                            );
                            self.protected_sent += 1;
                            return m.body(&body.0, body.1.into_bytes());
                        }
                        assert!(
                            !prot.protected(),
                            "conformance runs with provisioned CSKs (no MIKEY upload on the wire)"
                        );
                        Some(info)
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
                    Some((ct, xml)) => m.parts(vec![
                        (ct, xml.into_bytes()),
                        (
                            "application/poc-settings+xml".into(),
                            settings_xml(&client).into_bytes(),
                        ),
                    ]),
                    None => m,
                }
            }
        }
    }

    fn send_core(&mut self, m: &SipMsg) -> SipReply {
        let others = vec!["sip:nobody@invalid".to_owned()];
        self.send_core_as(m, &Perturbation::default(), others)
    }

    /// Sends as the SIP core, written as `p` says.
    fn send_core_as(&mut self, m: &SipMsg, p: &Perturbation, others: Vec<String>) -> SipReply {
        let ctx = perturb::Context {
            others,
            trusted: true,
        };
        match self.wire {
            Wire::Udp => {
                let bytes = m.render(&self.core_udp.local(), p, &ctx);
                let r = self.core_udp.send_raw(&bytes);
                self.last_udp = Some((bytes, r.clone()));
                r
            }
            Wire::Tcp => {
                let tcp = self.core_tcp.as_mut().expect("TCP client");
                let bytes = m.render(&tcp.local(), p, &ctx);
                tcp.send_raw(bytes)
            }
        }
    }

    /// Every model IMPU except `impu` (all registered at some point of a walk; the attacker's
    /// from tick 0).
    fn other_impus(&self, impu: u8) -> Vec<String> {
        (0..=self.model.attacker_impu())
            .filter(|i| *i != impu)
            .map(|i| self.model.impu(i).to_string())
            .collect()
    }

    fn deliver(&mut self, msg: &Msg, p: &Perturbation) -> SipReply {
        let m = self.sip_for(msg, p);
        let (trusted, impu) = match &msg.req {
            Req::Publish { trusted, impu, .. } => (*trusted, *impu),
            Req::Register { impu, .. } => (true, *impu),
        };
        let others = self.other_impus(impu);
        if trusted {
            self.send_core_as(&m, p, others)
        } else {
            // The attacker skips the SIP core: it sends from an address that is not one.
            let ctx = perturb::Context {
                others,
                trusted: false,
            };
            self.attacker
                .send_raw(&m.render(&self.attacker.local(), p, &ctx))
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

/// The lab CSK the server holds for the model's provisioned CSK of (`user`, IMPU `impu`,
/// service index `service`) (`McxModel::csk`): CSK-ID `2uuiiss` in hex, a fixed key.
fn csk_entry(model: &McxModel, user: u8, impu: u8, service: u8) -> mcx_sec::csk::CskEntry {
    let id = 0x2000_0000 | u32::from(user) << 16 | u32::from(impu) << 8 | u32::from(service);
    let mut key = [0x5a; 16];
    key[..3].copy_from_slice(&[user, impu, service]);
    mcx_sec::csk::CskEntry {
        id: mcx_sec::csk::CskId(id),
        csk: mcx_sec::csk::Csk::new(key),
        mc_id: model.mc_id(user, service).to_string(),
    }
}

/// Every CSK the model provisions (`McxModel::init_state`), as lab CSKs.
fn conformance_csks(model: &McxModel) -> Vec<mcx_sec::csk::CskEntry> {
    let cfg = model.config();
    let mut v = Vec::new();
    for user in 0..cfg.users as u8 {
        for impu in 0..=model.attacker_impu() {
            for service in 0..cfg.services.len() as u8 {
                v.push(csk_entry(model, user, impu, service));
            }
        }
    }
    v
}

/// A PUBLISH body protected per TS 33.180 clause 9: the info body with token and client ID
/// encrypted, the poc-settings body, and the signature part over the info body (by Content-ID).
fn protected_body(
    entry: &mcx_sec::csk::CskEntry,
    service: Service,
    info: &str,
    settings: &str,
) -> (String, String) {
    let p = mcx_authz::protection::Protector::new(entry, mcx_sec::kdf::KdfReading::default())
        .expect("protector");
    let info = p.encrypt_info(service, info).expect("encrypt");
    let cid = mcx_authz::protection::INFO_CONTENT_ID;
    let sig = p.sign(&[(cid, info.as_bytes())]);
    let b = "mcx-conformance-clause9";
    let svc = service.name();
    (
        format!("multipart/mixed;boundary={b}"),
        format!(
            "--{b}\r\nContent-Type: application/vnd.3gpp.{svc}-info+xml\r\nContent-ID: <{cid}>\r\n\r\n{info}\r\n--{b}\r\nContent-Type: application/poc-settings+xml\r\n\r\n{settings}\r\n--{b}\r\nContent-Type: application/vnd.3gpp.{svc}-signed+xml\r\n\r\n{sig}\r\n--{b}--\r\n"
        ),
    )
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
    /// PUBLISHes sent protected (TS 33.180 clause 9).
    protected: usize,
    statuses: std::collections::BTreeSet<u16>,
    events: std::collections::BTreeSet<String>,
}

/// Sends a delivered request to the server and compares its answer with the model's.
fn deliver_and_compare(
    sut: &mut Sut<'_>,
    msg: &Msg,
    p: &Perturbation,
    effect: &mcx_model::env::StepEffect,
    coverage: &mut Coverage,
) -> Result<(), String> {
    let reply = sut.deliver(msg, p);
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
    for (step, &choice) in case.choices.iter().enumerate() {
        let p = case.perturbations.get(step).copied().unwrap_or_default();
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
        let mut said = describe(&model, &action);
        if !p.is_none() && matches!(action, EnvAction::Deliver { .. }) {
            said.push_str(&format!(" [written: {p}]"));
        }
        path.push(said);
        let Some((next, effect)) = model.apply(&state, &action) else {
            return fail(&path, "model refused an enabled action".into());
        };
        if !model.within_boundary(&next) {
            break;
        }
        match &action {
            EnvAction::Deliver { msg, .. } => {
                if let Err(e) = deliver_and_compare(&mut sut, msg, &p, &effect, &mut coverage) {
                    return fail(&path, e);
                }
            }
            EnvAction::Tick => sut.server.advance(1),
            EnvAction::Restart => {
                http(sut.server.admin, "POST", "/restart");
            }
            // kill -9 and a restart from the durable store (issue 13): the model loses nothing
            // (its crash properties), so the in-process server, which keeps running, must still
            // agree with it below; tests/durability.rs kills the real binary.
            EnvAction::Crash => {}
            _ => match model.attacker_msg(&state, &action) {
                // The attacker's replay and forged PUBLISH are sent and delivered in one step.
                Some(msg) => {
                    path.last_mut()
                        .expect("pushed above")
                        .push_str(&format!(" [written: {p}]"));
                    if let Err(e) = deliver_and_compare(&mut sut, &msg, &p, &effect, &mut coverage)
                    {
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
    coverage.protected = sut.protected_sent;
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
            // Every other seed writes its requests as built; the rest perturbed.
            perturbations: if seed % 2 == 0 {
                Vec::new()
            } else {
                (0..160u64)
                    .map(|i| {
                        Perturbation::pick(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(seed))
                    })
                    .collect()
            },
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
        perturbations: (0..200u64)
            .map(|i| Perturbation::pick(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect(),
    };
    let c = run_case(&case, Wire::Udp).expect("conformance");
    assert!(c.delivered >= 10, "only {} deliveries", c.delivered);
}

/// Post-cr as `serve` runs it (`token_protection = required`): the walks send encrypted and
/// signed bodies under the model's CSKs, and the server binds, refuses and unbinds with the
/// model, over UDP and TCP.
#[test]
fn post_cr_walks_agree_with_protected_bodies() {
    let mut all = Coverage::default();
    for seed in 0..12u16 {
        let case = Case {
            variant: Variant::PostCr,
            token_expiry: TokenExpiry::KeepBinding,
            failed_reauthorization: FailedReauthorization::KeepBinding,
            impu_change: ImpuChange::KeepOldBinding,
            two_services: seed % 3 == 1,
            choices: (0..120u16)
                .map(|i| i.wrapping_mul(7919).wrapping_add(seed.wrapping_mul(40_503)))
                .collect(),
            // Protected bodies, perturbed on every third seed.
            perturbations: if seed % 3 == 2 {
                (0..120u64)
                    .map(|i| {
                        Perturbation::pick(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(seed))
                    })
                    .collect()
            } else {
                Vec::new()
            },
        };
        let wire = if seed % 2 == 0 { Wire::Udp } else { Wire::Tcp };
        let c = run_case(&case, wire).expect("conformance");
        all.delivered += c.delivered;
        all.protected += c.protected;
        all.statuses.extend(c.statuses);
        all.events.extend(c.events);
    }
    assert!(
        all.protected >= 12,
        "only {} protected PUBLISHes",
        all.protected
    );
    assert!(all.statuses.contains(&200), "{:?}", all.statuses);
    assert!(all.statuses.contains(&403), "{:?}", all.statuses);
    assert!(all.events.contains("bound"), "{:?}", all.events);
}
