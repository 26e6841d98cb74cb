//! Access-token validation (TS 33.180 Annex B) and the lab IdMS.
//!
//! - [`Validator`] turns an access token into the machine's [`mcx_model::TokenVerdict`]: JWS
//!   signature with a trusted IdMS key (JWKS URL, JWKS file or PEM), algorithm allow-list,
//!   `exp`/`nbf`/`iat` with leeway, `iss`, `aud`, the MC service scopes and MC service ID
//!   claims and a maximum size (the `jti` replay window is the machine's). Verified tokens are cached
//!   (keyed by SHA-256 of the token, dropped at expiry, bounded), so one token presented for
//!   MCPTT, MCVideo and MCData, or presented again, costs one signature check.
//! - [`lab::LabIdms`] is the IdMS in the box: `token keygen`, `token mint`.
//!
//! The validator is service-agnostic: it reports which services' scopes the token grants and
//! the MC service ID claims; the machine decides `MissingScope`/`MissingMcId` for the service
//! the token is presented for. A token with no MC scope at all is refused here as
//! `MissingScope`, and one with an MC scope but no MC service ID claim at all as `MissingMcId`.

mod cache;
pub mod config;
mod keys;
pub mod lab;
mod validator;

pub use config::{ServiceScopes, TokenConfigError, ValidatorConfig, LAB_ISSUER};
pub use lab::{LabIdms, LabKey, MintRequest};
pub use validator::{ResourceToken, Validator, ValidatorStats};
