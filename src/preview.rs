//! Link-preview fetchers: chat apps that fetch a shared link to show a card.
//!
//! When one of them asks for `/{room}` it gets a small page with OpenGraph
//! tags (see `page.rs`) instead of the redirect, so a shared room link shows
//! the room's name and description rather than a bare Jitsi page. Browsers
//! still get the redirect.
//!
//! The check runs on the redirect path, so the matcher is compiled once,
//! with the route table (see `routes.rs`).

use std::fmt;

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

/// Most patterns `preview_agents` may list, and longest pattern: bounds
/// that keep the compiled matcher small (and its build infallible).
pub const MAX_AGENTS: usize = 1000;
/// See [`MAX_AGENTS`].
pub const MAX_AGENT_LEN: usize = 256;

/// The `preview_agents` list as configured: non-empty User-Agent substrings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewAgents(Vec<String>);

impl PreviewAgents {
    /// The patterns as configured.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

impl Default for PreviewAgents {
    fn default() -> Self {
        PreviewAgents(DEFAULT_AGENTS.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// The compiled matcher of a [`PreviewAgents`] list, built with the route
/// table: one Aho-Corasick automaton over all patterns, ASCII
/// case-insensitive, that scans the User-Agent bytes without allocating.
pub struct Matcher(Option<AhoCorasick>);

impl Matcher {
    /// Compiles `agents`; an empty list matches nothing.
    pub fn new(agents: &PreviewAgents) -> Matcher {
        if agents.0.is_empty() {
            return Matcher(None);
        }
        // Leftmost semantics let aho-corasick use its SIMD prefilter; for a
        // yes/no answer the match kind makes no difference.
        let built = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&agents.0);
        match built {
            Ok(ac) => Matcher(Some(ac)),
            // Unreachable within MAX_AGENTS and MAX_AGENT_LEN.
            Err(e) => {
                tracing::error!("link previews off: cannot compile preview_agents ({e})");
                Matcher(None)
            }
        }
    }

    /// Whether `user_agent` belongs to a link-preview fetcher.
    pub fn matches(&self, user_agent: &[u8]) -> bool {
        self.0.as_ref().is_some_and(|ac| ac.is_match(user_agent))
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
                    if pattern.len() > MAX_AGENT_LEN {
                        return Err(serde::de::Error::custom(format!(
                            "a user agent pattern is longer than {MAX_AGENT_LEN} bytes"
                        )));
                    }
                    if patterns.len() == MAX_AGENTS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_AGENTS} user agent patterns"
                        )));
                    }
                    patterns.push(pattern);
                }
                Ok(PreviewAgents(patterns))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> Matcher {
        Matcher::new(&PreviewAgents(
            patterns.iter().map(|p| (*p).to_owned()).collect(),
        ))
    }

    #[test]
    fn defaults_match_fetchers_case_insensitively_and_not_browsers() {
        let agents = Matcher::new(&PreviewAgents::default());
        assert!(agents.matches(b"TelegramBot (like TwitterBot)"));
        assert!(agents.matches(b"mozilla/5.0 (compatible; discordbot/2.0)"));
        assert!(!agents.matches(
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
        ));
        assert!(!agents.matches(b"curl/8.5.0"));
        assert!(!agents.matches(b""));
    }

    #[test]
    fn each_list_answers_for_itself() {
        let (bots, curl) = (matcher(&["Bot"]), matcher(&["curl"]));
        assert!(bots.matches(b"SomeBot/1"));
        assert!(!curl.matches(b"SomeBot/1"));
        assert!(!bots.matches(b"curl/8.5.0"));
        assert!(curl.matches(b"curl/8.5.0"));
        let long = [b"x".repeat(4096), b"SomeBot".to_vec()].concat();
        assert!(bots.matches(&long));
    }

    #[test]
    fn an_empty_list_matches_nothing() {
        assert!(!matcher(&[]).matches(b"TelegramBot"));
    }

    /// The largest list the config accepts compiles.
    #[test]
    fn the_largest_accepted_list_compiles() {
        let patterns = (0..MAX_AGENTS)
            .map(|i| format!("{i:0width$}", width = MAX_AGENT_LEN))
            .collect();
        let m = Matcher::new(&PreviewAgents(patterns));
        assert!(m.0.is_some());
        assert!(m.matches(format!("{:0width$}", 7, width = MAX_AGENT_LEN).as_bytes()));
    }
}
