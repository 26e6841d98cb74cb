//! Bodies: Content-Type (RFC 3261 20.15 via `mime`), `multipart/mixed` (RFC 2046 5.1,
//! [`multipart`]), the MC info bodies ([`info`]) (`application/vnd.3gpp.{mcptt,mcvideo,mcdata}-info+xml`, TS 24.379 F.1,
//! TS 24.281, TS 24.282), `application/poc-settings+xml` (RFC 4354, TS 24.379 7.4.1.2.2) and the
//! `message/sip` body of a third-party REGISTER (TS 24.229 5.4.1.7).
//!
//! XML is read with quick-xml as a stream of events: entity references are never expanded
//! (only the five predefined ones and character references are resolved, anything else is an
//! error), a DOCTYPE is refused, nesting is limited to [`MAX_XML_DEPTH`], size to
//! [`MAX_XML_SIZE`], and the document must close every element it opens. Elements are matched
//! on their **local name** (the namespace prefix is ignored), under a root whose local name is
//! the one the body type promises (`mcpttinfo`, `poc-settings`, …): the namespace URIs are only
//! `[I]`-verified in the dossier (c.6) and clients differ in prefixes, so a namespace check would
//! refuse real clients without making the token any more trustworthy (the token is verified on
//! its own).
//!
//! One module per concern: [`multipart`] splits, [`xml`] is the one bounded XML reader,
//! [`info`] reads MC info bodies, [`settings`] poc-settings bodies, [`message_sip`] the UE
//! REGISTER inside a third-party REGISTER, and [`write`] writes what they read. Header semantics (feature tags, ICSIs) live in
//! [`super::headers`].

use std::fmt;

pub mod info;
pub mod message_sip;
pub mod multipart;
pub mod settings;
pub mod write;
pub mod xml;

pub use info::{read_info, InfoValue, McInfo, NotReadable, ProtectedElement};
pub use message_sip::{read_message_sip, EmbeddedInfo, EmbeddedRegister};
pub use multipart::{parts, split_multipart, Part};
pub use settings::{read_poc_settings, PocSettings};

use mcx_model::Service;

/// Deepest XML nesting accepted in an info or settings body.
pub const MAX_XML_DEPTH: usize = 32;
/// Largest XML body accepted (bytes).
pub const MAX_XML_SIZE: usize = 32 * 1024;
/// Most parts accepted in one `multipart/mixed` body.
pub const MAX_PARTS: usize = 16;

/// Why a body could not be used (the machine answers 400 with this text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError(pub String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

pub(crate) fn err<T>(s: impl Into<String>) -> Result<T, BodyError> {
    Err(BodyError(s.into()))
}

/// The body types the edge reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/vnd.3gpp.{mcptt,mcvideo,mcdata}-info+xml`.
    Info(Service),
    /// `application/poc-settings+xml`.
    PocSettings,
    /// `message/sip`.
    MessageSip,
    /// `multipart/mixed` with its boundary.
    Multipart,
    /// Parts of a protected body set (TS 33.180 clause 9 and 5.4), which the edge hands to the
    /// runtime: `application/vnd.3gpp.mcptt-signed+xml` (and twins) and `application/mikey`.
    ProtectionPart,
    /// Anything else.
    Other,
}

/// Parses a Content-Type value with `mime`.
pub fn content_type(value: &str) -> Result<mime::Mime, BodyError> {
    value
        .trim()
        .parse::<mime::Mime>()
        .map_err(|e| BodyError(format!("bad Content-Type {value:?}: {e}")))
}

