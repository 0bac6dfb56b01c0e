#!/usr/bin/env python3
"""Reference verifier of dispatch-gate's two tamper-evidence chains (docs/chain.md).

Written from docs/chain.md alone, with the standard library only, so that an
auditor can re-check a store without trusting dispatch-gate's own code.

Input, one of:
  --sqlite FILE   a dispatch-gate SQLite store (opened read-only)
  --jsonl FILE    one JSON object per event, with the members aggregate_type,
                  aggregate_id, sequence, event_type, event_version, payload,
                  metadata, position, log_hash (docs/chain.md shows the psql
                  command that writes this from PostgreSQL); `-` reads stdin

Output: one JSON object per line for every event, in stream order:
  {"stream": "Type/id", "sequence": n, "position": p, "event_hash": "…",
   "log_hash": "…", "problems": ["kind", …]}
then one line {"summary": {...}}. Exit code 0 when no event has a problem.
Problem kinds are those of `dispatch-gate audit verify --format json`.
"""

import argparse
import hashlib
import json
import re
import sqlite3
import sys

GENESIS = "0" * 64
STREAM_FORMAT = "dispatch-gate-chain/1"
LOG_FORMAT = "dispatch-gate-log/1"
HEX = set("0123456789abcdef")


def canonical(value):
    """Canonical JSON: keys sorted by code point (= UTF-8 byte order), no whitespace."""
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(canonical_string(k) + ":" + canonical(v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, str):
        return canonical_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    raise ValueError("non-integer numbers are not part of the chain format")


def canonical_string(text):
    # json.dumps escapes exactly '"', '\\' and U+0000..U+001F (as \n, \t, … or
    # \u00xx with lowercase hex), and leaves everything else as it is.
    return json.dumps(text, ensure_ascii=False)


def sha256_hex(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def event_hash(row, prev):
    """The stream-chain hash of one event chained to `prev`."""
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
    document = {
        "format": STREAM_FORMAT,
        "aggregate_type": row["aggregate_type"],
        "aggregate_id": row["aggregate_id"],
        "sequence": row["sequence"],
        "event_type": row["event_type"],
        "event_version": row["event_version"],
        "payload": row["payload"],
        "metadata": {k: v for k, v in metadata.items() if not k.startswith("chain.")},
        "prev": prev,
    }
    return sha256_hex(canonical(document))


def link(row):
    """(prev, hash, rest_of_commit) from the chain keys, or the problem kind."""
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
    keys = [metadata.get(k) for k in ("chain.prev", "chain.first", "chain.hashes")]
    if all(k is None for k in keys):
        return "unchained"
    if not all(isinstance(k, str) for k in keys):
        return "unchained"
    prev, first, hashes = keys
    # A decimal number that fits 64 bits unsigned, an optional leading '+' allowed.
    if not re.fullmatch(r"\+?[0-9]+", first) or int(first) >= 2**64:
        return "unchained"
    hashes = hashes.split(",")
    if not all(len(h) == 64 and set(h) <= HEX for h in [prev] + hashes):
        return "unchained"
    index = row["sequence"] - int(first)
    if index < 0 or index >= len(hashes):
        return "unchained"
    return (prev if index == 0 else hashes[index - 1], hashes[index], len(hashes) - 1 - index)


def log_event_hash(row):
    """The event hash the log chain covers: entry `sequence - chain.first` of chain.hashes, or ''."""
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
    first, hashes = metadata.get("chain.first"), metadata.get("chain.hashes")
    if not isinstance(first, str) or not isinstance(hashes, str):
        return ""
    if not re.fullmatch(r"[0-9]{1,18}", first):
        return ""
    offset = row["sequence"] - int(first)
    if not 0 <= offset <= 1_000_000:
        return ""
    parts = hashes.split(",")
    return parts[offset] if offset < len(parts) else ""


def log_link(prev, position, hash_):
    return sha256_hex(f"{LOG_FORMAT}:{prev}:{position}:{hash_}")


def check_streams(rows, problems):
    streams = {}
    for row in rows:
        streams.setdefault((row["aggregate_type"], row["aggregate_id"]), []).append(row)
    for key in sorted(streams):
        stream = sorted(streams[key], key=lambda r: r["sequence"])
        expected, head, rest = 1, GENESIS, 0
        for row in stream:
            found = problems.setdefault(id(row), [])
            gap = row["sequence"] != expected
            if gap:
                found.append("sequence_gap")
            linked = link(row)
            if linked == "unchained":
                found.append("unchained")
                head = None
            else:
                prev, hash_, rest = linked
                if not gap and head is not None and head != prev:
                    found.append("link_broken")
                if row["payload"] is NOT_JSON or event_hash(row, prev) != hash_:
                    found.append("content_altered")
                head = hash_
            expected = row["sequence"] + 1
        if rest > 0:
            problems[id(stream[-1])].append("truncated_commit")
    return streams


def check_log(rows, problems):
    numbered = sorted((r for r in rows if r["position"] is not None), key=lambda r: r["position"])
    expected, prev = 1, GENESIS
    for row in numbered:
        found = problems.setdefault(id(row), [])
        gap = row["position"] != expected
        if gap:
            found.append("log_gap")
        if row["log_hash"] is None:
            found.append("log_unsealed")
        elif not gap and prev is not None:
            if log_link(prev, row["position"], log_event_hash(row)) != row["log_hash"]:
                found.append("log_broken")
        prev = row["log_hash"]
        expected = row["position"] + 1
    return numbered


class NotJson:
    """Stored text that does not parse as JSON (SQLite stores JSON as text)."""


NOT_JSON = NotJson()


def parse(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return NOT_JSON


def read_sqlite(path):
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    query = (
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,"
        " payload, metadata, position, log_hash FROM events"
    )
    rows = []
    for r in connection.execute(query):
        rows.append({
            "aggregate_type": r[0], "aggregate_id": r[1], "sequence": r[2],
            "event_type": r[3], "event_version": r[4], "payload": parse(r[5]),
            "metadata": parse(r[6]), "position": r[7], "log_hash": r[8],
        })
    return rows


def read_jsonl(path):
    handle = sys.stdin if path == "-" else open(path, encoding="utf-8")
    return [json.loads(line) for line in handle if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sqlite", metavar="FILE")
    source.add_argument("--jsonl", metavar="FILE")
    args = parser.parse_args()
    rows = read_sqlite(args.sqlite) if args.sqlite else read_jsonl(args.jsonl)
    problems = {}
    streams = check_streams(rows, problems)
    check_log(rows, problems)
    failing = 0
    for key in sorted(streams):
        for row in sorted(streams[key], key=lambda r: r["sequence"]):
            linked = link(row)
            found = problems.get(id(row), [])
            failing += bool(found)
            print(json.dumps({
                "stream": f"{key[0]}/{key[1]}",
                "sequence": row["sequence"],
                "position": row["position"],
                "event_hash": None if linked == "unchained" else linked[1],
                "log_hash": row["log_hash"],
                "problems": found,
            }))
    print(json.dumps({"summary": {"events": len(rows), "streams": len(streams), "failing_events": failing}}))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
