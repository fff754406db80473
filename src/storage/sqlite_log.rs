//! The check-in log on SQLite, in a file of its own (decision 11 in docs/decisions.md).
//!
//! SQLite has one writer per database file. With the log inside the main database, applying
//! a run of it to the view tables (hundreds of milliseconds for thousands of reports) held the
//! only write lock, and every acknowledgement waited behind it: under load a core sat idle
//! while the other applied. So a batch is appended to a log file next to the database
//! (`cirrus-checkin-log.sqlite3`) through a connection of its own, and acknowledged once that
//! file's commit is durable. A separate connection to the main database, with the log file
//! attached, applies it: it only reads the log file, so appends go on meanwhile.
//!
//! One file, one writer: measured with 64 clients on a 2-core VM, two log files with a writer
//! each acknowledged 14.8 k check-ins/s and one 17.8 k (every commit costs its fsync — in a VM,
//! CPU too — and two writers halve the batches and double the commits).
//!
//! A batch is one row of `client_checkin_log_batches`: its reports as the JSON text they were
//! serialized to, so the writer — the one path every acknowledgement waits on — stores text
//! and does no JSON work; the applier takes each run of batches apart into a temporary table
//! (`checkin_run`, one row per report) that the apply statements read.
//!
//! What has been applied is recorded in the main database (`client_checkin_log_shards`, row
//! 1; row 0 was the per-report table of earlier versions, which opening moves into a batch) in
//! the apply's own transaction, so a crash between applying and trimming applies nothing
//! twice; the writer trims applied batches in its next append. Sequence numbers are
//! `AUTOINCREMENT` rowids, never reused once trimmed.
//!
//! A batch that must end a Graph PATCH's override of the check-in views (a tenant in
//! [`OverriddenTenants`]) is logged in the main database instead, atomically with ending it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, Mutex};

use anyhow::Context as _;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, SqliteConnection};

use super::StorageResult;
use super::checkins::{CHECKIN_COLUMNS, apply_log_statements, log_row_values};
use super::sql::map_err;

/// The log file's table: one row per acknowledged batch, its reports as one JSON array
/// ([`log_rows_json`](super::checkins::log_rows_json)), with a sequence that is never reused
/// (rows are trimmed once applied). One row, not one per report: the batch is stored as the
/// text it arrives in, so the single writer — whose commits every acknowledgement waits for —
/// does no JSON work and inserts one row; the applier takes the reports apart, off the
/// acknowledgement path (measured: see decision 11 in docs/decisions.md).
const LOG_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS client_checkin_log_batches (\
    seq INTEGER PRIMARY KEY AUTOINCREMENT, \
    reports INTEGER NOT NULL, \
    rows TEXT NOT NULL)";

/// Before the batch table, the log file held one `client_checkin_log` row per report (the
/// main database's table of that name, migration 0004): is it still there?
const LEGACY_LOG_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'client_checkin_log')";
/// Moves the per-report log's rows after the applied mark `$1` into one batch and drops the
/// table, in one transaction of the log file.
static LEGACY_LOG_TO_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "BEGIN IMMEDIATE; \
         INSERT INTO client_checkin_log_batches (reports, rows) \
         SELECT COUNT(*), json_group_array(json_array({CHECKIN_COLUMNS})) \
         FROM (SELECT * FROM client_checkin_log WHERE seq > ? ORDER BY seq) HAVING COUNT(*) > 0; \
         DROP TABLE client_checkin_log; \
         COMMIT"
    )
});
/// The per-report log's applied mark (shard 0 of `client_checkin_log_shards`).
const LEGACY_APPLIED_SEQ: &str =
    "SELECT applied_seq FROM client_checkin_log_shards WHERE shard = 0";

/// The log file's write-ahead log is checkpointed by its writer past this many pages.
const LOG_AUTOCHECKPOINT_PAGES: &str = "1000";

/// The last sequence number the log file ever handed out (0 for a new file).
const LOG_FILE_HEAD: &str = "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'client_checkin_log_batches'), 0)";

