//! The `message/sip` body of a third-party REGISTER (TS 24.229 5.4.1.7): the UE's own REGISTER,
//! its feature tags and any info bodies it carried.

use mcx_model::{Service, ServiceSet};

use super::{body_kind, content_type, err, parts, read_info, BodyError, BodyKind, InfoValue};
use crate::sip::framing::frame_datagram;
use crate::sip::headers::feature_tag_services;
use crate::sip::parse::{self, Method, SipMessage};

/// One MC info body found in the UE's REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedInfo {
    /// The service of the info body.
    pub service: Service,
    /// The access token, if any.
    pub access_token: Option<InfoValue>,
    /// The MC client ID, if any.
    pub client_id: Option<InfoValue>,
}

/// What the `message/sip` body of a third-party REGISTER says about the UE (TS 24.229
/// 5.4.1.7, TS 24.379 7.3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedRegister {
    /// MC services named by the feature tags of the UE REGISTER's Contacts.
    pub services: ServiceSet,
    /// The info bodies it carried.
    pub infos: Vec<EmbeddedInfo>,
    /// Parts that could not be read (for the log).
    pub notes: Vec<String>,
}

/// Reads the UE's REGISTER from a `message/sip` body. The S-CSCF may include the UE's REGISTER
/// and the 200 OK it got (TS 24.229 5.4.1.7A); responses are skipped by the caller.
pub fn read_message_sip(body: &[u8]) -> Result<EmbeddedRegister, BodyError> {
    let frame = frame_datagram(body).map_err(|e| BodyError(format!("message/sip: {e}")))?;
    let req = match parse::parse_embedded(&frame) {
        Ok(SipMessage::Request(r)) if r.method == Method::Register => r,
        Ok(SipMessage::Request(r)) => {
            return err(format!("message/sip carries a {} not a REGISTER", r.method))
        }
        Ok(SipMessage::Response(_)) => return err("message/sip carries a response"),
        Err(e) => return err(format!("message/sip: {e}")),
    };
    let mut out = EmbeddedRegister::default();
    for c in &req.contact {
        for s in feature_tag_services(c).iter() {
            out.services.insert(s);
        }
    }
    if req.body.is_empty() {
        return Ok(out);
    }
    let Some(ct) = &req.content_type else {
        out.notes
            .push("UE REGISTER body without Content-Type".into());
        return Ok(out);
    };
    for p in parts(ct, &req.body)? {
        let kind = content_type(&p.content_type).map(|m| body_kind(&m));
        if let Ok(BodyKind::Info(service)) = kind {
            match read_info(service, p.body) {
                Ok(info) => out.infos.push(EmbeddedInfo {
                    service,
                    access_token: info.access_token,
                    client_id: info.client_id,
                }),
                Err(e) => out.notes.push(format!("{service} info body: {e}")),
            }
        }
    }
    Ok(out)
}
