//! The command line: `serve`, `migrate`, `projections rebuild`, `audit`, `bench`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use aggregates::ids::{ConnectionId, TenantId};
use aggregates::Timestamp;
use clap::{Args, Parser, Subcommand};

use crate::audit::{self, ExportFormat, ReplayFormat};
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
    /// Replay, verify and export the decision history (read-only).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Measure the gate beside the physical floor, on scratch databases.
    Bench(crate::bench::BenchArgs),
}

/// `projections` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Drop every view and rebuild it from the event log.
    Rebuild(DatabaseArgs),
}

/// `audit` subcommands. Each exits non-zero when anything it read does not verify.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print every decision of a connection or tenant, re-derived from the events before it.
    Replay(ReplayArgs),
    /// Walk every stream: sequences, the tamper-evidence chain, every decision.
    Verify(DatabaseArgs),
    /// A tenant's decisions for an external auditor, one per line.
    Export(ExportArgs),
}

/// `audit replay` options.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The provider connection whose decisions to replay.
    #[arg(long, required_unless_present = "tenant", conflicts_with = "tenant")]
    connection: Option<ConnectionId>,
    /// The tenant: its blocked starts and every connection's decisions, in time order.
    #[arg(long)]
    tenant: Option<TenantId>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: ReplayFormat,
}

/// `audit export` options.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The tenant.
    #[arg(long)]
    tenant: TenantId,
    /// Output format.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Only decisions at or after this instant (RFC 3339).
    #[arg(long)]
    since: Option<Timestamp>,
    /// Only decisions before this instant (RFC 3339).
    #[arg(long)]
    until: Option<Timestamp>,
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
        Command::Audit(command) => run_audit(command).await,
    }
}

async fn run_audit(command: AuditCommand) -> anyhow::Result<()> {
    let database_url = match &command {
        AuditCommand::Replay(args) => &args.database.database_url,
        AuditCommand::Verify(args) => &args.database_url,
        AuditCommand::Export(args) => &args.database.database_url,
    };
    let database = Database::open_existing(database_url, 2).await?;
    let mut out = std::io::stdout().lock();
    match command {
        AuditCommand::Replay(args) => {
            let history = match (args.connection, args.tenant) {
                (Some(id), _) => audit::connection_history(&database, id).await?,
                (None, Some(id)) => audit::tenant_history(&database, id).await?,
                (None, None) => unreachable!("clap requires one of them"),
            };
            match args.format {
                ReplayFormat::Text => audit::write_text(&history, &mut out)?,
                ReplayFormat::Jsonl => audit::write_jsonl(&history, &mut out)?,
            }
            out.flush()?;
            history.ensure_verified()
        }
        AuditCommand::Export(args) => {
            let history = audit::tenant_history(&database, args.tenant)
                .await?
                .between(args.since, args.until);
            match args.format {
                ExportFormat::Jsonl => audit::write_jsonl(&history, &mut out)?,
                ExportFormat::Csv => audit::write_csv(&history, &mut out)?,
            }
            out.flush()?;
            history.ensure_verified()
        }
        AuditCommand::Verify(_) => {
            let report = audit::verify(&database, std::io::stderr().is_terminal()).await?;
            for finding in &report.findings {
                writeln!(out, "PROBLEM {finding}")?;
            }
            writeln!(
                out,
                "verified {} event(s) in {} stream(s) in {:.2?}: {} decision(s) re-derived, {} problem(s){}",
                report.events,
                report.streams,
                report.elapsed,
                report.decisions,
                report.findings.len(),
                match report.undecoded_streams {
                    0 => String::new(),
                    n => format!("; {n} stream(s) of unknown types had only their chain checked"),
                }
            )?;
            out.flush()?;
            match report.findings.first() {
                None => Ok(()),
                Some(first) => anyhow::bail!(
                    "audit verify found {} problem(s); the first: {first}",
                    report.findings.len()
                ),
            }
        }
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
    let applied = crate::catchup::rebuild(&database, |step| match step {
        crate::catchup::Rebuilt::Read(events) => bar.set_position(events),
        crate::catchup::Rebuilt::Written { rows, of } => {
            if bar.length() != Some(of as u64) {
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} writing views [{bar:40}] {pos}/{len} rows ({per_sec})",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bar.set_length(of as u64);
            }
            bar.set_position(rows as u64);
        }
    })
    .await?;
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
