//! The whole edge path for property tests and fuzzing: framing (datagram and stream), parsing,
//! body extraction, the adapter and response building. [`check_bytes`] panics if an invariant
//! breaks; on any input it must otherwise return. `tests/sip_edge.rs` (bounded proptest) and
//! `fuzz/fuzz_targets/sip_edge.rs` (cargo-fuzz) both call it.

use mcx_model::{ETag, Input, PublishBody, TokenRejection, TokenVerdict};

use super::adapter::{classify, Edge, EdgeConfig, EdgeContext};
use super::framing::{frame_datagram_with_limit, Frame, StreamFramer, MAX_MESSAGE_SIZE};
use super::parse::{parse, SipMessage};
use super::response::{self, error_response_for_head};

/// What one datagram came to, for callers that want to count outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// Framing refused it.
    Framing,
    /// Parsing refused it.
    Parse,
    /// A response (ignored).
    Response,
    /// A request the edge answers itself (OPTIONS, 405, 404, …).
    Direct,
    /// A machine input with a usable body (or none).
    Machine,
    /// A machine input whose body was refused (415 or 400).
    MachineBadBody,
}

/// Runs `data` through the edge as a UDP datagram and as a TCP stream and checks:
/// a framed message re-frames to itself and parses the same way again; a TCP stream cut anywhere
/// yields the same messages; every response built is a parsable SIP response; nothing panics.
pub fn check_bytes(data: &[u8]) -> Reached {
    let cfg = EdgeConfig::default();
    let rcfg = cfg.response_config();
    let reached = match frame_datagram_with_limit(data, MAX_MESSAGE_SIZE) {
        Err(e) => {
            if let (Some(status), Some(head)) = (e.status(), &e.head) {
                if let Some(bytes) = error_response_for_head(head, status, None, &rcfg) {
                    assert_response(&bytes);
                }
            }
            Reached::Framing
        }
        Ok(frame) => {
            // Re-framing the accepted message gives the same frame and the same parse.
            let again = frame_datagram_with_limit(&frame.to_bytes(), MAX_MESSAGE_SIZE)
                .expect("a framed message re-frames");
            assert_eq!(again, frame, "re-framing changed the message");
            let parsed = parse(&frame);
            assert_eq!(parsed, parse(&again), "re-parsing changed the result");
            check_parsed(parsed, &cfg, &rcfg)
        }
    };
    check_stream(data);
    reached
}

fn check_parsed(
    parsed: Result<SipMessage, super::ParseError>,
    cfg: &EdgeConfig,
    rcfg: &response::ResponseConfig,
) -> Reached {
    let req = match parsed {
        Err(e) => {
            if let Some(reply) = &e.reply_to {
                assert_response(&response::build(
                    reply,
                    e.status,
                    Some(&e.reason),
                    &Default::default(),
                    rcfg,
                ));
            }
            return Reached::Parse;
        }
        Ok(SipMessage::Response(_)) => return Reached::Response,
        Ok(SipMessage::Request(r)) => r,
    };
    let mut validate = |t: &str| {
        assert!(!t.is_empty(), "an empty token reached the validator");
        TokenVerdict::Rejected(TokenRejection::BadSignature)
    };
    // The server's opener over an empty key store: protected values reach mcx-sec's parsers
    // and fail as unknown keys (or malformed).
    let keys = crate::protection::KeyStore::default();
    // A CSK upload part goes through the server's reading of it (no key material: refused).
    let upload = std::cell::RefCell::new(crate::mikey::Pending::None);
    let mut key_transport = |part: &[u8]| {
        let _ = crate::mikey::part_octets(part);
        upload.borrow_mut().receive(None, part, 0)
    };
    let mut open = |s: &crate::sip::Sealed<'_>| keys.open_with(s, upload.borrow().entry().as_ref());
    let mut ctx = EdgeContext {
        config: cfg,
        trusted_source: true,
        validate: &mut validate,
        open: &mut open,
        key_transport: &mut key_transport,
        fresh_etag: ETag::new("e1"),
    };
    let edge = classify(&req, &mut ctx);
    assert_response(&response::simple(&req, 200, None, rcfg));
    match edge {
        Edge::Machine {
            input: Input::Publish(p),
            ..
        } => match p.body {
            PublishBody::Malformed(_) | PublishBody::UnsupportedMediaType => {
                Reached::MachineBadBody
            }
            _ => Reached::Machine,
        },
        Edge::Machine { .. } => Reached::Machine,
        _ => Reached::Direct,
    }
}

/// The stream framer must find the same messages however the bytes are cut.
fn check_stream(data: &[u8]) {
    let whole = drain(data, &[data.len()]);
    let cuts: Vec<usize> = [1, 7, data.len() / 2, data.len().saturating_sub(3)]
        .into_iter()
        .filter(|c| *c > 0 && *c < data.len())
        .collect();
    if !cuts.is_empty() {
        assert_eq!(
            drain(data, &cuts),
            whole,
            "stream framing depends on read sizes"
        );
    }
}

type StreamResult = (Vec<Frame>, Option<String>);

fn drain(data: &[u8], cuts: &[usize]) -> StreamResult {
    let mut f = StreamFramer::new();
    let mut frames = Vec::new();
    let mut error = None;
    let mut at = 0;
    let mut points: Vec<usize> = cuts.to_vec();
    points.push(data.len());
    for p in points {
        if p < at {
            continue;
        }
        f.push(&data[at..p]);
        at = p;
        while let Some(r) = f.next() {
            match r {
                Ok(fr) => frames.push(fr),
                Err(e) => {
                    if error.is_none() {
                        // The size of a header block that never ends depends on read sizes.
                        error = Some(match e.kind {
                            super::FramingErrorKind::TooLarge { .. } => "too large".into(),
                            _ => e.to_string(),
                        });
                    }
                }
            }
        }
    }
    (frames, error)
}

fn assert_response(bytes: &[u8]) {
    let frame = frame_datagram_with_limit(bytes, usize::MAX).expect("our response frames");
    assert!(
        matches!(parse(&frame), Ok(SipMessage::Response(_))),
        "our response does not parse: {:?}",
        String::from_utf8_lossy(bytes)
    );
}
