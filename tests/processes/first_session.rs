//! The README's first session is `examples/first-session.sh`; run it against this
//! build's binary on SQLite, so the README can never rot.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// The script's tools; missing ones fail the test with what to install (it never skips).
fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "examples/first-session.sh needs {tool} on PATH (Debian: apt-get install {tool}; .ci/run installs it)"
    );
}

#[test]
fn the_first_session_reaches_every_outcome_and_the_audit_re_derives_it() {
    for tool in ["bash", "curl", "jq"] {
        require(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    // The port is free when asked; another process could take it before the server binds
    // it, a race small enough for a test, and one the script reports loudly.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("examples/first-session.sh"))
        .current_dir(tmp.path())
        .env("DISPATCH_GATE", env!("CARGO_BIN_EXE_dispatch-gate"))
        .env("FIRST_SESSION_ADDR", addr.to_string())
        .env("TMPDIR", tmp.path())
        .env_remove("DATABASE_URL")
        .env_remove("GATE_ADMIN_TOKEN")
        .env_remove("GATE_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    let outcomes: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("outcome: "))
        .map(|rest| rest.split(" (HTTP ").next().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["blocked", "accepted", "deduped", "scope_busy", "accepted"],
        "{stdout}"
    );
    for status in ["(HTTP 422)", "(HTTP 202)", "(HTTP 200)", "(HTTP 409)"] {
        assert!(stdout.contains(status), "{status} missing:\n{stdout}");
    }
    assert!(
        stdout.contains("reason: provider.consent.missing"),
        "{stdout}"
    );
    assert!(
        stdout.contains(": succeeded, 1 deduped start(s) joined it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5 decision(s) in 13 event(s) of 2 stream(s): 5 identical, 0 diverging"),
        "{stdout}"
    );
}

#[test]
fn the_readme_runs_the_first_session_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("examples/first-session.sh"));
    assert!(
        !readme.contains("../shared"),
        "the README must not point outside the repository"
    );
}
