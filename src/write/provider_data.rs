//! What the syncs found, kept beside the event log (never in it): one row per
//! provider object of a tenant (`provider_objects`), where each tenant's next
//! delta sync resumes (`provider_delta_links`), and what each inventory sync
//! saw (`provider_snapshots`, `provider_snapshot_objects`, the contents once
//! each in `provider_contents`), which a restore names. The worker writes them;
//! a sync's completion event carries [`snapshot_hash`] (or, for a sync that
//! keeps a snapshot, [`run_snapshot_hash`]) of what it left, so an auditor can
//! tie the two.

use anyhow::Context;
use sha2::{Digest, Sha256};

use aggregates::catalog::ItemKind;
use aggregates::execution::ItemCounts;
use aggregates::ids::{RunId, TenantId};
use aggregates::values::ContentHash;
use aggregates::Timestamp;

use crate::write::store::{on_pool, Database};

/// One object as a sync read it.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    /// The provider's id.
    pub external_id: String,
    /// Its display name, when the answer had one.
    pub display_name: Option<String>,
    /// When the provider last modified it (RFC 3339), when known.
    pub modified_at: Option<String>,
    /// The whole object as the provider sent it (JSON text).
    pub content: String,
}

/// How a sync's answer covers the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Every object there is: any object not in it was removed.
    Full,
    /// Only the changes since the last sync (a delta).
    Changes,
}

/// Objects written per statement (10 parameters each: well under either
/// backend's limit on parameters).
const BATCH: usize = 500;

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether a sync keeps what it saw as a snapshot a restore can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Only the latest state (`provider_objects`).
    Latest,
    /// Also the run's snapshot: every object of the (full) answer.
    Snapshot,
}

