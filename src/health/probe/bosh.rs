//! One BOSH session of a probe (XEP-0124 with XEP-0206), as far as a Jitsi
//! guest goes: open the session, log in anonymously, bind a resource, send
//! IQs, and end the session.
//!
//! Requests go one at a time over the probe's connection, each with the next
//! `rid`. Answers are parsed as XML ([`super::xml`]); stanzas are matched by
//! namespace, name and `id`, never by searching text.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use bytes::Bytes;
use http::{Method, StatusCode};

use super::client::Conn;
use super::xml::{self, ns, Element};

/// Empty answers tolerated while waiting for one stanza: the server holds a
/// request at most `wait` seconds, and the probe's timeout bounds it anyway.
const MAX_POLLS: u32 = 8;

/// Why a BOSH step failed: the text of a probe error, without the step.
pub type Failure = String;

/// An open BOSH session.
pub struct Session {
    /// The BOSH URL (`…/http-bind`).
    url: String,
    /// The domain the session was opened to.
    domain: String,
    /// The session id the server gave.
    sid: String,
    /// The `rid` of the last request.
    rid: u64,
    /// Tells this session's stanza ids apart from any other's.
    id_prefix: String,
    /// Stanza ids handed out so far.
    ids: u32,
    /// The stream features of the latest stream start.
    features: Element,
}

impl Session {
    /// Opens a session to `domain` at `url`. The error is a sentence fit for
    /// the status page, with a hint where the server's answer allows one.
    pub async fn open(conn: &mut Conn<'_>, url: &str, domain: &str) -> Result<Session, Failure> {
        let rid = random_rid();
        // `wait` is short because a healthy server answers at once; `hold`
        // of 1 since requests go one at a time.
        let create = format!(
            "<body rid='{rid}' to='{}' xml:lang='en' wait='10' hold='1' \
             content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' \
             xmlns:xmpp='urn:xmpp:xbosh' xmlns='{}'/>",
            xml::escape(domain),
            ns::HTTPBIND
        );
        let (status, answer) = post(conn, url, create).await?;
        if status != StatusCode::OK {
            return Err(format!("BOSH answered {}", status.as_u16()));
        }
        let body = match xml::parse(&answer) {
            Ok(body) if body.is(ns::HTTPBIND, "body") => body,
            // Not XML, or XML that is not BOSH, such as an XHTML page.
            _ => {
                return Err(
                    "BOSH answered 200 with something else than XMPP (maintenance page?)"
                        .to_owned(),
                )
            }
        };
        if body.attr("type") == Some("terminate") {
            return Err(refusal(&body));
        }
        let (Some(sid), Some(features)) = (body.attr("sid"), body.child(ns::STREAMS, "features"))
        else {
            return Err("BOSH answered without <stream:features>".to_owned());
        };
        Ok(Session {
            url: url.to_owned(),
            domain: domain.to_owned(),
            sid: sid.to_owned(),
            rid,
            id_prefix: format!("rg{:x}", random_rid() & 0xffff_ffff),
            ids: 0,
            features: features.clone(),
        })
    }

