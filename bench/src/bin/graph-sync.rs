//! `graph-sync`: one `directory.groups.sync` of many groups (10,000 by
//! default, in pages of 100) through the Graph provider against the test
//! kit's Graph fake on loopback, on a scratch database. Prints the rows
//! written, the time, the peak resident memory, and beside them a baseline
//! measured in the same run: the same pages fetched and parsed, nothing
//! written. Method and figures: BENCHMARKS.md, "A large directory sync".

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::catalog::OperationKind;
use aggregates::connection::RunEnd;
use aggregates::ids::ClientId;
use aggregates::values::{DirectoryTenantId, DisplayName, ProviderName};
use anyhow::Context as _;
use clap::Parser;
use dispatch_gate::app::{
    ConnectionChange, Dispatcher, NewSecret, Principal, RequestContext, StartCommand, SystemClock,
};
use dispatch_gate::provider::graph::{AppCredentials, ClientSecret, GraphClient, GraphConfig};
use dispatch_gate::provider::graph_runs::GraphRuns;
use dispatch_gate::provider::Provider;
use dispatch_gate::write::secrets::{SealingKey, SecretText};
use dispatch_gate::write::store::Database;
use testkit::graph_fake::GraphFake;

/// The allocator `serve` uses, so the memory figure is the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DIRECTORY: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const SECRET: &str = "bench~Graph.secret-value_0123456789";

/// Time and memory of one large directory group sync through Graph.
#[derive(Debug, Parser)]
#[command(name = "graph-sync")]
struct Cli {
    /// `sqlite` (a file in a temp dir) or a `postgres://` server URL (a
    /// scratch database is created on it and dropped).
    #[arg(long, default_value = "sqlite")]
    database_url: String,
    /// Groups in the directory.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    groups: u32,
    /// Groups per page (Graph's `$top`; its default page is 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=999))]
    page_size: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", dispatch_gate::app::error_line(&error));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut scratches = bench::Scratches::new(&cli.database_url).await?;
    let url = scratches.create("graph_sync").await?;
    let outcome = measure(&cli, &url).await;
    scratches.drop_all().await;
    outcome
}

