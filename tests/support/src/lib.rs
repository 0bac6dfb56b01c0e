//! Test support: a fresh, real database per test, never a mock.
//!
//! # Layout
//! - [`fresh_postgres_database`] creates an empty `dg_test_<uuid>` database on the test
//!   PostgreSQL server and returns its URL; [`postgres_server_url`] is that server.
//! - The database is dropped when the thread that created it ends — the test's thread, or
//!   the runtime worker it ran on, which ends with the test's runtime — whether the test
//!   passed or panicked. Only a killed
//!   process leaves its databases behind; `DG_TEST_RUN` puts a run's mark in their names so
//!   the run's owner can find them (`.ci/run` does), and `DG_TEST_KEEP_DATABASES=1` keeps
//!   them all for a look after a failure.
//! - The server is chosen once per process (`choose_server`): `DATABASE_URL` if it names
//!   a PostgreSQL server, else whatever listens on 127.0.0.1:5432, else a throwaway server
//!   started from the locally installed binaries ([`start_throwaway_server`]).
//! - A throwaway server never outlives the process that started it: Rust statics are never
//!   dropped and nextest runs every test in its own process, so a detached watchdog stops
//!   the server and deletes its directory once that process has gone.
//! - [`fresh_sqlite_url`] is the SQLite counterpart: a file in a fresh temp dir.
//! - A test that needs a server of its own — to stop it and start it again, or to stream
//!   it to a hot standby ([`ThrowawayServer::start_standby`]) — starts one with
//!   [`start_throwaway_server`].
//! - [`graph_fake`]: a fake of Microsoft's token endpoint and Microsoft Graph on
//!   loopback, speaking the documented shapes, with injectable failures.
//! - [`app`]: `TestApp`, the whole router on a fresh database, called in-process.
//! - [`serve`]: real `serve` processes ([`gate_binary`]) and a small HTTP/1.1 client.
//! - [`event_log`]: the event log row by row — corpora to load, dumps, tampering,
//!   resealing — and the CLI run as a process, for the audit and replay suites.

#![forbid(unsafe_code)]

pub mod app;
pub mod event_log;
pub mod graph_fake;
pub mod serve;

/// The repository's root (the test kit lives in `tests/support`).
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `dispatch-gate` binary Cargo built for the tests being run: beside
/// the test executable's `deps/` folder (where Cargo puts a package's
/// binaries for its integration tests), or `DG_GATE_BINARY`.
pub fn gate_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DG_GATE_BINARY") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let binary = profile.join("dispatch-gate");
    assert!(
        binary.is_file(),
        "no dispatch-gate binary at {} (it is built with the package's integration tests)",
        binary.display()
    );
    binary
}

/// Runs each named `async fn(Backend)` as a test on SQLite and on PostgreSQL
/// (the one definition every suite uses; it expands in the calling test crate,
/// where `dispatch_gate` is the crate under test).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(dispatch_gate::write::store::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(dispatch_gate::write::store::Backend::Postgres).await })*
        }
    };
}

use std::cell::RefCell;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const NO_SERVER: &str = "PostgreSQL tests need a server: set DATABASE_URL, run one on 127.0.0.1:5432, or install PostgreSQL server binaries (Debian: apt-get install postgresql)";

const LOCAL_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long a throwaway server may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The server this process creates its test databases on; chosen by the first caller.
static SERVER: OnceLock<Server> = OnceLock::new();

struct Server {
    /// URL of the administrative database, where `CREATE DATABASE` runs.
    url: String,
    /// Where the server came from, for panic messages; never the URL, which may hold a password.
    origin: String,
    /// Held so the server lives as long as the process; never dropped, the watchdog cleans up.
    _throwaway: Option<ThrowawayServer>,
}

