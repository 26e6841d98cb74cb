//! A small bounded XML tree for the clause-9 documents (quick-xml underneath), its serializer,
//! and Canonical XML 1.0 / Exclusive XML Canonicalization 1.0 (both without comments) of a
//! subtree, which is what `ds:SignedInfo` needs.
//!
//! Bounds: size ([`Limits::max_bytes`]), nesting ([`Limits::max_depth`]), node count
//! ([`Limits::max_nodes`]). A DOCTYPE is refused, so no entity is ever defined; only the five
//! predefined entities and character references are resolved. Comments and processing
//! instructions are dropped (C14N without comments; a PI inside `SignedInfo` therefore makes
//! the signature fail, never pass).

use std::borrow::Cow;
use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;

/// The `xml` prefix's namespace (always bound).
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Parser bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest document (bytes).
    pub max_bytes: usize,
    /// Deepest nesting.
    pub max_depth: usize,
    /// Most elements plus text nodes.
    pub max_nodes: usize,
    /// Whether an unbound prefix is tolerated (its namespace is then `None`). Only for the
    /// decrypted content of an element, which may be serialized without the namespace
    /// declarations of the document it came from.
    pub allow_unbound_prefixes: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 32 * 1024,
            max_depth: 32,
            max_nodes: 2048,
            allow_unbound_prefixes: false,
        }
    }
}

/// Why a document could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Over [`Limits::max_bytes`].
    #[error("XML over {0} bytes")]
    TooLarge(usize),
    /// Over [`Limits::max_depth`].
    #[error("XML nested deeper than {0}")]
    TooDeep(usize),
    /// Over [`Limits::max_nodes`].
    #[error("XML with more than {0} nodes")]
    TooManyNodes(usize),
    /// A DOCTYPE.
    #[error("XML with a DOCTYPE is refused")]
    DocType,
    /// Not UTF-8.
    #[error("XML is not UTF-8")]
    NotUtf8,
    /// An entity other than the five predefined ones.
    #[error("undefined XML entity &{0};")]
    UndefinedEntity(String),
    /// A prefix with no namespace declaration in scope.
    #[error("unbound namespace prefix {0:?}")]
    UnboundPrefix(String),
    /// No root element, or more than one, or text outside it.
    #[error("XML document structure: {0}")]
    Structure(&'static str),
    /// What quick-xml reported.
    #[error("XML: {0}")]
    Syntax(String),
}

/// An attribute (not a namespace declaration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Prefix, if any.
    pub prefix: Option<String>,
    /// Local name.
    pub local: String,
    /// Namespace (unprefixed attributes have none).
    pub ns: Option<String>,
    /// Normalized value (XML 1.0 3.3.3).
    pub value: String,
}

/// A node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data (entities resolved, line ends normalized).
    Text(String),
}

/// An element with its namespace declarations kept apart from its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Prefix, if any.
    pub prefix: Option<String>,
    /// Local name.
    pub local: String,
    /// Namespace (resolved at parse time).
    pub ns: Option<String>,
    /// Declarations made on this element: (prefix, URI); `None` is the default namespace, an
    /// empty URI undeclares it.
    pub ns_decls: Vec<(Option<String>, String)>,
    /// Attributes.
    pub attrs: Vec<Attr>,
    /// Children in order.
    pub children: Vec<Node>,
}

/// In-scope namespaces: prefix (`None` = default) to URI.
pub type Scope = BTreeMap<Option<String>, String>;

