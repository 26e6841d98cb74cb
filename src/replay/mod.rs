//! `mcx-authz replay`: the model's named scenarios and the witnesses and counterexamples of
//! `check --json`, played against any MCX server described by a target profile
//! ([`profile::Profile`]), with a report of where the server departs from the model.
//!
//! The replay plays the SIP core, as the SIPp scenarios of `mcx-authz trace` do, but speaks SIP
//! itself with the load generator's client ([`crate::load::Transactor`]) so that it can read
//! every response before it builds the next request (the SIP-ETag a later `SIP-If-Match` needs)
//! and keep going after a divergence. Per step it compares what the model's machine answered
//! with what the target answered: status, TS 24.379 Warning code, SIP-ETag present.
//!
//! Traces are kept apart at the target by renaming: every IMPU, MC service ID, MC client ID and
//! token `jti` of trace number `k` carries the tag `<run>-<k>` (`sip:ue1-a.r1-3@ims.example`), so
//! no trace sees another's registrations or bindings and no target restart is needed.
//!
//! A divergence is then explained where it can be: the same actions are run in the model under
//! every other value of each policy knob (dossier, ...), one knob and then two at
//! a time; a setting whose predictions match every observed response is reported as "matches
//! policy X", not as a failure.

pub mod profile;
pub mod report;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mcx_model::env::{EnvAction, PropertyKind, RequestKind, Tok, TokenKind, SCENARIOS};
use mcx_model::{
    FailedReauthorization, ImpuChange, McxModel, ModelConfig, Policy, RegisterToken, Service,
    TokenExpiry, TokenProtection, TraceStep, UnixTime,
};
use mcx_sec::csk::{config_entry, Csk, CskEntry, CskId};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::load::template::Template;
use crate::load::{Timers, Transactor};
use crate::protection::{clear_info, Protector, INFO_CONTENT_ID};
use crate::sip::body::write;
use crate::token::{LabIdms, LabKey, MintRequest};
use crate::trace::sipp::{self, Publish, PublishBody, Register};
use crate::trace::{service_named, tokens::WRONG_SCOPE};
use profile::{ClockMode, Profile, ProtectTokens};

/// What a case is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseKind {
    /// A named scenario (`mcx_model::env::SCENARIOS`).
    Scenario,
    /// The witness of a `sometimes` property.
    Witness,
    /// The counterexample of an `always` or `eventually` property.
    Counterexample,
}

/// One trace to replay.
#[derive(Clone, Debug)]
pub struct Case {
    /// The scenario or property name.
    pub name: String,
    /// Scenario, witness or counterexample.
    pub kind: CaseKind,
    /// The property it reaches (a scenario's property, or the property itself).
    pub property: String,
    /// The property's source clause.
    pub clause: String,
    /// What the property or scenario means.
    pub meaning: String,
    /// The model's actions (for the policy analysis), when known.
    pub actions: Option<Vec<EnvAction>>,
    /// The trace.
    pub steps: Vec<TraceStep>,
    /// The bindings the trace made, asked after at its end.
    pub probes: Vec<Probe>,
}

/// After a case, a settings-only PUBLISH (TS 24.379 7.3.4) for each binding the trace made
/// (client, IMPU, service, with the MC service ID it was last bound to): 200 if the binding is
/// still there, 404 with Warning 141 if not. It makes the binding table observable over SIP, so
/// that, for instance, a binding that outlives its token (dossier Q-4) shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The model's IMPU.
    pub impu: String,
    /// The service.
    pub service: Service,
    /// The model's MC client ID.
    pub client: String,
    /// The model's MC service ID.
    pub mc_id: String,
}

