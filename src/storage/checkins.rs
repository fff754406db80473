//! The check-in store (DESIGN §3), shared by both SQL engines like [`super::sql`]: the latest
//! report per (tenant, user, device) in `client_checkins`, and one `client_checkin_policies`
//! row per configuration that report applied, keyed (tenant, configuration, time, user, device):
//! each configuration's view is a range of the key, and replacing a report deletes the old
//! rows by their exact keys, which the stored report gives (migration 0007).
//!
//! A group-committed batch of reports is appended to the check-in log in one transaction (on
//! PostgreSQL one `client_checkin_log_batches` row per batch, migration 0008)
//! (what the acknowledgement waits for); runs of log rows are applied to the two keyed tables
//! later, inside the database, and every view read applies what is pending first (decision 11
//! in docs/decisions.md). SQLite has one writer; on PostgreSQL applying is serialized across
//! instances by an advisory lock.

use std::sync::LazyLock;

use serde_json::Value;
use time::OffsetDateTime;

use super::StorageError;
use super::sql::{corrupt, from_micros, parse_json};
use crate::model::CheckinStatus;

pub(super) const CHECKIN_COLUMNS: &str = "tenant_id, user_id, device_key, user_principal_name, device_name, device_platform, device_platform_version, was_successful, checkin_date_time, error_message, applied_policies, last_task_name";
/// SQLite: appends a batch of reports to the check-in log from one JSON array (`$1`) of one
/// array per report, in [`CHECKIN_COLUMNS`] order ([`log_rows_json`]): one statement and one
/// parameter for any batch size. (Bound as 12 parameters a row, a batch took several
/// statements of up to 64 rows, each a round trip to SQLite's worker thread.)
///
/// `jsonb_each`, not `json_each`: `json_each` hands each report's array over as text, which
/// every one of the 12 `->>` parses again; `jsonb_each` hands it over in SQLite's binary JSON,
/// which `->>` reads in place. Measured (CPU of one batch of 24 reports, fsync excluded):
/// 264 µs with `json_each`, 144 µs with `jsonb_each` — on the acknowledgement's critical
/// path, as the log file has one writer.
pub static APPEND_LOG_JSON: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO client_checkin_log ({CHECKIN_COLUMNS}) SELECT {} FROM jsonb_each($1) ORDER BY key",
        log_row_values("value")
    )
});

/// SQLite: the [`CHECKIN_COLUMNS`] of a report's array (`array`, from [`log_rows_json`]).
pub(super) fn log_row_values(array: &str) -> String {
    (0..12)
        .map(|i| format!("{array} ->> {i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `reports` as [`APPEND_LOG_JSON`] reads them.
pub fn log_rows_json(reports: &[crate::model::Checkin]) -> Result<String, sqlx::Error> {
    let rows: Vec<_> = reports
        .iter()
        .map(|c| {
            let s = &c.status;
            (
                c.tenant.as_str(),
                s.user_id.as_str(),
                c.device_key(),
                s.user_principal_name.as_deref(),
                s.device_name.as_deref(),
                s.device_platform.as_deref(),
                s.device_platform_version.as_deref(),
                s.was_successful,
                super::sql::micros(s.checkin_date_time),
                s.error_message.as_deref(),
                applied_json(&s.applied_policies),
                s.last_task_name.as_deref(),
            )
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// SQLite: the last sequence number in the main database's log (0 when empty): what a view
/// read must see applied (PostgreSQL's log has two tables: [`PG_LOG_HEAD`]).
pub const LOG_HEAD: &str = "SELECT COALESCE(MAX(seq), 0) FROM client_checkin_log";

/// What an upsert of reports does with a stored one: replaced unless it is newer (another
/// instance's, or applied out of order).
const UPSERT_CHECKINS_TAIL: &str = "ON CONFLICT (tenant_id, user_id, device_key) DO UPDATE SET user_principal_name = excluded.user_principal_name, device_name = excluded.device_name, device_platform = excluded.device_platform, device_platform_version = excluded.device_platform_version, was_successful = excluded.was_successful, checkin_date_time = excluded.checkin_date_time, error_message = excluded.error_message, applied_policies = excluded.applied_policies, last_task_name = excluded.last_task_name \
     WHERE client_checkins.checkin_date_time <= excluded.checkin_date_time";

// SQLite applies the log inside the database: a run of log rows (`seq` from `$1` to `$2`;
// rowids are consecutive, as rows are only ever removed from the head) becomes three
// statements, with no row crossing into the process.

/// The first sequence number in the log (NULL when empty).
pub const LOG_TAIL: &str = "SELECT MIN(seq) FROM client_checkin_log";

/// SQLite: the run's reports, in log order, so of two reports with the same time the later
/// one wins.
pub static APPLY_LOG_REPORTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO client_checkins ({CHECKIN_COLUMNS}) SELECT {CHECKIN_COLUMNS} FROM client_checkin_log WHERE seq BETWEEN $1 AND $2 ORDER BY seq {UPSERT_CHECKINS_TAIL}"
    )
});

/// SQLite, before the run's reports are stored: the applied-policy rows of the reports they
/// may replace go, found by their exact keys from each stored report (its time and
/// `applied_policies`). Only applying writes `client_checkins` and these rows, so the stored
/// report's rows are exactly these (deleting a configuration only removes some of them) …
pub const DELETE_LOG_REPLACED_POLICIES: &str = "DELETE FROM client_checkin_policies WHERE (tenant_id, configuration_id, checkin_date_time, user_id, device_key) IN (\
     SELECT c.tenant_id, j.value, c.checkin_date_time, c.user_id, c.device_key \
     FROM client_checkin_log k \
     JOIN client_checkins c ON c.tenant_id = k.tenant_id AND c.user_id = k.user_id AND c.device_key = k.device_key, \
     json_each(c.applied_policies) j WHERE k.seq BETWEEN $1 AND $2 AND j.type = 'text')";

/// … and, once the reports are stored ([`APPLY_LOG_REPORTS`]), come back from each device's
/// stored report (which may be newer than the run's, and then is the one whose rows just
/// went). A device logged twice in the run yields its rows twice, and the second time they
/// conflict and are skipped: cheaper than a `DISTINCT` (a temporary B-tree, measured at
/// 1.8 µs a report).
pub const INSERT_LOG_DEVICES_POLICIES: &str = "INSERT INTO client_checkin_policies (tenant_id, configuration_id, checkin_date_time, user_id, device_key, was_successful) \
     SELECT c.tenant_id, j.value, c.checkin_date_time, c.user_id, c.device_key, c.was_successful \
     FROM client_checkin_log k \
     JOIN client_checkins c ON c.tenant_id = k.tenant_id AND c.user_id = k.user_id AND c.device_key = k.device_key, \
     json_each(c.applied_policies) j WHERE k.seq BETWEEN $1 AND $2 AND j.type = 'text' \
     ON CONFLICT DO NOTHING";

/// SQLite: a run's statements, in order.
pub fn apply_log_statements() -> [&'static str; 3] {
    [
        DELETE_LOG_REPLACED_POLICIES,
        APPLY_LOG_REPORTS.as_str(),
        INSERT_LOG_DEVICES_POLICIES,
    ]
}

/// SQLite: the run leaves the log.
pub const DELETE_LOG_RUN: &str = "DELETE FROM client_checkin_log WHERE seq BETWEEN $1 AND $2";

// PostgreSQL applies the log inside the database too: the run is taken into a temporary
// table first (rows deleted from the log). Applying is serialized across instances by a
// transaction-level advisory lock ([`APPLY_RUN_BEGIN`]), so each run sees every earlier run
// committed: the log rows it takes are not being applied by anyone else, and no other
// transaction changes a stored report between the statements that replace it.

/// PostgreSQL: the apply transaction's start. The advisory lock (one per schema, so separate
/// schemas, such as the test suite's, do not wait for each other) serializes applying. The
/// plans: each statement is driven by the run (a temporary table without statistics), and
/// probing the keyed tables' indexes per row of the run is right, but the planner chose hash
/// joins over sequential scans of the whole log, of every applied-policy row and of every
/// stored report — work that grew with the tables (measured: 22 ms per run at 123 k
/// applied-policy rows for one `DELETE`, 24 ms with index probes at any size).
///
/// The run commits without waiting for its WAL to be flushed (`synchronous_commit = off`):
/// nothing is acknowledged on it, and it is atomic with taking its rows out of the log, so a
/// crash that loses it puts those rows back in the log, to be applied again. The WAL writer
/// (or the next acknowledged batch's commit, which flushes everything before it) makes it
/// durable. Measured in the check-in benchmark (two A/B pairs): 10,369 / 10,037 → 11,091 /
/// 11,875 acknowledged check-ins a second, server CPU 63 / 65 → 56 / 54 µs a check-in.
pub static APPLY_RUN_BEGIN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
         SET LOCAL synchronous_commit = off; \
         SELECT pg_advisory_xact_lock({APPLY_LOCK})"
    )
});

