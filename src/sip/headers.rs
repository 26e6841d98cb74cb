//! Header semantics the edge needs beyond syntax: which MC services a Contact or Accept-Contact
//! names by feature tag (TS 24.379 7.2.1, TS 24.229 7.9.2) and which service an ICSI names
//! (`P-Preferred-Service`, dossier c.6).

use mcx_model::{Service, ServiceSet};

use super::parse::{header_params, split_commas};

/// The MC services a Contact (or Accept-Contact) value names by feature tag: `+g.3gpp.mcptt`,
/// `+g.3gpp.mcvideo`, `+g.3gpp.mcdata` (and its `.sds`/`.fd` sub-tags), and the ICSI values in
/// `+g.3gpp.icsi-ref` (percent-encoded, comma-separated, TS 24.229 7.9.2).
pub fn feature_tag_services(value: &str) -> ServiceSet {
    let mut set = ServiceSet::EMPTY;
    for (name, v) in header_params(value) {
        match name.as_str() {
            "+g.3gpp.mcptt" => set.insert(Service::Mcptt),
            "+g.3gpp.mcvideo" => set.insert(Service::Mcvideo),
            "+g.3gpp.mcdata" | "+g.3gpp.mcdata.sds" | "+g.3gpp.mcdata.fd" => {
                set.insert(Service::Mcdata)
            }
            "+g.3gpp.icsi-ref" => {
                if let Some(v) = v {
                    for icsi in v.split(',') {
                        if let Some(s) = icsi_service(&percent_decode(icsi.trim())) {
                            set.insert(s);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    set
}

/// The service an ICSI names (`urn:urn-7:3gpp-service.ims.icsi.mcptt`, dossier c.6).
pub fn icsi_service(icsi: &str) -> Option<Service> {
    let rest = icsi
        .trim()
        .to_ascii_lowercase()
        .strip_prefix("urn:urn-7:3gpp-service.ims.icsi.")?
        .to_owned();
    Service::ALL.into_iter().find(|s| rest == s.name())
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The values of a comma-separated header, split.
pub(crate) fn split_list(v: &str) -> Vec<&str> {
    split_commas(v)
}
