//! The real [`OccupancySource`]: one guest session on the server per query
//! (as the `login` check depth logs in), a disco#info (XEP-0045 §6.4) to
//! each room at `<room>@<muc_domain>`, reading `muc#roominfo_occupants`
//! from the room's info form, and the session ended.
//!
//! Only the count is read; the answer carries no names, and none are asked.

use super::{Occupancy, OccupancySource};
use crate::config::Server;
use crate::health::xml::Element;
use crate::health::{ProbeError, ServerProbe};

/// Service discovery, info (XEP-0030).
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Data forms (XEP-0004).
const DATA: &str = "jabber:x:data";
/// The field of a room's info form with its number of occupants.
const OCCUPANTS_FIELD: &str = "muc#roominfo_occupants";

/// Counts occupants through the server's BOSH, with the check's settings
/// (URL, TLS roots, domains, timeout).
pub struct XmppSource {
    /// Connects and logs in as the server's check does.
    probe: ServerProbe,
    /// Where rooms live.
    muc_domain: String,
}

impl XmppSource {
    /// The source for `server`, `None` when its occupancy is off.
    pub fn new(server: &Server) -> Option<XmppSource> {
        let occupancy = server.occupancy.as_ref()?;
        Some(XmppSource {
            probe: ServerProbe::new(server),
            muc_domain: occupancy.muc_domain.clone(),
        })
    }
}

impl OccupancySource for XmppSource {
    async fn occupants(&self, rooms: &[String]) -> Result<Vec<Occupancy>, ProbeError> {
        let query = format!("<query xmlns='{DISCO_INFO}'/>");
        let iqs: Vec<(String, String)> = rooms
            .iter()
            .map(|room| (format!("{room}@{}", self.muc_domain), query.clone()))
            .collect();
        let answers = self.probe.guest_queries(&iqs).await?;
        Ok(answers.iter().map(read).collect())
    }
}

/// What one disco#info answer says about a room.
fn read(answer: &Result<Element, String>) -> Occupancy {
    let iq = match answer {
        Ok(iq) => iq,
        // Jitsi destroys a room when the last one leaves.
        Err(condition) if condition == "item-not-found" => return Occupancy::Empty,
        // forbidden, not-authorized, no answer: the server does not say.
        Err(_) => return Occupancy::Unknown,
    };
    let Some(info) = iq.child(DISCO_INFO, "query") else {
        return Occupancy::Unknown;
    };
    // A hidden room (`muc#roomconfig_publicroom` false) is one its owner
    // does not want listed: its count is not ours to show.
    let hidden = info
        .children_named(DISCO_INFO, "feature")
        .any(|f| f.attr("var") == Some("muc_hidden"));
    if hidden {
        return Occupancy::Hidden;
    }
    info.children_named(DATA, "x")
        .filter(|form| form.attr("type") == Some("result"))
        .flat_map(|form| form.children_named(DATA, "field"))
        .find(|field| field.attr("var") == Some(OCCUPANTS_FIELD))
        .and_then(|field| field.child(DATA, "value"))
        .and_then(|value| value.text.trim().parse::<u32>().ok())
        .map_or(Occupancy::Unknown, Occupancy::Known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::xml::{self, ns};

    fn answer(xml: &str) -> Result<Element, String> {
        Ok(xml::parse(xml.as_bytes()).unwrap())
    }

    /// A room's disco#info result as Prosody 0.12 sends it, with `features`
    /// and `occupants` as given.
    fn info(features: &str, occupants: &str) -> String {
        format!(
            "<iq type='result' id='x' xmlns='{}'><query xmlns='{DISCO_INFO}'>\
             <identity category='conference' type='text' name='lounge'/>{features}\
             <x type='result' xmlns='{DATA}'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roominfo</value></field>\
             {occupants}</x></query></iq>",
            ns::CLIENT
        )
    }

    #[test]
    fn reads_the_count_and_only_the_count() {
        let field = "<field var='muc#roominfo_occupants' label='Number of occupants'><value>4</value></field>";
        let public = "<feature var='muc_public'/>";
        assert_eq!(read(&answer(&info(public, field))), Occupancy::Known(4));
        // Hidden rooms, forms without the field or with nonsense in it, and
        // refusals are unknown, never 0.
        let hidden = "<feature var='muc_hidden'/>";
        assert_eq!(read(&answer(&info(hidden, field))), Occupancy::Hidden);
        assert_eq!(read(&answer(&info(public, ""))), Occupancy::Unknown);
        let nonsense = field.replace(">4<", ">-1<");
        assert_eq!(read(&answer(&info(public, &nonsense))), Occupancy::Unknown);
        assert_eq!(read(&Err("forbidden".into())), Occupancy::Unknown);
        assert_eq!(
            read(&Err("no answer after 8 requests".into())),
            Occupancy::Unknown
        );
        // No such room: nobody is there.
        assert_eq!(read(&Err("item-not-found".into())), Occupancy::Empty);
    }
}
