//! The view tables' SQL, driven by each table's one column descriptor
//! ([`projections::Table`]): selecting and decoding typed rows, loading the
//! rows a live batch touches, storing what a fold wrote (multi-row upserts),
//! and replacing every view at once (a rebuild: `COPY` on PostgreSQL,
//! multi-row inserts on SQLite).
//!
//! The SQL is portable; [`backend!`] compiles each function once per backend
//! so that the same text serves PostgreSQL and SQLite connections.
//!
//! Why one file of about 650 lines: the PostgreSQL and SQLite writers sit
//! side by side, driven by the same descriptor, so that what differs between
//! the backends is seen at a glance; each section is one job (select, load,
//! upsert, replace).

use std::collections::BTreeMap;

use anyhow::Context as _;
use projections::{Cell, Kind, Misses, Table, Value, ViewRow, Views, Write, PROJECTIONS};

use crate::write::store::{on_pool, Database};

/// Parameters per statement: under SQLite's 32,766 and PostgreSQL's 65,535.
const PARAMETERS_PER_STATEMENT: usize = 30_000;

/// Rows per multi-row statement for a table with `columns` columns.
fn rows_per_statement(columns: usize) -> usize {
    (PARAMETERS_PER_STATEMENT / columns.max(1)).clamp(1, 1000)
}

/// `SELECT <columns> FROM <table>`, columns prefixed with `alias.` when given.
pub(crate) fn select_from(table: &Table, alias: Option<&str>) -> String {
    match alias {
        Some(alias) => format!(
            "SELECT {} FROM {} {alias}",
            table.column_list(&format!("{alias}.")),
            table.name
        ),
        None => format!("SELECT {} FROM {}", table.column_list(""), table.name),
    }
}

/// `INSERT INTO t (…) ` and, for an upsert, the conflict clause to end it with.
fn insert_head(table: &Table, write: Write) -> (String, String) {
    let head = format!("INSERT INTO {} ({}) ", table.name, table.column_list(""));
    let tail = match write {
        Write::Insert => String::new(),
        Write::Upsert => {
            let set: Vec<String> = table
                .non_key_columns()
                .map(|c| format!("{0} = excluded.{0}", c.name))
                .collect();
            format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                table.key.join(", "),
                set.join(", ")
            )
        }
    };
    (head, tail)
}

/// A stored view row that does not decode.
fn undecodable(table: &Table) -> impl Fn(projections::RowError) -> anyhow::Error + '_ {
    move |error| anyhow::Error::new(error).context(format!("reading {}", table.name))
}

