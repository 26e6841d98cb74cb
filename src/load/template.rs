//! SIPp message templates, filled in by the load generator. The templates come from the trace
//! writer's renderers ([`crate::trace::sipp::Register`], [`crate::trace::sipp::Publish`]), so
//! `mcx-authz load` and a SIPp run of the scenario it writes send the same requests.
//!
//! What SIPp does with a `<send>` and this module does too: leading and trailing white space is
//! cut, every line ends in CRLF, a message without a body ends with an empty line, and `[len]`
//! is the byte length of the body (what follows the first empty line).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::bail;

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    /// `[transport]`
    Transport,
    /// `[local_ip]`
    LocalIp,
    /// `[local_port]`
    LocalPort,
    /// `[branch]`: RFC 3261 branch, one per request of a call (the same in retransmissions).
    Branch,
    /// `[pid]`
    Pid,
    /// `[call_number]`
    CallNumber,
    /// `[call_id]`
    CallId,
    /// `[len]`
    Len,
    /// `[fieldN]`: field N of the user's CSV line.
    Field(usize),
}

/// A compiled template.
#[derive(Clone, Debug)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Whether the template has a body (a non-empty part after its first empty line).
    has_body: bool,
    /// Highest CSV field used, plus one.
    fields: usize,
}

/// What a template is filled in with.
pub struct Fill<'a> {
    /// The generator's socket address.
    pub local: SocketAddr,
    /// The generator's process id.
    pub pid: u32,
    /// Number of the call (0-based).
    pub call: u64,
    /// Index of the request within its call.
    pub step: usize,
    /// The user's CSV fields.
    pub fields: &'a [String],
}

/// The prefix of every Call-ID the generator sends; the responses are matched by it.
pub const CALL_ID_PREFIX: &str = "mcxload-";

impl Template {
    /// Compiles a SIPp message template. Keywords other than those of [`Piece`] are refused.
    pub fn compile(text: &str) -> anyhow::Result<Template> {
        let text = text.trim();
        // Lines end in CRLF; the header block ends at the first empty line.
        let mut normal = String::with_capacity(text.len() + 64);
        let mut in_body = false;
        let mut has_body = false;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if in_body && !line.is_empty() {
                has_body = true;
            }
            if !in_body && line.is_empty() {
                in_body = true;
            }
            normal.push_str(line);
            normal.push_str("\r\n");
        }
        if !has_body {
            // Header block only: end it with exactly one empty line.
            while normal.ends_with("\r\n\r\n") {
                normal.truncate(normal.len() - 2);
            }
            normal.push_str("\r\n");
        } else {
            // The body runs to the last non-blank character.
            normal.truncate(normal.trim_end().len());
        }
        let mut pieces = Vec::new();
        let mut fields = 0;
        let mut rest = normal.as_str();
        let mut text_acc = String::new();
        while let Some(open) = rest.find('[') {
            let Some(close) = rest[open..].find(']').map(|c| open + c) else {
                break;
            };
            let name = &rest[open + 1..close];
            let piece = match name {
                "transport" => Some(Piece::Transport),
                "local_ip" => Some(Piece::LocalIp),
                "local_port" => Some(Piece::LocalPort),
                "branch" => Some(Piece::Branch),
                "pid" => Some(Piece::Pid),
                "call_number" => Some(Piece::CallNumber),
                "call_id" => Some(Piece::CallId),
                "len" => Some(Piece::Len),
                _ => match name.strip_prefix("field").map(str::parse::<usize>) {
                    Some(Ok(n)) => {
                        fields = fields.max(n + 1);
                        Some(Piece::Field(n))
                    }
                    _ if name.starts_with('$') || name.contains(' ') || name.is_empty() => {
                        bail!("SIPp keyword [{name}] is not supported by the load generator")
                    }
                    // Not a keyword (e.g. an IPv6 literal would be; none is used): keep it.
                    _ => None,
                },
            };
            text_acc.push_str(&rest[..open]);
            match piece {
                Some(p) => {
                    if !text_acc.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text_acc).into_bytes()));
                    }
                    pieces.push(p);
                }
                None => text_acc.push_str(&rest[open..=close]),
            }
            rest = &rest[close + 1..];
        }
        text_acc.push_str(rest);
        if !text_acc.is_empty() {
            pieces.push(Piece::Text(text_acc.into_bytes()));
        }
        Ok(Template {
            pieces,
            has_body,
            fields,
        })
    }

    /// Number of CSV fields the template needs.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// Writes the request into `out` (cleared first).
    pub fn render(&self, fill: &Fill<'_>, out: &mut Vec<u8>) {
        out.clear();
        let mut len_at = None;
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Transport => out.extend_from_slice(b"UDP"),
                Piece::LocalIp => {
                    let _ = write!(out, "{}", fill.local.ip());
                }
                Piece::LocalPort => {
                    let _ = write!(out, "{}", fill.local.port());
                }
                Piece::Branch => {
                    let _ = write!(out, "z9hG4bK-{}-{}-{}", fill.pid, fill.call, fill.step);
                }
                Piece::Pid => {
                    let _ = write!(out, "{}", fill.pid);
                }
                Piece::CallNumber => {
                    let _ = write!(out, "{}", fill.call);
                }
                Piece::CallId => {
                    let _ = write!(
                        out,
                        "{CALL_ID_PREFIX}{}-{}@{}",
                        fill.call,
                        fill.pid,
                        fill.local.ip()
                    );
                }
                Piece::Len => len_at = Some(out.len()),
                Piece::Field(n) => {
                    if let Some(f) = fill.fields.get(*n) {
                        out.extend_from_slice(f.as_bytes());
                    }
                }
            }
        }
        if let Some(at) = len_at {
            let body = if self.has_body {
                memchr::memmem::find(out, b"\r\n\r\n").map_or(0, |h| out.len() - (h + 4))
            } else {
                0
            };
            let mut digits = String::new();
            let _ = write!(digits, "{body}");
            out.splice(at..at, digits.bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(fields: &[String]) -> Fill<'_> {
        Fill {
            local: "127.0.0.1:5099".parse().unwrap(),
            pid: 7,
            call: 42,
            step: 1,
            fields,
        }
    }

    #[test]
    fn fills_keywords_and_counts_the_body() {
        let t = Template::compile(
            "\n\nPUBLISH sip:mcptt@x SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\nCall-ID: [call_id]\nTo: <[field0]>\nContent-Length: [len]\n\nbody [field3]\nline 2\n\n   ",
        )
        .unwrap();
        assert_eq!(t.fields(), 4);
        let fields: Vec<String> = ["sip:a@b", "c", "m", "TOKEN"].map(String::from).to_vec();
        let mut out = Vec::new();
        t.render(&fill(&fields), &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "PUBLISH sip:mcptt@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-7-42-1\r\nCall-ID: mcxload-42-7@127.0.0.1\r\nTo: <sip:a@b>\r\nContent-Length: 18\r\n\r\nbody TOKEN\r\nline 2"
        );
        assert_eq!("body TOKEN\r\nline 2".len(), 18);
    }

    #[test]
    fn a_message_without_body_ends_with_one_empty_line() {
        let t = Template::compile("REGISTER sip:x SIP/2.0\nContent-Length: [len]\n\n\n").unwrap();
        let mut out = Vec::new();
        t.render(&fill(&[]), &mut out);
        assert_eq!(out, b"REGISTER sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn refuses_variables() {
        assert!(Template::compile("PUBLISH x SIP/2.0\nSIP-If-Match: [$etag]\n").is_err());
    }
}
