//! `mcx-authz serve`.

/// Arguments of `mcx-authz serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `mcx-authz serve`.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("mcx-authz serve is not built yet")
}
