//! What the syncs bring back: provider objects, each with its full JSON.

use std::fmt;

use aggregates::catalog::ReasonCode;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::failure::GraphFailure;

/// The kinds of object the syncs read; `as_str` is the contract's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// An Entra group (`directory.groups.sync`).
    Group,
    /// A directory role definition (`directory.roles.sync`).
    RoleDefinition,
    /// An Intune device configuration (`inventory.sync`).
    DeviceConfiguration,
    /// An Intune device compliance policy (`inventory.sync`).
    CompliancePolicy,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [ObjectKind; 4] = [
        Self::Group,
        Self::RoleDefinition,
        Self::DeviceConfiguration,
        Self::CompliancePolicy,
    ];

    /// The contract's name: `group`, `role_definition`, `device_configuration`,
    /// `compliance_policy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::RoleDefinition => "role_definition",
            Self::DeviceConfiguration => "device_configuration",
            Self::CompliancePolicy => "compliance_policy",
        }
    }

    /// The collection under `{base}/v1.0/`.
    pub(super) fn collection(self) -> &'static str {
        match self {
            Self::Group => "groups",
            Self::RoleDefinition => "roleManagement/directory/roleDefinitions",
            Self::DeviceConfiguration => "deviceManagement/deviceConfigurations",
            Self::CompliancePolicy => "deviceManagement/deviceCompliancePolicies",
        }
    }

    /// The application permission a read of this collection needs, for the
    /// operator reading a refusal.
    pub(super) fn read_permission(self) -> &'static str {
        match self {
            Self::Group => "Group.Read.All",
            Self::RoleDefinition => "RoleManagement.Read.Directory",
            Self::DeviceConfiguration | Self::CompliancePolicy => {
                "DeviceManagementConfiguration.Read.All"
            }
        }
    }

    /// Restores write only the deviceManagement collections.
    pub(super) fn is_writable(self) -> bool {
        matches!(self, Self::DeviceConfiguration | Self::CompliancePolicy)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object as Graph holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphObject {
    /// Its kind.
    pub kind: ObjectKind,
    /// Graph's `id`.
    pub external_id: String,
    /// `displayName`, when the answer has one (a delta change may leave it out).
    pub display_name: Option<String>,
    /// `lastModifiedDateTime`, when the kind has one.
    pub modified_at: Option<DateTime<Utc>>,
    /// The whole object as Graph sent it.
    pub content: Value,
}

impl GraphObject {
    /// Reads the fields the gate indexes; an object without an `id` breaks
    /// Graph's own contract and fails the page.
    pub(super) fn read(kind: ObjectKind, content: Value, what: &str) -> Result<Self, GraphFailure> {
        let external_id = content
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                GraphFailure::new(
                    ReasonCode::InternalError,
                    format!("{what} answered a {kind} without an id"),
                )
            })?;
        let display_name = content
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let modified_at = content
            .get("lastModifiedDateTime")
            .and_then(Value::as_str)
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|at| at.with_timezone(&Utc));
        Ok(Self {
            kind,
            external_id,
            display_name,
            modified_at,
            content,
        })
    }
}

/// The body that creates `content` again in its collection: its writable
/// properties (`aggregates::restore::body`: no `id`, `createdDateTime`,
/// `lastModifiedDateTime` or `version`; `@odata.type` kept). A compliance
/// policy without `scheduledActionsForRule` (a sync's list does not expand it)
/// gets the one action Intune requires of a new policy: block, at once, on the
/// rule `PasswordRequired` — the resource page says every scheduled action is
/// created per policy under that rule name
/// (learn.microsoft.com/graph/api/resources/intune-deviceconfig-devicecompliancescheduledactionforrule).
pub fn creation_body(kind: ObjectKind, content: &Value) -> Value {
    let mut body = aggregates::restore::body(content);
    if kind == ObjectKind::CompliancePolicy {
        if let Value::Object(fields) = &mut body {
            fields.entry("scheduledActionsForRule").or_insert_with(|| {
                serde_json::json!([{
                    "ruleName": "PasswordRequired",
                    "scheduledActionConfigurations": [{
                        "actionType": "block",
                        "gracePeriodHours": 0,
                        "notificationTemplateId": "",
                        "notificationMessageCCList": []
                    }]
                }])
            });
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_to_create_again_drops_what_graph_sets_and_keeps_the_type() {
        let content = serde_json::json!({
            "@odata.type": "#microsoft.graph.windows10CompliancePolicy", "id": "p1",
            "createdDateTime": "2024-01-01T00:00:00Z", "lastModifiedDateTime": "2024-03-01T10:00:00Z",
            "version": 4, "displayName": "Require BitLocker", "bitLockerEnabled": true
        });
        let configuration = creation_body(ObjectKind::DeviceConfiguration, &content);
        assert_eq!(
            configuration,
            serde_json::json!({"@odata.type": "#microsoft.graph.windows10CompliancePolicy",
                               "displayName": "Require BitLocker", "bitLockerEnabled": true})
        );
        let policy = creation_body(ObjectKind::CompliancePolicy, &content);
        assert_eq!(
            policy["scheduledActionsForRule"][0]["scheduledActionConfigurations"][0]["actionType"],
            "block"
        );
        let mut with_actions = content.clone();
        with_actions["scheduledActionsForRule"] = serde_json::json!([{"ruleName": "PasswordRequired", "scheduledActionConfigurations": []}]);
        assert_eq!(
            creation_body(ObjectKind::CompliancePolicy, &with_actions)["scheduledActionsForRule"],
            with_actions["scheduledActionsForRule"],
            "the snapshot's own actions are kept"
        );
    }

    #[test]
    fn an_object_keeps_its_json_and_reads_id_name_and_modification() {
        let content = serde_json::json!({
            "id": "c1", "displayName": "Baseline", "lastModifiedDateTime": "2024-03-01T10:00:00.1234567Z",
            "@odata.type": "#microsoft.graph.windows10GeneralConfiguration", "passwordRequired": true
        });
        let object =
            GraphObject::read(ObjectKind::DeviceConfiguration, content.clone(), "GET x").unwrap();
        assert_eq!(object.external_id, "c1");
        assert_eq!(object.display_name.as_deref(), Some("Baseline"));
        assert_eq!(
            object.modified_at.unwrap().to_rfc3339(),
            "2024-03-01T10:00:00.123456700+00:00"
        );
        assert_eq!(object.content, content);
    }

    #[test]
    fn an_object_without_an_id_is_refused() {
        let failure = GraphObject::read(
            ObjectKind::Group,
            serde_json::json!({"displayName": "x"}),
            "GET x",
        )
        .unwrap_err();
        assert_eq!(failure.reason, ReasonCode::InternalError);
    }
}
