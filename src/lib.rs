//! roomgate: short, stable, health-aware links for video-meeting rooms.
//!
//! `GET /Lounge` answers a redirect to the Lounge room on the first Jitsi
//! server that is up. A request flows through the modules in this order:
//!
//! - [`config`]: `routes.yaml`, validated with a file:line:column for every
//!   error; the validated [`config::Config`].
//! - [`routes`]: the config compiled into a route table, with every Location
//!   built ahead of time.
//! - [`health`]: one prober task per server (jitsi: config.js + a BOSH
//!   session; or plain http), the up/down hysteresis, and the one `watch`
//!   slot per server through which every reader shares the latest result;
//!   the 24-hour history of state changes, kept on disk with `--state-dir`.
//! - [`occupancy`]: opt-in per server: one poller per server that counts
//!   the people in its rooms once per interval, and the one place the
//!   counts are kept (only counts, never names).
//! - [`decision`]: the pure choice of a server from the servers' states.
//! - [`gateway`]: the live snapshot of config, routes, probers and
//!   notification targets, swapped whole on reload; it announces state
//!   changes through [`notify`].
//! - [`notify`]: messages about state changes to webhooks, Matrix and
//!   Telegram, each target with its own queue and retries.
//! - [`http`]: the request handler: redirects, 404/405/414, status page,
//!   `/status.json`, `/healthz`, `/readyz`, `/metrics`; `http::response`
//!   builds every answer's headers and bytes.
//! - [`status`]: the live state of every room and server, behind `/` and
//!   `/status.json`.
//! - [`forwarded`]: what a trusted reverse proxy says about the request:
//!   the client address (`X-Forwarded-For`) and the public base URL
//!   (`X-Forwarded-Proto`, `-Host`, `-Prefix`).
//! - [`server`]: listeners (TCP and unix), a task per connection, the
//!   connection cap, timeouts and graceful shutdown.
//! - [`limits`]: the open file limit and the connection cap that fits it.
//! - [`page`]: the HTML pages (askama templates), QR codes and the public
//!   base URL of short links (`site.public_url` or [`forwarded`]).
//! - [`lang`]: the pages' own words, one table per language of `site.lang`.
//! - [`preview`]: the User-Agent matcher for link-preview fetchers.
//! - [`metrics`]: Prometheus counters and gauges.
//! - [`cli`]: `serve`, `check`, `probe` and `notify-test`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod decision;
pub mod forwarded;
pub mod gateway;
pub mod health;
pub mod http;
pub mod lang;
pub(crate) mod limits;
pub mod metrics;
pub mod notify;
pub mod occupancy;
pub mod page;
pub(crate) mod preview;
pub mod routes;
pub mod server;
pub(crate) mod status;
