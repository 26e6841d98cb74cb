//! `mcx-authz check` and `mcx-authz explore`: model-check the authorization machine inside its
//! environment (UEs, IdMS, SIP core, network, attacker) for one or every reading of the spec.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mcx_model::env::{Carriage, Expectation, PropertyKind, UeProtection, Verdict};
use mcx_model::{
    CskTie, FailedReauthorization, ImpuChange, McxModel, ModelConfig, NetworkKind, RegisterToken,
    Service, TokenExpiry, TokenKind, TokenProtection, TraceStep, Variant,
};
use serde::Serialize;
use stateright::{Checker, Model};

/// The model's size and behaviour; every flag left out takes the variant's default.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Number of UEs (1..=4), companions included (default 2: UE 1 and a companion UE; `--ues
    /// 1` is UE 1 alone).
    #[arg(long)]
    pub ues: Option<usize>,
    /// How many of the UEs are companion UEs: a second device of user 0, bound before the run
    /// starts, with one IMPU and no user switch, IMPU change, log-off or settings-only PUBLISH
    /// (default 1 when there are two UEs or more; 0 makes every UE a full one).
    #[arg(long)]
    pub companions: Option<usize>,
    /// Requests the companion UEs may send during a run (re-PUBLISH, refresh, REGISTER,
    /// de-REGISTER), together (default 0: the companion keeps the binding it starts with).
    #[arg(long)]
    pub companion_budget: Option<u8>,
    /// Number of MC service users (1..=4).
    #[arg(long)]
    pub users: Option<usize>,
    /// IMPUs per UE (1..=3).
    #[arg(long)]
    pub impus: Option<usize>,
    /// MC services, comma separated (mcptt,mcvideo,mcdata).
    #[arg(long, value_delimiter = ',', value_parser = parse_service)]
    pub services: Option<Vec<Service>>,
    /// Network between SIP core and server: ordered, unordered, duplicating.
    #[arg(long, value_parser = parse_network)]
    pub network: Option<NetworkKind>,
    /// Include the attacker (`--attacker`, `--attacker false`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub attacker: Option<bool>,
    /// Time bound, in ticks.
    #[arg(long)]
    pub max_time: Option<u8>,
    /// Bound on successful PUBLISHes (fresh SIP-ETags).
    #[arg(long)]
    pub max_publications: Option<u16>,
    /// Bound on duplicate deliveries (duplicating network).
    #[arg(long)]
    pub duplicates: Option<u8>,
    /// Crash (`kill -9`) and restart from the durable store between any two steps (issue 13;
    /// `--crash false` leaves the two crash properties vacuous).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub crash: Option<bool>,
    /// Server restarts allowed.
    #[arg(long)]
    pub restarts: Option<u8>,
    /// REGISTERs one UE may have in flight at once.
    #[arg(long)]
    pub registers_in_flight: Option<u8>,
    /// Token kinds the IdMS issues, comma separated (valid,expired,wrong-scope).
    #[arg(long, value_delimiter = ',', value_parser = parse_kebab::<TokenKind>)]
    pub token_kinds: Option<Vec<TokenKind>>,
    /// Lifetime of a valid token, in ticks.
    #[arg(long)]
    pub token_life: Option<u8>,
    /// `Expires` of the UEs' PUBLISH, in ticks.
    #[arg(long)]
    pub publication_ttl: Option<u8>,
    /// Policy (dossier Q-4): keep-binding or end-binding at token expiry.
    #[arg(long, value_parser = parse_kebab::<TokenExpiry>)]
    pub token_expiry: Option<TokenExpiry>,
    /// Policy (dossier Q-9): keep-binding or drop-binding on a refused re-authorization.
    #[arg(long, value_parser = parse_kebab::<FailedReauthorization>)]
    pub failed_reauthorization: Option<FailedReauthorization>,
    /// Policy (dossier Q-13): keep-old-binding or move-binding on an IMPU change.
    #[arg(long, value_parser = parse_kebab::<ImpuChange>)]
    pub impu_change: Option<ImpuChange>,
    /// Policy (dossier Q-18): at most this many clients per MC service ID.
    #[arg(long)]
    pub max_devices: Option<u32>,
    /// Check liveness (`eventually` properties; `--liveness false` skips the settled runs).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub liveness: Option<bool>,
    /// UE axis: where every UE carries its token: register, publish or both (default: the
    /// variant's preset; pre-cr mixes a REGISTER-option UE with PUBLISH-option ones).
    #[arg(long, value_parser = parse_kebab::<Carriage>)]
    pub carriage: Option<Carriage>,
    /// UE axis: whether the UEs protect their PUBLISH-borne token (TS 33.180 clause 9) and
    /// upload CSKs: on, off, or auto (protect exactly when the server requires it).
    #[arg(long, value_parser = parse_kebab::<UeProtection>)]
    pub ue_protection: Option<UeProtection>,
    /// Server axis (dossier Q-16): token protection off, optional or required.
    #[arg(long, value_parser = parse_kebab::<TokenProtection>)]
    pub token_protection: Option<TokenProtection>,
    /// Server axis (TS 33.180 5.4): the CSK <-> (IMPU, MC service ID) tie enforced, or ignored
    /// (ablation).
    #[arg(long, value_parser = parse_kebab::<CskTie>)]
    pub csk_tie: Option<CskTie>,
    /// Server axis (Q-1/Q-3): a token in a third-party REGISTER is honoured or ignored.
    #[arg(long, value_parser = parse_kebab::<RegisterToken>)]
    pub register_token: Option<RegisterToken>,
    /// How CSKs reach the server: uploaded (MIKEY-SAKKE I_MESSAGE with the PUBLISH, TS 33.180
    /// 5.4) or provisioned (a lab table set up front, no upload).
    #[arg(long, value_parser = parse_csk_source)]
    pub csk: Option<bool>,
    /// Requests the attacker may send in one run.
    #[arg(long)]
    pub attacker_budget: Option<u8>,
    /// The attacker may act on a request while it is still in flight (on-path, racing the
    /// original); default: only once the request reached the server (eavesdropper).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub attacker_preempts: Option<bool>,
}

