//! `mcx-authz check`.

/// Arguments of `mcx-authz check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `mcx-authz check`.
pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("mcx-authz check is not built yet")
}

/// Arguments of `mcx-authz explore`.
#[derive(Debug, clap::Args)]
pub struct ExploreArgs {}

/// Runs `mcx-authz explore`.
pub fn explore(_args: ExploreArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("mcx-authz explore is not built yet")
}
