#!/usr/bin/env python3
"""An external dispatch-gate worker, standard library only.

It claims queued runs, keeps each one's lease alive with heartbeats, stops a run an
operator asked to cancel, and reports how each run ended -- the protocol
docs/workers.md describes. `execute` below is the part a real worker replaces; here it
simulates work for --work-seconds.

    cargo run --release -- serve --no-worker --admin-token-file ~/.dispatch-gate-admin-token
    GATE_ADMIN_TOKEN_FILE=~/.dispatch-gate-admin-token examples/worker.py \\
        --url http://127.0.0.1:8080 --worker-id worker-1

The admin token comes from --token-file, GATE_ADMIN_TOKEN_FILE or GATE_ADMIN_TOKEN
(never from the command line, where `ps` shows it). One line per event goes to
stdout; the token is never printed. SIGTERM or Ctrl-C stops claiming: the run in hand
is finished and reported, then the worker exits (a second Ctrl-C abandons it; its lease
runs out and the gate fails it as `operation.timed_out`).
"""

import argparse
import email.utils
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

# Answers worth retrying with the same request: the gate is briefly unavailable.
RETRY_STATUSES = {503}


class Gate:
    """The worker's side of the HTTP API: JSON in and out, the admin token, retries."""

    def __init__(self, url, token, timeout=10.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method, path, body=None, idempotency_key=None, retry_for=30.0):
        """One call; returns (status, JSON body or None, server time). A connection
        error or a 503 is retried, the same request with the same Idempotency-Key, for
        up to `retry_for` seconds; any other answer is returned as it is."""
        deadline = time.monotonic() + retry_for
        pause = 0.2
        while True:
            request = urllib.request.Request(self.url + path, method=method)
            request.add_header("Authorization", f"Bearer {self.token}")
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                request.add_header("Content-Type", "application/json")
            if idempotency_key is not None:
                request.add_header("Idempotency-Key", idempotency_key)
            try:
                with urllib.request.urlopen(request, data=data, timeout=self.timeout) as response:
                    return response.status, read_json(response), server_time(response)
            except urllib.error.HTTPError as error:
                status, answer, at = error.code, read_json(error), server_time(error)
                if status not in RETRY_STATUSES or time.monotonic() + pause > deadline:
                    return status, answer, at
                retry_after = float(error.headers.get("Retry-After", pause))
                time.sleep(min(max(pause, retry_after), 5.0))
            except (urllib.error.URLError, OSError) as error:
                if time.monotonic() + pause > deadline:
                    raise
                say(f"no answer from the gate ({error}); retrying")
                time.sleep(pause)
            pause = min(pause * 2, 5.0)


def read_json(response):
    text = response.read()
    return json.loads(text) if text.strip() else None


def server_time(response):
    """The server's clock from its `Date` header (whole seconds), else ours."""
    date = response.headers.get("Date")
    return email.utils.parsedate_to_datetime(date) if date else datetime.now(timezone.utc)


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def say(line):
    print(line, flush=True)


def error_of(answer):
    """`code: message` of an error answer."""
    error = (answer or {}).get("error", {})
    return f"{error.get('code', '?')}: {error.get('message', '')}"


class Heartbeats(threading.Thread):
    """Extends a held run's lease every third of the lease, in the background. Sets
    `cancel` when an operator asked the run to stop, and `lost` when the gate says this
    worker no longer holds it (its lease ran out: the run already failed as
    `operation.timed_out`, or it ended); `stop` with either."""

    def __init__(self, gate, worker_id, run_id, lease_expires_at, now):
        super().__init__(daemon=True)
        self.gate, self.worker_id, self.run_id = gate, worker_id, run_id
        self.interval = self.third_of_lease(lease_expires_at, now)
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.stop = threading.Event()
        self.done = threading.Event()

    @staticmethod
    def third_of_lease(lease_expires_at, now):
        # Both times are the server's, so a skewed local clock does not matter.
        lease = (parse_time(lease_expires_at) - now).total_seconds()
        return max(lease / 3, 0.2)

    def run(self):
        while not self.done.wait(self.interval):
            path = f"/v1/worker/runs/{self.run_id}/heartbeat"
            try:
                # Retried only while the lease can still be extended.
                status, answer, now = self.gate.call(
                    "POST", path, {"worker_id": self.worker_id}, retry_for=self.interval
                )
            except OSError as error:
                say(f"heartbeat {self.run_id}: no answer ({error}); the lease still runs")
                continue
            if status == 200:
                self.interval = self.third_of_lease(answer["lease_expires_at"], now)
                say(f"heartbeat {self.run_id}: lease until {answer['lease_expires_at']}")
                if answer["cancel_requested"] and not self.cancel.is_set():
                    say(f"cancel requested for {self.run_id}")
                    self.cancel.set()
                    self.stop.set()
            elif status in (404, 409):
                say(f"lost {self.run_id}: {error_of(answer)}")
                self.lost.set()
                self.stop.set()
                return
            else:
                say(f"heartbeat {self.run_id}: HTTP {status} {error_of(answer)}")