/// What has been applied from the log file: shard 1 of `client_checkin_log_shards` (shard 0 was
/// the per-report table's, whose sequence numbers counted reports, not batches).
const APPLIED_SEQ: &str = "SELECT applied_seq FROM client_checkin_log_shards WHERE shard = 1";
/// Records the log file applied up to `$1`.
const SET_APPLIED_SEQ: &str = "INSERT INTO client_checkin_log_shards (shard, applied_seq) VALUES (1, $1) ON CONFLICT (shard) DO UPDATE SET applied_seq = excluded.applied_seq";
/// Reports in the log file after the applied mark `$1`.
const PENDING_REPORTS: &str =
    "SELECT COALESCE(SUM(reports), 0) FROM client_checkin_log_batches WHERE seq > $1";
/// A batch's transaction in the log file: the batches up to `$1` (applied) trimmed, the batch
/// of `$2` reports (`$3`, [`log_rows_json`](super::checkins::log_rows_json)) appended.
const APPEND_TRANSACTION: &str = "BEGIN IMMEDIATE; DELETE FROM client_checkin_log_batches WHERE seq <= ?; INSERT INTO client_checkin_log_batches (reports, rows) VALUES (?, ?); COMMIT";

/// The applying connection's table for the run being applied: made from the main database's
/// own `client_checkin_log` (migration 0004), whose columns the apply statements are written
/// for — one row per report, `seq` ordering them as logged ([`RUN_SEQ_SHIFT`]).
const MAIN_LOG_TABLE_SQL: &str =
    "SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = 'client_checkin_log'";
/// [`MAIN_LOG_TABLE_SQL`]'s statement begins with this; the run's table replaces it.
const MAIN_LOG_TABLE: &str = "CREATE TABLE client_checkin_log";
const RUN_TABLE: &str = "CREATE TEMPORARY TABLE IF NOT EXISTS checkin_run";
/// A report's `seq` in the run: its batch's sequence number shifted left by this, plus its
/// index in the batch (batches hold far fewer than 2^20 reports).
const RUN_SEQ_SHIFT: u32 = 20;
/// The batches from `$1` to `$2`, at most `$3` of them: sequence and reports, in order.
const RUN_BATCHES: &str = "SELECT seq, reports FROM log.client_checkin_log_batches WHERE seq BETWEEN $1 AND $2 ORDER BY seq LIMIT $3";
/// Takes the batches from `$1` to `$2` apart into the run. `jsonb_each`: each report's array
/// reaches the 12 `->>` in SQLite's binary JSON, parsed once.
static FILL_RUN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO checkin_run (seq, {CHECKIN_COLUMNS}) SELECT (b.seq << {RUN_SEQ_SHIFT}) + j.key, {} FROM log.client_checkin_log_batches b, jsonb_each(b.rows) j WHERE b.seq BETWEEN $1 AND $2",
        log_row_values("j.value")
    )
});
const EMPTY_RUN: &str = "DELETE FROM checkin_run";

/// The log file of the database at `db`: `cirrus.sqlite3` → `cirrus-checkin-log.sqlite3`.
pub fn log_path(db: &Path) -> PathBuf {
    let stem = db
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cirrus".into());
    db.with_file_name(format!("{stem}-checkin-log.sqlite3"))
}

/// The main database's apply statements, reading the run taken from the log file.
fn apply_statements() -> [String; 3] {
    let from = "FROM client_checkin_log ";
    apply_log_statements().map(|s| {
        debug_assert!(s.contains(from), "{s}");
        s.replace(from, "FROM temp.checkin_run ")
    })
}

/// The log file, its writer, and the connection that applies it.
pub struct LogFile {
    writer: tokio::sync::Mutex<SqliteConnection>,
    /// The last sequence number durably appended (acknowledged reports are at or below it).
    committed: AtomicI64,
    /// The last sequence number applied to the main database (published after that commit).
    applied: AtomicI64,
    /// Reports appended and not applied yet.
    pending: AtomicI64,
    /// To the main database, the log file attached as `log`; only ever reads the log file.
    applier: tokio::sync::Mutex<SqliteConnection>,
    /// [`apply_statements`].
    apply: [String; 3],
}

