//! The tamper-evidence chain: every stored event carries a SHA-256 over its
//! canonical content and over the hash of the event before it in its stream.
//!
//! # What is hashed
//! The canonical JSON (objects with keys sorted by their UTF-8 bytes, no
//! whitespace) of
//! `{"format", "aggregate_type", "aggregate_id", "sequence", "event_type",
//! "event_version", "payload", "metadata", "prev"}`, where `payload` is the
//! payload *as stored* (before any upcaster), `metadata` is the event's
//! metadata without the `chain.*` keys, and `prev` is the hex hash of the
//! previous event of the stream ([`GENESIS`] for sequence 1). Sorting keys makes
//! the hash independent of how a backend stores JSON (PostgreSQL's `jsonb`
//! reorders keys).
//!
//! # Where it is stored, and why per commit
//! cqrs-es's `commit` takes one metadata map and copies it onto every event of
//! the commit, so an event cannot carry "its own" hash in a key of its own. Each
//! commit therefore records, on all of its events alike:
//! - `chain.prev`: the hash of the event before the commit,
//! - `chain.first`: the sequence of the commit's first event,
//! - `chain.hashes`: the hashes of the commit's events, comma-separated, in order.
//!
//! An event finds its own hash at index `sequence - chain.first`, and its
//! predecessor's one index earlier (or in `chain.prev`). This is honest for
//! multi-event commits: every event's hash is computed and checked on its own,
//! and a commit that lost one of its events is visible from the list's length.

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Metadata key: the hash of the event before the commit.
pub const PREV: &str = "chain.prev";
/// Metadata key: the sequence of the commit's first event.
pub const FIRST: &str = "chain.first";
/// Metadata key: the commit's event hashes, comma-separated.
pub const HASHES: &str = "chain.hashes";
/// The `prev` of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Names the hashed layout, so that a future layout cannot collide with this one.
const FORMAT: &str = "dispatch-gate-chain/1";

/// One event as stored, the part of it the chain covers.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    /// `aggregate_type`.
    pub aggregate_type: &'a str,
    /// `aggregate_id`.
    pub aggregate_id: &'a str,
    /// The event's sequence in its stream.
    pub sequence: u64,
    /// `event_type`.
    pub event_type: &'a str,
    /// `event_version`.
    pub event_version: &'a str,
    /// The payload as stored.
    pub payload: &'a Value,
    /// The metadata as stored; `chain.*` keys are left out of the hash.
    pub metadata: &'a Value,
}

/// Why an event's chain metadata cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The event has no chain metadata at all.
    #[error("no tamper-evidence chain metadata")]
    Missing,
    /// The chain metadata is there but does not make sense for this event.
    #[error("malformed chain metadata: {0}")]
    Malformed(&'static str),
}

/// What a stored event claims about its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The hash of the event before it.
    pub prev: String,
    /// Its own hash.
    pub hash: String,
    /// How many events of its commit come after it.
    pub rest_of_commit: usize,
}

/// The hex SHA-256 of an event's content chained to `prev`.
///
/// The document is written straight into one buffer, its top-level keys in
/// their sorted order, without building it as a JSON value first: this runs
/// for every event written and every event verified.
pub fn hash(content: &Content<'_>, prev: &str) -> String {
    let mut text = Vec::with_capacity(1024);
    let field = |name: &str, text: &mut Vec<u8>| {
        text.push(if text.is_empty() { b'{' } else { b',' });
        write_string(name, text);
        text.push(b':');
    };
    // Keys in byte order: aggregate_id, aggregate_type, event_type,
    // event_version, format, metadata, payload, prev, sequence.
    field("aggregate_id", &mut text);
    write_string(content.aggregate_id, &mut text);
    field("aggregate_type", &mut text);
    write_string(content.aggregate_type, &mut text);
    field("event_type", &mut text);
    write_string(content.event_type, &mut text);
    field("event_version", &mut text);
    write_string(content.event_version, &mut text);
    field("format", &mut text);
    write_string(FORMAT, &mut text);
    field("metadata", &mut text);
    // Without the chain's own keys; metadata that is not an object hashes as `{}`.
    let kept: Vec<(&String, &Value)> = content
        .metadata
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(key, _)| !key.starts_with("chain."))
                .collect()
        })
        .unwrap_or_default();
    write_entries(kept, &mut text);
    field("payload", &mut text);
    write_canonical_bytes(content.payload, &mut text);
    field("prev", &mut text);
    write_string(prev, &mut text);
    field("sequence", &mut text);
    text.extend_from_slice(content.sequence.to_string().as_bytes());
    text.push(b'}');
    hex::encode(Sha256::digest(&text))
}

/// Writes `value` as canonical JSON: keys sorted, no whitespace.
pub fn write_canonical(value: &Value, out: &mut String) {
    let mut bytes = Vec::new();
    write_canonical_bytes(value, &mut bytes);
    out.push_str(&String::from_utf8_lossy(&bytes));
}

