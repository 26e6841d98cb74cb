//! `mcx-authz token`: the lab IdMS (keygen, mint, mint-csv) and token tools (inspect, verify).

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::{Subcommand, ValueEnum};
use mcx_model::{Service, TokenVerdict, UnixTime};

use crate::token::config::DEFAULT_DATA_DIR;
use crate::token::lab::{alg_name, key_file_name, parse_lab_alg, JWKS_FILE};
use crate::token::{LabIdms, MintRequest, Validator, ValidatorConfig};

/// Arguments of `mcx-authz token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lab IdMS data dir (keys and JWKS).
    #[arg(long, global = true, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a lab IdMS key pair (PKCS#8 PEM) and the public JWKS into the data dir.
    Keygen {
        /// Signing algorithm: ES256, ES384, RS256, PS256, EdDSA, …
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// Replace an existing key for this algorithm.
        #[arg(long)]
        force: bool,
    },
    /// Print a signed access token from the lab IdMS (the key is made on first use).
    Mint(Box<MintArgs>),
    /// Write a SIPp `-inf` CSV of N users, each with a fresh lab IdMS token (load tests).
    ///
    /// First line `SEQUENTIAL`, then `impu;client_id;mc_id;token` per user:
    /// `sip:<prefix>NNNNNNN@ims.example.org`, `urn:uuid:` from N, `sip:userNNNNNNN@example.org`.
    /// With `--protect-csks FILE`: `impu;client_id;mc_id;token;protected_info;signature`.
    MintCsv(MintCsvArgs),
    /// Print a token's header and claims without trusting them.
    Inspect {
        /// The token, or `-` to read it from stdin.
        token: String,
    },
    /// Validate a token and print the verdict; exits 1 on rejection.
    Verify {
        /// The token, or `-` to read it from stdin.
        token: String,
        /// A TOML file with a `[token]` table (the server's config) or the table's keys at top
        /// level. Without it the lab IdMS in the data dir is trusted.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also apply the per-service check (scope granted, MC service ID claim present).
        #[arg(long, value_enum)]
        service: Option<ServiceArg>,
        /// Validation time (Unix seconds) instead of the clock.
        #[arg(long)]
        now: Option<u64>,
    },
}

#[derive(Debug, clap::Args)]
struct MintArgs {
    /// The `mcptt_id` claim (MCPTT ID), e.g. sip:alice@example.org.
    #[arg(long)]
    mcptt_id: Option<String>,
    /// The `mcvideo_id` claim (MCVideo ID).
    #[arg(long)]
    mcvideo_id: Option<String>,
    /// The `mcdata_id` claim (MCData ID).
    #[arg(long)]
    mcdata_id: Option<String>,
    /// A scope value (repeatable), e.g. `3gpp:mc:ptt_service` or a resource server's
    /// `3gpp:mc:ptt_key_management_service`, `…_config_management_service`,
    /// `…_group_management_service`. Default: `openid` and the scope of each service whose ID
    /// is given.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    expires_in: u64,
    /// An `aud` value (repeatable).
    #[arg(long)]
    aud: Vec<String>,
    /// The `iss` claim (default: the lab issuer).
    #[arg(long)]
    iss: Option<String>,
    /// The `jti` claim (default: random).
    #[arg(long)]
    jti: Option<String>,
    /// The `sub` claim.
    #[arg(long)]
    sub: Option<String>,
    /// Signing algorithm (default ES256; its key is made on first use).
    #[arg(long, default_value = "ES256")]
    alg: String,
}

#[derive(Debug, clap::Args)]
struct MintCsvArgs {
    /// Number of users (CSV lines after `SEQUENTIAL`).
    #[arg(long)]
    users: u64,
    /// Output file, or `-` for stdout.
    #[arg(long)]
    out: PathBuf,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    expires_in: u64,
    /// IMPU user part before the 7-digit user number.
    #[arg(long, default_value = "ue")]
    impu_prefix: String,
    /// Number of the first user.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Signing algorithm (its key is made on first use).
    #[arg(long, default_value = "ES256")]
    alg: String,
    /// Also protect each user's body per TS 33.180 clause 9 under a fresh CSK of that user:
    /// two more CSV fields (the info body with token and client ID encrypted; its signature
    /// part for Content-ID `info@mcx-authz.lab`), and the `[[protection.csk]]` entries
    /// written to this TOML file for the server config.
    #[arg(long)]
    protect_csks: Option<PathBuf>,
    /// The TS 33.180 F.1.4 reading for `--protect-csks`.
    #[arg(long, value_enum, default_value = "mc-id-and-xpk-id")]
    kdf: crate::cli::protect::KdfArg,
}

