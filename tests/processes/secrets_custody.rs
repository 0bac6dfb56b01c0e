//! A provider secret, once handed over, is readable nowhere outside the
//! process: not in the database's bytes (the SQLite files, a `pg_dump`), not
//! in the server's log (at `debug`), not in any answer, not in
//! `audit export --events all`. And the sealing key's file: created beside an
//! embedded database with mode 600, refused (exit 2) when malformed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use testkit::serve;

use serde_json::{json, Value};

use serve::{request_at, ADMIN};

const SECRET: &str = "Zr9~custody.Secret-Value_0123456789abcdef";
const ROTATED: &str = "Rotated~custody.Secret-Value_9876543210";

/// `serve --no-worker` with its whole log (debug) kept, and its address.
struct Logged {
    child: std::process::Child,
    address: String,
    log: Arc<Mutex<String>>,
    drain: std::thread::JoinHandle<()>,
}

impl Logged {
    fn start(database_url: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
            .args([
                "serve",
                "--no-worker",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--database-url",
                database_url,
            ])
            .args(extra)
            .env("GATE_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines.next().expect("serve exited early").unwrap();
            log.lock().unwrap().push_str(&line);
            let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if entry["message"] == "listening" {
                break entry["address"].as_str().unwrap().to_owned();
            }
        };
        let kept = log.clone();
        let drain = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            child,
            address,
            log,
            drain,
        }
    }

    /// One request; every answer is kept in `answers`.
    fn call(&self, answers: &mut String, method: &str, path: &str, body: Option<Value>) -> Value {
        let reply = request_at(&self.address, method, path, body, ADMIN, &[]).unwrap();
        answers.push_str(&format!(
            "{} {:?} {}\n",
            reply.status, reply.headers, reply.body
        ));
        assert!(reply.status < 300, "{method} {path}: {}", reply.status);
        reply.body
    }

    /// Stops the process (SIGTERM) and returns its whole log.
    fn stop(self) -> String {
        let Self {
            mut child,
            log,
            drain,
            ..
        } = self;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        // The draining thread ends with the pipe, after the last line.
        drain.join().unwrap();
        let log = log.lock().unwrap().clone();
        log
    }
}

/// Hands a secret over, rotates it, reads it back every way the API offers,
/// and starts a run that uses it; returns every answer as text.
fn exercise(server: &Logged) -> String {
    let mut answers = String::new();
    let a = &mut answers;
    let workspace = server.call(
        a,
        "POST",
        "/v1/admin/workspaces",
        Some(json!({"name": "Acme"})),
    );
    let tenant = server.call(
        a,
        "POST",
        "/v1/admin/tenants",
        Some(json!({"workspace_id": workspace["id"], "name": "Contoso"})),
    );
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    let connection = server.call(
        a,
        "POST",
        &format!("/v1/tenants/{tenant}/provider-connections"),
        Some(json!({"display_name": "Graph", "provider": "microsoft_graph", "make_default": true})),
    );
    let connection = connection["id"].as_str().unwrap().to_owned();
    server.call(
        a,
        "POST",
        &format!("/v1/provider-connections/{connection}/consent"),
        Some(json!({"granted": true})),
    );
    for secret in [SECRET, ROTATED] {
        let stored = server.call(
            a,
            "PUT",
            &format!("/v1/provider-connections/{connection}/secret"),
            Some(json!({
                "directory_tenant_id": "contoso.onmicrosoft.com",
                "client_id": "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                "client_secret": secret,
                "expires_at": "2099-01-01T00:00:00Z",
            })),
        );
        assert_eq!(stored["credentials"], "valid");
    }
    // A refused body that holds the secret: its error must not echo it.
    let refused = request_at(
        &server.address,
        "PUT",
        &format!("/v1/provider-connections/{connection}/secret"),
        Some(json!({"directory_tenant_id": 7, "client_id": "x", "client_secret": SECRET, "expires_at": null})),
        ADMIN,
        &[],
    )
    .unwrap();
    assert_eq!(refused.status, 400);
    a.push_str(&refused.body.to_string());
    server.call(
        a,
        "GET",
        &format!("/v1/provider-connections/{connection}"),
        None,
    );
    server.call(
        a,
        "GET",
        &format!("/v1/tenants/{tenant}/provider-connections"),
        None,
    );
    server.call(
        a,
        "POST",
        &format!("/v1/tenants/{tenant}/operations"),
        Some(json!({"operation": "provider.verify"})),
    );
    server.call(a, "GET", "/v1/operations", None);
    server.call(a, "GET", &format!("/v1/tenants/{tenant}/decisions"), None);
    answers
}

