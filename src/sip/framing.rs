//! Message framing: where one SIP message ends, before any parser sees it.
//!
//! RFC 3261 18.3: over UDP one datagram is one message and, when `Content-Length` is absent, the
//! body runs to the end of the datagram; over TCP `Content-Length` is mandatory and is the only
//! way to find the end of a message. RFC 3261 7.5: CRLFs before a start line are ignored on
//! streams (and are RFC 5626 keep-alives). Neither rsip nor rsipstack frames correctly
//! (`docs/sip-edge.md`), so this layer runs first and hands the parser exactly one message whose
//! header block is valid UTF-8 and ends in CRLFCRLF.

use std::fmt;

/// Default cap on one message (start line + headers + body). Larger messages get 513
/// (RFC 3261 18.1.1, 21.5.14) where a response can be formed, else they are dropped.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// One framed SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Start line and header lines, valid UTF-8, without the empty line that ends them (so it
    /// does not end in CRLF).
    pub head: String,
    /// The body: `Content-Length` bytes, or (UDP without `Content-Length`) the rest of the
    /// datagram.
    pub body: Vec<u8>,
}

impl Frame {
    /// The message as bytes: `head` CRLF CRLF `body`. Framing these bytes again (as a datagram
    /// or on a stream, provided the head carries `Content-Length`) gives back this frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.head.len() + 4 + self.body.len());
        v.extend_from_slice(self.head.as_bytes());
        v.extend_from_slice(b"\r\n\r\n");
        v.extend_from_slice(&self.body);
        v
    }

    /// The number of bytes [`Frame::to_bytes`] would produce.
    pub fn len(&self) -> usize {
        self.head.len() + 4 + self.body.len()
    }

    /// Never true: a frame has at least its CRLFCRLF.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why bytes could not be framed as a SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramingErrorKind {
    /// Nothing but CRLFs (a keep-alive, RFC 5626 4.4.1): not an error worth logging loudly.
    KeepAlive,
    /// No CRLFCRLF ends the header block (a missing blank line, or a truncated message).
    NoHeaderEnd,
    /// The header block is not valid UTF-8 (RFC 3261 25.1 allows UTF-8 text only).
    HeadNotUtf8,
    /// `Content-Length` is not a decimal number, or two `Content-Length` headers disagree.
    BadContentLength(String),
    /// `Content-Length` promises more bytes than the datagram holds (RFC 3261 18.3: 400).
    ShortBody {
        /// The `Content-Length` value.
        declared: usize,
        /// The bytes that follow the header block.
        available: usize,
    },
    /// A message on a stream without `Content-Length` (RFC 3261 18.3, 20.14: mandatory there).
    MissingContentLength,
    /// The message is larger than the cap (RFC 3261 21.5.14: 513).
    TooLarge {
        /// The size the message has (or at least has, when still arriving).
        size: usize,
        /// The cap.
        limit: usize,
    },
}

/// A framing failure, with the header block when it was readable so that the runtime can still
/// build a response from it ([`crate::sip::response::error_response_for_head`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramingError {
    /// What went wrong.
    pub kind: FramingErrorKind,
    /// The header block (valid UTF-8, without the empty line), when it could be delimited.
    pub head: Option<String>,
}

impl FramingError {
    fn new(kind: FramingErrorKind) -> Self {
        FramingError { kind, head: None }
    }

    fn with_head(kind: FramingErrorKind, head: &str) -> Self {
        FramingError {
            kind,
            head: Some(head.to_owned()),
        }
    }

    /// The status code to answer with, if a response should be sent: 400 for an unusable
    /// `Content-Length` or a short body, 513 for an oversized message. `None` means log and drop
    /// (no response can be formed: no delimited, readable header block).
    pub fn status(&self) -> Option<u16> {
        let status = match self.kind {
            FramingErrorKind::BadContentLength(_)
            | FramingErrorKind::ShortBody { .. }
            | FramingErrorKind::MissingContentLength => 400,
            FramingErrorKind::TooLarge { .. } => 513,
            FramingErrorKind::KeepAlive
            | FramingErrorKind::NoHeaderEnd
            | FramingErrorKind::HeadNotUtf8 => return None,
        };
        self.head.as_ref().map(|_| status)
    }
}

impl fmt::Display for FramingErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingErrorKind::KeepAlive => f.write_str("keep-alive (CRLF only)"),
            FramingErrorKind::NoHeaderEnd => {
                f.write_str("no empty line (CRLFCRLF) ends the header block")
            }
            FramingErrorKind::HeadNotUtf8 => f.write_str("header block is not valid UTF-8"),
            FramingErrorKind::BadContentLength(v) => write!(f, "bad Content-Length: {v}"),
            FramingErrorKind::ShortBody {
                declared,
                available,
            } => write!(
                f,
                "Content-Length {declared} exceeds the {available} body bytes received"
            ),
            FramingErrorKind::MissingContentLength => {
                f.write_str("Content-Length is mandatory on stream transports")
            }
            FramingErrorKind::TooLarge { size, limit } => {
                write!(f, "message of {size} bytes exceeds the {limit}-byte limit")
            }
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for FramingError {}

