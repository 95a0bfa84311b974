//! Integration and end-to-end tests, built as one binary so that the shared
//! support code compiles once. Each module is one area; `support` holds the
//! test servers, stand-ins and tool lookups they share.

mod support;

mod browser;
mod cli;
mod container;
mod deploy;
mod failover;
mod fault_matrix;
mod fuzz_regressions;
mod http_interface;
mod lifecycle;
mod lifecycle_under_load;
mod load;
mod nginx;
mod notify;
mod occupancy;
mod open_redirect;
mod probed_text;
mod prosody;
mod prosody_depths;
mod server_core;
mod skip_selftest;
mod standin_selftest;
mod state_dir;
mod status_extras;
mod synapse;
mod systemd_sandbox;
