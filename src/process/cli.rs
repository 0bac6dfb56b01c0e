//! The command line: `serve`, `migrate`, `projections rebuild`, `audit`.
//!
//! Why one file of about 700 lines: every subcommand's flags (clap derives)
//! beside the code that runs them, so a flag and its effect are read together;
//! the work itself lives in the layers below.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aggregates::catalog::OperationKind;
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::Timestamp;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::audit::{self, ExportFormat, ReplayFormat, VerifyFormat};
use crate::process::server::WorkerProvider;
use crate::process::server::{shutdown_signal, Application, BuiltInWorker, Settings};
use crate::process::telemetry::{self, LogFormat};
use crate::process::usage::UsageError;
use crate::process::worker::SimulatedProvider;
use crate::provider::graph::GraphConfig;
use crate::write::store::{redact, Backend, Database, DEFAULT_DATABASE_URL};

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
}

/// `projections` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Drop every view and rebuild it from the event log.
    Rebuild(DatabaseArgs),
}

/// `audit` subcommands. Each exits 1 when anything it read does not verify.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print every decision of a connection or tenant, re-derived from the events before it.
    Replay(ReplayArgs),
    /// Walk every stream and the whole log: sequences, both tamper-evidence chains,
    /// every decision; with --heads, also prove that everything an anchor covered is
    /// still there, unchanged.
    Verify(VerifyArgs),
    /// Write the log head and every stream's head as JSON: an anchor, to keep where
    /// the gate's writers cannot reach (a ticket, a signed mail), for `verify --heads`.
    Heads(HeadsArgs),
    /// Decisions (or every event) of a tenant or of all, for an external auditor: one
    /// row each with its hash, log position and verification, and a manifest with the
    /// file's SHA-256.
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
    /// The tenant: its stream and every connection it lists.
    #[arg(
        long,
        required_unless_present = "all_tenants",
        conflicts_with = "all_tenants"
    )]
    tenant: Option<TenantId>,
    /// Every tenant in the store, merged.
    #[arg(long)]
    all_tenants: bool,
    /// Output format.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// `decisions`: one row per start decision; `all`: one row per event (admin
    /// actions, consent and credential changes, members, run lifecycle, decisions).
    #[arg(long, value_enum, default_value = "decisions")]
    events: ExportEvents,
    /// Only rows at or after this instant: RFC 3339, or a date (`2026-12-01`, midnight UTC).
    #[arg(long, value_parser = parse_instant)]
    since: Option<Timestamp>,
    /// Only rows before this instant: RFC 3339, or a date (midnight UTC).
    #[arg(long, value_parser = parse_instant)]
    until: Option<Timestamp>,
    /// Only decisions with this outcome.
    #[arg(long, value_enum)]
    outcome: Option<audit::Outcome>,
    /// Only decisions for this operation (e.g. `inventory.sync`).
    #[arg(long, value_parser = parse_operation)]
    operation: Option<OperationKind>,
    /// Only rows of this actor: a user id, `admin` or `system`.
    #[arg(long)]
    actor: Option<String>,
    /// Only rows on this provider connection.
    #[arg(long)]
    connection: Option<ConnectionId>,
    /// Write the export to FILE (an existing file is refused) and its manifest
    /// beside it, to FILE.manifest.json, unless --manifest names another file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write a manifest to FILE: the row count and the SHA-256 of the export, the
    /// scope and filters, and whether everything verified.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
}

/// What `audit export` writes a row for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportEvents {
    /// Start decisions only.
    Decisions,
    /// Every event.
    All,
}

/// `--since`/`--until`: RFC 3339, or a plain date at midnight UTC.
fn parse_instant(text: &str) -> Result<Timestamp, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|date| date.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| format!("`{text}` is neither an RFC 3339 instant nor a date (YYYY-MM-DD)"))
}

fn parse_operation(text: &str) -> Result<OperationKind, String> {
    text.parse().map_err(|e| format!("{e}"))
}

