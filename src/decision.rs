//! Which server a room goes to right now: a pure function of the servers'
//! states, in the room's preference order.

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
pub fn choose(states: &[State], when_all_down: WhenAllDown) -> Choice {
    if let Some(i) = states.iter().position(|s| *s == State::Up) {
        return Choice::Target(i);
    }
    if let Some(i) = states.iter().position(|s| *s == State::Unknown) {
        return Choice::Target(i);
    }
    match when_all_down {
        // A room always has a server (config validation); an empty list
        // still must not index out of bounds.
        WhenAllDown::First if !states.is_empty() => Choice::Target(0),
        WhenAllDown::First => Choice::AllDownPage,
        WhenAllDown::Page => Choice::AllDownPage,
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
            assert_eq!(choose(&states, policy), expected, "{states:?} {policy:?}");
        }
    }

    #[test]
    fn no_servers_is_never_an_index() {
        assert_eq!(choose(&[], First), Choice::AllDownPage);
        assert_eq!(choose(&[], Page), Choice::AllDownPage);
    }

    #[test]
    fn single_server_rooms() {
        assert_eq!(choose(&[Down], First), Choice::Target(0));
        assert_eq!(choose(&[Down], Page), Choice::AllDownPage);
        assert_eq!(choose(&[Up], Page), Choice::Target(0));
    }

    #[test]
    fn preference_order_wins_among_equals() {
        assert_eq!(choose(&[Down, Up, Up], First), Choice::Target(1));
        assert_eq!(
            choose(&[Down, Down, Unknown, Unknown], First),
            Choice::Target(2)
        );
    }
}
