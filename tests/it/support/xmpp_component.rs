//! A small external component (XEP-0114) standing in for Jicofo's focus
//! component: it connects to a real [`Prosody`]'s component port, logs in
//! with the handshake, and answers XMPP pings (XEP-0199) and disco#info
//! queries sent to it with a result; any other `get`/`set` query gets
//! `service-unavailable`. Connected it is "focus up"; after
//! [`FocusComponent::disconnect`] Prosody 0.12 answers for it at once with
//! a `remote-server-timeout` error ("Component unavailable"): "focus
//! down", as while Jicofo is not running.
//!
//! ```ignore
//! let focus = FocusComponent::connect(&prosody).await;
//! // ... probes at depth focus succeed; focus.answered() counts them ...
//! focus.disconnect(&prosody).await;
//! ```
//!
//! XML is read with quick-xml's streaming reader (one stanza at a time,
//! built into a small [`Element`] tree), never by substring search.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::prosody::Prosody;

const STREAM_NS: &str = "http://etherx.jabber.org/streams";
const PING_NS: &str = "urn:xmpp:ping";
const DISCO_INFO_NS: &str = "http://jabber.org/protocol/disco#info";
const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// What Prosody's mod_component logs when a component's connection ends.
const DISCONNECTED: &str = "component disconnected";
/// Bound on connecting and the handshake, and on Prosody noticing a
/// disconnect.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

/// An XML element of a stanza: its qualified name, attributes (unescaped),
/// child elements and its own text (character data between its tags;
/// references to entities other than the five predefined ones are dropped).
#[derive(Debug, Clone, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child called `name` whose `xmlns` is `ns`.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name == name && c.attr("xmlns") == Some(ns))
    }

    fn from_start(start: &BytesStart<'_>) -> Result<Element, String> {
        let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
        let mut attrs = Vec::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| format!("attribute of <{name}>: {e}"))?;
            let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| format!("attribute {key} of <{name}>: {e}"))?;
            attrs.push((key, value.into_owned()));
        }
        Ok(Element {
            name,
            attrs,
            ..Element::default()
        })
    }
}

/// Parses a whole XML document (e.g. a BOSH `<body>`) into its root
/// element.
pub fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(xml);
    let mut open: Vec<Element> = Vec::new();
    loop {
        let done = match reader.read_event().map_err(|e| format!("XML: {e}"))? {
            Event::Start(start) => {
                open.push(Element::from_start(&start)?);
                None
            }
            Event::Empty(start) => Some(Element::from_start(&start)?),
            Event::End(_) => open.pop(),
            Event::Eof => return Err(format!("no complete element in {xml:?}")),
            event => {
                if let Some(parent) = open.last_mut() {
                    push_text(parent, &event);
                }
                None
            }
        };
        if let Some(element) = done {
            match open.last_mut() {
                Some(parent) => parent.children.push(element),
                None => return Ok(element),
            }
        }
    }
}

/// Appends the character data of `event` to `element`'s text.
fn push_text(element: &mut Element, event: &Event<'_>) {
    match event {
        Event::Text(text) => {
            if let Ok(text) = text.decode() {
                element.text.push_str(&text);
            }
        }
        Event::CData(data) => element.text.push_str(&String::from_utf8_lossy(data)),
        Event::GeneralRef(reference) => {
            if let Ok(Some(c)) = reference.resolve_char_ref() {
                element.text.push(c);
            } else if let Ok(name) = reference.decode() {
                if let Some(c) = quick_xml::escape::resolve_predefined_entity(&name) {
                    element.text.push_str(c);
                }
            }
        }
        _ => {}
    }
}

/// Reads one XML stream: its header, then one stanza at a time.
struct StreamReader {
    reader: Reader<BufReader<OwnedReadHalf>>,
    buf: Vec<u8>,
}

impl StreamReader {
    fn new(read: OwnedReadHalf) -> StreamReader {
        StreamReader {
            reader: Reader::from_reader(BufReader::new(read)),
            buf: Vec::new(),
        }
    }

    /// The `<stream:stream>` start tag (skipping the XML declaration).
    async fn header(&mut self) -> Result<Element, String> {
        loop {
            self.buf.clear();
            match self.reader.read_event_into_async(&mut self.buf).await {
                Ok(Event::Start(start)) => return Element::from_start(&start),
                Ok(Event::Decl(_) | Event::Text(_)) => continue,
                Ok(Event::Eof) => return Err("stream closed before its header".to_owned()),
                Ok(other) => return Err(format!("unexpected before the header: {other:?}")),
                Err(e) => return Err(format!("XML: {e}")),
            }
        }
    }

    /// The next top-level element of the stream; `None` when the stream
    /// ends (`</stream:stream>` or the connection closes).
    async fn stanza(&mut self) -> Result<Option<Element>, String> {
        let mut open: Vec<Element> = Vec::new();
        loop {
            self.buf.clear();
            let event = self
                .reader
                .read_event_into_async(&mut self.buf)
                .await
                .map_err(|e| format!("XML: {e}"))?;
            let done = match event {
                Event::Start(start) => {
                    open.push(Element::from_start(&start)?);
                    None
                }
                Event::Empty(start) => Some(Element::from_start(&start)?),
                Event::End(_) => match open.pop() {
                    Some(element) => Some(element),
                    None => return Ok(None),
                },
                Event::Eof => return Ok(None),
                event => {
                    if let Some(parent) = open.last_mut() {
                        push_text(parent, &event);
                    }
                    None
                }
            };
            if let Some(element) = done {
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => return Ok(Some(element)),
                }
            }
        }
    }
}