/// Creates a brand-new, empty database `dg_test_<uuid>` (`dg_test_<run>_<uuid>` with
/// `DG_TEST_RUN=<run>`) on the test server and returns its URL.
///
/// The database is dropped when the calling thread ends, also when the test panicked;
/// use the URL only on that thread or while it lives (a test's runtime does). Panics with
/// one line when no server can be reached or the database cannot be created.
pub async fn fresh_postgres_database() -> String {
    // The first call may block for a few seconds while it picks or starts the server;
    // acceptable in a test, and the readiness check runs on its own runtime.
    let server = server();
    let name = database_name(std::env::var("DG_TEST_RUN").ok().as_deref(), Uuid::new_v4())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut admin = PgConnection::connect(&server.url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test PostgreSQL server ({}): {}",
                server.origin,
                one_line(&e.to_string())
            )
        });
    create_database(&mut admin, &name)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create test database {name} on the test PostgreSQL server ({}): {}",
                server.origin,
                one_line(&e.to_string())
            )
        });
    // Closing politely only saves the server a log line; the database exists either way.
    let _ = admin.close().await;
    if std::env::var_os("DG_TEST_KEEP_DATABASES").is_none_or(|keep| keep.is_empty()) {
        MADE_ON_THIS_THREAD.with(|made| made.borrow_mut().names.push(name.clone()));
    }
    with_database(&server.url, &name)
}

/// `dg_test_<uuid>`, or `dg_test_<run>_<uuid>` when a run names itself; a run mark is
/// 1–22 lowercase letters and digits, so the name stays an identifier PostgreSQL keeps
/// whole (63 bytes) and needs no quoting to be found again.
fn database_name(run: Option<&str>, id: Uuid) -> Result<String, String> {
    match run {
        None | Some("") => Ok(format!("dg_test_{}", id.simple())),
        Some(run)
            if run.len() <= 22
                && run
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            Ok(format!("dg_test_{run}_{}", id.simple()))
        }
        Some(run) => Err(format!(
            "DG_TEST_RUN must be 1-22 lowercase letters and digits, not `{run}`"
        )),
    }
}

thread_local! {
    /// The databases this thread created, dropped when the thread ends.
    static MADE_ON_THIS_THREAD: RefCell<MadeHere> = const { RefCell::new(MadeHere { names: Vec::new() }) };
}

/// Databases to drop when their thread ends.
struct MadeHere {
    names: Vec<String>,
}

impl Drop for MadeHere {
    /// Runs while the thread is being torn down, when its other thread-locals (the tokio
    /// context among them) may already be gone; so the drop is handed to the dropper
    /// thread, and this one only waits on a condition variable, which needs none.
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let names = std::mem::take(&mut self.names);
        let Some(dropper) = DROPPER.get() else { return };
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        {
            let mut queue = dropper.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push((names, done.clone()));
        }
        dropper.wake.notify_one();
        let (finished, signal) = &*done;
        let finished = finished.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a server that stopped answering must not hang the test's exit.
        let _ = signal.wait_timeout_while(finished, DROP_TIMEOUT, |finished| !*finished);
    }
}

/// How long a thread's exit waits for its databases to be dropped.
const DROP_TIMEOUT: Duration = Duration::from_secs(30);

/// A thread of its own, started with the server, that drops the databases of ended threads.
struct Dropper {
    queue: Mutex<Vec<DropJob>>,
    wake: Condvar,
}

/// The databases of one ended thread, and the flag that thread waits on.
type DropJob = (Vec<String>, Arc<(Mutex<bool>, Condvar)>);

static DROPPER: OnceLock<Dropper> = OnceLock::new();

/// Starts the dropper; called once, when the server is chosen.
fn start_dropper(admin_url: String) {
    let dropper = Dropper {
        queue: Mutex::new(Vec::new()),
        wake: Condvar::new(),
    };
    if DROPPER.set(dropper).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("dg-testkit-dropper".to_owned())
        .spawn(move || drop_databases_forever(&admin_url));
    if let Err(e) = spawned {
        panic!("cannot start the thread that drops test databases: {e}");
    }
}

fn drop_databases_forever(admin_url: &str) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("testkit: cannot build a runtime to drop test databases: {e}");
            return;
        }
    };
    let dropper = DROPPER.get().expect("set before this thread started");
    loop {
        let (names, done) = {
            let queue = dropper.queue.lock().unwrap_or_else(|e| e.into_inner());
            let mut queue = dropper
                .wake
                .wait_while(queue, |queue| queue.is_empty())
                .unwrap_or_else(|e| e.into_inner());
            queue.remove(0)
        };
        for name in &names {
            if let Err(e) = runtime.block_on(drop_database(admin_url, name)) {
                // A leftover, not a failure of the test that made it.
                eprintln!("testkit: could not drop test database {name}: {e}");
            }
        }
        let (finished, signal) = &*done;
        *finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        signal.notify_all();
    }
}

