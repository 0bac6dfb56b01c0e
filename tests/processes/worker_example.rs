//! `examples/worker.py`, the external worker of `docs/workers.md`, against a real
//! `serve --no-worker` with a three-second lease: it claims (honouring its operation
//! filter), heart-beats, stops a run an operator cancels, reports a failure with its
//! reason, and gives up a run whose lease ran out while it was stopped.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::serve;

use serde_json::{json, Value};
use serve::{Serve, ADMIN};

/// The example, started with `args`; its stdout is read line by line.
struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Worker {
    fn start(serve: &Serve, args: &[&str]) -> Self {
        let python = Command::new("python3").arg("--version").output();
        assert!(
            python.is_ok_and(|out| out.status.success()),
            "examples/worker.py needs python3 on PATH (Debian: apt-get install python3)"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/worker.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--url", &format!("http://{}", serve.address)])
            .args(args)
            .env("GATE_ADMIN_TOKEN", ADMIN)
            .env_remove("GATE_ADMIN_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start examples/worker.py");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one starts with `prefix`; panics if the worker exits first.
    fn until(&mut self, prefix: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("read the worker's stdout");
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
        }
        panic!(
            "the worker exited before `{prefix}`:\n{}",
            self.seen.join("\n")
        );
    }

    /// Waits for the worker to exit on its own; returns everything it printed.
    fn finish(mut self) -> String {
        for line in self.lines.by_ref() {
            self.seen.push(line.expect("read the worker's stdout"));
        }
        let status = self.child.wait().unwrap();
        let out = self.seen.join("\n");
        assert!(status.success(), "the worker failed ({status}):\n{out}");
        out
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tenant with two usable connections; returns (tenant, default, other).
fn setup(serve: &Serve) -> (String, String, String) {
    let workspace = serve.post("/v1/admin/workspaces", json!({"name": "Acme"}));
    let tenant = serve.post(
        "/v1/admin/tenants",
        json!({"workspace_id": workspace["id"], "name": "Contoso"}),
    );
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    let mut connections = Vec::new();
    for (name, default) in [("Contoso Graph", true), ("Contoso Graph 2", false)] {
        let connection = serve.post(
            &format!("/v1/tenants/{tenant}/provider-connections"),
            json!({"display_name": name, "provider": "microsoft_graph", "make_default": default}),
        );
        let id = connection["id"].as_str().unwrap().to_owned();
        serve.post(
            &format!("/v1/provider-connections/{id}/consent"),
            json!({"granted": true}),
        );
        serve.post(
            &format!("/v1/provider-connections/{id}/credentials"),
            json!({"status": "valid"}),
        );
        connections.push(id);
    }
    let other = connections.pop().unwrap();
    (tenant, connections.pop().unwrap(), other)
}

/// Starts `operation` at `path`; returns the accepted run's id.
fn start(serve: &Serve, path: &str, operation: &str) -> String {
    let (status, body) = serve.call("POST", path, Some(json!({"operation": operation})));
    assert_eq!(status, 202, "{body}");
    body["run"]["id"].as_str().unwrap().to_owned()
}

fn run(serve: &Serve, id: &str) -> Value {
    let (status, body) = serve.call("GET", &format!("/v1/operations/{id}"), None);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn the_example_worker_claims_heart_beats_honours_cancel_and_reports_how_runs_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(
        &format!("sqlite://{}/gate.db", tmp.path().display()),
        &["--no-worker", "--lease-seconds", "3"],
    );
    let (tenant, _, other) = setup(&serve);
    let on_tenant = format!("/v1/tenants/{tenant}/operations");

    // The filter: the older inventory sync waits, the verification is claimed.
    let sync = start(&serve, &on_tenant, "inventory.sync");
    let on_other = format!("/v1/provider-connections/{other}/operations");
    let verify = start(&serve, &on_other, "provider.verify");
    let out = Worker::start(
        &serve,
        &[
            "--worker-id",
            "filtered",
            "--operation",
            "provider.verify",
            "--work-seconds",
            "0",
            "--exit-when-idle",
        ],
    )
    .finish();
    assert!(
        out.contains(&format!("claimed {verify} provider.verify")),
        "{out}"
    );
    assert!(
        out.contains(&format!("completed {verify}: succeeded")),
        "{out}"
    );
    assert!(out.ends_with("nothing to claim"), "{out}");
    assert_eq!(run(&serve, &sync)["status"], "queued");

    // Work that outlasts a third of the lease is kept alive by heartbeats.
    let out = Worker::start(
        &serve,
        &[
            "--worker-id",
            "steady",
            "--work-seconds",
            "2.5",
            "--max-runs",
            "1",
        ],
    )
    .finish();
    assert!(
        out.contains(&format!("claimed {sync} inventory.sync")),
        "{out}"
    );
    assert!(
        out.contains(&format!("heartbeat {sync}: lease until ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("completed {sync}: succeeded")),
        "{out}"
    );
    let detail = run(&serve, &sync);
    assert_eq!(detail["status"], "succeeded", "{detail}");

    // An operator cancels a running run: the next heartbeat says so, the worker stops
    // and completes it as cancelled.
    let cancelled = start(&serve, &on_tenant, "inventory.sync");
    let mut worker = Worker::start(
        &serve,
        &[
            "--worker-id",
            "cancellable",
            "--work-seconds",
            "30",
            "--max-runs",
            "1",
        ],
    );
    worker.until(&format!("claimed {cancelled}"));
    let (status, body) = serve.call("POST", &format!("/v1/operations/{cancelled}/cancel"), None);
    assert_eq!(
        (status, &body["cancel_requested"]),
        (200, &json!(true)),
        "{body}"
    );
    let out = worker.finish();
    assert!(
        out.contains(&format!("cancel requested for {cancelled}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("completed {cancelled}: cancelled")),
        "{out}"
    );
    assert_eq!(run(&serve, &cancelled)["status"], "cancelled");

    // A failure is reported with its execution reason.
    let failed = start(&serve, &on_tenant, "directory.groups.sync");
    let out = Worker::start(
        &serve,
        &[
            "--worker-id",
            "unlucky",
            "--work-seconds",
            "0",
            "--fail-with",
            "provider.throttled",
            "--exit-when-idle",
        ],
    )
    .finish();
    assert!(
        out.contains(&format!("completed {failed}: failed (provider.throttled)")),
        "{out}"
    );
    let detail = run(&serve, &failed);
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["reason"]["code"], "provider.throttled");
    assert_eq!(detail["reason"]["problem_class"], "transient");

    // A worker stopped past its lease: the gate times the run out, and the worker, once
    // it runs again, learns from its next heartbeat that the run is no longer its own.
    let expired = start(&serve, &on_tenant, "directory.roles.sync");
    let mut worker = Worker::start(
        &serve,
        &[
            "--worker-id",
            "frozen",
            "--work-seconds",
            "30",
            "--max-runs",
            "1",
        ],
    );
    worker.until(&format!("claimed {expired}"));
    let pid = worker.child.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let detail = run(&serve, &expired);
        if detail["status"] != "running" || Instant::now() > deadline {
            break detail;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    signal("-CONT");
    assert_eq!(detail["status"], "failed", "{detail}");
    assert_eq!(detail["reason"]["code"], "operation.timed_out");
    let out = worker.finish();
    assert!(
        out.contains(&format!("lost {expired}: conflict: ")),
        "{out}"
    );
    assert!(!out.contains(&format!("completed {expired}")), "{out}");
}
