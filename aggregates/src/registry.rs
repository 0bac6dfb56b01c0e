//! Aggregates that are created once and never change: workspaces and
//! prepared restore runs. One generic aggregate, [`Registered`], serves both
//! (users have a token lifecycle: [`crate::user`]).

use std::fmt::Debug;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::actor::{Actor, Timestamp};
use crate::ids::{RestoreRunId, TenantId, WorkspaceId};
use crate::restore::{self, Plan, PreviewCounts, SnapshotRef};
use crate::values::{BackupRef, DisplayName};

/// A record kept by a [`Registered`] aggregate.
pub trait Record:
    Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static
{
    /// Stored as `aggregate_type`: be very careful when changing it.
    const TYPE: &'static str;
    /// Stored as `event_type` of the one event.
    const CREATED: &'static str;
    /// Stored as `event_version` of the one event: a new shape is a new version
    /// with an upcaster (see [`crate::upcast`]).
    const VERSION: &'static str;
}

/// A workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Its id.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: DisplayName,
    /// Who created it.
    pub actor: Actor,
    /// When.
    pub at: Timestamp,
}

impl Record for Workspace {
    const TYPE: &'static str = "Workspace";
    const CREATED: &'static str = "WorkspaceCreated";
    const VERSION: &'static str = "1.0";
}

/// A restore run prepared for execution: its preview, before any provider work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRun {
    /// Its id.
    pub restore_run_id: RestoreRunId,
    /// The tenant restored into.
    pub tenant_id: TenantId,
    /// The backup to restore from.
    pub backup_ref: BackupRef,
    /// What the operator confirms before executing.
    pub preview: RestorePreview,
    /// Who prepared it.
    pub actor: Actor,
    /// When.
    pub at: Timestamp,
}

/// What executing a restore will do. The per-object list is provider data and
/// stays beside the log; the log keeps the snapshot it names and the counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePreview {
    /// The backup.
    pub backup_ref: BackupRef,
    /// Whether executing it writes to the tenant: always for a backup the
    /// gate cannot look into; for a snapshot, when anything is to be patched
    /// or created.
    pub destructive: bool,
    /// Warnings shown before confirmation.
    pub warnings: Vec<String>,
    /// The snapshot the backup names (since 2.0); `None` for a label.
    pub snapshot: Option<SnapshotRef>,
    /// What executing it does, counted against the latest sync (since 2.0);
    /// `None` for a label.
    pub counts: Option<PreviewCounts>,
}

impl RestoreRun {
    /// A restore run prepared from `backup_ref`, with the preview the operator
    /// confirms before executing: from a snapshot and what restoring it does
    /// (`snapshot`), or from a label the gate knows nothing behind.
    pub fn prepare(
        restore_run_id: RestoreRunId,
        tenant_id: TenantId,
        backup_ref: BackupRef,
        snapshot: Option<(SnapshotRef, &Plan)>,
        actor: Actor,
        at: Timestamp,
    ) -> Self {
        let preview = match snapshot {
            Some((snapshot, plan)) => {
                let counts = plan.counts();
                RestorePreview {
                    backup_ref: backup_ref.clone(),
                    destructive: counts.patch + counts.create > 0,
                    warnings: restore::warnings(Some(plan)),
                    snapshot: Some(snapshot),
                    counts: Some(counts),
                }
            }
            None => RestorePreview {
                backup_ref: backup_ref.clone(),
                destructive: true,
                warnings: restore::warnings(None),
                snapshot: None,
                counts: None,
            },
        };
        Self {
            restore_run_id,
            tenant_id,
            preview,
            backup_ref,
            actor,
            at,
        }
    }

    /// What a start of this restore restores, for its decision's evidence.
    pub fn source(&self) -> restore::RestoreSource {
        restore::RestoreSource {
            backup_ref: self.backup_ref.clone(),
            snapshot: self.preview.snapshot.clone(),
        }
    }
}

impl Record for RestoreRun {
    const TYPE: &'static str = "RestoreRun";
    const CREATED: &'static str = "RestoreRunPrepared";
    // 2.0: the preview names its snapshot and counts (see `upcast`).
    const VERSION: &'static str = "2.0";
}

/// The one event of a [`Registered`] aggregate: the record, as created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Created<T>(pub T);

impl<T: Record> DomainEvent for Created<T> {
    fn event_type(&self) -> String {
        T::CREATED.to_owned()
    }

    fn event_version(&self) -> String {
        T::VERSION.to_owned()
    }
}

/// Creating a record that already exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("already exists")]
pub struct AlreadyExists;

/// An aggregate holding one immutable record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered<T>(pub Option<T>);

impl<T> Default for Registered<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T: Record> Aggregate for Registered<T> {
    const TYPE: &'static str = T::TYPE;
    /// The command is the record to create.
    type Command = T;
    type Event = Created<T>;
    type Error = AlreadyExists;
    type Services = ();

    async fn handle(
        &mut self,
        command: T,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AlreadyExists> {
        if self.0.is_some() {
            return Err(AlreadyExists);
        }
        sink.write(Created(command), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Created<T>) {
        self.0 = Some(event.0);
    }
}
