//! Just enough URI handling for the MCX edge: pulling the URI out of a name-addr, comparing a
//! Request-URI with a configured PSI, and writing an IMPU in one canonical form.
//!
//! Comparison rule (documented in `docs/sip-edge.md`): scheme and host compare
//! case-insensitively, user parts case-sensitively (RFC 3261 19.1.4), IPv6 hosts as addresses
//! (`[2001:DB8::1]` = `[2001:db8:0::1]`), an explicit port must match (an absent port matches
//! only an absent port), and all URI parameters and headers are ignored — unlike RFC 3261
//! 19.1.4, because SIP cores add `;lr`, `;transport=` or `;user=phone` to routed URIs. For the
//! same reason `sips:` and `sip:` name one resource in [`same_resource`] (not in an IMPU).

use std::net::Ipv6Addr;

/// Whether `s` looks like an absolute URI (`scheme ":" …`, RFC 3261 25.1) without whitespace or
/// control characters. Used for the Request-URI.
pub fn is_plausible_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    !rest.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The URI of a name-addr or addr-spec header value (From, To, Contact, P-Asserted-Identity):
/// `"Alice" <sip:a@x>;tag=1` → `sip:a@x`; `sip:a@x;tag=1` → `sip:a@x` (in addr-spec form the
/// parameters belong to the header, RFC 3261 20.10).
pub fn name_addr_uri(value: &str) -> Option<&str> {
    let value = value.trim();
    let uri = if let Some(open) = find_angle(value) {
        let close = value[open..].find('>')? + open;
        &value[open + 1..close]
    } else {
        value.split(';').next().unwrap_or("").trim()
    };
    is_plausible_uri(uri).then_some(uri)
}

/// The `<` that opens a name-addr, outside a quoted display name.
fn find_angle(s: &str) -> Option<usize> {
    super::scan::unquoted_chars(s)
        .find(|&(_, c)| c == '<')
        .map(|(i, _)| i)
}

/// A URI reduced to what identifies a resource here.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    scheme: String,
    user: Option<String>,
    host: String,
    port: Option<String>,
}

fn key(uri: &str) -> Option<Key> {
    let (scheme, rest) = uri.split_once(':')?;
    let scheme = scheme.to_ascii_lowercase();
    // URI headers (`?…`) and parameters (`;…`) go; for tel: the parameters follow the number.
    let rest = rest.split('?').next().unwrap_or("");
    if scheme != "sip" && scheme != "sips" {
        let number = rest.split(';').next().unwrap_or("");
        return Some(Key {
            scheme,
            user: None,
            host: number.to_ascii_lowercase(),
            port: None,
        });
    }
    // userinfo may hold ';' (user parameters) before the '@'.
    let (user, hostport) = match rest.rfind('@') {
        Some(at) => (Some(rest[..at].to_owned()), &rest[at + 1..]),
        None => (None, rest),
    };
    let user = user.map(|u| u.split(':').next().unwrap_or("").to_owned());
    let hostport = hostport.split(';').next().unwrap_or("");
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']')?;
        let addr: Ipv6Addr = v6[..close].parse().ok()?;
        let port = v6[close + 1..].strip_prefix(':').map(str::to_owned);
        (format!("[{addr}]"), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p.to_owned())),
            None => (hostport.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(Key {
        scheme,
        user,
        host,
        port,
    })
}

/// Whether two URIs name the same resource under the rule in the module documentation. A `sips:`
/// URI names the same resource as the `sip:` URI it secures (it asks for TLS on each hop, RFC
/// 3261 19.1; a UE or core that upgrades the PSI's scheme still addresses our PSI).
pub fn same_resource(a: &str, b: &str) -> bool {
    let resource = |u: &str| {
        key(u).map(|mut k| {
            if k.scheme == "sips" {
                k.scheme = "sip".into();
            }
            k
        })
    };
    match (resource(a), resource(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// An IMPU in canonical form: scheme and host lower-cased, IPv6 hosts normalised, URI parameters
/// and headers dropped (`sip:Alice@EXAMPLE.org;user=phone` → `sip:Alice@example.org`). The same
/// form is used for P-Asserted-Identity and the To of a third-party REGISTER, so both name one
/// IMPU to the machine.
pub fn canonical_impu(uri: &str) -> Option<String> {
    let k = key(uri)?;
    let mut s = format!("{}:", k.scheme);
    if let Some(u) = &k.user {
        s.push_str(u);
        s.push('@');
    }
    s.push_str(&k.host);
    if let Some(p) = &k.port {
        s.push(':');
        s.push_str(p);
    }
    Some(s)
}

/// The host part of a SIP URI (for `Warning` and logs), if any.
pub fn host_of(uri: &str) -> Option<String> {
    key(uri).map(|k| k.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        assert_eq!(
            name_addr_uri("\"A <b>\" <sip:a@x;lr>;tag=1"),
            Some("sip:a@x;lr")
        );
        assert_eq!(name_addr_uri("sip:a@x;tag=1"), Some("sip:a@x"));
        assert_eq!(
            name_addr_uri("<tel:+15551234567>"),
            Some("tel:+15551234567")
        );
        assert_eq!(name_addr_uri("<sip:a@x"), None);
        assert_eq!(name_addr_uri("nothing"), None);
    }

    #[test]
    fn psi_comparison() {
        assert!(same_resource(
            "SIP:mcptt-psi@Example.ORG;transport=tcp",
            "sip:mcptt-psi@example.org"
        ));
        assert!(!same_resource(
            "sip:MCPTT-psi@example.org",
            "sip:mcptt-psi@example.org"
        ));
        assert!(!same_resource(
            "sip:psi@example.org:5070",
            "sip:psi@example.org"
        ));
        assert!(same_resource("sip:[2001:DB8::1]", "sip:[2001:db8:0::1]"));
        // sips: asks for TLS to the same resource (issue 16).
        assert!(same_resource("sips:psi@example.org", "sip:psi@example.org"));
        assert!(!same_resource(
            "sips:psi@example.org",
            "sip:psi2@example.org"
        ));
        assert!(same_resource("tel:+1555;phone-context=x", "TEL:+1555"));
        assert!(!same_resource("sip:[zz::1]", "sip:[zz::1]"));
    }

    #[test]
    fn canonical_impus() {
        assert_eq!(
            canonical_impu("sip:Alice@EXAMPLE.org;user=phone").as_deref(),
            Some("sip:Alice@example.org")
        );
        assert_eq!(canonical_impu("tel:+1555").as_deref(), Some("tel:+1555"));
        assert_eq!(
            canonical_impu("sip:u@[2001:DB8::1]:5060").as_deref(),
            Some("sip:u@[2001:db8::1]:5060")
        );
    }
}
