//! `dispatch-gate-bench`: the gate measured beside the physical floor, on
//! scratch databases (the `bench` library; method and figures in BENCHMARKS.md).

use std::process::ExitCode;

use clap::Parser;
use dispatch_gate::process::telemetry::LogFormat;

/// The allocator the `dispatch-gate` binary uses, so the in-process
/// scenarios measure the gate as `serve` runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure the gate beside the physical floor, on scratch databases.
#[derive(Debug, Parser)]
#[command(name = "dispatch-gate-bench", version)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "GATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(flatten)]
    bench: bench::BenchArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    dispatch_gate::process::telemetry::init(cli.log_format);
    match bench::run(cli.bench).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One clear line (with its causes, each once), never a panic.
            eprintln!("error: {}", dispatch_gate::app::error_line(&error));
            ExitCode::FAILURE
        }
    }
}
