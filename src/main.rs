use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match opsrun::cli::run(opsrun::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("opsrun: {error:#}");
            ExitCode::FAILURE
        }
    }
}
