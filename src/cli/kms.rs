//! `mcx-authz kms`: the lab KMS (TS 33.180 5.3, Annex D). `init` creates a community (SAKKE
//! master secret z and Z = \[z\]P, ECCSI KSAK and KPAK, key period and offset) and the server's
//! key set; `provision` issues a user's key set (RSK, SSK, PVT, UID) for the current key
//! period. Material is TOML with the Annex D names (`mcx_sec::kms`), in `--dir` (default
//! `./mcx-lab/kms/`): `certificate.toml`, `secrets.toml` (0600), `keysets/<uri>.toml` (0600),
//! the layout the KMS resource server serves from (`mcx_sec::kms::layout`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use mcx_sec::kms::{self, layout, KmsCertificate, KmsKeySet, KmsSecrets};

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
        #[arg(long, default_value = "kms.mcx.example.org")]
        kms_uri: String,
        /// The key period in seconds (`UserKeyPeriod`).
        #[arg(long, default_value_t = 2_592_000)]
        key_period: u64,
        /// The key period offset in seconds (`UserKeyOffset`).
        #[arg(long, default_value_t = 0)]
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
            std::fs::create_dir_all(args.dir.join(layout::KEY_SETS))
                .with_context(|| format!("create {}", args.dir.display()))?;
            let (cert, secrets) =
                kms::generate_community(&kms_uri, key_period, key_offset, &mut os_random)
                    .context("generate the community")?;
            write_private(
                &args.dir.join(layout::SECRETS),
                &toml::to_string(&secrets).context("encode secrets")?,
            )?;
            std::fs::write(
                &cert_path,
                toml::to_string(&cert).context("encode certificate")?,
            )
            .with_context(|| format!("write {}", cert_path.display()))?;
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
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn provision(
    dir: &Path,
    cert: &KmsCertificate,
    secrets: &KmsSecrets,
    uri: &str,
    now: Option<u64>,
) -> anyhow::Result<PathBuf> {
    let now = now.unwrap_or_else(unix_now);
    let no = cert
        .key_period_no(now)
        .context("the certificate's key period is 0 or after now")?;
    let ks: KmsKeySet =
        kms::provision(cert, secrets, uri, no, &mut os_random).context("issue the key set")?;
    let keysets = dir.join(layout::KEY_SETS);
    std::fs::create_dir_all(&keysets).with_context(|| format!("create {}", keysets.display()))?;
    let path = keysets.join(layout::key_set_file(uri));
    write_private(&path, &toml::to_string(&ks).context("encode key set")?)?;
    Ok(path)
}

/// Fills `buf` from the OS random source (aws-lc-rs).
pub fn os_random(buf: &mut [u8]) {
    // A failing OS RNG is not survivable for key generation.
    aws_lc_rs::rand::fill(buf).expect("the OS random source");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode through open(); force 0600.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}