impl LogFile {
    /// Opens (creating) the log file of the database at `db` and the applying connection
    /// (`main` are the main database's options). The main database must be migrated.
    pub async fn open(db: &Path, main: &SqliteConnectOptions) -> anyhow::Result<Self> {
        let mut applier = SqliteConnection::connect_with(
            &main
                .clone()
                .pragma("temp_store", "MEMORY")
                .pragma("cache_size", super::sqlite::WRITER_CACHE_KIB)
                .thread_name(|_| super::sqlite::BACKGROUND_THREADS[0].to_string()),
        )
        .await
        .context("opening the check-in log's applying connection")?;
        let path = log_path(db);
        let mut conn = SqliteConnection::connect_with(
            &main
                .clone()
                .filename(&path)
                .foreign_keys(false)
                .pragma("temp_store", "MEMORY")
                // Checkpointed by the committing connection (SQLite's default), although the
                // background checkpointer covers this file too: SQLite restarts a write-ahead
                // log from its start only when a transaction begins with every frame already
                // checkpointed, and under sustained appends the background checkpoint never
                // finds that moment — the file grew by every batch (71 MB after 8 s of the
                // check-in benchmark), and each commit's fsync then also journals the growth
                // (an appending write with fsync measured 160 µs here, an overwriting one
                // 88 µs). Checkpointed here the file stays near 1,000 pages, overwritten in
                // place, and the median batch commits faster (523–541 µs vs 599–646 µs).
                .pragma("wal_autocheckpoint", LOG_AUTOCHECKPOINT_PAGES),
        )
        .await
        .with_context(|| format!("opening check-in log {}", path.display()))?;
        sqlx::query(LOG_SCHEMA).execute(&mut conn).await?;
        if sqlx::query_scalar::<_, bool>(LEGACY_LOG_EXISTS)
            .fetch_one(&mut conn)
            .await?
        {
            // A log file written by an earlier version: its unapplied reports become the
            // first batch (the batch table's own mark starts at 0).
            let legacy_applied: Option<i64> = sqlx::query_scalar(LEGACY_APPLIED_SEQ)
                .fetch_optional(&mut applier)
                .await?;
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(LEGACY_LOG_TO_BATCH.as_str()))
                .bind(legacy_applied.unwrap_or(0))
                .execute(&mut conn)
                .await
            {
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                return Err(anyhow::Error::new(e)
                    .context(format!("moving check-in log {} to batches", path.display())));
            }
        }
        let head: i64 = sqlx::query_scalar(LOG_FILE_HEAD)
            .fetch_one(&mut conn)
            .await?;
        let recorded: Option<i64> = sqlx::query_scalar(APPLIED_SEQ)
            .fetch_optional(&mut applier)
            .await?;
        let mut applied = recorded.unwrap_or(0);
        if applied > head {
            // The file does not go with the record (replaced, restored from an older
            // backup, or lost): its sequence restarted, so everything in it is new. (The
            // other way round, a main database older than the file, re-applies rows,
            // which is harmless: applying keeps the newer report.)
            tracing::warn!(
                log = %path.display(),
                applied,
                head,
                "check-in log file is behind the applied mark; applying all of it"
            );
            applied = 0;
            sqlx::query(SET_APPLIED_SEQ)
                .bind(0i64)
                .execute(&mut applier)
                .await?;
        }
        let pending: i64 = sqlx::query_scalar(PENDING_REPORTS)
            .bind(applied)
            .fetch_one(&mut conn)
            .await?;
        sqlx::query("ATTACH DATABASE $1 AS log")
            .bind(path.to_string_lossy().into_owned())
            .execute(&mut applier)
            .await
            .with_context(|| format!("attaching check-in log {}", path.display()))?;
        let main_log: String = sqlx::query_scalar(MAIN_LOG_TABLE_SQL)
            .fetch_one(&mut applier)
            .await?;
        let create_run = main_log
            .strip_prefix(MAIN_LOG_TABLE)
            .map(|columns| format!("{RUN_TABLE}{columns}"))
            .with_context(|| format!("unexpected client_checkin_log table: {main_log}"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(create_run))
            .execute(&mut applier)
            .await?;
        Ok(Self {
            writer: tokio::sync::Mutex::new(conn),
            committed: AtomicI64::new(head),
            applied: AtomicI64::new(applied),
            pending: AtomicI64::new(pending),
            applier: tokio::sync::Mutex::new(applier),
            apply: apply_statements(),
        })
    }