    /// Logs in as a guest does: SASL ANONYMOUS, a stream restart, then
    /// resource binding (RFC 6120 §6 and §7, over BOSH as XEP-0206 §5).
    pub async fn login_anonymous(&mut self, conn: &mut Conn<'_>) -> Result<(), Failure> {
        let offered = self
            .features
            .child(ns::SASL, "mechanisms")
            .is_some_and(|m| {
                m.children_named(ns::SASL, "mechanism")
                    .any(|m| m.text.trim() == "ANONYMOUS")
            });
        // Asked even when not offered, so that a refusal is the server's own
        // condition; the hint says what is likely wrong.
        let auth = format!("<auth xmlns='{}' mechanism='ANONYMOUS'/>", ns::SASL);
        let answer = self
            .exchange(conn, &auth, |e| {
                e.is(ns::SASL, "success") || e.is(ns::SASL, "failure")
            })
            .await?;
        if answer.name == "failure" {
            let condition = answer
                .children
                .iter()
                .find(|c| c.name != "text")
                .map_or("failure", |c| c.name.as_str());
            return Err(if offered {
                condition.to_owned()
            } else {
                format!(
                    "{condition} ({} offers no anonymous login: set guest_domain to where guests log in)",
                    self.domain
                )
            });
        }

        // XEP-0206 §5: the stream restart is a request of its own.
        let restart = format!(
            "<body rid='{}' sid='{}' to='{}' xml:lang='en' xmpp:restart='true' \
             xmlns:xmpp='urn:xmpp:xbosh' xmlns='{}'/>",
            self.next_rid(),
            xml::escape(&self.sid),
            xml::escape(&self.domain),
            ns::HTTPBIND
        );
        let features = self
            .wait_for(conn, Some(restart), |e| e.is(ns::STREAMS, "features"))
            .await?;
        if features.child(ns::BIND, "bind").is_none() {
            return Err("no resource binding offered after login".to_owned());
        }
        self.features = features;

        let id = self.next_id();
        let bind = format!(
            "<iq type='set' id='{id}' xmlns='{}'><bind xmlns='{}'/></iq>",
            ns::CLIENT,
            ns::BIND
        );
        let result = self
            .iq_exchange(conn, &id, &bind)
            .await
            .map_err(|c| format!("bind: {c}"))?;
        if result.child(ns::BIND, "bind").is_none() {
            return Err("bind: the answer has no address".to_owned());
        }
        Ok(())
    }

    /// Sends an IQ of `type` get to `to` with `payload` inside, and returns
    /// its result; an error answer fails with its condition.
    pub async fn iq_get(
        &mut self,
        conn: &mut Conn<'_>,
        to: &str,
        payload: &str,
    ) -> Result<Element, Failure> {
        let id = self.next_id();
        let iq = format!(
            "<iq type='get' to='{}' id='{id}' xmlns='{}'>{payload}</iq>",
            xml::escape(to),
            ns::CLIENT
        );
        self.iq_exchange(conn, &id, &iq).await
    }

    /// Ends the session (XEP-0124 §12). The body is empty: stanzas such as
    /// an unavailable presence are for a logged-in session, and a server
    /// answers them with an error in one that is not.
    pub async fn terminate(mut self, conn: &mut Conn<'_>) -> Result<(), Failure> {
        let end = format!(
            "<body rid='{}' sid='{}' type='terminate' xmlns='{}'/>",
            self.next_rid(),
            xml::escape(&self.sid),
            ns::HTTPBIND
        );
        let (status, _) = post(conn, &self.url, end).await?;
        if status != StatusCode::OK {
            return Err(format!(
                "BOSH answered {} to the terminate",
                status.as_u16()
            ));
        }
        Ok(())
    }

    /// Sends the IQ `iq` and waits for the answer with `id`.
    async fn iq_exchange(
        &mut self,
        conn: &mut Conn<'_>,
        id: &str,
        iq: &str,
    ) -> Result<Element, Failure> {
        let answer = self
            .exchange(conn, iq, |e| {
                e.is(ns::CLIENT, "iq") && e.attr("id") == Some(id)
            })
            .await?;
        match answer.attr("type") {
            Some("result") => Ok(answer),
            Some("error") => Err(answer.error_condition().unwrap_or("error").to_owned()),
            other => Err(format!(
                "an IQ answer of type {}",
                other.unwrap_or("(none)")
            )),
        }
    }

    /// Sends `stanza` in a body of its own and waits for the stanza that
    /// `wanted` picks.
    async fn exchange(
        &mut self,
        conn: &mut Conn<'_>,
        stanza: &str,
        wanted: impl Fn(&Element) -> bool,
    ) -> Result<Element, Failure> {
        let body = self.body(stanza);
        self.wait_for(conn, Some(body), wanted).await
    }

