//! A minimal BOSH client (XEP-0124/XEP-0206) in test code, to check the
//! Prosody harness independently of roomgate: session, SASL ANONYMOUS,
//! stream restart, resource bind, one IQ, terminate. Every answer is
//! parsed with quick-xml (`xmpp_component::parse`).
//!
//! [`MucClient`] builds on it: a guest that joins a MUC room as an
//! occupant (XEP-0045 §7.2), may hide the room as its owner, and then
//! stays in it ([`Occupant`], polling so that BOSH's 60 s inactivity
//! timeout never ends it) until it leaves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::xmpp_component::{parse, Element};
use super::Req;

const BOSH_NS: &str = "http://jabber.org/protocol/httpbind";
const SASL_NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const MUC_NS: &str = "http://jabber.org/protocol/muc";
const MUC_USER_NS: &str = "http://jabber.org/protocol/muc#user";
const MUC_OWNER_NS: &str = "http://jabber.org/protocol/muc#owner";
const DATA_NS: &str = "jabber:x:data";

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

/// What a guest of its own learns about `room` (`room@muc_domain`) from
/// a disco#info (XEP-0045 §6.4): the room's `muc#roominfo_occupants`, or
/// the error condition (`item-not-found` for no such room).
pub async fn room_info(url: &str, domain: &str, room: &str) -> String {
    let mut guest = BoshClient::open(url, domain).await;
    guest.login(domain).await.expect("guest login");
    let query = format!(
        "<iq type='get' to='{room}' id='info1' xmlns='jabber:client'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    );
    let iq = guest.iq("info1", &query).await;
    guest.terminate().await;
    let said = if let Some(error) = iq.children.iter().find(|c| c.name == "error") {
        error.children.first().map(|c| c.name.clone())
    } else {
        iq.child("query", "http://jabber.org/protocol/disco#info")
            .and_then(|q| q.child("x", DATA_NS))
            .and_then(|x| {
                x.children
                    .iter()
                    .find(|f| f.attr("var") == Some("muc#roominfo_occupants"))
            })
            .and_then(|f| f.children.first())
            .map(|v| v.text.clone())
    };
    said.unwrap_or_else(|| format!("{iq:?}"))
}

/// A logged-in guest in a MUC room (XEP-0045), still in the hands of the
/// test: [`MucClient::hide`] it, then [`MucClient::stay`].
pub struct MucClient {
    bosh: BoshClient,
    /// `room@muc/nick`.
    occupant_jid: String,
}

impl MucClient {
    /// Opens a BOSH session at `url` for `domain`, logs in as a guest and
    /// joins `room` (`room@muc_domain`) as `nick`; returns once the room
    /// sent the self-presence (status code 110), bounded.
    pub async fn join(url: &str, domain: &str, room: &str, nick: &str) -> MucClient {
        let mut bosh = BoshClient::open(url, domain).await;
        bosh.login(domain)
            .await
            .unwrap_or_else(|e| panic!("{nick}: guest login failed: {e}"));
        let occupant_jid = format!("{room}/{nick}");
        let join = format!(
            "<presence to='{occupant_jid}' xmlns='jabber:client'><x xmlns='{MUC_NS}'/></presence>"
        );
        let mut answer = bosh.send("", &join).await;
        for _ in 0..10 {
            let joined = answer.children.iter().any(|p| {
                p.name == "presence"
                    && p.attr("from") == Some(occupant_jid.as_str())
                    && p.attr("type").is_none()
                    && p.child("x", MUC_USER_NS).is_some_and(|x| {
                        x.children
                            .iter()
                            .any(|c| c.name == "status" && c.attr("code") == Some("110"))
                    })
            });
            if joined {
                return MucClient { bosh, occupant_jid };
            }
            if let Some(error) = answer
                .children
                .iter()
                .find(|p| p.name == "presence" && p.attr("type") == Some("error"))
            {
                panic!("{nick} could not join {room}: {error:?}");
            }
            answer = bosh.send("", "").await;
        }
        panic!("{nick}: no self-presence from {room}");
    }

    /// As the room's owner (its first occupant), submits the room's config
    /// form with `muc#roomconfig_publicroom` false: a hidden room.
    pub async fn hide(&mut self) {
        let room = self.occupant_jid.split('/').next().expect("room");
        let form = format!(
            "<iq type='set' to='{room}' id='hide1' xmlns='jabber:client'>\
             <query xmlns='{MUC_OWNER_NS}'><x xmlns='{DATA_NS}' type='submit'>\
             <field var='FORM_TYPE'><value>{MUC_NS}#roomconfig</value></field>\
             <field var='muc#roomconfig_publicroom'><value>0</value></field>\
             </x></query></iq>"
        );
        let answer = self.bosh.iq("hide1", &form).await;
        assert_eq!(
            answer.attr("type"),
            Some("result"),
            "hide {room}: {answer:?}"
        );
    }

    /// Stays in the room: a task polls the session (each poll is held up
    /// to BOSH's `wait` of 2 s) until [`Occupant::leave`].
    pub fn stay(self) -> Occupant {
        let leaving = Arc::new(AtomicBool::new(false));
        let flag = leaving.clone();
        let mut client = self;
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                client.bosh.send("", "").await;
            }
            let leave = format!(
                "<presence to='{}' type='unavailable' xmlns='jabber:client'/>",
                client.occupant_jid
            );
            client.bosh.send("", &leave).await;
            client.bosh.terminate().await;
        });
        Occupant {
            leaving,
            task: Some(task),
        }
    }
}

/// An occupant that stays in its room until it leaves (or the test ends).
pub struct Occupant {
    leaving: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Occupant {
    /// Joins and stays: [`MucClient::join`] then [`MucClient::stay`].
    pub async fn join(url: &str, domain: &str, room: &str, nick: &str) -> Occupant {
        MucClient::join(url, domain, room, nick).await.stay()
    }

    /// Leaves the room (an unavailable presence) and ends the session;
    /// returns once both were sent (bounded by the poll under way).
    pub async fn leave(mut self) {
        self.leaving.store(true, Ordering::SeqCst);
        let task = self.task.take().expect("occupant task");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the occupant leaves within 10 s")
            .expect("the occupant's task");
    }
}

impl Drop for Occupant {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
