//! `mcx-authz serve`: the reference MCX server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::server::{Server, ServerConfig};

/// Arguments of `mcx-authz serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration; without it the embedded defaults run a loopback lab server.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Lab IdMS data dir (overrides `[token] data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Data directory of the embedded store (overrides `[store] dir`; default `./mcx-data`;
    /// the backend stays the configured one).
    #[arg(long, conflicts_with = "in_memory")]
    pub store_dir: Option<PathBuf>,
    /// Keep nothing across restarts (`[store] backend = "memory"`): for benchmarks and tests.
    #[arg(long)]
    pub in_memory: bool,
}

/// Runs `mcx-authz serve` until SIGINT or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_tracing(args.log_json);
    let mut config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    if let Some(dir) = args.data_dir {
        config.token.data_dir = dir;
    }
    if let Some(dir) = args.store_dir {
        config.store.dir = dir;
    }
    if args.in_memory {
        config.store = crate::store::StoreConfig::memory();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let policy = config.policy.policy()?;
        let data_dir = config.token.data_dir.clone();
        let trusts_lab = config.token.trusts_lab();
        let protection = config.protection.clone();
        let mikey_dir = config.mikey.kms_dir.clone().unwrap_or_else(|| {
            config
                .http
                .data_dir
                .as_ref()
                .unwrap_or(&data_dir)
                .join("kms")
        });
        let server = Server::bind(config).await?;
        let addrs = server.addrs();
        for a in &addrs.udp {
            println!("SIP over UDP   sip:{a};transport=udp");
        }
        for a in &addrs.tcp {
            println!("SIP over TCP   sip:{a};transport=tcp");
        }
        for a in &addrs.tls {
            println!("SIP over TLS   sip:{a};transport=tls");
        }
        if let Some(a) = addrs.admin {
            println!("admin view     http://{a}/bindings  (/registrations /metrics /healthz)");
        }
        if let Some(a) = addrs.http {
            let scheme = if addrs.http_tls { "https" } else { "http" };
            println!("KMS            {scheme}://{a}/keymanagement/identity/v1/  (init keyprov certcache)");
            println!("CM, GM (XCAP)  {scheme}://{a}/xcap-root/");
        }
        match server.store_info() {
            Some(("redb", path, impus)) => {
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                println!(
                    "store          redb {}  ({impus} IMPU(s) loaded; `mcx-authz store check --dir {}`)",
                    path.display(),
                    path.parent().map_or_else(String::new, |d| d.display().to_string())
                );
            }
            Some((kind, place, impus)) => {
                println!("store          {kind} {}  ({impus} IMPU(s) loaded)", place.display());
            }
            None => println!("store          memory (nothing survives a restart)"),
        }
        println!(
            "policy         {}",
            serde_json::to_string(&policy).unwrap_or_default()
        );
        print_protection(&policy, &protection, &data_dir);
        if policy.token_protection != mcx_model::TokenProtection::Off && mikey_dir.join("certificate.toml").exists() {
            println!(
                "CSK upload     mcx-authz kms provision --dir {d} --uri sip:alice@example.org; mcx-authz protect --mikey --kms-dir {d} --sign --token <token> --client-id urn:uuid:<client>  (TS 33.180 5.4)",
                d = mikey_dir.display()
            );
        }
        if trusts_lab {
            println!(
                "mint a token   mcx-authz token mint --data-dir {} --mcptt-id sip:alice@example.org",
                data_dir.display()
            );
        }
        server.run(shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The protection mode and how to make a protected PUBLISH (TS 33.180 clause 9).
fn print_protection(
    policy: &mcx_model::Policy,
    protection: &crate::server::config::ProtectionConfig,
    data_dir: &std::path::Path,
) {
    use mcx_model::TokenProtection;
    let mode = match policy.token_protection {
        TokenProtection::Required => "required (a token in clear gets 403 + Warning 101)",
        TokenProtection::Optional => "optional (tokens in clear and protected tokens accepted)",
        TokenProtection::Off => "off (protected tokens refused, tokens in clear accepted)",
    };
    println!("protection     TS 33.180 clause 9 token protection {mode}");
    if policy.token_protection == TokenProtection::Off {
        return;
    }
    println!(
        "               {} lab CSK(s) in [[protection.csk]], KDF reading {}",
        protection.csk.len(),
        protection.kdf.name()
    );
    if protection.csk.is_empty() {
        println!("add a CSK      mcx-authz csk new --mc-id sip:alice@example.org >> <config>.toml  (then restart with --config)");
    }
    let (id, mc_id) = protection
        .csk
        .first()
        .map_or(("<csk_id>", "sip:alice@example.org"), |c| {
            (c.csk_id.as_str(), c.mc_id.as_str())
        });
    println!(
        "protect        mcx-authz protect --csk-id {id} --csk <csk> --token \"$(mcx-authz token mint --data-dir {} --mcptt-id {mc_id})\" --client-id urn:uuid:<client> [--sign]",
        data_dir.display()
    );
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a terminal: a log file or a pipe gets plain text.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
