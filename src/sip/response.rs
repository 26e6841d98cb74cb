//! Building responses (RFC 3261 8.2.6; RFC 3903 11.3; TS 24.379 4.4).
//!
//! A response copies every Via (in order), From, To, Call-ID and CSeq from its request, adds a
//! To tag when the request had none, and ends with `Content-Length: 0`. The To tag is a digest of
//! Call-ID, From tag and the top Via branch, so a retransmitted request gets byte-identical
//! responses even without a transaction cache.

use std::fmt::Write as _;

use mcx_model::{Outcome, Response};
use sha2::{Digest, Sha256};

use super::parse::{header_lines, header_param, reply_to_from_headers, ReplyTo, SipRequest};

/// Server-wide response settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseConfig {
    /// The host name in `Warning: 399 <host> "…"` (TS 24.379 4.4.1).
    pub warning_host: String,
    /// The `Server` header value, if any.
    pub server: Option<String>,
}

/// The methods this server answers, for `Allow` (RFC 3261 20.5).
pub const ALLOW: &str = "REGISTER, PUBLISH, OPTIONS";

/// Extra headers of a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// `SIP-ETag` (RFC 3903 11.3.1).
    pub etag: Option<String>,
    /// `Expires`.
    pub expires: Option<u32>,
    /// `Min-Expires` (423).
    pub min_expires: Option<u32>,
    /// `Warning: 399 <host> "<text>"`: the quoted text (an MC warning is `"<code> <text>"`,
    /// TS 24.379 4.4.1; a policy refusal names the policy).
    pub warning: Option<String>,
    /// `Allow`.
    pub allow: Option<String>,
}

