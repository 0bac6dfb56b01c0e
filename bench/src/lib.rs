//! `dispatch-gate-bench`: the gate measured beside the physical floor, in one
//! run, on scratch databases that are dropped at the end.
//!
//! A crate of its own, built on the public API of `dispatch-gate` and its
//! domain crates only; the production binary does not contain it.
//!
//! # Layout
//! - [`gate`]: the connection executor the bench drives decisions through,
//!   built as the application service builds its own.
//! - [`scratch`]: scratch databases (`dg_bench_<uuid>` on a PostgreSQL server,
//!   or SQLite files in a temp dir), dropped at the end, also on error or Ctrl-C.
//! - [`seed`]: valid event streams, decided in memory by the aggregates
//!   themselves and written in bulk, never through the executor.
//! - [`load`]: a fixed number of operations shared by N clients; every latency
//!   is kept, so p50/p99 are exact.
//! - [`http`]: `serve` of the `dispatch-gate` binary (`--gate-binary`) as a
//!   child process, and a load generator over loopback.
//!
//! # Scenarios
//! For each client count, on one database and one pool size:
//! - `floor`: one single-statement transaction per operation inserting one row
//!   shaped like a decision event (same columns, indexes and payload size) into
//!   `bench_floor`. Nothing records a decision durably faster.
//! - `naive`: one transaction that reads a stream and appends the next
//!   sequence (`bench_naive`): a plain load-decide-append.
//! - `gate-spread`: starts through the gate's executor (load, decide, commit),
//!   spread over many connections so clients never share one.
//! - `gate-hot`: every client on the same connection.
//! - `http-spread`: the spread load through `serve` in a child process.
//!
//! Then `history-N-cold|warm` (decision latency with N prior events, loading
//! the stream from its snapshot or finding it warm), `catch-up` and
//! `rebuild` (events per second through every projection).

use dispatch_gate::on_pool;

mod cpu;
mod gate;
mod http;
mod load;
mod scratch;
pub use scratch::Scratches;
mod seed;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aggregates::catalog::OperationKind;
use aggregates::connection::{ConnectionCommand, ProviderConnection};
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::Actor;
use anyhow::Context;
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::Row as _;
use uuid::Uuid;

use cpu::Cpu;
use dispatch_gate::read::catchup::{Catchup, Failpoint};
use dispatch_gate::write::executor::{CommandError, Executor};
use dispatch_gate::write::store::Database;
use load::{drive, Measured};
use seed::{Sink, Table, World};

/// A scenario, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// Baseline: one event-shaped row inserted per transaction.
    Floor,
    /// Baseline: read a stream, append the next sequence, in one transaction.
    Naive,
    /// Starts through the executor, on connections no two clients share.
    Spread,
    /// Starts through the executor, every client on one connection.
    Hot,
    /// The spread load through `serve` over loopback.
    Http,
    /// Decision latency against the length of the connection's history.
    History,
    /// Events per second the catch-up projectors apply.
    Catchup,
    /// Events per second of `projections rebuild`.
    Rebuild,
    /// The gate at its maximum start rate with the projector running: how far
    /// the views trail the log.
    Sustained,
}

/// `bench` options. Sizes left out take their defaults, or their `--smoke` sizes.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// `sqlite` (files in a temp dir) or a PostgreSQL server URL, on which
    /// scratch databases `dg_bench_<uuid>` are created and dropped at the end.
    /// Existing databases are never opened.
    #[arg(long, default_value = "sqlite")]
    database_url: String,
    /// Database pool size, the same for every scenario and for `serve`.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pool: u32,
    /// Concurrent clients; each scenario runs once per count [default: 1,4,16,64; smoke: 1,4].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: Option<Vec<u32>>,
    /// Operations per scenario and client count [default: 2000; smoke: 40].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    ops: Option<u64>,
    /// Scenarios to run [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    scenarios: Option<Vec<Scenario>>,
    /// Prior events on the connection, one history run each [default: 10,1000,100000; smoke: 10,100].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(3..=10_000_000))]
    history: Option<Vec<u64>>,
    /// Sequential starts per history length: a pass of cold ones (the stream
    /// loaded from its snapshot), then a pass of warm ones [default: 200; smoke: 20].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    history_ops: Option<u64>,
    /// Events in the log the catch-up projectors apply from zero [default: 100000; smoke: 500].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    catchup_events: Option<u64>,
    /// Events in the log that is rebuilt [default: 1000000; smoke: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    rebuild_events: Option<u64>,
    /// Seconds of the sustained scenario [default: 60; smoke: 2].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sustained_seconds: Option<u64>,
    /// The `dispatch-gate` binary whose `serve` the `http` scenario runs in a
    /// child process [default: `dispatch-gate` in this executable's directory].
    #[arg(long, value_name = "PATH")]
    gate_binary: Option<PathBuf>,
    /// Tiny sizes that finish in seconds (CI).
    #[arg(long)]
    smoke: bool,
}

/// The sizes of one run, defaults resolved.
#[derive(Debug, Clone)]
struct Plan {
    database_url: String,
    pool: u32,
    clients: Vec<usize>,
    ops: usize,
    scenarios: Vec<Scenario>,
    history: Vec<usize>,
    history_ops: usize,
    catchup_events: usize,
    rebuild_events: usize,
    sustained: Duration,
    gate_binary: Option<PathBuf>,
}

impl Plan {
    fn new(args: BenchArgs) -> Self {
        let smoke = args.smoke;
        let pick = |given: Option<u64>, default: u64, small: u64| {
            given.unwrap_or(if smoke { small } else { default }) as usize
        };
        let clients = args.clients.unwrap_or_else(|| {
            if smoke {
                vec![1, 4]
            } else {
                vec![1, 4, 16, 64]
            }
        });
        let history = args.history.unwrap_or_else(|| {
            if smoke {
                vec![10, 100]
            } else {
                vec![10, 1_000, 100_000]
            }
        });
        let mut scenarios = args
            .scenarios
            .unwrap_or_else(|| <Scenario as clap::ValueEnum>::value_variants().to_vec());
        scenarios.sort_unstable();
        scenarios.dedup();
        Self {
            database_url: args.database_url,
            pool: args.pool,
            clients: clients.into_iter().map(|c| c as usize).collect(),
            ops: pick(args.ops, 2_000, 40),
            scenarios,
            history: history.into_iter().map(|h| h as usize).collect(),
            history_ops: pick(args.history_ops, 200, 20),
            catchup_events: pick(args.catchup_events, 100_000, 500),
            rebuild_events: pick(args.rebuild_events, 1_000_000, 1_000),
            sustained: Duration::from_secs(pick(args.sustained_seconds, 60, 2) as u64),
            gate_binary: args.gate_binary,
        }
    }

