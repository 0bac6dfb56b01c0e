//! The central registries: operations, capabilities, roles, actions and reason codes.
//!
//! Stored names (`as_str`) are a contract with the event log and the HTTP API:
//! be very careful when changing one.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{ConnectionId, RestoreRunId, TenantId};

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $err:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownName { kind: $err, value: other.to_owned() }),
                }
            }
        }
    };
}

/// A name that is not in a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownName {
    /// What kind of name was expected (operation, capability, …).
    pub kind: &'static str,
    /// The rejected input.
    pub value: String,
}

string_enum!(
    /// A covered provider-backed operation.
    OperationKind, "operation" {
        /// Verify the provider connection.
        ProviderVerify => "provider.verify",
        /// Sync the tenant's inventory.
        InventorySync => "inventory.sync",
        /// Sync directory groups.
        DirectoryGroupsSync => "directory.groups.sync",
        /// Sync directory roles.
        DirectoryRolesSync => "directory.roles.sync",
        /// Execute a prepared restore.
        RestoreExecute => "restore.execute",
    }
);

impl OperationKind {
    /// The capability a member needs to start this operation: the one place
    /// it is stated ([`Action::capabilities`] and [`Role::capabilities`] read it).
    pub fn required_capability(self) -> &'static Capability {
        match self {
            Self::ProviderVerify => &Capability::ProviderVerify,
            Self::InventorySync => &Capability::InventorySync,
            Self::DirectoryGroupsSync => &Capability::DirectoryGroupsSync,
            Self::DirectoryRolesSync => &Capability::DirectoryRolesSync,
            Self::RestoreExecute => &Capability::RestoreExecute,
        }
    }

    /// What kind of scope the operation is deduplicated on.
    pub fn scope_kind(self) -> ScopeKind {
        match self {
            Self::ProviderVerify => ScopeKind::Connection,
            Self::InventorySync | Self::DirectoryGroupsSync | Self::DirectoryRolesSync => {
                ScopeKind::Tenant
            }
            Self::RestoreExecute => ScopeKind::RestoreRun,
        }
    }

    /// A label for headlines.
    pub fn label(self) -> &'static str {
        match self {
            Self::ProviderVerify => "Provider verification",
            Self::InventorySync => "Inventory sync",
            Self::DirectoryGroupsSync => "Directory groups sync",
            Self::DirectoryRolesSync => "Directory roles sync",
            Self::RestoreExecute => "Restore execution",
        }
    }

    /// Onboarding bootstrap: the ordered chain of steps.
    pub const BOOTSTRAP_CHAIN: [OperationKind; 3] = [
        Self::InventorySync,
        Self::DirectoryGroupsSync,
        Self::DirectoryRolesSync,
    ];
}

string_enum!(
    /// The kind of thing an operation's scope names: a [`Scope`]'s `kind` as stored.
    ScopeKind, "scope kind" {
        /// The provider connection itself.
        Connection => "connection",
        /// The tenant.
        Tenant => "tenant",
        /// One restore run.
        RestoreRun => "restore_run",
    }
);

string_enum!(
    /// A kind of provider object a sync counts (and keeps outside the log).
    ItemKind, "item kind" {
        /// A directory group (`directory.groups.sync`).
        Group => "group",
        /// A directory role definition (`directory.roles.sync`).
        RoleDefinition => "role_definition",
        /// An Intune device configuration (`inventory.sync`).
        DeviceConfiguration => "device_configuration",
        /// An Intune compliance policy (`inventory.sync`).
        CompliancePolicy => "compliance_policy",
    }
);

impl ItemKind {
    /// The kinds an `inventory.sync` snapshots and a restore writes back.
    pub const RESTORABLE: [ItemKind; 2] = [Self::DeviceConfiguration, Self::CompliancePolicy];

    /// The sync that finds objects of this kind.
    pub fn found_by(self) -> OperationKind {
        match self {
            Self::Group => OperationKind::DirectoryGroupsSync,
            Self::RoleDefinition => OperationKind::DirectoryRolesSync,
            Self::DeviceConfiguration | Self::CompliancePolicy => OperationKind::InventorySync,
        }
    }
}