/// The reason phrase for a status code (RFC 3261 21; RFC 3903 11.2.1).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Conditional Request Failed",
        415 => "Unsupported Media Type",
        423 => "Interval Too Brief",
        481 => "Call/Transaction Does Not Exist",
        489 => "Bad Event",
        500 => "Server Internal Error",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => match status / 100 {
            1 => "Trying",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// A reason phrase made safe for the status line (printable ASCII, no CR/LF, bounded).
fn sanitize_reason(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(100)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The To tag for a request whose To had none: 16 hex digits of SHA-256 over Call-ID, From tag
/// and top Via branch — stable across retransmissions, distinct across requests.
pub fn deterministic_to_tag(reply: &ReplyTo) -> String {
    let mut h = Sha256::new();
    h.update(reply.call_id.as_bytes());
    h.update([0]);
    h.update(
        header_param(&reply.from, "tag")
            .unwrap_or_default()
            .as_bytes(),
    );
    h.update([0]);
    if let Some(top) = reply.vias.first() {
        h.update(header_param(top, "branch").unwrap_or_default().as_bytes());
    }
    let d = h.finalize();
    d[..8].iter().fold(String::with_capacity(16), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A response with `status` to the request described by `reply` (RFC 3261 8.2.6.2).
/// `reason` overrides the standard phrase (used for 400s, which say why).
pub fn build(
    reply: &ReplyTo,
    status: u16,
    reason: Option<&str>,
    extras: &Extras,
    cfg: &ResponseConfig,
) -> Vec<u8> {
    let reason = reason
        .map(sanitize_reason)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| reason_phrase(status).to_owned());
    let mut s = String::with_capacity(512);
    let _ = write!(s, "SIP/2.0 {status} {reason}\r\n");
    for via in &reply.vias {
        let _ = write!(s, "Via: {via}\r\n");
    }
    let _ = write!(s, "From: {}\r\n", reply.from);
    // RFC 3261 8.2.6.2: add a To tag when the request had none (never for 100).
    if header_param(&reply.to, "tag").is_none() && status > 100 {
        let _ = write!(
            s,
            "To: {};tag={}\r\n",
            reply.to,
            deterministic_to_tag(reply)
        );
    } else {
        let _ = write!(s, "To: {}\r\n", reply.to);
    }
    let _ = write!(s, "Call-ID: {}\r\n", reply.call_id);
    let _ = write!(s, "CSeq: {}\r\n", reply.cseq);
    if let Some(e) = &extras.etag {
        let _ = write!(s, "SIP-ETag: {e}\r\n");
    }
    if let Some(e) = extras.expires {
        let _ = write!(s, "Expires: {e}\r\n");
    }
    if let Some(e) = extras.min_expires {
        let _ = write!(s, "Min-Expires: {e}\r\n");
    }
    if let Some(text) = &extras.warning {
        // TS 24.379 4.4.1: warn-code 399, warn-agent the server's host, the quoted text.
        let _ = write!(s, "Warning: 399 {} \"{text}\"\r\n", cfg.warning_host);
    }
    if let Some(a) = &extras.allow {
        let _ = write!(s, "Allow: {a}\r\n");
    }
    if let Some(server) = &cfg.server {
        let _ = write!(s, "Server: {server}\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}

/// The response to a request the machine handled: status, reason phrase, `SIP-ETag`,
/// `Expires`, `Min-Expires` and `Warning`, all from the machine's [`Response`]: this is the one
/// place where a machine outcome becomes wire bytes.
pub fn build_response(req: &SipRequest, resp: &Response, cfg: &ResponseConfig) -> Vec<u8> {
    let status = resp.status();
    let reason = resp.outcome.reason_phrase();
    let extras = Extras {
        etag: resp.etag.as_ref().map(|e| e.as_str().to_owned()),
        expires: resp.expires,
        min_expires: match resp.outcome {
            Outcome::IntervalTooBrief { min_expires } => Some(min_expires),
            _ => None,
        },
        warning: resp.warning().map(|w| w.text()),
        allow: None,
    };
    build(&req.reply_to(), status, reason, &extras, cfg)
}

/// 200 to OPTIONS, with `Allow` (RFC 3261 11.2).
pub fn options_ok(req: &SipRequest, cfg: &ResponseConfig) -> Vec<u8> {
    let extras = Extras {
        allow: Some(ALLOW.into()),
        ..Extras::default()
    };
    build(&req.reply_to(), 200, None, &extras, cfg)
}

/// 405 with `Allow` (RFC 3261 8.2.1).
pub fn method_not_allowed(req: &SipRequest, cfg: &ResponseConfig) -> Vec<u8> {
    let extras = Extras {
        allow: Some(ALLOW.into()),
        ..Extras::default()
    };
    build(&req.reply_to(), 405, None, &extras, cfg)
}

/// A bare response with `status` (and optionally a reason phrase) to a parsed request.
pub fn simple(
    req: &SipRequest,
    status: u16,
    reason: Option<&str>,
    cfg: &ResponseConfig,
) -> Vec<u8> {
    build(&req.reply_to(), status, reason, &Extras::default(), cfg)
}

/// Best effort: a response with `status` to a message that failed framing or validation, built
/// from its header block when Via, From, To, Call-ID and CSeq are readable (one each, Vias
/// split). `None` when they are not, or the start line is not a request (never answer a
/// response).
pub fn error_response_for_head(
    head: &str,
    status: u16,
    reason: Option<&str>,
    cfg: &ResponseConfig,
) -> Option<Vec<u8>> {
    let (start, rest) = head.split_once("\r\n")?;
    if super::parse::strip_prefix_ignore_case(start, "SIP/").is_some() {
        return None;
    }
    let headers = header_lines(rest).ok()?;
    let reply = reply_to_from_headers(&headers)?;
    Some(build(&reply, status, reason, &Extras::default(), cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> ReplyTo {
        ReplyTo {
            vias: vec![
                "SIP/2.0/UDP p;branch=z9hG4bK1".into(),
                "SIP/2.0/UDP ue;branch=z9hG4bK0".into(),
            ],
            from: "<sip:a@x>;tag=f".into(),
            to: "<sip:psi@x>".into(),
            call_id: "c".into(),
            cseq: "1 PUBLISH".into(),
        }
    }

    #[test]
    fn copies_and_tags() {
        let cfg = ResponseConfig {
            warning_host: "mcx.example".into(),
            server: None,
        };
        let extras = Extras {
            warning: Some("101 service authorisation failed".into()),
            ..Extras::default()
        };
        let a = String::from_utf8(build(&reply(), 403, None, &extras, &cfg)).unwrap();
        let b = String::from_utf8(build(&reply(), 403, None, &extras, &cfg)).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("SIP/2.0 403 Forbidden\r\nVia: SIP/2.0/UDP p;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP ue;branch=z9hG4bK0\r\n"));
        assert!(a.contains("To: <sip:psi@x>;tag="));
        assert!(a.contains("Warning: 399 mcx.example \"101 service authorisation failed\"\r\n"));
        assert!(a.ends_with("Content-Length: 0\r\n\r\n"));
        let mut other = reply();
        other.vias[0] = "SIP/2.0/UDP p;branch=z9hG4bK2".into();
        assert_ne!(deterministic_to_tag(&other), deterministic_to_tag(&reply()));
    }

    #[test]
    fn reason_is_sanitized() {
        let cfg = ResponseConfig {
            warning_host: "h".into(),
            server: None,
        };
        let r = String::from_utf8(build(
            &reply(),
            400,
            Some("bad\r\nX: y"),
            &Extras::default(),
            &cfg,
        ))
        .unwrap();
        assert!(r.starts_with("SIP/2.0 400 bad  X: y\r\n"));
    }
}
