//! The XML of BOSH answers, read with quick-xml into a small tree.
//!
//! A BOSH answer is one `<body/>` wrapping whole stanzas (XEP-0124 §4), so
//! reading it whole into a tree is simple and bounded: the answer is at most
//! the probe's body limit, and nesting deeper than [`MAX_DEPTH`] is refused.
//! Names are compared by namespace and local name, as XMPP means them, never
//! by prefix or substring.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::XmlVersion;

/// Deepest nesting accepted; stanzas in BOSH answers are a few levels deep.
const MAX_DEPTH: usize = 32;

/// Namespaces used by the probes.
pub mod ns {
    /// BOSH's `<body/>` (XEP-0124).
    pub const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
    /// `<stream:features/>`.
    pub const STREAMS: &str = "http://etherx.jabber.org/streams";
    /// SASL (RFC 6120 §6).
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    /// Resource binding (RFC 6120 §7).
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    /// Stanza error conditions (RFC 6120 §8.3.3).
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    /// Stanzas of a client session.
    pub const CLIENT: &str = "jabber:client";
    /// XMPP ping (XEP-0199).
    pub const PING: &str = "urn:xmpp:ping";
}

/// An element: its namespace, local name, attributes, children and text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI; empty when unbound.
    pub ns: String,
    /// Local name, without prefix.
    pub name: String,
    /// Attributes by qualified name as written (`type`, `xmpp:restart`).
    pub attrs: Vec<(String, String)>,
    /// Child elements in order.
    pub children: Vec<Element>,
    /// Text content directly inside, entities resolved.
    pub text: String,
}

impl Element {
    /// The value of attribute `name` (qualified as written).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child `{ns}name`.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The defined condition of an XMPP `<error/>` child (RFC 6120 §8.3),
    /// e.g. `service-unavailable`, or `None` without one.
    pub fn error_condition(&self) -> Option<&str> {
        let error = self.children.iter().find(|c| c.name == "error")?;
        error
            .children
            .iter()
            .find(|c| c.ns == ns::STANZAS && c.name != "text")
            .map(|c| c.name.as_str())
    }
}

/// Parses `xml`, one document, into its root element.
pub fn parse(xml: &[u8]) -> Result<Element, String> {
    let mut reader = NsReader::from_reader(xml);
    // `<a/>` and `<a></a>` are the same element.
    reader.config_mut().expand_empty_elements = true;
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("not well-formed XML: {e}"))?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(prefix) => {
                return Err(format!(
                    "not well-formed XML: unknown prefix `{}`",
                    String::from_utf8_lossy(&prefix)
                ))
            }
        };
        match event {
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("XML nested deeper than {MAX_DEPTH} levels"));
                }
                stack.push(element(ns, &start)?);
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("not well-formed XML: stray end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(text) => {
                if let Some(open) = stack.last_mut() {
                    let text = text
                        .xml10_content()
                        .map_err(|e| format!("not well-formed XML: {e}"))?;
                    open.text.push_str(&text);
                }
            }
            Event::CData(data) => {
                if let Some(open) = stack.last_mut() {
                    let data = data
                        .xml10_content()
                        .map_err(|e| format!("not well-formed XML: {e}"))?;
                    open.text.push_str(&data);
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(open) = stack.last_mut() {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = reference
                                .decode()
                                .map_err(|e| format!("not well-formed XML: {e}"))?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| format!("unknown entity `&{name};`"))?
                                .to_owned()
                        }
                        Err(e) => return Err(format!("not well-formed XML: {e}")),
                    };
                    open.text.push_str(&resolved);
                }
            }
            Event::Eof => return Err("not well-formed XML: it ends early".to_owned()),
            // Declarations, comments, processing instructions: nothing to keep.
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            // Expanded into Start and End by the config above.
            Event::Empty(_) => {}
        }
    }
}

/// A new element from its start tag.
fn element(ns: String, start: &BytesStart<'_>) -> Result<Element, String> {
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("not well-formed XML: {e}"))?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| format!("not well-formed XML: {e}"))?;
        attrs.push((
            String::from_utf8_lossy(attr.key.as_ref()).into_owned(),
            value.into_owned(),
        ));
    }
    Ok(Element {
        ns,
        name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// `text` escaped for an attribute value or element text.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_bosh_answer_by_namespace() {
        let body = br#"<body xmlns='http://jabber.org/protocol/httpbind' sid="s-1" xmlns:stream='http://etherx.jabber.org/streams'>
            <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>ANONYMOUS</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>
        </body>"#;
        let root = parse(body).unwrap();
        assert!(root.is(ns::HTTPBIND, "body"));
        assert_eq!(root.attr("sid"), Some("s-1"));
        let features = root.child(ns::STREAMS, "features").unwrap();
        let mechanisms: Vec<_> = features
            .child(ns::SASL, "mechanisms")
            .unwrap()
            .children_named(ns::SASL, "mechanism")
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(mechanisms, ["ANONYMOUS", "PLAIN"]);
        // The prefix alone does not make a name: wrong namespace, no match.
        let fake = parse(b"<body xmlns='http://jabber.org/protocol/httpbind' xmlns:stream='x'><stream:features/></body>").unwrap();
        assert!(fake.child(ns::STREAMS, "features").is_none());
    }

    #[test]
    fn entities_and_errors() {
        let iq = parse(b"<iq xmlns='jabber:client' type='error' id='a&amp;b'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>x &lt; y &#x263A;</text></error></iq>").unwrap();
        assert_eq!(iq.attr("id"), Some("a&b"));
        assert_eq!(iq.error_condition(), Some("service-unavailable"));
        let text = &iq.children[0].children[1].text;
        assert_eq!(text, "x < y \u{263a}");
    }

    #[test]
    fn refuses_what_is_not_one_well_formed_document() {
        for bad in [
            &b"<body>"[..],
            b"<a></b>",
            b"",
            b"<p:a/>",
            b"<a>&bogus;</a>",
            b"<html>Wartung",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
    }
}