    /// The `dispatch-gate` binary to serve with: the one given, else the one
    /// built beside this executable (`target/<profile>/`).
    fn gate_binary(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.gate_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("finding this executable")?
                .with_file_name(format!("dispatch-gate{}", std::env::consts::EXE_SUFFIX)),
        };
        anyhow::ensure!(
            path.is_file(),
            "no `dispatch-gate` binary at {} for the http scenario: build it \
             (`cargo build --release -p dispatch-gate`) or pass --gate-binary",
            path.display()
        );
        Ok(path)
    }

    fn runs(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }
}

/// Connections (and naive streams) a spread run uses: about ten operations
/// each, so streams stay short (3 to 13 events), and a multiple of the client
/// count, so each client has its own (see [`load::Turn::own_target`]).
fn spread_streams(ops: usize, clients: usize) -> usize {
    let clients = clients.max(1);
    (ops / 10).max(clients).div_ceil(clients) * clients
}

/// Consecutive hot operations on one connection before the next one is used,
/// so that the hot stream stays as short as the spread ones (up to 103 events)
/// instead of measuring a history of thousands of events.
const HOT_WINDOW: usize = 100;

/// History scenario: prior events seeded per length, at most. Up to this,
/// each pass of starts visits every connection once (so the history grows by
/// two events at most); beyond it, starts share the few connections seeded.
const HISTORY_SEED_BUDGET: usize = 200_000;

/// The client count the targets are stated at.
const TARGET_CLIENTS: usize = 16;

/// Runs the bench and prints its table. Scratch databases are dropped and the
/// `serve` child is killed whatever happens, Ctrl-C included.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args);
    let mut scratches = Scratches::new(&plan.database_url).await?;
    let gate = if plan.runs(Scenario::Http) {
        Some(plan.gate_binary()?)
    } else {
        None
    };
    let outcome = tokio::select! {
        outcome = bench(&plan, gate.as_deref(), &mut scratches) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    scratches.drop_all().await;
    outcome
}

async fn bench(
    plan: &Plan,
    gate: Option<&std::path::Path>,
    scratches: &mut Scratches,
) -> anyhow::Result<()> {
    let (payload, metadata) = seed::sample_decision().await?;
    let sample = Arc::new(Sample { payload, metadata });
    let mut report = Report::default();
    let main = [
        Scenario::Floor,
        Scenario::Naive,
        Scenario::Spread,
        Scenario::Hot,
        Scenario::History,
        Scenario::Sustained,
    ];
    let mut header_done = false;
    if main.iter().any(|s| plan.runs(*s)) {
        let url = scratches.create("main").await?;
        let database = connect(&url, plan.pool).await?;
        create_bench_tables(&database).await?;
        report.header(plan, &database, &sample).await?;
        header_done = true;
        let result = main_scenarios(plan, &database, &sample, &mut report).await;
        database.close().await;
        result?;
    }
    if let Some(gate) = gate {
        let url = scratches.create("http").await?;
        if !header_done {
            // `serve` migrates its database itself; this only reads settings.
            let database = Database::connect(&url, 1).await?;
            report.header(plan, &database, &sample).await?;
            database.close().await;
            header_done = true;
        }
        http_spread(plan, gate, &url, scratches.dir(), &sample, &mut report).await?;
    }
    if plan.runs(Scenario::Catchup) || plan.runs(Scenario::Rebuild) {
        let url = scratches.create("log").await?;
        let database = connect(&url, plan.pool).await?;
        if !header_done {
            report.header(plan, &database, &sample).await?;
        }
        let result = log_scenarios(plan, &database, &mut report).await;
        database.close().await;
        result?;
    }
    report.targets(plan);
    Ok(())
}

async fn connect(url: &str, pool: u32) -> anyhow::Result<Database> {
    let database = Database::connect(url, pool).await?;
    database.migrate().await?;
    Ok(database)
}

/// A measurement and the CPU time spent during it.
type Timed = (Measured, Cpu);

/// Runs a measurement, reading CPU time before and after (`serve`: the child's pid).
async fn timed(
    serve: Option<u32>,
    run: impl std::future::Future<Output = anyhow::Result<Measured>>,
) -> anyhow::Result<Timed> {
    let before = Cpu::now(serve);
    let measured = run.await?;
    Ok((measured, Cpu::now(serve).since(&before)))
}

/// A real decision event's payload and metadata: what the baselines write.
struct Sample {
    payload: Value,
    metadata: Value,
}

