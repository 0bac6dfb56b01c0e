//! The statement budget: a loopback proxy between `serve` (or the floor's
//! pool) and PostgreSQL that reads the frontend side of the wire protocol and
//! counts round trips, statements and transactions. It sees what the driver
//! really sends, whatever the code that sends it, so the figures cannot drift
//! from the code. It adds a hop, so it is used in passes of its own, never in
//! a timed one.
//!
//! Protocol: <https://www.postgresql.org/docs/15/protocol-message-formats.html>.
//! A round trip ends at a `Sync` (extended protocol) or with a `Query`
//! (simple protocol); the client waits for `ReadyForQuery` before the next.
//! A transaction is a `BEGIN` … `COMMIT`/`ROLLBACK` block, or one statement
//! run outside such a block (PostgreSQL's implicit transaction).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `SSLRequest` and `GSSENCRequest` codes of a startup packet.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// Whose work a statement is: the request path, or the catch-up projector
/// running beside it in the same pool (its batches, checkpoints and the log
/// head it reads). Told apart by the tables and functions only it uses.
fn is_projector(statement: &str) -> bool {
    [
        "projection_checkpoints",
        "dg_sequence(",
        "MAX(position)",
        "view_",
    ]
    .iter()
    .any(|mark| statement.contains(mark))
}

/// Whether a statement (outside a transaction block) only reads: a `SELECT`
/// that calls none of the log's numbering functions (which write).
fn is_read(statement: &str) -> bool {
    let upper = statement.trim_start().to_ascii_uppercase();
    (upper.starts_with("SELECT") || upper.starts_with("SHOW"))
        && ![
            "DG_POSITION(",
            "DG_SEQUENCE(",
            "INSERT ",
            "UPDATE ",
            "DELETE ",
        ]
        .iter()
        .any(|mark| upper.contains(mark))
}

/// Counts for one side (the request path, or the projector).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Side {
    /// Round trips (a `Sync` or a simple `Query`).
    pub round_trips: u64,
    /// Round trips outside a transaction block that only read.
    pub read_round_trips: u64,
    /// Transactions (blocks, and statements run on their own).
    pub transactions: u64,
    /// Transactions that wrote something.
    pub writing_transactions: u64,
    /// Statements prepared (`Parse`): each is parsed and planned by the
    /// server; the driver caches them per connection, so a steady load
    /// prepares nothing unless its statement texts keep changing.
    pub prepares: u64,
}

/// What the proxy counted since the last [`Counter::take`].
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// The request path (or the floor's inserts).
    pub request: Side,
    /// The catch-up projector beside it.
    pub projector: Side,
    /// Executions per statement text (whitespace collapsed).
    pub statements: HashMap<String, u64>,
}

/// The counts, shared by every proxied connection.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<Mutex<Counted>>);

impl Counter {
    /// Returns what was counted so far and starts again from zero.
    pub fn take(&self) -> Counted {
        std::mem::take(&mut *self.0.lock().expect("counter lock"))
    }
}

/// A counting proxy listening on a loopback port.
pub struct Proxy {
    port: u16,
    counter: Counter,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to the
    /// server `options` names (its host and port, or its Unix socket).
    pub async fn start(options: &PgConnectOptions) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the counting proxy")?;
        let port = listener
            .local_addr()
            .context("reading the proxy's port")?
            .port();
        let upstream = Upstream {
            socket: options.get_socket().map(|path| {
                // sqlx names the socket directory; the file is named by the port.
                if path.is_dir() {
                    path.join(format!(".s.PGSQL.{}", options.get_port()))
                } else {
                    path.to_owned()
                }
            }),
            host: options.get_host().to_owned(),
            port: options.get_port(),
        };
        let counter = Counter::default();
        let shared = counter.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counter) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Err(error) = relay(client, &upstream, counter).await {
                        eprintln!("bench: counting proxy: {error:#}");
                    }
                });
            }
        });
        Ok(Self {
            port,
            counter,
            task,
        })
    }

    /// `url` pointed at the proxy, without TLS (the proxy must read the bytes).
    pub fn url(&self, url: &str) -> String {
        through(url, self.port)
    }

    /// The counts.
    pub fn counter(&self) -> &Counter {
        &self.counter
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the proxy connects.
#[derive(Debug, Clone)]
struct Upstream {
    socket: Option<std::path::PathBuf>,
    host: String,
    port: u16,
}

/// `url` with its authority's host and port replaced by `127.0.0.1:port`,
/// any `host`/`port`/`sslmode` parameters dropped and `sslmode=disable` added.
fn through(url: &str, port: u16) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = scheme_end + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &url[scheme_end..authority_end];
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    let (path, query) = match url[authority_end..].split_once('?') {
        Some((path, query)) => (path, query),
        None => (&url[authority_end..], ""),
    };
    let mut parameters: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            !matches!(name, "host" | "hostaddr" | "port" | "sslmode")
        })
        .collect();
    parameters.push("sslmode=disable");
    format!(
        "{}{userinfo}127.0.0.1:{port}{path}?{}",
        &url[..scheme_end],
        parameters.join("&")
    )
}