macro_rules! backend {
    ($module:ident, $db:ty, $row:ty, $connection:ty, write with $write:path, select with $select:path) => {
        pub(crate) mod $module {
            use super::*;
            use sqlx::Row as _;

            /// Typed rows of `R` whose `column` is one of `keys`.
            pub(crate) async fn select_in<R: ViewRow>(
                connection: &mut $connection,
                column: &str,
                keys: &[Cell<'_>],
            ) -> anyhow::Result<Vec<R>> {
                let found = $select(connection, &R::TABLE, column, keys).await?;
                found.iter().map(decode::<R>).collect()
            }

            /// The values of a stored row, by the kinds of `kinds`, from column `from`.
            pub(crate) fn values(
                row: &$row,
                from: usize,
                kinds: impl Iterator<Item = Kind>,
            ) -> Result<Vec<Value>, sqlx::Error> {
                kinds
                    .enumerate()
                    .map(|(i, kind)| {
                        let i = from + i;
                        Ok(match kind {
                            Kind::Text | Kind::NullableText => Value::Text(row.try_get(i)?),
                            Kind::Bool => Value::Bool(row.try_get(i)?),
                            Kind::Int => Value::Int(row.try_get(i)?),
                        })
                    })
                    .collect()
            }

            /// Reads a typed row from the first columns of a stored row.
            pub(crate) fn decode<R: ViewRow>(row: &$row) -> anyhow::Result<R> {
                let values = values(row, 0, R::TABLE.columns.iter().map(|c| c.kind))
                    .with_context(|| format!("reading {}", R::TABLE.name))?;
                R::decode(values).map_err(undecodable(&R::TABLE))
            }

            /// Binds one cell.
            pub(crate) fn bind<'a>(
                values: &mut sqlx::query_builder::Separated<'_, 'a, $db, &'static str>,
                cell: &'a Cell<'a>,
            ) {
                match cell {
                    Cell::Text(text) => values.push_bind(text.as_deref()),
                    Cell::Bool(value) => values.push_bind(*value),
                    Cell::Int(value) => values.push_bind(*value),
                };
            }

            /// Loads what a partial fold missed into `views`.
            pub(crate) async fn load(
                connection: &mut $connection,
                views: &mut Views,
                misses: Misses,
            ) -> anyhow::Result<()> {
                use projections::row::Key;
                fn cells<K: Key>(keys: &[K]) -> Vec<Cell<'_>> {
                    keys.iter().flat_map(Key::cells).collect()
                }
                if !misses.runs.is_empty() {
                    let rows = select_in(connection, "run_id", &cells(&misses.runs)).await?;
                    views.runs.load(rows);
                    views.runs.looked_up(misses.runs);
                }
                if !misses.connections.is_empty() {
                    let rows =
                        select_in(connection, "connection_id", &cells(&misses.connections)).await?;
                    views.connections.load(rows);
                    views.connections.looked_up(misses.connections);
                }
                if !misses.tenant_connections.is_empty() {
                    let rows =
                        select_in(connection, "tenant_id", &cells(&misses.tenant_connections))
                            .await?;
                    views.load_tenant_connections(misses.tenant_connections, rows);
                }
                if !misses.initiators.is_empty() {
                    let rows = select_in(connection, "run_id", &cells(&misses.initiators)).await?;
                    views.initiators.load(rows);
                    views.initiators.looked_up(misses.initiators);
                }
                Ok(())
            }

            /// Stores what a fold wrote, one multi-row statement per table
            /// (per chunk of rows), and deletes what it removed, one statement
            /// per key (only members are ever removed, and rarely).
            pub(crate) async fn store(
                connection: &mut $connection,
                views: &Views,
            ) -> anyhow::Result<()> {
                for (table, key) in views.removed() {
                    let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                        "DELETE FROM {} WHERE ",
                        table.name
                    ));
                    for (i, (column, cell)) in table.key.iter().zip(&key).enumerate() {
                        let and = if i == 0 { "" } else { " AND " };
                        query.push(format!("{and}{column} = "));
                        bind(&mut query.separated(""), cell);
                    }
                    query
                        .build()
                        .execute(&mut *connection)
                        .await
                        .with_context(|| format!("deleting from {}", table.name))?;
                }
                for table in views.written() {
                    $write(connection, table, |_| {}).await?;
                }
                Ok(())
            }
        }
    };
}

backend!(pg, sqlx::Postgres, sqlx::postgres::PgRow, sqlx::PgConnection,
    write with super::unnest_rows, select with super::select_any);
backend!(lite, sqlx::Sqlite, sqlx::sqlite::SqliteRow, sqlx::SqliteConnection,
    write with super::values_rows, select with super::select_listed);

