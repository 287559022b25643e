use std::process::ExitCode;

use clap::Parser;

/// Every request allocates and frees dozens of small blocks across the HTTP workers and
/// the database executors; glibc's malloc spent 13 % of the server's CPU on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = opsrun::commands::cli::Cli::parse();
    if cli.command.prints_a_report() {
        // A report piped into `head` ends quietly when the reader goes, as other command
        // line tools do, instead of panicking on the broken pipe. Not for `serve`, whose
        // writes to a client that went away must fail, not end the process.
        // SAFETY: restores the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match opsrun::commands::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("opsrun: {error:#}");
            ExitCode::FAILURE
        }
    }
}
