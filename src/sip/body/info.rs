//! MC info bodies (`application/vnd.3gpp.{mcptt,mcvideo,mcdata}-info+xml`, TS 24.379 F.1,
//! TS 24.281, TS 24.282): the access token, the client ID and the request URI, each in clear or
//! TS 33.180 clause 9 protected.

use mcx_model::Service;

use super::xml::{xml_text, Xml, XmlEvent};
use super::{err, BodyError};

/// A value of an info element of type `contentType` (TS 24.379 F.1.2, dossier R-26).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InfoValue {
    /// `type="Normal"` (or no `type`): the value in clear.
    Plain(String),
    /// `type="Encrypted"`: a TS 33.180 clause 9 protected element, not readable here yet.
    Protected(ProtectedElement),
}

/// What an `Encrypted` element carried (an xmlenc `EncryptedData`, dossier R-29), kept so that
/// TS 33.180 clause 9 decryption with CSK-derived keys can be added behind [`InfoValue::reveal`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtectedElement {
    /// `EncryptionMethod/@Algorithm`.
    pub algorithm: Option<String>,
    /// `KeyInfo/KeyName` (base64 CSK-ID).
    pub key_name: Option<String>,
    /// `CipherData/CipherValue` (base64 IV ‖ ciphertext ‖ tag).
    pub cipher_value: Option<String>,
}

/// Why a protected value cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotReadable;

impl InfoValue {
    /// The value in clear. Today a protected value is never readable; TS 33.180 clause 9
    /// decryption slots in here.
    pub fn reveal(&self) -> Result<&str, NotReadable> {
        match self {
            InfoValue::Plain(s) => Ok(s),
            InfoValue::Protected(_) => Err(NotReadable),
        }
    }

    /// Whether the element was protected (`type="Encrypted"`).
    pub fn is_protected(&self) -> bool {
        matches!(self, InfoValue::Protected(_))
    }
}

/// The elements of an MC info body the participating function uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McInfo {
    /// Which service's body (from its media type).
    pub service: Service,
    /// `<mcptt-access-token>` (or twin) `<mcpttString>`.
    pub access_token: Option<InfoValue>,
    /// `<mcptt-client-id>` (or twin) `<mcpttString>`.
    pub client_id: Option<InfoValue>,
    /// `<mcptt-request-uri>` (or twin) `<mcpttURI>`.
    pub request_uri: Option<InfoValue>,
}

/// Which field an element feeds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Token,
    ClientId,
    RequestUri,
}

