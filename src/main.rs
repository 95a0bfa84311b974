//! The `roomgate` binary: parse the command line, run the command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match roomgate::cli::Cli::parse().run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("roomgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
