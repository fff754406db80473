//! The check-in store (DESIGN §3), shared by both SQL engines like [`super::sql`]: the latest
//! report per (tenant, user, device) in `client_checkins`, and one `client_checkin_policies`
//! row per configuration that report applied, so each configuration's view is an index range.
//!
//! Batches are written in one transaction (the caller group-commits many clients' reports);
//! rows are written in key order so two instances writing overlapping batches cannot deadlock.

use serde_json::Value;
use time::OffsetDateTime;

use super::StorageError;
use super::sql::{corrupt, from_micros, parse_json};
use crate::model::CheckinStatus;

pub const UPSERT_CHECKIN: &str = "INSERT INTO client_checkins (tenant_id, user_id, device_key, user_principal_name, device_name, device_platform, device_platform_version, was_successful, checkin_date_time, error_message, applied_policies, last_task_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
    ON CONFLICT (tenant_id, user_id, device_key) DO UPDATE SET user_principal_name = excluded.user_principal_name, device_name = excluded.device_name, device_platform = excluded.device_platform, device_platform_version = excluded.device_platform_version, was_successful = excluded.was_successful, checkin_date_time = excluded.checkin_date_time, error_message = excluded.error_message, applied_policies = excluded.applied_policies, last_task_name = excluded.last_task_name \
    WHERE client_checkins.checkin_date_time <= excluded.checkin_date_time";
pub const DELETE_CHECKIN_POLICIES: &str =
    "DELETE FROM client_checkin_policies WHERE tenant_id = $1 AND user_id = $2 AND device_key = $3";
pub const INSERT_CHECKIN_POLICY: &str = "INSERT INTO client_checkin_policies (tenant_id, configuration_id, user_id, device_key, was_successful, checkin_date_time) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
pub const CLEAR_OFFICE_OVERRIDE: &str = "UPDATE office_configurations SET checkin_override = $1 WHERE tenant_id = $2 AND checkin_override = $3";
pub const CLEAR_CONFIG_OVERRIDE: &str = "UPDATE client_configurations SET checkin_override = $1 WHERE tenant_id = $2 AND id = $3 AND checkin_override = $4";
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

/// Window start as stored (microseconds).
pub fn since_micros(t: OffsetDateTime) -> i64 {
    super::sql::micros(t)
}

/// Adds the check-in methods to an engine's store (`$store` must have a `writer` and a
/// `reader` pool and an inherent `async fn begin_checkins(&self) ->
/// Result<Transaction<'static, $db>, sqlx::Error>` and `async fn checkins_before_commit(tx,
/// tenants)`). The `Store` impl in [`super::sql`] calls these.
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
            async fn checkins_record(
                &self,
                batch: &[$crate::model::Checkin],
            ) -> $crate::storage::StorageResult<Vec<$crate::model::TenantId>> {
                use std::collections::BTreeSet;
                use $crate::storage::checkins::*;
                use $crate::storage::sql::{map_err, micros};
                // Key order (and the last report per key wins within a batch).
                let mut latest: std::collections::BTreeMap<
                    (&str, &str, String),
                    &$crate::model::Checkin,
                > = std::collections::BTreeMap::new();
                for c in batch {
                    let key = (c.tenant.as_str(), c.status.user_id.as_str(), c.device_key());
                    match latest.get(&key) {
                        Some(prev)
                            if prev.status.checkin_date_time > c.status.checkin_date_time => {}
                        _ => {
                            latest.insert(key, c);
                        }
                    }
                }
                let mut tx = self.begin_checkins().await.map_err(map_err)?;
                let mut scopes: BTreeSet<(&str, Option<&str>)> = BTreeSet::new();
                for ((tenant, user, device), c) in &latest {
                    let s = &c.status;
                    let at = micros(s.checkin_date_time);
                    let applied = serde_json::Value::from(
                        s.applied_policies
                            .iter()
                            .map(|p| serde_json::Value::from(p.clone()))
                            .collect::<Vec<_>>(),
                    )
                    .to_string();
                    let written = sqlx::query(UPSERT_CHECKIN)
                        .bind(*tenant)
                        .bind(*user)
                        .bind(device.as_str())
                        .bind(&s.user_principal_name)
                        .bind(&s.device_name)
                        .bind(&s.device_platform)
                        .bind(&s.device_platform_version)
                        .bind(s.was_successful)
                        .bind(at)
                        .bind(&s.error_message)
                        .bind(applied)
                        .bind(&s.last_task_name)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    if written.rows_affected() == 0 {
                        // A newer report for this device is already stored (another instance).
                        continue;
                    }
                    sqlx::query(DELETE_CHECKIN_POLICIES)
                        .bind(*tenant)
                        .bind(*user)
                        .bind(device.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    scopes.insert((*tenant, None));
                    for id in s.applied_policies.iter().flatten() {
                        sqlx::query(INSERT_CHECKIN_POLICY)
                            .bind(*tenant)
                            .bind(id.as_str())
                            .bind(*user)
                            .bind(device.as_str())
                            .bind(s.was_successful)
                            .bind(at)
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        scopes.insert((*tenant, Some(id.as_str())));
                    }
                }
                // A check-in ends a Graph PATCH's override in its scope (DESIGN §3).
                let mut cleared: BTreeSet<&str> = BTreeSet::new();
                for (tenant, config) in &scopes {
                    let done = match config {
                        None => sqlx::query(CLEAR_OFFICE_OVERRIDE)
                            .bind(false)
                            .bind(*tenant)
                            .bind(true)
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?,
                        Some(id) => sqlx::query(CLEAR_CONFIG_OVERRIDE)
                            .bind(false)
                            .bind(*tenant)
                            .bind(*id)
                            .bind(true)
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?,
                    };
                    if done.rows_affected() > 0 {
                        cleared.insert(*tenant);
                    }
                }
                let tenants: Vec<&str> = scopes
                    .iter()
                    .filter(|(_, c)| c.is_none())
                    .map(|(t, _)| *t)
                    .collect();
                $store::checkins_before_commit(&mut tx, &tenants)
                    .await
                    .map_err(map_err)?;
                let committed = tx.commit().await.map_err(map_err);
                // Even on a commit error (it may have gone through): a needless bump is cheap.
                for tenant in tenants
                    .iter()
                    .filter_map(|t| $crate::model::TenantId::parse(t))
                {
                    self.changes
                        .bump(&tenant, $crate::storage::changes::Topic::Checkins);
                }
                committed?;
                Ok(cleared
                    .into_iter()
                    .filter_map($crate::model::TenantId::parse)
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
