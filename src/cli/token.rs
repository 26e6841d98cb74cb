//! `mcx-authz token`: the lab IdMS (keygen, mint) and token tools (inspect, verify).

use std::io::Read as _;
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
    /// A scope value (repeatable). Default: `openid` and the scope of each service whose ID is given.
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
    println!(
        "{verb} {} ({}, kid {})",
        dir.join(key_file_name(alg)).display(),
        alg_name(alg),
        key.kid()
    );
    println!("wrote {}", dir.join(JWKS_FILE).display());
    println!("issuer {}", lab.issuer());
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
    println!("{}", lab.mint(&req)?);
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
    println!("{}", serde_json::to_string_pretty(&out)?);
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
    println!("{}", serde_json::to_string_pretty(&out)?);
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
