//! What the SQL engines share: the statements (written once, with `$N` placeholders that both
//! SQLite and PostgreSQL accept), row decoding and error mapping. [`sql_engine!`] instantiates
//! the [`Store`](super::Store) / [`TenantTx`](super::TenantTx) implementation for one engine, so
//! each engine file holds only what really differs: connecting, `BEGIN`, the tenant lock and
//! change notification.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StorageError;
use crate::model::{AssignmentTarget, ConfigurationKind, UserCheckinSummary, input};

pub const SELECT_OFFICE: &str = "SELECT id, tenant_checkin_statuses, tenant_user_checkin_summary, checkin_override, version FROM office_configurations WHERE tenant_id = $1";
pub const INSERT_OFFICE: &str = "INSERT INTO office_configurations (tenant_id, id) VALUES ($1, $2) ON CONFLICT (tenant_id) DO NOTHING";
pub const UPDATE_OFFICE: &str = "UPDATE office_configurations SET tenant_checkin_statuses = $1, tenant_user_checkin_summary = $2, checkin_override = $3, version = $4 WHERE tenant_id = $5";
pub const SELECT_CONFIGS: &str = "SELECT id, odata_type, display_name, description, priority, policy_payload, user_preference_payload, checkin_statuses, user_checkin_summary, checkin_override, last_modified_date_time, version FROM client_configurations WHERE tenant_id = $1 ORDER BY priority, id";
pub const SELECT_CONFIG: &str = "SELECT id, odata_type, display_name, description, priority, policy_payload, user_preference_payload, checkin_statuses, user_checkin_summary, checkin_override, last_modified_date_time, version FROM client_configurations WHERE tenant_id = $1 AND id = $2";
pub const SELECT_PRIORITY_HOLDER: &str =
    "SELECT id FROM client_configurations WHERE tenant_id = $1 AND priority = $2 LIMIT 1";
pub const SELECT_MAX_PRIORITY: &str =
    "SELECT MAX(priority) FROM client_configurations WHERE tenant_id = $1";
pub const SELECT_PRIORITIES: &str =
    "SELECT id, priority FROM client_configurations WHERE tenant_id = $1";
pub const INSERT_CONFIG: &str = "INSERT INTO client_configurations (tenant_id, id, odata_type, display_name, description, priority, policy_payload, user_preference_payload, checkin_statuses, user_checkin_summary, checkin_override, last_modified_date_time, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
pub const UPDATE_CONFIG: &str = "UPDATE client_configurations SET display_name = $1, description = $2, priority = $3, policy_payload = $4, user_preference_payload = $5, checkin_statuses = $6, user_checkin_summary = $7, checkin_override = $8, last_modified_date_time = $9, version = $10 WHERE tenant_id = $11 AND id = $12";
pub const DELETE_CONFIG_ASSIGNMENTS: &str =
    "DELETE FROM client_configuration_assignments WHERE tenant_id = $1 AND configuration_id = $2";
pub const DELETE_CONFIG: &str =
    "DELETE FROM client_configurations WHERE tenant_id = $1 AND id = $2";
pub const SELECT_ASSIGNMENTS: &str = "SELECT id, configuration_id, target_type, group_id, version FROM client_configuration_assignments WHERE tenant_id = $1 AND configuration_id = $2 ORDER BY position, id";
pub const SELECT_ASSIGNMENT: &str = "SELECT id, configuration_id, target_type, group_id, version FROM client_configuration_assignments WHERE tenant_id = $1 AND configuration_id = $2 AND id = $3";
pub const INSERT_ASSIGNMENT: &str = "INSERT INTO client_configuration_assignments (tenant_id, configuration_id, id, position, target_type, group_id, version) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub const NEXT_ASSIGNMENT_POSITION: &str = "SELECT COALESCE(MAX(position) + 1, 0) FROM client_configuration_assignments WHERE tenant_id = $1 AND configuration_id = $2";
pub const UPDATE_ASSIGNMENT: &str = "UPDATE client_configuration_assignments SET target_type = $1, group_id = $2, version = $3 WHERE tenant_id = $4 AND configuration_id = $5 AND id = $6";
pub const DELETE_ASSIGNMENT: &str = "DELETE FROM client_configuration_assignments WHERE tenant_id = $1 AND configuration_id = $2 AND id = $3";
pub const PING: &str = "SELECT 1";

