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
    #[arg(long, conflicts_with = "data_dir")]
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
        (Some(csv), _) => Users::read_csv(csv)?,
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
            };
            let mut out =
                Vec::with_capacity(usize::try_from(spec.users).unwrap_or(0).min(1 << 20) * 700);
            let started = std::time::Instant::now();
            write_users_csv(&lab, &spec, &mut out)?;
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
