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

use super::StorageResult;
use super::changes::{self, ChangeFeed, Topic};
use super::sql::{INSERT_OFFICE, map_err, sql_engine};
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
    /// Unused on PostgreSQL (the Graph transactions' hook is shared with SQLite).
    overrides: Arc<super::sqlite_log::OverriddenTenants>,
    /// Check-in notifications to send ([`notify_checkins`]).
    checkin_notices: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
}

/// Sends the check-in notifications of committed batches (payloads), coalescing what queued
/// up while the previous ones were sent: one statement in flight at a time, so a batch's
/// writer never waits for its notifications (the batch is durable and acknowledged without
/// them; the other instances hear of it a round trip later). Stops once the store is gone.
async fn notify_checkins(pool: PgPool, queue: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>) {
    use super::checkins::NOTIFY_BATCH;
    pace_notifications(queue, NOTIFY_CHECKINS_EVERY, |payloads| {
        let pool = pool.clone();
        async move {
            if let Err(e) = sqlx::query(NOTIFY_BATCH)
                .bind(changes::CHANNEL)
                .bind(payloads)
                .execute(&pool)
                .await
            {
                // Other instances then serve cached views for at most their lifetime (60 s).
                tracing::warn!(error = %e, "notifying other instances of check-ins failed");
            }
        }
    })
    .await;
}

/// After sending check-in notifications, [`notify_checkins`] waits this long before it sends
/// the next ones (all that queued meanwhile, one per tenant). Without the pause every batch
/// made its own notification — a statement, a transaction and a wake-up of every listening
/// instance, this one included, about 600 a second under load — for news the other instances
/// need only to drop cached views (their Graph reads then see the batch within this delay and
/// a round trip). Measured in the check-in benchmark (PostgreSQL, two A/B pairs): cirrus's CPU
/// 25 / 26 → 23 / 22 µs a check-in; 21.1 k / 19.8 k → 20.5 k / 22.0 k acknowledged a second.
pub(super) const NOTIFY_CHECKINS_EVERY: Duration = Duration::from_millis(10);

/// The loop of [`notify_checkins`]: sends (`send`) what is queued, coalesced and in order, then
/// waits `every` before the next send; returns once the queue is closed and drained.
async fn pace_notifications<F, Fut>(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
    every: Duration,
    mut send: F,
) where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while let Some(first) = queue.recv().await {
        let mut payloads: std::collections::BTreeSet<String> = first.into_iter().collect();
        while let Ok(more) = queue.try_recv() {
            payloads.extend(more);
        }
        send(payloads.into_iter().collect()).await;
        tokio::time::sleep(every).await;
    }
}