/// Drops `name`, ending any session still connected to it (a pool the test leaked).
async fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .map_err(|e| one_line(&e.to_string()))?;
    // `WITH (FORCE)` is PostgreSQL 13+; older servers get their sessions ended first.
    let forced = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
    let result = match sqlx::query(&forced).execute(&mut admin).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42601") => {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(name)
            .execute(&mut admin)
            .await
            .map_err(|e| one_line(&e.to_string()))?;
            sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}""#))
                .execute(&mut admin)
                .await
        }
        other => other,
    };
    let _ = admin.close().await;
    result.map(drop).map_err(|e| one_line(&e.to_string()))
}

/// The URL of the test PostgreSQL server's administrative database, for tests that
/// create several databases themselves.
pub fn postgres_server_url() -> String {
    server().url.clone()
}

/// A `sqlite://<dir>/gate.db` URL in a fresh temp dir; keep the `TempDir` alive while it is used.
///
/// The file does not exist yet: open it with `create_if_missing`, as the code under test must
/// on a first start anyway.
pub fn fresh_sqlite_url() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("dg-sqlite-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for a SQLite test database: {e}"));
    let url = format!("sqlite://{}", dir.path().join("gate.db").display());
    (dir, url)
}

/// Which PostgreSQL server the tests use.
#[derive(Debug, PartialEq, Eq)]
enum ServerChoice {
    /// `DATABASE_URL` names a PostgreSQL server; databases are created through it.
    DatabaseUrl(String),
    /// Something accepts connections on 127.0.0.1:5432; use it as `postgres`, no password.
    Local,
    /// Neither: start a throwaway server from the installed binaries.
    Throwaway,
}

/// Picks the server from `DATABASE_URL` and, only if that does not decide, whether
/// something listens on 127.0.0.1:5432.
fn choose_server(
    database_url: Option<&str>,
    local_server_listens: impl FnOnce() -> bool,
) -> ServerChoice {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            ServerChoice::DatabaseUrl(url.to_owned())
        }
        _ if local_server_listens() => ServerChoice::Local,
        _ => ServerChoice::Throwaway,
    }
}

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let database_url = std::env::var("DATABASE_URL").ok();
        let server = match choose_server(database_url.as_deref(), local_server_listens) {
            ServerChoice::DatabaseUrl(url) => Server {
                url,
                origin: "the server in DATABASE_URL".to_owned(),
                _throwaway: None,
            },
            ServerChoice::Local => Server {
                url: LOCAL_SERVER_URL.to_owned(),
                origin: "127.0.0.1:5432 as user postgres; set DATABASE_URL to use another"
                    .to_owned(),
                _throwaway: None,
            },
            ServerChoice::Throwaway => {
                let throwaway = start_throwaway_server();
                Server {
                    url: throwaway.url.clone(),
                    origin: format!("throwaway server in {}", throwaway.dir.display()),
                    _throwaway: Some(throwaway),
                }
            }
        };
        start_dropper(server.url.clone());
        server
    })
}

fn local_server_listens() -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], 5432));
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}

