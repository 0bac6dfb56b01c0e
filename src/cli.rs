//! The command line: `serve`, `migrate`, `projections rebuild`, `bench`.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::server::{shutdown_signal, Application, BuiltInWorker, Settings};
use crate::store::{redact, Database, DEFAULT_DATABASE_URL};
use crate::telemetry::{self, LogFormat};
use crate::worker::SimulatedProvider;

/// One dispatch gate for provider-backed operations.
#[derive(Debug, Parser)]
#[command(name = "dispatch-gate", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "GATE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (applies migrations first).
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Manage the read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Measure the gate beside the physical floor, on scratch databases.
    Bench(crate::bench::BenchArgs),
}

/// `projections` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Drop every view and rebuild it from the event log.
    Rebuild(DatabaseArgs),
}

/// Where the event log lives.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `sqlite://FILE` (created on first start) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "GATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The admin token. When absent, a random one is generated and logged once.
    #[arg(long, env = "GATE_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Do not run the built-in worker: runs stay queued until a worker claims them.
    #[arg(long)]
    no_worker: bool,
    /// Runs the built-in worker executes at once.
    #[arg(long, env = "GATE_WORKER_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_concurrency: u16,
    /// Simulated provider: how long a run takes, in milliseconds (`MIN..MAX` or one value).
    #[arg(long, env = "GATE_SIM_LATENCY_MS", default_value = "500..3000", value_parser = parse_latency)]
    sim_latency_ms: std::ops::RangeInclusive<std::time::Duration>,
    /// Simulated provider: the share of runs that fail (0.0–1.0).
    #[arg(long, env = "GATE_SIM_FAILURE_RATE", default_value_t = 0.1, value_parser = parse_rate)]
    sim_failure_rate: f64,
    /// Seconds a worker holds a claimed run between heartbeats.
    #[arg(long, env = "GATE_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_seconds: u64,
    /// Database pool size.
    #[arg(long, env = "GATE_DB_POOL", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    db_pool: u32,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let database = Database::connect(&args.database_url, 1).await?;
            database.migrate().await?;
            database.close().await;
            println!("migrations applied to {}", redact(&args.database_url));
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Rebuild(args)) => rebuild(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let admin_token = match args.admin_token {
        Some(token) if token.trim().len() >= 16 => token,
        Some(_) => anyhow::bail!("--admin-token must be at least 16 characters"),
        None => {
            let token = format!("dga_{}", hex::encode(rand::random::<[u8; 24]>()));
            tracing::warn!(admin_token = %token, "no --admin-token given; generated one for this run");
            token
        }
    };
    if args.no_worker {
        tracing::info!("built-in worker disabled (--no-worker)");
    }
    let worker = (!args.no_worker).then(|| BuiltInWorker {
        concurrency: usize::from(args.worker_concurrency),
        provider: SimulatedProvider {
            latency: args.sim_latency_ms,
            failure_rate: args.sim_failure_rate,
        },
    });
    let settings = Settings {
        database_url: args.database.database_url,
        listen: args.listen,
        admin_token,
        max_connections: args.db_pool,
        lease: std::time::Duration::from_secs(args.lease_seconds),
        worker,
    };
    let application = Application::build(&settings).await?;
    application.run_until(shutdown_signal()).await
}

async fn rebuild(args: DatabaseArgs) -> anyhow::Result<()> {
    let database = Database::connect(&args.database_url, 2).await?;
    database.migrate().await?;
    let total = crate::catchup::head(&database).await?;
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} rebuilding [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let applied = crate::catchup::rebuild(&database, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    database.close().await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {} projections from {applied} events in {seconds:.2}s ({:.0} events/s)",
        projections::PROJECTIONS.len(),
        applied as f64 / seconds.max(1e-9)
    );
    Ok(())
}

fn parse_latency(text: &str) -> Result<std::ops::RangeInclusive<std::time::Duration>, String> {
    let ms = |part: &str| {
        part.trim()
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("`{part}` is not a number of milliseconds"))
    };
    let (low, high) = match text.split_once("..") {
        Some((low, high)) => (ms(low)?, ms(high)?),
        None => (ms(text)?, ms(text)?),
    };
    if low > high {
        return Err("the minimum is above the maximum".to_owned());
    }
    Ok(low..=high)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("`{text}` is not a share between 0.0 and 1.0")),
    }
}
