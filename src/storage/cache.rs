//! A read-through cache in front of any [`Store`], for the hot single-entity reads (the
//! singleton and configurations by id). Every committed write through this process drops the
//! tenant's entries; a per-tenant generation counter keeps a read that raced a write from
//! putting a stale value back. (With several instances on one database, the other instances'
//! writes must invalidate too; [`CachedStore::invalidate`] is the hook for that.)

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use uuid::Uuid;

use super::query::{CollectionQuery, Param};
use super::{StorageResult, Store, TenantTx};
use time::OffsetDateTime;

use crate::model::{
    Assignment, Checkin, CheckinView, ClientConfiguration, OfficeConfiguration, TenantId,
};

/// Bounds on memory: past these, the cache starts over (cheap, and rare in practice).
const MAX_TENANTS: usize = 10_000;
const MAX_CONFIGURATIONS_PER_TENANT: usize = 1_000;

#[derive(Default)]
struct TenantEntry {
    generation: u64,
    office: Option<OfficeConfiguration>,
    configurations: HashMap<Uuid, Option<ClientConfiguration>>,
}

#[derive(Default)]
struct Shared {
    tenants: RwLock<HashMap<TenantId, TenantEntry>>,
}

impl Shared {
    fn generation(&self, tenant: &TenantId) -> u64 {
        self.tenants
            .read()
            .map(|m| m.get(tenant).map_or(0, |e| e.generation))
            .unwrap_or(0)
    }

    /// Stores a value read from the database, unless a write happened since `generation`.
    fn fill(&self, tenant: &TenantId, generation: u64, f: impl FnOnce(&mut TenantEntry)) {
        let Ok(mut map) = self.tenants.write() else {
            return;
        };
        if !map.contains_key(tenant) && map.len() >= MAX_TENANTS {
            map.clear();
        }
        let entry = map.entry(tenant.clone()).or_default();
        if entry.generation == generation {
            f(entry);
        }
    }

    fn invalidate(&self, tenant: &TenantId) {
        if let Ok(mut map) = self.tenants.write() {
            let entry = map.entry(tenant.clone()).or_default();
            entry.generation += 1;
            entry.office = None;
            entry.configurations.clear();
        }
    }
}

pub struct CachedStore<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Store> CachedStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            shared: Arc::default(),
        }
    }

    /// Drops everything cached for a tenant (e.g. on another instance's write).
    pub fn invalidate(&self, tenant: &TenantId) {
        self.shared.invalidate(tenant);
    }
}

#[async_trait]
impl<S: Store> Store for CachedStore<S> {
    async fn office_configuration(
        &self,
        tenant: &TenantId,
    ) -> StorageResult<Option<OfficeConfiguration>> {
        if let Ok(map) = self.shared.tenants.read()
            && let Some(v) = map.get(tenant).and_then(|e| e.office.clone())
        {
            return Ok(Some(v));
        }
        let generation = self.shared.generation(tenant);
        let value = self.inner.office_configuration(tenant).await?;
        if let Some(v) = &value {
            self.shared
                .fill(tenant, generation, |e| e.office = Some(v.clone()));
        }
        Ok(value)
    }

    async fn configurations(&self, tenant: &TenantId) -> StorageResult<Vec<ClientConfiguration>> {
        self.inner.configurations(tenant).await
    }