/// `CREATE DATABASE` copies `template1` and fails while another session is connected to
/// it, which concurrent tests do to each other; the failure is transient, so retry it.
///
/// `query`, not `raw_sql`: the latter makes the caller's future fail to be `Send` (sqlx's
/// `Executor` lifetimes), and tests do spawn `fresh_postgres_database`.
async fn create_database(admin: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    const ATTEMPTS: u32 = 8;
    // A database name cannot be a bind parameter; this one is `dg_test_` and hex digits.
    let statement = format!(r#"CREATE DATABASE "{name}""#);
    let mut attempt = 1;
    loop {
        match sqlx::query(&statement).execute(&mut *admin).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && is_template_busy(&e) => {
                let backoff = Duration::from_millis(50 << attempt.min(5));
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// SQLSTATE 55006 (object_in_use): "source database "template1" is being accessed by other users".
fn is_template_busy(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("55006"))
}

/// `url` with its database (the path) replaced by `database`, keeping any query string
/// (the test harness and the bench's scratch databases both use it).
pub fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = authority_start + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let after_path = url[authority_end..]
        .find(['?', '#'])
        .map_or(url.len(), |i| authority_end + i);
    format!("{}/{database}{}", &url[..authority_end], &url[after_path..])
}

/// A PostgreSQL server started from the locally installed binaries, in its own temp dir,
/// listening on 127.0.0.1 on a free port with `trust` authentication.
///
/// Dropping it stops the server and deletes the dir; if it is never dropped (a static), or
/// the process dies, a watchdog does both once the process that started it has gone.
/// A test may [`stop`](Self::stop) and [`start`](Self::start) it again (same data, same
/// port), and [`start_standby`](Self::start_standby) clones it into a streaming replica.
pub struct ThrowawayServer {
    url: String,
    port: u16,
    /// Holds `data/` (the cluster), the Unix socket and `server.log`.
    dir: PathBuf,
    /// `initdb`, `pg_ctl`, `pg_basebackup`.
    bin: PathBuf,
    /// The unprivileged account that owns `dir`, when we run as root.
    owner: Option<String>,
}

impl ThrowawayServer {
    /// The URL of the server's `postgres` database, as superuser `postgres`, no password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The temp dir holding the cluster, the socket and `server.log`; gone after drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`, as a crash would); its data
    /// stays for [`start`](Self::start). Panics when it cannot be stopped.
    pub fn stop(&self) {
        run(
            self.owner.as_deref(),
            &self.bin.join("pg_ctl"),
            &self.stop_args(),
            &self.dir,
        )
        .unwrap_or_else(|e| panic!("cannot stop the throwaway PostgreSQL: {e}"));
    }

    /// Starts the (stopped) server again on its port and waits until it accepts a
    /// connection. Panics when it does not come up.
    pub fn start(&self) {
        let options = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off",
            shell_quote(&self.dir.to_string_lossy()),
            self.port
        );
        let start = [
            OsString::from("-D"),
            self.data_dir().into_os_string(),
            "-l".into(),
            self.log_path().into_os_string(),
            "-o".into(),
            options.into(),
            "-w".into(),
            "-t".into(),
            READY_TIMEOUT.as_secs().to_string().into(),
            "start".into(),
        ];
        run(
            self.owner.as_deref(),
            &self.bin.join("pg_ctl"),
            &start,
            &self.dir,
        )
        .unwrap_or_else(|e| {
            panic!(
                "pg_ctl start failed for a throwaway PostgreSQL: {e}; server log: {}",
                log_tail(&self.log_path())
            )
        });
        // pg_ctl's own wait is only a hint; a real connection is the proof.
        wait_until_accepting(&self.url, READY_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "throwaway PostgreSQL did not accept connections within {}s: {e}; server log: {}",
                READY_TIMEOUT.as_secs(),
                log_tail(&self.log_path())
            )
        });
    }

    /// A hot standby of this server: a base backup taken over the replication protocol
    /// (`pg_basebackup -R`, so it streams from here), started on a port of its own. It
    /// answers reads once it is consistent; it is a [`ThrowawayServer`] like any other.
    pub fn start_standby(&self) -> ThrowawayServer {
        let standby = ThrowawayServer::prepare(&self.bin, std::process::id());
        let backup = [
            OsString::from("-D"),
            standby.data_dir().into_os_string(),
            "-R".into(),
            "-X".into(),
            "stream".into(),
            "--checkpoint=fast".into(),
            "--no-sync".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string().into(),
            "-U".into(),
            "postgres".into(),
        ];
        run(
            standby.owner.as_deref(),
            &self.bin.join("pg_basebackup"),
            &backup,
            &standby.dir,
        )
        .unwrap_or_else(|e| panic!("pg_basebackup failed for a throwaway standby: {e}"));
        standby.start();
        standby
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn stop_args(&self) -> [OsString; 5] {
        [
            OsString::from("-D"),
            self.data_dir().into_os_string(),
            "-m".into(),
            "immediate".into(),
            "stop".into(),
        ]
    }

    fn stop_argv(&self) -> Vec<OsString> {
        argv_as(
            self.owner.as_deref(),
            &self.bin.join("pg_ctl"),
            &self.stop_args(),
        )
    }

    /// A temp dir owned by the account the server will run as, a free port, and the
    /// watchdog of process `pid`; no cluster yet.
    fn prepare(bin: &Path, pid: u32) -> ThrowawayServer {
        let owner = unprivileged_owner_if_root();
        let dir = tempfile::Builder::new()
            .prefix("dg-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for a throwaway PostgreSQL: {e}"))
            .keep();
        if let Some(owner) = &owner {
            let (uid, gid) = (id(&["-u", owner]), id(&["-g", owner]));
            std::os::unix::fs::chown(&dir, uid, gid)
                .unwrap_or_else(|e| panic!("cannot chown {} to {owner}: {e}", dir.display()));
        }
        let port = free_port();
        // Built before anything can fail, so a panic below drops it and cleans up.
        let server = ThrowawayServer {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            dir,
            bin: bin.to_owned(),
            owner,
        };
        server.spawn_watchdog(pid);
        server
    }
    /// Stops the server and deletes the dir once process `pid` has exited; detached, so it
    /// outlives that process, which never drops a static nor cleans up after a crash.
    fn spawn_watchdog(&self, pid: u32) {
        // Arguments travel as positional parameters, so no path is ever quoted into the
        // script. The loop runs in a background subshell and `sh` returns at once: we reap
        // `sh`, and the orphaned loop is init's to reap, so no zombie is left with us.
        const SCRIPT: &str = r#"pid=$1 dir=$2; shift 2
(while kill -0 "$pid" 2>/dev/null; do sleep 1; done; "$@"; rm -rf "$dir") &"#;
        let status = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("dg-testkit-watchdog")
            .arg(pid.to_string())
            .arg(&self.dir)
            .args(self.stop_argv())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: Ctrl-C or a test runner killing the test's group must
            // not take the cleanup down with it.
            .process_group(0)
            .status();
        if !status.as_ref().is_ok_and(|status| status.success()) {
            panic!("cannot start the throwaway PostgreSQL watchdog: {status:?}");
        }
    }
}

