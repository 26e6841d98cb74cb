//! The writer beside the readers: MC info bodies, poc-settings bodies and `multipart/mixed`, as a
//! client (or our trace and test tools acting as one) sends them. One writer serves `trace`,
//! the load generator and the tests, so what we send is what [`super::read_info`] reads.

use std::fmt::Write as _;

use mcx_model::Service;

/// The value of one `contentType` element of an MC info body (TS 24.379 F.1.2, dossier R-26).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoField<'a> {
    /// `type="Normal"`: the value in clear (XML-escaped here).
    Normal(&'a str),
    /// `type="Encrypted"`: the serialized `xenc:EncryptedData` element, inserted as it is
    /// (TS 33.180 clause 9).
    Encrypted(&'a str),
}

/// What an MC info body says (TS 24.379 F.1; TS 24.281, TS 24.282 twins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoDoc<'a> {
    /// `<{svc}-access-token>`, as a `<{svc}String>`.
    pub access_token: Option<InfoField<'a>>,
    /// `<{svc}-request-uri>`, as a `<{svc}URI>`.
    pub request_uri: Option<InfoField<'a>>,
    /// `<{svc}-client-id>`, as a `<{svc}String>`.
    pub client_id: InfoField<'a>,
}

/// The media type of `service`'s info body.
pub fn info_content_type(service: Service) -> String {
    format!("application/vnd.3gpp.{}-info+xml", service.name())
}

/// The MC info body of `service`, lines separated by `eol`.
pub fn info_xml(service: Service, doc: &InfoDoc<'_>, eol: &str) -> String {
    let p = service.name();
    let ns = match service {
        Service::Mcptt => "mcpttInfo",
        Service::Mcvideo => "mcvideoInfo",
        Service::Mcdata => "mcdataInfo",
    };
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>{eol}<{p}info xmlns=\"urn:3gpp:ns:{ns}:1.0\">{eol}<{p}-Params>"
    );
    let mut field = |name: &str, child: &str, value: InfoField<'_>| {
        let _ = match value {
            InfoField::Normal(v) => write!(
                out,
                "{eol}<{p}-{name} type=\"Normal\"><{p}{child}>{}</{p}{child}></{p}-{name}>",
                escape(v)
            ),
            InfoField::Encrypted(x) => {
                write!(out, "{eol}<{p}-{name} type=\"Encrypted\">{x}</{p}-{name}>")
            }
        };
    };
    if let Some(t) = doc.access_token {
        field("access-token", "String", t);
    }
    if let Some(u) = doc.request_uri {
        field("request-uri", "URI", u);
    }
    field("client-id", "String", doc.client_id);
    let _ = write!(out, "{eol}</{p}-Params>{eol}</{p}info>");
    out
}

/// `application/poc-settings+xml` for a client that answers automatically (RFC 4354; TS 24.379
/// 7.4.1.2.2).
pub fn settings_xml(client_id: &str, eol: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>{eol}<poc-settings xmlns=\"urn:oma:params:xml:ns:poc:poc-settings\">{eol}<entity id=\"{}\"><am-settings><answer-mode>automatic</answer-mode></am-settings></entity>{eol}</poc-settings>",
        escape(client_id)
    )
}

/// A `multipart/mixed` body (RFC 2046 5.1.1) of `(content type, content)` parts with
/// `boundary`, lines separated by `eol`; its Content-Type value is
/// `multipart/mixed;boundary=<boundary>`.
pub fn multipart(boundary: &str, parts: &[(&str, &str)], eol: &str) -> String {
    let mut t = String::new();
    for (ct, body) in parts {
        let _ = write!(
            t,
            "--{boundary}{eol}Content-Type: {ct}{eol}{eol}{body}{eol}"
        );
    }
    let _ = write!(t, "--{boundary}--");
    t
}

/// XML character data with `&`, `<`, `>` and `"` escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{parts, read_info, read_poc_settings, InfoValue};
    use super::*;

    #[test]
    fn what_is_written_is_what_is_read() {
        for service in Service::ALL {
            let doc = InfoDoc {
                access_token: Some(InfoField::Normal("eyJ.a&b<c>.sig")),
                request_uri: Some(InfoField::Normal("sip:alice@example.org")),
                client_id: InfoField::Normal("urn:uuid:c1"),
            };
            for eol in ["\n", "\r\n"] {
                let info = read_info(service, info_xml(service, &doc, eol).as_bytes()).unwrap();
                assert_eq!(
                    info.access_token,
                    Some(InfoValue::Plain("eyJ.a&b<c>.sig".into()))
                );
                assert_eq!(
                    info.request_uri,
                    Some(InfoValue::Plain("sip:alice@example.org".into()))
                );
                assert_eq!(info.client_id, Some(InfoValue::Plain("urn:uuid:c1".into())));
            }
        }
        let s = read_poc_settings(settings_xml("urn:uuid:c1", "\r\n").as_bytes()).unwrap();
        assert_eq!(s.entity_id.as_deref(), Some("urn:uuid:c1"));
        assert_eq!(s.settings.answer_mode_automatic, Some(true));
    }

    #[test]
    fn an_encrypted_field_is_read_as_protected() {
        let enc = "<xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\"><xenc:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#aes128-gcm\"/><xenc:CipherData><xenc:CipherValue>AAAA</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData>";
        let doc = InfoDoc {
            access_token: Some(InfoField::Encrypted(enc)),
            request_uri: None,
            client_id: InfoField::Normal("urn:uuid:c1"),
        };
        let info = read_info(
            Service::Mcptt,
            info_xml(Service::Mcptt, &doc, "\n").as_bytes(),
        )
        .unwrap();
        assert!(matches!(info.access_token, Some(InfoValue::Protected(_))));
    }

    #[test]
    fn multipart_round_trips_through_the_splitter() {
        let body = multipart("b1", &[("text/plain", "one"), ("text/x", "two")], "\r\n");
        let ps = parts("multipart/mixed;boundary=b1", body.as_bytes()).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!((ps[0].body, ps[1].body), (&b"one"[..], &b"two"[..]));
    }
}