impl Probe {
    /// The bindings a trace's events name (`bound IMPU/svc/client -> MCID`, `rebound IMPU/svc/client
    /// FROM -> TO`), each with the MC service ID of its last event.
    pub fn of(steps: &[TraceStep]) -> Vec<Probe> {
        let mut v: Vec<Probe> = Vec::new();
        for e in steps.iter().flat_map(|s| &s.events) {
            let (key, mc_id) = if let Some(r) = e.strip_prefix("bound ") {
                match r.split_once(" -> ") {
                    Some((k, m)) => (k, m),
                    None => continue,
                }
            } else if let Some(r) = e.strip_prefix("rebound ") {
                match (r.split_once(' '), r.rsplit_once(" -> ")) {
                    (Some((k, _)), Some((_, m))) => (k, m),
                    _ => continue,
                }
            } else {
                continue;
            };
            let mut parts = key.splitn(3, '/');
            let (Some(impu), Some(svc), Some(client)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(service) = service_named(svc) else {
                continue;
            };
            let p = Probe {
                impu: impu.to_owned(),
                service,
                client: client.to_owned(),
                mc_id: mc_id.trim().to_owned(),
            };
            v.retain(|q| (&q.impu, q.service, &q.client) != (&p.impu, p.service, &p.client));
            v.push(p);
        }
        v
    }

    /// What the model's machine, in `state`, answers this probe.
    pub fn expected(&self, model: &McxModel, state: &mcx_model::EnvState) -> Option<Expected> {
        let mut m = (*state.server).clone();
        let input = mcx_model::Input::Publish(mcx_model::Publish {
            target: mcx_model::PublishTarget::Service(self.service),
            event: mcx_model::EventPackage::PocSettings,
            impu: mcx_model::AssertedIdentity::Trusted(mcx_model::Impu::new(self.impu.as_str())),
            if_match: mcx_model::IfMatch::Absent,
            expires: Some(u32::from(model.config().publication_ttl)),
            body: mcx_model::PublishBody::SettingsOnly {
                claimed_mc_id: mcx_model::McId::new(self.mc_id.as_str()),
                client_id: mcx_model::ClientId::new(self.client.as_str()),
                settings: Some(mcx_model::Settings {
                    answer_mode_automatic: Some(true),
                    ..mcx_model::Settings::default()
                }),
            },
            key_upload: None,
            fresh_etag: mcx_model::ETag::new("probe"),
        });
        m.handle(UnixTime(u64::from(state.now)), input)
            .into_iter()
            .find_map(|o| match o {
                mcx_model::Output::Response(r) => Some(Expected {
                    status: r.status(),
                    warning: r.warning().and_then(|w| w.mc_code()),
                    etag: r.etag.is_some(),
                }),
                _ => None,
            })
    }
}

/// The step number of probe `i` after a trace of `steps`.
fn probe_step(steps: &[TraceStep], i: usize) -> usize {
    steps.last().map_or(0, |s| s.step) + 1 + i
}

/// The catalogue of a configuration: every named scenario that can happen in it, then every
/// property trace `mcx-authz check --json` reports for it (the check runs in-process on
/// `threads` threads). `only`, when not empty, keeps the named cases (the check is skipped when
/// no property is named).
pub fn catalogue(cfg: &ModelConfig, threads: usize, only: &[String]) -> anyhow::Result<Vec<Case>> {
    cfg.validate().map_err(|e| anyhow::anyhow!(e))?;
    let model = cfg.clone().into_model();
    let props = model.catalogue();
    let wanted = |n: &str| only.is_empty() || only.iter().any(|o| o == n);
    for o in only {
        if !SCENARIOS.iter().any(|s| s.0 == o) && !props.iter().any(|p| p.name == o) {
            bail!("--only {o:?}: neither a scenario nor a property");
        }
    }
    let mut cases = Vec::new();
    for (name, property, what) in SCENARIOS {
        if !wanted(name) {
            continue;
        }
        let Some(actions) = model.scenario(name) else {
            continue;
        };
        let clause = props
            .iter()
            .find(|p| p.name == property)
            .map(|p| p.clause.to_owned())
            .unwrap_or_default();
        let steps = model.trace(&actions).steps;
        cases.push(Case {
            name: name.to_owned(),
            kind: CaseKind::Scenario,
            property: property.to_owned(),
            clause,
            meaning: what.to_owned(),
            probes: Probe::of(&steps),
            steps,
            actions: Some(actions),
        });
    }
    if !props.iter().any(|p| wanted(p.name)) {
        return Ok(cases);
    }
    let report = crate::cli::check::check_config(cfg.clone(), threads, false)?;
    for p in &report.properties {
        let Some(steps) = &p.trace else { continue };
        if !wanted(p.name) {
            continue;
        }
        let Some(info) = props.iter().find(|i| i.name == p.name) else {
            continue;
        };
        // The same search `check` made for this trace, to get its actions back.
        let cond = info.condition;
        let m = &model;
        let depth = steps.len();
        let actions = match info.kind {
            PropertyKind::Always => m.shortest_path(|s| !cond(m, s), depth),
            PropertyKind::Sometimes => m.shortest_path(|s| cond(m, s), depth),
            PropertyKind::Eventually => m.eventually_counterexample(|s| cond(m, s), depth),
        }
        .filter(|a| model.trace(a).steps == *steps);
        cases.push(Case {
            name: p.name.to_owned(),
            kind: if info.kind == PropertyKind::Sometimes {
                CaseKind::Witness
            } else {
                CaseKind::Counterexample
            },
            property: p.name.to_owned(),
            clause: p.clause.to_owned(),
            meaning: p.meaning.to_owned(),
            actions,
            probes: Probe::of(steps),
            steps: steps.clone(),
        });
    }
    Ok(cases)
}

/// The names of trace `k` at the target.
#[derive(Clone, Debug)]
pub struct Names {
    tag: String,
    impu_domain: String,
    mc_domain: String,
}

impl Names {
    /// The names of case number `k` (1-based) of run `run`.
    pub fn new(profile: &Profile, run: &str, k: usize) -> Names {
        Names {
            tag: format!("{run}-{k}"),
            impu_domain: profile.identities.impu_domain.clone(),
            mc_domain: profile.identities.mc_id_domain.clone(),
        }
    }

    fn user_part(uri: &str) -> (&str, &str) {
        let rest = uri.strip_prefix("sip:").unwrap_or(uri);
        rest.split_once('@').unwrap_or((rest, ""))
    }

    /// A model IMPU (`sip:ue1-a@ims.example`) at the target.
    pub fn impu(&self, model_impu: &str) -> String {
        let (user, _) = Self::user_part(model_impu);
        format!("sip:{user}.{}@{}", self.tag, self.impu_domain)
    }

    /// A model MC service ID (`sip:userA@mcptt.example`) at the target.
    pub fn mc_id(&self, model_mc_id: &str) -> String {
        let (user, host) = Self::user_part(model_mc_id);
        let service = host.split('.').next().unwrap_or("");
        format!(
            "sip:{user}.{}@{}",
            self.tag,
            self.mc_domain.replace("{service}", service)
        )
    }

    /// A model MC client ID at the target.
    pub fn client(&self, model_client: &str) -> String {
        format!("{model_client}.{}", self.tag)
    }