/// What `mcx-authz token mint-csv` writes: N users of the SIPp load scenarios.
#[derive(Clone, Debug)]
pub struct UsersCsv {
    /// Number of users.
    pub users: u64,
    /// Number of the first user (user numbers are `first..first + users`).
    pub first: u64,
    /// IMPU user part before the user number (`ue` gives `sip:ue0000000@ims.example.org`).
    pub impu_prefix: String,
    /// `iat` of every token.
    pub iat: UnixTime,
    /// Token lifetime in seconds.
    pub expires_in: u64,
    /// Signing algorithm; the lab must hold its key.
    pub alg: jsonwebtoken::Algorithm,
    /// Protect each body (TS 33.180 clause 9) under a fresh per-user CSK with this F.1.4
    /// reading: the CSV gains `protected_info;signature` and the CSKs go to the second writer.
    pub protect: Option<mcx_sec::kdf::KdfReading>,
}

/// The (IMPU, MC client ID, MCPTT ID) of user number `n`, as `mint-csv` (and
/// `tests/sipp/mint_csv.py users`) name them: `sip:<prefix>NNNNNNN@ims.example.org`,
/// `urn:uuid:` of the integer n + 1, `sip:userNNNNNNN@example.org`.
pub fn csv_user(impu_prefix: &str, n: u64) -> (String, String, String) {
    let u = format!("{:032x}", u128::from(n) + 1);
    (
        format!("sip:{impu_prefix}{n:07}@ims.example.org"),
        format!(
            "urn:uuid:{}-{}-{}-{}-{}",
            &u[..8],
            &u[8..12],
            &u[12..16],
            &u[16..20],
            &u[20..]
        ),
        format!("sip:user{n:07}@example.org"),
    )
}

/// The CSK-ID of user number `n` in a file whose IDs start at `base`: the CSK purpose tag 2 in
/// the top four bits (TS 33.180 5.4), then 28 bits that differ for 2^28 consecutive users.
fn user_csk_id(base: u32, n: u64) -> mcx_sec::csk::CskId {
    mcx_sec::csk::CskId(0x2000_0000 | (base.wrapping_add(n as u32) & 0x0fff_ffff))
}

/// Writes the SIPp `-inf` CSV of [`UsersCsv`] to `out`, signing on every core (the key is
/// parsed once; a token costs one signature). Returns the number of users written.
pub fn write_users_csv(
    lab: &LabIdms,
    spec: &UsersCsv,
    out: &mut dyn Write,
    mut csks: Option<&mut dyn Write>,
) -> anyhow::Result<u64> {
    anyhow::ensure!(
        spec.protect.is_none() || csks.is_some(),
        "protected bodies need a writer for their CSKs"
    );
    anyhow::ensure!(
        !spec.impu_prefix.is_empty()
            && spec
                .impu_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "--impu-prefix must be letters, digits, '-', '_' or '.': {:?}",
        spec.impu_prefix
    );
    anyhow::ensure!(
        lab.key(spec.alg).is_some(),
        "the lab has no {} key",
        alg_name(spec.alg)
    );
    let end = spec
        .first
        .checked_add(spec.users)
        .context("--first + --users overflows")?;
    // CSK-IDs: 28 bits after the CSK purpose tag (TS 33.180 5.4), one per user, and unique in
    // the file (random IDs would collide: 10^5 users draw ~19 pairs from 2^28): a random
    // offset plus the user number.
    anyhow::ensure!(
        spec.protect.is_none() || spec.users <= 1 << 28,
        "--protect-csks: at most 2^28 users (one CSK-ID each)"
    );
    let csk_base = rand::random::<u32>();
    let line = |n: u64| -> anyhow::Result<(String, String)> {
        let (impu, client_id, mc_id) = csv_user(&spec.impu_prefix, n);
        let req = MintRequest {
            sub: Some(format!("user{n:07}")),
            mcptt_id: Some(mc_id.clone()),
            iat: Some(spec.iat),
            expires_in: Some(spec.expires_in),
            alg: Some(spec.alg),
            ..MintRequest::default()
        };
        let token = lab.mint(&req)?;
        let Some(reading) = spec.protect else {
            return Ok((
                format!("{impu};{client_id};{mc_id};{token}\n"),
                String::new(),
            ));
        };
        let (_, csk) = crate::protection::new_csk();
        let id = user_csk_id(csk_base, n);
        let entry = mcx_sec::csk::config_entry(id, &csk, &mc_id);
        let p = crate::protection::Protector::new(
            &mcx_sec::csk::CskEntry {
                id,
                csk,
                mc_id: mc_id.clone(),
            },
            reading,
        )?;
        let info = p.encrypt_info(
            Service::Mcptt,
            &crate::protection::clear_info(Service::Mcptt, &token, Some(&client_id)),
        )?;
        let sig = p.sign(&[(crate::protection::INFO_CONTENT_ID, info.as_bytes())]);
        Ok((
            format!("{impu};{client_id};{mc_id};{token};{info};{sig}\n"),
            entry,
        ))
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    // Blocks bound the memory held; each block is split over the workers and written in order.
    const BLOCK: u64 = 4096;
    out.write_all(b"SEQUENTIAL\n")?;
    let mut start = spec.first;
    while start < end {
        let stop = end.min(start + BLOCK);
        let per = (stop - start).div_ceil(workers);
        let parts: Vec<anyhow::Result<(String, String)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (a, b) = (start + w * per, stop.min(start + (w + 1) * per));
                    s.spawn(move || {
                        let (mut text, mut keys) = (String::new(), String::new());
                        for n in a..b {
                            let (l, k) = line(n)?;
                            text.push_str(&l);
                            keys.push_str(&k);
                        }
                        Ok((text, keys))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("minting thread panicked")))
                })
                .collect()
        });
        for part in parts {
            let (text, keys) = part?;
            out.write_all(text.as_bytes())?;
            if let Some(w) = csks.as_deref_mut() {
                w.write_all(keys.as_bytes())?;
            }
        }
        start = stop;
    }
    out.flush()?;
    if let Some(w) = csks {
        w.flush()?;
    }
    Ok(spec.users)
}