impl ModelArgs {
    /// The configuration for `variant` with these overrides.
    pub fn config(&self, variant: Variant) -> anyhow::Result<ModelConfig> {
        let mut c = ModelConfig::for_variant(variant);
        if let Some(v) = self.ues {
            c = c.with_ues(v);
        }
        if let Some(v) = self.companions {
            c.companions = v;
        }
        if let Some(v) = self.companion_budget {
            c.companion_budget = v;
        }
        if let Some(v) = self.users {
            c.users = v;
        }
        if let Some(v) = self.impus {
            c.impus_per_ue = v;
        }
        if let Some(v) = &self.services {
            c.services = v.clone();
            c.services.dedup();
        }
        if let Some(v) = self.network {
            c.network = v;
        }
        if let Some(v) = self.attacker {
            c.attacker = v;
        }
        if let Some(v) = self.max_time {
            c.max_time = v;
        }
        if let Some(v) = self.max_publications {
            c.max_publications = v;
        }
        if let Some(v) = self.duplicates {
            c.max_duplicates = v;
        }
        if let Some(v) = self.crash {
            c.crash = v;
        }
        if let Some(v) = self.restarts {
            c.restarts = v;
        }
        if let Some(v) = self.registers_in_flight {
            c.max_registers_in_flight = v.max(1);
        }
        if let Some(v) = &self.token_kinds {
            c.token_kinds = v.clone();
        }
        if let Some(v) = self.token_life {
            c.token_life = v;
        }
        if let Some(v) = self.publication_ttl {
            c.publication_ttl = v;
        }
        if let Some(v) = self.token_expiry {
            c.policy.token_expiry = v;
        }
        if let Some(v) = self.failed_reauthorization {
            c.policy.failed_reauthorization = v;
        }
        if let Some(v) = self.impu_change {
            c.policy.impu_change = v;
        }
        if let Some(v) = self.max_devices {
            c.policy.max_devices_per_mc_id = Some(v);
        }
        if let Some(v) = self.liveness {
            c.liveness = v;
        }
        if let Some(v) = self.carriage {
            c.carriage = Some(v);
        }
        if let Some(v) = self.ue_protection {
            c.ue_protection = v;
        }
        if let Some(v) = self.token_protection {
            c.policy.token_protection = v;
        }
        if let Some(v) = self.csk_tie {
            c.policy.csk_tie = v;
        }
        if let Some(v) = self.register_token {
            c.policy.register_token = v;
        }
        if let Some(v) = self.csk {
            c.csk_upload = v;
        }
        if let Some(v) = self.attacker_budget {
            c.attacker_budget = v;
        }
        if let Some(v) = self.attacker_preempts {
            c.attacker_preempts = v;
        }
        if let Err(e) = c.validate() {
            bail!("{e}");
        }
        Ok(c)
    }
}