    /// A model token id (`jti`) at the target.
    pub fn jti(&self, model_id: &str) -> String {
        format!("{model_id}.{}", self.tag)
    }
}

/// The lab CSK of (MC service ID, IMPU, service) under `seed`: a CSK-ID with purpose tag `0010`
/// (TS 33.180 E.6.11) and a 128-bit key, both from SHA-256 (lab keys, reproducible so that the
/// target's configuration can hold them before the run).
pub fn lab_csk(seed: &str, mc_id: &str, impu: &str, service: Service) -> CskEntry {
    let h = Sha256::new()
        .chain_update(b"mcx-authz replay csk\0")
        .chain_update(seed.as_bytes())
        .chain_update([0])
        .chain_update(mc_id.as_bytes())
        .chain_update([0])
        .chain_update(impu.as_bytes())
        .chain_update([0])
        .chain_update(service.name().as_bytes())
        .finalize();
    let id = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let mut key = [0u8; 16];
    key.copy_from_slice(&h[4..20]);
    CskEntry {
        id: CskId((id & 0x0fff_ffff) | 0x2000_0000),
        csk: Csk::new(key),
        mc_id: mc_id.to_owned(),
    }
}

/// Every lab CSK the cases may use (one per user, IMPU and service, as the model provisions
/// them), as `[[protection.csk]]` entries.
pub fn csk_table(profile: &Profile, cfg: &ModelConfig, run: &str, cases: usize) -> String {
    let model = cfg.clone().into_model();
    let mut t = String::new();
    for k in 1..=cases {
        let names = Names::new(profile, run, k);
        for user in 0..cfg.users as u8 {
            for impu in 0..=model.attacker_impu() {
                for (si, s) in cfg.services.iter().enumerate() {
                    let mc = names.mc_id(model.mc_id(user, si as u8).as_str());
                    let im = names.impu(model.impu(impu).as_str());
                    let e = lab_csk(&profile.protection.csk_seed, &mc, &im, *s);
                    t.push_str(&config_entry(e.id, &e.csk, &mc));
                    t.push('\n');
                }
            }
        }
    }
    t
}

/// The mcx-authz configuration the default profile assumes: the model's machine policy, a
/// manual clock with lab controls at the profile's address, the replay's CSKs.
pub fn server_config(
    profile: &Profile,
    cfg: &ModelConfig,
    run: &str,
    cases: usize,
    clock_start: u64,
) -> anyhow::Result<String> {
    let mut policy = cfg.machine_policy();
    if profile.protection.tokens == ProtectTokens::Never
        && policy.token_protection == TokenProtection::Required
    {
        policy.token_protection = TokenProtection::Optional;
    }
    let table = toml::Value::try_from(&policy).context("policy as TOML")?;
    let admin = profile
        .clock
        .lab_url
        .as_deref()
        .and_then(|u| u.strip_prefix("http://"))
        .unwrap_or("127.0.0.1:8080")
        .trim_end_matches('/');
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# mcx-authz serve for `mcx-authz replay` run {run:?} ({} cases of {}): the model's machine policy, one tick = {} s.",
        cases, cfg.variant, profile.clock.tick_secs
    );
    let _ = writeln!(
        t,
        "[sip]\nudp = [\"{0}\"]\ntcp = [\"{0}\"]   # unused by the replay (UDP)\ntrusted_cores = [\"127.0.0.0/8\", \"::1/128\"]\n",
        profile.sip.address
    );
    let _ = writeln!(
        t,
        "[admin]\nlisten = \"{admin}\"\nlab_controls = true\nmanual_clock_start = {clock_start}\n"
    );
    let _ = writeln!(t, "[http]\nenabled = false\n");
    // A replay starts from an empty server; a store would carry bindings between runs.
    let _ = writeln!(t, "[store]\nbackend = \"memory\"\n");
    let _ = writeln!(t, "[token]\nleeway_secs = 0\n");
    let _ = writeln!(t, "[policy]\nvariant = \"{}\"", cfg.variant.name());
    t.push_str(&toml::to_string(&table).context("policy as TOML")?);
    t.push('\n');
    if profile.protection.tokens == ProtectTokens::AsModel {
        t.push_str(&csk_table(profile, cfg, run, cases));
    }
    Ok(t)
}

/// What a response said, as far as the model speaks of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Final status; `None`: no response in time.
    pub status: Option<u16>,
    /// The TS 24.379 warning code of a `Warning: 399` header, if any.
    pub warning: Option<u16>,
    /// The Warning header's text (any), for the report.
    pub warning_text: Option<String>,
    /// SIP-ETag.
    pub etag: Option<String>,
}

/// What the model's machine answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// Status.
    pub status: u16,
    /// TS 24.379 warning code (`None`: no MC warning code).
    pub warning: Option<u16>,
    /// Whether a SIP-ETag comes.
    pub etag: bool,
}

impl Expected {
    fn of(st: &TraceStep) -> Option<Expected> {
        Some(Expected {
            status: st.status?,
            warning: st.warning.as_deref().and_then(warning_code),
            etag: st.etag.is_some(),
        })
    }

    /// What differs in `o` (empty: nothing).
    pub fn differences(&self, o: &Observed) -> Vec<String> {
        let mut d = Vec::new();
        match o.status {
            None => d.push("no response".to_owned()),
            Some(s) if s != self.status => d.push(format!("status {s}, not {}", self.status)),
            _ => {}
        }
        if o.status.is_some() {
            match (self.warning, o.warning) {
                (Some(w), None) => d.push(format!("no Warning {w}")),
                (Some(w), Some(x)) if w != x => d.push(format!("Warning {x}, not {w}")),
                (None, Some(x)) => d.push(format!("unexpected Warning {x}")),
                _ => {}
            }
            match (self.etag, o.etag.is_some()) {
                (true, false) => d.push("no SIP-ETag".to_owned()),
                (false, true) => d.push("unexpected SIP-ETag".to_owned()),
                _ => {}
            }
        }
        d
    }
}

/// The TS 24.379 warning code in a model warning text (`399 mcx "101 service …"`); `None` for a
/// policy warning (`399 mcx "registration_required: …"`).
fn warning_code(w: &str) -> Option<u16> {
    let text = w.split('"').nth(1)?;
    let first = text.split(' ').next()?;
    if first.len() == 3 {
        first.parse().ok()
    } else {
        None
    }
}

/// Status, Warning and SIP-ETag of a response (header names case-insensitive; `Warning` may
/// repeat or hold a list).
pub fn observe(msg: &[u8]) -> Observed {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("SIP/2.0 "))
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse().ok());
    let mut o = Observed {
        status,
        warning: None,
        warning_text: None,
        etag: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("warning") {
            o.warning_text
                .get_or_insert_with(|| value.chars().take(200).collect());
            if o.warning.is_none() {
                o.warning = value
                    .strip_prefix("399 ")
                    .map(|v| format!("x {v}"))
                    .and_then(|v| warning_code(&v));
            }
        } else if name.eq_ignore_ascii_case("sip-etag") && !value.is_empty() {
            o.etag = Some(value.chars().take(200).collect());
        }
    }
    o
}

/// The verdict of one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepVerdict {
    /// As the model predicts.
    Match,
    /// Differs (what differs).
    Diverges(Vec<String>),
    /// Not sent: the attacker's forged-identity request straight to the server (the replay
    /// plays a trusted SIP core).
    NotSent,
    /// A step the target cannot be made to take (a restart without lab controls).
    NotReplayed,
}

