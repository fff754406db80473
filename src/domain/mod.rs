//! The domain rules of the officeConfiguration family, in one place: priorities (unique per
//! tenant, next free value on create, atomic `updatePriorities`), whole-set `assign`, optimistic
//! concurrency with ETags, server-maintained properties. Handlers call these operations; these
//! operations reach the database only through [`crate::storage`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{GraphError, GraphResult};
use crate::model::input::{
    AssignmentInput, ConfigurationInput, OfficeConfigurationInput, parse_guid,
    validate_payload_bytes,
};
use crate::model::{
    Assignment, AssignmentTarget, ClientConfiguration, OfficeConfiguration, PayloadKind, TenantId,
};
mod checkins;

pub use checkins::{
    CHECKIN_WINDOW_DAYS, CheckinSettings, DEFAULT_STATUS_CAP, MAX_STATUS_CAP, Reporter,
};

use crate::policy::index::{PolicyDocument, PolicyIndex, TenantPolicy};
use crate::storage::changes::{ChangeFeed, Topic};
use crate::storage::query::{CollectionQuery, EntitySet, Param};
use crate::storage::{Store, TenantTx};

/// Time source, injectable for tests.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// The system clock moved forward by a number of seconds read from a file, re-read on every
/// call: a test hook (`serve --clock-offset-file`, dev mode only) so black-box tests can age
/// check-ins past the 90-day window. A missing or unreadable file means no offset.
pub struct OffsetFileClock {
    path: std::path::PathBuf,
}

impl OffsetFileClock {
    pub fn new(path: std::path::PathBuf) -> Self {
        Self { path }
    }
}

impl Clock for OffsetFileClock {
    fn now(&self) -> OffsetDateTime {
        let secs = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        OffsetDateTime::now_utc() + time::Duration::seconds(secs)
    }
}

/// `If-Match` as sent by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Tags(Vec<String>),
}

impl IfMatch {
    fn check(&self, version: i64) -> GraphResult<()> {
        let current = crate::model::etag(version);
        let ok = match self {
            Self::Any => true,
            // Weak comparison: `W/"3"` and `"3"` name the same version.
            Self::Tags(tags) => tags
                .iter()
                .any(|t| t.trim_start_matches("W/") == current.trim_start_matches("W/")),
        };
        if ok {
            Ok(())
        } else {
            Err(GraphError::PreconditionFailed(format!(
                "The entity has changed: its current ETag is {current}, which does not match If-Match."
            )))
        }
    }
}

fn check_if_match(if_match: Option<&IfMatch>, version: i64) -> GraphResult<()> {
    if_match.map_or(Ok(()), |m| m.check(version))
}

fn configuration_not_found(id: Uuid) -> GraphError {
    GraphError::NotFound(format!(
        "No officeClientConfiguration with id '{id}' exists."
    ))
}

fn assignment_not_found(id: Uuid) -> GraphError {
    GraphError::NotFound(format!(
        "No officeClientConfigurationAssignment with id '{id}' exists."
    ))
}

fn priority_conflict(priority: i32, holder: Uuid) -> GraphError {
    GraphError::Conflict(format!(
        "The priority {priority} is already used by configuration '{holder}'; priorities must be unique within a tenant."
    ))
}

/// Next free priority for a new configuration: one above the current maximum; if the maximum
/// is `i32::MAX`, the smallest unused non-negative value.
pub fn next_free_priority(used: &[(Uuid, i32)]) -> GraphResult<i32> {
    match used.iter().map(|(_, p)| *p).max() {
        None => Ok(1),
        Some(max) if max < i32::MAX => Ok(max + 1),
        Some(_) => {
            let taken: HashSet<i32> = used.iter().map(|(_, p)| *p).collect();
            (0..=i32::MAX).find(|p| !taken.contains(p)).ok_or_else(|| {
                GraphError::Conflict("No free priority value is left in this tenant.".into())
            })
        }
    }
}

