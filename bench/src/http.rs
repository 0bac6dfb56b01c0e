//! HTTP end to end: `serve` as a child process on its own scratch database,
//! driven over loopback by a load generator in this process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// How long `serve` may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `serve` child. Killed when dropped, so an error or an
/// interruption anywhere in the bench never leaves it behind.
pub struct Serve {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Serve {
    /// Starts `<gate> serve` on a free loopback port, without the built-in
    /// worker (runs stay queued), and waits until `/readyz` answers.
    pub async fn start(
        gate: &Path,
        database_url: &str,
        pool: u32,
        admin_token: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let log = dir.join(format!("serve-{port}.log"));
        let output =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        eprintln!("bench: `{} serve` on {listen}", gate.display());
        let child = tokio::process::Command::new(gate)
            .args(["serve", "--listen", &listen, "--no-worker"])
            .args(["--admin-token", admin_token])
            .args(["--database-url", database_url])
            .args(["--db-pool", &pool.to_string()])
            // Its default log filter, whatever the caller's environment says.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(output.try_clone().context("opening the serve log")?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{} serve`", gate.display()))?;
        let pid = child.id().context("`serve` exited at once")?;
        let mut serve = Self {
            child,
            pid,
            log,
            base: format!("http://{listen}"),
        };
        serve.wait_ready().await?;
        Ok(serve)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let api = Api::new(self.base.clone(), 1);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("watching `serve`")? {
                anyhow::bail!(
                    "`serve` exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok((StatusCode::OK, _)) = api.call(Method::GET, "/readyz", None, None).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "`serve` was not ready within {}s:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the child's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .with_context(|| format!("no VmHWM in {path}"))?;
        Ok(kib * 1024)
    }

    /// Kills the child and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A free loopback port. Another process could take it before `serve` binds
/// it; then `serve` exits and the bench says so.
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener
        .local_addr()
        .context("reading the free port")?
        .port())
}

/// A JSON client of the API, keeping up to `connections` connections open.
#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Api {
    /// A client of the API at `base`.
    pub fn new(base: String, connections: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .build(connector);
        Self { client, base }
    }

    /// Sends one request; returns the status and the body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(body)?))
            }
            None => Full::new(Bytes::new()),
        };
        let response = self
            .client
            .request(request.body(body).context("building a request")?)
            .await
            .with_context(|| format!("calling {path}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer of {path}"))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Sends one request and insists on one of the `expected` statuses.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        expected: &[StatusCode],
    ) -> anyhow::Result<Value> {
        let (status, bytes) = self.call(method.clone(), path, token, body).await?;
        anyhow::ensure!(
            expected.contains(&status),
            "{method} {path} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("reading the JSON of {path}"))
    }
}

fn id_of(value: &Value) -> anyhow::Result<String> {
    value["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `id` in {value}"))
}

/// An operator and the workspace its tenants are made in.
pub struct Operator {
    workspace_id: String,
    user_id: String,
    /// Its bearer token.
    pub token: String,
}

/// Creates a workspace and an operator through the admin API.
pub async fn operator(api: &Api, admin: &str) -> anyhow::Result<Operator> {
    let created = [StatusCode::CREATED];
    let workspace = api
        .expect(
            Method::POST,
            "/v1/admin/workspaces",
            Some(admin),
            Some(&json!({"name": "Bench"})),
            &created,
        )
        .await?;
    let user = api
        .expect(
            Method::POST,
            "/v1/admin/users",
            Some(admin),
            Some(&json!({"name": "Bench Operator"})),
            &created,
        )
        .await?;
    Ok(Operator {
        workspace_id: id_of(&workspace)?,
        user_id: id_of(&user)?,
        token: user["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token for the new user")?,
    })
}

/// Creates, through the admin API, a tenant with the operator as member and a
/// usable default connection (consent granted, credentials valid). Returns
/// the tenant's id.
pub async fn usable_tenant(
    api: &Api,
    admin: &str,
    operator: &Operator,
    n: usize,
) -> anyhow::Result<String> {
    let admin = Some(admin);
    let tenant = api
        .expect(
            Method::POST,
            "/v1/admin/tenants",
            admin,
            Some(&json!({"workspace_id": operator.workspace_id, "name": format!("Tenant {n}")})),
            &[StatusCode::CREATED],
        )
        .await?;
    let tenant_id = id_of(&tenant)?;
    api.expect(
        Method::PUT,
        &format!("/v1/admin/tenants/{tenant_id}/members/{}", operator.user_id),
        admin,
        Some(&json!({"role": "operator"})),
        &[StatusCode::NO_CONTENT],
    )
    .await?;
    let connection = api
        .expect(
            Method::POST,
            &format!("/v1/tenants/{tenant_id}/provider-connections"),
            admin,
            Some(&json!({"display_name": format!("Contoso Graph {n}"), "provider": "microsoft_graph", "make_default": true})),
            &[StatusCode::CREATED],
        )
        .await?;
    let connection_id = id_of(&connection)?;
    api.expect(
        Method::POST,
        &format!("/v1/provider-connections/{connection_id}/consent"),
        admin,
        Some(&json!({"granted": true})),
        &[StatusCode::OK],
    )
    .await?;
    api.expect(
        Method::POST,
        &format!("/v1/provider-connections/{connection_id}/credentials"),
        admin,
        Some(&json!({"status": "valid"})),
        &[StatusCode::OK],
    )
    .await?;
    Ok(tenant_id)
}

/// One start by the operator on a tenant's default connection; accepted (202)
/// or deduped (200) are the only answers a usable connection gives.
pub async fn start(api: &Api, token: &str, tenant_id: &str) -> anyhow::Result<()> {
    api.expect(
        Method::POST,
        &format!("/v1/tenants/{tenant_id}/operations"),
        Some(token),
        Some(&json!({"operation": "inventory.sync"})),
        &[StatusCode::ACCEPTED, StatusCode::OK],
    )
    .await
    .map(drop)
}
