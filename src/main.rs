use clap::Parser;

/// mimalloc instead of glibc's allocator: the gate and the projectors
/// allocate many small JSON values, often freed on another thread than the
/// one that made them (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = dispatch_gate::process::cli::Cli::parse();
    match dispatch_gate::process::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One clear line (with its causes, each once), never a panic.
            eprintln!("error: {}", dispatch_gate::app::error_line(&error));
            // A usable-looking command line that is not (a short admin token) is a
            // usage error, like one clap refuses; everything else is a failure.
            if error.is::<dispatch_gate::process::usage::UsageError>() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