/// Checks a body's `id` against the id in the path (GUIDs compare case-insensitively).
fn check_body_id(body_id: Option<&str>, path_id: Uuid) -> GraphResult<()> {
    match body_id {
        Some(s) if parse_guid(s) != Some(path_id) => Err(id_mismatch(s, path_id)),
        _ => Ok(()),
    }
}

fn id_mismatch(body_id: impl std::fmt::Display, path_id: Uuid) -> GraphError {
    GraphError::bad_request(format!(
        "The 'id' in the request body ('{body_id}') does not match the id in the URL ('{path_id}'); an id cannot be changed."
    ))
}

/// The result of `updatePriorities`, computed before anything is written: every id must exist,
/// and the priorities of the whole tenant afterwards must be unique.
pub fn plan_priorities(
    current: &[(Uuid, i32)],
    ids: &[String],
    priorities: &[i32],
) -> GraphResult<Vec<(Uuid, i32)>> {
    if ids.len() != priorities.len() {
        return Err(GraphError::bad_request(format!(
            "'officeConfigurationPolicyIds' has {} items but 'officeConfigurationPriorities' has {}; the arrays are parallel and must have the same length.",
            ids.len(),
            priorities.len()
        )));
    }
    let existing: HashMap<Uuid, i32> = current.iter().copied().collect();
    let mut changes: HashMap<Uuid, i32> = HashMap::new();
    let mut order = Vec::new();
    for (raw, &p) in ids.iter().zip(priorities) {
        let id = parse_guid(raw)
            .filter(|id| existing.contains_key(id))
            .ok_or_else(|| {
                GraphError::NotFound(format!(
                    "No officeClientConfiguration with id '{raw}' exists."
                ))
            })?;
        if changes.insert(id, p).is_some() {
            return Err(GraphError::bad_request(format!(
                "The id '{raw}' appears more than once in 'officeConfigurationPolicyIds'."
            )));
        }
        order.push(id);
    }
    let mut holder: HashMap<i32, Uuid> = HashMap::new();
    for (id, p) in current {
        let p = changes.get(id).copied().unwrap_or(*p);
        if let Some(other) = holder.insert(p, *id) {
            return Err(GraphError::Conflict(format!(
                "After this update configurations '{other}' and '{id}' would both have priority {p}; priorities must be unique within a tenant."
            )));
        }
    }
    Ok(order.into_iter().map(|id| (id, changes[&id])).collect())
}

/// Builds the assignment set for `assign` (or a deep insert), rejecting duplicate groups/ids.
fn build_assignment_set(
    configuration_id: Uuid,
    inputs: Vec<AssignmentInput>,
    previous: &[Assignment],
    param: &str,
) -> GraphResult<Vec<Assignment>> {
    let mut groups = HashSet::new();
    let mut ids = HashSet::new();
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let group = input.target.group_id();
        if !groups.insert(group) {
            return Err(GraphError::bad_request(format!(
                "'{param}[{i}]' targets group '{group}' a second time; each group can be targeted only once per configuration."
            )));
        }
        let id = input.id.unwrap_or_else(Uuid::new_v4);
        if !ids.insert(id) {
            return Err(GraphError::bad_request(format!(
                "'{param}[{i}].id' repeats the id '{id}'; assignment ids must be unique."
            )));
        }
        let version = previous
            .iter()
            .find(|a| a.id == id)
            .map_or(1, |a| a.version + 1);
        out.push(Assignment {
            id,
            configuration_id,
            target: input.target,
            version,
        });
    }
    Ok(out)
}

/// One page of a collection.
pub struct Page<T> {
    pub items: Vec<T>,
    /// Keyset cursor after the last item, when more items follow.
    pub next: Option<(Vec<Param>, String)>,
    pub count: Option<u64>,
}

/// Splits `page_size + 1` fetched rows into a page and the cursor for the next one.
fn paginate<T>(
    mut rows: Vec<(T, Vec<Param>)>,
    page_size: u32,
    id: impl Fn(&T) -> Uuid,
) -> (Vec<T>, Option<(Vec<Param>, String)>) {
    let more = rows.len() > page_size as usize;
    rows.truncate(page_size as usize);
    let next = if more {
        rows.last()
            .map(|(item, keys)| (keys.clone(), id(item).to_string()))
    } else {
        None
    };
    (rows.into_iter().map(|(item, _)| item).collect(), next)
}

