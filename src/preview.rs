//! Link-preview fetchers: chat apps that fetch a shared link to show a card.
//!
//! When one of them asks for `/{room}` it gets a small page with OpenGraph
//! tags (see `page.rs`) instead of the redirect, so a shared room link shows
//! the room's name and description rather than a bare Jitsi page. Browsers
//! still get the redirect.
//!
//! The check runs on the redirect path, so the matcher is compiled once when
//! the config is loaded: one Aho-Corasick automaton over all patterns,
//! ASCII case-insensitive, that scans the User-Agent bytes without
//! allocating. Each HTTP worker also remembers its last User-Agent and the
//! answer: a keep-alive connection sends the same one with every request.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// User-Agent substrings of the fetchers we know, matched case-insensitively.
/// Each is the product token the fetcher sends (see the README for examples).
pub const DEFAULT_AGENTS: &[&str] = &[
    "TelegramBot",         // Telegram: "TelegramBot (like TwitterBot)"
    "Slackbot",            // Slack: "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
    "Slack-ImgProxy",      // Slack's image proxy
    "Discordbot", // Discord: "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)"
    "WhatsApp",   // WhatsApp: "WhatsApp/2.23.20.0"
    "Synapse",    // Matrix homeservers: "Synapse (bot; +https://github.com/matrix-org/synapse)"
    "matrix-media-repo", // Matrix media repository
    "Mastodon",   // Mastodon: "http.rb/5.1.1 (Mastodon/4.2.0; +https://example.social/)"
    "Pleroma",    // Pleroma and Akkoma
    "Signal",     // Signal; its apps also fetch as "WhatsApp/2", matched above
    "facebookexternalhit", // Facebook, Messenger, Instagram
    "Facebot",    // Facebook
    "Twitterbot", // X / Twitter
    "LinkedInBot", // LinkedIn
    "Iframely",   // used by many forums and chats (e.g. Element's link previews)
    "Embedly",    // embed service used by Reddit and others
    "redditbot",  // Reddit
    "SkypeUriPreview", // Skype and Teams
    "Zulip",      // Zulip: "ZulipURLPreview/..."
    "Mattermost", // Mattermost: "Mattermost-Bot/1.1"
    "Rocket.Chat", // Rocket.Chat
    "Threema",    // Threema
    "Googlebot",  // Google Chat and others reuse it
    "Applebot",   // iMessage previews
];

/// The compiled set of link-preview User-Agent patterns.
#[derive(Clone)]
pub struct PreviewAgents {
    /// The patterns as configured, for display and comparison.
    patterns: Vec<String>,
    /// One automaton over all patterns; `None` when the list is empty.
    matcher: Option<AhoCorasick>,
    /// Tells this list from the lists of other config loads in [`LAST`].
    id: u64,
}

/// Longest User-Agent [`LAST`] keeps; longer ones are scanned every time.
const MEMO_MAX: usize = 256;

/// Source of [`PreviewAgents::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's last check: list id, User-Agent, answer.
    static LAST: RefCell<(u64, Vec<u8>, bool)> = const { RefCell::new((0, Vec::new(), false)) };
}

impl PreviewAgents {
    /// Compiles `patterns`. Fails only if the automaton would be too large,
    /// which no realistic list reaches.
    pub fn new(patterns: Vec<String>) -> Result<PreviewAgents, String> {
        let matcher = if patterns.is_empty() {
            None
        } else {
            // Leftmost semantics let aho-corasick use its SIMD prefilter; for
            // a yes/no answer the match kind makes no difference.
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostFirst)
                .build(&patterns)
                .map_err(|e| format!("cannot compile the user agent list: {e}"))?;
            Some(ac)
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(PreviewAgents {
            patterns,
            matcher,
            id,
        })
    }

    /// Whether `user_agent` belongs to a link-preview fetcher.
    pub fn matches(&self, user_agent: &[u8]) -> bool {
        let Some(ac) = &self.matcher else {
            return false;
        };
        if user_agent.len() > MEMO_MAX {
            return ac.is_match(user_agent);
        }
        LAST.with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return ac.is_match(user_agent);
            };
            let (id, agent, answer) = &mut *last;
            if *id != self.id || agent.as_slice() != user_agent {
                *id = self.id;
                agent.clear();
                agent.extend_from_slice(user_agent);
                *answer = ac.is_match(user_agent);
            }
            *answer
        })
    }

    /// The patterns as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl Default for PreviewAgents {
    fn default() -> Self {
        let patterns = DEFAULT_AGENTS.iter().map(|s| (*s).to_owned()).collect();
        PreviewAgents::new(patterns).expect("the default list compiles")
    }
}

impl PartialEq for PreviewAgents {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for PreviewAgents {}

impl fmt::Debug for PreviewAgents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PreviewAgents")
            .field(&self.patterns)
            .finish()
    }
}

/// `preview_agents: [TelegramBot, Slackbot, ...]`: a list of non-empty
/// substrings; `[]` turns previews off. Errors carry the list's position.
impl<'de> Deserialize<'de> for PreviewAgents {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PreviewAgents;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of User-Agent substrings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PreviewAgents, A::Error> {
                let mut patterns = Vec::new();
                while let Some(pattern) = seq.next_element::<String>()? {
                    if pattern.trim().is_empty() {
                        return Err(serde::de::Error::custom(
                            "an empty user agent pattern would match every client",
                        ));
                    }
                    patterns.push(pattern);
                }
                PreviewAgents::new(patterns).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_fetchers_case_insensitively_and_not_browsers() {
        let agents = PreviewAgents::default();
        assert!(agents.matches(b"TelegramBot (like TwitterBot)"));
        assert!(agents.matches(b"mozilla/5.0 (compatible; discordbot/2.0)"));
        assert!(!agents.matches(
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
        ));
        assert!(!agents.matches(b"curl/8.5.0"));
        assert!(!agents.matches(b""));
    }

    /// The remembered answer belongs to one list and one User-Agent: a
    /// reload's new list, or the next User-Agent, is checked afresh.
    #[test]
    fn the_remembered_answer_is_per_list_and_per_agent() {
        let bots = PreviewAgents::new(vec!["Bot".into()]).unwrap();
        let curl = PreviewAgents::new(vec!["curl".into()]).unwrap();
        for _ in 0..2 {
            assert!(bots.matches(b"SomeBot/1"));
            assert!(!curl.matches(b"SomeBot/1"));
            assert!(!bots.matches(b"curl/8.5.0"));
            assert!(curl.matches(b"curl/8.5.0"));
            assert!(curl.clone().matches(b"curl/8.5.0"));
        }
        // Longer than the memo keeps: still answered.
        let long = [b"x".repeat(MEMO_MAX), b"SomeBot".to_vec()].concat();
        assert!(bots.matches(&long));
        assert!(!curl.matches(&long));
    }

    #[test]
    fn an_empty_list_matches_nothing() {
        let agents = PreviewAgents::new(vec![]).unwrap();
        assert!(!agents.matches(b"TelegramBot"));
    }
}