    /// Appends a batch of `reports` reports (`rows`: their
    /// [`log_rows_json`](super::checkins::log_rows_json)) in one transaction; returns once it
    /// is durable. The transaction also trims the batches applied so far.
    pub async fn append(&self, reports: usize, rows: &str) -> Result<(), sqlx::Error> {
        let mut writer = self.writer.lock().await;
        let applied = self.applied.load(Ordering::Acquire);
        let reports = i64::try_from(reports).unwrap_or(i64::MAX);
        // One round trip to SQLite's worker thread for the whole transaction. Under load each
        // step's await also waited to be scheduled (measured per batch: `BEGIN` 0.25 ms,
        // the inserts 0.35 ms, `COMMIT` 0.42 ms); in one round trip a batch took 0.94–1.04 ms
        // instead of 1.02–1.08 ms — most of the time is the commit's, on a busy machine.
        let done = sqlx::query(APPEND_TRANSACTION)
            .bind(applied)
            .bind(reports)
            .bind(rows)
            .execute(&mut *writer)
            .await;
        match done {
            Ok(done) => {
                // Before the acknowledgements: a view read after one must find the row pending.
                self.pending.fetch_add(reports, Ordering::AcqRel);
                self.committed
                    .fetch_max(done.last_insert_rowid(), Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                // Whichever statement failed, the transaction must not stay open on the
                // connection (nothing of it was committed).
                let _ = sqlx::query("ROLLBACK").execute(&mut *writer).await;
                Err(e)
            }
        }
    }

    /// Applies about `limit` logged reports (whole batches: the last may take it past
    /// `limit`), up to what was committed when called; returns how many (fewer than `limit`:
    /// nothing was left then).
    pub async fn apply(&self, limit: usize) -> StorageResult<usize> {
        self.apply_run(self.committed.load(Ordering::Acquire), limit)
            .await
    }

    /// Applies everything committed before the call (what a view read must include).
    pub async fn drain(&self, run: usize) -> StorageResult<()> {
        let upto = self.committed.load(Ordering::Acquire);
        while self.applied.load(Ordering::Acquire) < upto {
            self.apply_run(upto, run).await?;
        }
        Ok(())
    }

    /// Reports logged and not applied yet.
    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Applies the batches after the applied mark, up to `upto` and until they hold `limit`
    /// reports, in one transaction of the main database that also moves the mark.
    async fn apply_run(&self, upto: i64, limit: usize) -> StorageResult<usize> {
        let mut conn = self.applier.lock().await;
        // Read under the lock: a concurrent drain may have applied meanwhile.
        let first = self.applied.load(Ordering::Acquire) + 1;
        if upto < first {
            return Ok(0);
        }
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        // Deferred: the first write takes the main database's write lock (and only a read
        // snapshot of the log file); `IMMEDIATE` would lock the attached log file too.
        let mut tx = conn.begin().await.map_err(map_err)?;
        // Whole batches until the run holds `limit` reports (each batch holds at least one).
        let batches: Vec<(i64, i64)> = sqlx::query_as(RUN_BATCHES)
            .bind(first)
            .bind(upto)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let (mut last, mut applied) = (first - 1, 0i64);
        for (seq, reports) in batches {
            if applied >= limit {
                break;
            }
            (last, applied) = (seq, applied + reports);
        }
        if last >= first {
            sqlx::query(FILL_RUN.as_str())
                .bind(first)
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            let (from, to) = (first << RUN_SEQ_SHIFT, ((last + 1) << RUN_SEQ_SHIFT) - 1);
            for statement in &self.apply {
                sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
            sqlx::query(EMPTY_RUN)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        // Under `limit`: every batch up to `upto` was read (each holds a report at least).
        let mark = if applied < limit { upto } else { last };
        sqlx::query(SET_APPLIED_SEQ)
            .bind(mark)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        self.applied.store(mark, Ordering::Release);
        self.pending.fetch_sub(applied, Ordering::AcqRel);
        Ok(usize::try_from(applied).unwrap_or(0))
    }
}

/// Tenants where a Graph PATCH may have set an override of the check-in views (SQLite: only
/// this process writes, so this is exact). A batch for one of them is logged in the main
/// database, in the transaction that ends the override; all others go to the log file.
///
/// Each tenant carries a generation, raised by every Graph transaction that leaves an override
/// set (before it commits, under SQLite's write lock); a batch that ended the tenant's last
/// override removes it only if no such transaction came in between.
#[derive(Default)]
pub struct OverriddenTenants(Mutex<HashMap<String, u64>>);

impl OverriddenTenants {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mark(&self, tenant: &str) {
        *self.map().entry(tenant.to_string()).or_insert(0) += 1;
    }

    pub fn any<'a>(&self, mut tenants: impl Iterator<Item = &'a str>) -> bool {
        let map = self.map();
        !map.is_empty() && tenants.any(|t| map.contains_key(t))
    }

    /// The generations of `tenants` now (those marked).
    pub fn generations<'a>(&self, tenants: impl Iterator<Item = &'a str>) -> Vec<(String, u64)> {
        let map = self.map();
        tenants
            .filter_map(|t| map.get(t).map(|g| (t.to_string(), *g)))
            .collect()
    }

    /// Unmarks `tenant` unless it was marked again since `generation`.
    pub fn unmark(&self, tenant: &str, generation: u64) {
        let mut map = self.map();
        if map.get(tenant) == Some(&generation) {
            map.remove(tenant);
        }
    }
}

/// Whether tenant `$1` has an override of its check-in views set anywhere.
pub const TENANT_HAS_OVERRIDE: &str = "SELECT EXISTS (SELECT 1 FROM office_configurations WHERE tenant_id = $1 AND checkin_override) OR EXISTS (SELECT 1 FROM client_configurations WHERE tenant_id = $1 AND checkin_override)";
/// Every tenant with an override set (at start-up).
pub const TENANTS_WITH_OVERRIDES: &str = "SELECT tenant_id FROM office_configurations WHERE checkin_override UNION SELECT tenant_id FROM client_configurations WHERE checkin_override";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Checkin, TenantId};
    use crate::storage::Store;
    use crate::storage::sqlite::SqliteStore;
    use time::OffsetDateTime;

    fn checkin(device: &str, at: OffsetDateTime) -> Checkin {
        Checkin::sample("contoso", device, at, &[])
    }

    async fn devices(store: &SqliteStore) -> Vec<String> {
        let tenant = TenantId::parse("contoso").unwrap();
        let since = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let mut names: Vec<String> = store
            .tenant_checkin_view(&tenant, since, 1000)
            .await
            .unwrap()
            .statuses
            .into_iter()
            .filter_map(|s| s.device_name)
            .collect();
        names.sort();
        names
    }

    /// Records `batches` batches of `size` new devices each, as `PC-<batch>-<device>`.
    async fn record_batches(store: &SqliteStore, batches: usize, size: usize) {
        let now = OffsetDateTime::now_utc();
        for b in 0..batches {
            let batch: Vec<Checkin> = (0..size)
                .map(|d| checkin(&format!("PC-{b}-{d}"), now))
                .collect();
            store.record_checkins(&batch).await.unwrap();
        }
    }

    /// Applied rows are trimmed from the log file; its sequence goes on across a restart, so
    /// nothing logged later is taken for applied; and what a restart finds logged but not
    /// applied is applied then.
    #[tokio::test]
    async fn the_log_sequence_survives_trimming_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cirrus.sqlite3");
        let now = OffsetDateTime::now_utc();
        {
            let store = SqliteStore::open(&db, true).await.unwrap();
            store
                .record_checkins(&[checkin("PC-1", now)])
                .await
                .unwrap();
            assert_eq!(store.materialize_checkins(100).await.unwrap(), 1);
            // Trims PC-1's row (applied) in the same transaction.
            store
                .record_checkins(&[checkin("PC-2", now)])
                .await
                .unwrap();
            assert_eq!(store.materialize_checkins(100).await.unwrap(), 1);
            store
                .record_checkins(&[checkin("PC-3", now)])
                .await
                .unwrap();
            // Trims PC-2, leaves PC-3 logged and unapplied.
            store
                .record_checkins(&[checkin("PC-4", now)])
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&db, true).await.unwrap();
        assert_eq!(store.checkin_log_pending(), 2, "PC-3 and PC-4");
        store
            .record_checkins(&[checkin("PC-5", now)])
            .await
            .unwrap();
        assert_eq!(
            devices(&store).await,
            ["PC-1", "PC-2", "PC-3", "PC-4", "PC-5"]
        );
        assert_eq!(store.checkin_log_pending(), 0);
    }

    /// The log file's write-ahead log is restarted from its start under continuous appends,
    /// rather than growing by every batch until the appends pause.
    #[tokio::test]
    async fn the_log_files_write_ahead_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cirrus.sqlite3");
        let store = SqliteStore::open(&db, true).await.unwrap();
        record_batches(&store, 800, 8).await;
        let wal = std::fs::metadata(format!("{}-wal", log_path(&db).display()))
            .unwrap()
            .len();
        // About 2,100 pages were appended in all (4 KiB each): 8.8 MB when the writer left
        // checkpointing to the background.
        assert!(wal < 1500 * 4096, "the log's WAL is {wal} bytes");
        assert_eq!(store.checkin_log_pending(), 6400);
    }

    /// Migration 0006 (client_checkins in key order) keeps every stored report.
    #[tokio::test]
    async fn upgrading_to_keyed_checkins_keeps_the_reports() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cirrus.sqlite3");
        let pool = crate::storage::sqlite::migrated_to(&db, 5).await;
        for d in 0..3 {
            sqlx::query("INSERT INTO client_checkins (tenant_id, user_id, device_key, device_name, was_successful, checkin_date_time, applied_policies) VALUES ('contoso', '00000000-0000-4000-8000-000000000001', $1, $2, 1, $3, '[]')")
                .bind(format!("pc-{d}"))
                .bind(format!("PC-{d}"))
                .bind(crate::storage::sql::micros(OffsetDateTime::now_utc()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        let store = SqliteStore::open(&db, true).await.unwrap();
        assert_eq!(devices(&store).await, ["PC-0", "PC-1", "PC-2"]);
        store
            .record_checkins(&[checkin("pc-1", OffsetDateTime::now_utc())])
            .await
            .unwrap();
        assert_eq!(devices(&store).await, ["PC-0", "PC-2", "pc-1"]);
    }

    /// A log file replaced by an older or new one (its sequence behind the applied mark)
    /// has everything in it applied, not skipped.
    #[tokio::test]
    async fn a_log_file_behind_the_applied_mark_is_applied_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cirrus.sqlite3");
        let now = OffsetDateTime::now_utc();
        {
            let store = SqliteStore::open(&db, true).await.unwrap();
            for d in 0..5 {
                store
                    .record_checkins(&[checkin(&format!("OLD-{d}"), now)])
                    .await
                    .unwrap();
            }
            assert_eq!(store.materialize_checkins(100).await.unwrap(), 5);
        }
        let log = log_path(&db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", log.display()));
        }
        let store = SqliteStore::open(&db, true).await.unwrap();
        store.record_checkins(&[checkin("NEW", now)]).await.unwrap();
        let seen = devices(&store).await;
        assert!(seen.contains(&"NEW".to_string()), "{seen:?}");
        assert_eq!(seen.len(), 6);
    }

    /// A log file of an earlier version (one row per report, its applied mark in shard 0):
    /// opening moves the reports after the mark into a batch, which is applied; the reports
    /// before it were applied then and are not applied again.
    #[tokio::test]
    async fn a_per_report_log_file_is_moved_into_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cirrus.sqlite3");
        let now = OffsetDateTime::now_utc();
        let rows: Vec<Checkin> = (1..=5).map(|d| checkin(&format!("PC-{d}"), now)).collect();
        {
            let store = SqliteStore::open(&db, true).await.unwrap();
            drop(store);
            let log = log_path(&db);
            let mut conn = SqliteConnection::connect(&format!("sqlite://{}", log.display()))
                .await
                .unwrap();
            let mut main = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            // The per-report table: the main database's, as the log file's was.
            let table: String = sqlx::query_scalar(MAIN_LOG_TABLE_SQL)
                .fetch_one(&mut main)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP TABLE client_checkin_log_batches; DELETE FROM sqlite_sequence; {table}"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            // The per-report append of earlier versions (the main database's still).
            sqlx::query(sqlx::AssertSqlSafe(
                crate::storage::checkins::APPEND_LOG_JSON.as_str(),
            ))
            .bind(crate::storage::checkins::log_rows_json(&rows).unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
            sqlx::query("INSERT INTO client_checkin_log_shards (shard, applied_seq) VALUES (0, 2)")
                .execute(&mut main)
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&db, true).await.unwrap();
        assert_eq!(store.checkin_log_pending(), 3, "PC-3 to PC-5");
        store
            .record_checkins(&[checkin("PC-6", now)])
            .await
            .unwrap();
        assert_eq!(devices(&store).await, ["PC-3", "PC-4", "PC-5", "PC-6"]);
        assert_eq!(store.checkin_log_pending(), 0);
        drop(store);
        // Moved once: reopening finds the batch table only, everything applied.
        let store = SqliteStore::open(&db, true).await.unwrap();
        assert_eq!(store.checkin_log_pending(), 0);
        assert_eq!(devices(&store).await, ["PC-3", "PC-4", "PC-5", "PC-6"]);
    }

    /// A run ends with whole batches: past the limit by the last batch's reports at most, and
    /// the next run goes on from there.
    #[tokio::test]
    async fn a_run_applies_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cirrus.sqlite3");
        let store = SqliteStore::open(&db, true).await.unwrap();
        record_batches(&store, 3, 4).await;
        assert_eq!(store.checkin_log_pending(), 12);
        assert_eq!(store.materialize_checkins(6).await.unwrap(), 8);
        assert_eq!(store.checkin_log_pending(), 4);
        assert_eq!(store.materialize_checkins(6).await.unwrap(), 4);
        assert_eq!(store.materialize_checkins(6).await.unwrap(), 0);
        assert_eq!(devices(&store).await.len(), 12);
    }

    #[test]
    fn apply_statements_read_the_attached_log_file() {
        for statement in apply_statements() {
            assert!(statement.contains("FROM temp.checkin_run "), "{statement}");
            assert!(
                !statement.contains("FROM client_checkin_log "),
                "{statement}"
            );
        }
    }

    #[test]
    fn the_log_file_sits_next_to_the_database() {
        assert_eq!(
            log_path(Path::new("/data/cirrus.sqlite3")),
            Path::new("/data/cirrus-checkin-log.sqlite3")
        );
    }

    #[test]
    fn a_tenant_marked_again_stays_marked() {
        let t = OverriddenTenants::default();
        assert!(!t.any(["a"].into_iter()));
        t.mark("a");
        let seen = t.generations(["a", "b"].into_iter());
        assert_eq!(seen, [("a".to_string(), 1)]);
        t.mark("a");
        t.unmark("a", 1);
        assert!(t.any(["b", "a"].into_iter()));
        t.unmark("a", 2);
        assert!(!t.any(["a"].into_iter()));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod priority_tests {
    use crate::storage::sqlite::{BACKGROUND_THREADS, SqliteStore};

    /// (thread name, nice value) of every thread of this process.
    fn threads() -> Vec<(String, i64)> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|task| {
                let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                // Fields after the parenthesised name: state is the 3rd field, nice the 19th.
                let after = stat.rsplit_once(") ")?.1;
                let nice = after.split(' ').nth(16)?.parse().ok()?;
                Some((comm.trim_end().to_string(), nice))
            })
            .collect()
    }

    /// The log's applier and the checkpointer run at nice 10 once a store is open (other
    /// tests' stores may be opening meanwhile, so at least one of each, not all).
    #[tokio::test]
    async fn background_threads_run_at_a_lower_priority() {
        let dir = tempfile::tempdir().unwrap();
        let _store = SqliteStore::open(&dir.path().join("cirrus.sqlite3"), true)
            .await
            .unwrap();
        let threads = threads();
        for name in BACKGROUND_THREADS {
            assert!(
                threads.iter().any(|(n, nice)| n == name && *nice == 10),
                "{name} at nice 10 in {threads:?}"
            );
        }
    }
}