/// One step of a replayed case.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// The model's step number (0: the set-up registration of the attacker).
    pub step: usize,
    /// Model time (ticks).
    pub time: u8,
    /// The step in words.
    pub text: String,
    /// The request kind.
    pub request: RequestKind,
    /// The model's answer.
    pub expected: Option<Expected>,
    /// The target's.
    pub observed: Option<Observed>,
    /// The verdict.
    pub verdict: StepVerdict,
    /// The machine's outcome label.
    pub outcome: Option<String>,
    /// The model's Warning text.
    pub warning: Option<String>,
    /// The model's binding events.
    pub events: Vec<String>,
}

/// A policy setting that explains the target's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicySetting {
    /// The `Policy` field.
    pub knob: &'static str,
    /// Its value there.
    pub value: String,
}

/// Where a case first diverges, and the model's reading of that step.
#[derive(Clone, Debug, Serialize)]
pub struct FirstDivergence {
    /// The step.
    pub step: usize,
    /// What differs.
    pub differences: Vec<String>,
    /// The step in words.
    pub text: String,
    /// The machine's outcome label there.
    pub outcome: Option<String>,
    /// The model's Warning there.
    pub warning: Option<String>,
    /// The property's clause.
    pub clause: String,
    /// The policy knobs that decide this step: another value changes the model's answer.
    pub deciding_knobs: Vec<PolicySetting>,
}

/// The verdict of a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseVerdict {
    /// Every sent step as the model predicts.
    Conforms,
    /// Every sent step as the model predicts under another policy: each entry is a setting (one
    /// knob, or two together) that explains every answer.
    MatchesPolicy(Vec<Vec<PolicySetting>>),
    /// Diverges, and no policy setting explains it.
    Diverges,
}

/// One replayed case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// The scenario or property.
    pub name: String,
    /// Scenario, witness or counterexample.
    pub kind: CaseKind,
    /// The property reached.
    pub property: String,
    /// Its clause.
    pub clause: String,
    /// What it means.
    pub meaning: String,
    /// The trace tag its names carry.
    pub tag: String,
    /// The verdict.
    pub verdict: CaseVerdict,
    /// Where it first diverges from the model's own policy.
    pub first_divergence: Option<FirstDivergence>,
    /// Steps not replayed (restarts without lab controls): the verdict covers the others.
    pub incomplete: bool,
    /// Per step.
    pub steps: Vec<StepResult>,
}

/// A whole replay.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// The target profile's name.
    pub target: String,
    /// Where requests went.
    pub address: SocketAddr,
    /// The run tag.
    pub run: String,
    /// The variant.
    pub variant: String,
    /// The model configuration.
    pub config: ModelConfig,
    /// Seconds per tick and the clock mode.
    pub clock: String,
    /// Whether tokens went protected.
    pub protection: String,
    /// Per case.
    pub cases: Vec<CaseResult>,
}

impl ReplayReport {
    /// (conforming, matching a policy, diverging) cases.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for r in &self.cases {
            match r.verdict {
                CaseVerdict::Conforms => c.0 += 1,
                CaseVerdict::MatchesPolicy(_) => c.1 += 1,
                CaseVerdict::Diverges => c.2 += 1,
            }
        }
        c
    }

    /// Steps that diverge from the model's own policy (in all cases).
    pub fn divergent_steps(&self) -> usize {
        self.cases
            .iter()
            .flat_map(|c| &c.steps)
            .filter(|s| matches!(s.verdict, StepVerdict::Diverges(_)))
            .count()
    }
}

/// Every other value of each policy knob, with its name and value for the report.
fn alternatives(p: &Policy) -> Vec<(PolicySetting, Policy)> {
    let mut v = Vec::new();
    let mut push = |knob: &'static str, value: String, q: Policy| {
        if q != *p {
            v.push((PolicySetting { knob, value }, q));
        }
    };
    for x in [TokenExpiry::KeepBinding, TokenExpiry::EndBinding] {
        push(
            "token_expiry",
            kebab(&x),
            Policy {
                token_expiry: x,
                ..p.clone()
            },
        );
    }
    for x in [
        FailedReauthorization::KeepBinding,
        FailedReauthorization::DropBinding,
    ] {
        push(
            "failed_reauthorization",
            kebab(&x),
            Policy {
                failed_reauthorization: x,
                ..p.clone()
            },
        );
    }
    for x in [RegisterToken::Ignore, RegisterToken::Honour] {
        push(
            "register_token",
            kebab(&x),
            Policy {
                register_token: x,
                ..p.clone()
            },
        );
    }
    for x in [
        TokenProtection::Off,
        TokenProtection::Optional,
        TokenProtection::Required,
    ] {
        push(
            "token_protection",
            kebab(&x),
            Policy {
                token_protection: x,
                ..p.clone()
            },
        );
    }
    for x in [ImpuChange::KeepOldBinding, ImpuChange::MoveBinding] {
        push(
            "impu_change",
            kebab(&x),
            Policy {
                impu_change: x,
                ..p.clone()
            },
        );
    }
    for x in [true, false] {
        push(
            "registration_required",
            x.to_string(),
            Policy {
                registration_required: x,
                ..p.clone()
            },
        );
    }
    for x in [None, Some(1)] {
        push(
            "max_devices_per_mc_id",
            x.map_or("none".into(), |n| n.to_string()),
            Policy {
                max_devices_per_mc_id: x,
                ..p.clone()
            },
        );
    }
    for x in [0, 255] {
        push(
            "replay_window_secs",
            if x == 0 {
                "0".into()
            } else {
                "longer than the trace".into()
            },
            Policy {
                replay_window_secs: x,
                ..p.clone()
            },
        );
    }
    v
}

fn kebab<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The model's answers to `actions` under `policy`, by step number (`None`: the actions cannot
/// run under it).
fn predictions(
    cfg: &ModelConfig,
    policy: &Policy,
    actions: &[EnvAction],
    probes: &[Probe],
) -> Option<BTreeMap<usize, Expected>> {
    let mut c = cfg.clone();
    c.policy = policy.clone();
    let model = c.into_model();
    let states = model.run(actions).ok()?;
    let last = states.last()?;
    let steps = model.trace(actions).steps;
    let mut m: BTreeMap<usize, Expected> = steps
        .iter()
        .filter_map(|s| Some((s.step, Expected::of(s)?)))
        .collect();
    for (i, p) in probes.iter().enumerate() {
        m.insert(probe_step(&steps, i), p.expected(&model, last)?);
    }
    Some(m)
}