    /// Sends `first` (or an empty body), then empty bodies while the answers
    /// bring nothing that `wanted` picks. Other stanzas are let go: a probe
    /// acts on nothing it did not ask for.
    async fn wait_for(
        &mut self,
        conn: &mut Conn<'_>,
        first: Option<String>,
        wanted: impl Fn(&Element) -> bool,
    ) -> Result<Element, Failure> {
        let mut next = first;
        for _ in 0..MAX_POLLS {
            let body = match next.take() {
                Some(body) => body,
                None => self.body(""),
            };
            let (status, answer) = post(conn, &self.url, body).await?;
            if status != StatusCode::OK {
                return Err(format!("BOSH answered {}", status.as_u16()));
            }
            let answer = xml::parse(&answer).map_err(|e| format!("BOSH answer: {e}"))?;
            if !answer.is(ns::HTTPBIND, "body") {
                return Err("BOSH answered with XML that is not BOSH".to_owned());
            }
            if answer.attr("type") == Some("terminate") {
                return Err(format!(
                    "the server ended the session ({})",
                    answer.attr("condition").unwrap_or("no condition given")
                ));
            }
            if let Some(found) = answer.children.into_iter().find(|e| wanted(e)) {
                return Ok(found);
            }
        }
        Err(format!("no answer after {MAX_POLLS} requests"))
    }

    /// A request body with the next `rid`, carrying `payload`.
    fn body(&mut self, payload: &str) -> String {
        format!(
            "<body rid='{}' sid='{}' xmlns='{}'>{payload}</body>",
            self.next_rid(),
            xml::escape(&self.sid),
            ns::HTTPBIND
        )
    }

    fn next_rid(&mut self) -> u64 {
        self.rid += 1;
        self.rid
    }

    fn next_id(&mut self) -> String {
        self.ids += 1;
        format!("{}-{}", self.id_prefix, self.ids)
    }
}

/// POSTs one request body; a failure is the connection's.
async fn post(
    conn: &mut Conn<'_>,
    url: &str,
    body: String,
) -> Result<(StatusCode, Bytes), Failure> {
    conn.send(Method::POST, url, Some(body))
        .await
        .map_err(|e| e.into_string())
}

/// Says why the server refused to open a session.
fn refusal(body: &Element) -> Failure {
    match body.attr("condition") {
        // Prosody does not serve the domain we asked for: 0.12 says
        // improper-addressing, other servers and older Prosody host-unknown.
        Some(c @ ("host-unknown" | "improper-addressing")) => {
            format!("BOSH refused the session: {c} (is xmpp_domain right?)")
        }
        Some(condition) => format!("BOSH refused the session: {condition}"),
        None => "BOSH refused the session without a condition".to_owned(),
    }
}

/// A BOSH request id: random, below 2^53 as XEP-0124 §5 asks, and far enough
/// below that increments never reach it.
fn random_rid() -> u64 {
    // RandomState is seeded from the OS; hashing nothing gives a fresh
    // random number without another dependency.
    RandomState::new().hash_one(()) >> 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_named_with_a_hint_for_the_domain() {
        for condition in ["host-unknown", "improper-addressing"] {
            let body = xml::parse(
                format!("<body type='terminate' condition='{condition}' xmlns='http://jabber.org/protocol/httpbind'/>").as_bytes(),
            )
            .unwrap();
            let text = refusal(&body);
            assert!(text.contains(condition), "{text}");
            assert!(text.contains("is xmpp_domain right?"), "{text}");
        }
        let other = xml::parse(b"<body type='terminate' condition='remote-stream-error' xmlns='http://jabber.org/protocol/httpbind'/>").unwrap();
        assert_eq!(
            refusal(&other),
            "BOSH refused the session: remote-stream-error"
        );
    }

    #[test]
    fn rids_are_below_two_to_the_53() {
        for _ in 0..100 {
            assert!(random_rid() < (1 << 53) - 1000);
        }
    }
}
