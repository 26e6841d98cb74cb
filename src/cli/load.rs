//! `mcx-authz load`: the open-loop SIP load generator ([`crate::load`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::token::{write_users_csv, UsersCsv};
use crate::load::{self, LoadConfig, Scenario, Timers, Users};
use crate::token::lab::parse_lab_alg;
use crate::token::LabIdms;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The MCX server's SIP UDP address.
    #[arg(default_value = "127.0.0.1:5060")]
    target: SocketAddr,
    /// What each call sends.
    #[arg(long, value_enum, default_value = "register-publish")]
    scenario: Scenario,
    /// Calls started per second (open loop: on schedule, answered or not).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Calls in all; default: rate × --duration.
    #[arg(long)]
    calls: Option<u64>,
    /// Seconds of scheduled calls, when --calls is not given.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Users and tokens from a SIPp `-inf` CSV (`impu;client_id;mc_id;token`, as `mcx-authz token
    /// mint-csv` writes it).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Users and tokens minted before the run by the lab IdMS in this data dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// With --data-dir: the signing algorithm.
    #[arg(long, default_value = "ES256")]
    alg: String,
    /// With --data-dir: users to mint (default: one per call).
    #[arg(long)]
    users: Option<u64>,
    /// With --data-dir: IMPU user part before the user number.
    #[arg(long, default_value = "load")]
    impu_prefix: String,
    /// Call i uses user (offset + i) modulo the number of users.
    #[arg(long, default_value_t = 0)]
    user_offset: usize,
    /// The generator's address.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// RFC 3261 T1 in ms.
    #[arg(long, default_value_t = 500)]
    t1_ms: u64,
    /// RFC 3261 T2 in ms.
    #[arg(long, default_value_t = 4000)]
    t2_ms: u64,
    /// Give up on a request after this many ms (capped at Timer F = 64·T1).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Receive buffer asked for on the generator's socket (bytes; the kernel caps it).
    #[arg(long, default_value_t = 8 << 20)]
    recv_buffer: usize,
    /// Write the JSON summary here (`-` for stdout; the table then goes to stderr).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the scenario as a SIPp UAC scenario (the same requests) to this file and exit.
    #[arg(long)]
    write_sipp: Option<PathBuf>,
    /// Send nothing: time the verification of this many of the users' tokens, one thread, with
    /// the project's validator trusting the lab IdMS of --data-dir (the server's crypto cost per
    /// PUBLISH, for the crypto-bound ceiling of bench/sip-load.sh); prints JSON and exits.
    #[arg(long, requires = "data_dir")]
    verify_cost: Option<usize>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = &a.write_sipp {
        std::fs::write(path, a.scenario.sipp_xml())
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        a.rate.is_finite() && a.rate > 0.0,
        "--rate must be positive"
    );
    let calls = match a.calls {
        Some(n) => n,
        None => (a.rate * a.duration).round() as u64,
    };
    anyhow::ensure!(calls > 0, "no calls to make");
    let users = match (&a.csv, &a.data_dir) {
        (Some(csv), Some(dir)) if a.verify_cost.is_some() => {
            let users = Users::read_csv(csv)?;
            return verify_cost(&users, dir, a.verify_cost.unwrap_or(0));
        }
        (Some(_), Some(_)) => {
            anyhow::bail!("give --csv or --data-dir, not both (both only with --verify-cost)")
        }
        (Some(csv), None) => Users::read_csv(csv)?,
        (None, Some(_)) if a.scenario == load::Scenario::RegisterPublishProtected => {
            anyhow::bail!(
                "--scenario register-publish-protected needs --csv from `mcx-authz token mint-csv --protect-csks` (the server must hold the CSK table it writes)"
            )
        }
        (None, Some(dir)) => {
            let alg = parse_lab_alg(&a.alg)?;
            let mut lab = LabIdms::open_or_create(dir)?;
            if lab.key(alg).is_none() {
                lab = LabIdms::keygen(dir, alg, false)?;
            }
            let spec = UsersCsv {
                users: a.users.unwrap_or(calls),
                first: 0,
                impu_prefix: a.impu_prefix.clone(),
                iat: mcx_model::UnixTime(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                ),
                expires_in: 86_400,
                alg,
                // Tokens in clear (the protected scenario takes its CSV, with the CSKs the
                // server holds, from `mint-csv --protect-csks`).
                protect: None,
            };
            let mut out =
                Vec::with_capacity(usize::try_from(spec.users).unwrap_or(0).min(1 << 20) * 700);
            let started = std::time::Instant::now();
            write_users_csv(&lab, &spec, &mut out, None)?;
            eprintln!(
                "minted {} {} tokens in {:.1} s",
                spec.users,
                a.alg,
                started.elapsed().as_secs_f64()
            );
            Users::parse_csv(std::str::from_utf8(&out).context("CSV is not UTF-8")?)?
        }
        (None, None) => anyhow::bail!("give --csv FILE or --data-dir DIR for the users' tokens"),
    };
    anyhow::ensure!(
        a.verify_cost.is_none(),
        "--verify-cost needs --csv (the tokens) and --data-dir (the lab IdMS that signed them)"
    );
    let config = LoadConfig {
        target: a.target,
        bind: a.bind,
        rate: a.rate,
        calls,
        scenario: a.scenario,
        user_offset: a.user_offset,
        timers: Timers {
            t1: Duration::from_millis(a.t1_ms.max(1)),
            t2: Duration::from_millis(a.t2_ms.max(a.t1_ms).max(1)),
            timeout: Duration::from_millis(a.timeout_ms.max(1)),
        },
        recv_buffer: a.recv_buffer,
    };
    let report = load::run(config, Arc::new(users))?;
    let json = serde_json::to_string_pretty(&report.json())?;
    match a.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            eprint!("{}", report.table());
            println!("{json}");
        }
        Some(p) => {
            print!("{}", report.table());
            std::fs::write(p, json + "\n").with_context(|| format!("writing {}", p.display()))?;
        }
        None => print!("{}", report.table()),
    }
    Ok(if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Times `n` token verifications (distinct tokens, one thread) with the validator the server
/// would build for the lab IdMS in `dir`.
fn verify_cost(users: &Users, dir: &std::path::Path, n: usize) -> anyhow::Result<ExitCode> {
    let lab = LabIdms::open(dir)?;
    let validator = crate::token::Validator::new(lab.validator_config())?;
    let tokens: Vec<&str> = users.tokens().take(n.max(1)).collect();
    anyhow::ensure!(!tokens.is_empty(), "no tokens in the CSV");
    let now = mcx_model::UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    // Warm-up (key parsing, caches), not timed.
    for t in tokens.iter().take(50) {
        let _ = validator.validate_uncached(t, now);
    }
    let started = std::time::Instant::now();
    let cpu0 = thread_cpu_secs();
    let mut accepted = 0usize;
    for t in &tokens {
        if matches!(
            validator.validate_uncached(t, now),
            mcx_model::TokenVerdict::Verified(_)
        ) {
            accepted += 1;
        }
    }
    let cpu = thread_cpu_secs() - cpu0;
    let secs = started.elapsed().as_secs_f64();
    let us = secs * 1e6 / tokens.len() as f64;
    let cpu_us = cpu * 1e6 / tokens.len() as f64;
    anyhow::ensure!(
        accepted == tokens.len(),
        "{} of {} tokens refused: not signed by the lab IdMS of {}?",
        tokens.len() - accepted,
        tokens.len(),
        dir.display()
    );
    println!(
        "{}",
        serde_json::json!({
            "tokens": tokens.len(),
            "accepted": accepted,
            // CPU time is what the ceiling needs; wall time also counts waiting for a core.
            "cpu_us_per_verification": (cpu_us * 10.0).round() / 10.0,
            "wall_us_per_verification": (us * 10.0).round() / 10.0,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// CPU seconds used by the calling thread.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