/// PostgreSQL: the rows whose `column` (a text key) is one of `keys`, in one
/// statement whose text does not depend on how many keys there are (`= ANY`),
/// so the server plans it once per connection; an `IN` list of one
/// parameter per key was a new statement, prepared and planned, for every
/// batch size.
async fn select_any(
    connection: &mut sqlx::PgConnection,
    table: &Table,
    column: &str,
    keys: &[Cell<'_>],
) -> anyhow::Result<Vec<sqlx::postgres::PgRow>> {
    let texts: Vec<Option<&str>> = keys
        .iter()
        .map(|key| match key {
            Cell::Text(text) => Ok(text.as_deref()),
            other => Err(anyhow::anyhow!(
                "{}.{column} is keyed by text, not {other:?}",
                table.name
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    let sql = format!("{} WHERE {column} = ANY($1)", select_from(table, None));
    sqlx::query(&sql)
        .bind(texts)
        .fetch_all(&mut *connection)
        .await
        .with_context(|| format!("loading rows of {}", table.name))
}

/// SQLite: the rows whose `column` is one of `keys`, an `IN` list per chunk.
async fn select_listed(
    connection: &mut sqlx::SqliteConnection,
    table: &Table,
    column: &str,
    keys: &[Cell<'_>],
) -> anyhow::Result<Vec<sqlx::sqlite::SqliteRow>> {
    let mut rows = Vec::new();
    for chunk in keys.chunks(PARAMETERS_PER_STATEMENT) {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(select_from(table, None));
        query.push(format!(" WHERE {column} IN ("));
        let mut list = query.separated(", ");
        for key in chunk {
            lite::bind(&mut list, key);
        }
        query.push(")");
        rows.extend(
            query
                .build()
                .fetch_all(&mut *connection)
                .await
                .with_context(|| format!("loading rows of {}", table.name))?,
        );
    }
    Ok(rows)
}

/// SQLite: writes rows with multi-row `VALUES` statements (PostgreSQL writes
/// through [`unnest_rows`]), reporting rows written.
async fn values_rows(
    connection: &mut sqlx::SqliteConnection,
    rows: projections::TableRows<'_>,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<()> {
    let table = rows.table;
    let (head, tail) = insert_head(table, rows.write);
    let chunk_size = rows_per_statement(table.columns.len());
    let mut rows = rows.rows.peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Cell<'_>>> = rows.by_ref().take(chunk_size).collect();
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(&head);
        query.push_values(&chunk, |mut values, row| {
            for cell in row {
                lite::bind(&mut values, cell);
            }
        });
        query.push(&tail);
        query
            .build()
            .execute(&mut *connection)
            .await
            .with_context(|| format!("writing {}", table.name))?;
        progress(chunk.len());
    }
    Ok(())
}

/// Rows per `UNNEST` statement on PostgreSQL.
const ROWS_PER_UNNEST: usize = 10_000;

/// One column of rows, as the array PostgreSQL's `UNNEST` reads.
enum ColumnArray<'a> {
    Text(Vec<Option<&'a str>>),
    Bool(Vec<bool>),
    Int(Vec<i64>),
}

/// PostgreSQL: writes rows as one array per column through `UNNEST` — one
/// bound parameter per column instead of one per cell, which the server
/// parses and plans far faster than a `VALUES` list of thousands.
async fn unnest_rows(
    connection: &mut sqlx::PgConnection,
    rows: projections::TableRows<'_>,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<()> {
    let table = rows.table;
    let (head, tail) = insert_head(table, rows.write);
    let arrays: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let kind = match column.kind {
                Kind::Text | Kind::NullableText => "text",
                Kind::Bool => "boolean",
                Kind::Int => "bigint",
            };
            format!("${}::{kind}[]", i + 1)
        })
        .collect();
    let statement = format!("{head}SELECT * FROM UNNEST({}){tail}", arrays.join(", "));
    let mut rows = rows.rows.peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Cell<'_>>> = rows.by_ref().take(ROWS_PER_UNNEST).collect();
        let mut columns: Vec<ColumnArray<'_>> = table
            .columns
            .iter()
            .map(|column| match column.kind {
                Kind::Text | Kind::NullableText => {
                    ColumnArray::Text(Vec::with_capacity(chunk.len()))
                }
                Kind::Bool => ColumnArray::Bool(Vec::with_capacity(chunk.len())),
                Kind::Int => ColumnArray::Int(Vec::with_capacity(chunk.len())),
            })
            .collect();
        for row in &chunk {
            for (cell, column) in row.iter().zip(columns.iter_mut()) {
                match (cell, column) {
                    (Cell::Text(text), ColumnArray::Text(values)) => values.push(text.as_deref()),
                    (Cell::Bool(value), ColumnArray::Bool(values)) => values.push(*value),
                    (Cell::Int(value), ColumnArray::Int(values)) => values.push(*value),
                    _ => anyhow::bail!("a {} cell does not match its column's kind", table.name),
                }
            }
        }
        let mut query = sqlx::query(&statement);
        for column in columns {
            query = match column {
                ColumnArray::Text(values) => query.bind(values),
                ColumnArray::Bool(values) => query.bind(values),
                ColumnArray::Int(values) => query.bind(values),
            };
        }
        query
            .execute(&mut *connection)
            .await
            .with_context(|| format!("writing {}", table.name))?;
        progress(chunk.len());
    }
    Ok(())
}

/// A stored row of either backend, read as a typed view row.
pub(crate) trait ViewRowOf {
    /// Reads a typed row from the first columns.
    fn view<R: ViewRow>(&self) -> anyhow::Result<R>;
    /// Reads the values of the columns from `from` on, by kind.
    fn values_from(&self, from: usize, kinds: &[Kind]) -> anyhow::Result<Vec<Value>>;
}

impl ViewRowOf for sqlx::postgres::PgRow {
    fn view<R: ViewRow>(&self) -> anyhow::Result<R> {
        pg::decode(self)
    }
    fn values_from(&self, from: usize, kinds: &[Kind]) -> anyhow::Result<Vec<Value>> {
        pg::values(self, from, kinds.iter().copied()).context("reading a view row")
    }
}

impl ViewRowOf for sqlx::sqlite::SqliteRow {
    fn view<R: ViewRow>(&self) -> anyhow::Result<R> {
        lite::decode(self)
    }
    fn values_from(&self, from: usize, kinds: &[Kind]) -> anyhow::Result<Vec<Value>> {
        lite::values(self, from, kinds.iter().copied()).context("reading a view row")
    }
}

/// A live batch's view rows, on either backend's connection.
pub(crate) trait BatchViews {
    /// Loads what a partial fold missed.
    async fn load_views(&mut self, views: &mut Views, misses: Misses) -> anyhow::Result<()>;
    /// Stores what a fold wrote and removed.
    async fn store_views(&mut self, views: &Views) -> anyhow::Result<()>;
}

impl BatchViews for sqlx::PgConnection {
    async fn load_views(&mut self, views: &mut Views, misses: Misses) -> anyhow::Result<()> {
        pg::load(self, views, misses).await
    }
    async fn store_views(&mut self, views: &Views) -> anyhow::Result<()> {
        pg::store(self, views).await
    }
}

impl BatchViews for sqlx::SqliteConnection {
    async fn load_views(&mut self, views: &mut Views, misses: Misses) -> anyhow::Result<()> {
        lite::load(self, views, misses).await
    }
    async fn store_views(&mut self, views: &Views) -> anyhow::Result<()> {
        lite::store(self, views).await
    }
}

/// Replaces the content of the view tables with folded views, inside the
/// caller's transaction, on either backend.
pub(crate) trait ReplaceViews {
    /// Empties every view table, then writes the views into them, reporting
    /// rows written so far.
    async fn replace_views(
        &mut self,
        views: &Views,
        progress: impl FnMut(usize) + Send,
    ) -> anyhow::Result<()>;
}

/// The view tables, in the order [`Views::every_row`] gives them.
fn view_tables(views: &Views) -> Vec<&'static str> {
    views.every_row().iter().map(|t| t.table.name).collect()
}

/// PostgreSQL: `TRUNCATE`, the tables' indexes dropped, `COPY`, the indexes
/// built again from their definitions in the catalog (a sorted build is about
/// twice as fast as maintaining three b-trees row by row). The `TRUNCATE`
/// locks the views exclusively: until the rebuild commits, readers of the
/// views wait instead of seeing them half-built; the reading and folding
/// before this step never blocks them.
impl ReplaceViews for sqlx::PgConnection {
    async fn replace_views(
        &mut self,
        views: &Views,
        progress: impl FnMut(usize) + Send,
    ) -> anyhow::Result<()> {
        let tables = view_tables(views);
        sqlx::query(&format!("TRUNCATE {}", tables.join(", ")))
            .execute(&mut *self)
            .await
            .context("emptying the views")?;
        sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
            .execute(&mut *self)
            .await
            .context("sizing the index builds")?;
        let mut rebuilt = Vec::new();
        for table in tables {
            for index in indexes(self, table).await? {
                sqlx::query(&index.drop)
                    .execute(&mut *self)
                    .await
                    .with_context(|| format!("dropping {}", index.name))?;
                rebuilt.push(index);
            }
        }
        copy_views(self, views, progress).await?;
        for index in rebuilt {
            sqlx::query(&index.create)
                .execute(&mut *self)
                .await
                .with_context(|| format!("building {}", index.name))?;
        }
        Ok(())
    }
}

/// SQLite: `DELETE`, then multi-row inserts.
impl ReplaceViews for sqlx::SqliteConnection {
    async fn replace_views(
        &mut self,
        views: &Views,
        mut progress: impl FnMut(usize) + Send,
    ) -> anyhow::Result<()> {
        for table in view_tables(views) {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *self)
                .await
                .with_context(|| format!("clearing {table}"))?;
        }
        let mut written = 0;
        for mut rows in views.every_row() {
            rows.write = Write::Insert;
            values_rows(self, rows, |n| {
                written += n;
                progress(written)
            })
            .await?;
        }
        Ok(())
    }
}

