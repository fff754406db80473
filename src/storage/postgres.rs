//! The scale-out engine: PostgreSQL, shared by any number of stateless cirrus instances.
//! A tenant's writes are serialised by locking its singleton row (`SELECT … FOR UPDATE`), so
//! rules spanning rows hold across instances. No in-process cache here: every read sees the
//! latest commit, whichever instance made it. (The compiled policy index caches above this, kept
//! current by the notification each write transaction sends — see [`super::changes`].)

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::changes::{self, ChangeFeed, Topic};
use super::sql::{INSERT_OFFICE, sql_engine};
use crate::model::TenantId;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const LOCK_TENANT: &str =
    "SELECT version FROM office_configurations WHERE tenant_id = $1 FOR UPDATE";

/// Sent inside every write transaction: PostgreSQL delivers it to every listening instance
/// when, and only if, the transaction commits.
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

pub struct PostgresStore {
    reader: PgPool,
    writer: PgPool,
    /// Bumped after this process's own commits (its listener hears them too, but later).
    changes: Arc<ChangeFeed>,
}

/// How long a request waits for a connection before answering 503: short, so an outage
/// shows up as fast 503s rather than hung requests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl PostgresStore {
    /// Connects (retrying for up to `wait` while the database is not reachable yet) and
    /// applies pending migrations if `migrate`.
    pub async fn connect(url: &str, migrate: bool, wait: Duration) -> anyhow::Result<Self> {
        let opts: PgConnectOptions = url.parse().context("parsing the PostgreSQL URL")?;
        let pool_opts = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(true);
        let deadline = tokio::time::Instant::now() + wait;
        let pool = loop {
            match pool_opts.clone().connect_with(opts.clone()).await {
                Ok(pool) => break pool,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "PostgreSQL not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).context("connecting to PostgreSQL"),
            }
        };
        if migrate {
            MIGRATOR
                .run(&pool)
                .await
                .context("applying PostgreSQL migrations")?;
        }
        Ok(Self {
            reader: pool.clone(),
            writer: pool,
            changes: ChangeFeed::local(),
        })
    }

    /// The feed this store bumps after each commit (the one the caches read).
    pub fn with_changes(mut self, changes: Arc<ChangeFeed>) -> Self {
        self.changes = changes;
        self
    }

    async fn begin_tenant(
        &self,
        tenant: &TenantId,
        new_singleton_id: Uuid,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(INSERT_OFFICE)
            .bind(tenant.as_str())
            .bind(new_singleton_id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(LOCK_TENANT)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A check-in batch's transaction (no tenant lock: check-ins never touch the rows the
    /// Graph rules span, and upserts keep the latest report per device).
    async fn begin_checkins(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.writer.begin().await
    }

    /// Other instances' cached check-in views go stale with this batch: one notification per
    /// tenant per batch (not per report; notifying transactions commit one at a time).
    async fn checkins_before_commit(
        tx: &mut Transaction<'static, Postgres>,
        tenants: &[&str],
    ) -> Result<(), sqlx::Error> {
        for tenant in tenants.iter().filter_map(|t| TenantId::parse(t)) {
            sqlx::query(NOTIFY)
                .bind(changes::CHANNEL)
                .bind(changes::notify_payload(&tenant, Topic::Checkins))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn before_commit(
        tx: &mut Transaction<'static, Postgres>,
        tenant: &TenantId,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(NOTIFY)
            .bind(changes::CHANNEL)
            .bind(changes::notify_payload(tenant, Topic::Configurations))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

sql_engine!(
    PostgresStore,
    PostgresTenantTx,
    Postgres,
    PgRow,
    " COLLATE \"C\""
);
/// The check-in store's log application and bulk writes: the log rows are taken into the
/// process, and each write is one statement, the rows as one array per column.
impl PostgresStore {
    /// Applies the oldest log rows up to sequence `upto` (at most `limit`) to the
    /// keyed tables and removes them from the log, in one transaction; returns how
    /// many it applied.
    async fn materialize_log(
        &self,
        upto: i64,
        limit: usize,
    ) -> crate::storage::StorageResult<usize> {
        use crate::storage::checkins::*;
        use crate::storage::sql::map_err;
        use sqlx::Row as _;
        let mut tx = self.begin_checkins().await.map_err(map_err)?;
        let rows = sqlx::query(TAKE_LOG)
            .bind(upto)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(map_err)?;
            let tenant: String = row.try_get(1).map_err(map_err)?;
            let tenant = crate::model::TenantId::parse(&tenant)
                .ok_or_else(|| crate::storage::sql::corrupt("tenant_id", &tenant))?;
            let status = status_from_row(row, 2)?;
            taken.push((seq, crate::model::Checkin { tenant, status }));
        }
        // Log order, so of two reports with the same time the later one wins.
        taken.sort_unstable_by_key(|(seq, _)| *seq);
        let checkins: Vec<crate::model::Checkin> = taken.into_iter().map(|(_, c)| c).collect();
        PostgresStore::checkins_apply(&mut tx, &checkins).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(checkins.len())
    }

    /// Writes reports into the keyed tables: the latest per (tenant, user, device),
    /// and the configurations it applied.
    async fn checkins_apply(
        tx: &mut sqlx::Transaction<'static, Postgres>,
        batch: &[crate::model::Checkin],
    ) -> crate::storage::StorageResult<()> {
        use crate::storage::checkins::*;
        use crate::storage::sql::map_err;
        use std::collections::BTreeMap;
        // Key order (and the last report per key wins within a batch).
        let mut latest: BTreeMap<(&str, &str, String), &crate::model::Checkin> = BTreeMap::new();
        for c in batch {
            let key = (c.tenant.as_str(), c.status.user_id.as_str(), c.device_key());
            match latest.get(&key) {
                Some(prev) if prev.status.checkin_date_time > c.status.checkin_date_time => {}
                _ => {
                    latest.insert(key, c);
                }
            }
        }
        let rows: Vec<Report<'_>> = latest
            .iter()
            .map(|((t, u, d), c)| (*t, *u, d.as_str(), &c.status))
            .collect();

        // 1. The reports, in key order; a report older than the stored one (applied
        // out of order) is not written and not returned.
        let written = PostgresStore::write_reports(tx, &rows)
            .await
            .map_err(map_err)?;
        let rows: Vec<Report<'_>> = rows
            .into_iter()
            .filter(|(t, u, d, _)| written.contains(&(t.to_string(), u.to_string(), d.to_string())))
            .collect();

        // 2. The written reports' previous applied-policy rows go, then theirs come.
        PostgresStore::delete_applied(tx, &rows)
            .await
            .map_err(map_err)?;
        let mut applied: Vec<Applied<'_>> = Vec::new();
        for (tenant, user, device, s) in &rows {
            for id in s.applied_policies.iter().flatten() {
                applied.push((tenant, id.as_str(), user, device, s));
            }
        }
        PostgresStore::write_applied(tx, &applied)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn write_log(
        tx: &mut Transaction<'static, Postgres>,
        batch: &[crate::model::Checkin],
    ) -> Result<(), sqlx::Error> {
        use super::checkins::*;
        use super::sql::micros;
        let status = |f: fn(&crate::model::CheckinStatus) -> Option<&str>| -> Vec<Option<&str>> {
            batch.iter().map(|c| f(&c.status)).collect()
        };
        sqlx::query(sqlx::AssertSqlSafe(append_log_unnest_sql()))
            .bind(batch.iter().map(|c| c.tenant.as_str()).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|c| c.status.user_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(batch.iter().map(|c| c.device_key()).collect::<Vec<_>>())
            .bind(status(|s| s.user_principal_name.as_deref()))
            .bind(status(|s| s.device_name.as_deref()))
            .bind(status(|s| s.device_platform.as_deref()))
            .bind(status(|s| s.device_platform_version.as_deref()))
            .bind(
                batch
                    .iter()
                    .map(|c| c.status.was_successful)
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .iter()
                    .map(|c| micros(c.status.checkin_date_time))
                    .collect::<Vec<_>>(),
            )
            .bind(status(|s| s.error_message.as_deref()))
            .bind(
                batch
                    .iter()
                    .map(|c| applied_json(&c.status.applied_policies))
                    .collect::<Vec<_>>(),
            )
            .bind(status(|s| s.last_task_name.as_deref()))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn write_reports(
        tx: &mut Transaction<'static, Postgres>,
        rows: &[super::checkins::Report<'_>],
    ) -> Result<super::checkins::WrittenKeys, sqlx::Error> {
        use super::checkins::*;
        use super::sql::micros;
        use sqlx::Row as _;
        let status = |f: fn(&crate::model::CheckinStatus) -> Option<&str>| -> Vec<Option<&str>> {
            rows.iter().map(|r| f(r.3)).collect()
        };
        let mut written = WrittenKeys::new();
        for row in sqlx::query(sqlx::AssertSqlSafe(upsert_checkins_unnest_sql()))
            .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
            .bind(status(|s| s.user_principal_name.as_deref()))
            .bind(status(|s| s.device_name.as_deref()))
            .bind(status(|s| s.device_platform.as_deref()))
            .bind(status(|s| s.device_platform_version.as_deref()))
            .bind(rows.iter().map(|r| r.3.was_successful).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| micros(r.3.checkin_date_time))
                    .collect::<Vec<_>>(),
            )
            .bind(status(|s| s.error_message.as_deref()))
            .bind(
                rows.iter()
                    .map(|r| applied_json(&r.3.applied_policies))
                    .collect::<Vec<_>>(),
            )
            .bind(status(|s| s.last_task_name.as_deref()))
            .fetch_all(&mut **tx)
            .await?
        {
            written.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
        Ok(written)
    }

    async fn delete_applied(
        tx: &mut Transaction<'static, Postgres>,
        rows: &[super::checkins::Report<'_>],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(super::checkins::DELETE_DEVICE_POLICIES_UNNEST)
            .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn write_applied(
        tx: &mut Transaction<'static, Postgres>,
        rows: &[super::checkins::Applied<'_>],
    ) -> Result<(), sqlx::Error> {
        use super::sql::micros;
        sqlx::query(super::checkins::INSERT_CHECKIN_POLICIES_UNNEST)
            .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.4.was_successful).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| micros(r.4.checkin_date_time))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

super::checkins::checkin_engine!(
    PostgresStore,
    Postgres,
    PgRow,
    super::checkins::numbered_params
);
