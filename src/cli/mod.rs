//! The `mcx-authz` subcommands. Each module owns its clap arguments and its `run`.

pub mod check;
pub mod load;
pub mod serve;
pub mod token;
pub mod trace;