/// An index of a view table, with the statements that drop and rebuild it.
struct Index {
    name: String,
    drop: String,
    create: String,
}

/// The indexes of `table` as the catalog defines them: primary-key and unique
/// constraints through their constraint, the others through `pg_indexes`.
async fn indexes(connection: &mut sqlx::PgConnection, table: &str) -> anyhow::Result<Vec<Index>> {
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let rows: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT i.relname::text,
                c.oid IS NOT NULL,
                CASE WHEN c.oid IS NOT NULL THEN pg_get_constraintdef(c.oid)
                     ELSE pg_get_indexdef(i.oid) END
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
         WHERE x.indrelid = $1::regclass
         ORDER BY i.relname",
    )
    .bind(table)
    .fetch_all(&mut *connection)
    .await
    .with_context(|| format!("reading the indexes of {table}"))?;
    Ok(rows
        .into_iter()
        .map(|(name, constraint, definition)| {
            let (drop, create) = if constraint {
                (
                    format!("ALTER TABLE {table} DROP CONSTRAINT {}", quoted(&name)),
                    format!(
                        "ALTER TABLE {table} ADD CONSTRAINT {} {definition}",
                        quoted(&name)
                    ),
                )
            } else {
                (format!("DROP INDEX {}", quoted(&name)), definition)
            };
            Index { name, drop, create }
        })
        .collect())
}

