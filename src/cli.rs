//! The command line: `serve`, `migrate`, `projections rebuild`, `audit`, `bench`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// The admin token, at least 16 characters. On the command line it shows in `ps`:
    /// prefer the environment or --admin-token-file. When neither is given, a random
    /// token is generated for this run and printed on stderr as `admin token: …`.
    #[arg(
        long,
        env = "GATE_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    admin_token: Option<String>,
    /// A file holding the admin token (at least 16 characters; a trailing newline is
    /// ignored): the same token across restarts, and never in `ps`.
    #[arg(long, env = "GATE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
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
    /// Seconds a request's head (request line and headers) may take to arrive; also how
    /// long an idle kept-alive connection stays open.
    #[arg(long, env = "GATE_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a request body may take to arrive in full (then 408).
    #[arg(long, env = "GATE_BODY_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout: u64,
    /// Connections served at once; more wait in the operating system's listen backlog.
    #[arg(long, env = "GATE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
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
    // Checked before anything is opened: a bad token starts nothing and writes nothing.
    let admin_token = AdminToken::resolve(args.admin_token, args.admin_token_file.as_deref())?;
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
        admin_token: admin_token.token.clone(),
        max_connections: args.db_pool,
        lease: std::time::Duration::from_secs(args.lease_seconds),
        worker,
        limits: crate::server::Limits {
            header_timeout: std::time::Duration::from_secs(args.header_timeout),
            body_timeout: std::time::Duration::from_secs(args.body_timeout),
            max_connections: args.max_connections as usize,
        },
    };
    let application = Application::build(&settings).await?;
    if admin_token.generated {
        // A line of its own, not a field of a log record: the one thing a newcomer must
        // find. Printed once the server is bound, so it never names a server that failed.
        eprintln!("admin token: {}", admin_token.token);
        tracing::warn!(
            "no admin token given: generated the one printed above, valid until this process \
             stops; set GATE_ADMIN_TOKEN or --admin-token-file to keep one across restarts"
        );
    }
    application.run_until(shutdown_signal()).await
}

/// The shortest admin token `serve` accepts, in characters.
pub const ADMIN_TOKEN_MIN_CHARS: usize = 16;

/// A command line that parsed but cannot be used (exit code 2, like a parse error);
/// nothing has been opened or written when it is returned.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// The admin token `serve` runs with.
#[derive(Debug)]
struct AdminToken {
    token: String,
    /// Made up for this run because none was given; printed at start-up.
    generated: bool,
}

impl AdminToken {
    /// From `--admin-token` / `GATE_ADMIN_TOKEN`, else `--admin-token-file` /
    /// `GATE_ADMIN_TOKEN_FILE`, else a random one (clap refuses both at once).
    fn resolve(flag: Option<String>, file: Option<&Path>) -> Result<Self, UsageError> {
        let token = match (flag, file) {
            (Some(token), _) => Self::check(token, "--admin-token")?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    UsageError(format!(
                        "cannot read the admin token file `{}` (--admin-token-file): {e}",
                        path.display()
                    ))
                })?;
                let token = text.trim_end_matches(['\n', '\r']).to_owned();
                Self::check(token, &format!("the admin token in `{}`", path.display()))?
            }
            (None, None) => {
                return Ok(Self {
                    token: format!("dga_{}", hex::encode(rand::random::<[u8; 24]>())),
                    generated: true,
                })
            }
        };
        Ok(Self {
            token,
            generated: false,
        })
    }

    fn check(token: String, what: &str) -> Result<String, UsageError> {
        let length = token.trim().chars().count();
        if length < ADMIN_TOKEN_MIN_CHARS {
            return Err(UsageError(format!(
                "{what} must be at least {ADMIN_TOKEN_MIN_CHARS} characters (it has {length})"
            )));
        }
        Ok(token)
    }
}

/// An error and its causes on one line, each cause once: a cause whose text the
/// message before it already ends with (`sqlx` repeats its IO error) is left out.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        previous = text;
    }
    line
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Like `sqlx::Error::Io`: its message ends with its source's.
    #[derive(Debug, thiserror::Error)]
    #[error("error communicating with database: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn it_should_print_a_cause_its_error_already_ends_with_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(Repeats(refused)).context("cannot connect");
        assert_eq!(
            error_line(&error),
            "cannot connect: error communicating with database: refused"
        );
    }

    #[test]
    fn it_should_keep_every_cause_that_adds_something() {
        let error = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(error_line(&error), "top: middle: root");
    }

    #[test]
    fn it_should_refuse_an_admin_token_under_sixteen_characters() {
        let error = AdminToken::resolve(Some("fifteen-chars-x".into()), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--admin-token must be at least 16 characters (it has 15)"
        );
        assert!(
            !AdminToken::resolve(Some("sixteen-chars-xx".into()), None)
                .unwrap()
                .generated
        );
    }

    #[test]
    fn it_should_read_a_token_file_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "a-token-from-a-file\n").unwrap();
        let token = AdminToken::resolve(None, Some(&path)).unwrap();
        assert_eq!(token.token, "a-token-from-a-file");
        assert!(!token.generated);
    }

    #[test]
    fn it_should_not_count_the_newline_of_a_short_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "fifteen-chars-x\r\n").unwrap();
        let error = AdminToken::resolve(None, Some(&path)).unwrap_err();
        assert!(error.to_string().ends_with("(it has 15)"), "{error}");
    }

    #[test]
    fn it_should_name_a_token_file_it_cannot_read() {
        let error = AdminToken::resolve(None, Some(Path::new("/nonexistent/token"))).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "cannot read the admin token file `/nonexistent/token` (--admin-token-file): "
            ),
            "{error}"
        );
    }

    #[test]
    fn it_should_generate_a_token_when_none_is_given() {
        let token = AdminToken::resolve(None, None).unwrap();
        assert!(token.generated);
        assert!(token.token.chars().count() >= ADMIN_TOKEN_MIN_CHARS);
    }
}