impl Element {
    /// A new element in `ns` with `prefix`, declaring nothing.
    pub fn new(prefix: Option<&str>, local: &str, ns: Option<&str>) -> Element {
        Element {
            prefix: prefix.map(str::to_owned),
            local: local.to_owned(),
            ns: ns.map(str::to_owned),
            ns_decls: Vec::new(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Adds a namespace declaration (builder).
    pub fn declare(mut self, prefix: Option<&str>, uri: &str) -> Element {
        self.ns_decls
            .push((prefix.map(str::to_owned), uri.to_owned()));
        self
    }

    /// Adds an unprefixed attribute (builder).
    pub fn attr(mut self, local: &str, value: &str) -> Element {
        self.attrs.push(Attr {
            prefix: None,
            local: local.to_owned(),
            ns: None,
            value: value.to_owned(),
        });
        self
    }

    /// Adds a child element (builder).
    pub fn child(mut self, el: Element) -> Element {
        self.children.push(Node::Element(el));
        self
    }

    /// Adds text (builder).
    pub fn text(mut self, t: &str) -> Element {
        self.children.push(Node::Text(t.to_owned()));
        self
    }

    /// Whether this is `{ns}local`.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.local == local && self.ns.as_deref() == Some(ns)
    }

    /// The value of the unprefixed attribute `local`.
    pub fn get_attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.prefix.is_none() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Whether every text child is white space.
    pub fn only_whitespace_text(&self) -> bool {
        self.children.iter().all(|n| match n {
            Node::Text(t) => t.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')),
            Node::Element(_) => true,
        })
    }

    /// The concatenated text children (not descendants).
    pub fn text_content(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// The scope inside this element, given the scope of its parent.
    pub fn scope_inside(&self, parent: &Scope) -> Scope {
        let mut s = parent.clone();
        for (p, u) in &self.ns_decls {
            if u.is_empty() {
                s.remove(p);
            } else {
                s.insert(p.clone(), u.clone());
            }
        }
        s
    }

    /// Serializes the element (declarations as written, attributes in order).
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_xml(&mut out);
        out
    }

    fn write_xml(&self, out: &mut String) {
        out.push('<');
        push_qname(out, self.prefix.as_deref(), &self.local);
        for (p, u) in &self.ns_decls {
            match p {
                Some(p) => {
                    out.push_str(" xmlns:");
                    out.push_str(p);
                }
                None => out.push_str(" xmlns"),
            }
            out.push_str("=\"");
            escape_attr(out, u);
            out.push('"');
        }
        for a in &self.attrs {
            out.push(' ');
            push_qname(out, a.prefix.as_deref(), &a.local);
            out.push_str("=\"");
            escape_attr(out, &a.value);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_xml(out),
                Node::Text(t) => escape_text(out, t),
            }
        }
        out.push_str("</");
        push_qname(out, self.prefix.as_deref(), &self.local);
        out.push('>');
    }
}

fn push_qname(out: &mut String, prefix: Option<&str>, local: &str) {
    if let Some(p) = prefix {
        out.push_str(p);
        out.push(':');
    }
    out.push_str(local);
}

/// C14N text escaping (also valid for plain serialization).
fn escape_text(out: &mut String, t: &str) {
    for c in t.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// C14N attribute escaping (also valid for plain serialization).
fn escape_attr(out: &mut String, t: &str) {
    for c in t.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// Parses a whole document (bytes) into its root element.
pub fn parse_bytes(xml: &[u8], limits: Limits) -> Result<Element, XmlError> {
    if xml.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(limits.max_bytes));
    }
    parse(
        std::str::from_utf8(xml).map_err(|_| XmlError::NotUtf8)?,
        limits,
    )
}

fn split_qname(q: &str) -> (Option<&str>, &str) {
    match q.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, q),
    }
}

fn lookup(scopes: &[Scope], prefix: Option<&str>) -> Option<String> {
    if prefix == Some("xml") {
        return Some(XML_NS.to_owned());
    }
    let key = prefix.map(str::to_owned);
    scopes.last().and_then(|s| s.get(&key)).cloned()
}