fn parse_service(s: &str) -> Result<Service, String> {
    Service::ALL
        .into_iter()
        .find(|x| x.name() == s)
        .ok_or_else(|| format!("unknown service {s:?} (mcptt, mcvideo, mcdata)"))
}

fn parse_csk_source(s: &str) -> Result<bool, String> {
    match s {
        "uploaded" => Ok(true),
        "provisioned" => Ok(false),
        _ => Err(format!("unknown CSK source {s:?} (uploaded, provisioned)")),
    }
}

fn parse_network(s: &str) -> Result<NetworkKind, String> {
    s.parse()
}

fn parse_kebab<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.into())).map_err(|e| e.to_string())
}

/// The variants `--variant` selects (`all` is every one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variants(pub Vec<Variant>);

fn parse_variants(s: &str) -> Result<Variants, String> {
    if s == "all" {
        Ok(Variants(Variant::ALL.to_vec()))
    } else {
        s.parse().map(|v| Variants(vec![v]))
    }
}

/// Arguments of `mcx-authz check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// post-cr, pre-cr, ct1-rel18 or all.
    #[arg(long, default_value = "post-cr", value_parser = parse_variants)]
    pub variant: Variants,
    /// The model's size and behaviour.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON (one object per variant; an array for `--variant all`).
    #[arg(long)]
    pub json: bool,
    /// Checker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Check the two-instance shared-store model instead (issue 13: two servers, one versioned
    /// store, compare-and-set; `--variant` and the size flags do not apply).
    #[arg(long)]
    pub shared_store: bool,
    /// With `--shared-store`: the mutation, a blind write instead of the compare-and-set (its
    /// counterexample is printed; exit 1).
    #[arg(long, requires = "shared_store")]
    pub blind_write: bool,
}

/// One property's result.
#[derive(Debug, Clone, Serialize)]
pub struct PropertyReport {
    /// Stable name.
    pub name: &'static str,
    /// `always` / `sometimes`.
    pub kind: PropertyKind,
    /// Source clause.
    pub clause: &'static str,
    /// One line.
    pub meaning: &'static str,
    /// What the checker found.
    pub verdict: Verdict,
    /// What was expected for this configuration.
    pub expected: Verdict,
    /// Why that was expected.
    pub expected_because: &'static str,
    /// The shortest counterexample (`always`, violated) or witness (`sometimes`, holds).
    pub trace: Option<Vec<TraceStep>>,
    /// The same as a Mermaid `sequenceDiagram`.
    pub mermaid: Option<String>,
}

/// One variant's result.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    /// The variant.
    pub variant: Variant,
    /// The configuration checked.
    pub config: ModelConfig,
    /// Whether it is the variant's default configuration.
    pub default_config: bool,
    /// Unique states explored.
    pub unique_states: usize,
    /// States generated (with repeats).
    pub generated_states: usize,
    /// Deepest path.
    pub max_depth: usize,
    /// Wall-clock seconds of the exhaustive check (without the shortest-trace searches).
    pub seconds: f64,
    /// Checker threads.
    pub threads: usize,
    /// Per property.
    pub properties: Vec<PropertyReport>,
}

impl VariantReport {
    /// Whether every verdict is the expected one.
    pub fn as_expected(&self) -> bool {
        self.properties.iter().all(|p| p.verdict == p.expected)
    }
}