/// Records what one sync of `kind` read: new objects are added, objects with
/// other content changed, and — on a full answer — every object not seen
/// removed; `removed` names objects a delta reported gone. With
/// [`Keep::Snapshot`] (a full answer only) the answer is also kept as the
/// run's snapshot of `kind`, replacing one an earlier attempt of the run left.
/// One transaction.
#[allow(clippy::too_many_arguments)] // one sync's facts, each needed once
pub async fn record_sync(
    database: &Database,
    tenant_id: TenantId,
    kind: ItemKind,
    run_id: RunId,
    at: Timestamp,
    coverage: Coverage,
    keep: Keep,
    objects: &[ObjectRow],
    removed: &[String],
) -> anyhow::Result<ItemCounts> {
    anyhow::ensure!(
        keep == Keep::Latest || coverage == Coverage::Full,
        "a snapshot is kept only of a full answer"
    );
    let tenant = tenant_id.to_string();
    let kind = kind.as_str();
    let run = run_id.to_string();
    let at = projections::time(&at);
    // SQLite: the write lock first (IMMEDIATE), since the reads below would
    // otherwise have to upgrade their lock, which SQLite refuses under load.
    let begin = match database.backend() {
        crate::write::store::Backend::Sqlite => "BEGIN IMMEDIATE",
        crate::write::store::Backend::Postgres => "BEGIN",
    };
    on_pool!(database, |pool| {
        let mut tx = pool
            .begin_with(begin)
            .await
            .context("starting a sync's write")?;
        let mut counts = ItemCounts::default();
        // What the tenant held of this kind, in one read: ten thousand
        // objects are two round trips per batch, not two per object.
        let before: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT external_id, content_hash, removed_at FROM provider_objects \
             WHERE tenant_id = $1 AND kind = $2",
        )
        .bind(&tenant)
        .bind(kind)
        .fetch_all(&mut *tx)
        .await
        .context("reading the synced objects")?;
        let before: std::collections::HashMap<String, (String, bool)> = before
            .into_iter()
            .map(|(id, hash, removed_at)| (id, (hash, removed_at.is_some())))
            .collect();
        let hashed: Vec<(&ObjectRow, String)> = objects
            .iter()
            .map(|object| (object, hex_sha256(object.content.as_bytes())))
            .collect();
        for (object, hash) in &hashed {
            match before.get(&object.external_id) {
                None | Some((_, true)) => counts.added += 1,
                Some((old, false)) if old != hash => counts.changed += 1,
                Some(_) => {}
            }
        }
        for batch in hashed.chunks(BATCH) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO provider_objects (tenant_id, kind, external_id, display_name, \
                 modified_at, content, content_hash, first_seen_run, last_seen_run, changed_at) ",
            );
            insert.push_values(batch, |mut row, (object, hash)| {
                row.push_bind(&tenant)
                    .push_bind(kind)
                    .push_bind(&object.external_id)
                    .push_bind(&object.display_name)
                    .push_bind(&object.modified_at)
                    .push_bind(&object.content)
                    .push_bind(hash)
                    .push_bind(&run)
                    .push_bind(&run)
                    .push_bind(&at);
            });
            // `changed_at` moves only when the object is new, back or changed:
            // the inventory lists newest change first.
            insert.push(
                " ON CONFLICT (tenant_id, kind, external_id) DO UPDATE SET \
                 display_name = COALESCE(excluded.display_name, provider_objects.display_name), \
                 modified_at = COALESCE(excluded.modified_at, provider_objects.modified_at), \
                 changed_at = CASE WHEN provider_objects.removed_at IS NOT NULL \
                 OR provider_objects.content_hash <> excluded.content_hash \
                 THEN excluded.changed_at ELSE provider_objects.changed_at END, \
                 content = excluded.content, content_hash = excluded.content_hash, \
                 last_seen_run = excluded.last_seen_run, removed_at = NULL",
            );
            insert
                .build()
                .execute(&mut *tx)
                .await
                .context("writing synced objects")?;
        }
        if coverage == Coverage::Full {
            counts.removed += sqlx::query(
                "UPDATE provider_objects SET removed_at = $1, changed_at = $1 \
                 WHERE tenant_id = $2 AND kind = $3 AND removed_at IS NULL \
                 AND last_seen_run <> $4",
            )
            .bind(&at)
            .bind(&tenant)
            .bind(kind)
            .bind(&run)
            .execute(&mut *tx)
            .await
            .context("marking unseen objects removed")?
            .rows_affected();
        }
        for external_id in removed {
            counts.removed += sqlx::query(
                "UPDATE provider_objects SET removed_at = $1, changed_at = $1, \
                 last_seen_run = $2 \
                 WHERE tenant_id = $3 AND kind = $4 AND external_id = $5 AND removed_at IS NULL",
            )
            .bind(&at)
            .bind(&run)
            .bind(&tenant)
            .bind(kind)
            .bind(external_id)
            .execute(&mut *tx)
            .await
            .context("marking an object removed")?
            .rows_affected();
        }
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM provider_objects \
             WHERE tenant_id = $1 AND kind = $2 AND removed_at IS NULL",
        )
        .bind(&tenant)
        .bind(kind)
        .fetch_one(&mut *tx)
        .await
        .context("counting synced objects")?;
        counts.total = u64::try_from(total).unwrap_or_default();
        if keep == Keep::Snapshot {
            // One row per id (the last one read, as in `provider_objects`).
            let mut unique: std::collections::BTreeMap<&str, (&ObjectRow, &str)> =
                std::collections::BTreeMap::new();
            for (object, hash) in &hashed {
                unique.insert(object.external_id.as_str(), (*object, hash.as_str()));
            }
            sqlx::query("DELETE FROM provider_snapshot_objects WHERE run_id = $1 AND kind = $2")
                .bind(&run)
                .bind(kind)
                .execute(&mut *tx)
                .await
                .context("clearing an earlier attempt's snapshot")?;
            sqlx::query(
                "INSERT INTO provider_snapshots (run_id, tenant_id, kind, objects, taken_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id, kind) DO UPDATE SET \
                 objects = excluded.objects, taken_at = excluded.taken_at",
            )
            .bind(&run)
            .bind(&tenant)
            .bind(kind)
            .bind(i64::try_from(unique.len()).unwrap_or(i64::MAX))
            .bind(&at)
            .execute(&mut *tx)
            .await
            .context("recording a snapshot")?;
            let rows: Vec<(&ObjectRow, &str)> = unique.into_values().collect();
            let mut contents: Vec<(&str, &str)> = rows
                .iter()
                .map(|(object, hash)| (*hash, object.content.as_str()))
                .collect();
            contents.sort_unstable_by_key(|(hash, _)| *hash);
            contents.dedup_by_key(|(hash, _)| *hash);
            for batch in contents.chunks(BATCH) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO provider_contents (content_hash, content) ",
                );
                insert.push_values(batch, |mut row, (hash, content)| {
                    row.push_bind(*hash).push_bind(*content);
                });
                insert.push(" ON CONFLICT (content_hash) DO NOTHING");
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .context("keeping a snapshot's contents")?;
            }
            for batch in rows.chunks(BATCH) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO provider_snapshot_objects \
                     (run_id, kind, external_id, display_name, content_hash) ",
                );
                insert.push_values(batch, |mut row, (object, hash)| {
                    row.push_bind(&run)
                        .push_bind(kind)
                        .push_bind(&object.external_id)
                        .push_bind(&object.display_name)
                        .push_bind(*hash);
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .context("keeping a snapshot's objects")?;
            }
        }
        tx.commit().await.context("committing a sync's write")?;
        Ok(counts)
    })
}