/// Maps a driver error: connection-level failures are retryable (503), the rest are bugs (500).
pub fn map_err(e: sqlx::Error) -> StorageError {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            matches!(
                db.code().as_deref(),
                // SQLite: BUSY, LOCKED. PostgreSQL: connection exceptions (08xxx), shutdown (57P0x),
                // too many connections, serialization/deadlock (retryable by the client).
                Some("5" | "6" | "53300" | "40001" | "40P01" | "57P01" | "57P02" | "57P03")
            ) || db.code().is_some_and(|c| c.starts_with("08"))
        }
        _ => false,
    };
    if unavailable {
        StorageError::Unavailable(e.to_string())
    } else {
        StorageError::Other(anyhow::Error::new(e))
    }
}

pub fn corrupt(what: &str, detail: impl std::fmt::Display) -> StorageError {
    StorageError::Other(anyhow::anyhow!("stored {what} is invalid: {detail}"))
}

pub fn parse_uuid(s: &str, what: &str) -> Result<Uuid, StorageError> {
    Uuid::parse_str(s).map_err(|e| corrupt(what, e))
}

pub fn parse_json(s: &str, what: &str) -> Result<Value, StorageError> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

pub fn parse_summary(s: &str, what: &str) -> Result<UserCheckinSummary, StorageError> {
    input::user_checkin_summary(&parse_json(s, what)?, what).map_err(|e| corrupt(what, e))
}

pub fn parse_statuses(
    s: &str,
    what: &str,
) -> Result<Vec<crate::model::CheckinStatus>, StorageError> {
    input::checkin_statuses(&parse_json(s, what)?, what).map_err(|e| corrupt(what, e))
}

pub fn parse_kind(s: &str) -> Result<ConfigurationKind, StorageError> {
    ConfigurationKind::from_type_name(s).ok_or_else(|| corrupt("odata_type", s))
}

pub fn parse_target(
    target_type: &str,
    group_id: Option<String>,
) -> Result<AssignmentTarget, StorageError> {
    match (target_type, group_id) {
        ("group", Some(g)) => Ok(AssignmentTarget::Group {
            group_id: parse_uuid(&g, "group_id")?,
        }),
        (other, _) => Err(corrupt("target_type", other)),
    }
}

/// `(target_type, group_id)` columns of a target.
pub fn target_columns(t: &AssignmentTarget) -> (&'static str, String) {
    match t {
        AssignmentTarget::Group { group_id } => ("group", group_id.to_string()),
    }
}

pub fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

pub fn from_micros(us: i64) -> Result<OffsetDateTime, StorageError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map_err(|e| corrupt("timestamp", e))
}

