//! The probes: what it takes to call a server up.
//!
//! A `jitsi` probe proves that the deployment can host a meeting, not only
//! that its nginx serves files: it fetches `config.js`, then opens a BOSH
//! session (XEP-0124/XEP-0206) at `/http-bind` and wants `<stream:features>`
//! back, which only a running Prosody sends. At `depth: login` it goes on to
//! log in as an anonymous guest and bind a resource, at `depth: focus` it
//! then pings the conference focus (Jicofo). The session is always ended,
//! after the verdict and on a small budget of its own.
//!
//! Every probe opens a fresh connection (reused only for the requests of that
//! one probe, see [`client`]), and the probe up to its verdict is bounded by
//! the check's `timeout`.

mod bosh;
mod client;
mod error;
pub mod xml;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;

use super::resolve::Resolver;
use crate::config::{CheckKind, Depth, Server};
pub use bosh::Session;
pub use client::{connector, Conn};
pub use error::{ProbeError, MAX_ERROR_CHARS};

/// Time the end of a BOSH session gets after the verdict, on top of the
/// check's `timeout`: ending it is politeness, not part of the verdict.
pub const TERMINATE_BUDGET: Duration = Duration::from_secs(1);

/// Something that can be probed. The prober loop is generic over it so that
/// its timing can be tested with a scripted probe and a paused clock.
pub trait Probe: Send + Sync + 'static {
    /// Runs one probe. `Ok` carries the latency: the time until the server
    /// proved itself up, without the politeness that may follow.
    fn probe(&self) -> impl Future<Output = Result<Duration, ProbeError>> + Send;
}

/// The steps of a `jitsi` probe, for saying where one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ConfigJs,
    Bosh,
    Login,
    Focus,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::ConfigJs => "config.js",
            Step::Bosh => "BOSH",
            Step::Login => "login",
            Step::Focus => "focus",
        })
    }
}

/// The real probe of one configured server.
pub struct ServerProbe {
    /// Base URL, no trailing slash.
    base: String,
    /// What to check.
    kind: CheckKind,
    /// Bound on the whole probe.
    timeout: Duration,
    /// Builds the fresh connection of each probe: TCP, and TLS with the
    /// webpki roots plus the server's `ca_file`.
    connector: HttpsConnector<HttpConnector<Resolver>>,
}

impl ServerProbe {
    /// A probe for `server`, following its `check` settings.
    pub fn new(server: &Server) -> ServerProbe {
        let connector = client::connector(&server.extra_roots, server.check.timeout);
        ServerProbe {
            base: server.url.clone(),
            kind: server.check.kind.clone(),
            timeout: server.check.timeout,
            connector,
        }
    }

    /// A `jitsi` probe: its steps within the timeout, then the session's
    /// end on [`TERMINATE_BUDGET`].
    async fn jitsi(
        &self,
        xmpp_domain: &str,
        depth: &Depth,
        guest_domain: Option<&str>,
    ) -> Result<Duration, ProbeError> {
        let started = Instant::now();
        let mut conn = Conn::new(&self.connector);
        let mut session = None;
        let mut step = Step::ConfigJs;
        let steps = self.jitsi_steps(
            &mut conn,
            &mut session,
            &mut step,
            xmpp_domain,
            depth,
            guest_domain,
        );
        let verdict = match tokio::time::timeout(self.timeout, steps).await {
            Ok(verdict) => verdict,
            Err(_) => Err(self.no_answer(Some(step))),
        };
        let latency = started.elapsed();
        self.end(&mut conn, session).await;
        verdict.map(|()| latency)
    }

