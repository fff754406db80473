//! Client check-ins and the Graph views of them (DESIGN §3): the rules on what a report is,
//! what the tenant and each configuration show, and how a Graph PATCH of those properties
//! interacts with later check-ins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::Service;
use crate::error::GraphResult;
use crate::model::input::ClientCheckinInput;
use crate::model::{
    Checkin, CheckinStatus, CheckinView, ClientConfiguration, OfficeConfiguration, TenantId,
};
use crate::policy::ingest::{CheckinIngestor, IngestConfig};

/// Reports older than this count toward no summary and show in no status list.
pub const CHECKIN_WINDOW_DAYS: i64 = 90;
/// Default cap on the status lists embedded in Graph entities (Graph does not page complex
/// collections, and every GET of the singleton or a configuration carries them).
pub const DEFAULT_STATUS_CAP: u32 = 100;
/// Largest cap an operator may configure.
pub const MAX_STATUS_CAP: u32 = 1000;

#[derive(Clone, Copy, Debug)]
pub struct CheckinSettings {
    /// How far back the views look.
    pub window: Duration,
    /// At most this many statuses in `tenantCheckinStatuses` / `checkinStatuses`.
    pub status_cap: u32,
    pub ingest: IngestConfig,
}

impl Default for CheckinSettings {
    fn default() -> Self {
        Self {
            window: Duration::days(CHECKIN_WINDOW_DAYS),
            status_cap: DEFAULT_STATUS_CAP,
            ingest: IngestConfig::default(),
        }
    }
}

/// Computed views are reused while no check-in reached the tenant (its `Checkins` generation is
/// unchanged) and for at most this long, so reports still age out of the window on time.
const VIEW_TTL: Duration = Duration::seconds(60);
const MAX_VIEW_TENANTS: usize = 10_000;
const MAX_VIEW_CONFIGURATIONS: usize = 2_000;

#[derive(Default)]
struct TenantViews {
    generation: u64,
    computed_at: Option<OffsetDateTime>,
    office: Option<CheckinView>,
    configurations: HashMap<Uuid, CheckinView>,
}

/// The last computed views per tenant (bounded; starting over when full is cheap).
#[derive(Default)]
pub(super) struct ViewCache {
    tenants: Mutex<HashMap<TenantId, TenantViews>>,
}

impl ViewCache {
    /// Runs `f` on the tenant's entry if it is still valid for `generation` at `now`, after
    /// resetting it otherwise.
    fn with<R>(
        &self,
        tenant: &TenantId,
        generation: u64,
        now: OffsetDateTime,
        f: impl FnOnce(&mut TenantViews) -> R,
    ) -> Option<R> {
        let mut map = self.tenants.lock().ok()?;
        // One lookup, and no clone of the key, when the tenant is there: this runs on every
        // read of the singleton and of a configuration.
        let entry = match map.get_mut(tenant) {
            Some(entry) => entry,
            None => {
                if map.len() >= MAX_VIEW_TENANTS {
                    map.clear();
                }
                map.entry(tenant.clone()).or_default()
            }
        };
        let fresh = entry.generation == generation
            && entry
                .computed_at
                .is_some_and(|at| now >= at && now - at < VIEW_TTL);
        if !fresh {
            *entry = TenantViews {
                generation,
                computed_at: Some(now),
                ..Default::default()
            };
        }
        if entry.configurations.len() > MAX_VIEW_CONFIGURATIONS {
            entry.configurations.clear();
        }
        Some(f(entry))
    }
}

/// The calling user, as the check-in needs it.
pub struct Reporter<'a> {
    pub tenant: &'a TenantId,
    pub user_id: &'a str,
    pub user_principal_name: Option<&'a str>,
}

impl Service {
    pub(super) fn start_ingestor(
        store: Arc<dyn crate::storage::Store>,
        config: IngestConfig,
    ) -> Arc<CheckinIngestor> {
        Arc::new(CheckinIngestor::start(store, config))
    }