/// An MC service on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ServiceArg {
    Mcptt,
    Mcvideo,
    Mcdata,
}

impl From<ServiceArg> for Service {
    fn from(s: ServiceArg) -> Service {
        match s {
            ServiceArg::Mcptt => Service::Mcptt,
            ServiceArg::Mcvideo => Service::Mcvideo,
            ServiceArg::Mcdata => Service::Mcdata,
        }
    }
}

/// Runs `mcx-authz token`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Keygen { alg, force } => keygen(&args.data_dir, &alg, force),
        Command::Mint(m) => mint(&args.data_dir, *m),
        Command::MintCsv(m) => mint_csv(&args.data_dir, m),
        Command::Inspect { token } => inspect(&read_token(&token)?),
        Command::Verify {
            token,
            config,
            service,
            now,
        } => verify(
            &args.data_dir,
            &read_token(&token)?,
            config.as_deref(),
            service.map(Service::from),
            now,
        ),
    }
}

fn keygen(dir: &Path, alg: &str, force: bool) -> anyhow::Result<ExitCode> {
    let alg = parse_lab_alg(alg)?;
    let existed = dir.join(key_file_name(alg)).exists();
    let lab = LabIdms::keygen(dir, alg, force)?;
    let key = lab.key(alg).context("key not written")?;
    let verb = if existed && !force { "kept" } else { "wrote" };
    emit(&format!(
        "{verb} {} ({}, kid {})\nwrote {}\nissuer {}",
        dir.join(key_file_name(alg)).display(),
        alg_name(alg),
        key.kid(),
        dir.join(JWKS_FILE).display(),
        lab.issuer()
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn mint(dir: &Path, m: MintArgs) -> anyhow::Result<ExitCode> {
    if m.mcptt_id.is_none() && m.mcvideo_id.is_none() && m.mcdata_id.is_none() {
        anyhow::bail!("give at least one of --mcptt-id, --mcvideo-id, --mcdata-id");
    }
    let alg = parse_lab_alg(&m.alg)?;
    let mut lab = LabIdms::open_or_create(dir)?;
    if lab.key(alg).is_none() {
        lab = LabIdms::keygen(dir, alg, false)?;
    }
    let req = MintRequest {
        mcptt_id: m.mcptt_id,
        mcvideo_id: m.mcvideo_id,
        mcdata_id: m.mcdata_id,
        scopes: (!m.scopes.is_empty()).then_some(m.scopes),
        iat: Some(clock()),
        expires_in: Some(m.expires_in),
        aud: m.aud,
        iss: m.iss,
        jti: m.jti,
        sub: m.sub,
        alg: Some(alg),
        ..MintRequest::default()
    };
    emit(&lab.mint(&req)?)?;
    Ok(ExitCode::SUCCESS)
}

fn mint_csv(dir: &Path, m: MintCsvArgs) -> anyhow::Result<ExitCode> {
    let alg = parse_lab_alg(&m.alg)?;
    let mut lab = LabIdms::open_or_create(dir)?;
    if lab.key(alg).is_none() {
        lab = LabIdms::keygen(dir, alg, false)?;
    }
    let spec = UsersCsv {
        users: m.users,
        first: m.first,
        impu_prefix: m.impu_prefix,
        iat: clock(),
        expires_in: m.expires_in,
        alg,
        protect: m.protect_csks.as_ref().map(|_| m.kdf.into()),
    };
    let mut csk_file = match &m.protect_csks {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let csks = csk_file.as_mut().map(|w| w as &mut dyn Write);
    if m.out.as_os_str() == "-" {
        write_users_csv(&lab, &spec, &mut std::io::stdout().lock(), csks)?;
        return Ok(ExitCode::SUCCESS);
    }
    let started = std::time::Instant::now();
    let file =
        std::fs::File::create(&m.out).with_context(|| format!("creating {}", m.out.display()))?;
    let n = write_users_csv(&lab, &spec, &mut std::io::BufWriter::new(file), csks)
        .with_context(|| format!("writing {}", m.out.display()))?;
    // stderr, so that `--out -` and scripts reading stdout see only the CSV.
    eprintln!(
        "wrote {} ({n} users, {}, {:.1} s)",
        m.out.display(),
        alg_name(alg),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(token: &str) -> anyhow::Result<ExitCode> {
    let parts: Vec<&str> = token.split('.').collect();
    anyhow::ensure!(
        parts.len() == 3,
        "not a JWS compact serialization ({} parts, want 3)",
        parts.len()
    );
    let part = |i: usize, what: &str| -> anyhow::Result<serde_json::Value> {
        let bytes = URL_SAFE_NO_PAD
            .decode(parts[i])
            .with_context(|| format!("{what} is not base64url"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{what} is not JSON"))
    };
    let out = serde_json::json!({
        "trusted": false,
        "header": part(0, "header")?,
        "claims": part(1, "claims")?,
        "signature_bytes": URL_SAFE_NO_PAD.decode(parts[2]).map(|s| s.len()).ok(),
    });
    emit(&serde_json::to_string_pretty(&out)?)?;
    Ok(ExitCode::SUCCESS)
}

fn verify(
    dir: &Path,
    token: &str,
    config: Option<&Path>,
    service: Option<Service>,
    now: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let cfg = match config {
        Some(path) => load_config(path)?,
        None => ValidatorConfig {
            data_dir: dir.to_owned(),
            ..ValidatorConfig::default()
        },
    };
    let validator = Validator::new(cfg)?;
    let now = now.map(UnixTime).unwrap_or_else(clock);
    let verdict = validator.validate(token, now);
    let mut out = serde_json::json!({ "now": now.0, "verdict": &verdict });
    if let TokenVerdict::Verified(c) = &verdict {
        // The ServiceSet serializes as bits; name the granted services for people.
        out["granted_services"] = c.scopes.iter().map(|s| s.name()).collect();
    }
    let ok = match service {
        None => matches!(verdict, TokenVerdict::Verified(_)),
        Some(svc) => {
            let answer = Validator::for_service(&verdict, svc);
            out["service"] = serde_json::json!({
                "service": svc.name(),
                "authorized": answer.is_ok(),
                "reason": answer.err().map(|r| r.label()),
            });
            answer.is_ok()
        }
    };
    emit(&serde_json::to_string_pretty(&out)?)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads a validator configuration from a TOML file: its `[token]` table, or the whole file.
pub fn load_config(path: &Path) -> anyhow::Result<ValidatorConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let table = match table.get("token") {
        Some(toml::Value::Table(t)) => t.clone(),
        _ => table,
    };
    toml::Value::Table(table)
        .try_into()
        .with_context(|| format!("the [token] table of {}", path.display()))
}

fn read_token(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the token from stdin")?;
        Ok(s.trim().to_owned())
    } else {
        Ok(arg.trim().to_owned())
    }
}

fn clock() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// Writes `text` and a newline to stdout. A reader that went away (`token verify … | head`)
/// is not an error: the output is simply no longer wanted (`println!` would panic on EPIPE).
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::user_csk_id;

    /// `mint-csv --protect-csks` must not write one CSK-ID twice (the server refuses such a
    /// table): 10^5 users drawing random 28-bit IDs would collide about 19 times.
    #[test]
    fn users_csk_ids_are_distinct_and_tagged_even_across_the_wrap() {
        for base in [0, 0x0fff_ff00, u32::MAX - 50, rand::random()] {
            let mut seen = std::collections::HashSet::new();
            for n in 0..200_000u64 {
                let id = user_csk_id(base, n);
                assert_eq!(id.0 >> 28, 2, "the CSK purpose tag: {:08x}", id.0);
                assert!(
                    seen.insert(id.0),
                    "CSK-ID {:08x} twice (base {base:x})",
                    id.0
                );
            }
        }
    }
}
