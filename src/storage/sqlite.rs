//! The embedded engine: one SQLite file in the data directory, WAL, `synchronous=FULL` so an
//! acknowledged write survives a crash. One writer connection (SQLite has one writer anyway;
//! `BEGIN IMMEDIATE` takes the lock up front so no transaction fails half-way on an upgrade),
//! several reader connections.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{StorageError, StorageResult, Store, TenantTx};
use crate::model::{
    Assignment, AssignmentTarget, ClientConfiguration, ConfigurationKind, OfficeConfiguration,
    TenantId, UserCheckinSummary, checkin_statuses_json, input,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

fn map_err(e: sqlx::Error) -> StorageError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StorageError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("5") => {
            StorageError::Unavailable(e.to_string())
        }
        _ => StorageError::Other(anyhow::Error::new(e)),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await
            .with_context(|| format!("opening SQLite database {}", path.display()))?;
        MIGRATOR
            .run(&writer)
            .await
            .context("applying SQLite migrations")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Self { reader, writer })
    }
}

fn uuid_col(row: &SqliteRow, col: &str) -> StorageResult<Uuid> {
    let s: String = row.try_get(col).map_err(map_err)?;
    Uuid::parse_str(&s)
        .with_context(|| format!("stored {col} is not a GUID"))
        .map_err(StorageError::Other)
}

fn json_col(row: &SqliteRow, col: &str) -> StorageResult<Value> {
    let s: String = row.try_get(col).map_err(map_err)?;
    serde_json::from_str(&s)
        .with_context(|| format!("stored {col} is not JSON"))
        .map_err(StorageError::Other)
}

fn stored<T>(r: crate::error::GraphResult<T>, what: &str) -> StorageResult<T> {
    r.map_err(|e| StorageError::Other(anyhow::anyhow!("stored {what} is invalid: {e}")))
}

fn summary_col(row: &SqliteRow, col: &str) -> StorageResult<UserCheckinSummary> {
    let v = json_col(row, col)?;
    stored(input::user_checkin_summary(&v, col), col)
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

fn from_micros(us: i64) -> StorageResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map_err(|e| StorageError::Other(anyhow::Error::new(e)))
}

fn office_configuration_from_row(row: &SqliteRow) -> StorageResult<OfficeConfiguration> {
    let statuses = json_col(row, "tenant_checkin_statuses")?;
    Ok(OfficeConfiguration {
        id: uuid_col(row, "id")?,
        tenant_checkin_statuses: stored(
            input::checkin_statuses(&statuses, "tenantCheckinStatuses"),
            "statuses",
        )?,
        tenant_user_checkin_summary: summary_col(row, "tenant_user_checkin_summary")?,
        version: row.try_get("version").map_err(map_err)?,
    })
}

fn configuration_from_row(row: &SqliteRow) -> StorageResult<ClientConfiguration> {
    let type_name: String = row.try_get("odata_type").map_err(map_err)?;
    let kind = ConfigurationKind::from_type_name(&type_name)
        .ok_or_else(|| StorageError::Other(anyhow::anyhow!("unknown stored type {type_name}")))?;
    let statuses = json_col(row, "checkin_statuses")?;
    Ok(ClientConfiguration {
        id: uuid_col(row, "id")?,
        kind,
        display_name: row.try_get("display_name").map_err(map_err)?,
        description: row.try_get("description").map_err(map_err)?,
        priority: row.try_get("priority").map_err(map_err)?,
        policy_payload: row.try_get("policy_payload").map_err(map_err)?,
        user_preference_payload: row.try_get("user_preference_payload").map_err(map_err)?,
        checkin_statuses: stored(
            input::checkin_statuses(&statuses, "checkinStatuses"),
            "statuses",
        )?,
        user_checkin_summary: summary_col(row, "user_checkin_summary")?,
        last_modified_date_time: from_micros(
            row.try_get("last_modified_date_time").map_err(map_err)?,
        )?,
        version: row.try_get("version").map_err(map_err)?,
    })
}

fn assignment_from_row(row: &SqliteRow) -> StorageResult<Assignment> {
    let target_type: String = row.try_get("target_type").map_err(map_err)?;
    let target = match target_type.as_str() {
        "group" => AssignmentTarget::Group {
            group_id: uuid_col(row, "group_id")?,
        },
        other => {
            return Err(StorageError::Other(anyhow::anyhow!(
                "unknown stored target type {other}"
            )));
        }
    };
    Ok(Assignment {
        id: uuid_col(row, "id")?,
        configuration_id: uuid_col(row, "configuration_id")?,
        target,
        version: row.try_get("version").map_err(map_err)?,
    })
}

