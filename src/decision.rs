//! Which server a room goes to right now: a pure function of the servers'
//! states, in the room's preference order. Redirects, the status page and
//! `/status.json` all decide through [`choose`].

use crate::config::WhenAllDown;
use crate::health::State;

/// The outcome of [`choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Redirect to the target at this index of the room's list.
    Target(usize),
    /// Every server is down and the policy is `page`: answer 503 with links.
    AllDownPage,
}

/// Picks the first server that is up; failing that, the first whose state is
/// unknown (it may well be up, and a down one certainly is not); failing
/// that, `when_all_down` decides. `states` is in the room's preference order.
pub fn choose(states: impl IntoIterator<Item = State>, when_all_down: WhenAllDown) -> Choice {
    let mut first_unknown = None;
    let mut any = false;
    for (i, state) in states.into_iter().enumerate() {
        any = true;
        match state {
            State::Up => return Choice::Target(i),
            State::Unknown if first_unknown.is_none() => first_unknown = Some(i),
            _ => {}
        }
    }
    match (first_unknown, when_all_down) {
        (Some(i), _) => Choice::Target(i),
        // A room always has a server (config validation); an empty list
        // still must not become an index.
        (None, WhenAllDown::First) if any => Choice::Target(0),
        (None, _) => Choice::AllDownPage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;
    use WhenAllDown::*;

    #[test]
    fn every_combination_of_two_servers() {
        let cases = [
            ([Up, Up], First, Choice::Target(0)),
            ([Up, Down], First, Choice::Target(0)),
            ([Up, Unknown], First, Choice::Target(0)),
            ([Down, Up], First, Choice::Target(1)),
            ([Unknown, Up], First, Choice::Target(1)),
            ([Unknown, Down], First, Choice::Target(0)),
            ([Down, Unknown], First, Choice::Target(1)),
            ([Unknown, Unknown], First, Choice::Target(0)),
            ([Down, Down], First, Choice::Target(0)),
            ([Down, Down], Page, Choice::AllDownPage),
            ([Down, Up], Page, Choice::Target(1)),
            ([Down, Unknown], Page, Choice::Target(1)),
        ];
        for (states, policy, expected) in cases {
            assert_eq!(choose(states, policy), expected, "{states:?} {policy:?}");
        }
    }

    #[test]
    fn no_servers_is_never_an_index() {
        assert_eq!(choose(std::iter::empty(), First), Choice::AllDownPage);
        assert_eq!(choose(std::iter::empty(), Page), Choice::AllDownPage);
    }

    #[test]
    fn single_server_rooms() {
        assert_eq!(choose([Down], First), Choice::Target(0));
        assert_eq!(choose([Down], Page), Choice::AllDownPage);
        assert_eq!(choose([Up], Page), Choice::Target(0));
    }

    #[test]
    fn preference_order_wins_among_equals() {
        assert_eq!(choose([Down, Up, Up], First), Choice::Target(1));
        assert_eq!(
            choose([Down, Down, Unknown, Unknown], First),
            Choice::Target(2)
        );
    }
}
