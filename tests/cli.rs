//! The binary from the outside: bad arguments and unreachable databases give
//! one clear error line and a non-zero exit, never a panic.

use std::process::Command;

fn gate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
}

#[test]
fn an_unreachable_database_is_one_clear_error_line() {
    let out = gate()
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
}

#[test]
fn an_unsupported_database_url_is_refused() {
    let out = gate()
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
        vec!["fly"],
    ] {
        let out = gate().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn a_short_admin_token_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let out = gate()
        .args(["serve", "--admin-token", "short", "--database-url", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-token"));
    assert!(!dir.path().join("gate.db").exists());
}

#[test]
fn migrate_creates_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let out = gate()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("gate.db").exists());
    let again = gate()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(again.status.success(), "migrations are idempotent");
}

#[test]
fn projections_rebuild_reports_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/gate.db", dir.path().display());
    let out = gate()
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
