//! `klausur`: self-hosted video and telephone conferencing for public administrations.
//!
//! `klausur serve` runs everything with no configuration (SQLite in `./klausur-data`, HTTP on
//! 127.0.0.1:8080, media on UDP 127.0.0.1:10000). The other subcommands administer the same
//! database from the command line; each has `--json` output for automation.

use klausur_server::cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the media path allocates and frees one datagram per
/// packet and subscriber (in str0m), and mimalloc's thread-local free lists make that cheaper
/// (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KLAUSUR_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(klausur_server::DEFAULT_LOG_FILTER)
            }),
        )
        .with_writer(std::io::stderr);
    // `KLAUSUR_LOG_FORMAT=json`: one JSON object per line (timestamp, level, target, message and
    // the event's fields at the top level), for a log system that reads JSON (Loki, Graylog,
    // Elasticsearch); the journal's text lines otherwise.
    match std::env::var("KLAUSUR_LOG_FORMAT").as_deref() {
        Err(_) | Ok("" | "text") => logs.init(),
        Ok("json") => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        Ok(other) => {
            eprintln!(
                "klausur: KLAUSUR_LOG_FORMAT={other:?} is not a log format: use \"text\" (the \
                 default) or \"json\""
            );
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("klausur: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("klausur: {}", klausur_server::error_text::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