/// A pooled connection idle this long is pinged before it is handed out (a server restart or
/// a firewall may have dropped it meanwhile; a dead one is replaced by a new connection).
/// Not every connection every time, as `test_before_acquire` did: under load that was a round
/// trip before every batch append, notification and apply step.
pub(super) const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(5);

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
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
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
        let (checkin_notices, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(notify_checkins(pool.clone(), queue));
        Ok(Self {
            reader: pool.clone(),
            writer: pool,
            changes: ChangeFeed::local(),
            overrides: Default::default(),
            checkin_notices,
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

    async fn before_commit(
        tx: &mut Transaction<'static, Postgres>,
        tenant: &TenantId,
        _overrides: Option<&super::sqlite_log::OverriddenTenants>,
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

/// The check-in log on PostgreSQL: appended with one statement of one array per column,
/// applied inside the database.
impl PostgresStore {
    /// Applies every report logged before this call, so a view read next includes
    /// all acknowledged check-ins. Cheap when nothing is pending.
    async fn checkins_drain(&self) -> crate::storage::StorageResult<()> {
        use crate::storage::checkins::DRAIN_BATCH;
        let head = self.checkins_log_head().await?;
        if head == 0 {
            return Ok(());
        }
        // A run takes whole batches, so it may take more than the limit: less means drained.
        while self.materialize_log(head, DRAIN_BATCH).await? >= DRAIN_BATCH {}
        Ok(())
    }

    /// Applies up to `limit` of the oldest logged reports (the materializer's pass).
    async fn checkins_materialize(&self, limit: usize) -> crate::storage::StorageResult<usize> {
        let head = self.checkins_log_head().await?;
        if head == 0 {
            return Ok(0);
        }
        self.materialize_log(head, limit).await
    }

    /// The log's last sequence number (0 when empty): a cheap read, as the
    /// materializer also polls an idle log.
    async fn checkins_log_head(&self) -> crate::storage::StorageResult<i64> {
        sqlx::query_scalar(crate::storage::checkins::PG_LOG_HEAD)
            .fetch_one(&self.reader)
            .await
            .map_err(crate::storage::sql::map_err)
    }

    /// Applies the oldest log rows up to sequence `upto` (at most `limit`) to the keyed tables
    /// and removes them from the log, in one transaction, inside the database; returns how
    /// many it applied.
    async fn materialize_log(&self, upto: i64, limit: usize) -> StorageResult<usize> {
        let applied = match self.apply_log_run(upto, limit, false).await {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                tracing::warn!(error = %e, "applying the check-in log met an applied-policy row it did not expect; applying the run again, skipping existing rows");
                self.apply_log_run(upto, limit, true).await.map_err(map_err)
            }
            other => other.map_err(map_err),
        }?;
        if applied > 0 {
            self.refresh_checkin_statistics().await;
        }
        Ok(applied)
    }

    /// Retakes the applied tables' statistics once `client_checkins` has doubled since they
    /// were taken ([`super::checkins::CHECKIN_STATISTICS_STALE`] says why). Best effort: the
    /// reports are applied either way, and autovacuum retakes them eventually.
    async fn refresh_checkin_statistics(&self) {
        use super::checkins::{ANALYZE_CHECKIN_TABLES, CHECKIN_STATISTICS_STALE};
        let refresh = async {
            if sqlx::query_scalar::<_, bool>(CHECKIN_STATISTICS_STALE)
                .fetch_one(&self.writer)
                .await?
            {
                let mut tx = self.writer.begin().await?;
                sqlx::raw_sql(ANALYZE_CHECKIN_TABLES)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        };
        if let Err(e) = refresh.await {
            tracing::warn!(error = %e, "retaking the check-in tables' statistics failed");
        }
    }

    /// One run of [`Self::materialize_log`]; `safe` inserts the applied-policy rows with
    /// `ON CONFLICT DO NOTHING`.
    async fn apply_log_run(
        &self,
        upto: i64,
        limit: usize,
        safe: bool,
    ) -> Result<usize, sqlx::Error> {
        use super::checkins::*;
        let mut tx = self.begin_checkins().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(APPLY_RUN_BEGIN.as_str()))
            .execute(&mut *tx)
            .await?;
        sqlx::query(CREATE_CHECKIN_RUN).execute(&mut *tx).await?;
        let taken = sqlx::query(TAKE_LOG_INTO_RUN.as_str())
            .bind(upto)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if taken > 0 {
            let apply = if safe {
                APPLY_RUN_REPORTS_SAFE.as_str()
            } else {
                APPLY_RUN_REPORTS.as_str()
            };
            for statement in [DELETE_RUN_REPLACED_POLICIES, apply] {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(usize::try_from(taken).unwrap_or(usize::MAX))
    }

    /// Appends a batch to the log and ends the overrides in its scopes in one statement run
    /// as its own transaction (a single round trip per batch, where a transaction of separate
    /// statements took six), then queues the notifications of the other instances (their
    /// cached views go stale; one per tenant) for [`notify_checkins`] to send in a transaction
    /// of their own ([`NOTIFY_BATCH`] says why).
    async fn append_log(
        &self,
        batch: &[crate::model::Checkin],
        scopes: &super::checkins::CheckinScopes<'_>,
    ) -> Result<Vec<String>, sqlx::Error> {
        use super::checkins::*;
        use super::sql::micros;
        let status = |f: fn(&crate::model::CheckinStatus) -> Option<&str>| -> Vec<Option<&str>> {
            batch.iter().map(|c| f(&c.status)).collect()
        };
        let cleared = sqlx::query_as::<_, (Vec<String>, i64)>(APPEND_LOG_BATCH.as_str())
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
            .bind(scopes.keys().copied().collect::<Vec<_>>())
            .bind(
                scopes
                    .iter()
                    .flat_map(|(t, ids)| ids.iter().map(move |_| *t))
                    .collect::<Vec<_>>(),
            )
            .bind(
                scopes
                    .values()
                    .flat_map(|ids| ids.iter().copied())
                    .collect::<Vec<_>>(),
            )
            .fetch_one(&self.writer)
            .await?
            .0;
        let _ = self.checkin_notices.send(
            scopes
                .keys()
                .filter_map(|t| TenantId::parse(t))
                .map(|t| changes::notify_payload(&t, Topic::Checkins))
                .collect(),
        );
        Ok(cleared)
    }
}

super::checkins::checkin_engine!(PostgresStore, Postgres, PgRow);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    /// Check-in notifications are paced: what queues while one send and its pause run goes out
    /// in the next send, coalesced; a notification queued after a quiet spell goes at once.
    #[tokio::test(start_paused = true)]
    async fn checkin_notifications_are_paced_and_coalesced() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let start = Instant::now();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let pacer = tokio::spawn({
            let sent = sent.clone();
            super::pace_notifications(rx, super::NOTIFY_CHECKINS_EVERY, move |payloads| {
                sent.lock().unwrap().push((start.elapsed(), payloads));
                std::future::ready(())
            })
        });
        let ms = Duration::from_millis;
        for (at, payload) in [(0, "k:a"), (1, "k:b"), (2, "k:a"), (3, "k:c"), (30, "k:d")] {
            tokio::time::sleep_until(start + ms(at)).await;
            tx.send(vec![payload.to_string()]).unwrap();
        }
        drop(tx);
        pacer.await.unwrap();
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            *sent.lock().unwrap(),
            [
                (ms(0), strings(&["k:a"])),
                (ms(10), strings(&["k:a", "k:b", "k:c"])),
                (ms(30), strings(&["k:d"])),
            ]
        );
    }
}
