//! Quote-aware scanning of header values, shared by the header parser and the URI code (so that
//! neither depends on the other for it).

/// The characters of `s` outside quoted strings (RFC 3261 25.1 `quoted-string`, with
/// `quoted-pair` escapes), with their byte offsets; the quotes themselves are skipped. Every
/// quote-aware scan of a header value goes through this one.
pub(crate) fn unquoted_chars(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut quoted, mut escaped) = (false, false);
    s.char_indices().filter(move |&(_, c)| {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            false
        } else if c == '"' {
            quoted = true;
            false
        } else {
            true
        }
    })
}