impl Drop for ThrowawayServer {
    fn drop(&mut self) {
        // Failures mean there is nothing left to stop or delete; the watchdog will try again.
        let argv = self.stop_argv();
        let _ = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a throwaway server from `initdb` and `pg_ctl` found on PATH or under
/// `/usr/lib/postgresql/*/bin`, and waits until it accepts a connection.
///
/// As root, the server runs as an unprivileged account (PostgreSQL refuses root). Panics
/// with one line when no binaries are installed or the server does not come up.
pub fn start_throwaway_server() -> ThrowawayServer {
    start_throwaway_server_watched_by(std::process::id())
}

fn start_throwaway_server_watched_by(pid: u32) -> ThrowawayServer {
    let bin = find_postgres_bin_dir().unwrap_or_else(|| panic!("{NO_SERVER}"));
    let server = ThrowawayServer::prepare(&bin, pid);
    let initdb = [
        OsString::from("-D"),
        server.data_dir().into_os_string(),
        "-A".into(),
        "trust".into(),
        "-U".into(),
        "postgres".into(),
        "-E".into(),
        "UTF8".into(),
        // Fixed rather than inherited: containers often name a locale they do not have.
        "--locale=C".into(),
        "--no-sync".into(),
    ];
    run(
        server.owner.as_deref(),
        &bin.join("initdb"),
        &initdb,
        &server.dir,
    )
    .unwrap_or_else(|e| panic!("initdb failed for a throwaway PostgreSQL: {e}"));
    server.start();
    server
}

/// The directory holding `initdb`, `pg_ctl` and `pg_basebackup`: the first such on PATH,
/// else the highest version under `/usr/lib/postgresql`, where Debian installs them off
/// PATH (its wrappers on PATH cover only some of them). Public for tests that run
/// PostgreSQL under another supervisor (`tests/failover.rs`, Patroni's `bin_dir`).
pub fn find_postgres_bin_dir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .chain(versioned_bin_dirs(Path::new("/usr/lib/postgresql")))
        .find(|dir| {
            ["initdb", "pg_ctl", "pg_basebackup"]
                .iter()
                .all(|program| is_executable(&dir.join(program)))
        })
}

/// `<root>/<version>/bin` for every numeric version under `root`, highest version first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(root).into_iter().flatten().flatten();
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `None` unless we run as root; then an account that may run PostgreSQL: `postgres` or
/// `nobody` if they exist, else one created for the purpose.
pub fn unprivileged_owner_if_root() -> Option<String> {
    if id(&["-u"]) != Some(0) {
        return None;
    }
    const CREATED: &str = "dg-testkit";
    if let Some(existing) = ["postgres", "nobody", CREATED]
        .into_iter()
        .find(|user| id(&["-u", user]).is_some())
    {
        return Some(existing.to_owned());
    }
    // Another test process may win the race to create it; only its existence matters.
    let _ = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/bin/false",
            CREATED,
        ])
        .output();
    if id(&["-u", CREATED]).is_none() {
        panic!("running as root, and no unprivileged account to run PostgreSQL as: neither postgres nor nobody exists and useradd {CREATED} failed");
    }
    Some(CREATED.to_owned())
}

