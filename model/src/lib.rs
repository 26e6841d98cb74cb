//! # mcx-model
//!
//! The sans-IO state machine of MCX user service authorization and identity mapping (TS 33.180
//! 5.1.3 as changed by the CR; TS 24.379/24.281/24.282 clause 7.3; RFC 3903), and the stateright
//! model that explores it among UEs, a SIP core, an IdMS and an attacker.
//!
//! What this crate is *not*: it has no networking, no clock, no randomness, no SIP parser and no
//! cryptography. Time, token verdicts, asserted identities and fresh entity-tags are passed in.
//! The `mcx-authz` server drives the very same [`Machine`] over real sockets.
//!
//! ```
//! use mcx_model::*;
//! let mut m = Machine::new(Variant::PostCr.policy());
//! let out = m.handle(UnixTime(0), Input::ThirdPartyRegister(ThirdPartyRegister {
//!     target: RegisterTarget::Ours,
//!     impu: AssertedIdentity::Trusted(Impu::new("sip:alice@example.org")),
//!     expires: Some(3600),
//!     services: None,
//!     embedded: vec![],
//! }));
//! // The registration must survive a crash: persist it, then send the 200 (issue 13).
//! assert!(matches!(&out[..], [Output::Persist(p), Output::Response(r)]
//!     if r.status() == 200 && r.wait_for == p.seq));
//! ```

#![warn(missing_docs)]

pub mod durable;
pub mod env;
mod ids;
mod input;
mod machine;
mod output;
mod policy;
mod thin_slice;
mod thin_str;
mod token;

pub use durable::{Change, Image, ImpuRecord, Persist, Reload, Seq, Snapshot};
pub use env::{
    EnvAction, EnvState, Expectation, McxModel, ModelConfig, NetworkKind, PropertyInfo,
    PropertyKind, TokenKind, Trace, TraceStep, Verdict,
};
pub use ids::{
    ClientId, CskId, ETag, Impu, KeyMessageId, McId, Service, ServiceSet, TokenId, UnixTime,
};
pub use input::{
    AssertedIdentity, Authorization, EventPackage, IfMatch, Input, KeyUpload, KeyUploadFailure,
    MalformedBody, Protection, ProtectionFailure, Publish, PublishBody, PublishTarget,
    RegisterTarget, Settings, ThirdPartyRegister,
};
pub use machine::{Binding, Csk, Machine, Publication, Registration};
pub use output::{
    BadRequest, BindingEvent, BindingKey, CskDropCause, CskEvent, ForbiddenReason, McWarning,
    Outcome, Output, PolicyWarning, Response, UnbindCause, Warning,
};
pub use policy::{
    CskTie, FailedReauthorization, ImpuChange, Policy, RegisterToken, TokenExpiry, TokenProtection,
    Variant,
};
pub use token::{TokenRejection, TokenVerdict, VerifiedClaims};
