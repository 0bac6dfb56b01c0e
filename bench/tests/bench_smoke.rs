//! `dispatch-gate-bench --smoke` on both backends, so the bench cannot rot;
//! and its bad input. No test here asserts a time.
//!
//! `http-spread` serves with the `dispatch-gate` binary beside the bench's
//! (the default of `--gate-binary`): `cargo nextest run --workspace` builds
//! both into the same `target/debug/`.

use std::process::{Command, Output};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dispatch-gate-bench"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every row of the table a smoke run prints, by scenario name.
const ROWS: &[&str] = &[
    "floor",
    "naive",
    "gate-spread",
    "gate-hot",
    "gate-hot-2",
    "history-10-cold",
    "history-10-warm",
    "history-100-cold",
    "history-100-warm",
    "http-spread",
    "catch-up",
    "rebuild",
    "sustained",
];

fn assert_table(out: &Output) {
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    for name in ROWS {
        let row = rows
            .iter()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` row in:\n{stdout}"));
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert!(columns.len() >= 6, "{row}");
        assert!(columns[2].parse::<u64>().unwrap() > 0, "operations: {row}");
        assert!(
            columns[3].parse::<f64>().unwrap() > 0.0,
            "throughput: {row}"
        );
    }
    // Floor and naive run once per client count (1 and 4 in a smoke run).
    for name in ["floor", "naive", "gate-spread", "gate-hot", "http-spread"] {
        let count = rows
            .iter()
            .filter(|line| line.split_whitespace().next() == Some(name))
            .count();
        assert_eq!(count, 2, "{name} rows in:\n{stdout}");
    }
    // Two executors racing on one connection need two clients at least.
    let racing = rows
        .iter()
        .filter(|line| line.split_whitespace().next() == Some("gate-hot-2"))
        .count();
    assert_eq!(racing, 1, "gate-hot-2 rows in:\n{stdout}");
    assert!(stdout.contains("serve peak RSS"), "{stdout}");
    assert!(stdout.contains("projection lag p50"), "{stdout}");
    assert!(stdout.contains("catch-up ≥ 0.5× rebuild"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_smoke_run_on_sqlite_prints_every_row() {
    let out = bench().arg("--smoke").output().unwrap();
    assert_table(&out);
    assert!(text(&out.stdout).contains("SQLite"));
}

#[test]
fn a_smoke_run_on_postgres_prints_every_row_and_drops_its_databases() {
    let server = testkit::postgres_server_url();
    let out = bench()
        .args(["--smoke", "--database-url", &server])
        .output()
        .unwrap();
    assert_table(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("PostgreSQL"));
    // The statement budget, counted on the wire, beside the floor's: one
    // line per client count, and the statements the starts ran.
    for clients in ["1 clients", "4 clients"] {
        assert!(
            stdout.lines().any(|l| l.starts_with("budget http-spread")
                && l.contains(clients)
                && l.contains("round trips")),
            "no budget of http-spread at {clients} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("budget floor"), "{stdout}");
    assert!(stdout.contains("CALL dg_append"), "{stdout}");
    let stderr = text(&out.stderr);
    let created: Vec<&str> = stderr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("dg_bench_"))
        .collect();
    assert!(!created.is_empty(), "{stderr}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let remaining: Vec<String> = runtime.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'dg\\_bench\\_%'")
            .fetch_all(&mut admin)
            .await
            .unwrap()
    });
    for name in created {
        assert!(
            !remaining.iter().any(|r| r == name),
            "{name} was left behind"
        );
    }
}

#[test]
fn bad_bench_arguments_are_refused_by_the_parser() {
    for args in [
        vec!["--clients", "0"],
        vec!["--clients", "1,x"],
        vec!["--scenarios", "floor,warp"],
        vec!["--ops", "0"],
        vec!["--pool", "0"],
        vec!["--history", "2"],
    ] {
        let out = bench().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!text(&out.stderr).contains("panicked"), "{args:?}");
    }
}

#[test]
fn the_bench_never_opens_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.db");
    let url = format!("sqlite://{}", file.display());
    for bad in [
        url.as_str(),
        "mysql://x/y",
        "postgres://nobody:secret@127.0.0.1:1/x",
    ] {
        let out = bench()
            .args(["--smoke", "--database-url", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
    assert!(!file.exists(), "the SQLite file named was not created");
}

#[test]
fn a_missing_gate_binary_is_named_before_anything_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dispatch-gate");
    let out = bench()
        .args(["--smoke", "--scenarios", "floor,http", "--gate-binary"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("no-such-dispatch-gate"), "{stderr}");
    assert!(stderr.contains("--gate-binary"), "{stderr}");
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
}

/// The large-sync bench, small: a sync through the Graph fake writes a row per
/// group on each store and prints its figures beside the fetch-only baseline.
#[test]
fn the_graph_sync_bench_writes_a_row_per_group_on_both_stores() {
    for url in ["sqlite".to_owned(), testkit::postgres_server_url()] {
        let out = Command::new(env!("CARGO_BIN_EXE_graph-sync"))
            .args([
                "--database-url",
                &url,
                "--groups",
                "250",
                "--page-size",
                "100",
            ])
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("250 groups in 3 pages"), "{stdout}");
        assert!(stdout.contains("the run: 250 rows written"), "{stdout}");
        assert!(stdout.contains("peak resident memory"), "{stdout}");
    }
}

#[test]
fn the_graph_sync_bench_refuses_bad_arguments() {
    for args in [
        &["--groups", "0"][..],
        &["--page-size", "1000"],
        &["--database-url", "sqlite://x.db"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_graph-sync"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!text(&out.stderr).contains("panicked"), "{args:?}");
    }
}
