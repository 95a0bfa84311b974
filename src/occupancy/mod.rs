//! Who is in the room: how many people each room has on the servers whose
//! `occupancy` is on. Only counts are ever fetched, kept or shown: never
//! names, nicks or JIDs.
//!
//! One poller per such server ([`poller`]) asks the server once per
//! `occupancy.interval` about every room it holds, through an
//! [`OccupancySource`] (one guest session for all rooms), and publishes the
//! counts in the one place every reader looks. Readers (the status page,
//! `/status.json`, link previews, `/metrics`) never start a query, and a
//! count older than three intervals reads as unknown.
//!
//! Which server's count a room shows is the caller's choice: the server the
//! room redirects to right now (see `gateway.rs`).

mod poller;
#[cfg(test)]
mod tests;
mod xmpp;

pub use poller::{OccupancyHandle, Seen};

use std::future::Future;

use crate::config::{Config, Server};
use crate::health::ProbeError;

/// What a server says about one room's occupants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// The room's `muc#roominfo_occupants`: everyone in it, the focus
    /// (Jicofo) included.
    Known(u32),
    /// No such room (`item-not-found`): Jitsi destroys a room when the
    /// last one leaves, so nobody is there.
    Empty,
    /// A hidden room (not `muc#roomconfig_publicroom`): its count is not
    /// shown, as for [`Occupancy::Unknown`], and the log says why once.
    Hidden,
    /// The server does not say (`forbidden`, no occupants field, no
    /// answer): never read as 0.
    Unknown,
}

/// Asks a server how many occupants its rooms have. The poller is generic
/// over it, so that its timing can be tested with a scripted source and a
/// paused clock.
pub trait OccupancySource: Send + Sync + 'static {
    /// One query about `rooms` (room local parts on this server,
    /// lowercased, each once): one entry per room, in the same order. An
    /// error means the query as a whole failed (no session, no login); a
    /// room the server would not tell about is [`Occupancy::Unknown`].
    fn occupants(
        &self,
        rooms: &[String],
    ) -> impl Future<Output = Result<Vec<Occupancy>, ProbeError>> + Send;
}

/// The source that counts the occupants of `server`'s rooms: a guest
/// session over the server's BOSH ([`xmpp`]); `None` when its occupancy is
/// off.
pub(crate) fn source_for(server: &Server) -> Option<impl OccupancySource> {
    xmpp::XmppSource::new(server)
}

/// The people in a room from what its server said: occupants minus
/// `exclude` (the focus and other occupants that are not people), only for
/// a room with occupants, and never below 0; `None` when unknown.
pub fn people(occupancy: Occupancy, exclude: u32) -> Option<u32> {
    match occupancy {
        Occupancy::Known(0) | Occupancy::Empty => Some(0),
        Occupancy::Known(n) => Some(n.saturating_sub(exclude)),
        Occupancy::Hidden | Occupancy::Unknown => None,
    }
}

/// The rooms `server` (an index into `config.servers`) is asked about:
/// every listed room that has the server among its own, by its name there
/// (a rename applied), lowercased as Jitsi does, each once, in file order.
/// Unlisted rooms are not counted: no page shows them.
pub fn rooms_on(config: &Config, server: usize) -> Vec<String> {
    let mut rooms: Vec<String> = Vec::new();
    for target in config.rooms.iter().flat_map(|r| &r.targets) {
        let room = target.room.to_ascii_lowercase();
        if target.server == server && !rooms.contains(&room) {
            rooms.push(room);
        }
    }
    rooms
}