/// The hash of the lines `kind\tid\tcontent hash\n`, `kinds` in the order
/// given and ids in byte order within each: the snapshot hash's formula.
pub fn hash_lines(kinds: &[ItemKind], rows: &[(ItemKind, String, String)]) -> ContentHash {
    let mut hasher = Sha256::new();
    for kind in kinds {
        let mut lines: Vec<(&str, &str)> = rows
            .iter()
            .filter(|(k, _, _)| k == kind)
            .map(|(_, id, hash)| (id.as_str(), hash.as_str()))
            .collect();
        lines.sort_unstable();
        for (external_id, hash) in lines {
            hasher.update(format!("{}\t{external_id}\t{hash}\n", kind.as_str()).as_bytes());
        }
    }
    ContentHash::parse(&hex::encode(hasher.finalize())).expect("a SHA-256 is 64 hex digits")
}

/// The hash of the snapshot a run kept of `kinds` (see [`hash_lines`]).
pub async fn run_snapshot_hash(
    database: &Database,
    run_id: RunId,
    kinds: &[ItemKind],
) -> anyhow::Result<ContentHash> {
    let rows: Vec<(String, String, String)> = on_pool!(database, |pool| {
        sqlx::query_as(
        "SELECT kind, external_id, content_hash FROM provider_snapshot_objects WHERE run_id = $1"
    )
    .bind(run_id.to_string())
    .fetch_all(pool)
    .await
    .context("reading a run's snapshot")?
    });
    let rows: Vec<(ItemKind, String, String)> = rows
        .into_iter()
        .filter_map(|(kind, id, hash)| Some((kind.parse().ok()?, id, hash)))
        .collect();
    Ok(hash_lines(kinds, &rows))
}

/// The SHA-256 of what a tenant holds of `kinds` now: every present object's
/// kind, id and content hash, one line each, in (kind, id) order.
pub async fn snapshot_hash(
    database: &Database,
    tenant_id: TenantId,
    kinds: &[ItemKind],
) -> anyhow::Result<ContentHash> {
    let mut hasher = Sha256::new();
    for kind in kinds {
        let mut rows: Vec<(String, String)> = on_pool!(database, |pool| sqlx::query_as(
            "SELECT external_id, content_hash FROM provider_objects \
             WHERE tenant_id = $1 AND kind = $2 AND removed_at IS NULL"
        )
        .bind(tenant_id.to_string())
        .bind(kind.as_str())
        .fetch_all(pool)
        .await
        .context("reading a snapshot's objects")?);
        // Byte order, whatever the database's collation (PostgreSQL's follows
        // its locale): the hash is the same on every store.
        rows.sort_unstable();
        for (external_id, hash) in rows {
            hasher.update(format!("{}\t{external_id}\t{hash}\n", kind.as_str()).as_bytes());
        }
    }
    ContentHash::parse(&hex::encode(hasher.finalize()))
        .map_err(|e| anyhow::anyhow!("a snapshot hash: {e}"))
}

