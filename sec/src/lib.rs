//! `mcx-sec`: the security algorithms the `mcx-authz` shell needs and the machine must not see.
//!
//! Sans-IO like `mcx-model`: no tokio, no sockets, no SIP types, no clock (time is passed in).
//! Everything that parses bytes from the network is bounded and returns errors, never panics.
//!
//! - [`kms`]: the KMS material of TS 33.180 Annex D (a community's certificate, a user's key
//!   set) as data, with the Annex D element names, so the lab KMS, the KMS resource server and
//!   `mikey inspect` read and write one format.

pub mod kms;