/// Whether `pred` agrees with every sent step of `steps`.
fn agrees(pred: &BTreeMap<usize, Expected>, steps: &[StepResult]) -> bool {
    steps
        .iter()
        .all(|s| match (&s.observed, pred.get(&s.step)) {
            (Some(o), Some(e)) => e.differences(o).is_empty(),
            (Some(_), None) => s.step == 0 && s.verdict == StepVerdict::Match,
            (None, _) => true,
        })
}

/// The policy settings under which the model predicts every observed answer: every single knob
/// that does, or else the first pair of knobs that does (each entry a conjunction).
fn explain(
    cfg: &ModelConfig,
    actions: &[EnvAction],
    probes: &[Probe],
    steps: &[StepResult],
) -> Vec<Vec<PolicySetting>> {
    let base = cfg.policy.clone();
    let singles = alternatives(&base);
    let found: Vec<Vec<PolicySetting>> = singles
        .iter()
        .filter(|(_, p)| {
            predictions(cfg, p, actions, probes).is_some_and(|pred| agrees(&pred, steps))
        })
        .map(|(s, _)| vec![s.clone()])
        .collect();
    if !found.is_empty() {
        return found;
    }
    for (i, (s1, p1)) in singles.iter().enumerate() {
        for (s2, p2) in alternatives(p1) {
            if s2.knob == s1.knob
                || singles[..i].iter().any(|(s, _)| s.knob == s2.knob)
                || predictions(cfg, &p2, actions, probes).is_none_or(|pred| !agrees(&pred, steps))
            {
                continue;
            }
            return vec![vec![s1.clone(), s2]];
        }
    }
    Vec::new()
}

/// The knobs whose other value changes the model's answer at `step`.
fn deciding_knobs(
    cfg: &ModelConfig,
    actions: &[EnvAction],
    probes: &[Probe],
    step: usize,
) -> Vec<PolicySetting> {
    let Some(base) = predictions(cfg, &cfg.policy, actions, probes) else {
        return Vec::new();
    };
    alternatives(&cfg.policy)
        .into_iter()
        .filter(|(_, p)| {
            predictions(cfg, p, actions, probes)
                .is_some_and(|pred| pred.get(&step) != base.get(&step))
        })
        .map(|(s, _)| s)
        .collect()
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run tag (names carry `<run>-<k>`).
    pub run: String,
    /// Retransmission and response timeout.
    pub timers: Timers,
    /// The address the client binds.
    pub bind: SocketAddr,
}

/// Plays cases against a target.
pub struct Runner<'a> {
    profile: &'a Profile,
    lab: &'a LabIdms,
    tx: Transactor,
    http: ureq::Agent,
    opts: RunOptions,
    forger: Option<LabKey>,
}