/// What kind of body a media type names.
pub fn body_kind(m: &mime::Mime) -> BodyKind {
    let essence = m.essence_str();
    match essence {
        "application/vnd.3gpp.mcptt-info+xml" => BodyKind::Info(Service::Mcptt),
        "application/vnd.3gpp.mcvideo-info+xml" => BodyKind::Info(Service::Mcvideo),
        "application/vnd.3gpp.mcdata-info+xml" => BodyKind::Info(Service::Mcdata),
        "application/poc-settings+xml" => BodyKind::PocSettings,
        "message/sip" => BodyKind::MessageSip,
        "multipart/mixed" => BodyKind::Multipart,
        "application/mikey"
        | "application/vnd.3gpp.mcptt-signed+xml"
        | "application/vnd.3gpp.mcvideo-signed+xml"
        | "application/vnd.3gpp.mcdata-signed+xml" => BodyKind::ProtectionPart,
        _ => BodyKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::feature_tag_services;
    use mcx_model::{ServiceSet, Settings};

    #[test]
    fn multipart_with_preamble_padding_epilogue() {
        let body = b"preamble\r\n--b1 \t\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\n\r\ntwo\r\n--b1--\r\nepilogue";
        let p = split_multipart(body, "b1").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].body, b"one");
        assert_eq!(p[1].body, b"two");
        assert_eq!(p[1].content_type, "text/plain");
        assert!(split_multipart(b"--b1\r\n\r\none\r\n", "b1").is_err());
    }

    #[test]
    fn info_plain_and_encrypted() {
        let xml = br#"<?xml version="1.0"?><mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0"><mcptt-Params>
<mcptt-access-token type="Encrypted"><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"><xenc:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes128-gcm"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:KeyName>a2V5</ds:KeyName></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>Y2lwaGVy</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></mcptt-access-token>
<mcptt-client-id type="Normal"><mcpttString>urn:uuid:1&amp;2</mcpttString></mcptt-client-id></mcptt-Params></mcpttinfo>"#;
        let info = read_info(Service::Mcptt, xml).unwrap();
        assert_eq!(
            info.access_token,
            Some(InfoValue::Protected(ProtectedElement {
                algorithm: Some("http://www.w3.org/2009/xmlenc11#aes128-gcm".into()),
                key_name: Some("a2V5".into()),
                cipher_value: Some("Y2lwaGVy".into()),
            }))
        );
        assert_eq!(
            info.client_id,
            Some(InfoValue::Plain("urn:uuid:1&2".into()))
        );
        assert!(read_info(Service::Mcvideo, xml).is_err());
    }

    #[test]
    fn xml_guards() {
        assert!(read_info(
            Service::Mcptt,
            b"<!DOCTYPE x [<!ENTITY a \"b\">]><mcpttinfo/>"
        )
        .unwrap_err()
        .0
        .contains("DOCTYPE"));
        assert!(read_info(Service::Mcptt, b"<mcpttinfo><a>")
            .unwrap_err()
            .0
            .contains("closed"));
        assert!(read_info(Service::Mcptt, b"<mcpttinfo>&lol;</mcpttinfo>").is_err());
        let deep = format!(
            "<mcpttinfo>{}{}</mcpttinfo>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert!(read_info(Service::Mcptt, deep.as_bytes())
            .unwrap_err()
            .0
            .contains("deeper"));
    }

    #[test]
    fn poc_settings() {
        let xml = br#"<poc-settings xmlns="urn:oma:params:xml:ns:poc:poc-settings" xmlns:m="urn:3gpp:mcsSettings:1.0"><entity id="urn:uuid:c1"><am-settings><answer-mode>manual</answer-mode></am-settings><m:selected-user-profile-index><m:user-profile-index>3</m:user-profile-index></m:selected-user-profile-index><m:multiplex-support>true</m:multiplex-support></entity></poc-settings>"#;
        let s = read_poc_settings(xml).unwrap();
        assert_eq!(s.entity_id.as_deref(), Some("urn:uuid:c1"));
        assert_eq!(
            s.settings,
            Settings {
                answer_mode_automatic: Some(false),
                user_profile_index: Some(3),
                multiplex_support: Some(true)
            }
        );
    }

    #[test]
    fn feature_tags() {
        let s = feature_tag_services("<sip:u@[2001:db8::5]:5060>;+sip.instance=\"<urn:uuid:1>\";+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mcvideo,urn%3Aurn-7%3A3gpp-service.ims.icsi.mcdata\";+g.3gpp.mcptt");
        assert_eq!(s, ServiceSet::ALL);
    }
}