def execute(run, stop, work_seconds, fail_with):
    """The work itself: replace this. `stop` is set when the run must stop (an operator
    cancelled it, or the lease was lost). Returns ("succeeded", None), ("failed",
    execution reason code) or ("cancelled", None)."""
    if stop.wait(work_seconds):
        return "cancelled", None
    if fail_with:
        return "failed", fail_with
    return "succeeded", None


def complete(gate, worker_id, run_id, status, reason):
    """Reports how the run ended. A retry after a lost answer can meet 409 (the first
    attempt was recorded): the run's detail says whether it ended as reported."""
    body = {"worker_id": worker_id, "status": status}
    if reason:
        body["reason_code"] = reason
    answered, answer, _ = gate.call("POST", f"/v1/worker/runs/{run_id}/complete", body)
    if answered == 200:
        return answer["run"]["status"]
    if answered == 409:
        _, detail, _ = gate.call("GET", f"/v1/operations/{run_id}")
        if detail and detail["status"] == status:
            return status
        say(f"complete {run_id}: refused, {error_of(answer)}")
        return None
    say(f"complete {run_id}: HTTP {answered} {error_of(answer)}")
    return None


def work_on(gate, args, claimed, now):
    run = claimed["run"]
    run_id = run["id"]
    say(f"claimed {run_id} {run['operation']} (lease until {claimed['lease_expires_at']})")
    beats = Heartbeats(gate, args.worker_id, run_id, claimed["lease_expires_at"], now)
    beats.start()
    status, reason = execute(run, beats.stop, args.work_seconds, args.fail_with)
    beats.done.set()
    beats.join()
    if beats.lost.is_set():
        # The gate already ended the run; a completion would be refused.
        return
    ended = complete(gate, args.worker_id, run_id, status, reason)
    if ended:
        say(f"completed {run_id}: {ended}" + (f" ({reason})" if reason else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gate's base URL")
    parser.add_argument("--token-file", default=os.environ.get("GATE_ADMIN_TOKEN_FILE"))
    parser.add_argument("--worker-id", default=f"worker-{uuid.uuid4().hex[:8]}")
    parser.add_argument(
        "--operation",
        action="append",
        dest="operations",
        help="claim only runs of this operation (repeatable); default: any",
    )
    parser.add_argument("--work-seconds", type=float, default=2.0, help="simulated work per run")
    parser.add_argument(
        "--fail-with", metavar="REASON_CODE", help="report every run as failed with this execution reason"
    )
    parser.add_argument("--max-runs", type=int, help="exit after this many runs")
    parser.add_argument("--exit-when-idle", action="store_true", help="exit when there is nothing to claim")
    parser.add_argument("--idle-seconds", type=float, default=1.0, help="pause after an empty claim")
    args = parser.parse_args()

    if args.token_file:
        with open(os.path.expanduser(args.token_file)) as file:
            token = file.read().strip()
    else:
        token = os.environ.get("GATE_ADMIN_TOKEN", "")
    if not token:
        sys.exit("error: no admin token: set GATE_ADMIN_TOKEN_FILE or GATE_ADMIN_TOKEN, or pass --token-file")
    gate = Gate(args.url, token)

    stopping = threading.Event()

    def stop_claiming(signum, _frame):
        if stopping.is_set():
            raise KeyboardInterrupt
        say("stopping: finishing the run in hand, claiming no more")
        stopping.set()

    signal.signal(signal.SIGTERM, stop_claiming)
    signal.signal(signal.SIGINT, stop_claiming)

    runs = 0
    idle = args.idle_seconds
    while not stopping.is_set() and (args.max_runs is None or runs < args.max_runs):
        body = {"worker_id": args.worker_id}
        if args.operations:
            body["operations"] = args.operations
        # One key per claim: a retry after a lost answer gets the same run back
        # instead of claiming a second one and leaving the first to time out.
        status, answer, now = gate.call("POST", "/v1/worker/claim", body, idempotency_key=str(uuid.uuid4()))
        if status == 200:
            runs += 1
            idle = args.idle_seconds
            work_on(gate, args, answer, now)
        elif status == 204:
            if args.exit_when_idle:
                say("nothing to claim")
                break
            stopping.wait(idle)
            idle = min(idle * 2, 10.0)
        else:
            sys.exit(f"error: claim answered HTTP {status}: {error_of(answer)}")


if __name__ == "__main__":
    main()
