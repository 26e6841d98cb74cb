//! The `mcx-authz` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcx_authz::cli;

/// Model-checked reference MCX server for TS 33.180 5.1.3 user service authorization.
#[derive(Debug, Parser)]
#[command(name = "mcx-authz", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the MCX server (SIP over UDP, TCP and TLS, admin view over HTTP).
    Serve(cli::serve::Args),
    /// Model-check the authorization machine for one or all spec variants.
    Check(cli::check::Args),
    /// Serve stateright's Explorer for a variant on 127.0.0.1.
    Explore(cli::check::ExploreArgs),
    /// The lab IdMS: make keys, mint, inspect and verify access tokens.
    Token(cli::token::Args),
    /// Turn a model trace into a SIPp scenario and an ITF trace.
    Trace(cli::trace::Args),
    /// Make lab certificates for SIP over TLS (a CA, the server's, the SIP core's).
    TlsLabCerts(cli::tls::Args),
    /// Client-server keys (CSK) for TS 33.180 clause 9: make a lab CSK.
    Csk(cli::protect::CskArgs),
    /// Print an MC info body with the token (and client ID) protected per TS 33.180 clause 9.
    Protect(Box<cli::protect::ProtectArgs>),
    /// MIKEY-SAKKE tools: inspect (and verify, decapsulate) an I_MESSAGE.
    Mikey(cli::mikey::Args),
    /// The lab KMS: create a community, provision users' key sets.
    Kms(cli::kms::Args),
    /// The KMS/CM/GM listener's lab set-up: a self-signed HTTPS certificate.
    Http(cli::http::Args),
    /// The lab groups the GM server serves.
    Groups(cli::groups::Args),
    /// Open-loop SIP load against an MCX server, with per-method latency percentiles.
    Load(cli::load::Args),
    /// Replay the model's scenarios and traces against any MCX server; report divergences.
    Replay(Box<cli::replay::Args>),
    /// The durable store, offline: dump or check it.
    Store(cli::store::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => cli::serve::run(a),
        Command::Check(a) => cli::check::run(a),
        Command::Explore(a) => cli::check::explore(a),
        Command::Token(a) => cli::token::run(a),
        Command::Trace(a) => cli::trace::run(a),
        Command::TlsLabCerts(a) => cli::tls::run(a),
        Command::Csk(a) => cli::protect::run_csk(a),
        Command::Protect(a) => cli::protect::run_protect(*a),
        Command::Mikey(a) => cli::mikey::run(a),
        Command::Kms(a) => cli::kms::run(a),
        Command::Http(a) => cli::http::run(a),
        Command::Groups(a) => cli::groups::run(a),
        Command::Load(a) => cli::load::run(a),
        Command::Replay(a) => cli::replay::run(*a),
        Command::Store(a) => cli::store::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcx-authz: {e:#}");
            ExitCode::from(2)
        }
    }
}