/// `audit verify` options.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// An anchor written earlier by `audit heads`: also prove that everything it
    /// covered (the log up to its head, every stream up to its head) is still there, unchanged.
    #[arg(long, value_name = "FILE")]
    heads: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: VerifyFormat,
}

/// `audit heads` options.
#[derive(Debug, Args)]
pub struct HeadsArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Write the document to FILE instead of stdout (an existing file is refused).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
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
    /// A PostgreSQL hot standby of --database-url (`postgres://…`) that serves the read
    /// API's view queries; writes, the sequencer and the projectors stay on the primary.
    /// Reads wait (bounded) until the standby shows the caller's own writes.
    #[arg(long, env = "GATE_READ_DATABASE_URL", value_name = "URL")]
    read_database_url: Option<String>,
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
    /// Seed an EMPTY store with a demo before serving — tenants, connections, users and
    /// runs for every outcome (accepted, deduped, scope busy, blocked three ways), a
    /// restore run, an onboarding tenant, a failed run, a readonly user and another team —
    /// and print the console's URL and each demo user's token on stdout. A store that
    /// already holds data is refused (exit code 2) and nothing is written.
    #[arg(long)]
    demo: bool,
    /// A file holding the key provider secrets are sealed under: 64 hex digits (32
    /// random bytes, e.g. `openssl rand -hex 32`; a trailing newline is ignored). On the
    /// embedded SQLite default without it, a key file is created beside the database
    /// file (mode 600) on first use; on PostgreSQL without it, storing a secret is refused.
    #[arg(long, env = "GATE_SECRETS_KEY_FILE", value_name = "FILE")]
    secrets_key_file: Option<PathBuf>,
    /// What the built-in worker executes runs with: `graph` (Microsoft Graph, with each
    /// connection's stored secret) or `simulated`. Default `graph`; `--demo` implies
    /// `simulated` unless this is given.
    #[arg(long, env = "GATE_PROVIDER", value_enum)]
    provider: Option<ProviderChoice>,
    /// Microsoft Graph's root (`http://` accepted, for fakes and air-gapped setups).
    #[arg(
        long,
        env = "GATE_GRAPH_BASE_URL",
        default_value = "https://graph.microsoft.com"
    )]
    graph_base_url: String,
    /// The token authority's root.
    #[arg(
        long,
        env = "GATE_GRAPH_AUTHORITY_URL",
        default_value = "https://login.microsoftonline.com"
    )]
    graph_authority_url: String,
}

/// `serve --provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderChoice {
    /// Microsoft Graph.
    Graph,
    /// The simulated provider (random latency and failures).
    Simulated,
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
        Command::Audit(command) => run_audit(command).await,
    }
}

async fn run_audit(command: AuditCommand) -> anyhow::Result<()> {
    let database_url = match &command {
        AuditCommand::Replay(args) => &args.database.database_url,
        AuditCommand::Verify(args) => &args.database.database_url,
        AuditCommand::Heads(args) => &args.database.database_url,
        AuditCommand::Export(args) => &args.database.database_url,
    };
    if let AuditCommand::Export(ExportArgs {
        since: Some(since),
        until: Some(until),
        ..
    }) = &command
    {
        if since > until {
            return Err(UsageError(format!(
                "--since ({}) is after --until ({})",
                audit::record::timestamp(since),
                audit::record::timestamp(until)
            ))
            .into());
        }
    }
    // Read before anything is opened: a bad anchor is one clear error.
    let anchor = match &command {
        AuditCommand::Verify(VerifyArgs {
            heads: Some(path), ..
        }) => Some(read_anchor(path)?),
        _ => None,
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
        AuditCommand::Export(args) => export(&database, args, &mut out).await,
        AuditCommand::Verify(args) => {
            let report =
                audit::verify_against(&database, anchor, std::io::stderr().is_terminal()).await?;
            match args.format {
                VerifyFormat::Text => audit::write_verification_text(&report, &mut out)?,
                VerifyFormat::Json => audit::write_verification_json(&report, &mut out)?,
            }
            out.flush()?;
            match report.first_problem() {
                None => Ok(()),
                Some(first) => anyhow::bail!(
                    "audit verify found {} problem(s); the first: {first}",
                    report.problems()
                ),
            }
        }
        AuditCommand::Heads(args) => {
            let heads = audit::heads(&database).await?;
            let text = serde_json::to_string_pretty(&heads)? + "\n";
            match &args.out {
                None => out.write_all(text.as_bytes())?,
                Some(path) => write_new_file(path, text.as_bytes())?,
            }
            out.flush()?;
            Ok(())
        }
    }
}