#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    checkin_settings: CheckinSettings,
    ingestor: Arc<crate::policy::ingest::CheckinIngestor>,
    /// The feed `store` bumps on commit (and, on PostgreSQL, other instances through NOTIFY).
    changes: Arc<ChangeFeed>,
    policy: Arc<PolicyIndex>,
    views: Arc<checkins::ViewCache>,
}

impl Service {
    /// Builds the service and starts its check-in writer (needs a tokio runtime).
    /// `changes` must be the feed `store`'s commits bump, or cached policies go stale.
    pub fn new(
        store: Arc<dyn Store>,
        changes: Arc<ChangeFeed>,
        clock: Arc<dyn Clock>,
        checkin_settings: CheckinSettings,
    ) -> Self {
        let ingestor = Self::start_ingestor(store.clone(), checkin_settings.ingest);
        Self {
            store,
            clock,
            checkin_settings,
            ingestor,
            changes,
            policy: Arc::default(),
            views: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn changes(&self) -> &Arc<ChangeFeed> {
        &self.changes
    }

    pub fn policy_index(&self) -> &Arc<PolicyIndex> {
        &self.policy
    }

    /// The client policy of a member of `groups`, from the tenant's compiled index when it is
    /// current. The generation is read before loading, so a compile is never tagged newer than
    /// its data; when the feed is not live the policy is computed without caching.
    pub async fn client_policy(
        &self,
        tenant: &TenantId,
        groups: &[Uuid],
    ) -> GraphResult<Arc<PolicyDocument>> {
        let generation = self.changes.generation(tenant, Topic::Configurations);
        if let Some(g) = generation
            && let Some(compiled) = self.policy.get(tenant, g)
        {
            return Ok(compiled.document(groups));
        }
        let configurations = self.store.configurations(tenant).await?;
        let ids: Vec<Uuid> = configurations.iter().map(|c| c.id).collect();
        let assignments = self.assignments_of(tenant, &ids).await?;
        let compiled = Arc::new(TenantPolicy::compile(
            tenant,
            generation,
            &configurations,
            &assignments,
            self.policy.limits(),
        ));
        self.policy.insert(&compiled);
        Ok(compiled.document(groups))
    }

    /// Now, at the precision we store (microseconds), so a response equals a later read.
    fn now(&self) -> OffsetDateTime {
        let t = self.clock.now();
        t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
            .unwrap_or(t)
    }

    async fn begin(&self, tenant: &TenantId) -> GraphResult<Box<dyn TenantTx>> {
        Ok(self.store.begin(tenant, Uuid::new_v4()).await?)
    }

    // ---- the singleton ----------------------------------------------------------------------

    pub async fn office_configuration(
        &self,
        tenant: &TenantId,
    ) -> GraphResult<OfficeConfiguration> {
        if let Some(existing) = self.store.office_configuration(tenant).await? {
            return Ok(existing);
        }
        // First use of the tenant: create its singleton (with a stable id).
        let mut tx = self.begin(tenant).await?;
        let value = tx.office_configuration().await?;
        tx.commit().await?;
        Ok(value)
    }

    pub async fn update_office_configuration(
        &self,
        tenant: &TenantId,
        input: OfficeConfigurationInput,
        if_match: Option<&IfMatch>,
    ) -> GraphResult<OfficeConfiguration> {
        // What is shown now becomes the stored override, with the patched parts replaced; the
        // next check-in in the tenant ends it (DESIGN §3). Read before the transaction: a view
        // read applies the pending check-in log, which takes the (single SQLite) writer.
        let shown = if input.tenant_checkin_statuses.is_some()
            || input.tenant_user_checkin_summary.is_some()
        {
            Some(self.tenant_checkin_view(tenant).await?)
        } else {
            None
        };
        let mut tx = self.begin(tenant).await?;
        let mut value = tx.office_configuration().await?;
        check_if_match(if_match, value.version)?;
        check_body_id(input.id.as_deref(), value.id)?;
        if let Some(view) = shown {
            if !value.checkin_override {
                value.tenant_checkin_statuses = view.statuses;
                value.tenant_user_checkin_summary = view.summary;
            }
            value.checkin_override = true;
        }
        if let Some(statuses) = input.tenant_checkin_statuses {
            value.tenant_checkin_statuses = statuses;
        }
        if let Some(summary) = input.tenant_user_checkin_summary {
            value.tenant_user_checkin_summary = summary;
        }
        value.version += 1;
        tx.update_office_configuration(&value).await?;
        tx.commit().await?;
        self.fill_office_views(tenant, &mut value).await?;
        Ok(value)
    }

    // ---- configurations ---------------------------------------------------------------------

    pub async fn configurations(&self, tenant: &TenantId) -> GraphResult<Vec<ClientConfiguration>> {
        Ok(self.store.configurations(tenant).await?)
    }

    /// One page of configurations matching `q` (whose `limit` is set here from `page_size`).
    pub async fn list_configurations(
        &self,
        tenant: &TenantId,
        mut q: CollectionQuery,
        page_size: u32,
        with_count: bool,
    ) -> GraphResult<Page<ClientConfiguration>> {
        q.limit = page_size.saturating_add(1);
        let rows = self.store.query_configurations(tenant, &q).await?;
        let (items, next) = paginate(rows, page_size, |c| c.id);
        let count = if with_count {
            Some(self.store.count(tenant, &q).await?)
        } else {
            None
        };
        Ok(Page { items, next, count })
    }

    /// One page of a configuration's assignments; 404 if the configuration does not exist.
    pub async fn list_assignments(
        &self,
        tenant: &TenantId,
        mut q: CollectionQuery,
        page_size: u32,
        with_count: bool,
    ) -> GraphResult<Page<Assignment>> {
        if let EntitySet::Assignments { configuration_id } = q.set {
            self.configuration(tenant, configuration_id).await?;
        }
        q.limit = page_size.saturating_add(1);
        let rows = self.store.query_assignments(tenant, &q).await?;
        let (items, next) = paginate(rows, page_size, |a| a.id);
        let count = if with_count {
            Some(self.store.count(tenant, &q).await?)
        } else {
            None
        };
        Ok(Page { items, next, count })
    }

    /// How many items match `q` (the `/$count` segment).
    pub async fn count(&self, tenant: &TenantId, q: &CollectionQuery) -> GraphResult<u64> {
        if let EntitySet::Assignments { configuration_id } = q.set {
            self.configuration(tenant, configuration_id).await?;
        }
        Ok(self.store.count(tenant, q).await?)
    }

    /// The assignments of several configurations, grouped by configuration (for `$expand`).
    pub async fn assignments_of(
        &self,
        tenant: &TenantId,
        ids: &[Uuid],
    ) -> GraphResult<HashMap<Uuid, Vec<Assignment>>> {
        let mut out: HashMap<Uuid, Vec<Assignment>> = HashMap::new();
        for a in self.store.assignments_of(tenant, ids).await? {
            out.entry(a.configuration_id).or_default().push(a);
        }
        Ok(out)
    }

    pub async fn configuration(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> GraphResult<ClientConfiguration> {
        self.store
            .configuration(tenant, id)
            .await?
            .ok_or_else(|| configuration_not_found(id))
    }

    /// Creates a configuration (and, on a deep insert, its assignments) atomically.
    pub async fn create_configuration(
        &self,
        tenant: &TenantId,
        input: ConfigurationInput,
    ) -> GraphResult<(ClientConfiguration, Vec<Assignment>)> {
        let kind = input
            .kind
            .ok_or_else(|| GraphError::bad_request("The configuration type is missing."))?;
        let mut tx = self.begin(tenant).await?;
        // Index lookups, not a scan: creating in a tenant with many configurations stays cheap.
        let priority = match input.priority {
            Some(p) => {
                if let Some(holder) = tx.priority_holder(p).await? {
                    return Err(priority_conflict(p, holder));
                }
                p
            }
            None => match tx.max_priority().await? {
                None => 1,
                Some(max) if max < i32::MAX => max + 1,
                Some(_) => next_free_priority(&tx.priorities().await?)?,
            },
        };
        let checkin_override =
            input.checkin_statuses.is_some() || input.user_checkin_summary.is_some();
        let value = ClientConfiguration {
            id: Uuid::new_v4(),
            kind,
            display_name: input.display_name.flatten(),
            description: input.description.flatten(),
            priority,
            policy_payload: input.policy_payload.flatten(),
            user_preference_payload: input.user_preference_payload.flatten(),
            checkin_statuses: input.checkin_statuses.unwrap_or_default(),
            user_checkin_summary: input.user_checkin_summary.unwrap_or_default(),
            checkin_override,
            last_modified_date_time: self.now(),
            version: 1,
        };
        let assignments = build_assignment_set(
            value.id,
            input.assignments.unwrap_or_default(),
            &[],
            "assignments",
        )?;
        tx.insert_configuration(&value).await?;
        if !assignments.is_empty() {
            tx.replace_assignments(value.id, &assignments).await?;
        }
        tx.commit().await?;
        Ok((value, assignments))
    }

    pub async fn update_configuration(
        &self,
        tenant: &TenantId,
        id: Uuid,
        input: ConfigurationInput,
        if_match: Option<&IfMatch>,
    ) -> GraphResult<ClientConfiguration> {
        // As for the singleton: the views shown now, read before the transaction.
        let shown = if input.checkin_statuses.is_some() || input.user_checkin_summary.is_some() {
            Some(self.configuration_checkin_view(tenant, id).await?)
        } else {
            None
        };
        let mut tx = self.begin(tenant).await?;
        let mut value = tx
            .configuration(id)
            .await?
            .ok_or_else(|| configuration_not_found(id))?;
        check_if_match(if_match, value.version)?;
        check_body_id(input.id.as_deref(), id)?;
        if let Some(p) = input.priority
            && p != value.priority
        {
            if let Some(holder) = tx.priority_holder(p).await?.filter(|other| *other != id) {
                return Err(priority_conflict(p, holder));
            }
            value.priority = p;
        }
        if let Some(v) = input.display_name {
            value.display_name = v;
        }
        if let Some(v) = input.description {
            value.description = v;
        }
        if let Some(v) = input.policy_payload {
            value.policy_payload = v;
        }
        if let Some(v) = input.user_preference_payload {
            value.user_preference_payload = v;
        }
        if let Some(view) = shown {
            if !value.checkin_override {
                value.checkin_statuses = view.statuses;
                value.user_checkin_summary = view.summary;
            }
            value.checkin_override = true;
        }
        if let Some(v) = input.checkin_statuses {
            value.checkin_statuses = v;
        }
        if let Some(v) = input.user_checkin_summary {
            value.user_checkin_summary = v;
        }
        value.version += 1;
        value.last_modified_date_time = self.now();
        tx.update_configuration(&value).await?;
        tx.commit().await?;
        self.fill_configuration_views(tenant, std::slice::from_mut(&mut value))
            .await?;
        Ok(value)
    }

    pub async fn delete_configuration(
        &self,
        tenant: &TenantId,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> GraphResult<()> {
        let mut tx = self.begin(tenant).await?;
        let value = tx
            .configuration(id)
            .await?
            .ok_or_else(|| configuration_not_found(id))?;
        check_if_match(if_match, value.version)?;
        tx.delete_configuration(id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `updatePriorities`: all or nothing.
    pub async fn update_priorities(
        &self,
        tenant: &TenantId,
        ids: &[String],
        priorities: &[i32],
    ) -> GraphResult<()> {
        let mut tx = self.begin(tenant).await?;
        let current = tx.priorities().await?;
        let plan = plan_priorities(&current, ids, priorities)?;
        let now = self.now();
        for (id, p) in plan {
            let mut value = tx
                .configuration(id)
                .await?
                .ok_or_else(|| configuration_not_found(id))?;
            if value.priority == p {
                continue;
            }
            value.priority = p;
            value.version += 1;
            value.last_modified_date_time = now;
            tx.update_configuration(&value).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- stream properties ------------------------------------------------------------------

    pub async fn payload(
        &self,
        tenant: &TenantId,
        id: Uuid,
        kind: PayloadKind,
    ) -> GraphResult<Option<Vec<u8>>> {
        let value = self.configuration(tenant, id).await?;
        Ok(value.payload(kind).map(<[u8]>::to_vec))
    }

    pub async fn put_payload(
        &self,
        tenant: &TenantId,
        id: Uuid,
        kind: PayloadKind,
        bytes: Vec<u8>,
        if_match: Option<&IfMatch>,
    ) -> GraphResult<()> {
        validate_payload_bytes(&bytes, kind.property())?;
        let mut tx = self.begin(tenant).await?;
        let mut value = tx
            .configuration(id)
            .await?
            .ok_or_else(|| configuration_not_found(id))?;
        check_if_match(if_match, value.version)?;
        *value.payload_mut(kind) = Some(bytes);
        value.version += 1;
        value.last_modified_date_time = self.now();
        tx.update_configuration(&value).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- assignments ------------------------------------------------------------------------

    pub async fn assignment(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
        id: Uuid,
    ) -> GraphResult<Assignment> {
        match self.store.assignment(tenant, configuration_id, id).await? {
            Some(a) => Ok(a),
            None => {
                self.configuration(tenant, configuration_id).await?;
                Err(assignment_not_found(id))
            }
        }
    }

    /// `assign`: replaces the whole assignment set of one configuration.
    pub async fn assign(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
        inputs: Vec<AssignmentInput>,
    ) -> GraphResult<Vec<Assignment>> {
        let mut tx = self.begin(tenant).await?;
        tx.configuration(configuration_id)
            .await?
            .ok_or_else(|| configuration_not_found(configuration_id))?;
        let previous = tx.assignments(configuration_id).await?;
        let set = build_assignment_set(
            configuration_id,
            inputs,
            &previous,
            "officeConfigurationAssignments",
        )?;
        tx.replace_assignments(configuration_id, &set).await?;
        tx.commit().await?;
        Ok(set)
    }

    pub async fn create_assignment(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
        target: AssignmentTarget,
    ) -> GraphResult<Assignment> {
        let mut tx = self.begin(tenant).await?;
        tx.configuration(configuration_id)
            .await?
            .ok_or_else(|| configuration_not_found(configuration_id))?;
        let existing = tx.assignments(configuration_id).await?;
        if let Some(a) = existing.iter().find(|a| a.target == target) {
            return Err(GraphError::Conflict(format!(
                "Group '{}' is already targeted by assignment '{}' of this configuration.",
                target.group_id(),
                a.id
            )));
        }
        let value = Assignment {
            id: Uuid::new_v4(),
            configuration_id,
            target,
            version: 1,
        };
        tx.insert_assignment(&value).await?;
        tx.commit().await?;
        Ok(value)
    }

    pub async fn update_assignment(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
        id: Uuid,
        body_id: Option<Uuid>,
        target: Option<AssignmentTarget>,
        if_match: Option<&IfMatch>,
    ) -> GraphResult<Assignment> {
        let mut tx = self.begin(tenant).await?;
        tx.configuration(configuration_id)
            .await?
            .ok_or_else(|| configuration_not_found(configuration_id))?;
        let existing = tx.assignments(configuration_id).await?;
        let mut value = existing
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .ok_or_else(|| assignment_not_found(id))?;
        check_if_match(if_match, value.version)?;
        if let Some(b) = body_id
            && b != id
        {
            return Err(id_mismatch(b, id));
        }
        if let Some(target) = target {
            if let Some(other) = existing.iter().find(|a| a.id != id && a.target == target) {
                return Err(GraphError::Conflict(format!(
                    "Group '{}' is already targeted by assignment '{}' of this configuration.",
                    target.group_id(),
                    other.id
                )));
            }
            value.target = target;
        }
        value.version += 1;
        tx.update_assignment(&value).await?;
        tx.commit().await?;
        Ok(value)
    }

    pub async fn delete_assignment(
        &self,
        tenant: &TenantId,
        configuration_id: Uuid,
        id: Uuid,
        if_match: Option<&IfMatch>,
    ) -> GraphResult<()> {
        let mut tx = self.begin(tenant).await?;
        tx.configuration(configuration_id)
            .await?
            .ok_or_else(|| configuration_not_found(configuration_id))?;
        let existing = tx.assignments(configuration_id).await?;
        let value = existing
            .iter()
            .find(|a| a.id == id)
            .ok_or_else(|| assignment_not_found(id))?;
        check_if_match(if_match, value.version)?;
        tx.delete_assignment(configuration_id, id).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn next_priority_is_max_plus_one() {
        assert_eq!(next_free_priority(&[]).unwrap(), 1);
        assert_eq!(next_free_priority(&[(ids(1), 5), (ids(2), 2)]).unwrap(), 6);
        assert_eq!(
            next_free_priority(&[(ids(1), i32::MAX), (ids(2), 0)]).unwrap(),
            1
        );
    }

    #[test]
    fn plan_swaps_priorities() {
        let current = [(ids(1), 1), (ids(2), 2)];
        let plan =
            plan_priorities(&current, &[ids(1).to_string(), ids(2).to_string()], &[2, 1]).unwrap();
        assert_eq!(plan, vec![(ids(1), 2), (ids(2), 1)]);
    }

    #[test]
    fn plan_rejects_duplicates_unknown_and_mismatch() {
        let current = [(ids(1), 1), (ids(2), 2), (ids(3), 3)];
        let dup = plan_priorities(&current, &[ids(1).to_string()], &[3]).unwrap_err();
        assert!(matches!(dup, GraphError::Conflict(_)), "{dup}");
        let unknown = plan_priorities(&current, &[ids(9).to_string()], &[9]).unwrap_err();
        assert!(matches!(unknown, GraphError::NotFound(_)));
        let len = plan_priorities(&current, &[ids(1).to_string()], &[]).unwrap_err();
        assert!(matches!(len, GraphError::BadRequest(_)));
        let twice = plan_priorities(&current, &[ids(1).to_string(), ids(1).to_string()], &[7, 8])
            .unwrap_err();
        assert!(matches!(twice, GraphError::BadRequest(_)));
        let not_guid = plan_priorities(&current, &["x'; drop".into()], &[7]).unwrap_err();
        assert!(matches!(not_guid, GraphError::NotFound(_)));
    }

    #[test]
    fn assignment_set_rejects_duplicate_groups() {
        let g = ids(42);
        let input = |id| AssignmentInput {
            id,
            target: AssignmentTarget::Group { group_id: g },
        };
        let err =
            build_assignment_set(ids(1), vec![input(None), input(None)], &[], "p").unwrap_err();
        assert!(err.to_string().contains("second time"));
    }

    #[test]
    fn assignment_set_keeps_client_ids_and_bumps_versions() {
        let prev = Assignment {
            id: ids(7),
            configuration_id: ids(1),
            target: AssignmentTarget::Group { group_id: ids(3) },
            version: 4,
        };
        let set = build_assignment_set(
            ids(1),
            vec![AssignmentInput {
                id: Some(ids(7)),
                target: AssignmentTarget::Group { group_id: ids(5) },
            }],
            &[prev],
            "p",
        )
        .unwrap();
        assert_eq!(set[0].id, ids(7));
        assert_eq!(set[0].version, 5);
    }

    #[test]
    fn if_match_weak_comparison() {
        assert!(IfMatch::Tags(vec!["W/\"3\"".into()]).check(3).is_ok());
        assert!(IfMatch::Tags(vec!["\"3\"".into()]).check(3).is_ok());
        assert!(IfMatch::Tags(vec!["W/\"2\"".into()]).check(3).is_err());
        assert!(IfMatch::Any.check(9).is_ok());
    }
}