/// Skips CRLFs (and lone LFs) before a start line (RFC 3261 7.5).
fn skip_leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

/// Offset of the CRLFCRLF that ends the header block.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n")
}

/// The `Content-Length` (or compact `l`) of a header block: `Ok(None)` when absent.
///
/// Continuation lines (folding, RFC 3261 7.3.1) belong to the header line above them, so a
/// value written on the next line (`Content-Length:` CRLF SP `42`) is read; repeated headers
/// must agree.
pub fn content_length(head: &str) -> Result<Option<usize>, FramingErrorKind> {
    let mut found: Option<usize> = None;
    let lines: Vec<&str> = head.split("\r\n").skip(1).collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !(name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")) {
            continue;
        }
        let continued: String = lines[i + 1..]
            .iter()
            .take_while(|l| l.starts_with([' ', '\t']))
            .copied()
            .collect();
        let value = format!("{value}{continued}");
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FramingErrorKind::BadContentLength(format!("{value:?}")));
        }
        let n: usize = value
            .parse()
            .map_err(|_| FramingErrorKind::BadContentLength(format!("{value:?}")))?;
        match found {
            Some(prev) if prev != n => {
                return Err(FramingErrorKind::BadContentLength(format!(
                    "two values, {prev} and {n}"
                )))
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

fn head_str(bytes: &[u8]) -> Result<&str, FramingError> {
    std::str::from_utf8(bytes).map_err(|_| FramingError::new(FramingErrorKind::HeadNotUtf8))
}

/// Frames one UDP datagram (RFC 3261 18.3) with the default 64 KiB cap.
pub fn frame_datagram(datagram: &[u8]) -> Result<Frame, FramingError> {
    frame_datagram_with_limit(datagram, MAX_MESSAGE_SIZE)
}

/// Frames one UDP datagram with a size cap of `limit` bytes.
///
/// The header block must end in CRLFCRLF and be UTF-8. With `Content-Length` the body is that
/// many bytes (extra bytes are dropped, RFC 3261 18.3); without it the body runs to the end of the
/// datagram.
pub fn frame_datagram_with_limit(datagram: &[u8], limit: usize) -> Result<Frame, FramingError> {
    let start = skip_leading_crlf(datagram);
    let buf = &datagram[start..];
    if buf.is_empty() {
        return Err(FramingError::new(FramingErrorKind::KeepAlive));
    }
    let Some(end) = find_head_end(buf) else {
        if buf.len() > limit {
            return Err(FramingError::new(FramingErrorKind::TooLarge {
                size: buf.len(),
                limit,
            }));
        }
        return Err(FramingError::new(FramingErrorKind::NoHeaderEnd));
    };
    let head = head_str(&buf[..end])?;
    let rest = &buf[end + 4..];
    let body_len = match content_length(head) {
        Ok(Some(n)) if n > rest.len() => {
            return Err(FramingError::with_head(
                FramingErrorKind::ShortBody {
                    declared: n,
                    available: rest.len(),
                },
                head,
            ))
        }
        Ok(Some(n)) => n,
        Ok(None) => rest.len(),
        Err(kind) => return Err(FramingError::with_head(kind, head)),
    };
    let size = end + 4 + body_len;
    if size > limit {
        return Err(FramingError::with_head(
            FramingErrorKind::TooLarge { size, limit },
            head,
        ));
    }
    Ok(Frame {
        head: head.to_owned(),
        body: rest[..body_len].to_vec(),
    })
}

/// Reassembles SIP messages from a byte stream (TCP, RFC 3261 18.3): feed bytes with
/// [`StreamFramer::push`], take messages with [`StreamFramer::next`].
///
/// A fatal error (no way to find the next message: bad or missing `Content-Length`, a header block
/// that is not UTF-8 or never ends within the cap) poisons the framer; the runtime should answer
/// if [`FramingError::status`] says so and close the connection. An oversized message with a
/// usable `Content-Length` is skipped and framing continues after it.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limit: usize,
    /// Body bytes of an oversized message still to be thrown away.
    discard: usize,
    poisoned: bool,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new()
    }
}

impl StreamFramer {
    /// A framer with the default 64 KiB cap.
    pub fn new() -> Self {
        StreamFramer::with_limit(MAX_MESSAGE_SIZE)
    }

