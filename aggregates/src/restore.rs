//! Restoring a snapshot: what a restore does to each object of it.
//!
//! An `inventory.sync` that succeeded is a snapshot of the tenant's device
//! configurations and compliance policies, and a restore's `backup_ref`
//! `inventory:<run id>` names one ([`BackupSource`]). [`plan`] compares the
//! snapshot with what the tenant holds (the latest sync for the preview, the
//! live tenant at execution) and says, object by object, whether it is written
//! back ([`RestoreAction::Patch`]), created again ([`RestoreAction::Create`]) or
//! already as it was ([`RestoreAction::Unchanged`]); objects the tenant gained
//! since are left alone and listed as such.
//!
//! Only what a write can change is compared ([`writable`]): the properties the
//! provider sets itself (`id`, `createdDateTime`, `lastModifiedDateTime`,
//! `version`, OData annotations but `@odata.type`) differ after every write,
//! and a property the snapshot does not hold cannot be written back. That is
//! what makes a restore converge: once written, an object compares unchanged.
//!
//! An object created again gets a new id from the provider; the restore
//! remembers it as the original's replacement, and the next plan compares the
//! snapshot's object with its replacement instead of creating it once more.
//!
//! Pure: the caller brings the snapshot, the tenant's objects and the
//! replacements; nothing here reads a clock or a database.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::{ItemKind, RestoreAction};
use crate::ids::RunId;
use crate::values::{BackupRef, ContentHash};

/// The `backup_ref` prefix that names an inventory sync's snapshot.
pub const INVENTORY_PREFIX: &str = "inventory:";

/// What a restore's `backup_ref` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupSource {
    /// The snapshot of this `inventory.sync` run.
    Inventory(RunId),
    /// A label the gate knows nothing behind (a backup kept elsewhere): only
    /// the simulated provider executes such a restore.
    Label,
}

/// A `backup_ref` that starts like a snapshot's name but is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`inventory:` must be followed by the id of an inventory.sync run (a UUID), not `{0}`")]
pub struct NotASnapshotName(pub String);

impl BackupSource {
    /// What `backup` names: `inventory:<run id>` a snapshot, anything else a label.
    pub fn of(backup: &BackupRef) -> Result<Self, NotASnapshotName> {
        match backup.as_str().strip_prefix(INVENTORY_PREFIX) {
            Some(rest) => rest
                .trim()
                .parse::<RunId>()
                .map(Self::Inventory)
                .map_err(|_| NotASnapshotName(rest.to_owned())),
            None => Ok(Self::Label),
        }
    }
}

/// The snapshot a restore restores, as its preview and its start's evidence
/// name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The `inventory.sync` run that captured it.
    pub run_id: RunId,
    /// The hash its completion recorded (and the stored snapshot hashes to).
    pub snapshot_hash: ContentHash,
    /// How many objects it holds.
    pub objects: u64,
}

/// What a start of a restore restores: recorded with the start and shown in
/// its decision's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// The restore run's backup, as prepared.
    pub backup_ref: BackupRef,
    /// The snapshot it names; `None` for a label.
    pub snapshot: Option<SnapshotRef>,
}

/// Properties the provider sets itself: never written, never compared.
pub const READ_ONLY: [&str; 4] = ["id", "createdDateTime", "lastModifiedDateTime", "version"];

/// Whether a top-level property is one a restore writes and compares: not a
/// [`READ_ONLY`] one, and no OData annotation (`@odata.context`,
/// `@odata.etag`, …) but `@odata.type`, which says which derived type to write.
pub fn is_writable(property: &str) -> bool {
    if READ_ONLY.contains(&property) {
        return false;
    }
    !property.starts_with("@odata.") || property == "@odata.type"
}

/// The properties of `content` a restore writes: every top-level property but
/// the read-only ones. Not an object: nothing.
pub fn writable(content: &Value) -> Map<String, Value> {
    content
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(property, _)| is_writable(property))
        .map(|(property, value)| (property.clone(), value.clone()))
        .collect()
}

/// The snapshot's writable top-level properties whose value `current` does
/// not hold (an absent property holds `null`), in name order. Properties only
/// `current` has are not compared: a write of the snapshot leaves them as
/// they are, so counting them would never converge.
pub fn changed_fields(snapshot: &Value, current: &Value) -> Vec<String> {
    let current = current.as_object();
    writable(snapshot)
        .into_iter()
        .filter(|(property, value)| {
            let now = current
                .and_then(|fields| fields.get(property))
                .unwrap_or(&Value::Null);
            now != value
        })
        .map(|(property, _)| property)
        .collect()
}

