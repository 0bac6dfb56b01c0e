//! A highly available PostgreSQL 15 on loopback, as production runs it: one etcd
//! member (the DCS), PostgreSQL nodes under Patroni with `synchronous_mode` on
//! (bootstrapped by Patroni's own initdb, replicas cloned by it), and HAProxy in
//! front, routing a read-write port to the leader (Patroni's `GET /primary`) and a
//! read-only port to the replicas (`GET /replica`). Every port is picked free; the
//! whole cluster lives in one temp dir.
//!
//! Nothing outlives the test: dropping the [`Cluster`] kills every process it
//! started and deletes the dir, and a detached watchdog does the same once the test
//! process has gone (a nextest timeout, Ctrl-C). Both find the processes by the
//! temp dir's path in their command line, which names only ours.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

/// Patroni's timing: the leader key lives `TTL` seconds unless its holder renews
/// it, every `LOOP_WAIT`; a dead leader's key expires after at most `TTL`, and then
/// the synchronous standby takes it. Short, so the test stays short; `RETRY_TIMEOUT`
/// keeps `TTL >= LOOP_WAIT + 2 * RETRY_TIMEOUT`, as Patroni's documentation asks, so
/// a leader that is merely slow to reach etcd demotes itself before its key expires.
const TTL: u32 = 10;
const LOOP_WAIT: u32 = 1;
const RETRY_TIMEOUT: u32 = 4;

/// How long the cluster may take to bootstrap, clone its replicas and route.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What the cluster needs, found on this machine.
struct Tools {
    patroni: PathBuf,
    etcd: PathBuf,
    haproxy: PathBuf,
    postgres_bin: PathBuf,
}

/// Finds every program the cluster runs, or panics with one line naming what is
/// missing and how to install it.
fn find_tools() -> Tools {
    let (patroni, etcd, haproxy) = (
        find_program("patroni"),
        find_program("etcd"),
        find_program("haproxy"),
    );
    let postgres_bin = testkit::find_postgres_bin_dir().filter(|dir| {
        ["postgres", "pg_controldata"]
            .iter()
            .all(|p| dir.join(p).is_file())
    });
    let missing: Vec<&str> = [
        (patroni.is_none(), "patroni (Debian: patroni)"),
        (etcd.is_none(), "etcd (Debian: etcd-server)"),
        (haproxy.is_none(), "haproxy (Debian: haproxy)"),
        (
            postgres_bin.is_none(),
            "the PostgreSQL server binaries (Debian: postgresql-15)",
        ),
    ]
    .into_iter()
    .filter_map(|(absent, what)| absent.then_some(what))
    .collect();
    if !missing.is_empty() {
        panic!(
            "the failover test needs {}: run .ci/ha-deps (as root) or install them",
            missing.join(", ")
        );
    }
    Tools {
        patroni: patroni.unwrap(),
        etcd: etcd.unwrap(),
        haproxy: haproxy.unwrap(),
        postgres_bin: postgres_bin.unwrap(),
    }
}

/// `name` on PATH, or in the sbin dirs a non-root PATH lacks (HAProxy lives there).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_absolute() && candidate.is_file())
}

/// One PostgreSQL node and the Patroni that runs it.
pub struct Node {
    /// Patroni's member name (`n0`, `n1`, …).
    pub name: String,
    pg_port: u16,
    api_port: u16,
    dir: PathBuf,
    patroni: Option<Child>,
}

impl Node {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Patroni's REST answer to `GET path`: its status code, or `None` when it does
    /// not answer (a dead Patroni).
    fn check(&self, path: &str) -> Option<u16> {
        let address = format!("127.0.0.1:{}", self.api_port);
        http_status(&address, path)
    }
}

/// The cluster: etcd, the nodes, HAProxy.
pub struct Cluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    etcd: Child,
    haproxy: Option<Child>,
    rw_port: u16,
    ro_port: u16,
}