/// Appends one row in `COPY … FROM STDIN` text format: tab-separated, `\N`
/// for NULL, and backslash, tab, newline and carriage return escaped.
pub(crate) fn copy_line(row: &[Cell<'_>], out: &mut Vec<u8>) {
    for (i, cell) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match cell {
            Cell::Text(None) => out.extend_from_slice(b"\\N"),
            Cell::Text(Some(text)) => {
                for &byte in text.as_bytes() {
                    match byte {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        _ => out.push(byte),
                    }
                }
            }
            Cell::Bool(value) => out.push(if *value { b't' } else { b'f' }),
            Cell::Int(value) => out.extend_from_slice(value.to_string().as_bytes()),
        }
    }
    out.push(b'\n');
}

/// Bytes sent per `COPY` message.
const COPY_CHUNK: usize = 1 << 20;

/// Writes every view with `COPY … FROM STDIN`, in the caller's transaction.
async fn copy_views(
    connection: &mut sqlx::PgConnection,
    views: &Views,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<()> {
    let mut written = 0usize;
    for rows in views.every_row() {
        let table = rows.table;
        let statement = format!("COPY {} ({}) FROM STDIN", table.name, table.column_list(""));
        let mut copy = connection
            .copy_in_raw(&statement)
            .await
            .with_context(|| format!("starting COPY into {}", table.name))?;
        let mut buffer = Vec::with_capacity(COPY_CHUNK + 4096);
        for row in rows.rows {
            copy_line(&row, &mut buffer);
            written += 1;
            if buffer.len() >= COPY_CHUNK {
                copy.send(std::mem::take(&mut buffer))
                    .await
                    .with_context(|| format!("writing {}", table.name))?;
                buffer.reserve(COPY_CHUNK + 4096);
                progress(written);
            }
        }
        if !buffer.is_empty() {
            copy.send(buffer)
                .await
                .with_context(|| format!("writing {}", table.name))?;
        }
        copy.finish()
            .await
            .with_context(|| format!("finishing COPY into {}", table.name))?;
        progress(written);
    }
    Ok(())
}

/// Each known projection's stored checkpoint (read only).
pub(crate) async fn checkpoints(
    database: &Database,
) -> anyhow::Result<BTreeMap<&'static str, i64>> {
    let sql = "SELECT name, position FROM projection_checkpoints";
    let rows: Vec<(String, i64)> = on_pool!(database, |pool| sqlx::query_as(sql)
        .fetch_all(pool)
        .await
        .context("reading the checkpoints"))?;
    Ok(PROJECTIONS
        .iter()
        .filter_map(|p| {
            rows.iter()
                .find(|(name, _)| name == p.name)
                .map(|(_, position)| (p.name, *position))
        })
        .collect())
}

