//! The real listener (hyper, not `oneshot`): the answers the HTTP layer makes
//! itself carry the JSON error body, and a body that does not arrive in time
//! is a 408.

use std::time::Duration;

use dispatch_gate::process::server::{Application, Settings};
use dispatch_gate::web::serve::Limits;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use testkit::app::ADMIN;

async fn serve(limits: Limits) -> (std::net::SocketAddr, tempfile::TempDir) {
    let (dir, url) = testkit::fresh_sqlite_url();
    let settings = Settings {
        database_url: url,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_token: ADMIN.to_owned(),
        max_connections: 4,
        read_database_url: None,
        lease: Duration::from_secs(30),
        worker: None,
        limits,
        demo: false,
        secrets_key: None,
    };
    let application = Application::build(&settings).await.expect("build");
    let address = application.local_addr().unwrap();
    tokio::spawn(application.run_until(std::future::pending()));
    (address, dir)
}

/// Sends raw bytes and reads the answer until the server closes or the
/// answer's declared length has arrived: (status, headers, JSON body).
async fn exchange(address: std::net::SocketAddr, bytes: &[u8]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|l| l.trim().parse::<usize>().ok());
            if length.is_some_and(|l| body.len() >= l) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer");
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    (status, head.to_ascii_lowercase(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_http_layer_makes_itself_carry_the_json_error_body() {
    let (address, _dir) = serve(Limits::default()).await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (status, head, body) = exchange(address, big.as_bytes()).await;
    assert_eq!(status, 431, "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");

    let (status, head, body) = exchange(address, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");

    // The application's own answers pass unchanged.
    let (status, head, body) = exchange(
        address,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body["status"], "ok");
    assert!(head.contains("cache-control: no-store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_a_408_and_nothing_is_written() {
    let (address, _dir) = serve(Limits {
        body_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let partial = format!(
        "POST /v1/admin/workspaces HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n\
         content-type: application/json\r\ncontent-length: 40\r\n\r\n{{\"na"
    );
    let (status, head, body) = exchange(address, partial.as_bytes()).await;
    assert_eq!(status, 408, "{head}");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    let list = format!(
        "GET /readyz HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\nconnection: close\r\n\r\n"
    );
    let (_, _, ready) = exchange(address, list.as_bytes()).await;
    assert_eq!(ready["log_head"], 0, "nothing written: {ready}");
}
