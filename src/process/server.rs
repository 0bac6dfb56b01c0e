//! The `serve` process: database, migrations, the gate, and the HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::app::{Dispatcher, SystemClock};
use crate::process::demo::{self, DemoError, DemoSummary};
use crate::process::worker::{run_reaper, run_workers, SimulatedProvider, WorkerConfig};
use crate::provider::graph::{GraphClient, GraphConfig, RetryBudget};
use crate::provider::graph_runs::GraphRuns;
use crate::provider::Provider;
use crate::read::replica::Standby;
use crate::web::app;
use crate::web::serve::Limits;
use crate::web::state::AppState;
use crate::write::secrets::{default_key_path, SealingKey};
use crate::write::store::{redact, Database};

/// What `serve` needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The admin token.
    pub admin_token: String,
    /// Database pool size (and the read replica's).
    pub max_connections: u32,
    /// A PostgreSQL hot standby serving the read API's view queries.
    pub read_database_url: Option<String>,
    /// How long a worker holds a run between heartbeats.
    pub lease: std::time::Duration,
    /// The built-in worker; `None` with `--no-worker`.
    pub worker: Option<BuiltInWorker>,
    /// Limits on slow and many clients.
    pub limits: Limits,
    /// `--demo`: seed an empty store with the specification's prerequisites
    /// before serving (see [`crate::process::demo`]); a store holding data is refused.
    pub demo: bool,
    /// The key provider secrets are sealed under (`--secrets-key-file`); without
    /// one, an embedded SQLite database gets a key file beside it.
    pub secrets_key: Option<SealingKey>,
}

/// The built-in worker's settings.
#[derive(Debug, Clone)]
pub struct BuiltInWorker {
    /// Runs executed at once.
    pub concurrency: usize,
    /// What it executes runs with.
    pub provider: WorkerProvider,
}

/// The built-in worker's provider (`serve --provider`).
#[derive(Debug, Clone)]
pub enum WorkerProvider {
    /// Pretends, for demos.
    Simulated(SimulatedProvider),
    /// Microsoft Graph at the configured roots.
    Graph(GraphConfig),
}

/// A built, not yet running, server.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Option<BuiltInWorker>,
    limits: Limits,
    demo: Option<DemoSummary>,
}

impl Application {
    /// Connects, migrates and binds. Port 0 binds a free port (tests).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let database = Database::connect(&settings.database_url, settings.max_connections).await?;
        database.migrate().await?;
        tracing::info!(database = %redact(&settings.database_url), "database ready");
        let mut dispatcher = Dispatcher::new(
            database,
            Arc::new(SystemClock),
            Some(settings.admin_token.as_str()),
        );
        if let Some(key) = secrets_key(settings)? {
            dispatcher = dispatcher.with_secrets_key(key);
        }
        if let Some(url) = &settings.read_database_url {
            let standby = Standby::connect(url, settings.max_connections).await?;
            tracing::info!(read_replica = %redact(url), "reads served from the read replica");
            dispatcher = dispatcher.with_standby(standby);
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        // Bound first: a busy port fails before anything is written.
        let demo = if settings.demo {
            let summary =
                demo::seed(&dispatcher, settings.lease)
                    .await
                    .map_err(|error| match error {
                        DemoError::NotEmpty { .. } => {
                            anyhow::Error::new(crate::process::usage::UsageError(error.to_string()))
                        }
                        other => anyhow::Error::new(other),
                    })?;
            tracing::info!(
                tenants = summary.operator_tenants().len() + 1,
                held_runs = summary.held_runs.len(),
                "demo seeded"
            );
            Some(summary)
        } else {
            None
        };
        Ok(Self {
            demo,
            worker: settings.worker.clone(),
            listener,
            limits: settings.limits,
            state: AppState {
                dispatcher: Arc::new(dispatcher),
                lease: settings.lease,
                body_timeout: settings.limits.body_timeout,
            },
        })
    }

    /// What `--demo` seeded, when it was given.
    pub fn demo(&self) -> Option<&DemoSummary> {
        self.demo.as_ref()
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the bound address")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let database = self.state.dispatcher.database().clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let dispatcher = self.state.dispatcher.clone();
        let mut background = vec![
            tokio::spawn(dispatcher.catchup().clone().run(wait_stop(stopped.clone()))),
            tokio::spawn(run_reaper(
                dispatcher.clone(),
                self.state.lease / 2,
                stopped.clone(),
            )),
        ];
        if let Some(demo) = &self.demo {
            background.push(tokio::spawn(demo::hold(
                dispatcher.clone(),
                demo.held_runs.clone(),
                self.state.lease,
                stopped.clone(),
            )));
        }
        if let Some(worker) = self.worker.clone() {
            let provider: Arc<dyn Provider> = match worker.provider {
                WorkerProvider::Simulated(simulated) => Arc::new(simulated),
                WorkerProvider::Graph(config) => {
                    tracing::info!(graph = %config.base_url, authority = %config.authority_url, "runs execute through Microsoft Graph");
                    let config = GraphConfig {
                        retry: RetryBudget::within_lease(self.state.lease),
                        ..config
                    };
                    let client = GraphClient::new(config).context("building the Graph client")?;
                    Arc::new(GraphRuns::new(dispatcher.clone(), client))
                }
            };
            tracing::info!(concurrency = worker.concurrency, "built-in worker started");
            let config = WorkerConfig {
                concurrency: worker.concurrency,
                lease: self.state.lease,
                idle_poll: std::time::Duration::from_millis(250),
                id_prefix: format!("builtin-{}", std::process::id()),
            };
            background.push(tokio::spawn(run_workers(
                dispatcher.clone(),
                provider,
                config,
                stopped.clone(),
            )));
        }
        let address = self.local_addr()?;
        tracing::info!(%address, "listening");
        tracing::info!(console = %format!("http://{address}/"), "operator console: open it in a browser and sign in with a token");
        let served =
            crate::web::serve::serve(self.listener, app(self.state), self.limits, async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await
            .context("serving HTTP");
        for task in background {
            let _ = task.await;
        }
        database.close().await;
        served
    }
}

/// The sealing key: the one given, else (embedded SQLite only) the one kept
/// beside the database file, created on first use. PostgreSQL gets none
/// unless given: a key created on one host would not open on the next.
fn secrets_key(settings: &Settings) -> anyhow::Result<Option<SealingKey>> {
    if let Some(key) = &settings.secrets_key {
        return Ok(Some(key.clone()));
    }
    let Some(path) = default_key_path(&settings.database_url) else {
        tracing::warn!(
            "no --secrets-key-file: storing a provider secret is refused until the server \
             is started with one"
        );
        return Ok(None);
    };
    let (key, created) = SealingKey::load_or_create(&path)
        .map_err(|error| crate::process::usage::UsageError(error.to_string()))?;
    if created {
        tracing::info!(path = %path.display(), "created the secrets key file (mode 600); keep it with the database");
    }
    Ok(Some(key))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