async fn main_scenarios(
    plan: &Plan,
    database: &Database,
    sample: &Arc<Sample>,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Two executors on one database: the second stands for a second `serve`
    // process in the hot scenario; every other scenario uses the first.
    let executor = || Arc::new(gate::connection_executor(database));
    let gates = [executor(), executor()];
    let mut out = Vec::new();
    let mut world = World::new(&mut out).await?;
    let mut sink = Sink::new(database, Table::Events).await?;
    sink.extend(out).await?;
    sink.flush().await?;
    for &clients in &plan.clients {
        if plan.runs(Scenario::Floor) {
            let measured = timed(None, floor(database, clients, plan.ops, sample)).await?;
            report.add(Kind::Floor, clients, measured);
        }
        if plan.runs(Scenario::Naive) {
            let streams =
                naive_streams(database, &mut world, spread_streams(plan.ops, clients)).await?;
            let measured = timed(None, naive(database, clients, plan.ops, sample, streams)).await?;
            report.add(Kind::Naive, clients, measured);
        }
        if plan.runs(Scenario::Spread) {
            let targets =
                seed_connections(database, &mut world, spread_streams(plan.ops, clients)).await?;
            let run = gate_starts(
                &gates[..1],
                &world.operator,
                clients,
                plan.ops,
                targets,
                Placement::Own,
                None,
            );
            let measured = timed(None, run).await?;
            report.add(Kind::Spread, clients, measured);
        }
        if plan.runs(Scenario::Hot) {
            let targets =
                seed_connections(database, &mut world, plan.ops.div_ceil(HOT_WINDOW)).await?;
            let hot = Placement::Shared { window: HOT_WINDOW };
            let run = gate_starts(
                &gates[..1],
                &world.operator,
                clients,
                plan.ops,
                targets,
                hot,
                None,
            );
            let measured = timed(None, run).await?;
            report.add(Kind::Hot, clients, measured);
            if clients > 1 {
                let targets =
                    seed_connections(database, &mut world, plan.ops.div_ceil(HOT_WINDOW)).await?;
                let gave_up = Arc::new(AtomicUsize::new(0));
                let run = gate_starts(
                    &gates,
                    &world.operator,
                    clients,
                    plan.ops,
                    targets,
                    hot,
                    Some(gave_up.clone()),
                );
                let measured = timed(None, run).await?;
                let gave_up = gave_up.load(Ordering::Relaxed);
                report.add(Kind::HotTwoExecutors { gave_up }, clients, measured);
            }
        }
    }
    if plan.runs(Scenario::Sustained) {
        let targets = seed_connections(
            database,
            &mut world,
            spread_streams(plan.ops, TARGET_CLIENTS),
        )
        .await?;
        let lag = sustained(plan, database, &gates[0], &world.operator, targets).await?;
        report.add_sustained(lag);
    }
    if plan.runs(Scenario::History) {
        for &length in &plan.history {
            // As many connections as a pass of starts visits, at most.
            let count = (HISTORY_SEED_BUDGET / length).clamp(1, plan.history_ops.div_ceil(2));
            eprintln!("bench: seeding {count} connection(s) with {length} events each");
            let mut sink = Sink::new(database, Table::Events).await?;
            let mut connections = Vec::with_capacity(count);
            for _ in 0..count {
                connections.push(world.connection_with_history(length, &mut sink).await?);
            }
            sink.flush().await?;
            for connection in &connections {
                if let Some(snapshot) = connection.snapshot() {
                    let id = connection.connection_id.to_string();
                    dispatch_gate::write::snapshot::write(
                        database,
                        ProviderConnection::TYPE,
                        &id,
                        snapshot,
                    )
                    .await?;
                }
            }
            let (cold, warm) =
                history_starts(&gates[0], &world.operator, plan.history_ops, &connections).await?;
            report.add(Kind::History { length, cold: true }, 1, cold);
            report.add(
                Kind::History {
                    length,
                    cold: false,
                },
                1,
                warm,
            );
        }
    }
    Ok(())
}

/// The bench tables: `events`' columns and indexes, without its numbering.
async fn create_bench_tables(database: &Database) -> anyhow::Result<()> {
    match database {
        Database::Postgres(pool) => {
            for table in ["bench_floor", "bench_naive"] {
                sqlx::query(&format!("CREATE TABLE {table} (LIKE events INCLUDING ALL)"))
                    .execute(pool)
                    .await
                    .with_context(|| format!("creating {table}"))?;
            }
        }
        Database::Sqlite(pool) => {
            for table in ["bench_floor", "bench_naive"] {
                sqlx::raw_sql(&format!(
                    "CREATE TABLE {table} (
                         aggregate_type text NOT NULL,
                         aggregate_id   text NOT NULL,
                         sequence       integer CHECK (sequence >= 0) NOT NULL,
                         event_type     text NOT NULL,
                         event_version  text NOT NULL,
                         payload        text NOT NULL,
                         metadata       text NOT NULL,
                         position       integer,
                         PRIMARY KEY (aggregate_type, aggregate_id, sequence)
                     ) STRICT;
                     CREATE UNIQUE INDEX {table}_position ON {table} (position);"
                ))
                .execute(pool)
                .await
                .with_context(|| format!("creating {table}"))?;
            }
        }
    }
    Ok(())
}

/// Starts a write transaction. SQLite takes the write lock at `BEGIN
/// IMMEDIATE`: a deferred transaction that reads first cannot wait for the
/// lock when it upgrades, and would fail under concurrency instead.
trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, Self::Database>>;
}

impl BeginWrite for sqlx::PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.begin().await
    }
}

impl BeginWrite for sqlx::SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// The floor's insert: the first event of a fresh stream.
const FLOOR_INSERT: &str = "INSERT INTO bench_floor
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    VALUES ($1, $2, 1, 'OperationAccepted', '1.0', $3, $4)";

/// The naive command's append: the next event of a stream.
const NAIVE_INSERT: &str = "INSERT INTO bench_naive
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    VALUES ($1, $2, $3, 'OperationAccepted', '1.0', $4, $5)";

/// The floor: one INSERT, its own transaction, a fresh stream per operation.
async fn floor(
    database: &Database,
    clients: usize,
    ops: usize,
    sample: &Arc<Sample>,
) -> anyhow::Result<Measured> {
    let database = database.clone();
    let sample = sample.clone();
    drive(clients, ops, move |_| {
        let (database, sample) = (database.clone(), sample.clone());
        async move {
            let id = Uuid::new_v4().to_string();
            on_pool!(&database, |pool| {
                sqlx::query(FLOOR_INSERT)
                    .bind(ProviderConnection::TYPE)
                    .bind(&id)
                    .bind(&sample.payload)
                    .bind(&sample.metadata)
                    .execute(pool)
                    .await
                    .context("floor insert")?;
            });
            Ok(())
        }
    })
    .await
}

/// Seeds `count` naive streams with the rows of a usable connection's setup
/// (the same bytes the gate reads) and returns their ids.
async fn naive_streams(
    database: &Database,
    world: &mut World,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut sink = Sink::new(database, Table::Naive).await?;
    let mut ids = Vec::with_capacity(count);
    let mut out = Vec::new();
    for _ in 0..count {
        let connection = world.connection(0, &mut out).await?;
        ids.push(connection.connection_id.to_string());
        sink.extend(
            out.drain(..)
                .filter(|row| row.aggregate_type == ProviderConnection::TYPE),
        )
        .await?;
    }
    sink.flush().await?;
    Ok(ids)
}

/// The naive command: in one transaction, read the stream's rows (payloads
/// decoded as JSON) and insert the next sequence.
async fn naive(
    database: &Database,
    clients: usize,
    ops: usize,
    sample: &Arc<Sample>,
    streams: Vec<String>,
) -> anyhow::Result<Measured> {
    let database = database.clone();
    let sample = sample.clone();
    let streams = Arc::new(streams);
    drive(clients, ops, move |turn| {
        let (database, sample) = (database.clone(), sample.clone());
        let id = streams[turn.own_target(clients, streams.len())].clone();
        async move {
            on_pool!(&database, |pool| {
                let mut tx = pool.begin_write().await.context("naive: begin")?;
                let rows = sqlx::query(
                    "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
                     FROM bench_naive WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
                )
                .bind(ProviderConnection::TYPE)
                .bind(&id)
                .fetch_all(&mut *tx)
                .await
                .context("naive: load")?;
                let mut last = 0i64;
                for row in &rows {
                    last = row.try_get("sequence")?;
                    let _: Value = row.try_get("payload")?;
                }
                sqlx::query(NAIVE_INSERT)
                .bind(ProviderConnection::TYPE)
                .bind(&id)
                .bind(last + 1)
                .bind(&sample.payload)
                .bind(&sample.metadata)
                .execute(&mut *tx)
                .await
                .context("naive: append")?;
                tx.commit().await.context("naive: commit")?;
            });
            Ok(())
        }
    })
    .await
}