/// The account PostgreSQL (and so Patroni) runs as when we are root: PostgreSQL
/// refuses to run as root.
struct Account {
    uid: u32,
    gid: u32,
}

fn account() -> Option<Account> {
    let name = testkit::unprivileged_owner_if_root()?;
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run id: {e}"));
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("id {flag} {name} printed no number"))
    };
    Some(Account {
        uid: id("-u"),
        gid: id("-g"),
    })
}

impl Cluster {
    /// Starts etcd, `nodes` PostgreSQL nodes under Patroni and HAProxy, and returns
    /// once the leader serves on the read-write port, a synchronous standby is
    /// chosen, and every other node serves on the read-only port.
    pub async fn start(nodes: usize) -> Cluster {
        assert!(nodes >= 2, "a failover needs a standby");
        let tools = find_tools();
        let account = account();
        let dir = tempfile::Builder::new()
            .prefix("dg-ha-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the cluster: {e}"))
            .keep();
        spawn_watchdog(&dir);
        let chown = |path: &Path| {
            if let Some(account) = &account {
                std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
                    .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
            }
        };
        chown(&dir);

        let (etcd_client, etcd_peer) = (testkit::free_port(), testkit::free_port());
        let etcd = spawn_logged(
            Command::new(&tools.etcd)
                .arg("--name=dg")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{etcd_client}"
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
                ))
                .arg(format!("--initial-cluster=dg=http://127.0.0.1:{etcd_peer}"))
                .arg("--initial-cluster-state=new"),
            &dir.join("etcd.log"),
        );
        let mut cluster = Cluster {
            dir: dir.clone(),
            nodes: Vec::new(),
            etcd,
            haproxy: None,
            rw_port: testkit::free_port(),
            ro_port: testkit::free_port(),
        };
        cluster.wait_for("etcd to answer", || {
            http_status(&format!("127.0.0.1:{etcd_client}"), "/health") == Some(200)
        });

        for i in 0..nodes {
            let node = Node {
                name: format!("n{i}"),
                pg_port: testkit::free_port(),
                api_port: testkit::free_port(),
                dir: dir.join(format!("n{i}")),
                patroni: None,
            };
            std::fs::create_dir(&node.dir).unwrap();
            chown(&node.dir);
            let config = node.dir.join("patroni.yml");
            std::fs::write(
                &config,
                patroni_config(&node, etcd_client, &tools.postgres_bin),
            )
            .unwrap();
            chown(&config);
            cluster.nodes.push(node);
        }
        // All at once: one wins the bootstrap in etcd and runs initdb, the others
        // wait for it and clone it (pg_basebackup), as on a real first start.
        for i in 0..nodes {
            let node = &cluster.nodes[i];
            let mut command = Command::new(&tools.patroni);
            // Its own home: Patroni and the PostgreSQL tools it runs may look there.
            command
                .arg(node.dir.join("patroni.yml"))
                .current_dir(&node.dir)
                .env("HOME", &node.dir);
            if let Some(account) = &account {
                command.uid(account.uid).gid(account.gid);
            }
            let child = spawn_logged(&mut command, &node.dir.join("patroni.log"));
            cluster.nodes[i].patroni = Some(child);
        }
        cluster.wait_for("a leader, a synchronous standby and every replica", || {
            let primaries = cluster
                .nodes
                .iter()
                .filter(|n| n.check("/primary") == Some(200));
            let replicas = cluster
                .nodes
                .iter()
                .filter(|n| n.check("/replica") == Some(200));
            let sync = cluster
                .nodes
                .iter()
                .filter(|n| n.check("/sync") == Some(200));
            primaries.count() == 1 && replicas.count() == nodes - 1 && sync.count() == 1
        });

        let config = cluster.dir.join("haproxy.cfg");
        std::fs::write(&config, cluster.haproxy_config()).unwrap();
        let haproxy = spawn_logged(
            Command::new(&tools.haproxy)
                .arg("-db")
                .arg("-f")
                .arg(&config),
            &cluster.dir.join("haproxy.log"),
        );
        cluster.haproxy = Some(haproxy);
        cluster.wait_for_routing().await;
        cluster
    }

    /// `postgres://` on the read-write port: the leader, whichever node it is.
    pub fn rw_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.rw_port)
    }

    /// `postgres://` on the read-only port: the replicas.
    pub fn ro_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.ro_port)
    }

    /// The node Patroni names the leader.
    pub fn leader(&self) -> usize {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].check("/primary") == Some(200))
            .collect();
        assert_eq!(leaders.len(), 1, "not one leader: {leaders:?}");
        leaders[0]
    }

    /// The name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// SIGKILL to node `i`'s PostgreSQL, postmaster and every process it forked at
    /// once, as when its machine dies. Its Patroni lives on until
    /// [`Cluster::kill_patroni`].
    pub fn kill_postgres(&self, i: usize) {
        let data_dir = self.nodes[i].data_dir();
        let postmaster = processes_mentioning(&data_dir)
            .into_iter()
            .find(|&pid| parent_of(pid).is_some_and(|parent| !mentions(parent, &data_dir)))
            .unwrap_or_else(|| panic!("no postmaster runs in {}", data_dir.display()));
        let mut doomed = vec![postmaster];
        doomed.extend(children_of(postmaster));
        kill(&doomed);
    }

    /// SIGKILL to node `i`'s Patroni: it renews the leader key no more, which
    /// expires after at most the TTL.
    pub fn kill_patroni(&mut self, i: usize) {
        let mut patroni = self.nodes[i].patroni.take().expect("Patroni runs");
        patroni.kill().unwrap();
        patroni.wait().unwrap();
    }

    /// Whether a new connection on the read-write port reaches a primary now.
    pub async fn rw_serves(&self) -> bool {
        is_primary(&self.rw_url()).await == Some(true)
    }

    /// Waits until new connections on the read-write port reach the leader and
    /// those on the read-only port a replica: HAProxy marks a server up before its
    /// first check, so the first connections may go anywhere. Round robin, so
    /// several answers in a row cover every server HAProxy holds up.
    async fn wait_for_routing(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut in_a_row = 0;
        while in_a_row < 2 * self.nodes.len() {
            let rw = is_primary(&self.rw_url()).await;
            let ro = is_primary(&self.ro_url()).await;
            in_a_row = if rw == Some(true) && ro == Some(false) {
                in_a_row + 1
            } else {
                0
            };
            assert!(
                Instant::now() < deadline,
                "HAProxy did not route to the leader and the replicas within {}s; see {}",
                START_TIMEOUT.as_secs(),
                self.dir.join("haproxy.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `ready` until it holds, or panics naming `what` after [`START_TIMEOUT`].
    fn wait_for(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "the cluster did not get {what} within {}s; logs in {}",
                START_TIMEOUT.as_secs(),
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn haproxy_config(&self) -> String {
        // TCP mode: HAProxy passes the PostgreSQL protocol through. Each server is
        // checked over HTTP on Patroni's REST port; `on-marked-down
        // shutdown-sessions` closes the connections to a server that stopped
        // being what the port promises (a replica just promoted), so clients
        // reconnect to one that is.
        let mut config = String::from(
            "global\n    maxconn 1000\n\
             defaults\n    mode tcp\n    retries 1\n    timeout connect 1s\n\
             \x20   timeout client 30m\n    timeout server 30m\n    timeout check 1s\n",
        );
        for (name, port, check) in [
            ("rw", self.rw_port, "/primary"),
            ("ro", self.ro_port, "/replica"),
        ] {
            writeln!(
                config,
                "listen {name}\n    bind 127.0.0.1:{port}\n    balance roundrobin\n\
                 \x20   option httpchk GET {check}\n    http-check expect status 200\n\
                 \x20   default-server inter 300ms fall 2 rise 1 on-marked-down shutdown-sessions"
            )
            .unwrap();
            for node in &self.nodes {
                writeln!(
                    config,
                    "    server {} 127.0.0.1:{} check port {}",
                    node.name, node.pg_port, node.api_port
                )
                .unwrap();
            }
        }
        config
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        kill(&processes_mentioning(&self.dir));
        for child in self
            .nodes
            .iter_mut()
            .filter_map(|n| n.patroni.as_mut())
            .chain(self.haproxy.as_mut())
            .chain(std::iter::once(&mut self.etcd))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Patroni's configuration of one node. Bootstrap settings go to etcd once, with
/// the cluster; every node reads them from there.
fn patroni_config(node: &Node, etcd_port: u16, postgres_bin: &Path) -> String {
    let dir = node.dir.display();
    format!(
        r#"scope: dg-failover
namespace: /dispatch-gate/
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    ttl: {TTL}
    loop_wait: {LOOP_WAIT}
    retry_timeout: {RETRY_TIMEOUT}
    # Only the synchronous standby, which holds every acknowledged commit, may be
    # promoted; a replica further behind than this is never promoted either.
    synchronous_mode: true
    synchronous_mode_strict: false
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      use_slots: true
      parameters:
        # The test kills processes, never the machine: the kernel keeps what was
        # written, so fsync buys nothing here. Production keeps fsync on.
        fsync: "off"
        max_connections: 100
  initdb:
  - encoding: UTF8
  - locale: C
  - auth: trust
  pg_hba:
  - host replication replicator 127.0.0.1/32 trust
  - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {dir}/data
  bin_dir: {bin}
  pgpass: {dir}/pgpass
  authentication:
    replication:
      username: replicator
    superuser:
      username: postgres
  parameters:
    unix_socket_directories: '{dir}'
"#,
        name = node.name,
        api = node.api_port,
        pg = node.pg_port,
        bin = postgres_bin.display(),
    )
}

/// Starts `command` with stdout and stderr appended to `log`.
fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()))
}

/// Whether a new connection to `url` reaches a primary (`Some(true)`), a standby
/// (`Some(false)`), or nothing within a second (`None`).
async fn is_primary(url: &str) -> Option<bool> {
    let attempt = async {
        let mut connection = PgConnection::connect(url).await.ok()?;
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut connection)
            .await
            .ok()?;
        let _ = connection.close().await;
        Some(!in_recovery)
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
}

/// The status of `GET path` on `address`, or `None` when nothing answers in a second.
fn http_status(address: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let address: std::net::SocketAddr = address.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Every process whose command line mentions `path`.
fn processes_mentioning(path: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id() && mentions(pid, path))
        .collect()
}

fn mentions(pid: u32, path: &Path) -> bool {
    let needle = path.as_os_str().as_encoded_bytes();
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
}

/// The parent of `pid` (field 4 of `/proc/<pid>/stat`, after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// SIGKILL to every pid in one `kill`, so they die together.
fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Once this process has gone, kills whatever still mentions `dir` and deletes it.
/// The dir travels in the environment, so the watchdog's own command line does not
/// mention it; detached in its own process group, so whatever kills the test's
/// group leaves it running.
fn spawn_watchdog(dir: &Path) {
    const SCRIPT: &str = r#"(
while kill -0 "$DG_HA_PID" 2>/dev/null; do sleep 1; done
for p in /proc/[0-9]*; do
  if tr '\0' '\n' < "$p/cmdline" 2>/dev/null | grep -qF "$DG_HA_DIR"; then kill -9 "${p#/proc/}" 2>/dev/null; fi
done
rm -rf "$DG_HA_DIR"
) &"#;
    let status = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .env("DG_HA_PID", std::process::id().to_string())
        .env("DG_HA_DIR", dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cannot start the cluster's watchdog"
    );
}