string_enum!(
    /// What executing a restore does to one object of its snapshot, compared with
    /// the tenant's content.
    RestoreAction, "restore action" {
        /// Its content differs from the snapshot's: it is written back (PATCH).
        Patch => "patch",
        /// It is gone since the snapshot: it is created again (POST).
        Create => "create",
        /// It is as in the snapshot: nothing is sent.
        Unchanged => "unchanged",
    }
);

string_enum!(
    /// What a restore's execution did with one object.
    ObjectOutcome, "object outcome" {
        /// Written back.
        Patched => "patched",
        /// Created again.
        Created => "created",
        /// Already as in the snapshot; nothing was sent.
        Unchanged => "unchanged",
        /// The provider refused it.
        Failed => "failed",
    }
);

/// The dedupe key beside the operation: what the operation works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Scope {
    /// A provider connection.
    Connection(ConnectionId),
    /// A tenant.
    Tenant(TenantId),
    /// A restore run.
    RestoreRun(RestoreRunId),
}

impl Scope {
    /// What kind of thing the scope names (its stored `kind`).
    pub fn kind(self) -> ScopeKind {
        match self {
            Self::Connection(_) => ScopeKind::Connection,
            Self::Tenant(_) => ScopeKind::Tenant,
            Self::RestoreRun(_) => ScopeKind::RestoreRun,
        }
    }

    /// The id of the thing the scope names.
    pub fn id(self) -> uuid::Uuid {
        match self {
            Self::Connection(id) => id.0,
            Self::Tenant(id) => id.0,
            Self::RestoreRun(id) => id.0,
        }
    }
}

string_enum!(
    /// A capability a tenant member may hold.
    Capability, "capability" {
        /// Start `provider.verify`.
        ProviderVerify => "provider.verify",
        /// Start `inventory.sync`.
        InventorySync => "inventory.sync",
        /// Start `directory.groups.sync`.
        DirectoryGroupsSync => "directory.groups.sync",
        /// Start `directory.roles.sync`.
        DirectoryRolesSync => "directory.roles.sync",
        /// Start `restore.execute` (and prepare restore runs).
        RestoreExecute => "restore.execute",
        /// Read Monitoring → Operations.
        OperationsView => "operations.view",
        /// Manage provider connections.
        ProviderManage => "provider.manage",
        /// Drive onboarding.
        OnboardingManage => "onboarding.manage",
    }
);

string_enum!(
    /// A tenant member's role: a named bundle of capabilities.
    Role, "role" {
        /// Every capability.
        Owner => "owner",
        /// Every start capability and `operations.view`.
        Operator => "operator",
        /// `operations.view` only.
        Readonly => "readonly",
    }
);

impl Role {
    /// The capabilities the role grants when no explicit list is given.
    pub fn capabilities(self) -> BTreeSet<Capability> {
        match self {
            Self::Owner => Capability::ALL.iter().copied().collect(),
            Self::Operator => OperationKind::ALL
                .iter()
                .map(|op| *op.required_capability())
                .chain([Capability::OperationsView])
                .collect(),
            Self::Readonly => [Capability::OperationsView].into_iter().collect(),
        }
    }
}

/// Everything a caller can ask for; [`Action::capabilities`] is the one
/// registry that maps an action to its capability. No endpoint invents its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start (or cancel) a covered operation.
    StartOperation(OperationKind),
    /// Prepare a restore run (no provider work yet).
    PrepareRestore,
    /// Read runs, decisions, notifications and onboarding state.
    ViewOperations,
    /// Read provider connections.
    ViewConnections,
    /// Create and change provider connections and the tenant's default.
    ManageProviderConnections,
    /// Admit onboarding bootstrap steps.
    ManageOnboarding,
}

impl Action {
    /// The capabilities that allow this action: holding any one of them is enough.
    pub fn capabilities(self) -> &'static [Capability] {
        use Capability as C;
        match self {
            Self::StartOperation(operation) => {
                std::slice::from_ref(operation.required_capability())
            }
            // Preparing a restore is the first half of executing one.
            Self::PrepareRestore => {
                std::slice::from_ref(OperationKind::RestoreExecute.required_capability())
            }
            Self::ViewOperations => &[C::OperationsView],
            // Whoever manages connections must be able to see them.
            Self::ViewConnections => &[C::OperationsView, C::ProviderManage],
            Self::ManageProviderConnections => &[C::ProviderManage],
            Self::ManageOnboarding => &[C::OnboardingManage],
        }
    }

    /// Whether a set of capabilities allows this action.
    pub fn allowed_by(self, held: &BTreeSet<Capability>) -> bool {
        self.capabilities().iter().any(|c| held.contains(c))
    }
}