/// Seeds `count` tenants, each with one usable default connection.
async fn seed_connections(
    database: &Database,
    world: &mut World,
    count: usize,
) -> anyhow::Result<Vec<(TenantId, ConnectionId)>> {
    let mut sink = Sink::new(database, Table::Events).await?;
    let mut targets = Vec::with_capacity(count);
    let mut out = Vec::new();
    for _ in 0..count {
        let connection = world.connection(0, &mut out).await?;
        targets.push((connection.tenant_id, connection.connection_id));
        sink.extend(out.drain(..)).await?;
    }
    sink.flush().await?;
    Ok(targets)
}

/// The executor of provider connections the bench decides through ([`gate`]).
type Connections = Executor<ProviderConnection>;

/// Which connection an operation goes to.
#[derive(Debug, Clone, Copy)]
enum Placement {
    /// Each client on connections of its own ([`load::Turn::own_target`]).
    Own,
    /// Every client on the same connection, the next one every `window`
    /// operations.
    Shared { window: usize },
}

/// Starts through the gate's executor, as `Dispatcher::start` makes them after
/// authorization (an operator's start on the tenant's default connection).
///
/// Client `c` uses `gates[c % len]`: two executors stand for two `serve`
/// processes, which do not serialise each other, so their appends
/// conflict and are retried. With `gave_up`, a start whose retries all
/// conflicted is counted there instead of failing the run.
async fn gate_starts(
    gates: &[Arc<Connections>],
    operator: &Actor,
    clients: usize,
    ops: usize,
    targets: Vec<(TenantId, ConnectionId)>,
    placement: Placement,
    gave_up: Option<Arc<AtomicUsize>>,
) -> anyhow::Result<Measured> {
    let gates = Arc::new(gates.to_vec());
    let operator = operator.clone();
    let targets = Arc::new(targets);
    drive(clients, ops, move |turn| {
        let executor = gates[turn.client % gates.len()].clone();
        let (operator, gave_up) = (operator.clone(), gave_up.clone());
        let target = match placement {
            Placement::Own => turn.own_target(clients, targets.len()),
            Placement::Shared { window } => (turn.index / window) % targets.len(),
        };
        let (tenant_id, connection_id) = targets[target];
        async move {
            let at = chrono::Utc::now();
            let request =
                seed::start_request(&operator, tenant_id, OperationKind::InventorySync, at);
            let metadata = gate::metadata(&operator, request.request_id.as_deref(), at);
            let executed = executor
                .execute(
                    &connection_id.to_string(),
                    ConnectionCommand::StartOperation(request),
                    metadata,
                )
                .await;
            let committed = match (executed, gave_up) {
                (Ok(committed), _) => committed,
                (Err(CommandError::Conflict { .. }), Some(gave_up)) => {
                    gave_up.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                (Err(error), _) => anyhow::bail!("a start failed: {error}"),
            };
            anyhow::ensure!(
                committed.events.len() == 1,
                "a start recorded {} events instead of one decision",
                committed.events.len()
            );
            Ok(())
        }
    })
    .await
}

/// What the sustained scenario measured.
struct Sustained {
    /// The starts, as one measurement.
    starts: Timed,
    /// How long each sampled log head took to reach every view, sorted.
    lags: Vec<Duration>,
    /// Mean lag over the first and the last third of the run.
    first_third: Duration,
    last_third: Duration,
}

/// How often the sustained scenario samples the log head.
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// How long the views may take to reach the head once the load stops.
const DRAIN: Duration = Duration::from_secs(60);

/// The gate at its maximum start rate ([`TARGET_CLIENTS`] clients on their
/// own connections, in rounds until the time is up) while one catch-up loop
/// projects, as `serve` runs it. A sampler reads the log head every
/// [`LAG_SAMPLE_EVERY`] and records how long the views took to reach it.
async fn sustained(
    plan: &Plan,
    database: &Database,
    executor: &Arc<Connections>,
    operator: &Actor,
    targets: Vec<(TenantId, ConnectionId)>,
) -> anyhow::Result<Sustained> {
    let catchup = Catchup::new(database.clone());
    catchup.catch_up(Failpoint::Off).await?;
    let (stop_projector, projector_stopped) = tokio::sync::watch::channel(false);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projector = tokio::spawn(catchup.clone().run(async move {
        let mut stopped = projector_stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let sampler = {
        let (catchup, database, stopped) = (catchup.clone(), database.clone(), stopped.clone());
        tokio::spawn(async move {
            let mut pending = std::collections::VecDeque::new();
            let mut lags = Vec::new();
            let mut tick = tokio::time::interval(LAG_SAMPLE_EVERY);
            let started = Instant::now();
            // After the load stops, the samples still pending drain while the
            // projector runs on (bounded, so a stuck projector fails the run).
            let mut drain_until = None;
            while !*stopped.borrow() || !pending.is_empty() {
                if *stopped.borrow() {
                    let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
                    anyhow::ensure!(
                        Instant::now() < until,
                        "the views did not reach the log head within {DRAIN:?} after the load"
                    );
                }
                tick.tick().await;
                let now = Instant::now();
                if !*stopped.borrow() {
                    pending.push_back((
                        now,
                        dispatch_gate::write::store::log::head(&database).await?,
                    ));
                }
                // As `serve` does after each local commit.
                catchup.kick();
                let reached = catchup.positions().slowest();
                while let Some(&(at, head)) = pending.front() {
                    if head > reached {
                        break;
                    }
                    lags.push((at - started, now - at));
                    pending.pop_front();
                }
            }
            anyhow::Ok(lags)
        })
    };
    let started = Instant::now();
    let round = TARGET_CLIENTS * 50;
    let starts = timed(None, async {
        let mut all = Measured::bulk(0, Duration::ZERO);
        while started.elapsed() < plan.sustained {
            let m = gate_starts(
                std::slice::from_ref(executor),
                operator,
                TARGET_CLIENTS,
                round,
                targets.clone(),
                Placement::Own,
                None,
            )
            .await?;
            all.ops += m.ops;
            all.latencies.extend(m.latencies);
        }
        all.elapsed = started.elapsed();
        all.latencies.sort_unstable();
        Ok(all)
    })
    .await?;
    let _ = stop.send(true);
    let samples = sampler.await.context("the lag sampler");
    let _ = stop_projector.send(true);
    projector.await.context("the projector")?;
    let samples = samples??;
    let third = plan.sustained / 3;
    let mean = |keep: &dyn Fn(Duration) -> bool| {
        let picked: Vec<Duration> = samples
            .iter()
            .filter(|(at, _)| keep(*at))
            .map(|(_, lag)| *lag)
            .collect();
        picked.iter().sum::<Duration>() / picked.len().max(1) as u32
    };
    let first_third = mean(&|at| at < third);
    let last_third = mean(&|at| at >= plan.sustained - third);
    let mut lags: Vec<Duration> = samples.into_iter().map(|(_, lag)| lag).collect();
    lags.sort_unstable();
    Ok(Sustained {
        starts,
        lags,
        first_third,
        last_third,
    })
}

/// Starts by one client on connections with seeded histories, in two
/// passes over the same connections: cold ones first, each after
/// [`Executor::forget`] (a load from the
/// snapshot and the events after it), then warm ones (nothing read before
/// deciding). Returns the cold and the warm decisions, timed separately.
async fn history_starts(
    executor: &Connections,
    operator: &Actor,
    ops: usize,
    connections: &[seed::Connection],
) -> anyhow::Result<(Timed, Timed)> {
    let start = |connection: &seed::Connection, cold: bool| {
        let at = chrono::Utc::now();
        let request = seed::start_request(
            operator,
            connection.tenant_id,
            OperationKind::InventorySync,
            at,
        );
        let metadata = gate::metadata(operator, request.request_id.as_deref(), at);
        let id = connection.connection_id.to_string();
        async move {
            if cold {
                executor.forget(&id);
            }
            let begun = Instant::now();
            let committed = executor
                .execute(&id, ConnectionCommand::StartOperation(request), metadata)
                .await
                .map_err(|error| anyhow::anyhow!("a start failed: {error}"))?;
            anyhow::ensure!(committed.events.len() == 1, "a start recorded no decision");
            anyhow::Ok(begun.elapsed())
        }
    };
    let per_pass = ops.div_ceil(2);
    let pass = |cold| {
        timed(None, async move {
            let mut latencies = Vec::with_capacity(per_pass);
            for i in 0..per_pass {
                latencies.push(start(&connections[i % connections.len()], cold).await?);
            }
            Ok(Measured::sequential(latencies))
        })
    };
    Ok((pass(true).await?, pass(false).await?))
}

/// The spread load through `serve` in a child process, on its own database;
/// then, on PostgreSQL, the statement budget of the same load ([`budget`]).
async fn http_spread(
    plan: &Plan,
    gate: &std::path::Path,
    url: &str,
    dir: &std::path::Path,
    sample: &Arc<Sample>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let admin = format!("dga_{}", hex::encode(rand::random::<[u8; 16]>()));
    let serve = http::Serve::start(gate, url, plan.pool, &admin, dir).await?;
    let mut tenants_by_clients = BTreeMap::new();
    let mut token = None;
    let result = async {
        let setup = http::Api::new(serve.base.clone(), 8);
        let operator = Arc::new(http::operator(&setup, &admin).await?);
        token = Some(operator.token.clone());
        for &clients in &plan.clients {
            let count = spread_streams(plan.ops, clients);
            eprintln!("bench: creating {count} tenants through the admin API");
            let tenants = Arc::new(Mutex::new(vec![String::new(); count]));
            let (api, admin, operator_, slots) = (
                setup.clone(),
                admin.clone(),
                operator.clone(),
                tenants.clone(),
            );
            drive(8, count, move |turn| {
                let i = turn.index;
                let (api, admin, operator, slots) =
                    (api.clone(), admin.clone(), operator_.clone(), slots.clone());
                async move {
                    let tenant = http::usable_tenant(&api, &admin, &operator, i).await?;
                    slots.lock().expect("tenant slots")[i] = tenant;
                    Ok(())
                }
            })
            .await
            .context("setting up tenants through the admin API")?;
            let tenants = Arc::new(tenants.lock().expect("tenant slots").clone());
            tenants_by_clients.insert(clients, tenants.clone());
            let api = http::Api::new(serve.base.clone(), clients);
            let run = http_starts(&api, &operator.token, clients, plan.ops, tenants);
            let measured = timed(Some(serve.pid()), run).await?;
            let rss = serve.peak_rss()?;
            report.add_http(clients, measured, rss);
        }
        anyhow::Ok(())
    }
    .await;
    serve.stop().await;
    result?;
    match (url.starts_with("postgres"), token) {
        (true, Some(token)) => {
            let http = BudgetServe {
                gate,
                url,
                dir,
                admin: &admin,
                token: &token,
            };
            budget(plan, &http, &tenants_by_clients, sample, report).await
        }
        _ => {
            report.budget_not_counted();
            Ok(())
        }
    }
}

/// `ops` starts by `clients` clients, each on tenants of its own.
fn http_starts(
    api: &http::Api,
    token: &str,
    clients: usize,
    ops: usize,
    tenants: Arc<Vec<String>>,
) -> impl std::future::Future<Output = anyhow::Result<Measured>> {
    let (api, token): (_, Arc<str>) = (api.clone(), token.into());
    drive(clients, ops, move |turn| {
        let (api, token) = (api.clone(), token.clone());
        let tenant = tenants[turn.own_target(clients, tenants.len())].clone();
        async move { http::start(&api, &token, &tenant).await }
    })
}

/// What the budget pass needs of the http scenario.
struct BudgetServe<'a> {
    gate: &'a std::path::Path,
    url: &'a str,
    dir: &'a std::path::Path,
    admin: &'a str,
    token: &'a str,
}

/// Operations per budget pass, at most: counts, not times, so a few hundred
/// give exact averages.
const BUDGET_OPS: usize = 400;

/// The statement budget (PostgreSQL): the floor's inserts, then the same
/// starts as `http-spread` through a second `serve`, each through a proxy
/// that counts round trips, statements and transactions on the wire
/// ([`wire`]). Caches are warmed first (one start per tenant) and not counted.
async fn budget(
    plan: &Plan,
    http: &BudgetServe<'_>,
    tenants_by_clients: &BTreeMap<usize, Arc<Vec<String>>>,
    sample: &Arc<Sample>,
    report: &mut Report,
) -> anyhow::Result<()> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(http.url)
        .context("reading the scratch database URL")?;
    let proxy = wire::Proxy::start(&options).await?;
    let proxied = proxy.url(http.url);
    let ops = plan.ops.min(BUDGET_OPS);
    // The floor, on a table of its own in this database.
    let database = Database::connect(&proxied, plan.pool).await?;
    let floor_pass = async {
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_floor (LIKE events INCLUDING ALL)")
            .execute(match &database {
                Database::Postgres(pool) => pool,
                Database::Sqlite(_) => unreachable!("the budget is counted on PostgreSQL"),
            })
            .await
            .context("creating bench_floor for the budget")?;
        floor(&database, 1, 20, sample).await?;
        proxy.counter().take();
        floor(&database, 1, ops, sample).await?;
        anyhow::Ok(proxy.counter().take())
    }
    .await;
    database.close().await;
    report.add_budget("floor", 1, ops, &floor_pass?);
    let serve = http::Serve::start(http.gate, &proxied, plan.pool, http.admin, http.dir).await?;
    let result = async {
        for (&clients, tenants) in tenants_by_clients {
            let api = http::Api::new(serve.base.clone(), clients);
            // Every tenant once (clients take turns as they come free, so
            // their own targets would not cover each exactly once).
            let (warm_api, token, all): (_, Arc<str>, _) =
                (api.clone(), http.token.into(), tenants.clone());
            drive(clients, tenants.len(), move |turn| {
                let (api, token, tenant) =
                    (warm_api.clone(), token.clone(), all[turn.index].clone());
                async move { http::start(&api, &token, &tenant).await }
            })
            .await
            .context("warming the budget's serve")?;
            proxy.counter().take();
            http_starts(&api, http.token, clients, ops, tenants.clone()).await?;
            report.add_budget("http-spread", clients, ops, &proxy.counter().take());
        }
        anyhow::Ok(())
    }
    .await;
    serve.stop().await;
    result
}

/// Catch-up over a fresh log, then a rebuild of the whole log.
async fn log_scenarios(
    plan: &Plan,
    database: &Database,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut seeder = seed::LogSeeder::new().await?;
    if plan.runs(Scenario::Catchup) {
        let total = plan.catchup_events;
        eprintln!("bench: seeding a log of {total} events for catch-up");
        seeder.seed_until(database, total).await?;
        let catchup = Catchup::new(database.clone());
        let measured = timed(None, async {
            let started = Instant::now();
            let positions = catchup.catch_up(Failpoint::Off).await?;
            Ok(Measured::bulk(positions.head as usize, started.elapsed()))
        })
        .await?;
        report.add(Kind::Catchup, 1, measured);
    }
    if plan.runs(Scenario::Rebuild) {
        let total = plan.rebuild_events.max(seeder.written);
        eprintln!("bench: seeding the log to {total} events for rebuild");
        let seeding = Instant::now();
        seeder.seed_until(database, total).await?;
        eprintln!("bench: seeded in {:.1}s", seeding.elapsed().as_secs_f64());
        let mut folded = Duration::ZERO;
        let measured = timed(None, async {
            let started = Instant::now();
            let applied = dispatch_gate::read::catchup::rebuild(database, |progress| {
                if let dispatch_gate::read::catchup::Rebuilt::Read(_) = progress {
                    folded = started.elapsed();
                }
            })
            .await?;
            Ok(Measured::bulk(applied as usize, started.elapsed()))
        })
        .await?;
        report.add(Kind::Rebuild { folded }, 1, measured);
    }
    Ok(())
}

/// What a row of the table measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Floor,
    Naive,
    Spread,
    Hot,
    HotTwoExecutors {
        gave_up: usize,
    },
    /// Decisions on connections with `length` prior events; `cold` ones
    /// load the stream first.
    History {
        length: usize,
        cold: bool,
    },
    Catchup,
    /// `folded`: how long reading and folding the log took, before writing.
    Rebuild {
        folded: Duration,
    },
}

/// The table, printed row by row as scenarios finish, and what the targets need.
#[derive(Debug, Default)]
struct Report {
    floor: BTreeMap<usize, Measured>,
    naive: BTreeMap<usize, Measured>,
    spread: BTreeMap<usize, Measured>,
    /// The CPU each gate-spread run took.
    spread_cpu: BTreeMap<usize, Cpu>,
    /// Per history length: the cold decisions, then the warm ones.
    history: [Vec<(usize, Measured)>; 2],
    rebuild: Option<Measured>,
    catchup: Option<Measured>,
    http: BTreeMap<usize, (Measured, Option<f64>, Cpu)>,
    /// The statement budget per operation of `http-spread`, by client count.
    budget: BTreeMap<usize, wire::Side>,
    /// Whether the budget's heading was printed.
    budget_heading: bool,
    sustained_lag_p99: Option<Duration>,
    peak_rss: Option<u64>,
    backend: String,
    postgres: bool,
}

fn ms(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.2}", d.as_secs_f64() * 1000.0),
    )
}

