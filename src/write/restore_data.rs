//! Restores from a snapshot, beside the event log (never in it, like
//! [`super::provider_data`]): what an inventory sync kept as its snapshot, the
//! objects restores created again in place of a snapshot's, each restore
//! run's preview object by object, and what an execution did with each object.
//! The log keeps the decisions and the counts; the objects are provider data.

use anyhow::Context;

use aggregates::catalog::{ItemKind, ObjectOutcome, RestoreAction};
use aggregates::ids::{RestoreRunId, RunId, TenantId};
use aggregates::restore::{LeftAlone, Object, Plan, Planned, Replacements};

use crate::write::store::{on_pool, Database};

/// Rows written per statement (at most 12 parameters each: well under either
/// backend's limit on parameters).
const BATCH: usize = 500;

/// What a run kept as its snapshot, per kind: (kind, tenant, objects).
pub async fn snapshot_kinds(
    database: &Database,
    run_id: RunId,
) -> anyhow::Result<Vec<(String, String, i64)>> {
    Ok(on_pool!(database, |pool| sqlx::query_as(
        "SELECT kind, tenant_id, objects FROM provider_snapshots WHERE run_id = $1 ORDER BY kind"
    )
    .bind(run_id.to_string())
    .fetch_all(pool)
    .await
    .context("reading a run's snapshot kinds")?))
}

fn object(
    kind: &str,
    external_id: String,
    display_name: Option<String>,
    content: &str,
) -> anyhow::Result<Object> {
    Ok(Object {
        kind: kind
            .parse()
            .map_err(|e| anyhow::anyhow!("a stored object's kind: {e}"))?,
        content: serde_json::from_str(content)
            .with_context(|| format!("a stored {kind} `{external_id}` is not JSON"))?,
        external_id,
        display_name,
    })
}

/// Every object of a run's snapshot, with its content.
pub async fn snapshot_objects(database: &Database, run_id: RunId) -> anyhow::Result<Vec<Object>> {
    let rows: Vec<(String, String, Option<String>, String)> = on_pool!(database, |pool| {
        sqlx::query_as(
            "SELECT s.kind, s.external_id, s.display_name, c.content \
             FROM provider_snapshot_objects s \
             JOIN provider_contents c ON c.content_hash = s.content_hash \
             WHERE s.run_id = $1",
        )
        .bind(run_id.to_string())
        .fetch_all(pool)
        .await
        .context("reading a snapshot's objects")?
    });
    rows.into_iter()
        .map(|(kind, id, name, content)| object(&kind, id, name, &content))
        .collect()
}

/// The objects of `kinds` a tenant holds as its latest syncs found them
/// (present ones only), with their content.
pub async fn current_objects(
    database: &Database,
    tenant_id: TenantId,
    kinds: &[ItemKind],
) -> anyhow::Result<Vec<Object>> {
    let mut objects = Vec::new();
    for kind in kinds {
        let rows: Vec<(String, Option<String>, String)> = on_pool!(database, |pool| {
            sqlx::query_as(
                "SELECT external_id, display_name, content FROM provider_objects \
                 WHERE tenant_id = $1 AND kind = $2 AND removed_at IS NULL",
            )
            .bind(tenant_id.to_string())
            .bind(kind.as_str())
            .fetch_all(pool)
            .await
            .context("reading a tenant's synced objects")?
        });
        for (id, name, content) in rows {
            objects.push(object(kind.as_str(), id, name, &content)?);
        }
    }
    Ok(objects)
}

/// The objects restores created again in a tenant, each in place of which.
pub async fn replacements(
    database: &Database,
    tenant_id: TenantId,
) -> anyhow::Result<Replacements> {
    let rows: Vec<(String, String, String)> = on_pool!(database, |pool| {
        sqlx::query_as(
        "SELECT kind, external_id, replacement_id FROM provider_replacements WHERE tenant_id = $1"
    )
    .bind(tenant_id.to_string())
    .fetch_all(pool)
    .await
    .context("reading a tenant's replacements")?
    });
    Ok(rows
        .into_iter()
        .filter_map(|(kind, id, replacement)| Some(((kind.parse().ok()?, id), replacement)))
        .collect())
}

