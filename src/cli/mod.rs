//! The `mcx-authz` subcommands. Each module owns its clap arguments and its `run`.

pub mod check;
pub mod groups;
pub mod http;
pub mod kms;
pub mod load;
pub mod mikey;
pub mod protect;
pub mod replay;
pub mod serve;
pub mod store;
pub mod tls;
pub mod token;
pub mod trace;