async fn relay(mut client: TcpStream, upstream: &Upstream, counter: Counter) -> anyhow::Result<()> {
    client.set_nodelay(true).ok();
    // The startup packet: answer a TLS or GSS request with "no" ourselves.
    let startup = loop {
        let length = client
            .read_u32()
            .await
            .context("reading a startup packet")? as usize;
        anyhow::ensure!(
            (8..=10_000).contains(&length),
            "startup packet of {length} bytes"
        );
        let mut body = vec![0; length - 4];
        client.read_exact(&mut body).await?;
        let code = u32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            client.write_all(b"N").await?;
            continue;
        }
        let mut packet = (length as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        break packet;
    };
    match &upstream.socket {
        Some(path) => {
            let server = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("connecting to {}", path.display()))?;
            pump(client, server, startup, counter).await
        }
        None => {
            let server = TcpStream::connect((upstream.host.as_str(), upstream.port))
                .await
                .with_context(|| format!("connecting to {}:{}", upstream.host, upstream.port))?;
            server.set_nodelay(true).ok();
            pump(client, server, startup, counter).await
        }
    }
}

async fn pump<S>(
    client: TcpStream,
    mut server: S,
    startup: Vec<u8>,
    counter: Counter,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    server.write_all(&startup).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let down =
        tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let mut session = Session::default();
    let mut header = [0u8; 5];
    loop {
        if client_read.read_exact(&mut header).await.is_err() {
            break;
        }
        let length = u32::from_be_bytes(header[1..].try_into().expect("4 bytes")) as usize;
        anyhow::ensure!(length >= 4, "message of length {length}");
        let mut body = vec![0; length - 4];
        client_read.read_exact(&mut body).await?;
        // Counted before it is sent: the answer, and so the client's next
        // message, cannot come before.
        session.message(header[0], &body, &counter);
        server_write.write_all(&header).await?;
        server_write.write_all(&body).await?;
    }
    down.abort();
    Ok(())
}

/// One connection's protocol state.
#[derive(Debug, Default)]
struct Session {
    /// Prepared statements by name ("" is the unnamed one).
    prepared: HashMap<String, String>,
    /// The statement the last `Bind` bound.
    bound: String,
    /// The `BEGIN` block open on the connection.
    block: Option<Block>,
    /// A block that ended in the current round trip: whose it was, and its
    /// earlier round trips (counted once it is known whose they are).
    ended: Option<(bool, u64)>,
    /// Statements in the current round trip.
    trip_statements: u64,
    /// Whether they all only read (outside a block).
    trip_reads: bool,
    /// Whether any was the projector's.
    trip_projector: bool,
}

/// An open `BEGIN` block.
#[derive(Debug, Default, Clone, Copy)]
struct Block {
    wrote: bool,
    projector: bool,
    /// Round trips so far.
    trips: u64,
}