fn p50(m: &Measured) -> Option<Duration> {
    m.percentile(50.0)
}

fn p99(m: &Measured) -> Option<Duration> {
    m.percentile(99.0)
}

fn ratio(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    Some(a?.as_secs_f64() / b?.as_secs_f64().max(1e-9))
}

impl Report {
    async fn header(
        &mut self,
        plan: &Plan,
        database: &Database,
        sample: &Sample,
    ) -> anyhow::Result<()> {
        self.postgres = matches!(database, Database::Postgres(_));
        self.backend = match database {
            Database::Postgres(pool) => {
                let setting = |name: &'static str| async move {
                    sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
                        .fetch_one(pool)
                        .await
                        .with_context(|| format!("reading {name}"))
                };
                format!(
                    "PostgreSQL {} (fsync={}, synchronous_commit={}, shared_buffers={})",
                    setting("server_version").await?,
                    setting("fsync").await?,
                    setting("synchronous_commit").await?,
                    setting("shared_buffers").await?,
                )
            }
            Database::Sqlite(pool) => {
                let version: String = sqlx::query_scalar("SELECT sqlite_version()")
                    .fetch_one(pool)
                    .await
                    .context("reading the SQLite version")?;
                format!("SQLite {version} (WAL, synchronous=FULL)")
            }
        };
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        println!(
            "# dispatch-gate-bench: {}; pool {}; {} operations per scenario and client count; {cores} cores; decision payload {} bytes",
            self.backend,
            plan.pool,
            plan.ops,
            sample.payload.to_string().len(),
        );
        println!(
            "{:<20} {:>7} {:>9} {:>10} {:>9} {:>9} {:>10} {:>9}  compared with this run's baselines",
            "scenario", "clients", "ops", "ops/s", "p50 ms", "p99 ms", "cpu µs/op", "pg µs/op"
        );
        Ok(())
    }

    fn print(&self, name: &str, clients: usize, (m, cpu): &Timed, note: &str) {
        let per_op = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e6 / m.ops.max(1) as f64);
        let postgres = if self.postgres {
            per_op(cpu.postgres)
        } else {
            "-".to_owned()
        };
        println!(
            "{name:<20} {clients:>7} {:>9} {:>10.1} {:>9} {:>9} {:>10} {postgres:>9}  {note}",
            m.ops,
            m.throughput(),
            ms(p50(m)),
            ms(p99(m)),
            per_op(cpu.bench),
        );
    }

    /// "1.02× naive, 0.61× floor, p99 1.4× floor" for this client count.
    fn versus(&self, clients: usize, m: &Measured, naive: bool) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.naive.get(&clients).filter(|_| naive) {
            parts.push(format!("{:.2}× naive", m.throughput() / n.throughput()));
        }
        if let Some(f) = self.floor.get(&clients) {
            parts.push(format!("{:.2}× floor", m.throughput() / f.throughput()));
            if let Some(r) = ratio(p99(m), p99(f)) {
                parts.push(format!("p99 {r:.1}× floor"));
            }
        }
        parts.join(", ")
    }

    fn add(&mut self, kind: Kind, clients: usize, timed: Timed) {
        let m = &timed.0;
        match kind {
            Kind::Floor => {
                self.print("floor", clients, &timed, "");
                self.floor.insert(clients, timed.0);
            }
            Kind::Naive => {
                self.print("naive", clients, &timed, &self.versus(clients, m, false));
                self.naive.insert(clients, timed.0);
            }
            Kind::Spread => {
                self.print(
                    "gate-spread",
                    clients,
                    &timed,
                    &self.versus(clients, m, true),
                );
                self.spread_cpu.insert(clients, timed.1);
                self.spread.insert(clients, timed.0);
            }
            Kind::Hot => self.print("gate-hot", clients, &timed, &self.versus(clients, m, true)),
            Kind::HotTwoExecutors { gave_up } => {
                let note = [
                    self.versus(clients, m, true),
                    format!(
                        "two executors (as two serve processes): {gave_up} gave up on conflicts"
                    ),
                ]
                .into_iter()
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
                self.print("gate-hot-2", clients, &timed, &note);
            }
            Kind::History { length, cold } => {
                let (list, label) = if cold {
                    (&mut self.history[0], "cold")
                } else {
                    (&mut self.history[1], "warm")
                };
                let note = match list.first() {
                    Some((first, base)) => ratio(p50(m), p50(base))
                        .map(|r| format!("p50 {r:.2}× history-{first}-{label}"))
                        .unwrap_or_default(),
                    None => String::new(),
                };
                list.push((length, timed.0.clone()));
                self.print(&format!("history-{length}-{label}"), clients, &timed, &note);
            }
            Kind::Catchup => {
                self.print(
                    "catch-up",
                    clients,
                    &timed,
                    &format!(
                        "events/s through all {} projections, from zero",
                        projections::PROJECTIONS.len()
                    ),
                );
                self.catchup = Some(timed.0);
            }
            Kind::Rebuild { folded } => {
                let note = format!(
                    "events/s, {:.1}s in one transaction: {:.1}s reading and folding, {:.1}s writing",
                    m.elapsed.as_secs_f64(),
                    folded.as_secs_f64(),
                    m.elapsed.saturating_sub(folded).as_secs_f64()
                );
                let note = match &self.catchup {
                    Some(c) => format!(
                        "{note}; catch-up {:.2}× this",
                        c.throughput() / m.throughput()
                    ),
                    None => note,
                };
                self.print("rebuild", clients, &timed, &note);
                self.rebuild = Some(timed.0);
            }
        }
    }

    fn add_http(&mut self, clients: usize, timed: Timed, rss: u64) {
        let (m, cpu) = &timed;
        let mut note = self.versus(clients, m, true);
        if !note.is_empty() {
            note.push_str(", ");
        }
        let serve_per_op = cpu
            .serve
            .map(|serve| serve.as_secs_f64() * 1e6 / m.ops.max(1) as f64);
        if let Some(per_op) = serve_per_op {
            note.push_str(&format!("serve cpu {per_op:.0} µs/op, "));
        }
        note.push_str(&format!("serve peak RSS {:.1} MiB", mib(rss)));
        self.print("http-spread", clients, &timed, &note);
        self.peak_rss = Some(self.peak_rss.unwrap_or(0).max(rss));
        self.http.insert(clients, (timed.0, serve_per_op, timed.1));
    }

    /// One line of the statement budget, per operation: the request path's
    /// round trips and transactions, the projector's beside them, and the
    /// statements the request path ran.
    fn add_budget(&mut self, name: &str, clients: usize, ops: usize, counted: &wire::Counted) {
        if !self.budget_heading {
            println!();
            println!(
                "statement budget per operation, counted on the wire by a proxy in a pass of \
                 its own ({ops} operations, caches warm; request path | the projector beside it):"
            );
            self.budget_heading = true;
        }
        let per = |n: u64| n as f64 / ops.max(1) as f64;
        let (r, p) = (counted.request, counted.projector);
        println!(
            "budget {name:<14} {clients:>3} clients: {:.2} round trips ({:.2} reads), {:.2} transactions ({:.2} writing), {:.2} prepared | projector {:.2} round trips, {:.2} transactions, {:.2} prepared",
            per(r.round_trips),
            per(r.read_round_trips),
            per(r.transactions),
            per(r.writing_transactions),
            per(r.prepares),
            per(p.round_trips),
            per(p.transactions),
            per(p.prepares),
        );
        let mut statements: Vec<(&String, &u64)> = counted.statements.iter().collect();
        statements.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (text, count) in statements.into_iter().filter(|(_, n)| per(**n) >= 0.005) {
            let shown: String = text.chars().take(110).collect();
            let more = if text.chars().count() > 110 {
                "…"
            } else {
                ""
            };
            println!("    {:>6.2}  {shown}{more}", per(*count));
        }
        if name == "http-spread" {
            self.budget.insert(clients, r);
        }
    }

    /// Says why SQLite has no statement budget.
    fn budget_not_counted(&self) {
        println!();
        println!(
            "statement budget: not counted on SQLite (in the serve process: no round trips; see BENCHMARKS.md)"
        );
    }

    fn add_sustained(&mut self, run: Sustained) {
        let at = |p: f64| {
            let i = ((run.lags.len() as f64 * p / 100.0).ceil() as usize).saturating_sub(1);
            run.lags.get(i).copied()
        };
        let note = format!(
            "projection lag p50 {} ms, p99 {} ms, max {} ms over {} samples; \
             mean lag first third {} ms, last third {} ms",
            ms(at(50.0)),
            ms(at(99.0)),
            ms(run.lags.last().copied()),
            run.lags.len(),
            ms(Some(run.first_third)),
            ms(Some(run.last_third)),
        );
        self.print("sustained", TARGET_CLIENTS, &run.starts, &note);
        self.sustained_lag_p99 = at(99.0);
    }

    /// The targets, judged on this run only.
    fn targets(&self, plan: &Plan) {
        let mut lines = Vec::new();
        let mut judge = |name: String, value: f64, limit: f64, at_least: bool, unit: &str| {
            let met = if at_least {
                value >= limit
            } else {
                value <= limit
            };
            let gap = if met {
                String::new()
            } else if at_least {
                format!(" (missed by {:.0}%)", (1.0 - value / limit) * 100.0)
            } else {
                format!(" (missed by {:.0}%)", (value / limit - 1.0) * 100.0)
            };
            lines.push(format!(
                "  {:<7} {name}: {value:.2}{unit}{gap}",
                if met { "met" } else { "MISSED" }
            ));
        };
        let c = TARGET_CLIENTS;
        if let Some(s) = self.spread.get(&c) {
            if let Some(n) = self.naive.get(&c) {
                judge(
                    format!("gate-spread ≥ 1.0× naive at {c} clients"),
                    s.throughput() / n.throughput(),
                    1.0,
                    true,
                    "×",
                );
            }
            if let Some(f) = self.floor.get(&c) {
                judge(
                    format!("gate-spread ≥ 0.5× floor at {c} clients"),
                    s.throughput() / f.throughput(),
                    0.5,
                    true,
                    "×",
                );
                if let Some(r) = ratio(p99(s), p99(f)) {
                    judge(
                        format!("gate-spread p99 ≤ 3× floor p99 at {c} clients"),
                        r,
                        3.0,
                        false,
                        "×",
                    );
                }
            }
        }
        for (list, label) in self.history.iter().zip(["cold", "warm"]) {
            if let (Some((first, base)), Some((last, long))) = (list.first(), list.last()) {
                if last > first {
                    if let Some(r) = ratio(p50(long), p50(base)) {
                        judge(
                            format!("history-{last}-{label} p50 ≤ 1.5× history-{first}-{label}"),
                            r,
                            1.5,
                            false,
                            "×",
                        );
                    }
                }
            }
        }
        if let Some(catchup) = &self.catchup {
            judge(
                "catch-up ≥ 25,000 events/s (a PostgreSQL target)".to_owned(),
                catchup.throughput(),
                25_000.0,
                true,
                " events/s",
            );
            if let Some(rebuild) = &self.rebuild {
                judge(
                    "catch-up ≥ 0.5× rebuild".to_owned(),
                    catchup.throughput() / rebuild.throughput(),
                    0.5,
                    true,
                    "×",
                );
            }
        }
        if let (Some((h, _, cpu)), Some(s), Some(spread_cpu)) = (
            self.http.get(&c),
            self.spread.get(&c),
            self.spread_cpu.get(&c),
        ) {
            if self.postgres {
                let per_op = |d: Duration, m: &Measured| d.as_secs_f64() / m.ops.max(1) as f64;
                judge(
                    format!("PostgreSQL CPU per HTTP start ≤ 1.5× gate-spread's at {c} clients"),
                    per_op(cpu.postgres, h) / per_op(spread_cpu.postgres, s).max(1e-9),
                    1.5,
                    false,
                    "×",
                );
            }
        }
        if let Some(side) = self.budget.get(&c) {
            let per = |n: u64| n as f64 / BUDGET_OPS.min(plan.ops).max(1) as f64;
            judge(
                format!("http-spread read round trips ≤ 1 per start at {c} clients (request path)"),
                per(side.read_round_trips),
                1.0,
                false,
                "",
            );
            judge(
                format!(
                    "http-spread writing transactions ≤ 1 per start at {c} clients (request path)"
                ),
                per(side.writing_transactions),
                1.0,
                false,
                "",
            );
        }
        if let Some((h, _, _)) = self.http.get(&1) {
            if let (Some(p50), Some(p99)) = (p50(h), p99(h)) {
                judge(
                    "http-spread p50 ≤ 1 ms at 1 client".to_owned(),
                    p50.as_secs_f64() * 1000.0,
                    1.0,
                    false,
                    " ms",
                );
                judge(
                    "http-spread p99 ≤ 2 ms at 1 client".to_owned(),
                    p99.as_secs_f64() * 1000.0,
                    2.0,
                    false,
                    " ms",
                );
            }
        }
        if let (Some((h, serve, _)), Some(f)) = (self.http.get(&c), self.floor.get(&c)) {
            judge(
                format!("http-spread ≥ 0.5× floor at {c} clients"),
                h.throughput() / f.throughput(),
                0.5,
                true,
                "×",
            );
            if let Some(r) = ratio(p99(h), p99(f)) {
                judge(
                    format!("http-spread p99 ≤ 3× floor p99 at {c} clients"),
                    r,
                    3.0,
                    false,
                    "×",
                );
            }
            if let Some(per_op) = serve {
                judge(
                    format!("serve cpu ≤ 250 µs per HTTP start at {c} clients"),
                    *per_op,
                    250.0,
                    false,
                    " µs",
                );
            }
        }
        if let Some(lag) = self.sustained_lag_p99 {
            judge(
                "sustained projection lag p99 ≤ 250 ms".to_owned(),
                lag.as_secs_f64() * 1000.0,
                250.0,
                false,
                " ms",
            );
        }
        if let Some(rebuild) = &self.rebuild {
            judge(
                "rebuild ≥ 50,000 events/s (a PostgreSQL target)".to_owned(),
                rebuild.throughput(),
                50_000.0,
                true,
                " events/s",
            );
        }
        if let Some(rss) = self.peak_rss {
            judge(
                "serve peak RSS ≤ 150 MiB under the spread load".to_owned(),
                mib(rss),
                150.0,
                false,
                " MiB",
            );
        }
        if !lines.is_empty() {
            println!();
            println!(
                "targets (issues 6, 10 and 27) judged on this run ({}, pool {}):",
                self.backend, plan.pool
            );
            for line in lines {
                println!("{line}");
            }
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
