//! `mcx-authz replay`: the model's catalogue (named scenarios, the witnesses and counterexamples
//! of `check --json`) played against an MCX server described by a target profile, with a
//! divergence report in Markdown and JSON (docs/interop.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use mcx_model::Variant;

use crate::cli::check::ModelArgs;
use crate::load::Timers;
use crate::replay::profile::{Profile, ProtectTokens};
use crate::replay::{self, ReplayReport, RunOptions, Runner};
use crate::token::LabIdms;

/// Arguments of `mcx-authz replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The target profile (TOML); default: mcx-authz itself (the embedded profile).
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// Replay the catalogue: every named scenario, then every witness and counterexample that
    /// `check --json` reports for the variant (the check runs in-process).
    #[arg(long, required = true)]
    pub catalogue: bool,
    /// The variant whose model is replayed.
    #[arg(long, default_value = "post-cr")]
    pub variant: Variant,
    /// Only these cases (scenario or property names, comma separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The run tag every name carries (`sip:ue1-a.<run>-<case>@…`); default from the clock. A
    /// target holding CSKs per run (`--write-server-config`) needs the same tag.
    #[arg(long)]
    pub run: Option<String>,
    /// The target's SIP address (overrides the profile's `[sip] address`).
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// The target's lab controls base URL (overrides the profile's `[clock] lab_url`).
    #[arg(long)]
    pub lab_url: Option<String>,
    /// The lab IdMS data dir (overrides the profile's `[token] data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Report path without extension: writes REPORT.md and REPORT.json.
    #[arg(long, default_value = "replay-report")]
    pub report: PathBuf,
    /// Write the mcx-authz configuration this run needs (policy, lab clock, CSKs) to FILE and
    /// exit without sending anything (needs --run).
    #[arg(long)]
    pub write_server_config: Option<PathBuf>,
    /// With --write-server-config: the manual clock's start (Unix time).
    #[arg(long, default_value_t = 1_900_000_000)]
    pub clock_start: u64,
    /// Give up on a request after this many milliseconds (retransmitting per RFC 3261).
    #[arg(long, default_value_t = 4000)]
    pub timeout_ms: u64,
    /// Threads for the in-process model check.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Model sizes and policy (as for `check`).
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs `mcx-authz replay`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut profile = match &args.target {
        Some(p) => Profile::read(p)?,
        None => Profile::default_profile(),
    };
    if let Some(a) = args.server {
        profile.sip.address = a;
    }
    if let Some(u) = &args.lab_url {
        profile.clock.lab_url = Some(u.clone());
    }
    if !profile.sip.address.ip().is_loopback() && std::env::var_os("MCX_REPLAY_ANY_HOST").is_none()
    {
        bail!(
            "{}: the replay sends only to loopback (set MCX_REPLAY_ANY_HOST=1 for a lab network)",
            profile.sip.address
        );
    }
    let cfg = args.model.config(args.variant)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if args.write_server_config.is_some() && args.run.is_none() {
        bail!("--write-server-config needs --run (the replay must use the same tag)");
    }
    let run = args.run.clone().unwrap_or_else(replay::run_tag);
    replay::check_run_tag(&run)?;
    let cases = replay::catalogue(&cfg, threads, &args.only)?;
    if cases.is_empty() {
        bail!("no case to replay");
    }
    if let Some(path) = &args.write_server_config {
        let text = replay::server_config(&profile, &cfg, &run, cases.len(), args.clock_start)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "wrote {} ({} cases, run {run})",
            path.display(),
            cases.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(|| profile.data_dir());
    let lab = LabIdms::open_or_create(&data_dir)
        .with_context(|| format!("lab IdMS in {}", data_dir.display()))?;
    let timers = Timers {
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        ..Timers::default()
    };
    let bind: SocketAddr = if profile.sip.address.is_ipv6() {
        "[::1]:0".parse()?
    } else {
        "127.0.0.1:0".parse()?
    };
    let mut runner = Runner::new(
        &profile,
        &lab,
        RunOptions {
            run: run.clone(),
            timers,
            bind,
        },
    )?;
    let mut results = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let r = runner
            .run_case(&cfg, case, i + 1)
            .with_context(|| format!("case {} ({})", i + 1, case.name))?;
        eprintln!(
            "[{}/{}] {}: {}",
            i + 1,
            cases.len(),
            case.name,
            crate::replay::report::case_verdict(&r)
        );
        results.push(r);
    }
    let report = ReplayReport {
        target: profile.name.clone(),
        address: profile.sip.address,
        run,
        variant: cfg.variant.name().to_owned(),
        config: cfg.clone(),
        clock: format!(
            "{}, one tick = {} s",
            match profile.clock.mode {
                replay::profile::ClockMode::Lab => "lab controls",
                replay::profile::ClockMode::RealTime => "real time",
            },
            profile.clock.tick_secs
        ),
        protection: match profile.protection.tokens {
            ProtectTokens::AsModel => {
                "protected per TS 33.180 clause 9 where the model protects them".to_owned()
            }
            ProtectTokens::Never => "always in clear".to_owned(),
        },
        cases: results,
    };
    let md = args.report.with_extension("md");
    let json = args.report.with_extension("json");
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(&report.json())? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let (c, p, d) = report.counts();
    println!(
        "{} cases: {c} conform, {p} match another policy, {d} diverge ({} divergent steps); wrote {} and {}",
        report.cases.len(),
        report.divergent_steps(),
        md.display(),
        json.display()
    );
    // A divergence that another policy setting explains is not a failure.
    Ok(if d == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