/// PostgreSQL: the apply lock's two keys ('cirr' and the schema).
pub const APPLY_LOCK: &str = "1667851890, hashtext(current_schema())";

/// PostgreSQL: whether the statistics of the applied tables are stale enough to mislead the
/// apply statements' plans — `client_checkins` has more than doubled (in pages) since they
/// were last taken. Statistics taken while the table held a row or two (autovacuum analyzes a
/// table after its first 50 changes) say `tenant_id` is unique; the planner then probes the
/// stored reports of each run row through the by-time index on `tenant_id` alone, reading
/// every report of the tenant per row — measured: one run's applied-policy insert took 7.4 s,
/// and one `DELETE` was still running after 17 minutes (the backlog bound then stops
/// acknowledgements). Retaken at every doubling, they are right from about 1,000 reports on,
/// at a cost of a `log2` of the table's size of `ANALYZE`s.
pub const CHECKIN_STATISTICS_STALE: &str = "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8 > GREATEST(2 * c.relpages, 16) FROM pg_class c WHERE c.oid = 'client_checkins'::regclass";
/// PostgreSQL: retakes the statistics of the applied tables, in a transaction, from a small
/// sample (3,000 rows, a statistics target of 10, not the default 100's 30,000): the plans
/// only need the tables' sizes and the shape of their keys, and this runs in the apply stream
/// — measured at 100 k reports, 200 ms with the default target, 27–31 ms with this one.
/// Autovacuum's analyses later take the full sample.
pub const ANALYZE_CHECKIN_TABLES: &str =
    "SET LOCAL default_statistics_target = 10; ANALYZE client_checkins, client_checkin_policies";

/// PostgreSQL: the session's table for the run being applied (emptied at every commit): a row
/// per report, with its log row's `seq` and its place in that row's batch (`ord`; 0 for a row
/// of the per-report log).
pub const CREATE_CHECKIN_RUN: &str = "CREATE TEMPORARY TABLE IF NOT EXISTS checkin_run (LIKE client_checkin_log, ord BIGINT NOT NULL) ON COMMIT DELETE ROWS";

/// PostgreSQL: the log's last sequence number (0 when empty), over both of its tables (they
/// share one sequence): a batch per row (`client_checkin_log_batches`, migration 0008) and, from
/// before that or from an instance still running an earlier version, a report per row.
pub const PG_LOG_HEAD: &str = "SELECT GREATEST((SELECT COALESCE(MAX(seq), 0) FROM client_checkin_log_batches), (SELECT COALESCE(MAX(seq), 0) FROM client_checkin_log))";

