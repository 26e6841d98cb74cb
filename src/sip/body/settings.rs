//! `application/poc-settings+xml` (RFC 4354; TS 24.379 7.4.1.2.2).

use mcx_model::Settings;

use super::xml::{xml_text, Xml, XmlEvent};
use super::{err, BodyError};

/// A client's `application/poc-settings+xml` (RFC 4354; TS 24.379 7.4.1.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PocSettings {
    /// `<entity id>`: the MC client's instance ID URN.
    pub entity_id: Option<String>,
    /// The settings the participating function keeps.
    pub settings: Settings,
}

/// Reads a `poc-settings` document: the first `<entity>`'s `id` and its `<answer-mode>` (automatic|manual),
/// `<user-profile-index>` (inside `<selected-user-profile-index>`) and `<multiplex-support>`.
pub fn read_poc_settings(body: &[u8]) -> Result<PocSettings, BodyError> {
    let mut xml = Xml::new(xml_text(body)?)?;
    let mut out = PocSettings::default();
    let mut first = true;
    let mut entity_depth: Option<usize> = None;
    let mut entities = 0;
    let mut capture: Option<String> = None;
    let mut text = String::new();
    while let Some(ev) = xml.next()? {
        match ev {
            XmlEvent::Start {
                local, id, empty, ..
            } => {
                if first {
                    if local != "poc-settings" {
                        return err(format!("root element <{local}>, expected <poc-settings>"));
                    }
                    first = false;
                    continue;
                }
                if local == "entity" && entity_depth.is_none() {
                    entities += 1;
                    if entities == 1 {
                        out.entity_id = id;
                    }
                    if entities == 1 && !empty {
                        entity_depth = Some(xml.depth);
                    }
                    continue;
                }
                if entity_depth.is_some() && !empty {
                    capture = Some(local);
                    text.clear();
                }
            }
            XmlEvent::Text(t) => {
                if capture.is_some() {
                    text.push_str(&t);
                }
            }
            XmlEvent::End => {
                if let Some(name) = capture.take() {
                    let v = text.trim();
                    let s = &mut out.settings;
                    match name.as_str() {
                        "answer-mode" => {
                            s.answer_mode_automatic = Some(match v {
                                "automatic" => true,
                                "manual" => false,
                                _ => return err(format!("answer-mode {v:?}")),
                            })
                        }
                        "user-profile-index" => {
                            s.user_profile_index = Some(
                                v.parse()
                                    .map_err(|_| BodyError(format!("user-profile-index {v:?}")))?,
                            )
                        }
                        "multiplex-support" => {
                            s.multiplex_support = Some(match v {
                                "true" | "1" => true,
                                "false" | "0" => false,
                                _ => return err(format!("multiplex-support {v:?}")),
                            })
                        }
                        _ => {}
                    }
                }
                if entity_depth.is_some_and(|d| xml.depth < d) {
                    entity_depth = None;
                }
            }
        }
    }
    Ok(out)
}
