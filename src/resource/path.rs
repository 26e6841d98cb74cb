//! Request paths of the resource servers, taken apart before any routing: RFC 3986
//! percent-decoding per segment, and a refusal (never a normalisation) of anything that could
//! reach outside the tree it names.
//!
//! An XCAP URI (RFC 4825 6) and a KMS request URI (TS 33.180 D.2) are both plain hierarchical
//! paths whose segments may carry a percent-encoded SIP URI (`sip%3Aalice%40example.org`). A
//! segment that decodes to `.`, `..`, or to anything holding `/`, `\` or a control character is
//! refused, as are empty segments inside the path and overlong paths: the server answers 400 or
//! 414 and looks nothing up.

use percent_encoding::percent_decode_str;

/// Longest request path accepted, in bytes (before decoding).
pub const MAX_PATH_BYTES: usize = 2048;

/// Most segments in a path.
pub const MAX_SEGMENTS: usize = 16;

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Longer than [`MAX_PATH_BYTES`] or more than [`MAX_SEGMENTS`] segments: 414.
    TooLong,
    /// Not absolute, a bad escape, not UTF-8, an empty inner segment, a dot segment, or a
    /// segment holding a separator or control character: 400.
    Bad(&'static str),
}

/// Splits an absolute path into decoded segments. A trailing `/` is ignored; a query string must
/// already be removed (the caller passes the URI's path only).
pub fn segments(path: &str) -> Result<Vec<String>, PathError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::Bad("the path is not absolute"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for raw in rest.split('/') {
        if out.len() == MAX_SEGMENTS {
            return Err(PathError::TooLong);
        }
        if raw.is_empty() {
            return Err(PathError::Bad("empty path segment"));
        }
        if !valid_escapes(raw) {
            return Err(PathError::Bad("malformed percent-encoding"));
        }
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::Bad("path segment is not UTF-8"))?;
        if decoded == "." || decoded == ".." {
            return Err(PathError::Bad("dot segment"));
        }
        if decoded
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
        {
            return Err(PathError::Bad(
                "separator or control character in a segment",
            ));
        }
        out.push(decoded.into_owned());
    }
    Ok(out)
}

/// Every `%` is followed by two hex digits (percent_decode_str would pass a bad one through).
fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_sip_uris_and_refuses_escapes_out_of_the_tree() {
        assert_eq!(
            segments("/keymanagement/identity/v1/keyprov/sip%3Aalice%40example.org").unwrap(),
            [
                "keymanagement",
                "identity",
                "v1",
                "keyprov",
                "sip:alice@example.org"
            ]
        );
        assert_eq!(segments("/").unwrap(), Vec::<String>::new());
        assert_eq!(segments("/a/b/").unwrap(), ["a", "b"]);
        for bad in [
            "a/b",
            "/a//b",
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/./b",
            "/a/b%2fc",
            "/a/b%5cc",
            "/a/%00",
            "/a/%zz",
            "/a/%4",
            "/a/%",
            "/a/%ff%fe",
        ] {
            assert!(matches!(segments(bad), Err(PathError::Bad(_))), "{bad}");
        }
        assert_eq!(
            segments(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
            Err(PathError::TooLong)
        );
        assert_eq!(
            segments(&"/a".repeat(MAX_SEGMENTS + 1)),
            Err(PathError::TooLong)
        );
    }
}
