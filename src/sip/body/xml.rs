//! The one bounded XML reader of the edge (quick-xml): DOCTYPE refused, depth and size capped
//! ([`super::MAX_XML_DEPTH`], [`super::MAX_XML_SIZE`]), entities never expanded, a balanced close
//! required.

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{err, BodyError, MAX_XML_DEPTH, MAX_XML_SIZE};

/// A bounded XML event stream: DOCTYPE refused, depth and size capped, entities not expanded,
/// balanced close required. Calls `on` for each start (`Some(name)`, attributes via `attr`),
/// each end (`None`) and text.
pub(crate) struct Xml<'a> {
    reader: Reader<&'a [u8]>,
    /// How deep the reader is now (0 outside the root element).
    pub(crate) depth: usize,
    root_seen: bool,
}

/// One event of [`Xml::next`].
pub(crate) enum XmlEvent<'a> {
    Start {
        local: String,
        type_attr: Option<String>,
        algorithm: Option<String>,
        id: Option<String>,
        empty: bool,
    },
    End,
    Text(Cow<'a, str>),
}

impl<'a> Xml<'a> {
    /// A reader over `xml`, refused when larger than [`MAX_XML_SIZE`].
    pub(crate) fn new(xml: &'a str) -> Result<Self, BodyError> {
        if xml.len() > MAX_XML_SIZE {
            return err(format!("XML body over {MAX_XML_SIZE} bytes"));
        }
        let mut reader = Reader::from_str(xml);
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        Ok(Xml {
            reader,
            depth: 0,
            root_seen: false,
        })
    }

    /// The next event, or `None` at a clean end of document.
    pub(crate) fn next(&mut self) -> Result<Option<XmlEvent<'a>>, BodyError> {
        loop {
            let ev = self
                .reader
                .read_event()
                .map_err(|e| BodyError(format!("XML: {e}")))?;
            match ev {
                Event::DocType(_) => return err("XML with a DOCTYPE is refused"),
                Event::Start(_) | Event::Empty(_) if self.depth == 0 && self.root_seen => {
                    return err("XML has more than one root element");
                }
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let empty = matches!(ev, Event::Empty(_));
                    let local = s.local_name().as_ref().to_owned();
                    let mut type_attr = None;
                    let mut algorithm = None;
                    let mut id = None;
                    for a in s.attributes() {
                        let a = a.map_err(|e| BodyError(format!("XML attribute: {e}")))?;
                        let name = a.key.local_name();
                        if name.as_ref() == "type" {
                            type_attr = Some(a.value.into_owned());
                        } else if name.as_ref() == "Algorithm" {
                            algorithm = Some(a.value.into_owned());
                        } else if name.as_ref() == "id" {
                            id = Some(a.value.into_owned());
                        }
                    }
                    self.root_seen = true;
                    if !empty {
                        self.depth += 1;
                        if self.depth > MAX_XML_DEPTH {
                            return err(format!("XML nested deeper than {MAX_XML_DEPTH}"));
                        }
                    }
                    return Ok(Some(XmlEvent::Start {
                        local,
                        type_attr,
                        algorithm,
                        id,
                        empty,
                    }));
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(Some(XmlEvent::End));
                }
                Event::Text(t) => {
                    let text = t.xml10_content();
                    if self.depth == 0 && !text.trim().is_empty() {
                        return err("text outside the root element");
                    }
                    return Ok(Some(XmlEvent::Text(text)));
                }
                Event::CData(c) => return Ok(Some(XmlEvent::Text(c.into_inner()))),
                Event::GeneralRef(r) => {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        return Ok(Some(XmlEvent::Text(Cow::Owned(c.to_string()))));
                    }
                    let name = r.xml10_content();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => return Ok(Some(XmlEvent::Text(Cow::Borrowed(s)))),
                        None => return err(format!("undefined XML entity &{name};")),
                    }
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => {
                    if self.depth != 0 {
                        return err("XML ends before its elements are closed");
                    }
                    if !self.root_seen {
                        return err("XML has no root element");
                    }
                    return Ok(None);
                }
            }
        }
    }
}

pub(crate) fn xml_text(body: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(body).map_err(|_| BodyError("XML body is not UTF-8".into()))
}