    /// Stores a client's report (durably, before returning) as the latest status of its
    /// (user, device). Ids in `appliedPolicies` that name no configuration of the tenant (one
    /// deleted between the client's policy fetch and its report, say) are kept as reported
    /// and count toward no configuration's view. Returns the stored status as JSON (the
    /// `201`'s body), rendered before the status goes to the writer, which keeps it: the
    /// hottest write path does not copy it.
    pub async fn record_checkin(
        &self,
        who: Reporter<'_>,
        input: ClientCheckinInput,
    ) -> GraphResult<Vec<u8>> {
        let status = CheckinStatus {
            user_id: who.user_id.to_string(),
            user_principal_name: who.user_principal_name.map(str::to_string),
            device_name: Some(input.device_name),
            device_platform: input.device_platform,
            device_platform_version: input.device_platform_version,
            was_successful: input.was_successful,
            checkin_date_time: self.now(),
            error_message: input.error_message,
            applied_policies: input.applied_policies.into_iter().map(Some).collect(),
            last_task_name: input.last_task_name,
        };
        let json = status.to_json_bytes();
        self.ingestor
            .submit(Checkin {
                tenant: who.tenant.clone(),
                status,
            })
            .await?;
        Ok(json)
    }

    /// The generation to cache views under, read before the database (None: don't cache).
    fn views_generation(&self, tenant: &TenantId) -> Option<u64> {
        self.changes
            .generation(tenant, crate::storage::changes::Topic::Checkins)
    }

    /// The tenant's check-in view as Graph shows it now.
    pub async fn tenant_checkin_view(&self, tenant: &TenantId) -> GraphResult<CheckinView> {
        let now = self.now();
        let generation = self.views_generation(tenant);
        if let Some(g) = generation
            && let Some(Some(view)) = self.views.with(tenant, g, now, |e| e.office.clone())
        {
            return Ok(view);
        }
        let view = self
            .store
            .tenant_checkin_view(
                tenant,
                now - self.checkin_settings.window,
                self.checkin_settings.status_cap,
            )
            .await?;
        if let Some(g) = generation {
            self.views
                .with(tenant, g, now, |e| e.office = Some(view.clone()));
        }
        Ok(view)
    }

    /// Puts the computed views into the singleton, unless a Graph PATCH overrides them.
    pub async fn fill_office_views(
        &self,
        tenant: &TenantId,
        value: &mut OfficeConfiguration,
    ) -> GraphResult<()> {
        if !value.checkin_override {
            let view = self.tenant_checkin_view(tenant).await?;
            value.tenant_checkin_statuses = view.statuses;
            value.tenant_user_checkin_summary = view.summary;
        }
        Ok(())
    }

    /// Puts the computed views into configurations (one pair of queries for all of them),
    /// except those a Graph PATCH overrides.
    pub async fn fill_configuration_views(
        &self,
        tenant: &TenantId,
        values: &mut [ClientConfiguration],
    ) -> GraphResult<()> {
        let now = self.now();
        let generation = self.views_generation(tenant);
        // Cached views go straight into the values, under one lock and without intermediate
        // maps: this runs on every read of a configuration. `missing` holds indexes into
        // `values`.
        let from_cache = |e: &mut TenantViews, values: &mut [ClientConfiguration]| {
            let mut missing = Vec::new();
            for (i, c) in values.iter_mut().enumerate() {
                if c.checkin_override {
                    continue;
                }
                match e.configurations.get(&c.id) {
                    Some(view) => {
                        c.checkin_statuses.clone_from(&view.statuses);
                        c.user_checkin_summary = view.summary;
                    }
                    None => missing.push(i),
                }
            }
            missing
        };
        let missing: Vec<usize> = match generation
            .and_then(|g| self.views.with(tenant, g, now, |e| from_cache(e, values)))
        {
            Some(missing) => missing,
            None => (0..values.len())
                .filter(|&i| !values[i].checkin_override)
                .collect(),
        };
        if missing.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = missing.iter().map(|&i| values[i].id).collect();
        let mut loaded = self
            .store
            .configuration_checkin_views(
                tenant,
                &ids,
                now - self.checkin_settings.window,
                self.checkin_settings.status_cap,
            )
            .await?;
        if let Some(g) = generation {
            self.views.with(tenant, g, now, |e| {
                for (id, view) in &loaded {
                    e.configurations.insert(*id, view.clone());
                }
            });
        }
        for i in missing {
            let c = &mut values[i];
            let view = loaded.remove(&c.id).unwrap_or_default();
            c.checkin_statuses = view.statuses;
            c.user_checkin_summary = view.summary;
        }
        Ok(())
    }

    /// One configuration's computed view (uncached: for a Graph PATCH of it).
    pub(super) async fn configuration_checkin_view(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> GraphResult<CheckinView> {
        let mut views = self
            .store
            .configuration_checkin_views(
                tenant,
                &[id],
                self.now() - self.checkin_settings.window,
                self.checkin_settings.status_cap,
            )
            .await?;
        Ok(views.remove(&id).unwrap_or_default())
    }
}