    /// Ends `session`, if a probe opened one, on [`TERMINATE_BUDGET`], so
    /// that probes leave none behind in Prosody, also after a failure.
    /// Whether that works changes no verdict; the log says at debug level.
    async fn end(&self, conn: &mut Conn<'_>, session: Option<Session>) {
        let Some(session) = session else {
            return;
        };
        match tokio::time::timeout(TERMINATE_BUDGET, session.terminate(conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(server = %self.base, "BOSH terminate failed: {e}"),
            Err(_) => tracing::debug!(server = %self.base, "BOSH terminate got no answer in time"),
        }
    }

    /// The error of a probe that ran out of time, in `step` if it has steps.
    fn no_answer(&self, step: Option<Step>) -> ProbeError {
        let within = humantime::format_duration(self.timeout);
        match step {
            Some(step) => ProbeError::new(format!("{step}: no answer within {within}")),
            None => ProbeError::new(format!("no answer within {within}")),
        }
    }

    /// Logs in as a guest, as a `login` probe does, sends each of `iqs`
    /// (the address and payload of an IQ of type get) in turn, and ends the
    /// session. Each IQ's answer is its result or the condition of its
    /// error; the whole is bounded by the check's `timeout`, the end by
    /// [`TERMINATE_BUDGET`]. For what a check does not ask, such as who is
    /// in a room; only for servers with a `jitsi` check.
    pub async fn guest_queries(
        &self,
        iqs: &[(String, String)],
    ) -> Result<Vec<Result<xml::Element, String>>, ProbeError> {
        let CheckKind::Jitsi {
            xmpp_domain,
            guest_domain,
            ..
        } = &self.kind
        else {
            return Err(ProbeError::new("guest queries need a `jitsi` check"));
        };
        let domain = guest_domain.as_deref().unwrap_or(xmpp_domain);
        let mut conn = Conn::new(&self.connector);
        let mut session = None;
        let work = async {
            let bind_url = format!("{}/http-bind", self.base);
            let open = session.insert(
                Session::open(&mut conn, &bind_url, domain)
                    .await
                    .map_err(ProbeError::new)?,
            );
            open.login_anonymous(&mut conn)
                .await
                .map_err(|e| ProbeError::new(format!("login: {e}")))?;
            let mut answers = Vec::with_capacity(iqs.len());
            for (to, payload) in iqs {
                answers.push(open.iq_get(&mut conn, to, payload).await);
            }
            Ok(answers)
        };
        let answers = match tokio::time::timeout(self.timeout, work).await {
            Ok(answers) => answers,
            Err(_) => Err(self.no_answer(None)),
        };
        self.end(&mut conn, session).await;
        answers
    }

    /// The steps up to the verdict. `session` holds the session as soon as
    /// it is open, and `step` the step under way, so that the caller can
    /// end the one and name the other when time runs out.
    async fn jitsi_steps<'c>(
        &self,
        conn: &mut Conn<'c>,
        session: &mut Option<Session>,
        step: &mut Step,
        xmpp_domain: &str,
        depth: &Depth,
        guest_domain: Option<&str>,
    ) -> Result<(), ProbeError> {
        let (status, _) = conn
            .send(Method::GET, &format!("{}/config.js", self.base), None)
            .await?;
        if status != StatusCode::OK {
            return Err(ProbeError::new(format!(
                "config.js answered {}",
                status.as_u16()
            )));
        }
        *step = Step::Bosh;
        // Guests open their session to the guest domain where there is one.
        let domain = match depth {
            Depth::Bosh => xmpp_domain,
            Depth::Login | Depth::Focus { .. } => guest_domain.unwrap_or(xmpp_domain),
        };
        let bind_url = format!("{}/http-bind", self.base);
        let open = session.insert(
            Session::open(conn, &bind_url, domain)
                .await
                .map_err(ProbeError::new)?,
        );
        if *depth == Depth::Bosh {
            return Ok(());
        }
        *step = Step::Login;
        open.login_anonymous(conn)
            .await
            .map_err(|e| ProbeError::new(format!("login: {e}")))?;
        let Depth::Focus { focus_domain } = depth else {
            return Ok(());
        };
        *step = Step::Focus;
        // XEP-0199: the focus answers while Jicofo is connected; Prosody
        // answers service-unavailable for it when it is not.
        let ping = format!("<ping xmlns='{}'/>", xml::ns::PING);
        open.iq_get(conn, focus_domain, &ping).await.map_err(|e| {
            ProbeError::new(format!("focus: {e} (is Jicofo running and connected?)"))
        })?;
        Ok(())
    }

    async fn http(
        &self,
        path: &str,
        expect: crate::config::StatusRange,
        body_contains: Option<&str>,
    ) -> Result<Duration, ProbeError> {
        let started = Instant::now();
        let mut conn = Conn::new(&self.connector);
        let (status, body) = conn
            .send(Method::GET, &format!("{}{path}", self.base), None)
            .await?;
        if !expect.contains(status.as_u16()) {
            return Err(ProbeError::new(format!(
                "{path} answered {} (expected {expect})",
                status.as_u16()
            )));
        }
        if let Some(needle) = body_contains {
            if !String::from_utf8_lossy(&body).contains(needle) {
                return Err(ProbeError::new(format!(
                    "{path} answered {} without the expected text",
                    status.as_u16()
                )));
            }
        }
        Ok(started.elapsed())
    }
}

impl Probe for ServerProbe {
    async fn probe(&self) -> Result<Duration, ProbeError> {
        match &self.kind {
            CheckKind::Jitsi {
                xmpp_domain,
                depth,
                guest_domain,
            } => {
                self.jitsi(xmpp_domain, depth, guest_domain.as_deref())
                    .await
            }
            CheckKind::Http {
                path,
                expect_status,
                body_contains,
            } => {
                let work = self.http(path, *expect_status, body_contains.as_deref());
                match tokio::time::timeout(self.timeout, work).await {
                    Ok(result) => result,
                    Err(_) => Err(self.no_answer(None)),
                }
            }
        }
    }
}