/// PostgreSQL: takes the oldest logged reports up to sequence `$1` into the run: whole batches
/// until `$2` reports or more are taken, and at most `$2` rows of the per-report log. No `FOR
/// UPDATE` is needed (it wrote each row twice): under the apply lock no other run holds log
/// rows, and this statement's snapshot, taken after the lock was granted, has every earlier
/// run's deletions.
pub static TAKE_LOG_INTO_RUN: LazyLock<String> = LazyLock::new(|| {
    let u = CHECKIN_COLUMNS
        .split(", ")
        .map(|c| format!("b.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH batches AS (\
             DELETE FROM client_checkin_log_batches WHERE seq IN (\
                 SELECT seq FROM (SELECT seq, SUM(reports) OVER (ORDER BY seq) - reports AS before FROM client_checkin_log_batches WHERE seq <= $1) w WHERE before < $2) \
             RETURNING *), \
         rows AS (\
             DELETE FROM client_checkin_log WHERE seq IN (SELECT seq FROM client_checkin_log WHERE seq <= $1 ORDER BY seq LIMIT $2) RETURNING *) \
         INSERT INTO checkin_run (seq, {CHECKIN_COLUMNS}, ord) \
         SELECT seq, {CHECKIN_COLUMNS}, 0 FROM rows \
         UNION ALL SELECT b.seq, r.* FROM batches b, UNNEST({u}) WITH ORDINALITY AS r({CHECKIN_COLUMNS}, ord)"
    )
});

/// PostgreSQL, before the run's reports are stored: the applied-policy rows of the reports
/// they will replace go — the stored reports no newer than the run's latest for their device,
/// which is exactly when [`APPLY_RUN_REPORTS`]'s upsert replaces one — found by their exact
/// keys from each stored report (its time and `applied_policies`; only applying writes these
/// tables, and it is serialized) …
pub const DELETE_RUN_REPLACED_POLICIES: &str = "DELETE FROM client_checkin_policies p USING (\
     SELECT c.tenant_id, j.id, c.checkin_date_time, c.user_id, c.device_key \
     FROM (SELECT tenant_id, user_id, device_key, MAX(checkin_date_time) AS latest FROM checkin_run GROUP BY tenant_id, user_id, device_key) k \
     JOIN client_checkins c ON c.tenant_id = k.tenant_id AND c.user_id = k.user_id AND c.device_key = k.device_key AND c.checkin_date_time <= k.latest \
     CROSS JOIN LATERAL jsonb_array_elements_text(c.applied_policies::jsonb) AS j(id) WHERE j.id IS NOT NULL) o \
     WHERE p.tenant_id = o.tenant_id AND p.configuration_id = o.id AND p.checkin_date_time = o.checkin_date_time \
     AND p.user_id = o.user_id AND p.device_key = o.device_key";

/// PostgreSQL: … then, in one statement, the run's latest report per device is stored (an
/// upsert may touch a row once), in key order, and the applied-policy rows of the reports it
/// stored — the ones it returns: inserted, or replacing one no newer — are inserted from what
/// it returns. A device whose stored report is newer keeps it and its rows (neither deleted
/// above nor returned here). (The rows used to come back from a probe of `client_checkins`
/// per device after the upsert, a separate statement: a lookup per report more, and with
/// statistics taken while the table held a few rows the planner probed through the by-time
/// index on `tenant_id` alone, reading every report the run had just stored per report —
/// the first run of 8,192 reports on a fresh database took 6.1 s.)
///
/// No `ON CONFLICT` on the applied-policy rows: nothing can conflict, and a speculative
/// insertion cost about 60 % more (measured: 8,192 reports' 24,576 rows, about 10 µs a
/// report). The rows are distinct (one stored report per device of the run, and each report's
/// ids made distinct on their own — cheaper than a `DISTINCT` over all the run's rows, a sort
/// that spilled to disk at the default `work_mem`: 7–12 % off this statement),
/// [`DELETE_RUN_REPLACED_POLICIES`] removed the stored rows of the reports replaced, and no
/// other run adds any until this one commits (the apply lock). Should a unique violation come
/// anyway, the run is applied again with [`APPLY_RUN_REPORTS_SAFE`].
pub static APPLY_RUN_REPORTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH stored AS (\
             INSERT INTO client_checkins ({CHECKIN_COLUMNS}) SELECT DISTINCT ON (tenant_id, user_id, device_key) {CHECKIN_COLUMNS} FROM checkin_run ORDER BY tenant_id, user_id, device_key, checkin_date_time DESC, seq DESC, ord DESC {UPSERT_CHECKINS_TAIL} \
             RETURNING tenant_id, user_id, device_key, checkin_date_time, applied_policies, was_successful) \
         INSERT INTO client_checkin_policies (tenant_id, configuration_id, checkin_date_time, user_id, device_key, was_successful) \
         SELECT s.tenant_id, j.id, s.checkin_date_time, s.user_id, s.device_key, s.was_successful FROM stored s \
         CROSS JOIN LATERAL (SELECT DISTINCT e.id FROM jsonb_array_elements_text(s.applied_policies::jsonb) AS e(id) WHERE e.id IS NOT NULL) j"
    )
});

/// [`APPLY_RUN_REPORTS`] skipping applied-policy rows that exist (the fallback).
pub static APPLY_RUN_REPORTS_SAFE: LazyLock<String> =
    LazyLock::new(|| format!("{} ON CONFLICT DO NOTHING", APPLY_RUN_REPORTS.as_str()));

/// PostgreSQL: a whole check-in batch in one statement (run as its own transaction): the
/// reports appended to the log as one row of one array per column (`$1`–`$12`), and the
/// overrides of the batch's tenants (`$13`) and of the configurations its reports applied
/// (`$14` tenants and `$15` ids, pairwise) ended. Returns the tenants where an override ended,
/// and the reports appended.
pub static APPEND_LOG_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH appended AS (\
             INSERT INTO client_checkin_log_batches (reports, {CHECKIN_COLUMNS}) VALUES (cardinality($1::text[]), $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[], $9::int8[], $10::text[], $11::text[], $12::text[]) RETURNING reports), \
         office AS (\
             UPDATE office_configurations SET checkin_override = FALSE \
             WHERE tenant_id = ANY($13::text[]) AND checkin_override RETURNING tenant_id), \
         configurations AS (\
             UPDATE client_configurations c SET checkin_override = FALSE \
             FROM UNNEST($14::text[], $15::text[]) AS s(tenant_id, id) \
             WHERE c.tenant_id = s.tenant_id AND c.id = s.id AND c.checkin_override RETURNING c.tenant_id) \
         SELECT ARRAY(SELECT tenant_id FROM office UNION SELECT tenant_id FROM configurations), \
             (SELECT COALESCE(SUM(reports), 0) FROM appended)::int8"
    )
});

/// PostgreSQL: after batches committed, one notification per tenant on channel `$1`
/// (payloads `$2`), in a transaction of its own. Not in the batch's transaction: PostgreSQL
/// holds one database-wide lock from a notifying transaction's commit until its commit is
/// flushed, so batches that notify commit one at a time and cannot share a WAL flush
/// (measured: one writer always waiting on it). A transaction that only notifies writes no
/// WAL and is not flushed, so it holds that lock for microseconds.
pub const NOTIFY_BATCH: &str = "SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p";

/// The scopes of a check-in batch, whose Graph-PATCH overrides it ends: each tenant, with the
/// ids of the configurations its reports applied.
pub type CheckinScopes<'a> =
    std::collections::BTreeMap<&'a str, std::collections::BTreeSet<&'a str>>;

/// SQLite: ends a Graph PATCH's override of the tenant's check-in views: `$1` false, `$2`
/// tenant, `$3` true. (PostgreSQL does this inside [`APPEND_LOG_BATCH`].)
pub const CLEAR_OFFICE_OVERRIDE: &str = "UPDATE office_configurations SET checkin_override = $1 WHERE tenant_id = $2 AND checkin_override = $3";

/// SQLite: the same for configurations of one tenant: `$1` false, `$2` tenant, `$3` true,
/// `$4` the ids as a JSON array of strings (one statement for any number of them).
pub const CLEAR_CONFIG_OVERRIDES: &str = "UPDATE client_configurations SET checkin_override = $1 WHERE tenant_id = $2 AND checkin_override = $3 AND id IN (SELECT value FROM json_each($4))";

pub const DELETE_CONFIG_CHECKINS: &str =
    "DELETE FROM client_checkin_policies WHERE tenant_id = $1 AND configuration_id = $2";

const STATUS_COLUMNS: &str = "c.user_id, c.user_principal_name, c.device_name, c.device_platform, c.device_platform_version, c.was_successful, c.checkin_date_time, c.error_message, c.applied_policies, c.last_task_name";

/// The tenant's newest statuses in the window: `$1` tenant, `$2` window start, `$3` cap.
pub fn tenant_statuses_sql() -> String {
    format!(
        "SELECT {STATUS_COLUMNS} FROM client_checkins c WHERE c.tenant_id = $1 AND c.checkin_date_time >= $2 ORDER BY c.checkin_date_time DESC, c.user_id, c.device_key LIMIT $3"
    )
}