async fn measure(cli: &Cli, url: &str) -> anyhow::Result<()> {
    let fake = GraphFake::start().await;
    fake.accept_app(DIRECTORY, CLIENT_ID, SECRET);
    fake.set_page_size(cli.page_size as usize);
    fake.put_groups(cli.groups as usize);
    let config = GraphConfig::new(&fake.base_url(), &fake.authority_url())?;
    let client = GraphClient::new(config).context("building the Graph client")?;

    // The baseline: every page fetched and parsed, nothing written.
    let credentials = AppCredentials {
        directory_tenant_id: DIRECTORY.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: ClientSecret::new(SECRET),
    };
    let resident_before = memory("VmRSS:");
    let started = Instant::now();
    let mut pages = client.groups_delta(&credentials, None);
    let (mut fetched, mut page_count) = (0usize, 0usize);
    while let Some(page) = pages
        .next_page()
        .await
        .map_err(|failure| anyhow::anyhow!("fetching groups: {failure:?}"))?
    {
        fetched += page.changed.len();
        page_count += 1;
    }
    let fetch_only = started.elapsed();

    // The run as the built-in worker executes it.
    let database = Database::connect(url, 4).await?;
    database.migrate().await?;
    let dispatcher = Arc::new(
        Dispatcher::new(database.clone(), Arc::new(SystemClock), None)
            .with_secrets_key(SealingKey::generate()),
    );
    // The projector, as `serve` runs it: claims read the queue from its views.
    tokio::spawn(dispatcher.catchup().clone().run(std::future::pending()));
    let (tenant, run_id) = start_sync(&dispatcher).await?;
    let worker = aggregates::values::WorkerId::parse("graph-sync-bench")
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let claimed = dispatcher
        .claim(
            &worker,
            None,
            Duration::from_secs(300),
            &RequestContext::NONE,
        )
        .await?
        .context("the queued sync was not claimed")?;
    anyhow::ensure!(claimed.run_id == run_id, "claimed another run");
    let provider = GraphRuns::new(dispatcher.clone(), client);
    let started = Instant::now();
    let end = provider.execute(&claimed).await;
    let synced = started.elapsed();
    anyhow::ensure!(
        matches!(end, RunEnd::Succeeded { .. }),
        "the sync did not succeed: {end:?}"
    );
    dispatcher
        .complete(claimed.run_id, &worker, end, &RequestContext::NONE)
        .await?;
    let rows: i64 = dispatch_gate::write::provider_data::inventory_summary(&database, tenant)
        .await?
        .iter()
        .map(|(_, present, removed)| present + removed)
        .sum();
    let peak = memory("VmHWM:");

    let backend = if url.starts_with("sqlite") {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    println!(
        "directory.groups.sync of {} groups, pages of {} ({backend})",
        cli.groups, cli.page_size
    );
    println!(
        "  fetch only (baseline): {fetched} groups in {page_count} pages, {:.2} s",
        fetch_only.as_secs_f64()
    );
    println!(
        "  the run: {rows} rows written, {:.2} s ({:.2}x the baseline; target 5 s)",
        synced.as_secs_f64(),
        synced.as_secs_f64() / fetch_only.as_secs_f64().max(1e-9)
    );
    println!(
        "  peak resident memory: {:.0} MiB (before the sync {:.0} MiB; target 150 MiB; the fake's groups live in this process too)",
        peak / 1024.0,
        resident_before / 1024.0
    );
    Ok(())
}

/// Sets up a workspace, a tenant and its connection with a stored secret, and
/// starts one groups sync there; returns the accepted run.
async fn start_sync(
    dispatcher: &Dispatcher,
) -> anyhow::Result<(aggregates::ids::TenantId, aggregates::ids::RunId)> {
    let context = &RequestContext::NONE;
    let name = |text: &str| DisplayName::parse(text).map_err(|e| anyhow::anyhow!("{e}"));
    let workspace = dispatcher.create_workspace(name("Bench")?, context).await?;
    let tenant = dispatcher
        .create_tenant(workspace, name("Contoso")?, context)
        .await?;
    let provider = ProviderName::parse("microsoft_graph").map_err(|e| anyhow::anyhow!("{e}"))?;
    let connection = dispatcher
        .create_connection(
            &Principal::Admin,
            tenant,
            name("Contoso Graph")?,
            provider,
            true,
            context,
        )
        .await?;
    let connection_id = connection
        .state
        .identity
        .as_ref()
        .map(|identity| identity.connection_id)
        .context("a connection id")?;
    let secret = NewSecret {
        directory_tenant_id: DirectoryTenantId::parse(DIRECTORY)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        client_id: ClientId(CLIENT_ID.parse()?),
        client_secret: SecretText::new(SECRET.to_owned()),
        expires_at: None,
    };
    dispatcher
        .store_secret(&Principal::Admin, connection_id, secret, context)
        .await?;
    dispatcher
        .change_connection(
            &Principal::Admin,
            connection_id,
            ConnectionChange::Consent(true),
            context,
        )
        .await?;
    let decision = dispatcher
        .start(StartCommand {
            tenant_id: tenant,
            operation: OperationKind::DirectoryGroupsSync,
            connection: None,
            restore_run: None,
            principal: Principal::Admin,
            context: RequestContext::NONE,
        })
        .await?;
    match decision.verdict {
        aggregates::connection::Verdict::Accepted { run_id } => Ok((tenant, run_id)),
        other => anyhow::bail!("the sync was not accepted: {other:?}"),
    }
}

/// A `/proc/self/status` figure in KiB (0 where there is none).
fn memory(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0.0)
}