/// Parses a whole document into its root element.
pub fn parse(xml: &str, limits: Limits) -> Result<Element, XmlError> {
    if xml.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(limits.max_bytes));
    }
    let mut reader = Reader::from_str(xml);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    // Open elements and the namespace scope inside each.
    let mut stack: Vec<Element> = Vec::new();
    let mut scopes: Vec<Scope> = vec![Scope::new()];
    let mut root: Option<Element> = None;
    let mut nodes = 0usize;
    let syntax = |e: &dyn std::fmt::Display| XmlError::Syntax(e.to_string());
    loop {
        let ev = reader.read_event().map_err(|e| syntax(&e))?;
        let push_text =
            |stack: &mut Vec<Element>, t: Cow<'_, str>, nodes: &mut usize| match stack.last_mut() {
                None => {
                    if t.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
                        Ok(())
                    } else {
                        Err(XmlError::Structure("text outside the root element"))
                    }
                }
                Some(top) => {
                    if let Some(Node::Text(prev)) = top.children.last_mut() {
                        prev.push_str(&t);
                    } else {
                        *nodes += 1;
                        if *nodes > limits.max_nodes {
                            return Err(XmlError::TooManyNodes(limits.max_nodes));
                        }
                        top.children.push(Node::Text(t.into_owned()));
                    }
                    Ok(())
                }
            };
        match ev {
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(ev, Event::Empty(_));
                if stack.is_empty() && root.is_some() {
                    return Err(XmlError::Structure("more than one root element"));
                }
                nodes += 1;
                if nodes > limits.max_nodes {
                    return Err(XmlError::TooManyNodes(limits.max_nodes));
                }
                if stack.len() + 1 > limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                let qname = s.name().into_inner().to_owned();
                let mut ns_decls = Vec::new();
                let mut raw_attrs = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| syntax(&e))?;
                    let key = a.key.into_inner().to_owned();
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| match e {
                            quick_xml::Error::Escape(
                                quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                            ) => XmlError::UndefinedEntity(name),
                            e => syntax(&e),
                        })?
                        .into_owned();
                    if key == "xmlns" {
                        ns_decls.push((None, value));
                    } else if let Some(p) = key.strip_prefix("xmlns:") {
                        if value.is_empty() {
                            return Err(XmlError::Syntax(format!("xmlns:{p}=\"\"")));
                        }
                        ns_decls.push((Some(p.to_owned()), value));
                    } else {
                        raw_attrs.push((key, value));
                    }
                }
                let mut scope = scopes.last().cloned().unwrap_or_default();
                for (p, u) in &ns_decls {
                    if u.is_empty() {
                        scope.remove(p);
                    } else {
                        scope.insert(p.clone(), u.clone());
                    }
                }
                scopes.push(scope);
                let resolve =
                    |prefix: Option<&str>, for_attr: bool| -> Result<Option<String>, XmlError> {
                        if for_attr && prefix.is_none() {
                            return Ok(None);
                        }
                        match lookup(&scopes, prefix) {
                            Some(u) => Ok(Some(u)),
                            None if prefix.is_none() => Ok(None),
                            None if limits.allow_unbound_prefixes => Ok(None),
                            None => Err(XmlError::UnboundPrefix(prefix.unwrap_or("").to_owned())),
                        }
                    };
                let (prefix, local) = split_qname(&qname);
                let ns = resolve(prefix, false)?;
                let mut attrs = Vec::with_capacity(raw_attrs.len());
                for (key, value) in raw_attrs {
                    let (p, l) = split_qname(&key);
                    attrs.push(Attr {
                        prefix: p.map(str::to_owned),
                        local: l.to_owned(),
                        ns: resolve(p, true)?,
                        value,
                    });
                }
                let el = Element {
                    prefix: prefix.map(str::to_owned),
                    local: local.to_owned(),
                    ns,
                    ns_decls,
                    attrs,
                    children: Vec::new(),
                };
                if empty {
                    scopes.pop();
                    match stack.last_mut() {
                        Some(top) => top.children.push(Node::Element(el)),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                scopes.pop();
                let el = stack
                    .pop()
                    .ok_or(XmlError::Structure("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(top) => top.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => push_text(&mut stack, t.xml10_content(), &mut nodes)?,
            Event::CData(c) => {
                let s = c.into_inner();
                if stack.is_empty() {
                    return Err(XmlError::Structure("CDATA outside the root element"));
                }
                push_text(
                    &mut stack,
                    Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n")),
                    &mut nodes,
                )?
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.xml10_content();
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.to_owned(),
                            None => return Err(XmlError::UndefinedEntity(name.into_owned())),
                        }
                    }
                    Err(e) => return Err(syntax(&e)),
                };
                if stack.is_empty() {
                    return Err(XmlError::Structure("reference outside the root element"));
                }
                push_text(&mut stack, Cow::Owned(resolved), &mut nodes)?
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(XmlError::Structure(
                        "document ends before its elements are closed",
                    ));
                }
                return root.ok_or(XmlError::Structure("no root element"));
            }
        }
    }
}