/// Runs `id` with `args` and parses the number it prints; `None` when it fails.
fn id(args: &[&str]) -> Option<u32> {
    let output = Command::new("id").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// The argv that runs `program args` as `owner`, or as ourselves when `owner` is `None`.
fn argv_as(owner: Option<&str>, program: &Path, args: &[OsString]) -> Vec<OsString> {
    let Some(owner) = owner else {
        return std::iter::once(program.as_os_str().to_owned())
            .chain(args.iter().cloned())
            .collect();
    };
    if let Some(runuser) = find_program("runuser") {
        return [
            runuser.into_os_string(),
            "-u".into(),
            owner.into(),
            "--".into(),
        ]
        .into_iter()
        .chain(std::iter::once(program.as_os_str().to_owned()))
        .chain(args.iter().cloned())
        .collect();
    }
    // Options before the user name: shadow and busybox su hand later arguments to the shell.
    let command = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|arg| shell_quote(&arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    [
        "su",
        "-s",
        "/bin/sh",
        "-c",
        &format!("exec {command}"),
        owner,
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// `name` on PATH, or in the sbin dirs that a non-login root PATH may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_absolute() && is_executable(candidate))
}

/// Runs `program args` as `owner` in `dir`; on failure, its output folded into one line.
fn run(owner: Option<&str>, program: &Path, args: &[OsString], dir: &Path) -> Result<(), String> {
    let argv = argv_as(owner, program, args);
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        // Our own working directory may be unreadable to the unprivileged owner.
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", display_argv(&argv)))?;
    if output.status.success() {
        return Ok(());
    }
    let printed = [output.stderr, output.stdout]
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .join("\n");
    Err(format!(
        "{} exited with {}: {}",
        display_argv(&argv),
        output.status,
        one_line(&printed)
    ))
}

fn display_argv(argv: &[OsString]) -> String {
    argv.iter()
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Retries a real connection until the server answers or `timeout` passes. It runs on its
/// own thread and runtime because the caller may be inside a test's runtime.
fn wait_until_accepting(url: &str, timeout: Duration) -> Result<(), String> {
    let wait = || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a runtime: {e}"))?;
        runtime.block_on(async {
            let deadline = Instant::now() + timeout;
            loop {
                let attempt =
                    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url));
                let error = match attempt.await {
                    Ok(Ok(connection)) => {
                        let _ = connection.close().await;
                        return Ok(());
                    }
                    Ok(Err(e)) => one_line(&e.to_string()),
                    Err(_) => "connection attempt timed out".to_owned(),
                };
                if Instant::now() >= deadline {
                    return Err(error);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    std::thread::scope(|scope| {
        scope
            .spawn(wait)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A loopback port free right now (for a server a test starts itself).
pub fn free_port() -> u16 {
    // Port 0 makes the kernel pick a free port; another process could take it before the
    // server binds it, a race small enough for tests, and one that fails loudly.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("cannot find a free port for a throwaway PostgreSQL: {e}"))
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    one_line(&lines[lines.len().saturating_sub(3)..].join("\n"))
}

/// Folds `text` into one line: panic messages from this crate stay one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_should_use_a_postgres_database_url_without_probing_the_local_port() {
        let choice = choose_server(Some("postgresql://u:p@db:6543/app"), || {
            panic!("probed the local port")
        });
        assert_eq!(
            choice,
            ServerChoice::DatabaseUrl("postgresql://u:p@db:6543/app".to_owned())
        );
    }

    #[test]
    fn it_should_ignore_a_sqlite_database_url() {
        assert_eq!(
            choose_server(Some("sqlite://gate.db"), || true),
            ServerChoice::Local
        );
    }

    #[test]
    fn it_should_start_a_throwaway_server_when_nothing_else_is_there() {
        assert_eq!(choose_server(None, || false), ServerChoice::Throwaway);
    }

    #[test]
    fn it_should_mark_a_database_name_with_the_run_that_made_it() {
        let id = Uuid::nil();
        assert_eq!(
            database_name(None, id).unwrap(),
            "dg_test_00000000000000000000000000000000"
        );
        let marked = database_name(Some("1733100000p4194304"), id).unwrap();
        assert_eq!(
            marked,
            "dg_test_1733100000p4194304_00000000000000000000000000000000"
        );
        assert!(database_name(Some(&"a".repeat(22)), id).unwrap().len() <= 63);
    }

    #[test]
    fn it_should_refuse_a_run_mark_that_would_not_survive_in_a_name() {
        for bad in ["CI", "run-1", "a b", &"a".repeat(23)] {
            assert!(database_name(Some(bad), Uuid::nil()).is_err(), "{bad}");
        }
    }

    #[test]
    fn it_should_replace_only_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/app?sslmode=disable", "dg_test_1"),
            "postgres://u:p@h:5432/dg_test_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "dg_test_1"),
            "postgres://h/dg_test_1"
        );
        assert_eq!(
            with_database("postgresql://h:1/?application_name=x", "d"),
            "postgresql://h:1/d?application_name=x"
        );
        assert_eq!(
            with_database("postgres:///app?host=/run/postgresql", "d"),
            "postgres:///d?host=/run/postgresql"
        );
    }

    #[test]
    fn it_should_list_versioned_bin_dirs_highest_version_first() {
        let root = tempfile::tempdir().unwrap();
        for name in ["9.6", "15", "16", "common", "10"] {
            std::fs::create_dir(root.path().join(name)).unwrap();
        }
        let dirs = versioned_bin_dirs(root.path());
        let versions: Vec<_> = dirs
            .iter()
            .map(|dir| dir.parent().unwrap().file_name().unwrap().to_owned())
            .collect();
        assert_eq!(versions, ["16", "15", "10", "9.6"]);
        assert!(dirs.iter().all(|dir| dir.ends_with("bin")));
    }

    #[test]
    fn it_should_quote_for_the_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn it_should_run_as_ourselves_without_an_owner() {
        let argv = argv_as(None, Path::new("/bin/pg_ctl"), &["stop".into()]);
        assert_eq!(argv, ["/bin/pg_ctl", "stop"]);
    }

    /// The watchdog is what cleans up after a process that never drops its server; watch a
    /// child instead of ourselves so the test can end it.
    #[tokio::test]
    async fn it_should_stop_and_delete_a_throwaway_server_once_its_process_has_gone() {
        let mut watched = Command::new("sleep").arg("600").spawn().unwrap();
        let server = start_throwaway_server_watched_by(watched.id());
        PgConnection::connect(server.url()).await.unwrap();

        watched.kill().unwrap();
        // Reaped, or `kill -0` would still see it as a zombie.
        watched.wait().unwrap();

        let deadline = Instant::now() + Duration::from_secs(20);
        while server.dir().exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !server.dir().exists(),
            "the watchdog left {:?}",
            server.dir()
        );
        assert!(PgConnection::connect(server.url()).await.is_err());
        // Nothing left for drop to do; it must not mind.
        drop(server);
    }
}