async fn export(
    database: &Database,
    args: ExportArgs,
    stdout: &mut impl Write,
) -> anyhow::Result<()> {
    let history = match args.tenant {
        Some(tenant) => audit::tenant_history(database, tenant).await?,
        None => audit::all_tenants_history(database).await?,
    };
    // Judged on everything read, before the filters narrow what is written.
    let problems = history.problems();
    let verified = history.ensure_verified();
    let filter = audit::Filter {
        outcome: args.outcome,
        operation: args.operation,
        actor: args.actor.clone(),
        connection: args.connection,
    };
    let mut file = match &args.out {
        None => None,
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("cannot create `{}` (--out)", path.display()))?,
        ),
    };
    let target: &mut dyn Write = match &mut file {
        Some(file) => file,
        None => stdout,
    };
    let mut out = audit::Digesting::new(target);
    let rows = match args.events {
        ExportEvents::Decisions => {
            let history = history.between(args.since, args.until).matching(&filter);
            let rows = history.records().count();
            match args.format {
                ExportFormat::Jsonl => audit::write_jsonl(&history, &mut out)?,
                ExportFormat::Csv => audit::write_csv(&history, &mut out)?,
            }
            rows
        }
        ExportEvents::All => {
            let records = history.event_records(args.since, args.until, &filter);
            let rows = records.len();
            match args.format {
                ExportFormat::Jsonl => audit::write_jsonl_rows(records, &mut out)?,
                ExportFormat::Csv => {
                    audit::write_csv_rows(&audit::events::FIELDS, records, &mut out)?
                }
            }
            rows
        }
    };
    out.flush()?;
    let (bytes, sha256) = out.finish();
    if let Some(file) = &file {
        file.sync_all().context("writing the export")?;
    }
    let manifest_path = args.manifest.clone().or_else(|| {
        args.out.as_ref().map(|out| {
            let mut name = out.as_os_str().to_owned();
            name.push(".manifest.json");
            PathBuf::from(name)
        })
    });
    if let Some(path) = manifest_path {
        let manifest = serde_json::json!({
            "format": "dispatch-gate-export-manifest/1",
            "file": args.out.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy()),
            "rows": rows,
            "bytes": bytes,
            "sha256": sha256,
            "export_format": match args.format { ExportFormat::Jsonl => "jsonl", ExportFormat::Csv => "csv" },
            "events": match args.events { ExportEvents::Decisions => "decisions", ExportEvents::All => "all" },
            "tenant_id": args.tenant.map(|t| t.to_string()),
            "all_tenants": args.all_tenants,
            "since": args.since.as_ref().map(audit::record::timestamp),
            "until": args.until.as_ref().map(audit::record::timestamp),
            "outcome": args.outcome.map(audit::Outcome::as_str),
            "operation": args.operation.map(|o| o.as_str()),
            "actor": args.actor,
            "connection": args.connection.map(|c| c.to_string()),
            "verified": problems == 0,
            "problems": problems,
            "generated_at": audit::record::timestamp(&chrono::Utc::now()),
            "version": env!("CARGO_PKG_VERSION"),
        });
        let text = serde_json::to_string_pretty(&manifest)? + "\n";
        write_new_file(&path, text.as_bytes())?;
    }
    verified
}