/// Which canonicalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum C14n {
    /// Canonical XML 1.0, `http://www.w3.org/TR/2001/REC-xml-c14n-20010315`.
    Inclusive,
    /// Exclusive XML Canonicalization 1.0, `http://www.w3.org/2001/10/xml-exc-c14n#`.
    Exclusive,
}

/// Canonical form of the subtree rooted at `el`, whose parent's in-scope namespaces are
/// `parent_scope` (all declarations of its ancestors). Comments are already gone (without
/// comments); the subtree is whole (no XPath node-set subsetting).
pub fn canonicalize(el: &Element, parent_scope: &Scope, mode: C14n) -> String {
    let mut out = String::new();
    // What the output has rendered so far, in effect at the apex's parent: nothing.
    c14n_el(el, parent_scope, &Scope::new(), mode, &mut out);
    out
}

fn c14n_el(el: &Element, parent_scope: &Scope, rendered: &Scope, mode: C14n, out: &mut String) {
    let scope = {
        let mut s = parent_scope.clone();
        for (p, u) in &el.ns_decls {
            if u.is_empty() {
                s.remove(p);
            } else {
                s.insert(p.clone(), u.clone());
            }
        }
        s
    };
    // Namespace nodes to consider: all in scope (inclusive) or the visibly utilized (exclusive).
    let candidates: Vec<Option<String>> = match mode {
        C14n::Inclusive => {
            let mut c: Vec<Option<String>> = scope.keys().cloned().collect();
            if !c.contains(&None) {
                c.push(None);
            }
            c
        }
        C14n::Exclusive => {
            let mut c = vec![el.prefix.clone()];
            for a in &el.attrs {
                if a.prefix.is_some()
                    && a.prefix.as_deref() != Some("xml")
                    && !c.contains(&a.prefix)
                {
                    c.push(a.prefix.clone());
                }
            }
            c
        }
    };
    let mut emit: Vec<(Option<String>, String)> = Vec::new();
    for p in candidates {
        if p.as_deref() == Some("xml") {
            continue;
        }
        let uri = scope.get(&p).cloned().unwrap_or_default();
        let shown = rendered.get(&p).cloned().unwrap_or_default();
        if uri != shown {
            emit.push((p, uri));
        }
    }
    // Default namespace first, then by prefix.
    emit.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rendered_inside = rendered.clone();
    for (p, u) in &emit {
        if u.is_empty() {
            rendered_inside.remove(p);
        } else {
            rendered_inside.insert(p.clone(), u.clone());
        }
    }
    out.push('<');
    push_qname(out, el.prefix.as_deref(), &el.local);
    for (p, u) in &emit {
        match p {
            Some(p) => {
                out.push_str(" xmlns:");
                out.push_str(p);
            }
            None => out.push_str(" xmlns"),
        }
        out.push_str("=\"");
        escape_attr(out, u);
        out.push('"');
    }
    let mut attrs: Vec<&Attr> = el.attrs.iter().collect();
    attrs.sort_by(|a, b| {
        (a.ns.as_deref().unwrap_or(""), a.local.as_str())
            .cmp(&(b.ns.as_deref().unwrap_or(""), b.local.as_str()))
    });
    for a in attrs {
        out.push(' ');
        push_qname(out, a.prefix.as_deref(), &a.local);
        out.push_str("=\"");
        escape_attr(out, &a.value);
        out.push('"');
    }
    out.push('>');
    for n in &el.children {
        match n {
            Node::Element(c) => c14n_el(c, &scope, &rendered_inside, mode, out),
            Node::Text(t) => escape_text(out, t),
        }
    }
    out.push_str("</");
    push_qname(out, el.prefix.as_deref(), &el.local);
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Element, XmlError> {
        parse(s, Limits::default())
    }

    #[test]
    fn parses_namespaces_text_and_entities() {
        let el = p(r#"<?xml version="1.0"?><a xmlns="urn:x" xmlns:b="urn:b"><b:c k="1&amp;2">t&lt;&#x41;</b:c><!-- c --></a>"#).unwrap();
        assert_eq!(el.ns.as_deref(), Some("urn:x"));
        let c = el.elements().next().unwrap();
        assert!(c.is("urn:b", "c"));
        assert_eq!(c.get_attr("k"), Some("1&2"));
        assert_eq!(c.text_content(), "t<A");
    }

    #[test]
    fn refuses_what_it_must() {
        assert_eq!(
            p("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>").unwrap_err(),
            XmlError::DocType
        );
        assert!(matches!(
            p("<a>&x;</a>").unwrap_err(),
            XmlError::UndefinedEntity(_)
        ));
        assert!(matches!(
            p("<a x=\"&x;\"/>").unwrap_err(),
            XmlError::UndefinedEntity(_)
        ));
        assert!(matches!(
            p("<q:a/>").unwrap_err(),
            XmlError::UnboundPrefix(_)
        ));
        assert!(matches!(p("<a/><b/>").unwrap_err(), XmlError::Structure(_)));
        assert!(matches!(p("<a>").unwrap_err(), XmlError::Structure(_)));
        assert!(matches!(p("x<a/>").unwrap_err(), XmlError::Structure(_)));
        assert!(matches!(p("").unwrap_err(), XmlError::Structure(_)));
        assert!(matches!(p("<a></b>").unwrap_err(), XmlError::Syntax(_)));
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert_eq!(p(&deep).unwrap_err(), XmlError::TooDeep(32));
        let many = format!("<a>{}</a>", "<b/>".repeat(3000));
        assert_eq!(p(&many).unwrap_err(), XmlError::TooManyNodes(2048));
        let big = format!("<a>{}</a>", "x".repeat(40_000));
        assert_eq!(p(&big).unwrap_err(), XmlError::TooLarge(32 * 1024));
        let lax = Limits {
            allow_unbound_prefixes: true,
            ..Limits::default()
        };
        assert_eq!(parse("<q:a>v</q:a>", lax).unwrap().ns, None);
    }

    #[test]
    fn serialization_round_trips() {
        let src =
            r#"<r xmlns="urn:r" xmlns:p="urn:p"><p:x a="&quot;&lt;&amp;">1 &amp; 2</p:x><e/></r>"#;
        let el = p(src).unwrap();
        assert_eq!(el.to_xml(), src);
        assert_eq!(p(&el.to_xml()).unwrap(), el);
    }

    /// The example of Exclusive C14N 1.0 section 2.2 and C14N behaviour on it.
    #[test]
    fn inclusive_and_exclusive_differ_as_the_specs_say() {
        let doc = p(r#"<n0:local xmlns:n0="foo:bar" xmlns:n3="ftp://example.org"><n1:elem2 xmlns:n1="http://example.net" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"/></n1:elem2></n0:local>"#).unwrap();
        let elem2 = doc.elements().next().unwrap();
        let scope = doc.scope_inside(&Scope::new());
        assert_eq!(
            canonicalize(elem2, &scope, C14n::Inclusive),
            r#"<n1:elem2 xmlns:n0="foo:bar" xmlns:n1="http://example.net" xmlns:n3="ftp://example.org" xml:lang="en"><n3:stuff></n3:stuff></n1:elem2>"#
        );
        assert_eq!(
            canonicalize(elem2, &scope, C14n::Exclusive),
            r#"<n1:elem2 xmlns:n1="http://example.net" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"></n3:stuff></n1:elem2>"#
        );
    }

    #[test]
    fn c14n_sorts_attributes_and_undeclares_the_default() {
        let doc = p(r#"<a xmlns="urn:a"><b z="1" y="2" xmlns=""><c/></b></a>"#).unwrap();
        assert_eq!(
            canonicalize(&doc, &Scope::new(), C14n::Inclusive),
            r#"<a xmlns="urn:a"><b xmlns="" y="2" z="1"><c></c></b></a>"#
        );
        let b = doc.elements().next().unwrap();
        assert_eq!(
            canonicalize(b, &doc.scope_inside(&Scope::new()), C14n::Exclusive),
            r#"<b y="2" z="1"><c></c></b>"#
        );
    }
}