/// The NUL-terminated string at the start of `bytes`, and what follows it.
fn cstring(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let rest = bytes.get(end + 1..).unwrap_or(&[]);
    (String::from_utf8_lossy(&bytes[..end]).into_owned(), rest)
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn side(counted: &mut Counted, projector: bool) -> &mut Side {
    if projector {
        &mut counted.projector
    } else {
        &mut counted.request
    }
}

impl Session {
    fn message(&mut self, kind: u8, body: &[u8], counter: &Counter) {
        match kind {
            b'P' => {
                let (name, rest) = cstring(body);
                let (query, _) = cstring(rest);
                let query = collapse(&query);
                let mut counted = counter.0.lock().expect("counter lock");
                side(&mut counted, is_projector(&query)).prepares += 1;
                self.prepared.insert(name, query);
            }
            b'B' => {
                let (_portal, rest) = cstring(body);
                let (statement, _) = cstring(rest);
                self.bound = self.prepared.get(&statement).cloned().unwrap_or_default();
            }
            b'E' => {
                let statement = self.bound.clone();
                self.statement(&statement, counter);
            }
            b'S' => self.end_trip(counter),
            b'Q' => {
                let (query, _) = cstring(body);
                self.statement(&collapse(&query), counter);
                self.end_trip(counter);
            }
            _ => {}
        }
    }

    fn statement(&mut self, text: &str, counter: &Counter) {
        let mut counted = counter.0.lock().expect("counter lock");
        *counted.statements.entry(text.to_owned()).or_insert(0) += 1;
        if self.trip_statements == 0 {
            self.trip_reads = true;
        }
        self.trip_statements += 1;
        let upper = text.trim_start().to_ascii_uppercase();
        let projector = is_projector(text);
        self.trip_projector |= projector;
        if upper.starts_with("BEGIN") || upper.starts_with("START TRANSACTION") {
            self.block = Some(Block::default());
            self.trip_reads = false;
        } else if ["COMMIT", "END", "ROLLBACK", "ABORT"]
            .iter()
            .any(|word| upper.starts_with(word))
        {
            self.trip_reads = false;
            if let Some(block) = self.block.take() {
                let projector = block.projector || self.trip_projector;
                let side = side(&mut counted, projector);
                side.transactions += 1;
                side.writing_transactions += u64::from(block.wrote);
                self.ended = Some((projector, block.trips));
            }
        } else if let Some(block) = &mut self.block {
            block.wrote |= !is_read(text);
            block.projector |= projector;
            self.trip_reads = false;
        } else {
            let read = is_read(text);
            self.trip_reads &= read;
            let side = side(&mut counted, projector);
            side.transactions += 1;
            side.writing_transactions += u64::from(!read);
        }
    }

    fn end_trip(&mut self, counter: &Counter) {
        let mut counted = counter.0.lock().expect("counter lock");
        if let Some(block) = &mut self.block {
            block.trips += 1;
            block.projector |= self.trip_projector;
        } else if let Some((projector, earlier)) = self.ended.take() {
            side(&mut counted, projector).round_trips += earlier + 1;
        } else {
            let side = side(&mut counted, self.trip_projector);
            side.round_trips += 1;
            side.read_round_trips += u64::from(self.trip_statements > 0 && self.trip_reads);
        }
        self.trip_statements = 0;
        self.trip_reads = true;
        self.trip_projector = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, parts: &[&str]) -> (u8, Vec<u8>) {
        let mut body = Vec::new();
        for part in parts {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
        (kind, body)
    }

    fn run(messages: &[(u8, Vec<u8>)]) -> Counted {
        let counter = Counter::default();
        let mut session = Session::default();
        for (kind, body) in messages {
            session.message(*kind, body, &counter);
        }
        counter.take()
    }

    #[test]
    fn a_transaction_block_of_three_round_trips_is_one_writing_transaction() {
        let counted = run(&[
            message(b'Q', &["BEGIN"]),
            message(b'P', &["s1", "INSERT INTO events VALUES ($1)"]),
            message(b'B', &["", "s1"]),
            message(b'E', &["", ""]),
            message(b'S', &[]),
            message(b'Q', &["COMMIT"]),
        ]);
        assert_eq!(
            counted.request,
            Side {
                round_trips: 3,
                read_round_trips: 0,
                transactions: 1,
                writing_transactions: 1,
                prepares: 1,
            }
        );
        assert_eq!(counted.statements["INSERT INTO events VALUES ($1)"], 1);
    }

    #[test]
    fn a_select_on_its_own_is_a_read_round_trip_and_a_numbering_call_is_a_write() {
        let counted = run(&[
            message(
                b'P',
                &["s1", "SELECT COALESCE(MAX(sequence), 0) FROM events"],
            ),
            message(b'B', &["", "s1"]),
            message(b'E', &["", ""]),
            message(b'S', &[]),
            message(b'P', &["s2", "SELECT dg_position($1, $2, $3)"]),
            message(b'B', &["", "s2"]),
            message(b'E', &["", ""]),
            message(b'S', &[]),
        ]);
        assert_eq!(counted.request.round_trips, 2);
        assert_eq!(counted.request.read_round_trips, 1);
        assert_eq!(counted.request.transactions, 2);
        assert_eq!(counted.request.writing_transactions, 1);
    }

    #[test]
    fn the_projectors_block_is_counted_on_its_own_side() {
        let counted = run(&[
            message(b'Q', &["BEGIN"]),
            message(
                b'P',
                &["s1", "INSERT INTO projection_checkpoints VALUES ($1)"],
            ),
            message(b'B', &["", "s1"]),
            message(b'E', &["", ""]),
            message(b'S', &[]),
            message(b'Q', &["COMMIT"]),
        ]);
        assert_eq!(counted.request, Side::default());
        assert_eq!(counted.projector.transactions, 1);
        // BEGIN's round trip too, though nothing said whose block it was yet.
        assert_eq!(counted.projector.round_trips, 3);
    }

    #[test]
    fn the_proxy_url_keeps_the_credentials_and_database_and_turns_tls_off() {
        assert_eq!(
            through(
                "postgres://app:pw@db.example:6432/gate?sslmode=require&application_name=x",
                7000
            ),
            "postgres://app:pw@127.0.0.1:7000/gate?application_name=x&sslmode=disable"
        );
        assert_eq!(
            through("postgres://postgres@127.0.0.1:5432/dg_bench_1", 7000),
            "postgres://postgres@127.0.0.1:7000/dg_bench_1?sslmode=disable"
        );
    }
}
