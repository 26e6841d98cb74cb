//! `mcx-authz trace`.

/// Arguments of `mcx-authz trace`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `mcx-authz trace`.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("mcx-authz trace is not built yet")
}
