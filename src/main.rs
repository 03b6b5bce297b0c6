//! The `certd` binary: parses the command line, sets up logging, runs the
//! command, and turns a failure into one line on stderr (one JSON object
//! with `--json`) and an exit code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

mod cli;
mod logging;

use cli::Cli;

// sled allocates heavily from many threads; glibc's malloc spent over a tenth
// of the daemon's CPU under load (docs/PERFORMANCE.md), mimalloc a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit status of a command whose reader went away (`certd audit |
/// head -1`): what a shell reports for a Unix tool killed by SIGPIPE.
const CLOSED_PIPE: i32 = 128 + 13;

fn main() -> ExitCode {
    keep_the_heap_in_small_pages();
    end_quietly_on_a_closed_pipe();
    let cli = Cli::parse();
    let json = cli.command.json();
    let default_level = if cli.command.keeps_running() {
        "info"
    } else {
        "warn"
    };
    let filter = match log_filter(default_level) {
        Ok(filter) => filter,
        Err(message) => {
            return report_failure(json, &message, "invalid_input", cli::exit::INVALID_INPUT);
        }
    };
    // Dropped at the end of main, which flushes what is still queued.
    let _log_writer = logging::init(cli.log_format, filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let message = format!("cannot start the async runtime: {error}");
            return report_failure(json, &message, "other", cli::exit::FAILURE);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let kind = cli::error_kind(&error).map_or("other", certd::ErrorKind::name);
            // `{:#}` prints the whole chain of causes on one line.
            report_failure(json, &format!("{error:#}"), kind, cli::exit_code(&error))
        }
    }
}

/// A failure as a person reads it, `certd: error: …` on one line, or, for
/// a command asked for `--json`, as a program does: one JSON object on
/// stderr, `{"error": {"message", "kind", "exit_code"}}` (stdout stays
/// empty or holds only the command's JSON). The exit code is the same.
fn report_failure(json: bool, message: &str, kind: &str, code: u8) -> ExitCode {
    if json {
        let error = serde_json::json!({
            "error": { "message": message, "kind": kind, "exit_code": code }
        });
        eprintln!("{error}");
    } else {
        eprintln!("certd: error: {message}");
    }
    ExitCode::from(code)
}

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them on its arenas (`madvise(MADV_HUGEPAGE)`, and the kernel gives them
/// anyway where THP is `always`), and sled frees as much as it allocates:
/// the kernel then keeps 2 MiB resident wherever a few live blocks remain,
/// and khugepaged fills the holes mimalloc purges back in. Under the store
/// bench's steady load, 42–63 MB of the RSS was in huge pages, and turning
/// them off took it from 167–182 MB to 131–156 MB with no CPU the runs
/// could tell (docs/PERFORMANCE.md, "Retention"). The flag holds for the whole
/// process, and for what it runs (a `--exec` hook), which is harmless.
/// A kernel without the call (before Linux 3.15) keeps huge pages: certd
/// runs the same, only larger, so the error is not reported.
fn keep_the_heap_in_small_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Rust ignores SIGPIPE, so printing to a pipe whose reader has gone
/// panics ("failed printing to stdout: Broken pipe"). That is no failure of
/// certd's: the command ends there, quietly, with the status a shell gives
/// a tool killed by SIGPIPE. Every other panic is reported as before.
fn end_quietly_on_a_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(CLOSED_PIPE);
        }
        report(info);
    }));
}

/// The log filter: `CERTD_LOG` when set, else `default_level` (`info` for
/// a daemon, `warn` for a one-shot command, whose output is its report)
/// without sled's own lines (they repeat, less clearly, what certd reports
/// about the same fault; `CERTD_LOG=info,sled=debug` shows them). A
/// `CERTD_LOG` that is not a filter is refused, not silently replaced.
fn log_filter(default_level: &str) -> Result<EnvFilter, String> {
    match std::env::var("CERTD_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            let refused = |why: String| {
                format!(
                    "CERTD_LOG={:?} is not a log filter ({why}): use a level (error, warn, info, debug, trace), optionally with per-module levels such as info,sled=debug",
                    value.chars().take(64).collect::<String>()
                )
            };
            // A bare word is taken by the filter as a module to trace, so
            // a misspelt level would silently turn every other log off.
            const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
            if let Some(word) = value.split(',').map(str::trim).find(|part| {
                !part.is_empty()
                    && !part.contains(['=', '[', ':'])
                    && !LEVELS.iter().any(|level| part.eq_ignore_ascii_case(level))
            }) {
                return Err(refused(format!(
                    "{:?} is neither a level nor module=level",
                    word.chars().take(32).collect::<String>()
                )));
            }
            EnvFilter::try_new(&value).map_err(|error| refused(error.to_string()))
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            Ok(EnvFilter::new(format!("{default_level},sled=off")))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err("CERTD_LOG is not UTF-8 text: use a level such as info".into())
        }
    }
}
