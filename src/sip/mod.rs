//! The SIP edge: framing, parsing, bodies, the adapter to the machine, responses.
//!
//! Bytes go through [`framing`] (one message, UTF-8 header block, Content-Length, 64 KiB cap),
//! [`parse`] (our own [`parse::SipRequest`]; no third-party SIP type leaves this module),
//! [`body`] (multipart, MC info XML, poc-settings, message/sip), [`headers`] (feature tags,
//! ICSIs) and [`adapter`] (to
//! [`mcx_model::Input`]); [`response`] turns the machine's [`mcx_model::Response`] back into
//! bytes. Nothing here decides authorization: that is the machine's.

pub mod adapter;
pub mod body;
pub mod framing;
pub mod headers;
pub mod parse;
pub mod response;
mod scan;
pub mod selfcheck;
pub mod uri;

pub use adapter::{classify, Edge, EdgeConfig, EdgeContext, Sealed};
pub use framing::{frame_datagram, Frame, FramingError, FramingErrorKind, StreamFramer};
pub use parse::{parse, Method, ParseError, ReplyTo, SipMessage, SipRequest, SipResponse};
pub use response::ALLOW;
pub use response::{build_response, ResponseConfig};
