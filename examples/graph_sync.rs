//! Syncs 10,000 groups (100 pages of 100) from the Graph fake through the Graph
//! adapter and prints the time and the process's peak RSS during the sync.
//!
//! ```sh
//! cargo run --release --example graph_sync            # 10000 groups, pages of 100
//! cargo run --release --example graph_sync -- 50000 200
//! ```
//!
//! The fake runs in the same process; its directory is built before the
//! measurement starts, and the peak is reset then (Linux `clear_refs`), so the
//! figure is the fake's resident directory plus what the sync itself holds:
//! one page at a time. Nothing is written to a database here; the worker's
//! integration measures the sync with its rows written.

use std::time::Instant;

use dispatch_gate::provider::graph::{AppCredentials, ClientSecret, GraphClient, GraphConfig};
use testkit::graph_fake::GraphFake;

/// The allocator `dispatch-gate` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let groups: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let page_size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);

    let fake = GraphFake::start().await;
    let credentials = AppCredentials {
        directory_tenant_id: "contoso.onmicrosoft.com".into(),
        client_id: "6731de76-14a6-49ae-97bc-6eba6914391e".into(),
        client_secret: ClientSecret::new("bench-secret"),
    };
    fake.accept_app(
        &credentials.directory_tenant_id,
        &credentials.client_id,
        "bench-secret",
    );
    fake.set_page_size(page_size);
    fake.put_groups(groups);
    let client = GraphClient::new(GraphConfig::new(&fake.base_url(), &fake.authority_url())?)?;

    let before = peak_rss_kib();
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let started = Instant::now();
    let mut delta = client.groups_delta(&credentials, None);
    let (mut pages, mut seen) = (0usize, 0usize);
    while let Some(page) = delta.next_page().await? {
        pages += 1;
        seen += page.changed.len();
    }
    let elapsed = started.elapsed();
    let peak = peak_rss_kib();

    assert_eq!(seen, groups, "every group was read");
    assert!(
        delta.delta_link().is_some(),
        "the sync ended on a delta link"
    );
    println!(
        "graph groups sync: {seen} groups in {pages} pages, {:.3} s ({:.0} groups/s)",
        elapsed.as_secs_f64(),
        seen as f64 / elapsed.as_secs_f64()
    );
    match (peak, peak_reset) {
        (Some(peak), true) => println!(
            "peak RSS during the sync: {:.1} MiB (before it: {:.1} MiB, fake included)",
            peak as f64 / 1024.0,
            before.unwrap_or(0) as f64 / 1024.0
        ),
        (Some(peak), false) => println!(
            "peak RSS of the process: {:.1} MiB (fake and its set-up included)",
            peak as f64 / 1024.0
        ),
        (None, _) => println!("peak RSS: not available on this system"),
    }
    Ok(())
}

/// `VmHWM` from `/proc/self/status`, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
