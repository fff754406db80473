//! The embedded engine: one SQLite file in the data directory, WAL, `synchronous=FULL` so an
//! acknowledged write survives a crash. One writer connection (SQLite has one writer anyway;
//! `BEGIN IMMEDIATE` takes the lock up front so no transaction fails half-way on an upgrade),
//! several reader connections.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::changes::ChangeFeed;
use super::sql::{INSERT_OFFICE, sql_engine};
use crate::model::TenantId;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// Bumped after every commit: this process is the only writer, so that is every change.
    changes: Arc<ChangeFeed>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file; applies pending migrations if `migrate`.
    pub async fn open(path: &Path, migrate: bool) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // The writer's statement journals (SQLite writes one for a multi-row statement inside a
        // transaction, e.g. a check-in batch's upserts) stay in memory: in a temporary file they
        // were about 40 % of the bytes the writer wrote under check-in load.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone().pragma("temp_store", "MEMORY"))
            .await
            .with_context(|| format!("opening SQLite database {}", path.display()))?;
        if migrate {
            MIGRATOR
                .run(&writer)
                .await
                .context("applying SQLite migrations")?;
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Self {
            reader,
            writer,
            changes: ChangeFeed::local(),
        })
    }

    /// The feed this store bumps after each commit (the one the caches read).
    pub fn with_changes(mut self, changes: Arc<ChangeFeed>) -> Self {
        self.changes = changes;
        self
    }

    /// `BEGIN IMMEDIATE` takes SQLite's (database-wide) write lock, which covers the tenant.
    async fn begin_tenant(
        &self,
        tenant: &TenantId,
        new_singleton_id: Uuid,
    ) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(INSERT_OFFICE)
            .bind(tenant.as_str())
            .bind(new_singleton_id.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A check-in batch's transaction (no tenant lock: check-ins never touch the rows the
    /// Graph rules span, and upserts keep the latest report per device).
    async fn begin_checkins(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    async fn checkins_before_commit(
        _tx: &mut Transaction<'static, Sqlite>,
        _tenants: &[&str],
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn before_commit(
        _tx: &mut Transaction<'static, Sqlite>,
        _tenant: &TenantId,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

sql_engine!(SqliteStore, SqliteTenantTx, Sqlite, SqliteRow, "");
super::checkins::chunked_checkin_writes!(SqliteStore, Sqlite, super::checkins::anonymous_params);
super::checkins::checkin_engine!(
    SqliteStore,
    Sqlite,
    SqliteRow,
    false,
    super::checkins::anonymous_params
);