/// Reads an anchor written by `audit heads`.
fn read_anchor(path: &Path) -> anyhow::Result<audit::log::Heads> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the anchor `{}` (--heads)", path.display()))?;
    audit::log::Heads::parse(&text).map_err(|reason| {
        anyhow::Error::new(UsageError(format!(
            "`{}` is not an anchor written by `audit heads`: {reason}",
            path.display()
        )))
    })
}

/// Writes a file that must not exist yet: an anchor or a manifest is never overwritten.
fn write_new_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing `{}`", path.display()))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Checked before anything is opened: a bad token starts nothing and writes nothing.
    let admin_token = AdminToken::resolve(args.admin_token, args.admin_token_file.as_deref())?;
    if let Some(url) = &args.read_database_url {
        if Backend::of_url(&args.database.database_url)? != Backend::Postgres
            || Backend::of_url(url)? != Backend::Postgres
        {
            return Err(UsageError(
                "--read-database-url needs PostgreSQL on both sides: a hot standby of a \
                 postgres:// --database-url"
                    .to_owned(),
            )
            .into());
        }
    }
    let secrets_key = args
        .secrets_key_file
        .as_deref()
        .map(crate::write::secrets::SealingKey::load)
        .transpose()
        .map_err(|error| UsageError(error.to_string()))?;
    if args.no_worker {
        tracing::info!("built-in worker disabled (--no-worker)");
    }
    let choice = args.provider.unwrap_or(if args.demo {
        ProviderChoice::Simulated
    } else {
        ProviderChoice::Graph
    });
    let provider = match choice {
        ProviderChoice::Simulated => WorkerProvider::Simulated(SimulatedProvider {
            latency: args.sim_latency_ms,
            failure_rate: args.sim_failure_rate,
        }),
        ProviderChoice::Graph => WorkerProvider::Graph(
            GraphConfig::new(&args.graph_base_url, &args.graph_authority_url)
                .map_err(|error| UsageError(error.to_string()))?,
        ),
    };
    let worker = (!args.no_worker).then(|| BuiltInWorker {
        concurrency: usize::from(args.worker_concurrency),
        provider,
    });
    let settings = Settings {
        database_url: args.database.database_url,
        listen: args.listen,
        admin_token: admin_token.token.clone(),
        max_connections: args.db_pool,
        read_database_url: args.read_database_url,
        lease: std::time::Duration::from_secs(args.lease_seconds),
        worker,
        limits: crate::web::serve::Limits {
            header_timeout: std::time::Duration::from_secs(args.header_timeout),
            body_timeout: std::time::Duration::from_secs(args.body_timeout),
            max_connections: args.max_connections as usize,
        },
        demo: args.demo,
        secrets_key,
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
    if let Some(demo) = application.demo() {
        // On stdout, as one block: what a newcomer needs to click through the demo.
        let banner = demo.banner(&format!("http://{}", application.local_addr()?));
        let mut out = std::io::stdout().lock();
        out.write_all(banner.as_bytes())
            .and_then(|()| out.flush())
            .context("printing the demo's users and tenants")?;
    }
    application.run_until(shutdown_signal()).await
}

/// The shortest admin token `serve` accepts, in characters.
pub const ADMIN_TOKEN_MIN_CHARS: usize = 16;

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

async fn rebuild(args: DatabaseArgs) -> anyhow::Result<()> {
    let database = Database::connect(&args.database_url, 2).await?;
    database.migrate().await?;
    let total = crate::write::store::log::head(&database).await?;
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} rebuilding [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let applied = crate::read::catchup::rebuild(&database, |step| match step {
        crate::read::catchup::Rebuilt::Read(events) => bar.set_position(events),
        crate::read::catchup::Rebuilt::Written { rows, of } => {
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
