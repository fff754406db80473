//! The embedded engine: one SQLite file in the data directory, WAL, `synchronous=FULL` so an
//! acknowledged write survives a crash. One writer connection (SQLite has one writer anyway;
//! `BEGIN IMMEDIATE` takes the lock up front so no transaction fails half-way on an upgrade),
//! several reader connections. Check-ins are logged in a file of their own first
//! ([`super::sqlite_log`]).

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection as _, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::StorageResult;
use super::changes::ChangeFeed;
use super::sql::{INSERT_OFFICE, map_err, sql_engine};
use super::sqlite_log::{LogFile, OverriddenTenants, TENANT_HAS_OVERRIDE, TENANTS_WITH_OVERRIDES};
use crate::model::TenantId;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// Bumped after every commit: this process is the only writer, so that is every change.
    changes: Arc<ChangeFeed>,
    /// The background checkpointer runs while this lives.
    _checkpointer: Arc<()>,
    /// Where check-ins are logged (a file of its own) and applied from.
    log: LogFile,
    /// Tenants whose check-ins must be logged here, ending an override.
    overrides: Arc<OverriddenTenants>,
}

/// The writer's page cache, in KiB (SQLite's default is 2 MiB): applying the check-in log
/// descends the keyed tables at many places, and with the default cache every descent re-read
/// its pages from the operating system.
pub(crate) const WRITER_CACHE_KIB: &str = "-65536";
/// How often the background task checkpoints the write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// WAL pages after which the writer checkpoints itself after all (SQLite's default is 1,000):
/// a backstop should the background checkpoints not keep up.
const WRITER_AUTOCHECKPOINT_PAGES: &str = "16384";

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
            .connect_with(
                opts.clone()
                    .pragma("temp_store", "MEMORY")
                    .pragma("cache_size", WRITER_CACHE_KIB)
                    .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES),
            )
            .await
            .with_context(|| format!("opening SQLite database {}", path.display()))?;
        if migrate {
            MIGRATOR
                .run(&writer)
                .await
                .context("applying SQLite migrations")?;
        }
        let log = LogFile::open(path, &opts).await?;
        let overrides = Arc::new(OverriddenTenants::default());
        for tenant in sqlx::query_scalar::<_, String>(TENANTS_WITH_OVERRIDES)
            .fetch_all(&writer)
            .await?
        {
            overrides.mark(&tenant);
        }
        let mut checkpointer = sqlx::SqliteConnection::connect_with(
            &opts
                .clone()
                .thread_name(|_| BACKGROUND_THREADS[1].to_string()),
        )
        .await?;
        // With the log file attached, a checkpoint covers both write-ahead logs.
        sqlx::query("ATTACH DATABASE $1 AS log")
            .bind(
                super::sqlite_log::log_path(path)
                    .to_string_lossy()
                    .into_owned(),
            )
            .execute(&mut checkpointer)
            .await
            .context("attaching the check-in log to the checkpointing connection")?;
        let alive = Arc::new(());
        tokio::spawn(checkpoint_in_background(
            checkpointer,
            Arc::downgrade(&alive),
        ));
        background_priority();
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Self {
            reader,
            writer,
            changes: ChangeFeed::local(),
            _checkpointer: alive,
            log,
            overrides,
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

    /// Marks the tenant, while this transaction still holds SQLite's write lock, if it set an
    /// override of the check-in views (`overrides` is given then), so check-ins from now on
    /// end it.
    async fn before_commit(
        _tx: &mut Transaction<'static, Sqlite>,
        tenant: &TenantId,
        overrides: Option<&OverriddenTenants>,
    ) -> Result<(), sqlx::Error> {
        if let Some(overrides) = overrides {
            overrides.mark(tenant.as_str());
        }
        Ok(())
    }
}

sql_engine!(SqliteStore, SqliteTenantTx, Sqlite, SqliteRow, "");
/// The names of the worker threads of SQLite's background connections: the check-in log's
/// applier and the checkpointer (at most 15 bytes: Linux thread names).
pub(crate) const BACKGROUND_THREADS: [&str; 2] = ["cirrus-apply", "cirrus-checkpt"];

/// The nice value of [`BACKGROUND_THREADS`].
const BACKGROUND_NICE: i32 = 10;

/// Lowers the CPU priority of SQLite's background threads ([`BACKGROUND_THREADS`]), so that
/// on a busy machine the threads an acknowledgement waits for (HTTP, the check-in log's
/// writer) run first and applying the log takes the time left over. Applying cannot fall
/// behind for good: past its bound (16,384 pending reports) the log's writers wait, the
/// machine goes idle and the applier catches up. Under check-in load on two cores a batch of
/// the log took 1.2–2.1 ms to commit on average with the applier at the same priority, and
/// 0.8–1.0 ms with it at nice 10 (two runs each, `docs/benchmarks.md`). Lowering a thread's
/// priority needs no privilege; where it fails (or off Linux) nothing changes.
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !BACKGROUND_THREADS.contains(&comm.trim_end()) {
                continue;
            }
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            // A thread id names the thread alone (PRIO_PROCESS on Linux).
            if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
                tracing::debug!(error = %e, "lowering a background thread's priority failed");
            }
        }
    }
}

/// Checkpoints the write-ahead logs (the database's and the check-in log file's) from a
/// connection of its own, so the writers' commits do not
/// pay for copying pages into the database file and syncing it (SQLite checkpoints on the
/// committing connection by default: about half of a check-in materialization's commit time).
/// `PASSIVE` waits for no reader or writer. Stops once the store is dropped.
async fn checkpoint_in_background(mut conn: sqlx::SqliteConnection, store: Weak<()>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.upgrade().is_none() {
            let _ = conn.close().await;
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "background WAL checkpoint failed");
        }
    }
}