string_enum!(
    /// The one taxonomy of reasons, for start results, run failures and notifications.
    ReasonCode, "reason code" {
        /// The tenant has no default provider connection.
        MissingDefault => "provider.connection.missing_default",
        /// The connection is disabled.
        ConnectionDisabled => "provider.connection.disabled",
        /// Admin consent is missing.
        ConsentMissing => "provider.consent.missing",
        /// No credentials are stored.
        CredentialsMissing => "provider.credentials.missing",
        /// The provider rejects the credentials.
        CredentialsInvalid => "provider.credentials.invalid",
        /// The credentials have expired.
        CredentialsExpired => "provider.credentials.expired",
        /// The same operation for the same scope is already active.
        AlreadyActive => "operation.already_active",
        /// Another operation holds the connection.
        ConnectionBusy => "provider.connection.busy",
        /// The provider refused an operation for lack of permission.
        PermissionDenied => "provider.permission_denied",
        /// The provider throttled the operation.
        Throttled => "provider.throttled",
        /// The provider could not be reached.
        Unreachable => "provider.unreachable",
        /// The worker's lease expired before the run ended.
        TimedOut => "operation.timed_out",
        /// Something failed inside dispatch-gate.
        InternalError => "internal.error",
        /// A restore's backup names no snapshot the gate captured.
        SnapshotMissing => "restore.snapshot.missing",
        /// The provider refused some of a restore's objects.
        ObjectsFailed => "restore.objects.failed",
    }
);

string_enum!(
    /// The class of problem a reason belongs to.
    ProblemClass, "problem class" {
        /// Set-up is incomplete or wrong.
        Configuration => "configuration",
        /// Access to the provider is missing or refused.
        Access => "access",
        /// Another run is in the way.
        Concurrency => "concurrency",
        /// Worth retrying later.
        Transient => "transient",
        /// A defect on our side.
        Internal => "internal",
    }
);

/// The text an operator reads for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonText {
    /// The problem class.
    pub problem_class: ProblemClass,
    /// What is wrong, in plain words.
    pub message: &'static str,
    /// What the operator should do next.
    pub next_step: &'static str,
}

impl ReasonCode {
    /// The registry entry for this code.
    pub fn text(self) -> ReasonText {
        use ProblemClass::*;
        let (problem_class, message, next_step) = match self {
            Self::MissingDefault => (
                Configuration,
                "This tenant has no default provider connection.",
                "Choose a default provider connection for the tenant, then start again.",
            ),
            Self::ConnectionDisabled => (
                Configuration,
                "The provider connection is disabled.",
                "Enable the provider connection, or pick another one, then start again.",
            ),
            Self::ConsentMissing => (
                Access,
                "Admin consent has not been granted for this provider connection.",
                "Ask a tenant administrator to grant admin consent, then start again.",
            ),
            Self::CredentialsMissing => (
                Access,
                "The provider connection has no credentials.",
                "Add credentials to the provider connection, then start again.",
            ),
            Self::CredentialsInvalid => (
                Access,
                "The provider rejected the connection's credentials.",
                "Replace the connection's credentials, then start again.",
            ),
            Self::CredentialsExpired => (
                Access,
                "The provider connection's credentials have expired.",
                "Renew the connection's credentials, then start again.",
            ),
            Self::AlreadyActive => (
                Concurrency,
                "The same operation is already queued or running for this scope.",
                "Follow the existing run; no new run was started.",
            ),
            Self::ConnectionBusy => (
                Concurrency,
                "Another operation is using this provider connection.",
                "Wait for the active run to finish, then start again.",
            ),
            Self::PermissionDenied => (
                Access,
                "The provider denied a permission the operation needs.",
                "Grant the missing permission to the connection's app registration, then retry.",
            ),
            Self::Throttled => (
                Transient,
                "The provider throttled the operation.",
                "Retry in a few minutes.",
            ),
            Self::Unreachable => (
                Transient,
                "The provider could not be reached.",
                "Retry in a few minutes; check the provider's status if it persists.",
            ),
            Self::TimedOut => (
                Transient,
                "The run stopped reporting progress and timed out.",
                "Start the operation again; report it if it keeps timing out.",
            ),
            Self::InternalError => (
                Internal,
                "The operation failed because of an internal error.",
                "Retry; if it fails again, report it to the dispatch-gate operators.",
            ),
            Self::SnapshotMissing => (
                Configuration,
                "The restore's backup names no snapshot that dispatch-gate captured, so there is nothing to restore from.",
                "Prepare a restore from an inventory sync's snapshot (backup `inventory:<run id>`), then execute that one.",
            ),
            Self::ObjectsFailed => (
                Configuration,
                "The provider refused some of the snapshot's objects; the others were restored.",
                "Read the run's failures (each with the provider's code), correct the cause, then prepare and execute the restore again.",
            ),
        };
        ReasonText {
            problem_class,
            message,
            next_step,
        }
    }