impl<'a> Runner<'a> {
    /// A runner for `profile`, minting with `lab`.
    pub fn new(profile: &'a Profile, lab: &'a LabIdms, opts: RunOptions) -> anyhow::Result<Self> {
        let tx = Transactor::new(profile.sip.address, opts.bind, opts.timers)?;
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Runner {
            profile,
            lab,
            tx,
            http,
            opts,
            forger: None,
        })
    }

    /// `POST {lab_url}{path}`: the answer's text.
    fn lab_call(&self, path: &str) -> anyhow::Result<String> {
        let base = self
            .profile
            .clock
            .lab_url
            .as_deref()
            .context("no lab_url")?
            .trim_end_matches('/');
        let url = format!("{base}{path}");
        let mut resp = self
            .http
            .post(&url)
            .send_empty()
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        if !status.is_success() {
            bail!("POST {url}: {status} {}", text.trim());
        }
        Ok(text)
    }

    /// The target's time of model tick 0 for a new case.
    fn time_base(&self) -> anyhow::Result<u64> {
        match self.profile.clock.mode {
            ClockMode::Lab => {
                let t = self.lab_call("/clock/advance?secs=0")?;
                t.trim()
                    .parse()
                    .with_context(|| format!("the lab clock answered {t:?}, not a Unix time"))
            }
            ClockMode::RealTime => {
                // The next whole second, waited for: iat never lies in the target's future.
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
                let base = now.as_secs() + 1;
                std::thread::sleep(Duration::from_secs(base) - now);
                Ok(base)
            }
        }
    }

    fn wire_expires(&self, ticks: u32, publish: bool) -> u32 {
        if ticks == 0 {
            return 0;
        }
        let fixed = if publish {
            self.profile.expires.publish
        } else {
            self.profile.expires.register
        };
        fixed.unwrap_or_else(|| {
            u32::try_from(u64::from(ticks) * self.profile.clock.tick_secs).unwrap_or(u32::MAX)
        })
    }

    fn mint(
        &mut self,
        model: &McxModel,
        names: &Names,
        tok: &Tok,
        base: u64,
    ) -> anyhow::Result<String> {
        let cfg = model.config();
        let tick = self.profile.clock.tick_secs;
        let id = |s: Service| {
            cfg.services
                .iter()
                .position(|x| *x == s)
                .map(|i| names.mc_id(model.mc_id(tok.user, i as u8).as_str()))
        };
        let issuer = &self.profile.token.issuer;
        let req = MintRequest {
            mcptt_id: id(Service::Mcptt),
            mcvideo_id: id(Service::Mcvideo),
            mcdata_id: id(Service::Mcdata),
            scopes: Some(match tok.kind {
                TokenKind::WrongScope => vec![WRONG_SCOPE.into()],
                _ => Service::ALL.iter().map(|s| s.scope().to_owned()).collect(),
            }),
            iat: Some(UnixTime(base + u64::from(tok.issued) * tick)),
            exp: Some(UnixTime(base + tok.exp(cfg.token_life) * tick)),
            jti: Some(names.jti(&tok.id())),
            aud: self.profile.token.audience.clone(),
            iss: (!issuer.is_empty()).then(|| issuer.clone()),
            ..MintRequest::default()
        };
        let key = self
            .lab
            .keys()
            .first()
            .context("the lab IdMS has no key (run `mcx-authz token keygen`)")?;
        if tok.kind == TokenKind::Forged {
            if self.forger.is_none() {
                self.forger = Some(LabKey::generate(key.alg()).context("throw-away key")?);
            }
            let f = self.forger.as_ref().context("forger")?;
            return f
                .sign_jws(&key.header(), &req.claims(self.lab.issuer()))
                .context("signing a forged token");
        }
        self.lab.mint(&req).context("minting")
    }

    /// Sends a message template (rendered for mcx-authz's names) with `fields`.
    fn send(&mut self, msg: &str, fields: &[String]) -> anyhow::Result<Observed> {
        let t = Template::compile(&self.profile.retarget(msg))?;
        Ok(match self.tx.exchange(&t, fields)? {
            Some(resp) => observe(&resp),
            None => Observed {
                status: None,
                warning: None,
                warning_text: None,
                etag: None,
            },
        })
    }

    /// Plays case number `k` (1-based).
    pub fn run_case(
        &mut self,
        cfg: &ModelConfig,
        case: &Case,
        k: usize,
    ) -> anyhow::Result<CaseResult> {
        let model = cfg.clone().into_model();
        let names = Names::new(self.profile, &self.opts.run, k);
        let services = cfg.services.clone();
        let base = self.time_base()?;
        let tick = self.profile.clock.tick_secs;
        let mut ticks: u64 = 0;
        let mut tokens: BTreeMap<String, String> = BTreeMap::new();
        let mut etags: BTreeMap<String, String> = BTreeMap::new();
        let mut results = Vec::new();
        let mut cseq = 0;
        let mut incomplete = false;
        let mut registered: Vec<String> = Vec::new();

        if cfg.attacker {
            // The model starts with the attacker registered at tick 0 (its own subscription).
            let impu = names.impu(model.impu(model.attacker_impu()).as_str());
            let client = names.client(model.client(mcx_model::env::Sender::Attacker).as_str());
            cseq += 1;
            let msg = Register {
                cseq,
                impu: &impu,
                expires: self.wire_expires(255, false),
                tags: &services,
                token: None,
                services: &services,
                client: &client,
            }
            .render();
            let o = self.send(&msg, &[])?;
            let e = Expected {
                status: 200,
                warning: None,
                etag: false,
            };
            registered.push(impu.clone());
            let d = e.differences(&o);
            results.push(StepResult {
                step: 0,
                time: 0,
                text: format!("set-up: the attacker's own IMPU {impu} is registered"),
                request: RequestKind::Register,
                expected: Some(e),
                verdict: if d.is_empty() {
                    StepVerdict::Match
                } else {
                    StepVerdict::Diverges(d)
                },
                observed: Some(o),
                outcome: None,
                warning: None,
                events: vec![],
            });
        }

        for st in &case.steps {
            let mut r = StepResult {
                step: st.step,
                time: st.time,
                text: st.text.clone(),
                request: st.request,
                expected: Expected::of(st),
                observed: None,
                verdict: StepVerdict::Match,
                outcome: st.outcome.clone(),
                warning: st.warning.clone(),
                events: st.events.clone(),
            };
            if sipp::is_delivery(st) {
                if st.via.as_deref() != Some("sip-core") {
                    r.verdict = StepVerdict::NotSent;
                    results.push(r);
                    continue;
                }
                cseq += 1;
                let (msg, fields) =
                    self.request(&model, &names, st, cseq, base, &mut tokens, &etags)?;
                if matches!(
                    st.request,
                    RequestKind::Register | RequestKind::RegisterWithoutMcTags
                ) {
                    if let Some(i) = &st.impu {
                        registered.push(names.impu(i));
                    }
                }
                let o = self.send(&msg, &fields)?;
                if let (Some(model_tag), Some(tag)) = (&st.etag, &o.etag) {
                    etags.insert(model_tag.clone(), tag.clone());
                }
                let d = r
                    .expected
                    .as_ref()
                    .map(|e| e.differences(&o))
                    .unwrap_or_default();
                if !d.is_empty() {
                    r.verdict = StepVerdict::Diverges(d);
                }
                r.observed = Some(o);
                results.push(r);
                continue;
            }
            match st.request {
                RequestKind::Tick => {
                    ticks += 1;
                    match self.profile.clock.mode {
                        ClockMode::Lab => {
                            self.lab_call(&format!("/clock/advance?secs={tick}"))?;
                        }
                        ClockMode::RealTime => {
                            // A little past the tick's second, so that `exp` has passed.
                            let due = Duration::from_secs(base + ticks * tick)
                                + Duration::from_millis(50);
                            let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
                            if due > now {
                                std::thread::sleep(due - now);
                            }
                        }
                    }
                }
                RequestKind::Restart => match self.profile.clock.mode {
                    ClockMode::Lab => {
                        self.lab_call("/restart")?;
                    }
                    ClockMode::RealTime => {
                        incomplete = true;
                        r.verdict = StepVerdict::NotReplayed;
                        results.push(r);
                    }
                },
                _ => {}
            }
        }

        // The bindings the trace made: still there? (The model's answer from its final state.)
        let final_state = case
            .actions
            .as_deref()
            .and_then(|a| model.run(a).ok()?.pop());
        for (i, p) in case.probes.iter().enumerate() {
            let Some(e) = final_state.as_ref().and_then(|s| p.expected(&model, s)) else {
                continue;
            };
            cseq += 1;
            let impu = names.impu(&p.impu);
            let client = names.client(&p.client);
            let mc_id = names.mc_id(&p.mc_id);
            let msg = Publish {
                cseq,
                service: p.service,
                impu: &impu,
                expires: self.wire_expires(u32::from(cfg.publication_ttl), true),
                if_match: None,
                body: PublishBody::Settings(&mc_id),
                client: &client,
            }
            .render();
            let o = self.send(&msg, &[])?;
            let d = e.differences(&o);
            results.push(StepResult {
                step: probe_step(&case.steps, i),
                time: case.steps.last().map_or(0, |s| s.time),
                text: format!(
                    "probe: settings-only PUBLISH {} {} claims {} (is the binding still there?)",
                    p.impu, p.client, p.mc_id
                ),
                request: RequestKind::PublishSettings,
                outcome: Some(
                    if e.status == 200 {
                        "still bound"
                    } else {
                        "not bound"
                    }
                    .into(),
                ),
                expected: Some(e),
                verdict: if d.is_empty() {
                    StepVerdict::Match
                } else {
                    StepVerdict::Diverges(d)
                },
                observed: Some(o),
                warning: None,
                events: vec![],
            });
        }

        // Tidy up: every IMPU this case registered is de-registered (not judged).
        for impu in registered {
            cseq += 1;
            let msg = Register {
                cseq,
                impu: &impu,
                expires: 0,
                tags: &[],
                token: None,
                services: &services,
                client: "replay-cleanup",
            }
            .render();
            let _ = self.send(&msg, &[]);
        }

        let first = results
            .iter()
            .find(|s| matches!(s.verdict, StepVerdict::Diverges(_)));
        let first_divergence = first.map(|s| FirstDivergence {
            step: s.step,
            differences: match &s.verdict {
                StepVerdict::Diverges(d) => d.clone(),
                _ => vec![],
            },
            text: s.text.clone(),
            outcome: s.outcome.clone(),
            warning: s.warning.clone(),
            clause: case.clause.clone(),
            deciding_knobs: case
                .actions
                .as_deref()
                .map(|a| deciding_knobs(cfg, a, &case.probes, s.step))
                .unwrap_or_default(),
        });
        let verdict = match (&first_divergence, &case.actions) {
            (None, _) => CaseVerdict::Conforms,
            (Some(_), Some(actions)) => {
                let e = explain(cfg, actions, &case.probes, &results);
                if e.is_empty() {
                    CaseVerdict::Diverges
                } else {
                    CaseVerdict::MatchesPolicy(e)
                }
            }
            (Some(_), None) => CaseVerdict::Diverges,
        };
        Ok(CaseResult {
            name: case.name.clone(),
            kind: case.kind,
            property: case.property.clone(),
            clause: case.clause.clone(),
            meaning: case.meaning.clone(),
            tag: names.tag.clone(),
            verdict,
            first_divergence,
            incomplete,
            steps: results,
        })
    }

    /// The request of a delivery step (a template and its fields).
    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        model: &McxModel,
        names: &Names,
        st: &TraceStep,
        cseq: usize,
        base: u64,
        tokens: &mut BTreeMap<String, String>,
        etags: &BTreeMap<String, String>,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let services = model.config().services.clone();
        let impu = names.impu(st.impu.as_deref().context("no IMPU")?);
        let client = names.client(st.client_id.as_deref().context("no MC client ID")?);
        let ticks = st.expires.context("no Expires")?;
        let mut fields: Vec<String> = Vec::new();
        if let Some(t) = &st.token {
            let jwt = match tokens.get(&t.id) {
                Some(j) => j.clone(),
                None => {
                    let tok = Tok::parse(&t.id).with_context(|| format!("token id {:?}", t.id))?;
                    let j = self.mint(model, names, &tok, base)?;
                    tokens.insert(t.id.clone(), j.clone());
                    j
                }
            };
            fields.push(jwt);
        }
        Ok(match st.request {
            RequestKind::Register
            | RequestKind::RegisterWithoutMcTags
            | RequestKind::Deregister => {
                let mc_tags = st.request == RequestKind::Register;
                let msg = Register {
                    cseq,
                    impu: &impu,
                    expires: self.wire_expires(ticks, false),
                    tags: if mc_tags { &services } else { &[] },
                    token: (mc_tags && !fields.is_empty()).then_some(0),
                    services: &services,
                    client: &client,
                }
                .render();
                (msg, fields)
            }
            RequestKind::PublishAuth
            | RequestKind::PublishSettings
            | RequestKind::Refresh
            | RequestKind::Remove => {
                let service = service_named(st.service.as_deref().context("no service")?)?;
                let if_match = st.if_match.as_deref().map(|tag| {
                    fields.push(
                        etags
                            .get(tag)
                            .cloned()
                            .unwrap_or_else(|| format!("never-issued-{tag}")),
                    );
                    format!("[field{}]", fields.len() - 1)
                });
                let mc_id = st.mc_id.as_deref().map(|m| names.mc_id(m));
                let protected = st.request == RequestKind::PublishAuth
                    && self.profile.protection.tokens == ProtectTokens::AsModel
                    && st.token.as_ref().is_some_and(|t| t.protected);
                let body = match st.request {
                    RequestKind::PublishAuth if protected => PublishBody::Empty,
                    RequestKind::PublishAuth => PublishBody::Token(0),
                    RequestKind::PublishSettings => {
                        PublishBody::Settings(mc_id.as_deref().context("settings without MC ID")?)
                    }
                    _ => PublishBody::Empty,
                };
                let mut msg = Publish {
                    cseq,
                    service,
                    impu: &impu,
                    expires: self.wire_expires(ticks, true),
                    if_match,
                    body,
                    client: &client,
                }
                .render();
                if protected {
                    let mc = mc_id.context("a protected token without MC service ID")?;
                    let entry = lab_csk(&self.profile.protection.csk_seed, &mc, &impu, service);
                    let (ct, body) = protected_body(&entry, service, &fields[0], &client)?;
                    let head = msg
                        .strip_suffix("Content-Length: 0\n\n")
                        .context("an empty PUBLISH template")?;
                    msg = format!(
                        "{head}Content-Type: [field{}]\nContent-Length: [len]\n\n[field{}]\n",
                        fields.len(),
                        fields.len() + 1
                    );
                    fields.push(ct);
                    fields.push(body);
                }
                (msg, fields)
            }
            other => bail!("step {}: {other:?} is not a request", st.step),
        })
    }
}