/// The check-in log on SQLite: a batch appended with one statement (a JSON array), applied
/// inside the database (no row crosses into the process).
impl SqliteStore {
    /// Appends a batch to the log durably. Unless a tenant of the batch has an override of its
    /// check-in views set, to the log file (nothing else to do); otherwise to this database's
    /// log, in the transaction that ends the overrides in the batch's scopes.
    async fn append_log(
        &self,
        batch: &[crate::model::Checkin],
        scopes: &super::checkins::CheckinScopes<'_>,
    ) -> Result<Vec<String>, sqlx::Error> {
        if !self.overrides.any(scopes.keys().copied()) {
            self.log
                .append(batch.len(), &super::checkins::log_rows_json(batch)?)
                .await?;
            return Ok(Vec::new());
        }
        self.append_log_ending_overrides(batch, scopes).await
    }

    async fn append_log_ending_overrides(
        &self,
        batch: &[crate::model::Checkin],
        scopes: &super::checkins::CheckinScopes<'_>,
    ) -> Result<Vec<String>, sqlx::Error> {
        use super::checkins::*;
        let mut tx = self.begin_checkins().await?;
        // Under the write lock: a Graph transaction marking a tenant again comes after.
        let generations = self.overrides.generations(scopes.keys().copied());
        Self::write_log(&mut tx, batch).await?;
        // These updates match no row (and write nothing) unless an override is set.
        let mut cleared = Vec::new();
        for (tenant, ids) in scopes {
            let mut changed = sqlx::query(CLEAR_OFFICE_OVERRIDE)
                .bind(false)
                .bind(*tenant)
                .bind(true)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            let ids: Vec<&str> = ids.iter().copied().collect();
            changed |= sqlx::query(CLEAR_CONFIG_OVERRIDES)
                .bind(false)
                .bind(*tenant)
                .bind(true)
                .bind(serde_json::to_string(&ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            if changed {
                cleared.push((*tenant).to_string());
            }
        }
        let mut none_left = Vec::new();
        for (tenant, generation) in generations {
            let left: bool = sqlx::query_scalar(TENANT_HAS_OVERRIDE)
                .bind(&tenant)
                .fetch_one(&mut *tx)
                .await?;
            if !left {
                none_left.push((tenant, generation));
            }
        }
        tx.commit().await?;
        for (tenant, generation) in none_left {
            self.overrides.unmark(&tenant, generation);
        }
        Ok(cleared)
    }

    /// Appends the batch's rows to the log table of `conn`'s database (one statement).
    async fn write_log(
        conn: &mut sqlx::SqliteConnection,
        batch: &[crate::model::Checkin],
    ) -> Result<(), sqlx::Error> {
        use super::checkins::*;
        sqlx::query(sqlx::AssertSqlSafe(APPEND_LOG_JSON.as_str()))
            .bind(log_rows_json(batch)?)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Applies every report logged before this call (in this database and in the log file), so
    /// a view read next includes all acknowledged check-ins. Cheap when nothing is pending.
    async fn checkins_drain(&self) -> StorageResult<()> {
        use super::checkins::{DRAIN_BATCH, LOG_HEAD};
        let head: i64 = sqlx::query_scalar(LOG_HEAD)
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        if head > 0 {
            while self.materialize_log(head, DRAIN_BATCH).await? == DRAIN_BATCH {}
        }
        self.log.drain(DRAIN_BATCH).await
    }

    /// Applies up to `limit` logged reports (the materializer's pass): this database's log
    /// first, then the log file.
    async fn checkins_materialize(&self, limit: usize) -> StorageResult<usize> {
        use super::checkins::LOG_HEAD;
        let head: i64 = sqlx::query_scalar(LOG_HEAD)
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        let mut done = 0;
        if head > 0 {
            done = self.materialize_log(head, limit).await?;
        }
        if done < limit {
            done += self.log.apply(limit - done).await?;
        }
        Ok(done)
    }

    /// Reports in the log file not applied yet.
    pub fn checkin_log_pending(&self) -> i64 {
        self.log.pending()
    }

    /// Applies the oldest log rows up to sequence `upto` (at most `limit`) to the keyed tables
    /// and removes them from the log, in one transaction; returns how many it applied.
    async fn materialize_log(&self, upto: i64, limit: usize) -> StorageResult<usize> {
        use super::checkins::*;
        let mut tx = self.begin_checkins().await.map_err(map_err)?;
        let Some(first) = sqlx::query_scalar::<_, Option<i64>>(LOG_TAIL)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?
        else {
            return Ok(0);
        };
        let last = upto.min(first.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX) - 1));
        if last < first {
            return Ok(0);
        }
        for statement in apply_log_statements() {
            sqlx::query(statement)
                .bind(first)
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let applied = sqlx::query(DELETE_LOG_RUN)
            .bind(first)
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        tx.commit().await.map_err(map_err)?;
        Ok(usize::try_from(applied).unwrap_or(usize::MAX))
    }
}

super::checkins::checkin_engine!(SqliteStore, Sqlite, SqliteRow);

/// A database file at `path` migrated up to `version` only, for upgrade tests (the caller
/// stores rows in the old shape, closes the pool, then opens the store).
#[cfg(test)]
pub(crate) async fn migrated_to(path: &Path, version: i64) -> SqlitePool {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    MIGRATOR.run_to(version, &pool).await.unwrap();
    pool
}