/// One provider object: of a snapshot, or as the tenant holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Its kind.
    pub kind: ItemKind,
    /// The provider's id.
    pub external_id: String,
    /// Its display name, when known.
    pub display_name: Option<String>,
    /// Its whole content, as the provider sent it.
    pub content: Value,
}

/// What a restore does to one object of its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    /// Its kind.
    pub kind: ItemKind,
    /// Its id in the snapshot.
    pub external_id: String,
    /// Its display name in the snapshot.
    pub display_name: Option<String>,
    /// Patch, create or unchanged.
    pub action: RestoreAction,
    /// The object in the tenant it is compared with and, for a patch, written
    /// to: its own id, or the replacement an earlier restore created; `None`
    /// when it is to be created.
    pub target_id: Option<String>,
    /// For a patch, the properties that differ (see [`changed_fields`]).
    pub changed_fields: Vec<String>,
}

/// An object the tenant holds that the snapshot does not: left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftAlone {
    /// Its kind.
    pub kind: ItemKind,
    /// The provider's id.
    pub external_id: String,
    /// Its display name.
    pub display_name: Option<String>,
}

/// What a restore will do, object by object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every object of the snapshot: patches first, then creates, then the
    /// unchanged ones; by kind, name and id within each.
    pub objects: Vec<Planned>,
    /// The tenant's objects of a restorable kind that the snapshot does not hold.
    pub left_alone: Vec<LeftAlone>,
}

/// A plan counted, as a restore's preview shows it first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewCounts {
    /// Objects to write back.
    pub patch: u64,
    /// Objects to create again.
    pub create: u64,
    /// Objects already as in the snapshot.
    pub unchanged: u64,
    /// Objects the tenant gained since, left alone.
    pub left_alone: u64,
}

impl Plan {
    /// How many objects take each action.
    pub fn counts(&self) -> PreviewCounts {
        let count = |action| {
            self.objects
                .iter()
                .filter(|object| object.action == action)
                .count() as u64
        };
        PreviewCounts {
            patch: count(RestoreAction::Patch),
            create: count(RestoreAction::Create),
            unchanged: count(RestoreAction::Unchanged),
            left_alone: self.left_alone.len() as u64,
        }
    }

    /// Whether any object of `kind` is to be created again.
    pub fn creates(&self, kind: ItemKind) -> bool {
        self.objects
            .iter()
            .any(|object| object.kind == kind && object.action == RestoreAction::Create)
    }
}

/// The longest chain of replacements followed (an object restored, deleted,
/// restored again, …): bounds the walk whatever the stored links say.
const MAX_REPLACEMENTS: usize = 32;

/// Replacements: an object's `(kind, id)` → the id of the object a restore
/// created in its place.
pub type Replacements = BTreeMap<(ItemKind, String), String>;

/// The id in `present` that stands for the snapshot's object `id`: itself, or
/// the newest replacement still present, following the chain.
fn target<'a>(
    kind: ItemKind,
    id: &'a str,
    present: &BTreeSet<(ItemKind, &str)>,
    replacements: &'a Replacements,
) -> Option<&'a str> {
    let mut at = id;
    for _ in 0..=MAX_REPLACEMENTS {
        if present.contains(&(kind, at)) {
            return Some(at);
        }
        at = replacements.get(&(kind, at.to_owned()))?;
    }
    None
}

fn action_order(action: RestoreAction) -> u8 {
    match action {
        RestoreAction::Patch => 0,
        RestoreAction::Create => 1,
        RestoreAction::Unchanged => 2,
    }
}

/// What restoring `snapshot` onto a tenant holding `current` does: each
/// snapshot object is compared with the object of the same kind and id, or
/// with its replacement; neither present, it is created. `current` objects of
/// a restorable kind that no snapshot object stands for are left alone.
pub fn plan(snapshot: &[Object], current: &[Object], replacements: &Replacements) -> Plan {
    let by_id: BTreeMap<(ItemKind, &str), &Object> = current
        .iter()
        .map(|object| ((object.kind, object.external_id.as_str()), object))
        .collect();
    let present: BTreeSet<(ItemKind, &str)> = by_id.keys().copied().collect();
    let mut claimed: BTreeSet<(ItemKind, &str)> = BTreeSet::new();
    let mut objects: Vec<Planned> = snapshot
        .iter()
        .map(|object| {
            let found = target(object.kind, &object.external_id, &present, replacements);
            let (action, target_id, changed_fields) = match found {
                Some(id) => {
                    claimed.insert((object.kind, id));
                    let now = by_id[&(object.kind, id)];
                    let changed = changed_fields(&object.content, &now.content);
                    let action = if changed.is_empty() {
                        RestoreAction::Unchanged
                    } else {
                        RestoreAction::Patch
                    };
                    (action, Some(id.to_owned()), changed)
                }
                None => (RestoreAction::Create, None, Vec::new()),
            };
            Planned {
                kind: object.kind,
                external_id: object.external_id.clone(),
                display_name: object.display_name.clone(),
                action,
                target_id,
                changed_fields,
            }
        })
        .collect();
    objects.sort_by(|a, b| {
        (
            action_order(a.action),
            a.kind,
            &a.display_name,
            &a.external_id,
        )
            .cmp(&(
                action_order(b.action),
                b.kind,
                &b.display_name,
                &b.external_id,
            ))
    });
    let mut left_alone: Vec<LeftAlone> = current
        .iter()
        .filter(|object| {
            ItemKind::RESTORABLE.contains(&object.kind)
                && !claimed.contains(&(object.kind, object.external_id.as_str()))
        })
        .map(|object| LeftAlone {
            kind: object.kind,
            external_id: object.external_id.clone(),
            display_name: object.display_name.clone(),
        })
        .collect();
    left_alone.sort_by(|a, b| {
        (a.kind, &a.display_name, &a.external_id).cmp(&(b.kind, &b.display_name, &b.external_id))
    });
    Plan {
        objects,
        left_alone,
    }
}