/// Distinct users of the tenant by the outcome of their latest check-in in the window.
pub const TENANT_SUMMARY: &str = "SELECT was_successful, COUNT(*) AS n FROM (SELECT was_successful, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY checkin_date_time DESC, device_key) AS rn FROM client_checkins WHERE tenant_id = $1 AND checkin_date_time >= $2) latest WHERE rn = 1 GROUP BY was_successful";

/// `$3, $4, …` for `n` configuration ids after the tenant and window start.
fn id_list(n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", i + 3))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per configuration (of `n` ids), its newest statuses in the window; the cap is `$n+3`.
pub fn configuration_statuses_sql(n: usize) -> String {
    format!(
        "SELECT p.configuration_id, {STATUS_COLUMNS} FROM (SELECT configuration_id, user_id, device_key, ROW_NUMBER() OVER (PARTITION BY configuration_id ORDER BY checkin_date_time DESC, user_id, device_key) AS rn FROM client_checkin_policies WHERE tenant_id = $1 AND checkin_date_time >= $2 AND configuration_id IN ({ids})) p \
         JOIN client_checkins c ON c.tenant_id = $1 AND c.user_id = p.user_id AND c.device_key = p.device_key \
         WHERE p.rn <= ${cap} ORDER BY p.configuration_id, c.checkin_date_time DESC, c.user_id, c.device_key",
        ids = id_list(n),
        cap = n + 3
    )
}

/// Per configuration, distinct users by the outcome of their latest check-in that applied it.
pub fn configuration_summaries_sql(n: usize) -> String {
    format!(
        "SELECT configuration_id, was_successful, COUNT(*) AS n FROM (SELECT configuration_id, was_successful, ROW_NUMBER() OVER (PARTITION BY configuration_id, user_id ORDER BY checkin_date_time DESC, device_key) AS rn FROM client_checkin_policies WHERE tenant_id = $1 AND checkin_date_time >= $2 AND configuration_id IN ({ids})) latest WHERE rn = 1 GROUP BY configuration_id, was_successful",
        ids = id_list(n)
    )
}

/// The raw columns of one status row, decoded by [`status_from_columns`].
pub struct StatusColumns {
    pub user_id: String,
    pub user_principal_name: Option<String>,
    pub device_name: Option<String>,
    pub device_platform: Option<String>,
    pub device_platform_version: Option<String>,
    pub was_successful: bool,
    pub checkin_date_time: i64,
    pub error_message: Option<String>,
    pub applied_policies: String,
    pub last_task_name: Option<String>,
}

pub fn status_from_columns(c: StatusColumns) -> Result<CheckinStatus, StorageError> {
    let applied = match parse_json(&c.applied_policies, "applied_policies")? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(Some(s)),
                Value::Null => Ok(None),
                other => Err(corrupt("applied_policies", other)),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(corrupt("applied_policies", other)),
    };
    Ok(CheckinStatus {
        user_id: c.user_id,
        user_principal_name: c.user_principal_name,
        device_name: c.device_name,
        device_platform: c.device_platform,
        device_platform_version: c.device_platform_version,
        was_successful: c.was_successful,
        checkin_date_time: from_micros(c.checkin_date_time)?,
        error_message: c.error_message,
        applied_policies: applied,
        last_task_name: c.last_task_name,
    })
}

/// The statement with each `$N` turned into an anonymous `?`, for SQLite: binding looks up
/// every parameter's name, and SQLite finds a named parameter by a linear search, so binding a
/// statement of n numbered parameters costs O(n²) (a 768-parameter batch statement spent most
/// of the writer's time there); anonymous ones cost nothing. Only for statements whose
/// parameters appear once each, in order `$1, $2, …`.
pub fn anonymous_params(sql: String) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut expected = 1usize;
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n * 10 + d as usize;
                chars.next();
            }
            debug_assert_eq!(n, expected, "parameters out of order in {sql}");
            expected += 1;
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// Log rows applied per transaction when a view read catches up.
pub const DRAIN_BATCH: usize = 4096;

/// `appliedPolicies` as stored: a JSON array of strings (or nulls, from a Graph PATCH).
pub fn applied_json(applied: &[Option<String>]) -> String {
    serde_json::to_string(applied).unwrap_or_else(|_| "[]".to_string())
}

/// Window start as stored (microseconds).
pub fn since_micros(t: OffsetDateTime) -> i64 {
    super::sql::micros(t)
}

