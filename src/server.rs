//! The `serve` process: database, migrations, the gate, and the HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::gate::{Gate, SystemClock};
use crate::http::{app, AppState};
use crate::store::{redact, Database};

/// What `serve` needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The admin token.
    pub admin_token: String,
    /// Database pool size.
    pub max_connections: u32,
}

/// A built, not yet running, server.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Connects, migrates and binds. Port 0 binds a free port (tests).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let database = Database::connect(&settings.database_url, settings.max_connections).await?;
        database.migrate().await?;
        tracing::info!(database = %redact(&settings.database_url), "database ready");
        let gate = Gate::new(
            database,
            Arc::new(SystemClock),
            Some(settings.admin_token.as_str()),
        );
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Ok(Self {
            listener,
            state: AppState {
                gate: Arc::new(gate),
            },
        })
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
        let database = self.state.gate.database().clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let catchup = tokio::spawn(
            self.state
                .gate
                .catchup()
                .clone()
                .run(wait_stop(stopped.clone())),
        );
        tracing::info!(address = %self.local_addr()?, "listening");
        let served = axum::serve(self.listener, app(self.state))
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await
            .context("serving HTTP");
        let _ = catchup.await;
        database.close().await;
        served
    }
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
