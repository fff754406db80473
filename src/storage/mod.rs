//! Storage: one interface, engines behind it. Handlers and the domain layer never see SQL or
//! an engine type; they get [`Store`] for reads and a [`TenantTx`] for writes.
//!
//! Writes for one tenant are serialised: [`Store::begin`] takes the tenant's write lock (the
//! singleton row, created on first use) so the domain rules that span rows (unique priorities,
//! whole-set `assign`) are checked and applied atomically.

pub mod cache;
pub mod changes;
pub mod checkins;
pub mod postgres;
pub mod query;
pub mod sql;
pub mod sqlite;
pub mod sqlite_log;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::GraphError;
use std::collections::HashMap;

use time::OffsetDateTime;

use crate::model::{
    Assignment, Checkin, CheckinView, ClientConfiguration, OfficeConfiguration, TenantId,
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached (or is busy beyond the timeout): retryable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<StorageError> for GraphError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(msg) => {
                tracing::warn!(%msg, "storage unavailable");
                GraphError::Unavailable {
                    retry_after_secs: 5,
                }
            }
            StorageError::Other(err) => GraphError::Internal(err),
        }
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The tenant's singleton, or `None` if the tenant never wrote anything yet.
    async fn office_configuration(
        &self,
        tenant: &TenantId,
    ) -> StorageResult<Option<OfficeConfiguration>>;
    /// All configurations of the tenant, by priority then id.
    async fn configurations(&self, tenant: &TenantId) -> StorageResult<Vec<ClientConfiguration>>;
    async fn configuration(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StorageResult<Option<ClientConfiguration>>;
    async fn assignment(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
        id: Uuid,
    ) -> StorageResult<Option<Assignment>>;
    /// One page of configurations matching a collection query, each with its sort-key values.
    async fn query_configurations(
        &self,
        tenant: &TenantId,
        q: &query::CollectionQuery,
    ) -> StorageResult<Vec<(ClientConfiguration, Vec<query::Param>)>>;
    /// One page of one configuration's assignments matching a collection query.
    async fn query_assignments(
        &self,
        tenant: &TenantId,
        q: &query::CollectionQuery,
    ) -> StorageResult<Vec<(Assignment, Vec<query::Param>)>>;
    /// How many items match a collection query (ignoring order, cursor, offset and limit).
    async fn count(&self, tenant: &TenantId, q: &query::CollectionQuery) -> StorageResult<u64>;
    /// The assignments of several configurations (for `$expand`), in stored order.
    async fn assignments_of(
        &self,
        tenant: &TenantId,
        configuration_ids: &[Uuid],
    ) -> StorageResult<Vec<Assignment>>;
    /// Starts a write transaction holding the tenant's write lock. `new_singleton_id` is used
    /// if the tenant's singleton does not exist yet.
    async fn begin(
        &self,
        tenant: &TenantId,
        new_singleton_id: Uuid,
    ) -> StorageResult<Box<dyn TenantTx>>;
    /// Durably stores a batch of check-ins in one transaction (appended to the check-in log;
    /// the latest report per (tenant, user, device) is what the views show) and ends the Graph
    /// overrides in their scopes. Returns the tenants whose singleton or configurations changed
    /// that way.
    async fn record_checkins(&self, batch: &[Checkin]) -> StorageResult<Vec<TenantId>>;
    /// Applies up to `limit` of the oldest logged check-ins to the tables the views read, in
    /// one transaction; returns how many. The views apply what is pending themselves, so this
    /// only keeps the log short.
    async fn materialize_checkins(&self, limit: usize) -> StorageResult<usize>;
    /// The tenant's check-in view over reports at or after `since`, at most `cap` statuses.
    async fn tenant_checkin_view(
        &self,
        tenant: &TenantId,
        since: OffsetDateTime,
        cap: u32,
    ) -> StorageResult<CheckinView>;
    /// Each configuration's view over the reports at or after `since` that applied it.
    async fn configuration_checkin_views(
        &self,
        tenant: &TenantId,
        ids: &[Uuid],
        since: OffsetDateTime,
        cap: u32,
    ) -> StorageResult<HashMap<Uuid, CheckinView>>;
    /// Cheap liveness probe of the database.
    async fn ping(&self) -> StorageResult<()>;
}

/// A write transaction scoped to one tenant. Dropping it without `commit` rolls back.
#[async_trait]
pub trait TenantTx: Send {
    async fn office_configuration(&mut self) -> StorageResult<OfficeConfiguration>;
    async fn update_office_configuration(
        &mut self,
        value: &OfficeConfiguration,
    ) -> StorageResult<()>;
    async fn configuration(&mut self, id: Uuid) -> StorageResult<Option<ClientConfiguration>>;
    /// `(id, priority)` of every configuration of the tenant.
    async fn priorities(&mut self) -> StorageResult<Vec<(Uuid, i32)>>;
    /// The configuration holding a priority, if any (index lookup).
    async fn priority_holder(&mut self, priority: i32) -> StorageResult<Option<Uuid>>;
    /// The highest priority in use, if any (index lookup).
    async fn max_priority(&mut self) -> StorageResult<Option<i32>>;
    async fn insert_configuration(&mut self, value: &ClientConfiguration) -> StorageResult<()>;
    async fn update_configuration(&mut self, value: &ClientConfiguration) -> StorageResult<()>;
    /// Deletes a configuration and its assignments; false if it did not exist.
    async fn delete_configuration(&mut self, id: Uuid) -> StorageResult<bool>;
    async fn assignments(&mut self, configuration_id: Uuid) -> StorageResult<Vec<Assignment>>;
    /// Replaces the whole assignment set of a configuration (order kept).
    async fn replace_assignments(
        &mut self,
        configuration_id: Uuid,
        values: &[Assignment],
    ) -> StorageResult<()>;
    async fn insert_assignment(&mut self, value: &Assignment) -> StorageResult<()>;
    async fn update_assignment(&mut self, value: &Assignment) -> StorageResult<()>;
    async fn delete_assignment(&mut self, configuration_id: Uuid, id: Uuid) -> StorageResult<bool>;
    async fn commit(self: Box<Self>) -> StorageResult<()>;
}

#[cfg(test)]
mod tests {
    /// Both engines must carry the same migration versions with the same descriptions, so a
    /// schema change is never made for one engine only.
    #[test]
    fn migrations_do_not_drift() {
        let versions = |m: &sqlx::migrate::Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        let sqlite = versions(&super::sqlite::MIGRATOR);
        let postgres = versions(&super::postgres::MIGRATOR);
        assert!(!sqlite.is_empty());
        assert_eq!(
            sqlite, postgres,
            "migrations/sqlite and migrations/postgres differ"
        );
    }
}
