//! # mcx-authz
//!
//! The reference MCX server for TS 33.180 5.1.3 user service authorization and identity mapping.
//! This crate is the thin runtime around [`mcx_model::Machine`]: token validation, the SIP edge,
//! tokio transport, the admin view and the command line. Every authorization decision is the
//! machine's; this crate only turns bytes into the machine's inputs and its outputs into bytes.

pub mod cli;
pub mod load;
pub mod mikey;
pub mod protection;
pub mod replay;
pub mod resource;
pub mod server;
pub mod sip;
pub mod store;
pub mod token;
pub mod trace;