/// The focus component, connected to a Prosody.
pub struct FocusComponent {
    /// The component's JID, e.g. `focus.localhost`.
    pub jid: String,
    answered: Arc<AtomicU64>,
    write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    task: JoinHandle<()>,
}

impl FocusComponent {
    /// Connects to `prosody`'s component port as its declared component
    /// and completes the handshake; panics if Prosody refuses it.
    pub async fn connect(prosody: &Prosody) -> FocusComponent {
        let spec = prosody
            .spec
            .component
            .as_ref()
            .expect("a declared component");
        let port = prosody.component_port.expect("a component port");
        let connect = FocusComponent::login(port, &spec.name, &spec.secret);
        tokio::time::timeout(CONNECT_BOUND, connect)
            .await
            .unwrap_or_else(|_| Err("no handshake in time".to_owned()))
            .unwrap_or_else(|e| panic!("component {}: {e}\n{}", spec.name, prosody.log()))
    }

    async fn login(port: u16, jid: &str, secret: &str) -> Result<FocusComponent, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (read, mut write) = tcp.into_split();
        let mut reader = StreamReader::new(read);
        let open = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='{STREAM_NS}' to='{}'>",
            escape(jid)
        );
        send(&mut write, &open).await?;
        let header = reader.header().await?;
        let id = header.attr("id").ok_or("stream header without id")?;
        // XEP-0114 §3: hex SHA-1 of the stream id followed by the secret.
        let digest = ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            format!("{id}{secret}").as_bytes(),
        );
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        send(&mut write, &format!("<handshake>{hex}</handshake>")).await?;
        match reader.stanza().await? {
            Some(e) if e.name == "handshake" => {}
            Some(e) => return Err(format!("handshake refused: {e:?}")),
            None => return Err("stream closed at the handshake".to_owned()),
        }
        let answered = Arc::new(AtomicU64::new(0));
        let write = Arc::new(tokio::sync::Mutex::new(write));
        let task = tokio::spawn(serve(reader, write.clone(), answered.clone()));
        Ok(FocusComponent {
            jid: jid.to_owned(),
            answered,
            write,
            task,
        })
    }

    /// Pings and disco#info queries answered with a result so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Ends the stream and closes the connection (Jicofo stops); returns
    /// once `prosody` has logged the component as disconnected (bounded),
    /// so that the next stanza for it meets "focus down".
    pub async fn disconnect(self, prosody: &Prosody) {
        let before = prosody.log_lines(DISCONNECTED).len();
        {
            let mut write = self.write.lock().await;
            let _ = write.write_all(b"</stream:stream>").await;
            let _ = write.shutdown().await;
        }
        let deadline = tokio::time::Instant::now() + CONNECT_BOUND;
        while prosody.log_lines(DISCONNECTED).len() == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "prosody did not see {} go:\n{}",
                self.jid,
                prosody.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.task.abort();
    }
}

impl Drop for FocusComponent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn send(write: &mut OwnedWriteHalf, text: &str) -> Result<(), String> {
    write
        .write_all(text.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Answers stanzas until the stream ends.
async fn serve(
    mut reader: StreamReader,
    write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    answered: Arc<AtomicU64>,
) {
    while let Ok(Some(stanza)) = reader.stanza().await {
        let Some(reply) = reply_to(&stanza) else {
            continue;
        };
        if reply.starts_with("<iq type='result'") {
            answered.fetch_add(1, Ordering::SeqCst);
        }
        if send(&mut *write.lock().await, &reply).await.is_err() {
            return;
        }
    }
}

/// The answer to `stanza`, if it needs one: a result for a ping or a
/// disco#info query, `service-unavailable` for any other query.
fn reply_to(stanza: &Element) -> Option<String> {
    if stanza.name != "iq" || !matches!(stanza.attr("type"), Some("get" | "set")) {
        return None;
    }
    let head = |kind: &str| {
        format!(
            "type='{kind}' id='{}' from='{}' to='{}'",
            escape(stanza.attr("id").unwrap_or_default()),
            escape(stanza.attr("to").unwrap_or_default()),
            escape(stanza.attr("from").unwrap_or_default()),
        )
    };
    let get = stanza.attr("type") == Some("get");
    if get && stanza.child("ping", PING_NS).is_some() {
        return Some(format!("<iq {}/>", head("result")));
    }
    if get && stanza.child("query", DISCO_INFO_NS).is_some() {
        return Some(format!(
            "<iq {}><query xmlns='{DISCO_INFO_NS}'>\
             <identity category='component' type='generic' name='focus'/>\
             <feature var='{DISCO_INFO_NS}'/><feature var='{PING_NS}'/></query></iq>",
            head("result")
        ));
    }
    Some(format!(
        "<iq {}><error type='cancel'><service-unavailable xmlns='{STANZAS_NS}'/></error></iq>",
        head("error")
    ))
}