/// A PUBLISH body protected per TS 33.180 clause 9: the MC info body with the access token
/// encrypted (Content-ID), the poc-settings body, the XML signature over the info body.
///
/// The MC client ID stays in clear (`type="Normal"`, which TS 24.379 allows): the model's server
/// always knows which client a PUBLISH comes from. Encrypted under a CSK the server no longer
/// holds, the client ID could not be read, and the server would answer 412 (the entity-tag then
/// names "another client's" publication) where the model answers 403 with Warning 101.
fn protected_body(
    entry: &CskEntry,
    service: Service,
    token: &str,
    client: &str,
) -> anyhow::Result<(String, String)> {
    let p = Protector::new(entry, mcx_sec::kdf::KdfReading::default())?;
    let keys = mcx_sec::kdf::FixedKeys::derive(entry, mcx_sec::kdf::KdfReading::default())
        .context("MC service ID too long for the KDF")?;
    let svc = service.name();
    let token_element = format!("{svc}-access-token");
    let info = mcx_sec::xmlenc::protect_info(
        clear_info(service, token, Some(client)).as_bytes(),
        svc,
        &[token_element.as_str()],
        mcx_sec::xmlenc::PlaintextForm::ValueElement,
        entry.id,
        &keys.confidentiality,
        &mut || rand::random::<[u8; 12]>(),
    )?;
    let sig = p.sign(&[(INFO_CONTENT_ID, info.as_bytes())]);
    let b = "mcx-replay-clause9";
    let settings = write::settings_xml(client, "\r\n");
    Ok((
        format!("multipart/mixed;boundary={b}"),
        format!(
            "--{b}\r\nContent-Type: application/vnd.3gpp.{svc}-info+xml\r\nContent-ID: <{INFO_CONTENT_ID}>\r\n\r\n{info}\r\n--{b}\r\nContent-Type: application/poc-settings+xml\r\n\r\n{settings}\r\n--{b}\r\nContent-Type: application/vnd.3gpp.{svc}-signed+xml\r\n\r\n{sig}\r\n--{b}--"
        ),
    ))
}

