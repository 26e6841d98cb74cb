//! `multipart/mixed` (RFC 2046 5.1.1): a memchr splitter, bounded by [`super::MAX_PARTS`].

use super::{body_kind, content_type, err, BodyError, BodyKind, MAX_PARTS};
use crate::sip::parse::header_lines;

/// One body part (or a whole single-part body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The part's Content-Type value (`text/plain` when the part has none, RFC 2046 5.1).
    pub content_type: String,
    /// The part's own headers, (name, unfolded value).
    pub headers: Vec<(String, String)>,
    /// The part's content.
    pub body: &'a [u8],
}

impl Part<'_> {
    /// Whether the sender lets a receiver that does not understand this part ignore it:
    /// `Content-Disposition: …;handling=optional` (RFC 3261 20.11; without the parameter,
    /// handling is "required").
    pub fn is_optional(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("Content-Disposition")
                && crate::sip::parse::header_param(v, "handling")
                    .is_some_and(|h| h.eq_ignore_ascii_case("optional"))
        })
    }
}

/// Splits a `multipart/mixed` body (RFC 2046 5.1.1): the preamble before the first delimiter
/// and the epilogue after the close delimiter are ignored, as is transport padding (linear
/// white space) after a boundary. The first delimiter may start the body; every later one is
/// `CRLF--boundary`. A missing close delimiter is an error.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, BodyError> {
    if boundary.is_empty() || boundary.len() > 70 {
        return err("multipart boundary must be 1 to 70 characters (RFC 2046 5.1.1)");
    }
    let delim = format!("\r\n--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    // The first delimiter may sit at the very start (no preceding CRLF).
    let mut pos = if body.starts_with(&delim.as_bytes()[2..]) {
        delim.len() - 2
    } else {
        match finder.find(body) {
            Some(i) => i + delim.len(),
            None => return err("multipart body has no boundary delimiter"),
        }
    };
    let mut parts = Vec::new();
    loop {
        // After a delimiter: `--` closes, else transport padding then CRLF.
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        while pos < body.len() && (body[pos] == b' ' || body[pos] == b'\t') {
            pos += 1;
        }
        if !body[pos..].starts_with(b"\r\n") {
            return err("multipart delimiter not followed by CRLF");
        }
        pos += 2;
        let Some(next) = finder.find(&body[pos..]) else {
            return err("multipart body has no close delimiter");
        };
        if parts.len() == MAX_PARTS {
            return err(format!("more than {MAX_PARTS} body parts"));
        }
        parts.push(part(&body[pos..pos + next])?);
        pos += next + delim.len();
    }
}

/// Reads one body part: headers, an empty line, content (RFC 2046 5.1.1 `body-part`).
fn part(raw: &[u8]) -> Result<Part<'_>, BodyError> {
    let (head, body) = if let Some(rest) = raw.strip_prefix(b"\r\n") {
        ("", rest)
    } else {
        match memchr::memmem::find(raw, b"\r\n\r\n") {
            Some(i) => {
                let head = std::str::from_utf8(&raw[..i])
                    .map_err(|_| BodyError("body part headers are not UTF-8".into()))?;
                (head, &raw[i + 4..])
            }
            None => return err("body part without an empty line after its headers"),
        }
    };
    let headers = if head.is_empty() {
        Vec::new()
    } else {
        header_lines(head).map_err(|e| BodyError(format!("body part: {e}")))?
    };
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "Content-Type")
        .map_or_else(|| "text/plain".to_owned(), |(_, v)| v.clone());
    Ok(Part {
        content_type,
        headers,
        body,
    })
}

/// The parts of a body: the parts of a `multipart/mixed`, or the body itself as one part.
pub fn parts<'a>(content_type_value: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, BodyError> {
    let m = content_type(content_type_value)?;
    if body_kind(&m) == BodyKind::Multipart {
        let Some(boundary) = m.get_param(mime::BOUNDARY) else {
            return err("multipart/mixed without a boundary");
        };
        split_multipart(body, boundary.as_str())
    } else {
        Ok(vec![Part {
            content_type: content_type_value.to_owned(),
            headers: Vec::new(),
            body,
        }])
    }
}
