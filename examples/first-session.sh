#!/usr/bin/env bash
# A first session with dispatch-gate: start a server of its own, reach each of the four
# outcomes of a start, act as the worker that ends a run, then replay the audit trail.
#
#   cargo build --release
#   examples/first-session.sh
#
# Environment (all optional):
#   DISPATCH_GATE       the binary; default target/release/dispatch-gate of this
#                       checkout, else `dispatch-gate` on PATH (after `cargo install --path .`)
#   FIRST_SESSION_ADDR  where its server listens; default 127.0.0.1:8181, so a `serve`
#                       already running on the default 127.0.0.1:8080 is not in the way
#
# Needs curl and jq. The server runs with --no-worker: no run ends until this script,
# acting as the worker, ends it, so every outcome is the same on every run. Each call's
# HTTP status is checked; the first surprise stops the script with the status and body.
# The store, the server's log and the admin token are left in a new temp directory,
# named at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fail() {
  echo "error: $*" >&2
  exit 1
}

gate="${DISPATCH_GATE:-}"
if [ -z "$gate" ]; then
  if [ -x "$here/target/release/dispatch-gate" ]; then
    gate="$here/target/release/dispatch-gate"
  elif command -v dispatch-gate >/dev/null; then
    gate="$(command -v dispatch-gate)"
  else
    fail "no dispatch-gate binary: run \`cargo build --release\` first, or set DISPATCH_GATE"
  fi
fi
command -v "$gate" >/dev/null || fail "$gate is not a program this shell can run (DISPATCH_GATE)"
for tool in curl jq; do
  command -v "$tool" >/dev/null || fail "$tool is needed (Debian: apt-get install $tool)"
done

addr="${FIRST_SESSION_ADDR:-127.0.0.1:8181}"
base="http://$addr"
if curl -s -o /dev/null "$base/healthz"; then
  fail "something already answers on $addr: stop it, or set FIRST_SESSION_ADDR to a free address"
fi

# The session's own store and admin token. The token goes to the server in a file, so it
# never shows in `ps`; a random one, because this server listens on a real port.
dir="$(mktemp -d "${TMPDIR:-/tmp}/dispatch-gate-first-session.XXXXXX")"
db="sqlite://$dir/gate.db"
admin="dga_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
(umask 077 && printf '%s\n' "$admin" >"$dir/admin-token")

echo "== starting $gate serve --no-worker on $addr (log: $dir/server.log)"
"$gate" serve --no-worker --listen "$addr" --database-url "$db" \
  --admin-token-file "$dir/admin-token" >"$dir/server.log" 2>&1 &
server=$!
stop_server() {
  if [ -n "${server:-}" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=
  fi
}
trap stop_server EXIT

# Up to 30 s for the server to migrate its new store and listen.
for _ in $(seq 300); do
  curl -s -o /dev/null "$base/healthz" && break
  kill -0 "$server" 2>/dev/null || fail "the server stopped at start-up; its log:
$(cat "$dir/server.log")"
  sleep 0.1
done
curl -s -o /dev/null "$base/healthz" || fail "no answer from $base/healthz within 30 s; see $dir/server.log"

# call STATUS METHOD PATH [BODY]: one API call as the admin; its body lands in $body.
# Any other HTTP status than STATUS stops the script, showing what came back.
call() {
  local expected=$1 method=$2 path=$3 data=${4:-}
  local args=(-sS -X "$method" -H "authorization: Bearer $admin" -w '\n%{http_code}')
  if [ -n "$data" ]; then args+=(-H 'content-type: application/json' -d "$data"); fi
  local response
  response="$(curl "${args[@]}" "$base/v1$path")" || fail "$method $path: no answer from the server"
  local status="${response##*$'\n'}"
  body="${response%$'\n'*}"
  [ "$status" = "$expected" ] || fail "$method $path answered $status, not $expected: $body"
}

# start OUTCOME STATUS OPERATION: starts OPERATION on the tenant's default connection,
# checks the gate's outcome and prints it as an operator would read it.
start() {
  local expected=$1 status=$2 operation=$3
  call "$status" POST "/tenants/$tenant/operations" "{\"operation\":\"$operation\"}"
  local outcome
  outcome="$(jq -r .outcome <<<"$body")"
  [ "$outcome" = "$expected" ] || fail "$operation: outcome $outcome, not $expected: $body"
  jq -r --arg status "$status" '
    "outcome: \(.outcome) (HTTP \($status)): \(.headline)",
    (.reason // empty | "  reason: \(.code): next step: \(.next_step)"),
    (.run // empty | "  run: \(.id) \(.operation) \(.status)")' <<<"$body"
}

echo "== a workspace, a tenant, and its default provider connection"
call 201 POST /admin/workspaces '{"name":"Acme"}'
workspace="$(jq -r .id <<<"$body")"
call 201 POST /admin/tenants "{\"workspace_id\":\"$workspace\",\"name\":\"Contoso\"}"
tenant="$(jq -r .id <<<"$body")"
call 201 POST "/tenants/$tenant/provider-connections" \
  '{"display_name":"Contoso Graph","provider":"microsoft_graph","make_default":true}'
connection="$(jq -r .id <<<"$body")"
echo "tenant $tenant, connection $connection"

echo "== 1. a start before consent is blocked: nothing is queued"
start blocked 422 inventory.sync

echo "== consent granted, credentials valid"
call 200 POST "/provider-connections/$connection/consent" '{"granted":true}'
call 200 POST "/provider-connections/$connection/credentials" '{"status":"valid"}'
jq -r '"consent: \(.consent), credentials: \(.credentials)"' <<<"$body"

echo "== 2. now the same start is accepted: a new run, queued"
start accepted 202 inventory.sync
run="$(jq -r .run.id <<<"$body")"

echo "== 3. the same start again is deduped: the run already queued is returned"
start deduped 200 inventory.sync

echo "== 4. another operation on the same connection finds it busy"
start scope_busy 409 directory.roles.sync

echo "== the worker's part: claim the queued run, then complete it"
call 200 POST /worker/claim '{"worker_id":"first-session"}'
[ "$(jq -r .run.id <<<"$body")" = "$run" ] || fail "claimed another run than $run: $body"
call 200 POST "/worker/runs/$run/complete" '{"worker_id":"first-session","status":"succeeded"}'
call 200 GET "/operations/$run"
jq -r '"run \(.id): \(.status), \(.joined_attempts) deduped start(s) joined it"' <<<"$body"

echo "== 5. the connection is free again: the other operation is accepted"
start accepted 202 directory.roles.sync

stop_server
echo "== every decision, replayed from the event log and re-derived"
"$gate" audit replay --tenant "$tenant" --database-url "$db"

echo "== done. The store, the server's log and the admin token are in $dir"
echo "look again:  $gate audit replay --tenant $tenant --database-url $db"
echo "serve it:    $gate serve --database-url $db --admin-token-file $dir/admin-token"
