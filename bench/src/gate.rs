//! The gate as the bench drives it, built from the library's public API: the
//! executor of provider connections as [`Dispatcher`] builds it (same
//! database, same snapshot policy, [`SNAPSHOT_EVERY`]) and the metadata a
//! start records ([`metadata`]). The
//! bench's starts go through the same load, decide and commit as
//! `Dispatcher::start`, without HTTP and authorization.
//!
//! [`Dispatcher`]: dispatch_gate::app::Dispatcher

use aggregates::connection::ProviderConnection;
use std::collections::HashMap;

use aggregates::{Actor, Timestamp};
use dispatch_gate::app::RequestContext;
pub use dispatch_gate::app::SNAPSHOT_EVERY;
use dispatch_gate::write::executor::Executor;
use dispatch_gate::write::snapshot::SnapshotPolicy;
use dispatch_gate::write::store::Database;

/// The metadata the service records with a command carried by a request
/// whose server id is `request_id` (what [`RequestContext::metadata`] makes).
pub fn metadata(actor: &Actor, request_id: Option<&str>, at: Timestamp) -> HashMap<String, String> {
    RequestContext {
        request_id: request_id.map(str::to_owned),
        ..RequestContext::NONE
    }
    .metadata(actor, at)
}

/// A connection executor of its own, as each `Dispatcher` (each `serve`
/// process) has one: two of them on one database do not serialise each other.
pub fn connection_executor(database: &Database) -> Executor<ProviderConnection> {
    Executor::new(database).with_snapshots(SnapshotPolicy {
        every: SNAPSHOT_EVERY,
        version: ProviderConnection::SNAPSHOT_VERSION,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aggregates::catalog::OperationKind;
    use cqrs_es::Aggregate;
    use dispatch_gate::app::{Dispatcher, Principal, StartCommand, SystemClock};

    use super::*;
    use crate::seed::{Sink, Table, World};

    /// The first snapshot the `Dispatcher` writes of a connection whose
    /// history reaches `length` events with one start through its public API.
    async fn dispatcher_snapshot_after(length: usize) -> Option<usize> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gate.db").display());
        let database = Database::connect(&url, 1).await.unwrap();
        database.migrate().await.unwrap();
        let mut out = Vec::new();
        let mut world = World::new(&mut out).await.unwrap();
        let mut sink = Sink::new(&database, Table::Events).await.unwrap();
        sink.extend(out).await.unwrap();
        let connection = world
            .connection_with_history(length - 1, &mut sink)
            .await
            .unwrap();
        sink.flush().await.unwrap();
        let dispatcher = Dispatcher::new(database.clone(), Arc::new(SystemClock), None);
        dispatcher
            .start(StartCommand {
                tenant_id: connection.tenant_id,
                operation: OperationKind::InventorySync,
                connection: None,
                restore_run: None,
                principal: Principal::Admin,
                context: RequestContext::NONE,
            })
            .await
            .unwrap();
        let id = connection.connection_id.to_string();
        let snapshot =
            dispatch_gate::write::snapshot::read(&database, ProviderConnection::TYPE, &id)
                .await
                .unwrap();
        database.close().await;
        snapshot.map(|s| s.sequence)
    }

    #[tokio::test]
    async fn the_bench_snapshots_connections_where_the_dispatcher_does() {
        assert_eq!(dispatcher_snapshot_after(SNAPSHOT_EVERY - 1).await, None);
        assert_eq!(
            dispatcher_snapshot_after(SNAPSHOT_EVERY).await,
            Some(SNAPSHOT_EVERY)
        );
    }
}
