//! `mcx-sec`: the security algorithms the `mcx-authz` shell needs and the machine must not see.
//!
//! Sans-IO like `mcx-model`: no tokio, no sockets, no SIP types, no clock (time is passed in),
//! no randomness source (random octets, IVs and keys are passed in by the caller).
//! Everything that parses bytes from the network is bounded and returns errors, never panics.
//!
//! - [`kms`]: the KMS material of TS 33.180 Annex D (a community's certificate, a user's key
//!   set) as data, with the Annex D element names, so the lab KMS, the KMS resource server and
//!   `mikey inspect` read and write one format; and the lab KMS that issues it.
//! - [`uid`]: the MIKEY-SAKKE UID of TS 33.180 F.2.1.
//! - [`mikey`]: the MIKEY codec (RFC 3830, RFC 6043, RFC 6509) for SAKKE I_MESSAGEs.
//! - [`eccsi`]: ECCSI signatures (RFC 6507) on P-256.
//! - [`sakke`]: SAKKE (RFC 6508) with parameter set 1 (RFC 6509 Appendix A).
//! - [`csk_upload`]: the server's check of a CSK upload (TS 33.180 5.4), cheap stages first.
//! - [`csk`]: CSK-IDs, CSKs, the [`csk::CskStore`] the edge consults and its first
//!   implementation, the lab table of the server config (TS 33.180 5.4).
//! - [`kdf`]: TS 33.180 F.1.4 on the TS 33.220 Annex B KDF (XML keys from a CSK).
//! - [`xml`]: a bounded XML tree, its serializer and C14N 1.0 / Exclusive C14N 1.0.
//! - [`xmlenc`]: XML encryption of `mcptt-info` elements (TS 33.180 clause 9, AES-128-GCM).
//! - [`xmldsig`]: XML signature of MIME bodies (TS 33.180 clause 9, HMAC-SHA-256).

pub mod csk;
pub mod csk_at_rest;
pub mod csk_upload;
pub mod eccsi;
pub mod kdf;
pub mod kms;
pub mod mikey;
pub mod sakke;
pub mod uid;
pub mod xml;
pub mod xmldsig;
pub mod xmlenc;
