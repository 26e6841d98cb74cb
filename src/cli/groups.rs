//! `mcx-authz groups`: the lab groups the GM server serves (`<data-dir>/gm/groups.toml`).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::resource::gm::{self, Group};
use crate::token::config::DEFAULT_DATA_DIR;

/// Arguments of `mcx-authz groups`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add a group, or replace the group with the same ID.
    Add(AddArgs),
    /// List the groups.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// Lab data dir.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The MC group ID, e.g. sip:fire-1@example.org.
    #[arg(long)]
    id: String,
    /// The group's display name.
    #[arg(long)]
    display_name: Option<String>,
    /// A member's MC service ID (repeatable).
    #[arg(long = "member")]
    members: Vec<String>,
    /// A user authorized for the group without being a member (repeatable).
    #[arg(long = "authorized")]
    authorized: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Lab data dir.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

/// Runs `mcx-authz groups`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Add(a) => {
            if a.id.trim().is_empty() || a.id.contains('/') {
                anyhow::bail!("a group ID is a non-empty URI without '/'");
            }
            let group = Group {
                id: a.id,
                display_name: a.display_name,
                members: a.members,
                authorized: a.authorized,
            };
            gm::add_group(&a.data_dir, group.clone())?;
            println!(
                "group {} ({} members) in {}",
                group.id,
                group.members.len(),
                gm::groups_path(&a.data_dir).display()
            );
        }
        Command::List(a) => {
            for g in gm::read_groups(&a.data_dir)?.groups {
                println!("{}\tmembers: {}", g.id, g.members.join(" "));
                if !g.authorized.is_empty() {
                    println!("\tauthorized: {}", g.authorized.join(" "));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
