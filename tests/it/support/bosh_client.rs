//! A minimal BOSH client (XEP-0124/XEP-0206) in test code, to check the
//! Prosody harness independently of roomgate: session, SASL ANONYMOUS,
//! stream restart, resource bind, one IQ, terminate. Every answer is
//! parsed with quick-xml (`xmpp_component::parse`).

use std::time::Duration;

use super::xmpp_component::{parse, Element};
use super::Req;

const BOSH_NS: &str = "http://jabber.org/protocol/httpbind";
const SASL_NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";

/// One BOSH session at `url` (`.../http-bind`).
pub struct BoshClient {
    url: String,
    sid: String,
    rid: u64,
    /// The stream features of the latest (re)start.
    pub features: Element,
}

impl BoshClient {
    /// Opens a session for `domain`; panics unless it gets stream features.
    pub async fn open(url: &str, domain: &str) -> BoshClient {
        let rid = 1_000_000;
        let body = post(
            url,
            &format!(
                "<body rid='{rid}' to='{domain}' xml:lang='en' wait='2' hold='1' ver='1.6' \
                 xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh' xmlns='{BOSH_NS}'/>"
            ),
        )
        .await;
        let sid = body.attr("sid").expect("a session id").to_owned();
        let features = body
            .children
            .into_iter()
            .find(|c| c.name == "stream:features")
            .expect("stream features");
        BoshClient {
            url: url.to_owned(),
            sid,
            rid,
            features,
        }
    }

    /// Sends `payload` (stanzas, may be empty) in the next `<body>` with
    /// `extra` attributes; returns the answer's `<body>`.
    pub async fn send(&mut self, extra: &str, payload: &str) -> Element {
        self.rid += 1;
        let body = format!(
            "<body rid='{}' sid='{}' {extra} xmlns='{BOSH_NS}'>{payload}</body>",
            self.rid, self.sid
        );
        post(&self.url, &body).await
    }

    /// SASL ANONYMOUS, stream restart and resource bind, as a Jitsi guest
    /// logs in; the bound JID, or `Err` with the SASL failure's condition.
    pub async fn login(&mut self, domain: &str) -> Result<String, String> {
        let auth = format!("<auth xmlns='{SASL_NS}' mechanism='ANONYMOUS'/>");
        let answer = self.send("", &auth).await;
        match answer.children.first() {
            Some(e) if e.name == "success" => {}
            Some(e) if e.name == "failure" => {
                let condition = e.children.first().map(|c| c.name.clone());
                return Err(condition.unwrap_or_else(|| "failure".to_owned()));
            }
            other => return Err(format!("unexpected SASL answer: {other:?}")),
        }
        let restart =
            format!("to='{domain}' xml:lang='en' xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'");
        let answer = self.send(&restart, "").await;
        self.features = answer.children.into_iter().next().expect("features");
        let bind = format!(
            "<iq type='set' id='bind1' xmlns='jabber:client'><bind xmlns='{BIND_NS}'/></iq>"
        );
        let iq = self.iq("bind1", &bind).await;
        let jid = iq
            .child("bind", BIND_NS)
            .and_then(|b| b.children.iter().find(|c| c.name == "jid"))
            .map(|jid| jid.text.clone());
        jid.ok_or_else(|| format!("bind failed: {iq:?}"))
    }

    /// Sends the IQ `stanza` (with id `id`) and polls until its answer
    /// comes (bounded).
    pub async fn iq(&mut self, id: &str, stanza: &str) -> Element {
        let mut answer = self.send("", stanza).await;
        for _ in 0..5 {
            if let Some(iq) = answer
                .children
                .iter()
                .find(|c| c.name == "iq" && c.attr("id") == Some(id))
            {
                return iq.clone();
            }
            answer = self.send("", "").await;
        }
        panic!("no answer to IQ {id}");
    }

    /// Ends the session.
    pub async fn terminate(mut self) {
        self.send("type='terminate'", "").await;
    }
}

async fn post(url: &str, body: &str) -> Element {
    let resp = Req::post(url, body)
        .header("content-type", "text/xml; charset=utf-8")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("BOSH {url}: {e}"));
    assert_eq!(resp.status, 200, "BOSH {url}: {}", resp.body);
    parse(&resp.body).unwrap_or_else(|e| panic!("BOSH answer {:?}: {e}", resp.body))
}