/// Records that `run_id` created `replacement_id` in place of the snapshot's
/// `external_id` (the newest replacement wins).
pub async fn record_replacement(
    database: &Database,
    tenant_id: TenantId,
    kind: ItemKind,
    external_id: &str,
    replacement_id: &str,
    run_id: RunId,
) -> anyhow::Result<()> {
    on_pool!(database, |pool| sqlx::query(
        "INSERT INTO provider_replacements (tenant_id, kind, external_id, replacement_id, run_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, kind, external_id) DO UPDATE SET \
         replacement_id = excluded.replacement_id, run_id = excluded.run_id"
    )
    .bind(tenant_id.to_string())
    .bind(kind.as_str())
    .bind(external_id)
    .bind(replacement_id)
    .bind(run_id.to_string())
    .execute(pool)
    .await
    .context("recording a replacement")
    .map(drop))
}

/// The stored action of a left-alone object (not one of the contract's three).
const LEFT_ALONE: &str = "left_alone";

/// Stores a restore run's preview, object by object, in the plan's order.
pub async fn store_preview(
    database: &Database,
    restore_run_id: RestoreRunId,
    plan: &Plan,
) -> anyhow::Result<()> {
    type Row<'a> = (
        &'a ItemKind,
        &'a str,
        &'a Option<String>,
        &'static str,
        String,
    );
    let rows: Vec<Row> = plan
        .objects
        .iter()
        .map(|o| {
            let fields = serde_json::to_string(&o.changed_fields).expect("names serialize");
            (
                &o.kind,
                o.external_id.as_str(),
                &o.display_name,
                o.action.as_str(),
                fields,
            )
        })
        .chain(plan.left_alone.iter().map(|o| {
            (
                &o.kind,
                o.external_id.as_str(),
                &o.display_name,
                LEFT_ALONE,
                "[]".to_owned(),
            )
        }))
        .collect();
    let id = restore_run_id.to_string();
    on_pool!(database, |pool| {
        let mut tx = pool.begin().await.context("starting a preview's write")?;
        for (index, batch) in rows.chunks(BATCH).enumerate() {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO restore_preview_objects (restore_run_id, position, kind, \
                 external_id, display_name, action, changed_fields) ",
            );
            let first = index * BATCH;
            insert.push_values(
                batch.iter().enumerate(),
                |mut row, (i, (kind, external_id, name, action, fields))| {
                    row.push_bind(&id)
                        .push_bind(i64::try_from(first + i).unwrap_or(i64::MAX))
                        .push_bind(kind.as_str())
                        .push_bind(*external_id)
                        .push_bind(*name)
                        .push_bind(*action)
                        .push_bind(fields);
                },
            );
            insert
                .build()
                .execute(&mut *tx)
                .await
                .context("writing a preview")?;
        }
        tx.commit().await.context("committing a preview")
    })
}

/// A restore run's preview as stored: the snapshot's objects with their
/// action, and the objects left alone (no target ids: the preview names them
/// by the snapshot's ids).
pub async fn preview(database: &Database, restore_run_id: RestoreRunId) -> anyhow::Result<Plan> {
    let rows: Vec<(String, String, Option<String>, String, String)> = on_pool!(database, |pool| {
        sqlx::query_as(
            "SELECT kind, external_id, display_name, action, changed_fields \
             FROM restore_preview_objects WHERE restore_run_id = $1 ORDER BY position",
        )
        .bind(restore_run_id.to_string())
        .fetch_all(pool)
        .await
        .context("reading a preview")?
    });
    let mut plan = Plan::default();
    for (kind, external_id, display_name, action, fields) in rows {
        let kind: ItemKind = kind
            .parse()
            .map_err(|e| anyhow::anyhow!("a preview's kind: {e}"))?;
        if action == LEFT_ALONE {
            plan.left_alone.push(LeftAlone {
                kind,
                external_id,
                display_name,
            });
            continue;
        }
        plan.objects.push(Planned {
            kind,
            external_id,
            display_name,
            action: action
                .parse::<RestoreAction>()
                .map_err(|e| anyhow::anyhow!("a preview's action: {e}"))?,
            target_id: None,
            changed_fields: serde_json::from_str(&fields).context("a preview's changed fields")?,
        });
    }
    Ok(plan)
}

