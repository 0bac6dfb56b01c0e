//! The log-wide chain: the global commit order, chained.
//!
//! Each stream has its own chain ([`super::stream`]); that cannot see a whole
//! stream deleted, or the last events of a stream. So every log position is
//! sealed too: `log_hash(p) = sha256("dispatch-gate-log/1:" + log_hash(p-1) +
//! ":" + p + ":" + event_hash)`, with [`GENESIS`](super::stream::GENESIS)
//! before position 1 and `event_hash` the event's own stream-chain hash, read
//! from its metadata ([`event_hash`]). Deleting or inserting any event anywhere
//! breaks the hash of every later position. `docs/chain.md` is the normative text.
//!
//! The seal is given where the position is given, in the transaction that
//! inserts the event, so that it follows commit order exactly: on PostgreSQL
//! by the insert trigger in SQL (migration `20261214270001_positions_at_insert.sql`;
//! the sequencer function `dg_sequence` of `20261202300001_log_chain.sql` seals
//! rows inserted unnumbered, the same definition as here); on SQLite, which has
//! no SHA-256 of its own, by the append ([`crate::write::store::append`]).

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::stream::{FIRST, HASHES};

/// Names the log chain's hashed text, so that a later layout cannot collide with it.
pub const LOG_FORMAT: &str = "dispatch-gate-log/1";

/// The event's own hash as the log chain covers it: the `sequence - chain.first`-th
/// (0-based) comma-separated entry of `chain.hashes`, or `""` when the metadata
/// does not name one. Mirrors `dg_event_hash` in SQL exactly, malformed rows included.
pub fn event_hash(sequence: i64, metadata: &Value) -> &str {
    let (Some(Value::String(first)), Some(Value::String(hashes))) =
        (metadata.get(FIRST), metadata.get(HASHES))
    else {
        return "";
    };
    if first.is_empty() || first.len() > 18 || !first.bytes().all(|b| b.is_ascii_digit()) {
        return "";
    }
    let first: i64 = first.parse().expect("at most 18 digits");
    match sequence - first {
        offset @ 0..=1_000_000 => hashes.split(',').nth(offset as usize).unwrap_or(""),
        _ => "",
    }
}

/// The hex hash of log position `position`, chained to `prev`.
pub fn link(prev: &str, position: i64, event_hash: &str) -> String {
    let text = format!("{LOG_FORMAT}:{prev}:{position}:{event_hash}");
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::chain::stream::GENESIS;

    #[test]
    fn the_event_hash_is_the_entry_of_chain_hashes_at_its_offset() {
        let metadata = json!({FIRST: "3", HASHES: "aa,bb,cc"});
        assert_eq!(event_hash(3, &metadata), "aa");
        assert_eq!(event_hash(5, &metadata), "cc");
        assert_eq!(event_hash(6, &metadata), "", "beyond the commit");
        assert_eq!(event_hash(2, &metadata), "", "before the commit");
    }

    #[test]
    fn metadata_that_names_no_hash_gives_the_empty_string() {
        for metadata in [
            json!({}),
            json!(null),
            json!({FIRST: 1, HASHES: "aa"}),
            json!({FIRST: "-1", HASHES: "aa"}),
            json!({FIRST: "1x", HASHES: "aa"}),
            json!({FIRST: "1234567890123456789", HASHES: "aa"}),
            json!({FIRST: "1", HASHES: ["aa"]}),
        ] {
            assert_eq!(event_hash(1, &metadata), "", "{metadata}");
        }
    }

    #[test]
    fn a_link_covers_the_previous_hash_the_position_and_the_event_hash() {
        // The same value PostgreSQL's dg_log_step gives (checked with psql).
        assert_eq!(
            link(GENESIS, 1, "aa"),
            "96c84ac882276d3665a720bf763b3e1877d7a4036cc419b56c7d45aa4a684322"
        );
        let reference = link(GENESIS, 1, "aa");
        assert_ne!(link(&"1".repeat(64), 1, "aa"), reference);
        assert_ne!(link(GENESIS, 2, "aa"), reference);
        assert_ne!(link(GENESIS, 1, "ab"), reference);
    }
}