/// Where the tenant's next delta sync of `kind` resumes, if one is stored.
pub async fn delta_link(
    database: &Database,
    tenant_id: TenantId,
    kind: ItemKind,
) -> anyhow::Result<Option<String>> {
    Ok(on_pool!(database, |pool| sqlx::query_scalar(
        "SELECT link FROM provider_delta_links WHERE tenant_id = $1 AND kind = $2"
    )
    .bind(tenant_id.to_string())
    .bind(kind.as_str())
    .fetch_optional(pool)
    .await
    .context("reading a delta link")?))
}

/// Stores where the tenant's next delta sync of `kind` resumes.
pub async fn store_delta_link(
    database: &Database,
    tenant_id: TenantId,
    kind: ItemKind,
    run_id: RunId,
    link: &str,
) -> anyhow::Result<()> {
    on_pool!(database, |pool| {
        sqlx::query(
        "INSERT INTO provider_delta_links (tenant_id, kind, link, run_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, kind) DO UPDATE SET link = excluded.link, run_id = excluded.run_id"
    )
    .bind(tenant_id.to_string())
    .bind(kind.as_str())
    .bind(link)
    .bind(run_id.to_string())
    .execute(pool)
    .await
    .context("storing a delta link")
    .map(drop)
    })?;
    Ok(())
}

/// One row of a tenant's inventory.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InventoryRow {
    /// `group`, `role_definition`, `device_configuration`, `compliance_policy`.
    pub kind: String,
    /// The provider's id.
    pub external_id: String,
    /// Display name, if known.
    pub display_name: Option<String>,
    /// When the provider last modified it.
    pub modified_at: Option<String>,
    /// The run that first found it.
    pub first_seen_run: String,
    /// The run that last found it (or found it gone).
    pub last_seen_run: String,
    /// When a sync found it gone.
    pub removed_at: Option<String>,
    /// When a sync last found it new, changed or gone: the list's order.
    pub changed_at: String,
}

/// Up to `limit` rows of a tenant's inventory from `offset`, newest change
/// first (ties in kind and id order, so pages do not overlap while nothing changes).
pub async fn inventory(
    database: &Database,
    tenant_id: TenantId,
    kind: Option<ItemKind>,
    offset: i64,
    limit: i64,
) -> anyhow::Result<Vec<InventoryRow>> {
    let sql = "SELECT kind, external_id, display_name, modified_at, first_seen_run, \
               last_seen_run, removed_at, changed_at FROM provider_objects \
               WHERE tenant_id = $1 AND ($2 = '' OR kind = $2) \
               ORDER BY changed_at DESC, kind, external_id LIMIT $3 OFFSET $4";
    Ok(on_pool!(database, |pool| sqlx::query_as(sql)
        .bind(tenant_id.to_string())
        .bind(kind.map(ItemKind::as_str).unwrap_or_default())
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await
        .context("reading a tenant's inventory")?))
}

/// What the last sync of each kind left for a tenant: (kind, the run, present
/// objects, removed ones).
pub async fn inventory_summary(
    database: &Database,
    tenant_id: TenantId,
) -> anyhow::Result<Vec<(String, i64, i64)>> {
    Ok(on_pool!(database, |pool| sqlx::query_as(
        "SELECT kind, SUM(CASE WHEN removed_at IS NULL THEN 1 ELSE 0 END), \
         SUM(CASE WHEN removed_at IS NULL THEN 0 ELSE 1 END) \
         FROM provider_objects WHERE tenant_id = $1 GROUP BY kind ORDER BY kind"
    )
    .bind(tenant_id.to_string())
    .fetch_all(pool)
    .await
    .context("summarising a tenant's inventory")?))
}
