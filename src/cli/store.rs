//! `mcx-authz store dump|check`: the embedded store read offline (issue 13). Stop the server
//! first: the embedded store is one file that one process opens at a time. `store migrate`
//! creates the PostgreSQL schema.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::store::redb::{RedbStore, FILE};

/// Arguments of `mcx-authz store`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print every record as one JSON line per key (`impu`, `csk`, `token_owner`,
    /// `key_message`), then the sequence number.
    Dump(DirArgs),
    /// Check the store: redb's integrity check, then every record read back; prints the counts.
    /// Exits 1 when the store cannot be used.
    Check(DirArgs),
    /// Create (or confirm) the PostgreSQL schema (`[store] backend = "postgres"`). Idempotent.
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// The connection string (libpq `key=value` or a `postgresql://` URL).
    #[arg(long)]
    url: String,
}

#[derive(Debug, clap::Args)]
struct DirArgs {
    /// The data directory (`[store] dir`).
    #[arg(long, default_value = "mcx-data")]
    dir: PathBuf,
}

/// Runs `mcx-authz store …`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Dump(a) => dump(&a.dir),
        Command::Check(a) => check(&a.dir),
        Command::Migrate(a) => {
            let at = crate::store::postgres::migrate(&a.url)?;
            println!("schema ready at {at}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_existing(dir: &std::path::Path) -> anyhow::Result<RedbStore> {
    let file = dir.join(FILE);
    anyhow::ensure!(file.exists(), "no store at {}", file.display());
    let (store, _) = RedbStore::open(dir)
        .with_context(|| format!("opening {} (is the server still running?)", file.display()))?;
    Ok(store)
}

fn dump(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let store = open_existing(dir)?;
    let s = store.read_all()?;
    let lines = s
        .impus
        .iter()
        .map(|(impu, record)| serde_json::json!({"impu": impu, "record": record}))
        .chain(
            s.csks
                .iter()
                .map(|(id, csk)| serde_json::json!({"csk": id, "tie": csk})),
        )
        .chain(s.token_owners.iter().map(|(token, impu, until)| {
            serde_json::json!({"token_owner": token, "impu": impu, "until": until})
        }))
        .chain(
            s.key_messages
                .iter()
                .map(|(message, until)| serde_json::json!({"key_message": message, "until": until})),
        )
        .chain([serde_json::json!({"seq": s.seq})]);
    let mut out = std::io::stdout().lock();
    for line in lines {
        // A closed pipe (`| head`) ends the dump quietly.
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let file = dir.join(FILE);
    let result = open_existing(dir).and_then(|mut store| {
        let snapshot = store.check()?;
        Ok((store.counts()?, snapshot))
    });
    match result {
        Ok((counts, snapshot)) => {
            let bindings: usize = snapshot.impus.iter().map(|(_, r)| r.bindings.len()).sum();
            println!("{}: ok", file.display());
            for (table, n) in counts {
                println!("  {table:<12} {n}");
            }
            println!("  bindings     {bindings}");
            println!("  seq          {}", snapshot.seq.0);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}: cannot be used: {e:#}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}