/// The body that writes `content` back: its writable properties (see
/// [`writable`]), `@odata.type` kept so the provider knows the derived type.
pub fn body(content: &Value) -> Value {
    Value::Object(writable(content))
}

/// The warnings a restore's preview shows before confirmation.
pub fn warnings(snapshot: Option<&Plan>) -> Vec<String> {
    let Some(plan) = snapshot else {
        return vec![
            "Objects in the tenant are overwritten with their versions from the backup.".to_owned(),
            "Objects created after the backup are left in place.".to_owned(),
            "This backup names no snapshot dispatch-gate captured: the Graph provider cannot \
             execute it (a backup `inventory:<run id>` names an inventory sync's snapshot)."
                .to_owned(),
        ];
    };
    let mut warnings = vec![
        "Objects that differ from the snapshot are overwritten with its version; objects \
         deleted since are created again, with new ids."
            .to_owned(),
        "Assignments are not restored: an object created again is assigned to no group, and \
         the others keep the assignments they have now."
            .to_owned(),
        "Objects created after the snapshot are left in place (listed as left alone).".to_owned(),
    ];
    if plan.creates(ItemKind::CompliancePolicy) {
        warnings.push(
            "A compliance policy created again gets Intune's default action for noncompliance \
             (mark the device noncompliant at once): the snapshot does not hold its scheduled \
             actions."
                .to_owned(),
        );
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: ItemKind, id: &str, content: Value) -> Object {
        Object {
            kind,
            external_id: id.to_owned(),
            display_name: content["displayName"].as_str().map(str::to_owned),
            content,
        }
    }

    fn config(id: &str, name: &str, password: bool, version: u64) -> Object {
        object(
            ItemKind::DeviceConfiguration,
            id,
            json!({"@odata.type": "#microsoft.graph.windows10GeneralConfiguration", "id": id,
                   "displayName": name, "passwordRequired": password, "version": version,
                   "lastModifiedDateTime": format!("2024-0{version}-01T00:00:00Z")}),
        )
    }

    #[test]
    fn a_backup_names_a_snapshot_only_with_the_inventory_prefix_and_a_run_id() {
        let run = RunId(uuid::Uuid::new_v4());
        let named = BackupRef::parse(&format!("inventory:{run}")).unwrap();
        assert_eq!(BackupSource::of(&named), Ok(BackupSource::Inventory(run)));
        for label in [
            "backup-2026-12-01",
            "Inventory:x",
            "inventory",
            "nightly:inventory:1",
        ] {
            let label = BackupRef::parse(label).unwrap();
            assert_eq!(BackupSource::of(&label), Ok(BackupSource::Label), "{label}");
        }
        for bad in ["inventory:", "inventory:yesterday", "inventory:1234"] {
            let bad = BackupRef::parse(bad).unwrap();
            assert!(BackupSource::of(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_only_properties_and_annotations_are_neither_written_nor_compared() {
        let content = json!({"@odata.type": "#t", "@odata.context": "x", "@odata.etag": "W/1",
                             "id": "c1", "createdDateTime": "a", "lastModifiedDateTime": "b",
                             "version": 3, "displayName": "Baseline", "roleScopeTagIds@odata.type": "#Collection(String)"});
        let body = body(&content);
        assert_eq!(
            body,
            json!({"@odata.type": "#t", "displayName": "Baseline", "roleScopeTagIds@odata.type": "#Collection(String)"})
        );
        let later = json!({"@odata.type": "#t", "id": "c1", "version": 9, "lastModifiedDateTime": "c",
                           "displayName": "Baseline", "roleScopeTagIds@odata.type": "#Collection(String)"});
        assert!(changed_fields(&content, &later).is_empty());
    }

    #[test]
    fn only_the_snapshots_properties_are_compared_and_an_absent_one_is_null() {
        let snapshot = json!({"displayName": "A", "description": null, "passwordRequired": true});
        let now = json!({"displayName": "A", "passwordRequired": false, "addedLater": 1});
        assert_eq!(changed_fields(&snapshot, &now), ["passwordRequired"]);
    }

    #[test]
    fn drift_is_patched_a_deletion_created_and_the_rest_left_unchanged() {
        let snapshot = [
            config("c1", "Baseline", true, 1),
            config("c2", "Kiosk", true, 1),
            config("c3", "Laptops", true, 1),
        ];
        let current = [
            config("c1", "Baseline", false, 2),
            config("c3", "Laptops", true, 5),
            config("c4", "Added later", true, 1),
        ];
        let plan = plan(&snapshot, &current, &Replacements::new());
        let actions: Vec<(&str, RestoreAction, Option<&str>)> = plan
            .objects
            .iter()
            .map(|o| (o.external_id.as_str(), o.action, o.target_id.as_deref()))
            .collect();
        assert_eq!(
            actions,
            [
                ("c1", RestoreAction::Patch, Some("c1")),
                ("c2", RestoreAction::Create, None),
                ("c3", RestoreAction::Unchanged, Some("c3")),
            ]
        );
        assert_eq!(plan.objects[0].changed_fields, ["passwordRequired"]);
        assert_eq!(
            plan.left_alone,
            [LeftAlone {
                kind: ItemKind::DeviceConfiguration,
                external_id: "c4".into(),
                display_name: Some("Added later".into())
            }]
        );
        assert_eq!(
            plan.counts(),
            PreviewCounts {
                patch: 1,
                create: 1,
                unchanged: 1,
                left_alone: 1
            }
        );
    }

    #[test]
    fn an_object_created_again_is_compared_with_its_replacement_not_created_twice() {
        let snapshot = [config("c2", "Kiosk", true, 1)];
        let replacement = config("new-2", "Kiosk", true, 1);
        let mut replacements = Replacements::new();
        replacements.insert((ItemKind::DeviceConfiguration, "c2".into()), "new-2".into());
        let plan = plan(&snapshot, std::slice::from_ref(&replacement), &replacements);
        assert_eq!(plan.objects[0].action, RestoreAction::Unchanged);
        assert_eq!(plan.objects[0].target_id.as_deref(), Some("new-2"));
        assert!(
            plan.left_alone.is_empty(),
            "the replacement is not 'created after'"
        );
    }

    #[test]
    fn a_chain_of_replacements_is_followed_and_a_cycle_ends() {
        let snapshot = [config("a", "A", true, 1)];
        let mut replacements = Replacements::new();
        let kind = ItemKind::DeviceConfiguration;
        replacements.insert((kind, "a".into()), "b".into());
        replacements.insert((kind, "b".into()), "c".into());
        let plan1 = plan(&snapshot, &[config("c", "A", false, 1)], &replacements);
        assert_eq!(plan1.objects[0].target_id.as_deref(), Some("c"));
        assert_eq!(plan1.objects[0].action, RestoreAction::Patch);
        replacements.insert((kind, "c".into()), "a".into());
        let plan2 = plan(&snapshot, &[], &replacements);
        assert_eq!(plan2.objects[0].action, RestoreAction::Create);
    }

    #[test]
    fn a_restored_tenant_plans_nothing_but_unchanged() {
        let snapshot = [config("c1", "Baseline", true, 1)];
        // What a PATCH of the snapshot leaves: new version and modification time.
        let written = config("c1", "Baseline", true, 7);
        let plan = plan(&snapshot, &[written], &Replacements::new());
        assert_eq!(plan.counts().unchanged, 1);
        assert_eq!(plan.counts().patch, 0);
    }

    #[test]
    fn warnings_say_assignments_are_out_of_scope_and_name_compliance_defaults() {
        let plan = Plan {
            objects: vec![Planned {
                kind: ItemKind::CompliancePolicy,
                external_id: "p".into(),
                display_name: None,
                action: RestoreAction::Create,
                target_id: None,
                changed_fields: vec![],
            }],
            left_alone: vec![],
        };
        let warnings = warnings(Some(&plan)).join(" ");
        assert!(warnings.contains("Assignments are not restored"));
        assert!(warnings.contains("noncompliance"));
        assert!(!super::warnings(Some(&Plan::default()))
            .join(" ")
            .contains("noncompliance"));
        assert!(super::warnings(None).join(" ").contains("inventory:"));
    }
}