    /// Whether a worker may report this code as a run failure.
    pub fn is_execution_reason(self) -> bool {
        !matches!(
            self,
            Self::MissingDefault | Self::AlreadyActive | Self::ConnectionBusy
        )
    }
}

string_enum!(
    /// Whether admin consent was granted.
    Consent, "consent" {
        /// Granted.
        Granted => "granted",
        /// Missing or revoked.
        Missing => "missing",
    }
);

string_enum!(
    /// The state of a connection's credentials.
    CredentialStatus, "credential status" {
        /// Usable.
        Valid => "valid",
        /// None stored.
        Missing => "missing",
        /// Rejected by the provider.
        Invalid => "invalid",
        /// Expired.
        Expired => "expired",
    }
);

string_enum!(
    /// Who did something: the kind of an [`Actor`](crate::actor::Actor).
    ActorKind, "actor kind" {
        /// The holder of the admin token.
        Admin => "admin",
        /// A user with a bearer token.
        User => "user",
        /// dispatch-gate itself.
        System => "system",
    }
);

string_enum!(
    /// The four outcomes of a start.
    Outcome, "outcome" {
        /// A new queued run.
        Accepted => "accepted",
        /// The same operation and scope are already active: that run is returned.
        Deduped => "deduped",
        /// Another operation holds the connection: that run is returned.
        ScopeBusy => "scope_busy",
        /// The provider cannot be used; nothing is queued.
        Blocked => "blocked",
    }
);

string_enum!(
    /// A run's status.
    RunStatus, "run status" {
        /// Accepted, waiting for a worker.
        Queued => "queued",
        /// Claimed by a worker.
        Running => "running",
        /// Ended well.
        Succeeded => "succeeded",
        /// Ended badly (including lease expiry and the execution-time gate).
        Failed => "failed",
        /// Cancelled by an operator.
        Cancelled => "cancelled",
    }
);

impl RunStatus {
    /// Queued or running: the run holds its connection.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

// `string_enum!` cannot mark a `#[default]` variant, so these stay hand-written.
#[allow(clippy::derivable_impls)]
impl Default for Consent {
    fn default() -> Self {
        Self::Missing
    }
}

#[allow(clippy::derivable_impls)]
impl Default for CredentialStatus {
    fn default() -> Self {
        Self::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_stored_under_the_wire_name_of_its_kind() {
        let id = uuid::Uuid::nil();
        let scopes = [
            Scope::Connection(ConnectionId(id)),
            Scope::Tenant(TenantId(id)),
            Scope::RestoreRun(RestoreRunId(id)),
        ];
        for scope in scopes {
            let stored = serde_json::to_value(scope).unwrap();
            assert_eq!(stored["kind"], scope.kind().as_str(), "{scope:?}");
            assert_eq!(stored["id"], scope.id().to_string());
        }
        let kinds: Vec<ScopeKind> = scopes.iter().map(|s| s.kind()).collect();
        assert_eq!(kinds, ScopeKind::ALL);
    }
}
