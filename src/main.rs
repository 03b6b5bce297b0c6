//! The `certd` binary: parses the command line, sets up logging, runs the
//! command, and turns a failure into one line on stderr and an exit code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

mod cli;

use cli::{Cli, LogFormat};

// sled allocates heavily from many threads; glibc's malloc spent over a tenth
// of the daemon's CPU under load (docs/PERFORMANCE.md), mimalloc a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropped at the end of main, which flushes what is still queued.
    let _log_writer = init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("certd: error: cannot start the async runtime: {error}");
            return ExitCode::from(cli::exit::FAILURE);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole chain of causes on one line.
            eprintln!("certd: error: {error:#}");
            ExitCode::from(cli::exit_code(&error))
        }
    }
}

/// Logs go to stderr through a background writer thread, so a request never
/// waits for a write system call. The queue is lossless: when it is full,
/// logging waits rather than dropping lines.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    // sled's own log lines repeat, less clearly, what certd reports about
    // the same fault (`CERTD_LOG=info,sled=debug` shows them).
    let filter =
        EnvFilter::try_from_env("CERTD_LOG").unwrap_or_else(|_| EnvFilter::new("info,sled=off"));
    // Colour only for a person at a terminal, never in files and journals.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}
