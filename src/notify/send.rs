//! One delivery attempt to one target, and what its answer means: sent,
//! worth another try (and when), or refused for good.
//!
//! Each attempt opens a fresh connection (messages are rare; a pooled
//! connection would only go stale between outages) with the same hyper and
//! rustls stack as the probes, webpki roots, and is bounded by
//! `notify.timeout` as a whole. Tokens go into a header or, for Telegram,
//! the URL path; no text this module returns holds one (answers are
//! escaped, bounded, and scrubbed of the token), and it never returns a
//! URL.

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{header, HeaderMap, Method, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::event::Event;
use crate::config::{NotifyTarget, TargetKind};
use crate::health::{connector, Conn, ProbeError, Resolver};

/// Largest answer read from a target; API answers are small.
const MAX_ANSWER: usize = 64 * 1024;

/// `User-Agent` of notifications.
const USER_AGENT: &str = concat!("roomgate/", env!("CARGO_PKG_VERSION"), " (notifications)");

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target took the message.
    Sent,
    /// A failure that may pass: no connection, a timeout, 5xx, 408, 429.
    Retry {
        /// What happened, for the log.
        why: String,
        /// How long the target asked us to wait (`Retry-After`, Telegram's
        /// `parameters.retry_after`, Matrix's `retry_after_ms`).
        after: Option<Duration>,
    },
    /// Refused for good (a bad token, an unknown room): trying again
    /// would not help.
    Failed {
        /// What the target said, for the log.
        why: String,
    },
}

/// Something that delivers an event; the queue is generic over it so that
/// its timing is tested with scripted outcomes and a paused clock.
pub trait Deliver: Send + Sync + 'static {
    /// One attempt; `id` is the same for every attempt of one message.
    fn deliver(&self, event: &Event, id: &str) -> impl Future<Output = Outcome> + Send;
}

/// The HTTP client of one target.
pub struct Client {
    /// Where and how.
    target: NotifyTarget,
    /// Bound on one attempt.
    timeout: Duration,
    /// Opens each attempt's connection.
    connector: HttpsConnector<HttpConnector<Resolver>>,
}

impl Client {
    /// A client for `target`, each attempt bounded by `timeout`.
    pub fn new(target: NotifyTarget, timeout: Duration) -> Client {
        // No `ca_file` for targets: public APIs, or loopback over http.
        let connector = connector(&[], timeout);
        Client {
            target,
            timeout,
            connector,
        }
    }

    /// The request for `event`: method, URL, JSON body, bearer token.
    fn request(
        &self,
        event: &Event,
        id: &str,
    ) -> (Method, String, serde_json::Value, Option<&str>) {
        match &self.target.kind {
            TargetKind::Webhook { url, token } => (
                Method::POST,
                url.clone(),
                serde_json::to_value(event).unwrap_or_default(),
                token.as_ref().map(|t| t.expose()),
            ),
            // Client-server API, PUT with a transaction id, so that a retry
            // after a lost answer is not posted twice.
            TargetKind::Matrix {
                homeserver,
                room,
                token,
            } => (
                Method::PUT,
                format!(
                    "{homeserver}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                    encode_segment(room),
                    encode_segment(id)
                ),
                serde_json::json!({ "msgtype": "m.text", "body": event.text }),
                Some(token.expose()),
            ),
            TargetKind::Telegram { api, chat, token } => (
                Method::POST,
                format!("{api}/bot{}/sendMessage", token.expose()),
                serde_json::json!({ "chat_id": chat, "text": event.text }),
                None,
            ),
        }
    }

    async fn attempt(&self, event: &Event, id: &str) -> Outcome {
        let (method, url, body, bearer) = self.request(event, id);
        let retry = |why: String| Outcome::Retry {
            why: self.clean(&why),
            after: None,
        };
        if url.parse::<Uri>().is_err() {
            return Outcome::Failed {
                why: "the target's URL does not parse".to_owned(),
            };
        }
        let mut headers = vec![
            (header::USER_AGENT, HeaderValue::from_static(USER_AGENT)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ];
        if let Some(token) = bearer {
            let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
                return Outcome::Failed {
                    why: "the request could not be built (is the token valid in a header?)"
                        .to_owned(),
                };
            };
            headers.push((header::AUTHORIZATION, value));
        }
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        // One connection per attempt, closed when the attempt ends or is
        // cut off by its timeout.
        let mut conn = Conn::new(&self.connector);
        let (status, headers, answer) = match conn.request(method, &url, &headers, body).await {
            Ok(answer) => answer,
            Err(e) => return retry(e.into_string()),
        };
        let answer = &answer[..answer.len().min(MAX_ANSWER)];
        let outcome = classify(status, &headers, answer, SystemTime::now());
        match outcome {
            Outcome::Sent => Outcome::Sent,
            Outcome::Retry { why, after } => Outcome::Retry {
                why: self.clean(&why),
                after,
            },
            Outcome::Failed { why } => Outcome::Failed {
                why: self.clean(&why),
            },
        }
    }