/// Reads an MC info body of `service` (root `<mcpttinfo>`, `<mcvideoinfo>` or `<mcdatainfo>`).
///
/// `<{svc}-access-token>` and `<{svc}-client-id>` take their value from a `<{svc}String>` child,
/// `<{svc}-request-uri>` from a `<{svc}URI>` child; `type="Encrypted"` makes the value
/// [`InfoValue::Protected`]. A repeated element is an error.
pub fn read_info(service: Service, body: &[u8]) -> Result<McInfo, BodyError> {
    let svc = service.name();
    let root = format!("{svc}info");
    let (token_el, client_el, uri_el) = (
        format!("{svc}-access-token"),
        format!("{svc}-client-id"),
        format!("{svc}-request-uri"),
    );
    let (string_el, uri_value_el) = (format!("{svc}String"), format!("{svc}URI"));
    let mut xml = Xml::new(xml_text(body)?)?;
    let mut info = McInfo {
        service,
        access_token: None,
        client_id: None,
        request_uri: None,
    };
    // The field being read: (field, depth of its element, protected?, collected value).
    let mut current: Option<(Field, usize, Option<ProtectedElement>, Option<String>)> = None;
    // Inside the value child (`<mcpttString>`/`<mcpttURI>`) or a protected leaf we record.
    let mut capture: Option<&'static str> = None;
    let mut first = true;
    while let Some(ev) = xml.next()? {
        match ev {
            XmlEvent::Start {
                local,
                type_attr,
                algorithm,
                empty,
                ..
            } => {
                if first {
                    if local != root {
                        return err(format!("root element <{local}>, expected <{root}>"));
                    }
                    first = false;
                    continue;
                }
                if let Some((field, depth, prot, _)) = &mut current {
                    let child_depth = *depth + 1;
                    let cur_depth = if empty { xml.depth + 1 } else { xml.depth };
                    if let Some(p) = prot {
                        match local.as_str() {
                            "EncryptionMethod" if algorithm.is_some() => p.algorithm = algorithm,
                            "KeyName" if !empty => capture = Some("KeyName"),
                            "CipherValue" if !empty => capture = Some("CipherValue"),
                            _ => {}
                        }
                    } else if cur_depth == child_depth && !empty {
                        let want = match field {
                            Field::RequestUri => &uri_value_el,
                            _ => &string_el,
                        };
                        if local == *want {
                            capture = Some("value");
                        }
                    }
                    continue;
                }
                let field = if local == token_el {
                    Field::Token
                } else if local == client_el {
                    Field::ClientId
                } else if local == uri_el {
                    Field::RequestUri
                } else {
                    continue;
                };
                let slot_taken = match field {
                    Field::Token => info.access_token.is_some(),
                    Field::ClientId => info.client_id.is_some(),
                    Field::RequestUri => info.request_uri.is_some(),
                };
                if slot_taken {
                    return err(format!("<{local}> appears twice"));
                }
                let prot = match type_attr.as_deref() {
                    None | Some("Normal") => None,
                    Some("Encrypted") => Some(ProtectedElement::default()),
                    Some(other) => return err(format!("<{local}> has type={other:?}")),
                };
                if empty {
                    // `<… type="Encrypted"/>`: protected but without its EncryptedData; the
                    // opener says so (a failed protection, 403/101), not the body reader.
                    let Some(p) = prot else {
                        return err(format!("<{local}> is empty"));
                    };
                    let v = InfoValue::Protected(p);
                    match field {
                        Field::Token => info.access_token = Some(v),
                        Field::ClientId => info.client_id = Some(v),
                        Field::RequestUri => info.request_uri = Some(v),
                    }
                    continue;
                }
                current = Some((field, xml.depth, prot, None));
            }
            XmlEvent::Text(t) => {
                let (Some(what), Some((_, _, prot, value))) = (capture, &mut current) else {
                    continue;
                };
                let slot = match (what, prot) {
                    ("KeyName", Some(p)) => p.key_name.get_or_insert_with(String::new),
                    ("CipherValue", Some(p)) => p.cipher_value.get_or_insert_with(String::new),
                    _ => value.get_or_insert_with(String::new),
                };
                slot.push_str(&t);
            }
            XmlEvent::End => {
                capture = None;
                if let Some((field, depth, prot, value)) = current.take() {
                    if xml.depth >= depth {
                        current = Some((field, depth, prot, value));
                        continue;
                    }
                    let v = match prot {
                        Some(mut p) => {
                            trim_in_place(&mut p.key_name);
                            trim_in_place(&mut p.cipher_value);
                            InfoValue::Protected(p)
                        }
                        None => match value.as_deref().map(str::trim) {
                            Some(v) if !v.is_empty() => InfoValue::Plain(v.to_owned()),
                            _ => {
                                let name = match field {
                                    Field::Token => &token_el,
                                    Field::ClientId => &client_el,
                                    Field::RequestUri => &uri_el,
                                };
                                return err(format!("<{name}> has no value"));
                            }
                        },
                    };
                    match field {
                        Field::Token => info.access_token = Some(v),
                        Field::ClientId => info.client_id = Some(v),
                        Field::RequestUri => info.request_uri = Some(v),
                    }
                }
            }
        }
    }
    Ok(info)
}

fn trim_in_place(s: &mut Option<String>) {
    if let Some(v) = s {
        *v = v.trim().to_owned();
    }
}
