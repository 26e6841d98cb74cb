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
    /// Run the MCX server (SIP over UDP and TCP, admin view over HTTP).
    Serve(cli::serve::Args),
    /// Model-check the authorization machine for one or all spec variants.
    Check(cli::check::Args),
    /// Serve stateright's Explorer for a variant on 127.0.0.1.
    Explore(cli::check::ExploreArgs),
    /// The lab IdMS: make keys, mint, inspect and verify access tokens.
    Token(cli::token::Args),
    /// Turn a model trace into a SIPp scenario and an ITF trace.
    Trace(cli::trace::Args),
    /// Open-loop SIP load against an MCX server, with per-method latency percentiles.
    Load(cli::load::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => cli::serve::run(a),
        Command::Check(a) => cli::check::run(a),
        Command::Explore(a) => cli::check::explore(a),
        Command::Token(a) => cli::token::run(a),
        Command::Trace(a) => cli::trace::run(a),
        Command::Load(a) => cli::load::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcx-authz: {e:#}");
            ExitCode::from(2)
        }
    }
}
