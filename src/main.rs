use clap::Parser;

/// mimalloc instead of glibc's allocator: the gate and the projectors
/// allocate many small JSON values, often freed on another thread than the
/// one that made them (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = dispatch_gate::cli::Cli::parse();
    match dispatch_gate::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One clear line (with its causes), never a panic.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