fn audit_export(database_url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
        .args([
            "audit",
            "export",
            "--database-url",
            database_url,
            "--all-tenants",
            "--format",
            "jsonl",
            "--events",
            "all",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "audit export failed: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("SecretStored"),
        "the export holds no secret event"
    );
    text
}

/// Fails naming `place` if it holds either secret.
fn assert_absent(place: &str, haystack: &[u8]) {
    for secret in [SECRET, ROTATED] {
        let found = haystack
            .windows(secret.len())
            .any(|window| window == secret.as_bytes());
        assert!(!found, "a provider secret is readable in {place}");
    }
}

#[test]
fn a_secret_is_found_nowhere_on_sqlite() {
    let (dir, url) = testkit::fresh_sqlite_url();
    let server = Logged::start(&url, &[]);
    let answers = exercise(&server);
    let log = server.stop();
    assert_absent("the answers", answers.as_bytes());
    assert_absent("the server's log", log.as_bytes());
    assert!(
        log.contains("\"message\":\"listening\""),
        "the log was not kept"
    );
    assert_absent("audit export --events all", audit_export(&url).as_bytes());
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        assert_absent(&path.display().to_string(), &std::fs::read(&path).unwrap());
        files += 1;
    }
    assert!(files >= 2, "the database file and its key file");
    // The key the server made up lies beside the database, readable by its owner only.
    let key = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".secrets-key"))
        .expect("a key file beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_secret_is_found_nowhere_on_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = runtime.block_on(testkit::fresh_postgres_database());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, format!("{}\n", "3c".repeat(32))).unwrap();
    let server = Logged::start(&url, &["--secrets-key-file", key.to_str().unwrap()]);
    let answers = exercise(&server);
    let log = server.stop();
    assert_absent("the answers", answers.as_bytes());
    assert_absent("the server's log", log.as_bytes());
    assert_absent("audit export --events all", audit_export(&url).as_bytes());
    let dump = Command::new(
        testkit::find_postgres_bin_dir()
            .map(|dir| dir.join("pg_dump"))
            .unwrap_or_else(|| "pg_dump".into()),
    )
    .args(["--dbname", &url])
    .output()
    .expect("pg_dump");
    assert!(dump.status.success(), "pg_dump failed: {dump:?}");
    let dump_text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump_text.contains("provider_secrets"),
        "the dump lacks the custody table"
    );
    assert_absent("pg_dump", &dump.stdout);
}

#[test]
fn a_malformed_key_file_is_a_usage_error() {
    let (dir, url) = testkit::fresh_sqlite_url();
    let key = dir.path().join("bad.key");
    std::fs::write(&key, "not-a-key\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .args(["--secrets-key-file", key.to_str().unwrap()])
        .env("GATE_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("64 hex digits"), "{stderr}");
    // Refused before anything was opened: the key file is all there is.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A Graph root that is not an http(s) URL is refused at start, like any bad
/// flag (exit 2), before anything is created.
#[test]
fn a_bad_graph_url_is_a_usage_error() {
    let (dir, url) = testkit::fresh_sqlite_url();
    let output = Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .args(["--graph-base-url", "ftp://graph.example"])
        .env("GATE_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--graph-base-url"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
