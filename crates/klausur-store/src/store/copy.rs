//! Moving a store's contents from SQLite into PostgreSQL (`klausur copy-to-postgres`): every
//! row of every table, ids, timestamps and audit hashes unchanged, in one PostgreSQL
//! transaction, into a database that holds none yet.
//!
//! Written once for all tables rather than per query: the tables and their columns come from
//! PostgreSQL's catalogue (the same schema as SQLite's, column for column), and each value is
//! read from SQLite as the PostgreSQL column's type asks (SQLite keeps booleans as integers).

use sqlx::{Row, SqlitePool};

use super::{refused, Backend, Result, Store};

/// The tables, parents before children (foreign keys), with their identity column if any.
const TABLES: [(&str, Option<&str>); 10] = [
    ("users", Some("id")),
    ("sessions", None),
    ("meetings", None),
    ("meeting_moderators", None),
    ("invitations", Some("id")),
    ("meeting_bans", None),
    ("meeting_mutes", None),
    ("guest_passes", Some("id")),
    ("audit_records", None),
    ("audit_anchor", None),
];

impl Store {
    /// Copies every row of this SQLite store into `target`, a PostgreSQL store that holds no
    /// rows yet (its schema made by opening it). Returns the rows copied per table. On any
    /// error nothing is written to `target`.
    pub async fn copy_to_postgres(&self, target: &Store) -> Result<Vec<(&'static str, u64)>> {
        let Backend::Sqlite(source) = &self.backend else {
            return Err(refused("the store to copy from must be SQLite".into()));
        };
        let Backend::Postgres(pg) = &target.backend else {
            return Err(refused("the store to copy into must be PostgreSQL".into()));
        };
        let mut tx = pg.begin().await?;
        let mut copied = Vec::new();
        for (table, identity) in TABLES {
            let (rows,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&mut *tx)
                .await?;
            if rows > 0 {
                return Err(refused(format!(
                    "the PostgreSQL database holds data already ({rows} rows in {table}): \
                     copy only into a new, empty database"
                )));
            }
            let columns: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut *tx)
            .await?;
            let n = copy_table(source, &mut tx, table, &columns).await?;
            if let Some(id) = identity {
                // The next id follows the copied ones.
                sqlx::query(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{id}'), \
                     COALESCE((SELECT max({id}) FROM {table}), 0) + 1, false)"
                ))
                .execute(&mut *tx)
                .await?;
            }
            copied.push((table, n));
        }
        tx.commit().await?;
        Ok(copied)
    }
}

async fn copy_table(
    source: &SqlitePool,
    tx: &mut sqlx::PgConnection,
    table: &str,
    columns: &[(String, String)],
) -> Result<u64> {
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let list = names.join(", ");
    let select = format!("SELECT {list} FROM {table}");
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({list}) VALUES ({})",
        placeholders.join(", ")
    );
    let rows = sqlx::query(&select).fetch_all(source).await?;
    for row in &rows {
        let mut q = sqlx::query(&insert);
        for (i, (name, ty)) in columns.iter().enumerate() {
            q = match ty.as_str() {
                "bigint" | "integer" => q.bind(row.try_get::<Option<i64>, _>(i)?),
                "boolean" => q.bind(row.try_get::<Option<i64>, _>(i)?.map(|v| v != 0)),
                "text" => q.bind(row.try_get::<Option<String>, _>(i)?),
                other => {
                    return Err(refused(format!(
                        "{table}.{name}: a column of type {other} that the copy does not know"
                    )))
                }
            };
        }
        q.execute(&mut *tx).await?;
    }
    Ok(rows.len() as u64)
}
