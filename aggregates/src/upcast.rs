//! Upcasters: how older stored shapes of an event become the current one.
//!
//! Every store reads events through [`upcasters`], and so does the audit, so an
//! old history replays exactly as the running service would load it. cqrs-es
//! matches an upcaster on event type and version only, so event type names are
//! kept unique across aggregates (the replay corpus test checks every name it holds). An upcaster changes what is
//! read, never what is stored: the tamper-evidence chain covers the stored bytes.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::{json, Value};

/// Every upcaster, in the order they apply (older versions first).
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(StartBlocked1To2),
        Box::new(UserCreated1To2),
        Box::new(RunSucceeded1To2),
        Box::new(RunFailed1To2),
        Box::new(RunFailed2To3),
        Box::new(StartRecorded1To2("OperationAccepted")),
        Box::new(StartRecorded1To2("OperationRejected")),
        Box::new(RestoreRunPrepared1To2),
    ]
}

static UPCASTERS: std::sync::LazyLock<Vec<Box<dyn EventUpcaster>>> =
    std::sync::LazyLock::new(upcasters);

/// Whether an upcaster applies to events of this type and version.
pub fn applies(event_type: &str, event_version: &str) -> bool {
    UPCASTERS
        .iter()
        .any(|u| u.can_upcast(event_type, event_version))
}

/// The event in its current shape, through every upcaster that applies, in
/// order: what the stores' upcasting does, for code that reads rows itself.
pub fn upcast(mut event: SerializedEvent) -> SerializedEvent {
    for upcaster in UPCASTERS.iter() {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event
}

/// `StartBlocked` 1.0 → 2.0: adds `evidence`. Version 1.0 was recorded only
/// while the tenant had no default connection, so `default_connection` is known
/// to be none; the tenant's connections were not recorded and stay unknown.
///
/// Written out rather than with cqrs-es's `SemanticVersionEventUpcaster`, which
/// would relabel the event "2.0.0" instead of the literal "2.0".
pub struct StartBlocked1To2;

impl EventUpcaster for StartBlocked1To2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "StartBlocked" && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(fields) = event
            .payload
            .get_mut("StartBlocked")
            .and_then(Value::as_object_mut)
        {
            fields.insert(
                "evidence".to_owned(),
                json!({"default_connection": null, "connections": null}),
            );
        }
        event.event_version = "2.0".to_owned();
        event
    }
}

/// `UserCreated` 1.0 → 2.0: 1.0 stored the bare record (users were create-once
/// records); 2.0 is a variant of [`crate::user::UserEvent`], tagged like every
/// other event enum. The fields are unchanged.
pub struct UserCreated1To2;

impl EventUpcaster for UserCreated1To2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "UserCreated" && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.payload = json!({ "UserCreated": event.payload.take() });
        event.event_version = "2.0".to_owned();
        event
    }
}

/// `RunSucceeded` 1.0 → 2.0: adds `result` and `snapshot_hash`. Runs completed
/// before 2.0 reported neither, so both are `null`.
pub struct RunSucceeded1To2;

impl EventUpcaster for RunSucceeded1To2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "RunSucceeded" && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(fields) = event
            .payload
            .get_mut("RunSucceeded")
            .and_then(Value::as_object_mut)
        {
            fields.insert("result".to_owned(), Value::Null);
            fields.insert("snapshot_hash".to_owned(), Value::Null);
        }
        event.event_version = "2.0".to_owned();
        event
    }
}

/// `RunFailed` 1.0 → 2.0: a failure the worker reported gains `provider`, what
/// the provider said. Before 2.0 nothing was kept, so it is `null`; the other
/// causes are unchanged.
pub struct RunFailed1To2;

impl EventUpcaster for RunFailed1To2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "RunFailed" && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let cause = event
            .payload
            .get_mut("RunFailed")
            .and_then(|fields| fields.get_mut("cause"))
            .and_then(Value::as_object_mut);
        if let Some(cause) = cause {
            if cause.get("kind").and_then(Value::as_str) == Some("worker") {
                cause.insert("provider".to_owned(), Value::Null);
            }
        }
        event.event_version = "2.0".to_owned();
        event
    }
}

/// `RunFailed` 2.0 → 3.0: a failure the worker reported gains `result`, what
/// the run did before it failed (a restore's counts). Before 3.0 no failed
/// run reported anything, so it is `null`; the other causes are unchanged.
pub struct RunFailed2To3;

impl EventUpcaster for RunFailed2To3 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "RunFailed" && event_version == "2.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let cause = event
            .payload
            .get_mut("RunFailed")
            .and_then(|fields| fields.get_mut("cause"))
            .and_then(Value::as_object_mut);
        if let Some(cause) = cause {
            if cause.get("kind").and_then(Value::as_str) == Some("worker") {
                cause.insert("result".to_owned(), Value::Null);
            }
        }
        event.event_version = "3.0".to_owned();
        event
    }
}

/// `OperationAccepted` and `OperationRejected` 1.0 → 2.0: the request and the
/// evidence gain `restore`, what a restore's start restores. Before 2.0 no
/// start recorded it, so both are `null`.
pub struct StartRecorded1To2(pub &'static str);

impl EventUpcaster for StartRecorded1To2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.0 && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(fields) = event.payload.get_mut(self.0) {
            for part in ["request", "evidence"] {
                if let Some(part) = fields.get_mut(part).and_then(Value::as_object_mut) {
                    part.insert("restore".to_owned(), Value::Null);
                }
            }
        }
        event.event_version = "2.0".to_owned();
        event
    }
}

/// `RestoreRunPrepared` 1.0 → 2.0: the preview gains `snapshot` and `counts`.
/// A 1.0 restore run named a backup the gate could not look into, so both are
/// `null`.
pub struct RestoreRunPrepared1To2;

impl EventUpcaster for RestoreRunPrepared1To2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "RestoreRunPrepared" && event_version == "1.0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(preview) = event
            .payload
            .get_mut("preview")
            .and_then(Value::as_object_mut)
        {
            preview.insert("snapshot".to_owned(), Value::Null);
            preview.insert("counts".to_owned(), Value::Null);
        }
        event.event_version = "2.0".to_owned();
        event
    }
}
