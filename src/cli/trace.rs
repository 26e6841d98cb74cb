//! `mcx-authz trace`: a model trace (a `check --json` witness or counterexample, or a named
//! scenario) as a runnable SIPp scenario with freshly minted tokens, and as an ITF trace.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mcx_model::Variant;

use crate::cli::check::ModelArgs;
use crate::token::LabIdms;
use crate::trace::{Replay, ReplayOptions, TraceSource};

/// Arguments of `mcx-authz trace`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `mcx-authz check --json` output (`-` for stdin); pick the trace with `--property`.
    #[arg(
        long,
        conflicts_with = "scenario",
        required_unless_present = "scenario"
    )]
    pub from: Option<PathBuf>,
    /// A named scenario instead (bound, user-switch, impu-change, deregistration, log-off,
    /// token-expiry, replay, duplicate-after-switch).
    #[arg(long)]
    pub scenario: Option<String>,
    /// The variant: required with `--scenario`; with `--from`, picks one of several reports.
    #[arg(long)]
    pub variant: Option<Variant>,
    /// The property whose trace to replay (with `--from`).
    #[arg(long, requires = "from")]
    pub property: Option<String>,
    /// Output directory (scenario.xml, tokens.csv, trace.itf.json, server.toml, README).
    #[arg(long)]
    pub out: PathBuf,
    /// Without `--clock-url`: one model tick becomes a pause of this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    /// The server's admin base URL with lab controls (`http://127.0.0.1:8080`): ticks become
    /// `POST /clock/advance?secs=1`, restarts `POST /restart` (via SIPp `<exec>` and curl).
    #[arg(long)]
    pub clock_url: Option<String>,
    /// Pause after each lab-control call, in milliseconds (SIPp runs `<exec>` in the background).
    #[arg(long, default_value_t = 300)]
    pub settle_ms: u64,
    /// How long SIPp waits for each response, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub response_timeout_ms: u64,
    /// Unix time of model tick 0 (the server's `[admin] manual_clock_start`); default now.
    #[arg(long)]
    pub time_base: Option<u64>,
    /// The lab IdMS data dir whose key signs the tokens (the server's `--data-dir`).
    #[arg(long, default_value = crate::token::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// A target profile (as for `mcx-authz replay`): the scenario's Request-URIs (server URI,
    /// PSIs), S-CSCF and IMPU domain are the target's, and a `lab` clock's URL is the default
    /// `--clock-url`. Token names and MC service IDs stay the model's (the replay renames them).
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// Model sizes for `--scenario` (as for `check`).
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs `mcx-authz trace`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let src = match (&args.from, &args.scenario) {
        (Some(path), None) => {
            let Some(property) = &args.property else {
                bail!("--from needs --property NAME (the property whose trace to replay)");
            };
            let text = if path.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading stdin")?;
                s
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            TraceSource::from_check_json(&text, args.variant, property)?
        }
        (None, Some(name)) => {
            let Some(variant) = args.variant else {
                bail!("--scenario needs --variant (post-cr, pre-cr, ct1-rel18)");
            };
            TraceSource::from_scenario(name, args.model.config(variant)?)?
        }
        _ => bail!("give either --from FILE --property NAME or --scenario NAME --variant V"),
    };
    let time_base = match args.time_base {
        Some(t) => t,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("system clock before 1970")?
            .as_secs(),
    };
    let profile = args
        .target
        .as_deref()
        .map(crate::replay::profile::Profile::read)
        .transpose()?;
    let clock_url = args.clock_url.clone().or_else(|| {
        profile
            .as_ref()
            .filter(|p| p.clock.mode == crate::replay::profile::ClockMode::Lab)
            .and_then(|p| p.clock.lab_url.clone())
    });
    let opts = ReplayOptions {
        tick_ms: args.tick_ms,
        clock_url,
        settle_ms: args.settle_ms,
        time_base,
        response_timeout_ms: args.response_timeout_ms,
    };
    let lab = LabIdms::open_or_create(&args.data_dir)
        .with_context(|| format!("lab IdMS in {}", args.data_dir.display()))?;
    let mut replay = Replay::build(&src, &lab, &opts)?;
    if let Some(p) = &profile {
        replay.scenario_xml = retarget_scenario(p, &replay.scenario_xml);
    }
    replay.write(&args.out, &opts)?;
    println!("{}", replay.title);
    println!(
        "wrote {0}/scenario.xml, {0}/tokens.csv, {0}/trace.itf.json, {0}/server.toml, {0}/README",
        args.out.display()
    );
    println!(
        "replay: cd {} && {}",
        args.out.display(),
        replay.sipp_command("HOST:PORT")
    );
    println!(
        "server: mcx-authz serve --config {}/server.toml --data-dir {}   (the model's policy, min_expires 1, manual clock at {time_base}, SIPp host a trusted core)",
        args.out.display(),
        args.data_dir.display()
    );
    if !replay.skipped_direct.is_empty() {
        println!(
            "not sent: steps {:?} (forged P-Asserted-Identity straight to the server; comments in the scenario)",
            replay.skipped_direct
        );
    }
    for n in &replay.notes {
        println!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The scenario's requests aimed at `profile`'s target: Request-URIs and S-CSCF
/// ([`crate::replay::profile::Profile::retarget`]) and the IMPU domain.
fn retarget_scenario(profile: &crate::replay::profile::Profile, xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    for line in xml.split_inclusive('\n') {
        if line.starts_with("REGISTER sip:mcx.example.org ") || line.starts_with("PUBLISH sip:") {
            out.push_str(profile.retarget(line).trim_end_matches('\n'));
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    out.replace(crate::trace::sipp::SCSCF_URI, &profile.sip.scscf_uri)
        .replace(
            "@ims.example>",
            &format!("@{}>", profile.identities.impu_domain),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_is_retargeted() {
        let text = crate::replay::profile::DEFAULT_PROFILE
            .replace("\"sip:mcx.example.org\"", "\"sip:as.vendor.test\"")
            .replace("\"sip:mcptt@mcx.example.org\"", "\"sip:ptt@vendor.test\"")
            .replace(
                "impu_domain = \"ims.example\"",
                "impu_domain = \"ims.vendor.test\"",
            );
        let p = crate::replay::profile::Profile::parse(&text, std::path::Path::new(".")).unwrap();
        let xml = "REGISTER sip:mcx.example.org SIP/2.0\nTo: <sip:ue1-a@ims.example>\nREGISTER sip:ims.example SIP/2.0\nPUBLISH sip:mcptt@mcx.example.org SIP/2.0\n";
        assert_eq!(
            retarget_scenario(&p, xml),
            "REGISTER sip:as.vendor.test SIP/2.0\nTo: <sip:ue1-a@ims.vendor.test>\nREGISTER sip:ims.example SIP/2.0\nPUBLISH sip:ptt@vendor.test SIP/2.0\n"
        );
    }
}