    async fn configuration(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> StorageResult<Option<ClientConfiguration>> {
        if let Ok(map) = self.shared.tenants.read()
            && let Some(v) = map.get(tenant).and_then(|e| e.configurations.get(&id))
        {
            return Ok(v.clone());
        }
        let generation = self.shared.generation(tenant);
        let value = self.inner.configuration(tenant, id).await?;
        self.shared.fill(tenant, generation, |e| {
            if e.configurations.len() >= MAX_CONFIGURATIONS_PER_TENANT {
                e.configurations.clear();
            }
            e.configurations.insert(id, value.clone());
        });
        Ok(value)
    }

    async fn assignment(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
        id: Uuid,
    ) -> StorageResult<Option<Assignment>> {
        self.inner.assignment(tenant, configuration_id, id).await
    }

    async fn query_configurations(
        &self,
        tenant: &TenantId,
        q: &CollectionQuery,
    ) -> StorageResult<Vec<(ClientConfiguration, Vec<Param>)>> {
        self.inner.query_configurations(tenant, q).await
    }

    async fn query_assignments(
        &self,
        tenant: &TenantId,
        q: &CollectionQuery,
    ) -> StorageResult<Vec<(Assignment, Vec<Param>)>> {
        self.inner.query_assignments(tenant, q).await
    }

    async fn count(&self, tenant: &TenantId, q: &CollectionQuery) -> StorageResult<u64> {
        self.inner.count(tenant, q).await
    }

    async fn assignments_of(
        &self,
        tenant: &TenantId,
        configuration_ids: &[Uuid],
    ) -> StorageResult<Vec<Assignment>> {
        self.inner.assignments_of(tenant, configuration_ids).await
    }

    async fn begin(
        &self,
        tenant: &TenantId,
        new_singleton_id: Uuid,
    ) -> StorageResult<Box<dyn TenantTx>> {
        let inner = self.inner.begin(tenant, new_singleton_id).await?;
        Ok(Box::new(InvalidatingTx {
            inner,
            tenant: tenant.clone(),
            shared: self.shared.clone(),
        }))
    }

    async fn record_checkins(&self, batch: &[Checkin]) -> StorageResult<Vec<TenantId>> {
        let changed = self.inner.record_checkins(batch).await?;
        // Only tenants whose override flag a check-in cleared hold stale cached entities.
        for tenant in &changed {
            self.shared.invalidate(tenant);
        }
        Ok(changed)
    }

    async fn materialize_checkins(&self, limit: usize) -> StorageResult<usize> {
        self.inner.materialize_checkins(limit).await
    }

    async fn tenant_checkin_view(
        &self,
        tenant: &TenantId,
        since: OffsetDateTime,
        cap: u32,
    ) -> StorageResult<CheckinView> {
        self.inner.tenant_checkin_view(tenant, since, cap).await
    }

    async fn configuration_checkin_views(
        &self,
        tenant: &TenantId,
        ids: &[Uuid],
        since: OffsetDateTime,
        cap: u32,
    ) -> StorageResult<HashMap<Uuid, CheckinView>> {
        self.inner
            .configuration_checkin_views(tenant, ids, since, cap)
            .await
    }

    async fn ping(&self) -> StorageResult<()> {
        self.inner.ping().await
    }
}

/// Passes everything through and invalidates the tenant once the commit is durable.
struct InvalidatingTx {
    inner: Box<dyn TenantTx>,
    tenant: TenantId,
    shared: Arc<Shared>,
}

#[async_trait]
impl TenantTx for InvalidatingTx {
    async fn office_configuration(&mut self) -> StorageResult<OfficeConfiguration> {
        self.inner.office_configuration().await
    }
    async fn update_office_configuration(&mut self, v: &OfficeConfiguration) -> StorageResult<()> {
        self.inner.update_office_configuration(v).await
    }
    async fn configuration(&mut self, id: Uuid) -> StorageResult<Option<ClientConfiguration>> {
        self.inner.configuration(id).await
    }
    async fn priorities(&mut self) -> StorageResult<Vec<(Uuid, i32)>> {
        self.inner.priorities().await
    }
    async fn priority_holder(&mut self, priority: i32) -> StorageResult<Option<Uuid>> {
        self.inner.priority_holder(priority).await
    }
    async fn max_priority(&mut self) -> StorageResult<Option<i32>> {
        self.inner.max_priority().await
    }
    async fn insert_configuration(&mut self, v: &ClientConfiguration) -> StorageResult<()> {
        self.inner.insert_configuration(v).await
    }
    async fn update_configuration(&mut self, v: &ClientConfiguration) -> StorageResult<()> {
        self.inner.update_configuration(v).await
    }
    async fn delete_configuration(&mut self, id: Uuid) -> StorageResult<bool> {
        self.inner.delete_configuration(id).await
    }
    async fn assignments(&mut self, configuration_id: Uuid) -> StorageResult<Vec<Assignment>> {
        self.inner.assignments(configuration_id).await
    }
    async fn replace_assignments(
        &mut self,
        configuration_id: Uuid,
        values: &[Assignment],
    ) -> StorageResult<()> {
        self.inner
            .replace_assignments(configuration_id, values)
            .await
    }
    async fn insert_assignment(&mut self, v: &Assignment) -> StorageResult<()> {
        self.inner.insert_assignment(v).await
    }
    async fn update_assignment(&mut self, v: &Assignment) -> StorageResult<()> {
        self.inner.update_assignment(v).await
    }
    async fn delete_assignment(&mut self, configuration_id: Uuid, id: Uuid) -> StorageResult<bool> {
        self.inner.delete_assignment(configuration_id, id).await
    }
    async fn commit(self: Box<Self>) -> StorageResult<()> {
        let result = self.inner.commit().await;
        // Invalidate even if the commit reported an error: its outcome may be unknown.
        self.shared.invalidate(&self.tenant);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConfigurationKind, UserCheckinSummary};
    use crate::storage::sqlite::SqliteStore;

    fn config(id: Uuid, name: &str, version: i64) -> ClientConfiguration {
        ClientConfiguration {
            id,
            kind: ConfigurationKind::Windows,
            display_name: Some(name.into()),
            description: None,
            priority: 1,
            policy_payload: None,
            user_preference_payload: None,
            checkin_statuses: vec![],
            user_checkin_summary: UserCheckinSummary::default(),
            checkin_override: false,
            last_modified_date_time: time::OffsetDateTime::UNIX_EPOCH,
            version,
        }
    }

    #[tokio::test]
    async fn writes_through_the_cache_are_seen_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = CachedStore::new(
            SqliteStore::open(&dir.path().join("db"), true)
                .await
                .unwrap(),
        );
        let tenant = TenantId::parse("t1").unwrap();
        let id = Uuid::new_v4();
        // A cached miss must not hide the later insert.
        assert!(store.configuration(&tenant, id).await.unwrap().is_none());
        let mut tx = store.begin(&tenant, Uuid::new_v4()).await.unwrap();
        tx.insert_configuration(&config(id, "a", 1)).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            store
                .configuration(&tenant, id)
                .await
                .unwrap()
                .unwrap()
                .display_name
                .as_deref(),
            Some("a")
        );
        let mut tx = store.begin(&tenant, Uuid::new_v4()).await.unwrap();
        tx.update_configuration(&config(id, "b", 2)).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            store
                .configuration(&tenant, id)
                .await
                .unwrap()
                .unwrap()
                .display_name
                .as_deref(),
            Some("b")
        );
        // Another tenant never sees it.
        let other = TenantId::parse("t2").unwrap();
        assert!(store.configuration(&other, id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_rolled_back_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = CachedStore::new(
            SqliteStore::open(&dir.path().join("db"), true)
                .await
                .unwrap(),
        );
        let tenant = TenantId::parse("t1").unwrap();
        let id = Uuid::new_v4();
        let mut tx = store.begin(&tenant, Uuid::new_v4()).await.unwrap();
        tx.insert_configuration(&config(id, "a", 1)).await.unwrap();
        drop(tx);
        assert!(store.configuration(&tenant, id).await.unwrap().is_none());
    }
}
