//! Client check-ins and the Graph views of them (DESIGN §3): the rules on what a report is,
//! what the tenant and each configuration show, and how a Graph PATCH of those properties
//! interacts with later check-ins.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

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
        Arc::new(CheckinIngestor::start(store, config, Arc::new(|_, _| {})))
    }

    fn window_start(&self) -> OffsetDateTime {
        self.now() - self.checkin_settings.window
    }

    /// Stores a client's report (durably, before returning) as the latest status of its
    /// (user, device). Ids in `appliedPolicies` that name no configuration of the tenant (one
    /// deleted between the client's policy fetch and its report, say) are kept as reported
    /// and count toward no configuration's view.
    pub async fn record_checkin(
        &self,
        who: Reporter<'_>,
        input: ClientCheckinInput,
    ) -> GraphResult<CheckinStatus> {
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
        self.ingestor
            .submit(Checkin {
                tenant: who.tenant.clone(),
                status: status.clone(),
            })
            .await?;
        Ok(status)
    }

    /// The tenant's check-in view as Graph shows it now.
    pub async fn tenant_checkin_view(&self, tenant: &TenantId) -> GraphResult<CheckinView> {
        Ok(self
            .store
            .tenant_checkin_view(
                tenant,
                self.window_start(),
                self.checkin_settings.status_cap,
            )
            .await?)
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
        let ids: Vec<uuid::Uuid> = values
            .iter()
            .filter(|c| !c.checkin_override)
            .map(|c| c.id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut views = self
            .store
            .configuration_checkin_views(
                tenant,
                &ids,
                self.window_start(),
                self.checkin_settings.status_cap,
            )
            .await?;
        for c in values.iter_mut().filter(|c| !c.checkin_override) {
            let view = views.remove(&c.id).unwrap_or_default();
            c.checkin_statuses = view.statuses;
            c.user_checkin_summary = view.summary;
        }
        Ok(())
    }
}
