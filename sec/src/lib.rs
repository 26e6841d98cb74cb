//! `mcx-sec`: the security algorithms the `mcx-authz` shell needs and the machine must not see.
//!
//! Sans-IO like `mcx-model`: no tokio, no sockets, no SIP types, no clock (time is passed in),
//! no randomness (IVs and keys are passed in). Everything that parses bytes from the network is
//! bounded and returns errors, never panics.
//!
//! - [`kms`]: the KMS material of TS 33.180 Annex D (a community's certificate, a user's key
//!   set) as data, with the Annex D element names, so the lab KMS, the KMS resource server and
//!   `mikey inspect` read and write one format.
//! - [`csk`]: CSK-IDs, CSKs, the [`csk::CskStore`] the edge consults and its first
//!   implementation, the lab table of the server config (TS 33.180 5.4).
//! - [`kdf`]: TS 33.180 F.1.4 on the TS 33.220 Annex B KDF (XML keys from a CSK).
//! - [`xml`]: a bounded XML tree, its serializer and C14N 1.0 / Exclusive C14N 1.0.
//! - [`xmlenc`]: XML encryption of `mcptt-info` elements (TS 33.180 clause 9, AES-128-GCM).
//! - [`xmldsig`]: XML signature of MIME bodies (TS 33.180 clause 9, HMAC-SHA-256).

pub mod csk;
pub mod kdf;
pub mod kms;
pub mod xml;
pub mod xmldsig;
pub mod xmlenc;