/// Implements `Store` for `$store` (which must have `reader`/`writer` pools, a `changes` feed
/// bumped after every commit, and an inherent
/// `async fn begin_tenant(&self, tenant: &TenantId, new_singleton_id: Uuid) ->
/// Result<Transaction<'static, $db>, sqlx::Error>` that returns a transaction holding the
/// tenant's write lock) and `TenantTx` for its transaction type `$tx`.
macro_rules! sql_engine {
    ($store:ident, $tx:ident, $db:ty, $row:ty, $collate:expr) => {
        /// Binds a built query's parameters, in order.
        fn bound(
            sql: &$crate::storage::query::Sql,
        ) -> sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments> {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.text.clone()));
            for p in &sql.params {
                q = match p {
                    $crate::storage::query::Param::Int(i) => q.bind(*i),
                    $crate::storage::query::Param::Text(s) => q.bind(s.as_str()),
                };
            }
            q
        }

        /// The `k0, k1, …` sort-key values of a page row.
        fn sort_values(
            row: &$row,
            q: &$crate::storage::query::CollectionQuery,
        ) -> $crate::storage::StorageResult<Vec<$crate::storage::query::Param>> {
            use sqlx::Row as _;
            use $crate::storage::query::{Param, SortColumn};
            use $crate::storage::sql::map_err;
            q.order
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let col = format!("k{i}");
                    Ok(match k.column {
                        SortColumn::DisplayName | SortColumn::Description => {
                            Param::Text(row.try_get::<String, _>(col.as_str()).map_err(map_err)?)
                        }
                        SortColumn::Priority => Param::Int(i64::from(
                            row.try_get::<i32, _>(col.as_str()).map_err(map_err)?,
                        )),
                        SortColumn::LastModifiedDateTime | SortColumn::Position => {
                            Param::Int(row.try_get::<i64, _>(col.as_str()).map_err(map_err)?)
                        }
                    })
                })
                .collect()
        }

        fn untranslatable(
            e: $crate::storage::query::Untranslatable,
        ) -> $crate::storage::StorageError {
            $crate::storage::StorageError::Other(anyhow::anyhow!(
                "the filter names '{}', which this collection does not store",
                e.0
            ))
        }

        fn office_from_row(
            row: &$row,
        ) -> $crate::storage::StorageResult<$crate::model::OfficeConfiguration> {
            use sqlx::Row as _;
            use $crate::storage::sql::*;
            Ok($crate::model::OfficeConfiguration {
                id: parse_uuid(&row.try_get::<String, _>("id").map_err(map_err)?, "id")?,
                tenant_checkin_statuses: parse_statuses(
                    &row.try_get::<String, _>("tenant_checkin_statuses")
                        .map_err(map_err)?,
                    "tenantCheckinStatuses",
                )?,
                tenant_user_checkin_summary: parse_summary(
                    &row.try_get::<String, _>("tenant_user_checkin_summary")
                        .map_err(map_err)?,
                    "tenantUserCheckinSummary",
                )?,
                checkin_override: row.try_get("checkin_override").map_err(map_err)?,
                version: row.try_get("version").map_err(map_err)?,
            })
        }

        fn configuration_from_row(
            row: &$row,
        ) -> $crate::storage::StorageResult<$crate::model::ClientConfiguration> {
            use sqlx::Row as _;
            use $crate::storage::sql::*;
            Ok($crate::model::ClientConfiguration {
                id: parse_uuid(&row.try_get::<String, _>("id").map_err(map_err)?, "id")?,
                kind: parse_kind(&row.try_get::<String, _>("odata_type").map_err(map_err)?)?,
                display_name: row.try_get("display_name").map_err(map_err)?,
                description: row.try_get("description").map_err(map_err)?,
                priority: row.try_get("priority").map_err(map_err)?,
                policy_payload: row.try_get("policy_payload").map_err(map_err)?,
                user_preference_payload: row.try_get("user_preference_payload").map_err(map_err)?,
                checkin_statuses: parse_statuses(
                    &row.try_get::<String, _>("checkin_statuses")
                        .map_err(map_err)?,
                    "checkinStatuses",
                )?,
                user_checkin_summary: parse_summary(
                    &row.try_get::<String, _>("user_checkin_summary")
                        .map_err(map_err)?,
                    "userCheckinSummary",
                )?,
                checkin_override: row.try_get("checkin_override").map_err(map_err)?,
                last_modified_date_time: from_micros(
                    row.try_get("last_modified_date_time").map_err(map_err)?,
                )?,
                version: row.try_get("version").map_err(map_err)?,
            })
        }

        fn assignment_from_row(
            row: &$row,
        ) -> $crate::storage::StorageResult<$crate::model::Assignment> {
            use sqlx::Row as _;
            use $crate::storage::sql::*;
            Ok($crate::model::Assignment {
                id: parse_uuid(&row.try_get::<String, _>("id").map_err(map_err)?, "id")?,
                configuration_id: parse_uuid(
                    &row.try_get::<String, _>("configuration_id")
                        .map_err(map_err)?,
                    "configuration_id",
                )?,
                target: parse_target(
                    &row.try_get::<String, _>("target_type").map_err(map_err)?,
                    row.try_get("group_id").map_err(map_err)?,
                )?,
                version: row.try_get("version").map_err(map_err)?,
            })
        }

        #[async_trait::async_trait]
        impl $crate::storage::Store for $store {
            async fn office_configuration(
                &self,
                tenant: &$crate::model::TenantId,
            ) -> $crate::storage::StorageResult<Option<$crate::model::OfficeConfiguration>> {
                use $crate::storage::sql::*;
                let row = sqlx::query(SELECT_OFFICE)
                    .bind(tenant.as_str())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(office_from_row).transpose()
            }

            async fn configurations(
                &self,
                tenant: &$crate::model::TenantId,
            ) -> $crate::storage::StorageResult<Vec<$crate::model::ClientConfiguration>> {
                use $crate::storage::sql::*;
                let rows = sqlx::query(SELECT_CONFIGS)
                    .bind(tenant.as_str())
                    .fetch_all(&self.reader)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(configuration_from_row).collect()
            }

            async fn configuration(
                &self,
                tenant: &$crate::model::TenantId,
                id: uuid::Uuid,
            ) -> $crate::storage::StorageResult<Option<$crate::model::ClientConfiguration>> {
                use $crate::storage::sql::*;
                let row = sqlx::query(SELECT_CONFIG)
                    .bind(tenant.as_str())
                    .bind(id.to_string())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(configuration_from_row).transpose()
            }

            async fn assignment(
                &self,
                tenant: &$crate::model::TenantId,
                configuration_id: uuid::Uuid,
                id: uuid::Uuid,
            ) -> $crate::storage::StorageResult<Option<$crate::model::Assignment>> {
                use $crate::storage::sql::*;
                let row = sqlx::query(SELECT_ASSIGNMENT)
                    .bind(tenant.as_str())
                    .bind(configuration_id.to_string())
                    .bind(id.to_string())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(assignment_from_row).transpose()
            }

            async fn query_configurations(
                &self,
                tenant: &$crate::model::TenantId,
                q: &$crate::storage::query::CollectionQuery,
            ) -> $crate::storage::StorageResult<
                Vec<(
                    $crate::model::ClientConfiguration,
                    Vec<$crate::storage::query::Param>,
                )>,
            > {
                use $crate::storage::sql::*;
                let sql = $crate::storage::query::page(tenant.as_str(), q, $collate)
                    .map_err(untranslatable)?;
                let rows = bound(&sql).fetch_all(&self.reader).await.map_err(map_err)?;
                rows.iter()
                    .map(|r| Ok((configuration_from_row(r)?, sort_values(r, q)?)))
                    .collect()
            }

            async fn query_assignments(
                &self,
                tenant: &$crate::model::TenantId,
                q: &$crate::storage::query::CollectionQuery,
            ) -> $crate::storage::StorageResult<
                Vec<(
                    $crate::model::Assignment,
                    Vec<$crate::storage::query::Param>,
                )>,
            > {
                use $crate::storage::sql::*;
                let sql = $crate::storage::query::page(tenant.as_str(), q, $collate)
                    .map_err(untranslatable)?;
                let rows = bound(&sql).fetch_all(&self.reader).await.map_err(map_err)?;
                rows.iter()
                    .map(|r| Ok((assignment_from_row(r)?, sort_values(r, q)?)))
                    .collect()
            }

            async fn count(
                &self,
                tenant: &$crate::model::TenantId,
                q: &$crate::storage::query::CollectionQuery,
            ) -> $crate::storage::StorageResult<u64> {
                use sqlx::Row as _;
                use $crate::storage::sql::*;
                let sql = $crate::storage::query::count(tenant.as_str(), q, $collate)
                    .map_err(untranslatable)?;
                let row = bound(&sql).fetch_one(&self.reader).await.map_err(map_err)?;
                let n: i64 = row.try_get(0).map_err(map_err)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn assignments_of(
                &self,
                tenant: &$crate::model::TenantId,
                configuration_ids: &[uuid::Uuid],
            ) -> $crate::storage::StorageResult<Vec<$crate::model::Assignment>> {
                use $crate::storage::sql::*;
                let mut out = Vec::new();
                // One statement per chunk keeps the parameter count within every engine's limit.
                for chunk in configuration_ids.chunks(500) {
                    let mut sql = $crate::storage::query::assignments_of(tenant.as_str(), chunk);
                    sql.text
                        .push_str(" ORDER BY t.configuration_id, t.position, t.id");
                    let rows = bound(&sql).fetch_all(&self.reader).await.map_err(map_err)?;
                    for r in &rows {
                        out.push(assignment_from_row(r)?);
                    }
                }
                Ok(out)
            }

            async fn begin(
                &self,
                tenant: &$crate::model::TenantId,
                new_singleton_id: uuid::Uuid,
            ) -> $crate::storage::StorageResult<Box<dyn $crate::storage::TenantTx>> {
                use $crate::storage::sql::*;
                let tx = self
                    .begin_tenant(tenant, new_singleton_id)
                    .await
                    .map_err(map_err)?;
                Ok(Box::new($tx {
                    tx,
                    tenant: tenant.clone(),
                    changes: self.changes.clone(),
                    overrides: self.overrides.clone(),
                    override_written: false,
                }))
            }

            async fn record_checkins(
                &self,
                batch: &[$crate::model::Checkin],
            ) -> $crate::storage::StorageResult<Vec<$crate::model::TenantId>> {
                self.checkins_record(batch).await
            }

            async fn materialize_checkins(
                &self,
                limit: usize,
            ) -> $crate::storage::StorageResult<usize> {
                self.checkins_materialize(limit).await
            }

            async fn tenant_checkin_view(
                &self,
                tenant: &$crate::model::TenantId,
                since: time::OffsetDateTime,
                cap: u32,
            ) -> $crate::storage::StorageResult<$crate::model::CheckinView> {
                self.checkins_tenant_view(tenant, since, cap).await
            }

            async fn configuration_checkin_views(
                &self,
                tenant: &$crate::model::TenantId,
                ids: &[uuid::Uuid],
                since: time::OffsetDateTime,
                cap: u32,
            ) -> $crate::storage::StorageResult<
                std::collections::HashMap<uuid::Uuid, $crate::model::CheckinView>,
            > {
                self.checkins_configuration_views(tenant, ids, since, cap)
                    .await
            }

            async fn ping(&self) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                sqlx::query(PING)
                    .execute(&self.reader)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }
        }

        pub struct $tx {
            tx: sqlx::Transaction<'static, $db>,
            tenant: $crate::model::TenantId,
            /// Bumped after the commit, so this process's caches see its own write at once.
            changes: std::sync::Arc<$crate::storage::changes::ChangeFeed>,
            /// Told (before the commit) when the tenant is left with an override of its
            /// check-in views (SQLite routes check-ins by it; PostgreSQL ignores it).
            overrides: std::sync::Arc<$crate::storage::sqlite_log::OverriddenTenants>,
            /// Whether this transaction set an override of the check-in views.
            override_written: bool,
        }

        impl $tx {
            async fn write_assignment(
                &mut self,
                a: &$crate::model::Assignment,
                position: i64,
            ) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                let (target_type, group_id) = target_columns(&a.target);
                sqlx::query(INSERT_ASSIGNMENT)
                    .bind(self.tenant.as_str())
                    .bind(a.configuration_id.to_string())
                    .bind(a.id.to_string())
                    .bind(position)
                    .bind(target_type)
                    .bind(group_id)
                    .bind(a.version)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::TenantTx for $tx {
            async fn office_configuration(
                &mut self,
            ) -> $crate::storage::StorageResult<$crate::model::OfficeConfiguration> {
                use $crate::storage::sql::*;
                let row = sqlx::query(SELECT_OFFICE)
                    .bind(self.tenant.as_str())
                    .fetch_one(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                office_from_row(&row)
            }

            async fn update_office_configuration(
                &mut self,
                v: &$crate::model::OfficeConfiguration,
            ) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                sqlx::query(UPDATE_OFFICE)
                    .bind(
                        $crate::model::checkin_statuses_json(&v.tenant_checkin_statuses)
                            .to_string(),
                    )
                    .bind(v.tenant_user_checkin_summary.to_json().to_string())
                    .bind({
                        self.override_written |= v.checkin_override;
                        v.checkin_override
                    })
                    .bind(v.version)
                    .bind(self.tenant.as_str())
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn configuration(
                &mut self,
                id: uuid::Uuid,
            ) -> $crate::storage::StorageResult<Option<$crate::model::ClientConfiguration>> {
                use $crate::storage::sql::*;
                let row = sqlx::query(SELECT_CONFIG)
                    .bind(self.tenant.as_str())
                    .bind(id.to_string())
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(configuration_from_row).transpose()
            }

            async fn priorities(
                &mut self,
            ) -> $crate::storage::StorageResult<Vec<(uuid::Uuid, i32)>> {
                use sqlx::Row as _;
                use $crate::storage::sql::*;
                let rows = sqlx::query(SELECT_PRIORITIES)
                    .bind(self.tenant.as_str())
                    .fetch_all(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            parse_uuid(&r.try_get::<String, _>("id").map_err(map_err)?, "id")?,
                            r.try_get("priority").map_err(map_err)?,
                        ))
                    })
                    .collect()
            }

            async fn priority_holder(
                &mut self,
                priority: i32,
            ) -> $crate::storage::StorageResult<Option<uuid::Uuid>> {
                use $crate::storage::sql::*;
                let id: Option<String> = sqlx::query_scalar(SELECT_PRIORITY_HOLDER)
                    .bind(self.tenant.as_str())
                    .bind(priority)
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                id.map(|s| parse_uuid(&s, "id")).transpose()
            }

            async fn max_priority(&mut self) -> $crate::storage::StorageResult<Option<i32>> {
                use $crate::storage::sql::*;
                sqlx::query_scalar(SELECT_MAX_PRIORITY)
                    .bind(self.tenant.as_str())
                    .fetch_one(&mut *self.tx)
                    .await
                    .map_err(map_err)
            }

            async fn insert_configuration(
                &mut self,
                c: &$crate::model::ClientConfiguration,
            ) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                sqlx::query(INSERT_CONFIG)
                    .bind(self.tenant.as_str())
                    .bind(c.id.to_string())
                    .bind(c.kind.type_name())
                    .bind(&c.display_name)
                    .bind(&c.description)
                    .bind(c.priority)
                    .bind(&c.policy_payload)
                    .bind(&c.user_preference_payload)
                    .bind($crate::model::checkin_statuses_json(&c.checkin_statuses).to_string())
                    .bind(c.user_checkin_summary.to_json().to_string())
                    .bind({
                        self.override_written |= c.checkin_override;
                        c.checkin_override
                    })
                    .bind(micros(c.last_modified_date_time))
                    .bind(c.version)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn update_configuration(
                &mut self,
                c: &$crate::model::ClientConfiguration,
            ) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                sqlx::query(UPDATE_CONFIG)
                    .bind(&c.display_name)
                    .bind(&c.description)
                    .bind(c.priority)
                    .bind(&c.policy_payload)
                    .bind(&c.user_preference_payload)
                    .bind($crate::model::checkin_statuses_json(&c.checkin_statuses).to_string())
                    .bind(c.user_checkin_summary.to_json().to_string())
                    .bind({
                        self.override_written |= c.checkin_override;
                        c.checkin_override
                    })
                    .bind(micros(c.last_modified_date_time))
                    .bind(c.version)
                    .bind(self.tenant.as_str())
                    .bind(c.id.to_string())
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn delete_configuration(
                &mut self,
                id: uuid::Uuid,
            ) -> $crate::storage::StorageResult<bool> {
                use $crate::storage::sql::*;
                // Explicitly, rather than relying on the foreign key's cascade, so a distributed
                // engine without cross-shard foreign keys behaves the same.
                sqlx::query(DELETE_CONFIG_ASSIGNMENTS)
                    .bind(self.tenant.as_str())
                    .bind(id.to_string())
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                // Its check-in index goes too (the reports themselves keep the id, as reported).
                sqlx::query($crate::storage::checkins::DELETE_CONFIG_CHECKINS)
                    .bind(self.tenant.as_str())
                    .bind(id.to_string())
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                let done = sqlx::query(DELETE_CONFIG)
                    .bind(self.tenant.as_str())
                    .bind(id.to_string())
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn assignments(
                &mut self,
                configuration_id: uuid::Uuid,
            ) -> $crate::storage::StorageResult<Vec<$crate::model::Assignment>> {
                use $crate::storage::sql::*;
                let rows = sqlx::query(SELECT_ASSIGNMENTS)
                    .bind(self.tenant.as_str())
                    .bind(configuration_id.to_string())
                    .fetch_all(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(assignment_from_row).collect()
            }

            async fn replace_assignments(
                &mut self,
                configuration_id: uuid::Uuid,
                values: &[$crate::model::Assignment],
            ) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                sqlx::query(DELETE_CONFIG_ASSIGNMENTS)
                    .bind(self.tenant.as_str())
                    .bind(configuration_id.to_string())
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                for (i, a) in values.iter().enumerate() {
                    self.write_assignment(a, i64::try_from(i).unwrap_or(i64::MAX))
                        .await?;
                }
                Ok(())
            }

            async fn insert_assignment(
                &mut self,
                a: &$crate::model::Assignment,
            ) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                let next: i64 = sqlx::query_scalar(NEXT_ASSIGNMENT_POSITION)
                    .bind(self.tenant.as_str())
                    .bind(a.configuration_id.to_string())
                    .fetch_one(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                self.write_assignment(a, next).await
            }

            async fn update_assignment(
                &mut self,
                a: &$crate::model::Assignment,
            ) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                let (target_type, group_id) = target_columns(&a.target);
                sqlx::query(UPDATE_ASSIGNMENT)
                    .bind(target_type)
                    .bind(group_id)
                    .bind(a.version)
                    .bind(self.tenant.as_str())
                    .bind(a.configuration_id.to_string())
                    .bind(a.id.to_string())
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn delete_assignment(
                &mut self,
                configuration_id: uuid::Uuid,
                id: uuid::Uuid,
            ) -> $crate::storage::StorageResult<bool> {
                use $crate::storage::sql::*;
                let done = sqlx::query(DELETE_ASSIGNMENT)
                    .bind(self.tenant.as_str())
                    .bind(configuration_id.to_string())
                    .bind(id.to_string())
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn commit(self: Box<Self>) -> $crate::storage::StorageResult<()> {
                use $crate::storage::sql::*;
                let mut this = *self;
                $store::before_commit(
                    &mut this.tx,
                    &this.tenant,
                    this.override_written.then_some(&*this.overrides),
                )
                .await
                .map_err(map_err)?;
                let result = this.tx.commit().await.map_err(map_err);
                // Even after a reported failure the commit may have happened: bump anyway.
                this.changes.bump(
                    &this.tenant,
                    $crate::storage::changes::Topic::Configurations,
                );
                result
            }
        }
    };
}

pub(crate) use sql_engine;