/// The log position every view of `database` shows: the slowest projection's
/// stored checkpoint, 0 while any projection has none yet. On a hot standby,
/// where no projector runs, this is what its replicated views show.
pub async fn views_position(database: &Database) -> anyhow::Result<i64> {
    let checkpoints = checkpoints(database).await?;
    Ok(if checkpoints.len() == PROJECTIONS.len() {
        checkpoints.values().copied().min().unwrap_or(0)
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn the_views_cover_exactly_the_tables_the_projections_own() {
        let mut written = view_tables(&Views::complete());
        let mut owned: Vec<&str> = projections::PROJECTIONS
            .iter()
            .flat_map(|p| p.tables)
            .copied()
            .collect();
        written.sort_unstable();
        owned.sort_unstable();
        assert_eq!(written, owned);
    }

    #[test]
    fn copy_lines_escape_what_the_text_format_reserves() {
        let mut out = Vec::new();
        copy_line(
            &[
                Cell::Text(Some(Cow::Borrowed("a\tb\\c\nd\re"))),
                Cell::Text(None),
                Cell::Bool(true),
                Cell::Bool(false),
                Cell::Int(-42),
                Cell::Text(Some(Cow::Borrowed(""))),
            ],
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\tb\\\\c\\nd\\re\t\\N\tt\tf\t-42\t\n"
        );
    }

    #[test]
    fn an_upsert_updates_every_column_outside_the_key() {
        let (head, tail) = insert_head(&projections::Member::TABLE, Write::Upsert);
        assert_eq!(
            head,
            "INSERT INTO view_members (tenant_id, user_id, role, capabilities, can_view) "
        );
        assert_eq!(
            tail,
            " ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = excluded.role, \
             capabilities = excluded.capabilities, can_view = excluded.can_view"
        );
    }
}
