//! `mcx-authz http`: lab set-up of the KMS/CM/GM listener (a self-signed certificate).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::token::config::DEFAULT_DATA_DIR;

/// Arguments of `mcx-authz http`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Make a self-signed lab certificate and key for HTTPS (`<data-dir>/http/cert.pem`,
    /// `key.pem`), and print the `[http]` lines that use them.
    Cert(CertArgs),
}

#[derive(Debug, clap::Args)]
struct CertArgs {
    /// Lab data dir.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// A DNS name or IP address the certificate is for (repeatable). Default: localhost,
    /// 127.0.0.1 and ::1.
    #[arg(long = "name")]
    names: Vec<String>,
    /// Replace an existing certificate.
    #[arg(long)]
    force: bool,
}

/// Runs `mcx-authz http`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Cert(a) => cert(a),
    }
}

fn cert(a: CertArgs) -> anyhow::Result<ExitCode> {
    let dir = a.data_dir.join("http");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && !a.force {
        anyhow::bail!("{} exists (use --force to replace it)", cert_path.display());
    }
    let names = if a.names.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        a.names
    };
    let (cert_pem, key_pem) = crate::resource::tls::lab_certificate(&names)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&key_path, key_pem.as_bytes())?;
    std::fs::write(&cert_path, cert_pem)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    println!(
        "certificate    {} (for {})",
        cert_path.display(),
        names.join(", ")
    );
    println!("private key    {}", key_path.display());
    println!("add to the server configuration:");
    println!(
        "[http]\ntls_cert = {:?}\ntls_key = {:?}",
        cert_path, key_path
    );
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
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
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
