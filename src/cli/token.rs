//! `mcx-authz token`.

/// Arguments of `mcx-authz token`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `mcx-authz token`.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("mcx-authz token is not built yet")
}
