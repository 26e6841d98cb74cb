//! `mcx-authz kms`: the lab KMS (TS 33.180 5.3, Annex D). `init` creates a community (SAKKE
//! master secret z and Z = \[z\]P, ECCSI KSAK and KPAK, key period and offset) and the server's
//! key set; `provision` issues a user's key set (RSK, SSK, PVT, UID) for the current key
//! period. Material is TOML with the Annex D names (`mcx_sec::kms`), in `--dir` (default
//! `./mcx-lab/kms/`): `certificate.toml`, `secrets.toml` (0600), `keysets/<uri>.toml` (0600),
//! the layout the KMS resource server serves from (`mcx_sec::kms::layout`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use mcx_sec::kms::{layout, KmsCertificate, KmsSecrets};

/// The default KMS directory, inside the lab data dir.
pub const DEFAULT_KMS_DIR: &str = "./mcx-lab/kms";
/// The default server identity (the embedded SIP edge default `server_uri`).
pub const DEFAULT_SERVER_URI: &str = "sip:mcx.example.org";

/// Arguments of `mcx-authz kms`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The KMS directory.
    #[arg(long, global = true, default_value = DEFAULT_KMS_DIR)]
    pub dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a KMS community and the server's key set.
    Init {
        /// The KMS URI (`KmsUri`).
        #[arg(long, default_value = crate::mikey::lab::KMS_URI)]
        kms_uri: String,
        /// The key period in seconds (`UserKeyPeriod`).
        #[arg(long, default_value_t = crate::mikey::lab::KEY_PERIOD)]
        key_period: u64,
        /// The key period offset in seconds (`UserKeyOffset`).
        #[arg(long, default_value_t = crate::mikey::lab::KEY_OFFSET)]
        key_offset: u64,
        /// The MCX server's identity, which CSK uploads are encrypted to.
        #[arg(long, default_value = DEFAULT_SERVER_URI)]
        server_uri: String,
        /// Replace an existing community (every issued key set becomes useless).
        #[arg(long)]
        force: bool,
        /// Unix time for the key period (default: the clock).
        #[arg(long)]
        now: Option<u64>,
    },
    /// Issue a user's key set for the current key period.
    Provision {
        /// The user's URI (an MC service ID, or a server's identity).
        #[arg(long)]
        uri: String,
        /// Unix time for the key period (default: the clock).
        #[arg(long)]
        now: Option<u64>,
    },
}

/// Runs `mcx-authz kms`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init {
            kms_uri,
            key_period,
            key_offset,
            server_uri,
            force,
            now,
        } => {
            let cert_path = args.dir.join(layout::CERTIFICATE);
            if cert_path.exists() && !force {
                bail!(
                    "{} exists; pass --force to replace the community",
                    cert_path.display()
                );
            }
            let (cert, secrets) =
                crate::mikey::init_community(&args.dir, &kms_uri, key_period, key_offset)?;
            println!("KMS community {} in {}", cert.kms_uri, args.dir.display());
            let path = provision(&args.dir, &cert, &secrets, &server_uri, now)?;
            println!("server key set ({server_uri}): {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Provision { uri, now } => {
            let (cert, secrets) = load_community(&args.dir)?;
            let path = provision(&args.dir, &cert, &secrets, &uri, now)?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads a community's certificate and secrets from a KMS directory.
pub fn load_community(dir: &Path) -> anyhow::Result<(KmsCertificate, KmsSecrets)> {
    let cert: KmsCertificate = read_toml(&dir.join(layout::CERTIFICATE))?;
    let secrets: KmsSecrets = read_toml(&dir.join(layout::SECRETS))?;
    Ok((cert, secrets))
}

/// Reads a TOML file into `T`.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    crate::mikey::read_toml(path)
}

fn provision(
    dir: &Path,
    cert: &KmsCertificate,
    secrets: &KmsSecrets,
    uri: &str,
    now: Option<u64>,
) -> anyhow::Result<PathBuf> {
    crate::mikey::provision(dir, cert, secrets, uri, now.unwrap_or_else(unix_now))
}

/// Fills `buf` from the OS random source (aws-lc-rs).
pub fn os_random(buf: &mut [u8]) {
    crate::mikey::os_random(buf)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
