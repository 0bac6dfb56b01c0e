//! The `Tenant` aggregate: membership, the tenant's connections and its default.
//!
//! The default connection is a tenant fact (at most one per tenant, changed
//! atomically), so it lives here and not on the connections. A start that finds
//! no default is decided here too, and recorded as a blocked decision.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::{Actor, Timestamp};
use crate::catalog::{Capability, OperationKind, ReasonCode, Role, Scope};
use crate::ids::{ConnectionId, DecisionId, TenantId, UserId, WorkspaceId};
use crate::values::DisplayName;

/// A member's grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The role, as a label and the source of the default capabilities.
    pub role: Role,
    /// The capabilities actually held.
    pub capabilities: BTreeSet<Capability>,
}

/// A start on the tenant surface that found no connection to decide on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStartRequest {
    /// The decision's id.
    pub decision_id: DecisionId,
    /// The operation.
    pub operation: OperationKind,
    /// Its scope, where it is known without a connection.
    pub scope: Option<Scope>,
    /// Who clicked.
    pub actor: Actor,
    /// When.
    pub at: Timestamp,
    /// The HTTP request id.
    pub request_id: Option<String>,
}

/// Commands to a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantCommand {
    /// Create the tenant in a workspace.
    Create {
        /// The tenant's id.
        tenant_id: TenantId,
        /// Its workspace.
        workspace_id: WorkspaceId,
        /// Its name.
        name: DisplayName,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Add a member or change its grant.
    SetMember {
        /// The user.
        user_id: UserId,
        /// The role.
        role: Role,
        /// An explicit capability list; `None` takes the role's.
        capabilities: Option<BTreeSet<Capability>>,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Remove a member.
    RemoveMember {
        /// The user.
        user_id: UserId,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// List a newly created connection under the tenant.
    AttachConnection {
        /// The connection.
        connection_id: ConnectionId,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Set (`Some`) or clear (`None`) the default connection.
    SetDefaultConnection {
        /// The new default.
        connection_id: Option<ConnectionId>,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Record a start that resolved to no connection: blocked, missing default.
    RecordStartWithoutDefault(TenantStartRequest),
}

/// Facts about a tenant. Variant names are stored as event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantEvent {
    /// The tenant was created.
    TenantCreated {
        /// Its id.
        tenant_id: TenantId,
        /// Its workspace.
        workspace_id: WorkspaceId,
        /// Its name.
        name: DisplayName,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// A member was added or its grant changed.
    MemberSet {
        /// The user.
        user_id: UserId,
        /// The grant.
        membership: Membership,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// A member was removed.
    MemberRemoved {
        /// The user.
        user_id: UserId,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// A connection was listed under the tenant.
    ConnectionAttached {
        /// The connection.
        connection_id: ConnectionId,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// The default connection was set.
    DefaultConnectionSet {
        /// The new default.
        connection_id: ConnectionId,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// The default connection was cleared.
    DefaultConnectionCleared {
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// A start was blocked because the tenant has no default connection.
    ///
    /// Version 2.0 added `evidence`; version 1.0 payloads are read through the
    /// upcaster in [`crate::upcast`].
    StartBlocked {
        /// The start as made.
        request: TenantStartRequest,
        /// Always `provider.connection.missing_default`.
        reason: ReasonCode,
        /// What the tenant looked like when the start found no connection.
        evidence: TenantEvidence,
    },
}

/// The tenant facts a start without a connection was decided on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEvidence {
    /// The default connection (none, or the start would not have been blocked).
    pub default_connection: Option<ConnectionId>,
    /// The tenant's connections at the time, none of them the default. `None`
    /// for starts recorded as version 1.0, which did not carry the list.
    pub connections: Option<Vec<ConnectionId>>,
}

impl DomainEvent for TenantEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::TenantCreated { .. } => "TenantCreated",
            Self::MemberSet { .. } => "MemberSet",
            Self::MemberRemoved { .. } => "MemberRemoved",
            Self::ConnectionAttached { .. } => "ConnectionAttached",
            Self::DefaultConnectionSet { .. } => "DefaultConnectionSet",
            Self::DefaultConnectionCleared { .. } => "DefaultConnectionCleared",
            Self::StartBlocked { .. } => "StartBlocked",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::StartBlocked { .. } => "2.0",
            _ => "1.0",
        }
        .to_owned()
    }
}

/// Why a command to a tenant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// The tenant does not exist.
    #[error("tenant not found")]
    NotFound,
    /// `Create` on an existing tenant.
    #[error("tenant already exists")]
    AlreadyExists,
    /// The user is not a member.
    #[error("user is not a member of this tenant")]
    NotMember,
    /// The connection is not one of this tenant's.
    #[error("provider connection is not one of this tenant's")]
    UnknownConnection,
    /// A start without a default was recorded while a default exists.
    #[error("the tenant has a default connection")]
    HasDefault(ConnectionId),
}

/// Who a tenant is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantIdentity {
    /// Its id.
    pub tenant_id: TenantId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: DisplayName,
}

/// A tenant's state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// `None` until created.
    pub identity: Option<TenantIdentity>,
    /// Members and their grants.
    pub members: BTreeMap<UserId, Membership>,
    /// The tenant's connections, in the order they were attached.
    pub connections: Vec<ConnectionId>,
    /// The default connection.
    pub default_connection: Option<ConnectionId>,
}

impl Tenant {
    /// The shape of this state in snapshots: change it whenever the state's
    /// fields change, so that older snapshots are ignored and rebuilt.
    pub const SNAPSHOT_VERSION: &'static str = "tenant/1";

    /// The membership of a user, if any.
    pub fn member(&self, user_id: UserId) -> Option<&Membership> {
        self.members.get(&user_id)
    }

    /// The facts a start without a connection is decided on.
    pub fn evidence(&self) -> TenantEvidence {
        TenantEvidence {
            default_connection: self.default_connection,
            connections: Some(self.connections.clone()),
        }
    }
}

/// Decides a command against the state.
pub fn decide(state: &Tenant, command: TenantCommand) -> Result<Vec<TenantEvent>, TenantError> {
    use TenantEvent as E;
    if let TenantCommand::Create {
        tenant_id,
        workspace_id,
        name,
        actor,
        at,
    } = command
    {
        if state.identity.is_some() {
            return Err(TenantError::AlreadyExists);
        }
        return Ok(vec![E::TenantCreated {
            tenant_id,
            workspace_id,
            name,
            actor,
            at,
        }]);
    }
    if state.identity.is_none() {
        return Err(TenantError::NotFound);
    }
    let events = match command {
        TenantCommand::Create { .. } => unreachable!("handled above"),
        TenantCommand::SetMember {
            user_id,
            role,
            capabilities,
            actor,
            at,
        } => {
            let membership = Membership {
                role,
                capabilities: capabilities.unwrap_or_else(|| role.capabilities()),
            };
            if state.members.get(&user_id) == Some(&membership) {
                vec![]
            } else {
                vec![E::MemberSet {
                    user_id,
                    membership,
                    actor,
                    at,
                }]
            }
        }
        TenantCommand::RemoveMember { user_id, actor, at } => {
            if !state.members.contains_key(&user_id) {
                return Err(TenantError::NotMember);
            }
            vec![E::MemberRemoved { user_id, actor, at }]
        }
        TenantCommand::AttachConnection {
            connection_id,
            actor,
            at,
        } => {
            if state.connections.contains(&connection_id) {
                vec![]
            } else {
                vec![E::ConnectionAttached {
                    connection_id,
                    actor,
                    at,
                }]
            }
        }
        TenantCommand::SetDefaultConnection {
            connection_id,
            actor,
            at,
        } => match connection_id {
            Some(id) if !state.connections.contains(&id) => {
                return Err(TenantError::UnknownConnection)
            }
            Some(id) if state.default_connection == Some(id) => vec![],
            Some(id) => vec![E::DefaultConnectionSet {
                connection_id: id,
                actor,
                at,
            }],
            None if state.default_connection.is_none() => vec![],
            None => vec![E::DefaultConnectionCleared { actor, at }],
        },
        TenantCommand::RecordStartWithoutDefault(request) => {
            if let Some(id) = state.default_connection {
                return Err(TenantError::HasDefault(id));
            }
            vec![E::StartBlocked {
                request,
                reason: ReasonCode::MissingDefault,
                evidence: state.evidence(),
            }]
        }
    };
    Ok(events)
}

/// Applies one event to the state.
pub fn evolve(state: &mut Tenant, event: TenantEvent) {
    use TenantEvent as E;
    match event {
        E::TenantCreated {
            tenant_id,
            workspace_id,
            name,
            ..
        } => {
            state.identity = Some(TenantIdentity {
                tenant_id,
                workspace_id,
                name,
            })
        }
        E::MemberSet {
            user_id,
            membership,
            ..
        } => {
            state.members.insert(user_id, membership);
        }
        E::MemberRemoved { user_id, .. } => {
            state.members.remove(&user_id);
        }
        E::ConnectionAttached { connection_id, .. } => state.connections.push(connection_id),
        E::DefaultConnectionSet { connection_id, .. } => {
            state.default_connection = Some(connection_id)
        }
        E::DefaultConnectionCleared { .. } => state.default_connection = None,
        E::StartBlocked { .. } => {}
    }
}

impl Aggregate for Tenant {
    /// Stored as `aggregate_type`: be very careful when changing it.
    const TYPE: &'static str = "Tenant";
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = TenantError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in decide(self, command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        evolve(self, event);
    }
}