    /// A framer capping each message at `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            limit,
            discard: 0,
            poisoned: false,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.poisoned {
            return;
        }
        let mut data = data;
        if self.discard > 0 {
            let n = self.discard.min(data.len());
            self.discard -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a fatal error stopped framing (the connection should be closed).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn fail(&mut self, err: FramingError) -> Option<Result<Frame, FramingError>> {
        self.poisoned = true;
        self.buf = Vec::new();
        Some(Err(err))
    }

    /// The next complete message, an error, or `None` when more bytes are needed (or the framer
    /// is poisoned).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Frame, FramingError>> {
        if self.poisoned {
            return None;
        }
        let skip = skip_leading_crlf(&self.buf);
        if skip > 0 {
            // A lone CR at the end may be the first half of a CRLF keep-alive or of a message's
            // CRLFCRLF; either way it is not part of a start line.
            self.buf.drain(..skip);
        }
        if self.buf.is_empty() {
            return None;
        }
        // Look for the end of the header block only within the cap, so that the outcome does
        // not depend on how the stream was cut into reads.
        let window = self.buf.len().min(self.limit);
        let Some(end) = find_head_end(&self.buf[..window]) else {
            if self.buf.len() > self.limit {
                let size = self.buf.len();
                let limit = self.limit;
                return self.fail(FramingError::new(FramingErrorKind::TooLarge {
                    size,
                    limit,
                }));
            }
            return None;
        };
        let head = match head_str(&self.buf[..end]) {
            Ok(h) => h.to_owned(),
            Err(e) => return self.fail(e),
        };
        let body_len = match content_length(&head) {
            Ok(Some(n)) => n,
            Ok(None) => {
                return self.fail(FramingError::with_head(
                    FramingErrorKind::MissingContentLength,
                    &head,
                ))
            }
            Err(kind) => return self.fail(FramingError::with_head(kind, &head)),
        };
        let size = end + 4 + body_len;
        if size > self.limit {
            // Skip this message's bytes and carry on with the next one.
            let have = self.buf.len().min(size);
            self.buf.drain(..have);
            self.discard = size - have;
            let limit = self.limit;
            return Some(Err(FramingError::with_head(
                FramingErrorKind::TooLarge { size, limit },
                &head,
            )));
        }
        if self.buf.len() < size {
            return None;
        }
        let body = self.buf[end + 4..size].to_vec();
        self.buf.drain(..size);
        Some(Ok(Frame { head, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_content_length_and_extra_bytes_dropped() {
        let f = frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcdef").unwrap();
        assert_eq!(f.body, b"abc");
    }

    #[test]
    fn body_to_end_of_datagram_without_content_length() {
        let f = frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nX: y\r\n\r\nabcdef").unwrap();
        assert_eq!(f.body, b"abcdef");
        assert_eq!(f.head, "OPTIONS sip:a SIP/2.0\r\nX: y");
    }

    #[test]
    fn folded_content_length_value_is_read() {
        let f =
            frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nContent-Length:\r\n  2\r\n\r\nabcd").unwrap();
        assert_eq!(f.body, b"ab");
        assert_eq!(content_length("X\r\nl :\r\n\t 12\r\nY: 1"), Ok(Some(12)));
    }

    #[test]
    fn folded_line_is_not_a_content_length() {
        let f = frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nX: y\r\n l: 9\r\n\r\nab").unwrap();
        assert_eq!(f.body, b"ab");
    }

    #[test]
    fn conflicting_content_lengths() {
        let e = frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab")
            .unwrap_err();
        assert!(matches!(e.kind, FramingErrorKind::BadContentLength(_)));
        assert_eq!(e.status(), Some(400));
    }

    #[test]
    fn keep_alives() {
        assert_eq!(
            frame_datagram(b"\r\n\r\n").unwrap_err().kind,
            FramingErrorKind::KeepAlive
        );
        let mut s = StreamFramer::new();
        s.push(b"\r\n\r\n\r\n");
        assert!(s.next().is_none());
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn stream_split_across_pushes() {
        let msg = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 4\r\n\r\nbody";
        let mut s = StreamFramer::new();
        for chunk in msg.chunks(3) {
            assert!(s.next().is_none());
            s.push(chunk);
        }
        let f = s.next().unwrap().unwrap();
        assert_eq!(f.body, b"body");
        assert!(s.next().is_none());
    }

    #[test]
    fn stream_oversized_message_is_skipped() {
        let mut s = StreamFramer::with_limit(100);
        let big = format!(
            "OPTIONS sip:a SIP/2.0\r\nContent-Length: 200\r\n\r\n{}",
            "x".repeat(200)
        );
        s.push(&big.as_bytes()[..60]);
        let e = s.next().unwrap().unwrap_err();
        assert!(matches!(e.kind, FramingErrorKind::TooLarge { .. }));
        assert_eq!(e.status(), Some(513));
        s.push(&big.as_bytes()[60..]);
        s.push(b"OPTIONS sip:b SIP/2.0\r\nl: 0\r\n\r\n");
        let f = s.next().unwrap().unwrap();
        assert!(f.head.starts_with("OPTIONS sip:b"));
        assert!(!s.is_poisoned());
    }

    #[test]
    fn stream_without_content_length_poisons() {
        let mut s = StreamFramer::new();
        s.push(b"OPTIONS sip:a SIP/2.0\r\nX: y\r\n\r\n");
        let e = s.next().unwrap().unwrap_err();
        assert_eq!(e.kind, FramingErrorKind::MissingContentLength);
        assert!(s.is_poisoned());
        s.push(b"OPTIONS sip:a SIP/2.0\r\nl: 0\r\n\r\n");
        assert!(s.next().is_none());
    }

    #[test]
    fn non_utf8_head_is_dropped() {
        let e = frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nSubject: \xff\r\n\r\n").unwrap_err();
        assert_eq!(e.kind, FramingErrorKind::HeadNotUtf8);
        assert_eq!(e.status(), None);
    }
}