    /// `text` fit for a log line: the token scrubbed out (an API could
    /// echo it), control characters escaped, the length bounded.
    fn clean(&self, text: &str) -> String {
        let mut text = text.to_owned();
        if let Some(token) = self.target.kind.token() {
            text = text.replace(token.expose(), "[token]");
        }
        ProbeError::new(text).into_string()
    }
}

impl Deliver for Client {
    async fn deliver(&self, event: &Event, id: &str) -> Outcome {
        match tokio::time::timeout(self.timeout, self.attempt(event, id)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Retry {
                why: format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ),
                after: None,
            },
        }
    }
}

/// What an answer means. 2xx: sent. 429, 408 and 5xx: try again, after
/// the wait the target asks for, if any. Anything else: refused for good,
/// with what the API said (Telegram's `description`, Matrix's `errcode`
/// and `error`).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Outcome {
    if status.is_success() {
        return Outcome::Sent;
    }
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let said = [
        json["errcode"].as_str(),
        json["error"].as_str(),
        json["description"].as_str(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(": ");
    let why = if said.is_empty() {
        format!("answered {}", status.as_u16())
    } else {
        format!("answered {}: {said}", status.as_u16())
    };
    let passing = status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error();
    if !passing {
        return Outcome::Failed { why };
    }
    let header = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, now));
    let telegram = json["parameters"]["retry_after"]
        .as_u64()
        .map(Duration::from_secs);
    let matrix = json["retry_after_ms"].as_u64().map(Duration::from_millis);
    Outcome::Retry {
        why,
        after: header.or(telegram).or(matrix),
    }
}

/// `Retry-After` (RFC 9110, 10.2.3): seconds, or an HTTP date.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// A path segment with everything but RFC 3986's unreserved characters
/// percent-encoded (`!room:example.org` -> `%21room%3Aexample.org`).
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(header::RETRY_AFTER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn answers_are_classified() {
        let now = SystemTime::now();
        assert_eq!(
            classify(StatusCode::OK, &headers(None), b"{}", now),
            Outcome::Sent
        );
        match classify(StatusCode::INTERNAL_SERVER_ERROR, &headers(None), b"", now) {
            Outcome::Retry { after: None, why } => assert_eq!(why, "answered 500"),
            other => panic!("{other:?}"),
        }
        match classify(StatusCode::TOO_MANY_REQUESTS, &headers(Some("7")), b"", now) {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(7))),
            other => panic!("{other:?}"),
        }
        let telegram = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 12","parameters":{"retry_after":12}}"#;
        match classify(StatusCode::TOO_MANY_REQUESTS, &headers(None), telegram, now) {
            Outcome::Retry { after, why } => {
                assert_eq!(after, Some(Duration::from_secs(12)));
                assert!(why.contains("Too Many Requests"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let matrix =
            br#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":2500}"#;
        match classify(StatusCode::TOO_MANY_REQUESTS, &headers(None), matrix, now) {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_millis(2500))),
            other => panic!("{other:?}"),
        }
        let forbidden = br#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed."}"#;
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, &headers(None), forbidden, now),
            Outcome::Failed {
                why: "answered 401: M_UNKNOWN_TOKEN: Invalid access token passed.".into()
            }
        );
    }

    #[test]
    fn retry_after_as_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn room_ids_are_encoded() {
        assert_eq!(encode_segment("!abc:example.org"), "%21abc%3Aexample.org");
        assert_eq!(encode_segment("1712-3"), "1712-3");
    }

    #[test]
    fn errors_never_carry_the_token() {
        let target = NotifyTarget {
            name: "t".into(),
            kind: TargetKind::Telegram {
                api: "https://api.telegram.org".into(),
                chat: "@chaosdorf".into(),
                token: crate::config::Secret::for_tests("123:SECRET"),
            },
        };
        let client = Client::new(target, Duration::from_secs(1));
        let text = client.clean("bad request for /bot123:SECRET/sendMessage\n");
        assert_eq!(text, "bad request for /bot[token]/sendMessage\\n");
    }
}