const SELECT_OFFICE: &str = "SELECT id, tenant_checkin_statuses, tenant_user_checkin_summary, version FROM office_configurations WHERE tenant_id = ?";
const SELECT_CONFIGS: &str =
    "SELECT * FROM client_configurations WHERE tenant_id = ? ORDER BY priority, id";
const SELECT_CONFIG: &str = "SELECT * FROM client_configurations WHERE tenant_id = ? AND id = ?";
const SELECT_ASSIGNMENTS: &str = "SELECT * FROM client_configuration_assignments WHERE tenant_id = ? AND configuration_id = ? ORDER BY position, id";
const SELECT_ASSIGNMENT: &str = "SELECT * FROM client_configuration_assignments WHERE tenant_id = ? AND configuration_id = ? AND id = ?";

#[async_trait]
impl Store for SqliteStore {
    async fn office_configuration(
        &self,
        tenant: &TenantId,
    ) -> StorageResult<Option<OfficeConfiguration>> {
        let row = sqlx::query(SELECT_OFFICE)
            .bind(tenant.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(office_configuration_from_row).transpose()
    }

    async fn configurations(&self, tenant: &TenantId) -> StorageResult<Vec<ClientConfiguration>> {
        let rows = sqlx::query(SELECT_CONFIGS)
            .bind(tenant.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(configuration_from_row).collect()
    }

    async fn configuration(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StorageResult<Option<ClientConfiguration>> {
        let row = sqlx::query(SELECT_CONFIG)
            .bind(tenant.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(configuration_from_row).transpose()
    }

    async fn assignments(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
    ) -> StorageResult<Vec<Assignment>> {
        let rows = sqlx::query(SELECT_ASSIGNMENTS)
            .bind(tenant.as_str())
            .bind(configuration_id.to_string())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(assignment_from_row).collect()
    }

    async fn assignment(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
        id: Uuid,
    ) -> StorageResult<Option<Assignment>> {
        let row = sqlx::query(SELECT_ASSIGNMENT)
            .bind(tenant.as_str())
            .bind(configuration_id.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(assignment_from_row).transpose()
    }

    async fn begin(
        &self,
        tenant: &TenantId,
        new_singleton_id: Uuid,
    ) -> StorageResult<Box<dyn TenantTx>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        sqlx::query("INSERT INTO office_configurations (tenant_id, id) VALUES (?, ?) ON CONFLICT (tenant_id) DO NOTHING")
            .bind(tenant.as_str())
            .bind(new_singleton_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        Ok(Box::new(SqliteTenantTx {
            tx,
            tenant: tenant.clone(),
        }))
    }

    async fn ping(&self) -> StorageResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

struct SqliteTenantTx {
    tx: Transaction<'static, Sqlite>,
    tenant: TenantId,
}

impl SqliteTenantTx {
    async fn write_assignment(&mut self, a: &Assignment, position: i64) -> StorageResult<()> {
        let AssignmentTarget::Group { group_id } = &a.target;
        sqlx::query(
            "INSERT INTO client_configuration_assignments (tenant_id, configuration_id, id, position, target_type, group_id, version) VALUES (?, ?, ?, ?, 'group', ?, ?)",
        )
        .bind(self.tenant.as_str())
        .bind(a.configuration_id.to_string())
        .bind(a.id.to_string())
        .bind(position)
        .bind(group_id.to_string())
        .bind(a.version)
        .execute(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl TenantTx for SqliteTenantTx {
    async fn office_configuration(&mut self) -> StorageResult<OfficeConfiguration> {
        let row = sqlx::query(SELECT_OFFICE)
            .bind(self.tenant.as_str())
            .fetch_one(&mut *self.tx)
            .await
            .map_err(map_err)?;
        office_configuration_from_row(&row)
    }

    async fn update_office_configuration(&mut self, v: &OfficeConfiguration) -> StorageResult<()> {
        sqlx::query("UPDATE office_configurations SET tenant_checkin_statuses = ?, tenant_user_checkin_summary = ?, version = ? WHERE tenant_id = ?")
            .bind(checkin_statuses_json(&v.tenant_checkin_statuses).to_string())
            .bind(v.tenant_user_checkin_summary.to_json().to_string())
            .bind(v.version)
            .bind(self.tenant.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn configuration(&mut self, id: Uuid) -> StorageResult<Option<ClientConfiguration>> {
        let row = sqlx::query(SELECT_CONFIG)
            .bind(self.tenant.as_str())
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        row.as_ref().map(configuration_from_row).transpose()
    }

    async fn priorities(&mut self) -> StorageResult<Vec<(Uuid, i32)>> {
        let rows =
            sqlx::query("SELECT id, priority FROM client_configurations WHERE tenant_id = ?")
                .bind(self.tenant.as_str())
                .fetch_all(&mut *self.tx)
                .await
                .map_err(map_err)?;
        rows.iter()
            .map(|r| Ok((uuid_col(r, "id")?, r.try_get("priority").map_err(map_err)?)))
            .collect()
    }

    async fn insert_configuration(&mut self, c: &ClientConfiguration) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO client_configurations (tenant_id, id, odata_type, display_name, description, priority, policy_payload, user_preference_payload, checkin_statuses, user_checkin_summary, last_modified_date_time, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(self.tenant.as_str())
        .bind(c.id.to_string())
        .bind(c.kind.type_name())
        .bind(&c.display_name)
        .bind(&c.description)
        .bind(c.priority)
        .bind(&c.policy_payload)
        .bind(&c.user_preference_payload)
        .bind(checkin_statuses_json(&c.checkin_statuses).to_string())
        .bind(c.user_checkin_summary.to_json().to_string())
        .bind(micros(c.last_modified_date_time))
        .bind(c.version)
        .execute(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn update_configuration(&mut self, c: &ClientConfiguration) -> StorageResult<()> {
        sqlx::query(
            "UPDATE client_configurations SET display_name = ?, description = ?, priority = ?, policy_payload = ?, user_preference_payload = ?, checkin_statuses = ?, user_checkin_summary = ?, last_modified_date_time = ?, version = ? WHERE tenant_id = ? AND id = ?",
        )
        .bind(&c.display_name)
        .bind(&c.description)
        .bind(c.priority)
        .bind(&c.policy_payload)
        .bind(&c.user_preference_payload)
        .bind(checkin_statuses_json(&c.checkin_statuses).to_string())
        .bind(c.user_checkin_summary.to_json().to_string())
        .bind(micros(c.last_modified_date_time))
        .bind(c.version)
        .bind(self.tenant.as_str())
        .bind(c.id.to_string())
        .execute(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn delete_configuration(&mut self, id: Uuid) -> StorageResult<bool> {
        let done = sqlx::query("DELETE FROM client_configurations WHERE tenant_id = ? AND id = ?")
            .bind(self.tenant.as_str())
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn assignments(&mut self, configuration_id: Uuid) -> StorageResult<Vec<Assignment>> {
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
        configuration_id: Uuid,
        values: &[Assignment],
    ) -> StorageResult<()> {
        sqlx::query("DELETE FROM client_configuration_assignments WHERE tenant_id = ? AND configuration_id = ?")
            .bind(self.tenant.as_str())
            .bind(configuration_id.to_string())
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        for (i, a) in values.iter().enumerate() {
            self.write_assignment(a, i as i64).await?;
        }
        Ok(())
    }

    async fn insert_assignment(&mut self, a: &Assignment) -> StorageResult<()> {
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(position) + 1, 0) FROM client_configuration_assignments WHERE tenant_id = ? AND configuration_id = ?",
        )
        .bind(self.tenant.as_str())
        .bind(a.configuration_id.to_string())
        .fetch_one(&mut *self.tx)
        .await
        .map_err(map_err)?;
        self.write_assignment(a, next).await
    }

    async fn update_assignment(&mut self, a: &Assignment) -> StorageResult<()> {
        let AssignmentTarget::Group { group_id } = &a.target;
        sqlx::query("UPDATE client_configuration_assignments SET target_type = 'group', group_id = ?, version = ? WHERE tenant_id = ? AND configuration_id = ? AND id = ?")
            .bind(group_id.to_string())
            .bind(a.version)
            .bind(self.tenant.as_str())
            .bind(a.configuration_id.to_string())
            .bind(a.id.to_string())
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_assignment(&mut self, configuration_id: Uuid, id: Uuid) -> StorageResult<bool> {
        let done = sqlx::query("DELETE FROM client_configuration_assignments WHERE tenant_id = ? AND configuration_id = ? AND id = ?")
            .bind(self.tenant.as_str())
            .bind(configuration_id.to_string())
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn commit(self: Box<Self>) -> StorageResult<()> {
        self.tx.commit().await.map_err(map_err)
    }
}
