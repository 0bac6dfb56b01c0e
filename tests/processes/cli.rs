//! The binary from the outside: bad arguments and unreachable databases give
//! one clear error line and a non-zero exit, never a panic.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn dispatcher() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
}

#[test]
fn an_unreachable_database_is_one_clear_error_line() {
    let out = dispatcher()
        .args([
            "migrate",
            "--database-url",
            "postgres://nobody:secret@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: cannot connect to PostgreSQL"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the password is never printed");
    assert!(!stderr.contains("panicked"));
    let refused = "Connection refused (os error 111)";
    assert_eq!(
        stderr.matches(refused).count(),
        1,
        "the cause once: {stderr}"
    );
}

#[test]
fn an_unsupported_database_url_is_refused() {
    let out = dispatcher()
        .args(["migrate", "--database-url", "mysql://x/y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));
}

#[test]
fn bad_arguments_are_refused_by_the_parser() {
    for args in [
        vec!["serve", "--listen", "not-an-address"],
        vec!["serve", "--db-pool", "0"],
        vec!["serve", "--log-format", "xml"],
        vec!["serve", "--provider", "aws"],
        vec!["fly"],
    ] {
        let out = dispatcher().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn a_short_admin_token_is_a_usage_error_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let out = dispatcher()
        .args(["serve", "--admin-token", "short", "--database-url", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: --admin-token must be at least 16 characters (it has 5)\n"
    );
    assert!(!dir.path().join("gate.db").exists());
}

#[test]
fn an_admin_token_file_that_is_missing_or_short_is_a_usage_error_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let short = dir.path().join("short-token");
    std::fs::write(&short, "fifteen-chars-x\n").unwrap();
    let missing = dir.path().join("no-such-token");
    for (file, expected) in [
        (&short, "must be at least 16 characters (it has 15)"),
        (&missing, "cannot read the admin token file"),
    ] {
        let out = dispatcher()
            .args(["serve", "--database-url", &url, "--admin-token-file"])
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{file:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{stderr}"
        );
    }
    assert!(!dir.path().join("gate.db").exists());
}

#[test]
fn an_admin_token_and_a_token_file_together_are_refused_by_the_parser() {
    let out = dispatcher()
        .args(["serve", "--admin-token-file", "/dev/null"])
        .env("GATE_ADMIN_TOKEN", "a-token-of-enough-length")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_help_states_the_admin_token_rules_and_never_shows_its_value() {
    let out = dispatcher()
        .args(["serve", "--help"])
        .env("GATE_ADMIN_TOKEN", "a-secret-admin-token-value")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("at least 16 characters"), "{help}");
    assert!(help.contains("--admin-token-file"), "{help}");
    assert!(!help.contains("a-secret-admin-token-value"), "{help}");
}

/// Started without a token, `serve` prints the one it made on a line of its own; its log,
/// written to a pipe, carries no colour codes.
#[test]
fn serve_prints_a_generated_admin_token_plainly_and_logs_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let mut child = dispatcher()
        .args([
            "serve",
            "--no-worker",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
        ])
        .env_remove("GATE_ADMIN_TOKEN")
        .env_remove("GATE_ADMIN_TOKEN_FILE")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            let listening = line.contains("listening");
            if lines.send(line).is_err() || listening {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    while let Ok(line) = seen.recv_timeout(Duration::from_secs(60)) {
        printed.push(line);
        if printed.last().unwrap().contains("listening") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let all = printed.join("\n");
    assert!(all.contains("listening"), "serve did not start:\n{all}");
    let token = printed
        .iter()
        .find_map(|line| line.strip_prefix("admin token: "))
        .unwrap_or_else(|| panic!("no `admin token: …` line:\n{all}"));
    assert!(token.starts_with("dga_") && token.len() >= 16, "{token}");
    assert!(
        all.contains("GATE_ADMIN_TOKEN"),
        "the log says how to keep one:\n{all}"
    );
    assert!(
        !all.contains('\u{1b}'),
        "colour codes in a piped log:\n{all}"
    );
}

#[test]
fn migrate_creates_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let out = dispatcher()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("gate.db").exists());
    let again = dispatcher()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(again.status.success(), "migrations are idempotent");
}

#[test]
fn projections_rebuild_reports_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let out = dispatcher()
        .args(["projections", "rebuild", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("from 0 events"), "{stdout}");
}

fn event_count(url: &str) -> i64 {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let database = dispatch_gate::write::store::Database::open_existing(url, 1)
            .await
            .unwrap();
        let count = database.count_events().await.unwrap();
        database.close().await;
        count
    })
}

/// `serve --demo` prints its block (console URL, users, tokens, tenants) on stdout once
/// it listens; a second `--demo` on the same store is a usage error that writes nothing.
#[test]
fn serve_demo_prints_its_block_and_refuses_a_store_that_holds_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let args = [
        "serve",
        "--demo",
        "--no-worker",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
    ];
    let mut child = dispatcher()
        .args(args)
        .env_remove("GATE_ADMIN_TOKEN")
        .env_remove("GATE_ADMIN_TOKEN_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rules = 0;
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            rules += usize::from(line.starts_with("====="));
            if lines.send(line).is_err() || rules == 2 {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    while let Ok(line) = seen.recv_timeout(Duration::from_secs(60)) {
        printed.push(line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let all = printed.join("\n");
    let console = printed
        .iter()
        .find_map(|line| line.strip_prefix("Console: http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no console URL:\n{all}"));
    assert!(!console.starts_with("0/"), "the bound port, not 0:\n{all}");
    assert_eq!(all.matches("token: dgu_").count(), 3, "{all}");
    assert_eq!(all.matches("/sign-in#token=dgu_").count(), 3, "{all}");
    for tenant in [
        "Contoso",
        "Fabrikam",
        "Litware",
        "Adatum",
        "Wingtip",
        "Northwind",
        "Tailspin",
    ] {
        assert!(all.contains(tenant), "{tenant} missing:\n{all}");
    }

    let before = event_count(&url);
    assert!(before > 0);
    let out = dispatcher()
        .args(args)
        .env_remove("GATE_ADMIN_TOKEN")
        .env_remove("GATE_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: --demo seeds only an empty store, and this one already holds {before} event(s); nothing was written"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no demo block for a refused store");
    assert_eq!(event_count(&url), before);
}