/// [`write_canonical`] into bytes (always UTF-8: JSON text of a value).
fn write_canonical_bytes(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_entries(map.iter().collect(), out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_bytes(item, out);
            }
            out.push(b']');
        }
        // serde_json's compact form, as `Value`'s `Display` writes it.
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing JSON into memory"),
    }
}

/// An object of these entries, keys sorted by their bytes.
fn write_entries(mut entries: Vec<(&String, &Value)>, out: &mut Vec<u8>) {
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_canonical_bytes(value, out);
    }
    out.push(b'}');
}

/// A JSON string, escaped as serde_json escapes it.
fn write_string(text: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, text).expect("writing JSON into memory");
}

/// The metadata to commit with a batch of events: the caller's metadata plus
/// the chain keys. `events` are `(event_type, event_version, payload)` in order,
/// the first at `first_sequence`; `prev` is the stream head before the commit.
pub fn seal(
    aggregate_type: &str,
    aggregate_id: &str,
    first_sequence: u64,
    events: &[(String, String, Value)],
    mut metadata: HashMap<String, String>,
    prev: &str,
) -> HashMap<String, String> {
    metadata.retain(|key, _| !key.starts_with("chain."));
    let hashed_metadata = serde_json::to_value(&metadata).expect("a map of strings");
    let mut head = prev.to_owned();
    let mut hashes = Vec::with_capacity(events.len());
    for (offset, (event_type, event_version, payload)) in events.iter().enumerate() {
        let content = Content {
            aggregate_type,
            aggregate_id,
            sequence: first_sequence + offset as u64,
            event_type,
            event_version,
            payload,
            metadata: &hashed_metadata,
        };
        head = hash(&content, &head);
        hashes.push(head.clone());
    }
    metadata.insert(PREV.to_owned(), prev.to_owned());
    metadata.insert(FIRST.to_owned(), first_sequence.to_string());
    metadata.insert(HASHES.to_owned(), hashes.join(","));
    metadata
}

/// The hash of the last event of a commit [`seal`]ed: the stream's head once
/// the commit lands.
pub fn sealed_head(sealed: &HashMap<String, String>) -> &str {
    sealed
        .get(HASHES)
        .and_then(|hashes| hashes.rsplit(',').next())
        .expect("a sealed commit lists its hashes")
}

/// Reads an event's place in the chain from its stored metadata.
pub fn link(sequence: u64, metadata: &Value) -> Result<Link, ChainError> {
    let field = |key: &str| metadata.get(key).map(|v| v.as_str());
    let (prev, first, hashes) = match (field(PREV), field(FIRST), field(HASHES)) {
        (None, None, None) => return Err(ChainError::Missing),
        (Some(Some(prev)), Some(Some(first)), Some(Some(hashes))) => (prev, first, hashes),
        _ => return Err(ChainError::Malformed("missing or non-string chain keys")),
    };
    let first: u64 = first
        .parse()
        .map_err(|_| ChainError::Malformed("chain.first is not a number"))?;
    let hashes: Vec<&str> = hashes.split(',').collect();
    if !std::iter::once(prev)
        .chain(hashes.iter().copied())
        .all(is_hash)
    {
        return Err(ChainError::Malformed("a chain hash is not 64 hex digits"));
    }
    let index = sequence
        .checked_sub(first)
        .map(|i| i as usize)
        .filter(|&i| i < hashes.len())
        .ok_or(ChainError::Malformed(
            "the event's sequence lies outside its commit",
        ))?;
    Ok(Link {
        prev: if index == 0 { prev } else { hashes[index - 1] }.to_owned(),
        hash: hashes[index].to_owned(),
        rest_of_commit: hashes.len() - 1 - index,
    })
}

fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;

    fn sealed(events: &[(String, String, Value)]) -> Value {
        let metadata = HashMap::from([("actor".to_owned(), "admin".to_owned())]);
        serde_json::to_value(seal("T", "id", 3, events, metadata, GENESIS)).unwrap()
    }

    fn event(n: u64) -> (String, String, Value) {
        (
            "E".to_owned(),
            "1.0".to_owned(),
            json!({"E": {"n": n, "a": [1, "x"]}}),
        )
    }

    /// The hash as it was first written: the document built as a JSON value,
    /// then written canonically, a string per key and scalar.
    fn hash_as_first_written(content: &Content<'_>, prev: &str) -> String {
        fn canonical(value: &Value, out: &mut String) {
            match value {
                Value::Object(map) => {
                    let mut entries: Vec<_> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    out.push('{');
                    for (i, (key, value)) in entries.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&Value::String(key.clone()).to_string());
                        out.push(':');
                        canonical(value, out);
                    }
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        canonical(item, out);
                    }
                    out.push(']');
                }
                scalar => out.push_str(&scalar.to_string()),
            }
        }
        let metadata: Map<String, Value> = content
            .metadata
            .as_object()
            .map(|map| {
                map.iter()
                    .filter(|(key, _)| !key.starts_with("chain."))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let document = json!({
            "format": FORMAT,
            "aggregate_type": content.aggregate_type,
            "aggregate_id": content.aggregate_id,
            "sequence": content.sequence,
            "event_type": content.event_type,
            "event_version": content.event_version,
            "payload": content.payload,
            "metadata": metadata,
            "prev": prev,
        });
        let mut text = String::new();
        canonical(&document, &mut text);
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn the_hash_is_the_one_first_written_for_any_content() {
        let payloads = [
            json!({"OperationAccepted": {"run": "r\"1\u{1}", "n": -3, "f": 1.5, "big": 18446744073709551615u64,
                "nested": {"z": [null, true, {"b": "é", "a": "\u{2028}"}], "a": {}}}}),
            json!("a string payload"),
            json!([]),
            json!(null),
        ];
        let metadatas = [
            json!({"actor": "admin", "at": "2026-01-01T00:00:00Z", "chain.prev": "x", "chain.first": "1", "ü": "tab\t"}),
            json!({}),
            json!("not an object"),
        ];
        for payload in &payloads {
            for metadata in &metadatas {
                let content = Content {
                    aggregate_type: "ProviderConnection",
                    aggregate_id: "id \"quoted\"",
                    sequence: 42,
                    event_type: "OperationAccepted",
                    event_version: "2.0",
                    payload,
                    metadata,
                };
                assert_eq!(
                    hash(&content, GENESIS),
                    hash_as_first_written(&content, GENESIS),
                    "{payload} {metadata}"
                );
            }
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut out = String::new();
        write_canonical(
            &json!({"b": {"d": 1, "c": [true, null]}, "a": "é\""}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":"é\"","b":{"c":[true,null],"d":1}}"#);
    }

    #[test]
    fn every_event_of_a_multi_event_commit_has_its_own_checkable_hash() {
        let events = [event(1), event(2), event(3)];
        let metadata = sealed(&events);
        let mut prev = GENESIS.to_owned();
        for (offset, (event_type, event_version, payload)) in events.iter().enumerate() {
            let sequence = 3 + offset as u64;
            let link = link(sequence, &metadata).unwrap();
            assert_eq!(link.prev, prev);
            assert_eq!(link.rest_of_commit, 2 - offset);
            let content = Content {
                aggregate_type: "T",
                aggregate_id: "id",
                sequence,
                event_type,
                event_version,
                payload,
                metadata: &metadata,
            };
            assert_eq!(hash(&content, &prev), link.hash);
            prev = link.hash;
        }
        assert!(link(6, &metadata).is_err(), "outside the commit");
    }

    #[test]
    fn the_hash_covers_payload_sequence_metadata_and_prev_but_not_key_order() {
        let payload = json!({"x": 1, "y": [2]});
        let metadata = json!({"actor": "admin", "chain.prev": GENESIS});
        let base = Content {
            aggregate_type: "T",
            aggregate_id: "id",
            sequence: 1,
            event_type: "E",
            event_version: "1.0",
            payload: &payload,
            metadata: &metadata,
        };
        let reference = hash(&base, GENESIS);
        let reordered: Value = serde_json::from_str(r#"{"y": [2], "x": 1}"#).unwrap();
        assert_eq!(
            hash(
                &Content {
                    payload: &reordered,
                    ..base
                },
                GENESIS
            ),
            reference
        );
        let chain_free = json!({"actor": "admin"});
        assert_eq!(
            hash(
                &Content {
                    metadata: &chain_free,
                    ..base
                },
                GENESIS
            ),
            reference
        );

        let edited = json!({"x": 2, "y": [2]});
        let other_actor = json!({"actor": "mallory"});
        assert_ne!(
            hash(
                &Content {
                    payload: &edited,
                    ..base
                },
                GENESIS
            ),
            reference
        );
        assert_ne!(
            hash(
                &Content {
                    sequence: 2,
                    ..base
                },
                GENESIS
            ),
            reference
        );
        assert_ne!(
            hash(
                &Content {
                    event_version: "2.0",
                    ..base
                },
                GENESIS
            ),
            reference
        );
        assert_ne!(
            hash(
                &Content {
                    metadata: &other_actor,
                    ..base
                },
                GENESIS
            ),
            reference
        );
        assert_ne!(hash(&base, &"1".repeat(64)), reference);
    }

    #[test]
    fn missing_and_malformed_chain_metadata_are_told_apart() {
        assert_eq!(
            link(1, &json!({"actor": "admin"})),
            Err(ChainError::Missing)
        );
        let bad = json!({PREV: GENESIS, FIRST: "1", HASHES: "abc"});
        assert!(matches!(link(1, &bad), Err(ChainError::Malformed(_))));
        let no_first = json!({PREV: GENESIS, HASHES: GENESIS});
        assert!(matches!(link(1, &no_first), Err(ChainError::Malformed(_))));
    }
}