/// What a restore's execution did with one object of its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRow {
    /// Its place in the plan.
    pub position: i64,
    /// Its kind.
    pub kind: ItemKind,
    /// Its id in the snapshot.
    pub external_id: String,
    /// Its display name in the snapshot.
    pub display_name: Option<String>,
    /// What happened.
    pub outcome: ObjectOutcome,
    /// The object written (patched, or created: its new id).
    pub target_id: Option<String>,
    /// The properties written back, for a patch.
    pub changed_fields: Vec<String>,
    /// For a failure: the provider's HTTP status.
    pub http_status: Option<i32>,
    /// For a failure: the provider's error code.
    pub provider_code: Option<String>,
    /// For a failure: the provider's request id.
    pub request_id: Option<String>,
    /// For a failure: what the provider said, shortened.
    pub message: Option<String>,
}

/// Records one object's outcome (again, if an earlier attempt of the run did).
pub async fn record_outcome(
    database: &Database,
    run_id: RunId,
    row: &OutcomeRow,
) -> anyhow::Result<()> {
    let fields = serde_json::to_string(&row.changed_fields).expect("names serialize");
    on_pool!(database, |pool| sqlx::query(
        "INSERT INTO restore_outcomes (run_id, kind, external_id, position, display_name, \
         outcome, target_id, changed_fields, http_status, provider_code, request_id, message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (run_id, kind, external_id) DO UPDATE SET position = excluded.position, \
         display_name = excluded.display_name, outcome = excluded.outcome, \
         target_id = excluded.target_id, changed_fields = excluded.changed_fields, \
         http_status = excluded.http_status, provider_code = excluded.provider_code, \
         request_id = excluded.request_id, message = excluded.message"
    )
    .bind(run_id.to_string())
    .bind(row.kind.as_str())
    .bind(&row.external_id)
    .bind(row.position)
    .bind(&row.display_name)
    .bind(row.outcome.as_str())
    .bind(&row.target_id)
    .bind(&fields)
    .bind(row.http_status)
    .bind(&row.provider_code)
    .bind(&row.request_id)
    .bind(&row.message)
    .execute(pool)
    .await
    .context("recording a restored object's outcome")
    .map(drop))
}

type StoredOutcome = (
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// What a restore run did with each object, in the plan's order.
pub async fn outcomes(database: &Database, run_id: RunId) -> anyhow::Result<Vec<OutcomeRow>> {
    let rows: Vec<StoredOutcome> = on_pool!(database, |pool| {
        sqlx::query_as(
        "SELECT position, kind, external_id, display_name, outcome, target_id, changed_fields, \
         http_status, provider_code, request_id, message FROM restore_outcomes \
         WHERE run_id = $1 ORDER BY position, kind, external_id"
    )
    .bind(run_id.to_string())
    .fetch_all(pool)
    .await
    .context("reading a restore's outcomes")?
    });
    rows.into_iter()
        .map(
            |(
                position,
                kind,
                external_id,
                display_name,
                outcome,
                target_id,
                fields,
                http_status,
                provider_code,
                request_id,
                message,
            )| {
                Ok(OutcomeRow {
                    position,
                    kind: kind
                        .parse()
                        .map_err(|e| anyhow::anyhow!("an outcome's kind: {e}"))?,
                    external_id,
                    display_name,
                    outcome: outcome
                        .parse()
                        .map_err(|e| anyhow::anyhow!("an outcome: {e}"))?,
                    target_id,
                    changed_fields: serde_json::from_str(&fields)
                        .context("an outcome's changed fields")?,
                    http_status,
                    provider_code,
                    request_id,
                    message,
                })
            },
        )
        .collect()
}
