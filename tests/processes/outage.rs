//! The database goes away, and comes back: a throwaway PostgreSQL server that the
//! test stops and starts under a real `serve` process, and a SQLite file on a disk
//! that fills up. While the database cannot be used, every request that needs it
//! answers 503 `unavailable` with `Retry-After` (never a 500, never a hang), `/readyz`
//! is 503 and `/healthz` 200; afterwards the service recovers by itself, with
//! nothing lost and nothing half-written.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::serve;

use serde_json::json;

use serve::{Reply, Serve, ADMIN};

fn get(dispatcher: &Serve, path: &str) -> Reply {
    dispatcher.request("GET", path, None, ADMIN, &[])
}

fn post(dispatcher: &Serve, path: &str, body: serde_json::Value) -> Reply {
    dispatcher.request("POST", path, Some(body), ADMIN, &[])
}

fn assert_unavailable(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 503, "{what}: {}", reply.body);
    assert_eq!(reply.body["error"]["code"], "unavailable", "{what}");
    let retry: u64 = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{what}: Retry-After {retry}");
}

/// Polls `/readyz` until it answers `status` (the service's own recovery).
fn wait_for_ready(dispatcher: &Serve, status: u16) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = get(dispatcher, "/readyz");
        if ready.status == status && (status != 200 || ready.body["lag"] == 0) {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}: {} {}",
            ready.status,
            ready.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_postgres_outage_answers_503_unavailable_and_the_service_recovers_by_itself() {
    let server = testkit::start_throwaway_server();
    serve::migrate(server.url());
    let dispatcher = Serve::start_with(
        server.url(),
        &[
            "--provider",
            "simulated",
            "--sim-latency-ms",
            "5..20",
            "--sim-failure-rate",
            "0",
        ],
    );
    let tenant = serve::usable_tenant(&dispatcher, &serve::workspace(&dispatcher), "Contoso");
    let user = dispatcher.post("/v1/admin/users", json!({"name": "Olivia"}));
    let user_token = user["token"].as_str().unwrap().to_owned();
    let before = post(
        &dispatcher,
        &format!("/v1/tenants/{tenant}/operations"),
        json!({"operation": "inventory.sync"}),
    );
    assert_eq!(before.status, 202, "{}", before.body);

    server.stop();
    let start = post(
        &dispatcher,
        &format!("/v1/tenants/{tenant}/operations"),
        json!({"operation": "directory.groups.sync"}),
    );
    assert_unavailable(&start, "a start");
    assert_unavailable(&get(&dispatcher, "/v1/operations"), "a read");
    assert_unavailable(
        &post(
            &dispatcher,
            "/v1/admin/workspaces",
            json!({"name": "Other"}),
        ),
        "a setup write",
    );
    let as_user = dispatcher.request("GET", "/v1/operations", None, &user_token, &[]);
    assert_unavailable(&as_user, "a user token that must be checked");
    let ready = get(&dispatcher, "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(get(&dispatcher, "/healthz").status, 200);

    server.start();
    // No restart: the pool reconnects, the projector and the worker resume.
    wait_for_ready(&dispatcher, 200);
    let after = post(
        &dispatcher,
        &format!("/v1/tenants/{tenant}/operations"),
        json!({"operation": "directory.groups.sync"}),
    );
    assert!([202, 409].contains(&after.status), "{}", after.body);
    let runs = get(&dispatcher, &format!("/v1/operations?tenant_id={tenant}"));
    assert_eq!(runs.status, 200, "{}", runs.body);
    let first_run = &before.body["run"]["id"];
    assert!(
        runs.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|run| run["id"] == *first_run),
        "the run accepted before the outage is still there: {}",
        runs.body
    );
    let decisions = get(&dispatcher, &format!("/v1/tenants/{tenant}/decisions"));
    assert_eq!(
        decisions.body["items"].as_array().unwrap().len(),
        2,
        "the refused start during the outage left no decision: {}",
        decisions.body
    );
    assert_eq!(
        dispatcher
            .request("GET", "/v1/operations", None, &user_token, &[])
            .status,
        200
    );
}

/// A small tmpfs of our own, unmounted on drop: a disk that can be filled.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}M"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill a disk: it needs root (CAP_SYS_ADMIN)"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.path().join("filler");
        let output = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("No space left"),
            "dd did not fill the disk"
        );
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_under_sqlite_answers_503_unavailable_writes_nothing_half_and_recovers() {
    let disk = SmallDisk::mount(16);
    let url = format!("sqlite://{}", disk.path().join("gate.db").display());
    let dispatcher = Serve::start_with(&url, &["--no-worker"]);
    let tenant = serve::usable_tenant(&dispatcher, &serve::workspace(&dispatcher), "Contoso");
    let before = post(
        &dispatcher,
        &format!("/v1/tenants/{tenant}/operations"),
        json!({"operation": "inventory.sync"}),
    );
    assert_eq!(before.status, 202, "{}", before.body);
    let decisions = get(&dispatcher, &format!("/v1/tenants/{tenant}/decisions"));
    assert_eq!(decisions.body["items"].as_array().unwrap().len(), 1);

    let filler = disk.fill();
    let mut refused = 0;
    // Several writes: the first may still fit in pages SQLite already holds.
    for i in 0..50 {
        let reply = post(
            &dispatcher,
            "/v1/admin/workspaces",
            json!({"name": format!("Workspace {i} {}", "x".repeat(180))}),
        );
        if reply.status == 201 {
            continue;
        }
        assert_unavailable(&reply, "a write on a full disk");
        refused += 1;
    }
    assert!(refused > 0, "no write was refused on a full disk");
    // Reads go on: nothing needs to be written for them.
    let decisions = get(&dispatcher, &format!("/v1/tenants/{tenant}/decisions"));
    assert_eq!(decisions.status, 200, "{}", decisions.body);
    assert_eq!(get(&dispatcher, "/healthz").status, 200);

    std::fs::remove_file(filler).unwrap();
    let after = post(
        &dispatcher,
        &format!("/v1/tenants/{tenant}/operations"),
        json!({"operation": "inventory.sync"}),
    );
    assert_eq!(
        after.status, 200,
        "deduped on the run from before: {}",
        after.body
    );
    wait_for_ready(&dispatcher, 200);
    drop(dispatcher);

    // The file is whole: audit verify reads every stream and chain.
    let verify = Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
        .args(["audit", "verify", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "audit verify after a full disk: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
