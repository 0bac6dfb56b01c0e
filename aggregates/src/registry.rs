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
use crate::values::{BackupRef, DisplayName};

/// A record kept by a [`Registered`] aggregate.
pub trait Record:
    Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static
{
    /// Stored as `aggregate_type`: be very careful when changing it.
    const TYPE: &'static str;
    /// Stored as `event_type` of the one event.
    const CREATED: &'static str;
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

/// What executing a restore will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePreview {
    /// The backup.
    pub backup_ref: BackupRef,
    /// Restores overwrite the tenant's current objects.
    pub destructive: bool,
    /// Warnings shown before confirmation.
    pub warnings: Vec<String>,
}

impl RestoreRun {
    /// A restore run prepared from `backup_ref`, with the preview the operator
    /// confirms before executing: a restore is destructive, and says how.
    pub fn prepare(
        restore_run_id: RestoreRunId,
        tenant_id: TenantId,
        backup_ref: BackupRef,
        actor: Actor,
        at: Timestamp,
    ) -> Self {
        Self {
            restore_run_id,
            tenant_id,
            preview: RestorePreview {
                backup_ref: backup_ref.clone(),
                destructive: true,
                warnings: vec![
                    "Objects in the tenant are overwritten with their versions from the backup."
                        .to_owned(),
                    "Objects created after the backup are left in place.".to_owned(),
                ],
            },
            backup_ref,
            actor,
            at,
        }
    }
}

impl Record for RestoreRun {
    const TYPE: &'static str = "RestoreRun";
    const CREATED: &'static str = "RestoreRunPrepared";
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
        "1.0".to_owned()
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