/// Checks one configuration: an exhaustive breadth-first check on `threads` threads, then for
/// every discovery a single-threaded breadth-first search for the shortest trace.
pub fn check_config(
    cfg: ModelConfig,
    threads: usize,
    progress: bool,
) -> anyhow::Result<VariantReport> {
    let model = cfg.clone().into_model();
    let label = cfg.variant.name();
    let start = Instant::now();
    let checker = model.clone().checker().threads(threads).spawn_bfs();
    let tty = std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    while !checker.is_done() {
        std::thread::sleep(Duration::from_millis(200));
        if progress && (tty || last_print.elapsed() >= Duration::from_secs(5)) {
            last_print = Instant::now();
            let line = format!(
                "[{label}] {} unique states, depth {}, {:.1} s",
                checker.unique_state_count(),
                checker.max_depth(),
                start.elapsed().as_secs_f64()
            );
            if tty {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
        }
    }
    let checker = checker.join();
    let seconds = start.elapsed().as_secs_f64();
    if progress {
        let line = format!(
            "[{label}] done: {} unique states, depth {}, {seconds:.1} s",
            checker.unique_state_count(),
            checker.max_depth()
        );
        if tty {
            eprintln!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
    let discoveries = checker.discoveries();
    let mut properties = Vec::new();
    for info in model.catalogue() {
        let found = discoveries.get(info.name);
        let verdict = info.kind.verdict(found.is_some());
        let Some(Expectation {
            verdict: expected,
            because,
        }) = model.expected(info.name)
        else {
            bail!("no expectation recorded for {}", info.name);
        };
        let (trace, mermaid) = match found {
            Some(path) => {
                let depth = path.clone().into_actions().len();
                let cond = info.condition;
                let m = &model;
                let actions = match info.kind {
                    PropertyKind::Always => m.shortest_path(|s| !cond(m, s), depth),
                    PropertyKind::Sometimes => m.shortest_path(|s| cond(m, s), depth),
                    PropertyKind::Eventually => m.eventually_counterexample(|s| cond(m, s), depth),
                }
                .unwrap_or_else(|| path.clone().into_actions());
                let t = model.trace(&actions);
                let mermaid = t.mermaid(cfg.ues, cfg.attacker);
                (Some(t.steps), Some(mermaid))
            }
            None => (None, None),
        };
        properties.push(PropertyReport {
            name: info.name,
            kind: info.kind,
            clause: info.clause,
            meaning: info.meaning,
            verdict,
            expected,
            expected_because: because,
            trace,
            mermaid,
        });
    }
    Ok(VariantReport {
        variant: cfg.variant,
        default_config: cfg.is_default(),
        config: cfg,
        unique_states: checker.unique_state_count(),
        generated_states: checker.state_count(),
        max_depth: checker.max_depth(),
        seconds,
        threads,
        properties,
    })
}

fn threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
    .max(1)
}

/// Runs `mcx-authz check`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let threads = threads(args.threads);
    if args.shared_store {
        return check_shared_store(&args, threads);
    }
    let mut reports = Vec::new();
    for v in &args.variant.0 {
        let cfg = args.model.config(*v)?;
        reports.push(check_config(cfg, threads, !args.quiet)?);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = if args.variant.0.len() == 1 {
            serde_json::to_value(json_report(&reports[0]))?
        } else {
            serde_json::to_value(reports.iter().map(json_report).collect::<Vec<_>>())?
        };
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    } else {
        for r in &reports {
            write!(out, "{}", text_report(r))?;
        }
    }
    Ok(if reports.iter().all(VariantReport::as_expected) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The JSON shape of `check --json` (stable for scripts and the `trace` command).
pub fn json_report(r: &VariantReport) -> serde_json::Value {
    serde_json::json!({
        "variant": r.variant.name(),
        "unique_states": r.unique_states,
        "generated_states": r.generated_states,
        "max_depth": r.max_depth,
        "seconds": (r.seconds * 100.0).round() / 100.0,
        "threads": r.threads,
        "default_config": r.default_config,
        "config": r.config,
        "as_expected": r.as_expected(),
        "properties": r.properties.iter().map(|p| serde_json::json!({
            "name": p.name,
            "kind": p.kind,
            "clause": p.clause,
            "meaning": p.meaning,
            "verdict": p.verdict,
            "expected": p.expected,
            "expected_because": p.expected_because,
            "trace": p.trace,
        })).collect::<Vec<_>>(),
    })
}

/// The human report: the property table, the sizes, then every trace.
pub fn text_report(r: &VariantReport) -> String {
    use std::fmt::Write as _;
    let c = &r.config;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "== {} ({}) — {} UEs ({} companion, budget {}), {} users, {} IMPUs/UE, services {}, {} network, attacker {}{}, time 0..{}, ≤{} publications, UE: carriage {}, protection {} ({}), CSKs {}; policy: token protection {}, CSK tie {}, REGISTER token {}, token expiry {}, failed re-auth {}, IMPU change {}",
        r.variant.name(),
        if r.default_config { "default sizes" } else { "custom sizes" },
        c.ues,
        c.companions,
        c.companion_budget,
        c.users,
        c.impus_per_ue,
        c.services.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
        c.network,
        if c.attacker { "on" } else { "off" },
        if c.attacker && c.attacker_preempts {
            " (pre-empts)"
        } else {
            ""
        },
        c.max_time,
        c.max_publications,
        c.carriage.map_or("preset", |x| x.name()),
        c.ue_protection.name(),
        if c.protects_tokens() { "protects" } else { "in clear" },
        if c.csk_upload { "uploaded" } else { "provisioned" },
        kebab(&c.policy.token_protection),
        kebab(&c.policy.csk_tie),
        kebab(&c.policy.register_token),
        kebab(&c.policy.token_expiry),
        kebab(&c.policy.failed_reauthorization),
        kebab(&c.policy.impu_change),
    );
    let w = r.properties.iter().map(|p| p.name.len()).max().unwrap_or(8);
    let cw = r
        .properties
        .iter()
        .map(|p| p.clause.len())
        .max()
        .unwrap_or(8)
        .min(48);
    let _ = writeln!(
        t,
        "{:<w$}  {:<9}  {:<cw$}  {:<8}  {:<8}",
        "property", "kind", "clause", "verdict", "expected"
    );
    for p in &r.properties {
        let mut clause = p.clause.to_string();
        if clause.chars().count() > cw {
            clause = clause.chars().take(cw - 1).collect::<String>() + "…";
        }
        let _ = writeln!(
            t,
            "{:<w$}  {:<9}  {:<cw$}  {:<8}  {:<8}{}",
            p.name,
            p.kind.name(),
            clause,
            p.verdict.name(),
            p.expected.name(),
            if p.verdict == p.expected {
                ""
            } else {
                "  ← UNEXPECTED"
            }
        );
    }
    let _ = writeln!(
        t,
        "{} unique states ({} generated), max depth {}, {:.1} s on {} threads — {}",
        r.unique_states,
        r.generated_states,
        r.max_depth,
        r.seconds,
        r.threads,
        if r.as_expected() {
            "every verdict as expected"
        } else {
            "SOME VERDICTS UNEXPECTED"
        }
    );
    for p in &r.properties {
        let (Some(steps), Some(mermaid)) = (&p.trace, &p.mermaid) else {
            continue;
        };
        let what = match p.kind {
            PropertyKind::Always | PropertyKind::Eventually => "counterexample",
            PropertyKind::Sometimes => "witness",
        };
        if p.kind == PropertyKind::Sometimes && p.verdict == p.expected {
            // Witnesses of expected reachability are listed briefly.
            let _ = writeln!(
                t,
                "\n-- {} {what}: {} steps (see --json for the trace)",
                p.name,
                steps.len()
            );
            continue;
        }
        let _ = writeln!(
            t,
            "\n-- {} {what} ({} steps) — {}",
            p.name,
            steps.len(),
            p.meaning
        );
        for s in steps {
            let _ = writeln!(t, "{:>3}. [t={}] {}", s.step, s.time, s.text);
        }
        let _ = writeln!(t, "\n```mermaid\n{mermaid}```");
    }
    t.push('\n');
    t
}

fn kebab<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Arguments of `mcx-authz explore`.
#[derive(Debug, clap::Args)]
pub struct ExploreArgs {
    /// post-cr, pre-cr or ct1-rel18.
    #[arg(long, default_value = "post-cr")]
    pub variant: Variant,
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// The model's size and behaviour.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs `mcx-authz explore`: stateright's Explorer on 127.0.0.1, states and steps in MCX terms.
pub fn explore(args: ExploreArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.model.config(args.variant)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    // The Explorer panics if it cannot bind; find out first and say so.
    drop(std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?);
    eprintln!(
        "Explorer for {} on http://{addr}/ (Ctrl-C to stop)",
        args.variant
    );
    let model: McxModel = cfg.into_model();
    let _checker = model.checker().threads(threads(None)).serve(addr);
    Ok(ExitCode::SUCCESS)
}

/// `mcx-authz check --shared-store`: the two-instance model ([`mcx_model::env::shared_store`]).
fn check_shared_store(args: &Args, threads: usize) -> anyhow::Result<ExitCode> {
    use mcx_model::env::shared_store::{
        SharedStoreModel, WriteRule, PINNED_STATES, SHARED_PROPERTIES,
    };
    let model = SharedStoreModel {
        write: if args.blind_write {
            WriteRule::Blind
        } else {
            WriteRule::CompareAndSet
        },
        ..SharedStoreModel::default()
    };
    let start = Instant::now();
    let checker = model.clone().checker().threads(threads).spawn_bfs().join();
    let seconds = start.elapsed().as_secs_f64();
    let found = checker.discoveries();
    let mut properties = Vec::new();
    let mut as_expected = true;
    for p in model.properties() {
        let discovered = found.get(p.name);
        let (kind, verdict) = match p.expectation {
            stateright::Expectation::Sometimes => (
                "sometimes",
                if discovered.is_some() {
                    "holds"
                } else {
                    "fails"
                },
            ),
            _ => (
                "always",
                if discovered.is_some() {
                    "fails"
                } else {
                    "holds"
                },
            ),
        };
        as_expected &= verdict == "holds";
        let meaning = SHARED_PROPERTIES
            .iter()
            .find(|(n, _)| *n == p.name)
            .map_or("", |(_, m)| *m);
        // A counterexample (always, violated) or a witness (sometimes), as the actions taken.
        let path = discovered.map(|path| {
            path.clone()
                .into_actions()
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
        });
        properties.push(serde_json::json!({
            "name": p.name, "kind": kind, "meaning": meaning, "verdict": verdict,
            "expected": "holds", "path": path,
        }));
    }
    let states = checker.unique_state_count();
    let report = serde_json::json!({
        "model": "shared-store",
        "write": if args.blind_write { "blind" } else { "compare-and-set" },
        "requests": format!("{:?}", model.requests),
        "unique_states": states,
        "pinned_states": PINNED_STATES,
        "max_depth": checker.max_depth(),
        "seconds": (seconds * 100.0).round() / 100.0,
        "as_expected": as_expected,
        "properties": properties,
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "shared-store model (two instances, one store, {}): {states} unique states (pinned {PINNED_STATES}), depth {}, {seconds:.2} s",
            report["write"].as_str().unwrap_or_default(),
            checker.max_depth()
        )?;
        for p in &properties {
            writeln!(
                out,
                "  {:<40} {:<9} {}  ({})",
                p["name"].as_str().unwrap_or_default(),
                p["kind"].as_str().unwrap_or_default(),
                p["verdict"].as_str().unwrap_or_default(),
                p["meaning"].as_str().unwrap_or_default()
            )?;
            if p["kind"] == "always" && p["verdict"] == "fails" {
                for step in p["path"].as_array().into_iter().flatten() {
                    writeln!(out, "      {}", step.as_str().unwrap_or_default())?;
                }
            }
        }
    }
    Ok(if as_expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