/// Adds the check-in methods to an engine's store (`$store` must have a `writer` and a
/// `reader` pool, a `changes` feed and inherent methods `append_log(batch, scopes)` (one
/// durable append of a batch, ending the overrides in `scopes`: tenant → configuration ids;
/// returns the tenants where it ended one), `checkins_drain()` (applies every report logged
/// before the call) and `checkins_materialize(limit)` (the materializer's pass)). The `Store`
/// impl in [`super::sql`] calls these.
macro_rules! checkin_engine {
    ($store:ident, $db:ty, $row:ty) => {
        fn status_from_row(
            row: &$row,
            offset: usize,
        ) -> $crate::storage::StorageResult<$crate::model::CheckinStatus> {
            use sqlx::Row as _;
            use $crate::storage::checkins::*;
            use $crate::storage::sql::map_err;
            status_from_columns(StatusColumns {
                user_id: row.try_get(offset).map_err(map_err)?,
                user_principal_name: row.try_get(offset + 1).map_err(map_err)?,
                device_name: row.try_get(offset + 2).map_err(map_err)?,
                device_platform: row.try_get(offset + 3).map_err(map_err)?,
                device_platform_version: row.try_get(offset + 4).map_err(map_err)?,
                was_successful: row.try_get(offset + 5).map_err(map_err)?,
                checkin_date_time: row.try_get(offset + 6).map_err(map_err)?,
                error_message: row.try_get(offset + 7).map_err(map_err)?,
                applied_policies: row.try_get(offset + 8).map_err(map_err)?,
                last_task_name: row.try_get(offset + 9).map_err(map_err)?,
            })
        }

        fn summary_add(summary: &mut $crate::model::UserCheckinSummary, succeeded: bool, n: i64) {
            let n = i32::try_from(n).unwrap_or(i32::MAX);
            if succeeded {
                summary.succeeded_user_count = summary.succeeded_user_count.saturating_add(n);
            } else {
                summary.failed_user_count = summary.failed_user_count.saturating_add(n);
            }
        }

        impl $store {
            /// Appends a batch of reports to the check-in log in one transaction (they are
            /// acknowledged once it commits) and ends the Graph overrides in their scopes;
            /// returns the tenants whose singleton or configurations that changed. Each
            /// engine's `append_log` writes the batch its own way.
            async fn checkins_record(
                &self,
                batch: &[$crate::model::Checkin],
            ) -> $crate::storage::StorageResult<Vec<$crate::model::TenantId>> {
                use std::collections::BTreeMap;
                use $crate::storage::sql::map_err;
                // A check-in ends a Graph PATCH's override in its scope (DESIGN §3): the
                // tenant's, and each configuration's it applied.
                let mut scopes: $crate::storage::checkins::CheckinScopes = BTreeMap::new();
                for c in batch {
                    let ids = scopes.entry(c.tenant.as_str()).or_default();
                    ids.extend(
                        c.status
                            .applied_policies
                            .iter()
                            .flatten()
                            .map(String::as_str),
                    );
                }
                let appended = self.append_log(batch, &scopes).await.map_err(map_err);
                // Even on an error (a commit may have gone through): a needless bump is cheap.
                for tenant in scopes
                    .keys()
                    .filter_map(|t| $crate::model::TenantId::parse(t))
                {
                    self.changes
                        .bump(&tenant, $crate::storage::changes::Topic::Checkins);
                }
                Ok(appended?
                    .iter()
                    .filter_map(|t| $crate::model::TenantId::parse(t))
                    .collect())
            }

            async fn checkins_tenant_view(
                &self,
                tenant: &$crate::model::TenantId,
                since: time::OffsetDateTime,
                cap: u32,
            ) -> $crate::storage::StorageResult<$crate::model::CheckinView> {
                use sqlx::Row as _;
                use $crate::storage::checkins::*;
                use $crate::storage::sql::map_err;
                self.checkins_drain().await?;
                let since = since_micros(since);
                let rows = sqlx::query(sqlx::AssertSqlSafe(tenant_statuses_sql()))
                    .bind(tenant.as_str())
                    .bind(since)
                    .bind(i64::from(cap))
                    .fetch_all(&self.reader)
                    .await
                    .map_err(map_err)?;
                let statuses = rows
                    .iter()
                    .map(|r| status_from_row(r, 0))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut summary = $crate::model::UserCheckinSummary::default();
                for row in sqlx::query(TENANT_SUMMARY)
                    .bind(tenant.as_str())
                    .bind(since)
                    .fetch_all(&self.reader)
                    .await
                    .map_err(map_err)?
                {
                    summary_add(
                        &mut summary,
                        row.try_get(0).map_err(map_err)?,
                        row.try_get(1).map_err(map_err)?,
                    );
                }
                Ok($crate::model::CheckinView { statuses, summary })
            }

            async fn checkins_configuration_views(
                &self,
                tenant: &$crate::model::TenantId,
                ids: &[uuid::Uuid],
                since: time::OffsetDateTime,
                cap: u32,
            ) -> $crate::storage::StorageResult<
                std::collections::HashMap<uuid::Uuid, $crate::model::CheckinView>,
            > {
                use sqlx::Row as _;
                use $crate::storage::checkins::*;
                use $crate::storage::sql::{map_err, parse_uuid};
                self.checkins_drain().await?;
                let mut views: std::collections::HashMap<uuid::Uuid, $crate::model::CheckinView> =
                    ids.iter().map(|id| (*id, Default::default())).collect();
                let since = since_micros(since);
                // Bounded statement size: a page is at most 999 items; go in chunks anyway.
                for chunk in ids.chunks(200) {
                    let id_text: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
                    let sql = configuration_statuses_sql(chunk.len());
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(tenant.as_str())
                        .bind(since);
                    for id in &id_text {
                        q = q.bind(id.as_str());
                    }
                    for row in q
                        .bind(i64::from(cap))
                        .fetch_all(&self.reader)
                        .await
                        .map_err(map_err)?
                    {
                        let id = parse_uuid(
                            &row.try_get::<String, _>(0).map_err(map_err)?,
                            "configuration_id",
                        )?;
                        let status = status_from_row(&row, 1)?;
                        if let Some(v) = views.get_mut(&id) {
                            v.statuses.push(status);
                        }
                    }
                    let sql = configuration_summaries_sql(chunk.len());
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(tenant.as_str())
                        .bind(since);
                    for id in &id_text {
                        q = q.bind(id.as_str());
                    }
                    for row in q.fetch_all(&self.reader).await.map_err(map_err)? {
                        let id = parse_uuid(
                            &row.try_get::<String, _>(0).map_err(map_err)?,
                            "configuration_id",
                        )?;
                        if let Some(v) = views.get_mut(&id) {
                            summary_add(
                                &mut v.summary,
                                row.try_get(1).map_err(map_err)?,
                                row.try_get(2).map_err(map_err)?,
                            );
                        }
                    }
                }
                Ok(views)
            }
        }
    };
}

