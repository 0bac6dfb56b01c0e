use clap::Parser;

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
