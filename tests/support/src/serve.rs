//! Real `serve` processes for the multi-instance tests, and a small HTTP/1.1 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// The admin token every test instance runs with.
pub const ADMIN: &str = "instances-admin-token-0123456789";

/// Applies the migrations to `database_url` with the binary itself.
pub fn migrate(database_url: &str) {
    let status = Command::new(crate::gate_binary())
        .args(["migrate", "--database-url", database_url])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "migrate failed");
}

/// A running `serve` process and the address it listens on.
pub struct Serve {
    pub child: Child,
    pub address: String,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Serve {
    /// Starts `operation` on `tenant` as the admin and waits until the built-in
    /// worker ended its run; returns the run.
    pub fn run_to_end(&self, tenant: &str, operation: &str) -> Value {
        let (status, start) = self.call(
            "POST",
            &format!("/v1/tenants/{tenant}/operations"),
            Some(json!({"operation": operation})),
        );
        assert_eq!(status, 202, "{operation}: {start}");
        let url = start["run"]["url"].as_str().unwrap().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, run) = self.call("GET", &url, None);
            assert_eq!(status, 200, "{run}");
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap()) {
                return run;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{operation} did not end: {run}"
            );
            // Polling a separate process: there is nothing to wait on but its answers.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `serve --no-worker` on `database_url`.
    pub fn start(database_url: &str) -> Self {
        Self::start_with(database_url, &["--no-worker"])
    }

    /// `serve` on `database_url` with `extra` arguments; returns once it listens.
    pub fn start_with(database_url: &str, extra: &[&str]) -> Self {
        Self::spawn(database_url, extra, Stdio::null())
    }

    /// `serve --demo` on an empty store at `database_url` with `extra`
    /// arguments; returns once it listens, with the block it printed on stdout.
    pub fn start_demo(database_url: &str, extra: &[&str]) -> (Self, String) {
        let mut dispatcher =
            Self::spawn(database_url, &[&["--demo"], extra].concat(), Stdio::piped());
        let stdout = BufReader::new(dispatcher.child.stdout.take().expect("stdout"));
        let mut banner = String::new();
        let mut rules = 0;
        let mut lines = stdout.lines();
        while rules < 2 {
            let Some(line) = lines.next() else { break };
            let line = line.expect("read serve's stdout");
            rules += usize::from(line.starts_with("====="));
            banner.push_str(&line);
            banner.push('\n');
        }
        assert_eq!(rules, 2, "serve --demo printed no whole block:\n{banner}");
        // Whatever it prints later must not meet a closed pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        (dispatcher, banner)
    }

    fn spawn(database_url: &str, extra: &[&str], stdout: Stdio) -> Self {
        let mut child = Command::new(crate::gate_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--database-url",
                database_url,
            ])
            .args(extra)
            .env("GATE_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .expect("read serve's log");
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["message"] == "listening" {
                break entry["address"].as_str().expect("address").to_owned();
            }
        };
        // Keep draining the log so the process never blocks on a full pipe; with
        // DG_TEST_SERVE_LOG=1 it goes to the test's stderr, for a look after a failure.
        let show = std::env::var_os("DG_TEST_SERVE_LOG").is_some_and(|v| v == "1");
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if show {
                    eprintln!("serve: {line}");
                }
            }
        });
        Self { child, address }
    }

    /// One request with the admin token; returns the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let reply = self.request(method, path, body, ADMIN, &[]);
        (reply.status, reply.body)
    }

    /// One HTTP/1.1 request with `token` and extra `headers`; panics when the
    /// connection fails (see [`Serve::try_request`]).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_request(method, path, body, token, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// One HTTP/1.1 request; an error when the instance cannot be reached or
    /// does not answer within 30 s.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Reply> {
        request_at(&self.address, method, path, body, token, headers)
    }

    /// POST with the admin token; panics unless it succeeds.
    pub fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.call("POST", path, Some(body));
        assert!(status < 300, "POST {path}: {status} {body}");
        body
    }

    /// Asks the process to stop (SIGTERM: it finishes in-flight requests and
    /// releases its runs) and waits until it has exited.
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "serve exited with {exit} on SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every view row as text, ordered, for comparing two states of the views.
pub async fn dump(pool: &sqlx::PgPool) -> Vec<(String, Vec<String>)> {
    let mut dump = Vec::new();
    for (table, key) in [
        ("view_runs", "run_id"),
        ("view_decisions", "decision_id"),
        ("view_connections", "connection_id"),
        ("view_members", "tenant_id, user_id"),
        ("view_notifications", "notification_id"),
        ("view_run_initiators", "run_id"),
        ("view_tenants", "tenant_id"),
        ("view_run_timeline", "position"),
    ] {
        let sql = format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY {key}");
        let rows: Vec<String> = sqlx::query_scalar(&sql).fetch_all(pool).await.unwrap();
        dump.push((table.to_owned(), rows));
    }
    dump
}

/// One HTTP/1.1 request to `address`; an error when it cannot be reached or
/// does not answer within 30 s.
pub fn request_at(
    address: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string());
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n",
        address
    );
    if let Some(body) = &body {
        request.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body.as_deref().unwrap_or_default());
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP head"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.get(9..12))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let body = Some(body.trim())
        .filter(|b| !b.is_empty())
        .map(|b| serde_json::from_str(b).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A tenant with a usable default connection (consent granted, credentials
/// valid) in `workspace`; returns the tenant id.
pub fn usable_tenant(dispatcher: &Serve, workspace: &str, name: &str) -> String {
    let tenant = dispatcher.post(
        "/v1/admin/tenants",
        json!({"workspace_id": workspace, "name": name}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let connection = dispatcher.post(
        &format!("/v1/tenants/{tenant}/provider-connections"),
        json!({"display_name": "Graph", "provider": "microsoft_graph", "make_default": true}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    dispatcher.post(
        &format!("/v1/provider-connections/{connection}/consent"),
        json!({"granted": true}),
    );
    dispatcher.post(
        &format!("/v1/provider-connections/{connection}/credentials"),
        json!({"status": "valid"}),
    );
    tenant
}

/// A new workspace; returns its id.
pub fn workspace(dispatcher: &Serve) -> String {
    dispatcher.post("/v1/admin/workspaces", json!({"name": "Acme"}))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}