pub(crate) use checkin_engine;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Checkin, CheckinStatus, TenantId};
    use crate::storage::Store as _;
    use crate::storage::sqlite::SqliteStore;
    use uuid::Uuid;

    #[test]
    fn sqlite_statements_use_anonymous_parameters() {
        assert_eq!(
            anonymous_params("SELECT $1, ($2)".to_string()),
            "SELECT ?, (?)".to_string()
        );
    }

    /// Every column of a report goes through the JSON batch and back as stored: text, nulls,
    /// the outcome (a JSON boolean, stored as 0/1), the time and `appliedPolicies` (a JSON
    /// text inside the JSON).
    #[tokio::test]
    async fn a_logged_report_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("checkins.sqlite3"), true)
            .await
            .unwrap();
        let tenant = TenantId::parse("contoso").unwrap();
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_000).unwrap();
        let mut failed = checkin(&tenant, "PC-\"Ω\"\\1", at, &[Uuid::nil()]);
        failed.status.was_successful = false;
        failed.status.error_message = Some("0x80070005 \"denied\"\n".into());
        failed.status.last_task_name = Some("PolicySync".into());
        failed.status.applied_policies.push(None);
        let bare = Checkin {
            status: CheckinStatus {
                user_principal_name: None,
                device_platform: None,
                ..checkin(&tenant, "pc-2", at, &[]).status
            },
            ..checkin(&tenant, "pc-2", at, &[])
        };
        store
            .record_checkins(&[failed.clone(), bare.clone()])
            .await
            .unwrap();
        let mut statuses = store
            .tenant_checkin_view(&tenant, at - time::Duration::hours(1), 10)
            .await
            .unwrap()
            .statuses;
        statuses.sort_by(|a, b| a.device_name.cmp(&b.device_name));
        assert_eq!(statuses, [failed.status, bare.status]);
    }

    fn checkin(tenant: &TenantId, device: &str, at: OffsetDateTime, applied: &[Uuid]) -> Checkin {
        Checkin::sample(tenant.as_str(), device, at, applied)
    }

    /// The device names of `statuses`, sorted.
    fn device_names(statuses: &[CheckinStatus]) -> Vec<String> {
        let mut names: Vec<String> = statuses
            .iter()
            .map(|s| s.device_name.clone().unwrap_or_default())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn sqlite_keeps_the_newest_report_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("checkins.sqlite3"), true)
            .await
            .unwrap();
        newest_report_per_device(&store).await;
    }

    /// A schema of its own on the test PostgreSQL (`None`, reported, without
    /// `CIRRUS_TEST_DATABASE_URL`), dropped by [`TestSchema::drop`].
    struct TestSchema {
        admin: sqlx::PgPool,
        name: String,
        /// The server's URL with the schema as the search path.
        url: String,
    }

    impl TestSchema {
        async fn create() -> Option<Self> {
            let Ok(admin) = std::env::var("CIRRUS_TEST_DATABASE_URL") else {
                eprintln!("CIRRUS_TEST_DATABASE_URL unset: PostgreSQL half skipped");
                return None;
            };
            let name = format!("cirrus_unit_{}", Uuid::new_v4().simple());
            let pool = sqlx::PgPool::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
                .execute(&pool)
                .await
                .unwrap();
            let sep = if admin.contains('?') { '&' } else { '?' };
            let url = format!("{admin}{sep}options[search_path]={name}");
            Some(Self {
                admin: pool,
                name,
                url,
            })
        }

        async fn store(&self) -> crate::storage::postgres::PostgresStore {
            crate::storage::postgres::PostgresStore::connect(
                &self.url,
                true,
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap()
        }

        async fn drop(self) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.name
            )))
            .execute(&self.admin)
            .await
            .unwrap();
        }
    }

    /// The same on PostgreSQL, in a schema of its own (skipped without
    /// `CIRRUS_TEST_DATABASE_URL`).
    #[tokio::test]
    async fn postgres_keeps_the_newest_report_per_device() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        newest_report_per_device(&schema.store().await).await;
        schema.drop().await;
    }

    /// A batch of 100 reports is stored whole; a device's newer report
    /// replaces its applied-policy rows; an older report (another instance's, say) is neither
    /// stored nor allowed to touch the newer one's rows. Reports pass through the check-in log
    /// and are applied when the views are read.
    async fn newest_report_per_device(store: &dyn crate::storage::Store) {
        let tenant = TenantId::parse("contoso").unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = OffsetDateTime::now_utc();
        let since = t0 - time::Duration::hours(1);

        let batch: Vec<Checkin> = (0..100)
            .map(|i| checkin(&tenant, &format!("PC-{i:03}"), t0, &[a]))
            .collect();
        store.record_checkins(&batch).await.unwrap();
        let views = store
            .configuration_checkin_views(&tenant, &[a, b], since, 1000)
            .await
            .unwrap();
        assert_eq!(views[&a].statuses.len(), 100);
        assert!(views[&b].statuses.is_empty());

        store
            .record_checkins(&[
                checkin(&tenant, "pc-000", t0 + time::Duration::seconds(1), &[b]),
                checkin(&tenant, "PC-001", t0 - time::Duration::seconds(1), &[b]),
            ])
            .await
            .unwrap();
        let views = store
            .configuration_checkin_views(&tenant, &[a, b], since, 1000)
            .await
            .unwrap();
        assert_eq!(views[&a].statuses.len(), 99, "PC-000 no longer applies a");
        let b_devices: Vec<_> = views[&b]
            .statuses
            .iter()
            .map(|s| s.device_name.clone().unwrap())
            .collect();
        assert_eq!(
            b_devices,
            ["pc-000"],
            "the older PC-001 report was not stored"
        );
        let tenant_view = store
            .tenant_checkin_view(&tenant, since, 1000)
            .await
            .unwrap();
        assert_eq!(tenant_view.statuses.len(), 100);
        assert_eq!(
            tenant_view.statuses[0].device_name.as_deref(),
            Some("pc-000")
        );

        // One device twice in one run: only the newer report's configurations count it. And a
        // report at the stored one's very time replaces it (the later one logged wins).
        store
            .record_checkins(&[
                checkin(&tenant, "PC-002", t0 + time::Duration::seconds(3), &[b]),
                checkin(&tenant, "PC-002", t0 + time::Duration::seconds(2), &[a, b]),
                checkin(&tenant, "PC-003", t0, &[b]),
            ])
            .await
            .unwrap();
        let views = store
            .configuration_checkin_views(&tenant, &[a, b], since, 1000)
            .await
            .unwrap();
        let names = |id: &Uuid| device_names(&views[id].statuses);
        assert_eq!(views[&a].statuses.len(), 97, "PC-002 and PC-003 left a");
        assert!(!names(&a).iter().any(|n| n == "PC-002" || n == "PC-003"));
        assert_eq!(names(&b), ["PC-002", "PC-003", "pc-000"]);
        assert_eq!(views[&b].summary.succeeded_user_count, 1);
    }

    /// Migration 0007 (applied-policy rows keyed by configuration and time) keeps the rows,
    /// and a migrated row is found by its exact key when its report is replaced: `store` was
    /// opened on a database migrated to 0006 holding PC-1's report applying `a` at `t0`
    /// ([`insert_pre_0007`]).
    async fn upgrade_keeps_applied_policy_rows(
        store: &dyn crate::storage::Store,
        a: Uuid,
        t0: OffsetDateTime,
    ) {
        let tenant = TenantId::parse("contoso").unwrap();
        let b = Uuid::new_v4();
        let since = t0 - time::Duration::hours(1);
        let views = store
            .configuration_checkin_views(&tenant, &[a, b], since, 10)
            .await
            .unwrap();
        assert_eq!(views[&a].statuses.len(), 1, "the migrated row counts");
        store
            .record_checkins(&[checkin(
                &tenant,
                "PC-1",
                t0 + time::Duration::seconds(1),
                &[b],
            )])
            .await
            .unwrap();
        let views = store
            .configuration_checkin_views(&tenant, &[a, b], since, 10)
            .await
            .unwrap();
        assert!(
            views[&a].statuses.is_empty(),
            "the migrated row is replaced"
        );
        assert_eq!(views[&b].statuses.len(), 1);
    }

    /// Stores, in a database at migration 0006 (`$pool`, either engine's), PC-1's report
    /// applying `$a` at `$t0` and its applied-policy row (columns named: 0007 reorders them
    /// on SQLite).
    macro_rules! insert_pre_0007 {
        ($pool:expr, $a:expr, $t0:expr) => {
            for statement in [
                "INSERT INTO client_checkins (tenant_id, user_id, device_key, device_name, was_successful, checkin_date_time, applied_policies) VALUES ('contoso', '00000000-0000-4000-8000-000000000001', 'pc-1', 'PC-1', TRUE, $2, '[\"' || $1 || '\"]')",
                "INSERT INTO client_checkin_policies (tenant_id, configuration_id, user_id, device_key, was_successful, checkin_date_time) VALUES ('contoso', $1, '00000000-0000-4000-8000-000000000001', 'pc-1', TRUE, $2)",
            ] {
                sqlx::query(statement)
                    .bind($a.to_string())
                    .bind(crate::storage::sql::micros($t0))
                    .execute(&$pool)
                    .await
                    .unwrap();
            }
        };
    }

    #[tokio::test]
    async fn sqlite_upgrade_keeps_applied_policy_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cirrus.sqlite3");
        let pool = crate::storage::sqlite::migrated_to(&db, 6).await;
        let (a, t0) = (Uuid::new_v4(), OffsetDateTime::now_utc());
        insert_pre_0007!(pool, a, t0);
        pool.close().await;
        let store = SqliteStore::open(&db, true).await.unwrap();
        upgrade_keeps_applied_policy_rows(&store, a, t0).await;
    }

    /// On PostgreSQL a batch is one log row (migration 0008), its reports in order: of one
    /// device's two reports with the same time in a batch, the later one is stored.
    #[tokio::test]
    async fn postgres_logs_a_row_per_batch() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let store = schema.store().await;
        let pool = sqlx::PgPool::connect(&schema.url).await.unwrap();
        let tenant = TenantId::parse("contoso").unwrap();
        let (a, b, t0) = (Uuid::new_v4(), Uuid::new_v4(), OffsetDateTime::now_utc());
        let batch: Vec<_> = (0..3)
            .map(|d| checkin(&tenant, &format!("PC-{d}"), t0, &[a]))
            .chain([checkin(&tenant, "PC-0", t0, &[b])])
            .collect();
        store.record_checkins(&batch).await.unwrap();
        let rows: (i64, Option<i64>, i64) = sqlx::query_as("SELECT COUNT(*), SUM(reports), (SELECT COUNT(*) FROM client_checkin_log) FROM client_checkin_log_batches")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, (1, Some(4), 0), "(batch rows, reports, report rows)");
        assert_eq!(store.materialize_checkins(8192).await.unwrap(), 4);
        let views = store
            .configuration_checkin_views(&tenant, &[a, b], t0 - time::Duration::hours(1), 10)
            .await
            .unwrap();
        assert_eq!(views[&a].statuses.len(), 2, "PC-1 and PC-2");
        assert_eq!(views[&b].statuses.len(), 1, "PC-0's later report");
        pool.close().await;
        schema.drop().await;
    }

    /// A view read applies every report logged before it, also when a run takes more than
    /// the drain's limit (whole batches: the one that crosses the limit comes along).
    #[tokio::test]
    async fn postgres_a_view_read_applies_every_batch() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let store = schema.store().await;
        let tenant = TenantId::parse("contoso").unwrap();
        let t0 = OffsetDateTime::now_utc();
        let per_batch = DRAIN_BATCH * 3 / 4;
        for b in 0..3 {
            let batch: Vec<_> = (0..per_batch)
                .map(|d| checkin(&tenant, &format!("PC-{b}-{d}"), t0, &[]))
                .collect();
            store.record_checkins(&batch).await.unwrap();
        }
        let view = store
            .tenant_checkin_view(&tenant, t0 - time::Duration::hours(1), 100_000)
            .await
            .unwrap();
        assert_eq!(view.statuses.len(), 3 * per_batch);
        schema.drop().await;
    }

    /// Reports logged a row each (before migration 0008, or by an instance still running the
    /// previous version) are applied with the batches, in one order: the log's two tables
    /// share a sequence, so a newer batch's report of the same device at the same time wins.
    #[tokio::test]
    async fn postgres_applies_reports_logged_a_row_each() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let pool = sqlx::PgPool::connect(&schema.url).await.unwrap();
        crate::storage::postgres::MIGRATOR
            .run_to(7, &pool)
            .await
            .unwrap();
        let (a, b, t0) = (Uuid::new_v4(), Uuid::new_v4(), OffsetDateTime::now_utc());
        for device in ["PC-1", "PC-2"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO client_checkin_log ({CHECKIN_COLUMNS}) VALUES ('contoso', '00000000-0000-4000-8000-000000000001', lower($1), NULL, $1, NULL, NULL, TRUE, $3, NULL, '[\"' || $2 || '\"]', NULL)")))
                .bind(device)
                .bind(a.to_string())
                .bind(crate::storage::sql::micros(t0))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        let store = schema.store().await;
        let tenant = TenantId::parse("contoso").unwrap();
        let mut newer = checkin(&tenant, "PC-2", t0, &[b]);
        newer.status.user_id = "00000000-0000-4000-8000-000000000001".into();
        store.record_checkins(&[newer]).await.unwrap();
        assert_eq!(store.materialize_checkins(8192).await.unwrap(), 3);
        let views = store
            .configuration_checkin_views(&tenant, &[a, b], t0 - time::Duration::hours(1), 10)
            .await
            .unwrap();
        let names = |id: &Uuid| device_names(&views[id].statuses);
        assert_eq!(names(&a), ["PC-1"]);
        assert_eq!(names(&b), ["PC-2"]);
        schema.drop().await;
    }

    #[tokio::test]
    async fn postgres_upgrade_keeps_applied_policy_rows() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let pool = sqlx::PgPool::connect(&schema.url).await.unwrap();
        crate::storage::postgres::MIGRATOR
            .run_to(6, &pool)
            .await
            .unwrap();
        let (a, t0) = (Uuid::new_v4(), OffsetDateTime::now_utc());
        insert_pre_0007!(pool, a, t0);
        pool.close().await;
        upgrade_keeps_applied_policy_rows(&schema.store().await, a, t0).await;
        schema.drop().await;
    }

    /// A store of `schema` whose `client_checkins` holds one applied report (PC-0 applying
    /// `applied`) and statistics of that one row, in which `tenant_id` looks unique — what
    /// autovacuum leaves after a table's first changes — and a connection of its own.
    async fn one_row_statistics(
        schema: &TestSchema,
        tenant: &TenantId,
        now: OffsetDateTime,
        applied: &[Uuid],
    ) -> (crate::storage::postgres::PostgresStore, sqlx::PgConnection) {
        let store = schema.store().await;
        store
            .record_checkins(&[checkin(tenant, "PC-0", now, applied)])
            .await
            .unwrap();
        store.materialize_checkins(100).await.unwrap();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&schema.url)
            .await
            .unwrap();
        sqlx::query("ANALYZE client_checkins")
            .execute(&mut conn)
            .await
            .unwrap();
        (store, conn)
    }

    /// Applying retakes the tables' statistics as the stored reports grow: with those of a
    /// one-row table (autovacuum's after the first changes) the apply statements' probe of the
    /// stored reports went through the by-time index, reading every report of the tenant per
    /// run row. Fails without the refresh (statistics of 1 report; the by-time plan).
    #[tokio::test]
    async fn postgres_apply_retakes_statistics_as_the_reports_grow() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let tenant = TenantId::parse("contoso").unwrap();
        let now = OffsetDateTime::now_utc();
        let applied = [Uuid::new_v4()];
        let (store, mut conn) = one_row_statistics(&schema, &tenant, now, &applied).await;
        for b in 0..30 {
            let batch: Vec<_> = (0..100)
                .map(|d| checkin(&tenant, &format!("PC-{b}-{d}"), now, &applied))
                .collect();
            store.record_checkins(&batch).await.unwrap();
            store.materialize_checkins(8192).await.unwrap();
        }
        let analyzed: f32 = sqlx::query_scalar(
            "SELECT reltuples FROM pg_class WHERE oid = 'client_checkins'::regclass",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(analyzed >= 1000.0, "statistics of {analyzed} reports");
        // From a small sample: at most 11 histogram bounds (101 with the default target).
        let bounds: Option<i32> = sqlx::query_scalar("SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'client_checkins' AND attname = 'device_key'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(
            bounds.is_some_and(|n| n <= 11),
            "{bounds:?} histogram bounds"
        );
        // The plan of the apply statements' probe, with the run as a table like theirs and
        // the apply transaction's join settings.
        sqlx::raw_sql("SET enable_hashjoin = off; SET enable_mergejoin = off; CREATE TEMPORARY TABLE run AS SELECT tenant_id, user_id, device_key FROM client_checkins LIMIT 500")
            .execute(&mut conn)
            .await
            .unwrap();
        let plan: String = sqlx::query_scalar("EXPLAIN (FORMAT JSON) SELECT c.device_name FROM run k JOIN client_checkins c ON c.tenant_id = k.tenant_id AND c.user_id = k.user_id AND c.device_key = k.device_key")
            .fetch_one(&mut conn)
            .await
            .map(|v: serde_json::Value| v.to_string())
            .unwrap();
        assert!(!plan.contains("client_checkins_by_time"), "{plan}");
        drop(conn);
        drop(store);
        schema.drop().await;
    }

    /// A run that outgrows the statistics of `client_checkins` (here: one-row statistics, in
    /// which `tenant_id` looks unique) does not read the reports it just stored through the
    /// by-time index, per report: its applied-policy rows come from what its upsert returned,
    /// with no probe of the table after the upsert (rows read through that index: 4,504,501
    /// for this run when they came from such a probe).
    #[tokio::test]
    async fn postgres_a_run_that_outgrows_the_statistics_reads_by_key() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let tenant = TenantId::parse("contoso").unwrap();
        let now = OffsetDateTime::now_utc();
        let applied = [Uuid::new_v4(), Uuid::new_v4()];
        let (store, mut conn) = one_row_statistics(&schema, &tenant, now, &applied).await;
        for b in 0..6 {
            let batch: Vec<_> = (0..500)
                .map(|d| checkin(&tenant, &format!("PC-{b}-{d}"), now, &applied))
                .collect();
            store.record_checkins(&batch).await.unwrap();
        }
        assert_eq!(store.materialize_checkins(8192).await.unwrap(), 3000);
        // The applying backend reports its counters within about a second of going idle.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let read_by_time: i64 = loop {
            let (inserted, read): (i64, i64) = sqlx::query_as(
                "SELECT t.n_tup_ins, i.idx_tup_read FROM pg_stat_user_tables t, pg_stat_user_indexes i \
                 WHERE t.relid = 'client_checkins'::regclass AND i.indexrelid = 'client_checkins_by_time'::regclass",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if inserted >= 3001 {
                break read;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "statistics not reported: {inserted} inserts"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            // A new snapshot of the cumulative statistics.
            sqlx::query("SELECT pg_stat_clear_snapshot()")
                .execute(&mut conn)
                .await
                .unwrap();
        };
        // At most one row per report (the replaced-row delete, planned while the table held
        // one report, may go through that index).
        assert!(
            read_by_time <= 3000,
            "{read_by_time} rows read through the by-time index"
        );
        drop(conn);
        drop(store);
        schema.drop().await;
    }

    /// A pooled connection the server dropped while it sat idle is pinged before it is used
    /// again (it was idle for a while) and replaced: the next batch is stored, not failed.
    #[tokio::test]
    async fn postgres_a_connection_dropped_while_idle_is_replaced() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let url = format!("{}&application_name={}", schema.url, schema.name);
        let store = crate::storage::postgres::PostgresStore::connect(
            &url,
            true,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
        let tenant = TenantId::parse("contoso").unwrap();
        let now = OffsetDateTime::now_utc();
        store
            .record_checkins(&[checkin(&tenant, "PC-1", now, &[])])
            .await
            .unwrap();
        tokio::time::sleep(
            crate::storage::postgres::PING_WHEN_IDLE_FOR + std::time::Duration::from_secs(1),
        )
        .await;
        // What a server restart or an idle-connection timeout does.
        let dropped: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
        )
        .bind(&schema.name)
        .fetch_one(&schema.admin)
        .await
        .unwrap();
        assert!(dropped >= 1, "no connection of the store to drop");
        store
            .record_checkins(&[checkin(&tenant, "PC-2", now, &[])])
            .await
            .expect("stored on a new connection");
        assert_eq!(store.materialize_checkins(100).await.unwrap(), 2);
        drop(store);
        schema.drop().await;
    }

    /// On PostgreSQL applying takes the schema's apply lock: while another session holds it,
    /// nothing is applied (the exact-key delete relies on no other run changing a stored
    /// report meanwhile); once it is released, the run goes through.
    #[tokio::test]
    async fn postgres_applying_waits_for_the_apply_lock() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let store = std::sync::Arc::new(schema.store().await);
        let tenant = TenantId::parse("contoso").unwrap();
        store
            .record_checkins(&[checkin(&tenant, "PC-1", OffsetDateTime::now_utc(), &[])])
            .await
            .unwrap();
        let mut holder = <sqlx::PgConnection as sqlx::Connection>::connect(&schema.url)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pg_advisory_lock({APPLY_LOCK})"
        )))
        .execute(&mut holder)
        .await
        .unwrap();
        let apply = tokio::spawn({
            let store = store.clone();
            async move { store.materialize_checkins(100).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        assert!(
            !apply.is_finished(),
            "applied while another run held the lock"
        );
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pg_advisory_unlock({APPLY_LOCK})"
        )))
        .execute(&mut holder)
        .await
        .unwrap();
        let applied = tokio::time::timeout(std::time::Duration::from_secs(20), apply)
            .await
            .expect("applied once the lock was released")
            .unwrap()
            .unwrap();
        assert_eq!(applied, 1);
        drop(store);
        schema.drop().await;
    }

    /// An apply run commits without waiting for the WAL flush, under the apply lock.
    #[tokio::test]
    async fn postgres_apply_runs_commit_asynchronously() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&schema.url)
            .await
            .unwrap();
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(APPLY_RUN_BEGIN.as_str()))
            .execute(&mut *tx)
            .await
            .unwrap();
        let (sync, locked): (String, bool) = sqlx::query_as(
            "SELECT current_setting('synchronous_commit'), EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(sync, "off");
        assert!(locked, "the apply lock is held");
        tx.rollback().await.unwrap();
        let sync: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(sync, "on", "only the run's transaction");
        drop(conn);
        schema.drop().await;
    }
}