/// A run tag from the clock (`r` and the Unix time in base 36).
pub fn run_tag() -> String {
    let mut n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut s = Vec::new();
    while n > 0 {
        s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    s.reverse();
    format!("r{}", String::from_utf8_lossy(&s))
}

/// Checks a run tag: it goes into URIs' user parts.
pub fn check_run_tag(run: &str) -> anyhow::Result<()> {
    if run.is_empty()
        || run.len() > 24
        || !run.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        bail!("run tag {run:?}: 1 to 24 letters, digits or '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcx_model::Variant;

    #[test]
    fn responses_are_read() {
        let o = observe(b"SIP/2.0 403 Forbidden\r\nVia: x\r\nwarning: 399 mcx.example.org \"101 service authorisation failed\"\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(o.status, Some(403));
        assert_eq!(o.warning, Some(101));
        assert!(o.etag.is_none());
        let o = observe(b"SIP/2.0 200 OK\r\nSIP-ETag: abc\r\nWarning: 399 mcx \"registration_required: no\"\r\n\r\n");
        assert_eq!((o.status, o.warning), (Some(200), None));
        assert_eq!(o.etag.as_deref(), Some("abc"));
        assert!(o.warning_text.is_some());
        assert_eq!(observe(b"garbage").status, None);
        let e = Expected {
            status: 412,
            warning: None,
            etag: false,
        };
        assert_eq!(
            e.differences(&o),
            vec!["status 200, not 412", "unexpected SIP-ETag"]
        );
    }

    #[test]
    fn names_are_tagged_per_case() {
        let p = Profile::default_profile();
        let n = Names::new(&p, "r1", 3);
        assert_eq!(
            n.impu("sip:ue1-a@ims.example"),
            "sip:ue1-a.r1-3@ims.example"
        );
        assert_eq!(
            n.mc_id("sip:userA@mcptt.example"),
            "sip:userA.r1-3@mcptt.example"
        );
        assert_eq!(n.jti("tok-A-t0-valid"), "tok-A-t0-valid.r1-3");
        assert!(check_run_tag("r1").is_ok());
        assert!(check_run_tag("r 1").is_err());
        assert!(run_tag().starts_with('r'));
    }

    /// Scenarios picked by name (no check needed), the CSK table, and: every knob whose other
    /// value changes an answer explains answers made that way.
    #[test]
    fn catalogue_and_policy_explanation() {
        let cfg = ModelConfig::for_variant(Variant::PostCr);
        let cases = catalogue(&cfg, 1, &["token-expiry".into(), "user-switch".into()]).unwrap();
        assert_eq!(cases.len(), 2);
        assert!(cases
            .iter()
            .all(|c| c.kind == CaseKind::Scenario && c.actions.is_some()));
        assert!(catalogue(&cfg, 1, &["nope".into()]).is_err());
        // One CSK per case, user (2), IMPU index (two per UE: UE1's a and b, the companion UE's
        // two slots, of which it uses one; then the attacker's) and service (1).
        let table = csk_table(&Profile::default_profile(), &cfg, "r1", 2);
        assert_eq!(table.matches("[[protection.csk]]").count(), 2 * 2 * 5);
        // Every observed answer equal to the model's: conforms; with a step changed the way
        // another knob predicts, that knob explains it.
        let case = cases.iter().find(|c| c.name == "token-expiry").unwrap();
        let mut exercised = 0;
        let actions = case.actions.as_deref().unwrap();
        let probes = &case.probes;
        assert!(!probes.is_empty(), "token-expiry binds, so it probes");
        // Steps whose every answer is `pred`'s.
        let answered = |pred: &BTreeMap<usize, Expected>| -> Vec<StepResult> {
            pred.iter()
                .map(|(n, e)| StepResult {
                    step: *n,
                    time: 0,
                    text: String::new(),
                    request: RequestKind::PublishSettings,
                    observed: Some(Observed {
                        status: Some(e.status),
                        warning: e.warning,
                        warning_text: None,
                        etag: e.etag.then(|| "x".into()),
                    }),
                    expected: Some(e.clone()),
                    verdict: StepVerdict::Match,
                    outcome: None,
                    warning: None,
                    events: vec![],
                })
                .collect()
        };
        let base = predictions(&cfg, &cfg.policy, actions, probes).unwrap();
        assert!(agrees(&base, &answered(&base)));
        for (setting, p) in alternatives(&cfg.policy) {
            let Some(pred) = predictions(&cfg, &p, actions, probes) else {
                continue;
            };
            if pred == base {
                continue;
            }
            assert!(!agrees(&base, &answered(&pred)));
            let why = explain(&cfg, actions, probes, &answered(&pred));
            assert!(
                why.iter().any(|w| w == &vec![setting.clone()]),
                "{setting:?}: {why:?}"
            );
            exercised += 1;
        }
        // At least token_expiry = end-binding changes the probe's answer.
        assert!(exercised > 0, "no knob changes an answer of token-expiry");
    }
}
