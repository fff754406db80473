//! The compiled policy index: what `GET /cirrus/v1/client/policy` is served from.
//!
//! Per tenant, compiled once per change-feed generation ([`crate::storage::changes`]): the
//! configurations in priority order with the top-level keys of both payloads already parsed, and
//! a map group id → configurations targeting it. A request gathers its configurations through
//! that map (cost grows with the user's groups and what targets them, not with the tenant) and
//! merges per key exactly as [`super::effective_policy`] does. The rendered document is cached
//! per set of applicable configurations, so users with the same groups cause no merging at all.
//!
//! Bounded: at most [`Limits::max_tenants`] compiled tenants and [`Limits::max_bytes`] of
//! estimated memory (compiled payloads plus cached documents, least recently used tenant
//! evicted first), and [`Limits::max_documents`] cached documents per tenant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{AppliedConfiguration, EffectivePolicy};
use crate::model::{Assignment, ClientConfiguration, PayloadKind, TenantId};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Compiled tenants held.
    pub max_tenants: usize,
    /// Estimated bytes held over all tenants (compiled data and cached documents).
    pub max_bytes: usize,
    /// Cached documents per tenant.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tenants: 1_000,
            max_bytes: 256 * 1024 * 1024,
            max_documents: 256,
        }
    }
}

/// FNV-1a, fed in pieces: the same value as [`crate::odata::paging::fnv1a`] over the same
/// parts, so a cached document's hash can be finished with the per-user tail.
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(mut self, s: &str) -> Self {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Ends a part (`fnv1a` follows every part with 0xff).
    fn end_part(mut self) -> Self {
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        self
    }
}

/// The part of a policy response shared by every user with the same applicable configurations.
#[derive(Debug)]
pub struct PolicyDocument {
    /// The JSON object without its closing brace; the per-user properties follow.
    head: String,
    /// Hash of the tenant and `head`, to be finished with the per-user tail.
    hash: Fnv,
}

impl PolicyDocument {
    fn new(tenant: &TenantId, policy: &EffectivePolicy) -> Self {
        let mut head = policy.to_json().to_string();
        // `to_json` is always an object, so the text ends with its closing brace.
        head.pop();
        let hash = Fnv::new().bytes(tenant.as_str()).end_part().bytes(&head);
        Self { head, hash }
    }

    /// The response for one user: the object with `userId` and `userPrincipalName` last,
    /// hashed with the tenant — the same text and tag as building the whole document per
    /// request. The body is only copied out if asked for (a 304 needs the tag alone).
    pub fn for_user(&self, user_id: Option<&str>, upn: Option<&str>) -> UserPolicy<'_> {
        let tail = format!(
            ",\"userId\":{},\"userPrincipalName\":{}}}",
            Value::from(user_id),
            Value::from(upn)
        );
        let hash = self.hash.bytes(&tail).end_part();
        UserPolicy {
            document: self,
            tail,
            etag: format!("\"{:016x}\"", hash.0),
        }
    }

    fn weight(&self) -> usize {
        self.head.len() + 128
    }
}

/// One user's policy response.
pub struct UserPolicy<'a> {
    document: &'a PolicyDocument,
    tail: String,
    /// The strong ETag, quoted.
    pub etag: String,
}

impl UserPolicy<'_> {
    pub fn body(&self) -> String {
        let mut out = String::with_capacity(self.document.head.len() + self.tail.len());
        out.push_str(&self.document.head);
        out.push_str(&self.tail);
        out
    }
}

struct CompiledConfiguration {
    applied: AppliedConfiguration,
    /// The id as the JSON string the `sources` maps hold.
    source: Value,
    policy: Map<String, Value>,
    user_preference: Map<String, Value>,
}

/// Payload bytes → its top-level keys. Stored payloads were validated as JSON objects on the
/// way in; anything else contributes nothing, as in [`super::effective_policy`].
fn parse_payload(c: &ClientConfiguration, kind: PayloadKind) -> Map<String, Value> {
    match c.payload(kind).map(serde_json::from_slice::<Value>) {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    }
}

/// The byte account of an index: (bytes held, bound).
type Account = (Arc<AtomicUsize>, usize);

/// Cached documents of one compiled tenant, keyed by the applicable configurations.
#[derive(Default)]
struct Documents {
    map: HashMap<Vec<u32>, (Arc<PolicyDocument>, u64)>,
    tick: u64,
    bytes: usize,
    /// The index's account while an index holds the tenant: set, charged and cleared under
    /// this lock, so every byte added is subtracted exactly once.
    account: Option<Account>,
}

/// One tenant's policy data, compiled.
pub struct TenantPolicy {
    tenant: TenantId,
    /// The change-feed generation the data was loaded at; `None`: not cacheable.
    generation: Option<u64>,
    /// Highest priority (lowest number) first.
    configurations: Vec<CompiledConfiguration>,
    /// Group → indices into `configurations`, ascending.
    by_group: HashMap<Uuid, Vec<u32>>,
    documents: Mutex<Documents>,
    /// Estimated size of the compiled data (documents are counted as they are added).
    weight: usize,
    /// For least-recently-used eviction of tenants.
    last_used: AtomicU64,
    max_documents: usize,
}

impl TenantPolicy {
    /// Compiles a tenant's configurations and their assignments (as loaded at `generation`).
    pub fn compile(
        tenant: &TenantId,
        generation: Option<u64>,
        configurations: &[ClientConfiguration],
        assignments: &HashMap<Uuid, Vec<Assignment>>,
        limits: &Limits,
    ) -> Self {
        let mut ordered: Vec<&ClientConfiguration> = configurations.iter().collect();
        // Priorities are unique per tenant; the id breaks ties as in `effective_policy`.
        ordered.sort_by_key(|c| (c.priority, c.id));
        let mut weight = 1024;
        let mut by_group: HashMap<Uuid, Vec<u32>> = HashMap::new();
        let mut compiled = Vec::with_capacity(ordered.len());
        for (i, c) in ordered.into_iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            for a in assignments.get(&c.id).into_iter().flatten() {
                let list = by_group.entry(a.target.group_id()).or_default();
                // A configuration targeting a group twice is listed once.
                if list.last() != Some(&i) {
                    list.push(i);
                    weight += 48;
                }
            }
            // Parsed JSON takes a few times its text.
            weight += 256
                + 3 * (c.policy_payload.as_ref().map_or(0, Vec::len)
                    + c.user_preference_payload.as_ref().map_or(0, Vec::len));
            compiled.push(CompiledConfiguration {
                applied: AppliedConfiguration {
                    id: c.id,
                    odata_type: c.kind.odata_type(),
                    display_name: c.display_name.clone(),
                    priority: c.priority,
                },
                source: c.id.to_string().into(),
                policy: parse_payload(c, PayloadKind::Policy),
                user_preference: parse_payload(c, PayloadKind::UserPreference),
            });
        }
        Self {
            tenant: tenant.clone(),
            generation,
            configurations: compiled,
            by_group,
            documents: Mutex::default(),
            weight,
            last_used: AtomicU64::new(0),
            max_documents: if generation.is_some() {
                limits.max_documents
            } else {
                0
            },
        }
    }

    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// Indices of the configurations targeting any of `groups`, in priority order.
    fn applicable(&self, groups: &[Uuid]) -> Vec<u32> {
        let mut out: Vec<u32> = groups
            .iter()
            .filter_map(|g| self.by_group.get(g))
            .flatten()
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn merge(&self, applicable: &[u32]) -> EffectivePolicy {
        let chosen: Vec<&CompiledConfiguration> = applicable
            .iter()
            .filter_map(|&i| self.configurations.get(i as usize))
            .collect();
        let mut out = EffectivePolicy {
            configurations: chosen.iter().map(|c| c.applied.clone()).collect(),
            policy_settings: Map::new(),
            policy_sources: Map::new(),
            user_preference_settings: Map::new(),
            user_preference_sources: Map::new(),
        };
        for c in chosen {
            merge_keys(
                &c.policy,
                &c.source,
                &mut out.policy_settings,
                &mut out.policy_sources,
            );
            merge_keys(
                &c.user_preference,
                &c.source,
                &mut out.user_preference_settings,
                &mut out.user_preference_sources,
            );
        }
        out
    }

    /// The effective policy of a member of `groups` (the same as [`super::effective_policy`]).
    pub fn effective(&self, groups: &[Uuid]) -> EffectivePolicy {
        self.merge(&self.applicable(groups))
    }

    /// The rendered policy of a member of `groups`, from the cache when another user with the
    /// same applicable configurations asked since this compile.
    pub fn document(&self, groups: &[Uuid]) -> Arc<PolicyDocument> {
        let key = self.applicable(groups);
        if let Ok(mut docs) = self.documents.lock() {
            docs.tick += 1;
            let tick = docs.tick;
            if let Some((doc, used)) = docs.map.get_mut(&key) {
                *used = tick;
                return doc.clone();
            }
        }
        let doc = Arc::new(PolicyDocument::new(&self.tenant, &self.merge(&key)));
        self.remember(key, &doc);
        doc
    }

    fn remember(&self, key: Vec<u32>, doc: &Arc<PolicyDocument>) {
        if self.max_documents == 0 {
            return;
        }
        let Ok(mut docs) = self.documents.lock() else {
            return;
        };
        let weight = doc.weight() + key.len() * 4;
        if let Some((held, max)) = &docs.account
            && held.load(Ordering::Relaxed) + weight > *max
        {
            // The whole index is at its byte bound: serve this one uncached.
            return;
        }
        if docs.map.contains_key(&key) {
            // A concurrent miss stored it first.
            return;
        }
        if docs.map.len() >= self.max_documents {
            // Least recently used goes (a scan of a few hundred entries, on a miss only).
            let oldest = docs
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, (d, _))| (k.clone(), d.weight() + k.len() * 4));
            if let Some((k, w)) = oldest {
                docs.map.remove(&k);
                docs.charge(-(w as isize));
            }
        }
        let tick = docs.tick;
        docs.map.insert(key, (doc.clone(), tick));
        docs.charge(weight as isize);
    }

    /// Leaves the index's byte account (on eviction): a request may still hold this tenant for
    /// a moment, but the index no longer does.
    fn detach(&self) {
        if let Ok(mut docs) = self.documents.lock()
            && let Some((held, _)) = docs.account.take()
        {
            held.fetch_sub(self.weight + docs.bytes, Ordering::Relaxed);
        }
    }

    /// Joins an index's byte account (the compiled data and documents so far).
    fn attach(&self, account: Account) {
        if let Ok(mut docs) = self.documents.lock()
            && docs.account.is_none()
        {
            account
                .0
                .fetch_add(self.weight + docs.bytes, Ordering::Relaxed);
            docs.account = Some(account);
        }
    }
}

impl Documents {
    fn charge(&mut self, delta: isize) {
        self.bytes = self.bytes.saturating_add_signed(delta);
        if let Some((held, _)) = &self.account {
            if delta >= 0 {
                held.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
            } else {
                held.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            }
        }
    }
}

impl Drop for TenantPolicy {
    fn drop(&mut self) {
        if let Ok(docs) = self.documents.get_mut()
            && let Some((held, _)) = &docs.account
        {
            held.fetch_sub(self.weight + docs.bytes, Ordering::Relaxed);
        }
    }
}

/// Adds the keys of one payload that no higher-priority configuration has set yet.
fn merge_keys(
    payload: &Map<String, Value>,
    source: &Value,
    settings: &mut Map<String, Value>,
    sources: &mut Map<String, Value>,
) {
    for (key, value) in payload {
        if !settings.contains_key(key) {
            sources.insert(key.clone(), source.clone());
            settings.insert(key.clone(), value.clone());
        }
    }
}

/// The compiled tenants of this process.
pub struct PolicyIndex {
    /// Read-locked on every request (hits touch only atomics), write-locked to insert.
    tenants: RwLock<HashMap<TenantId, Arc<TenantPolicy>>>,
    limits: Limits,
    bytes: Arc<AtomicUsize>,
    clock: AtomicU64,
}

impl Default for PolicyIndex {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl PolicyIndex {
    pub fn new(limits: Limits) -> Self {
        Self {
            tenants: RwLock::default(),
            limits,
            bytes: Arc::default(),
            clock: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The tenant's compiled policy if it was compiled at exactly `generation`.
    pub fn get(&self, tenant: &TenantId, generation: u64) -> Option<Arc<TenantPolicy>> {
        let map = self.tenants.read().ok()?;
        let t = map.get(tenant)?;
        if t.generation != Some(generation) {
            return None;
        }
        t.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(t.clone())
    }

    /// Holds a compile for later requests, unless it is not cacheable, a newer one is held, or
    /// it alone is too big; evicts least recently used tenants to stay within the bounds.
    pub fn insert(&self, compiled: &Arc<TenantPolicy>) {
        let Some(generation) = compiled.generation else {
            return;
        };
        // One tenant may use at most a quarter of the budget.
        if compiled.weight > self.limits.max_bytes / 4 || self.limits.max_tenants == 0 {
            return;
        }
        let Ok(mut map) = self.tenants.write() else {
            return;
        };
        if let Some(held) = map.get(&compiled.tenant)
            && held.generation.is_some_and(|g| g >= generation)
        {
            return;
        }
        if let Some(old) = map.remove(&compiled.tenant) {
            old.detach();
        }
        while !map.is_empty()
            && (map.len() >= self.limits.max_tenants
                || self.bytes() + compiled.weight > self.limits.max_bytes)
        {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, t)| t.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(t) = map.remove(&oldest) {
                t.detach();
            }
        }
        compiled.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        compiled.attach((self.bytes.clone(), self.limits.max_bytes));
        map.insert(compiled.tenant.clone(), compiled.clone());
    }

    /// Compiled tenants held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.tenants.read().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes of the compiled tenants held and their documents.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::model::{AssignmentTarget, ConfigurationKind, UserCheckinSummary};
    use crate::policy::effective_policy;

    fn tenant() -> TenantId {
        TenantId::parse("contoso").unwrap()
    }

    fn config(
        n: u128,
        priority: i32,
        policy: Option<&str>,
        prefs: Option<&str>,
    ) -> ClientConfiguration {
        ClientConfiguration {
            id: Uuid::from_u128(n),
            kind: if n.is_multiple_of(2) {
                ConfigurationKind::Windows
            } else {
                ConfigurationKind::WindowsSecurity
            },
            display_name: (!n.is_multiple_of(3)).then(|| format!("c{n}")),
            description: None,
            priority,
            policy_payload: policy.map(|p| p.as_bytes().to_vec()),
            user_preference_payload: prefs.map(|p| p.as_bytes().to_vec()),
            checkin_statuses: vec![],
            user_checkin_summary: UserCheckinSummary::default(),
            checkin_override: false,
            last_modified_date_time: time::OffsetDateTime::UNIX_EPOCH,
            version: 1,
        }
    }

    fn assignment(config: Uuid, group: u128) -> Assignment {
        Assignment {
            id: Uuid::new_v4(),
            configuration_id: config,
            target: AssignmentTarget::Group {
                group_id: Uuid::from_u128(group),
            },
            version: 1,
        }
    }

    fn group_map(list: &[Assignment]) -> HashMap<Uuid, Vec<Assignment>> {
        let mut out: HashMap<Uuid, Vec<Assignment>> = HashMap::new();
        for a in list {
            out.entry(a.configuration_id).or_default().push(a.clone());
        }
        out
    }

    /// What the handler rendered before the index: the whole document per request.
    fn reference_response(
        policy: &EffectivePolicy,
        user: Option<&str>,
        upn: Option<&str>,
    ) -> (String, String) {
        let mut body = policy.to_json();
        let obj = body.as_object_mut().unwrap();
        obj.insert("userId".into(), user.map(str::to_string).into());
        obj.insert("userPrincipalName".into(), upn.map(str::to_string).into());
        let text = body.to_string();
        let etag = format!(
            "\"{:016x}\"",
            crate::odata::paging::fnv1a(&[tenant().as_str(), &text])
        );
        (text, etag)
    }

    /// A payload over a small key alphabet (so configurations overlap), sometimes absent or
    /// not an object.
    fn payload() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            1 => Just(None),
            1 => Just(Some("[1,2]".to_string())),
            6 => prop::collection::vec(("[a-f]", any::<i8>(), any::<bool>()), 0..5).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v, s) in kv {
                    m.insert(k, if s { json!(format!("s{v}")) } else { json!(v) });
                }
                Some(Value::Object(m).to_string())
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn index_equals_effective_policy(
            configs in prop::collection::vec((payload(), payload(), -3i32..40), 0..12),
            targets in prop::collection::vec((0usize..14, 0u128..8), 0..30),
            groups in prop::collection::vec(0u128..10, 0..6),
            user in prop::option::of("[a-z\"\\\\é]{0,6}"),
        ) {
            // Unique priorities, as the domain guarantees.
            let mut used = HashSet::new();
            let list: Vec<ClientConfiguration> = configs
                .iter()
                .enumerate()
                .filter(|(_, (_, _, p))| used.insert(*p))
                .map(|(i, (pol, pref, p))| config(i as u128 + 1, *p, pol.as_deref(), pref.as_deref()))
                .collect();
            // Assignments may name configurations that do not exist (index ≥ len).
            let assignments: Vec<Assignment> = targets
                .iter()
                .map(|(c, g)| assignment(list.get(*c).map_or(Uuid::from_u128(999), |c| c.id), *g))
                .collect();
            let by_config = group_map(&assignments);
            let user_groups: Vec<Uuid> = groups.iter().map(|g| Uuid::from_u128(*g)).collect();
            let set: HashSet<Uuid> = user_groups.iter().copied().collect();

            let expected = effective_policy(&list, &by_config, &set);
            let compiled = TenantPolicy::compile(&tenant(), Some(1), &list, &by_config, &Limits::default());
            prop_assert_eq!(&compiled.effective(&user_groups), &expected);

            let (text, etag) = reference_response(&expected, user.as_deref(), Some("u@x"));
            // Twice: computed, then from the document cache.
            for _ in 0..2 {
                let doc = compiled.document(&user_groups);
                let got = doc.for_user(user.as_deref(), Some("u@x"));
                prop_assert_eq!(got.body(), text.clone());
                prop_assert_eq!(got.etag, etag.clone());
            }
        }
    }

    #[test]
    fn fnv_in_pieces_equals_fnv1a() {
        let whole = crate::odata::paging::fnv1a(&["tenant", "head,tail"]);
        let pieces = Fnv::new()
            .bytes("tenant")
            .end_part()
            .bytes("head")
            .bytes(",tail")
            .end_part();
        assert_eq!(pieces.0, whole);
    }

    #[test]
    fn groups_map_to_their_configurations_once_each() {
        let list: Vec<_> = (1..=4)
            .map(|n| config(n, 10 - n as i32, Some(&format!(r#"{{"k":{n}}}"#)), None))
            .collect();
        // Configuration 1 targets groups 7 and 8; 2 targets 8; 3 targets 9; 4 targets nobody.
        let by_config = group_map(&[
            assignment(list[0].id, 7),
            assignment(list[0].id, 8),
            assignment(list[1].id, 8),
            assignment(list[2].id, 9),
        ]);
        let c = TenantPolicy::compile(&tenant(), Some(1), &list, &by_config, &Limits::default());
        assert_eq!(c.by_group.len(), 3);
        // Priority order: 4 (6), 3 (7), 2 (8), 1 (9) → indices 0..=3.
        assert_eq!(c.by_group[&Uuid::from_u128(7)], vec![3]);
        assert_eq!(c.by_group[&Uuid::from_u128(8)], vec![2, 3]);
        let g = |n: &[u128]| n.iter().map(|n| Uuid::from_u128(*n)).collect::<Vec<_>>();
        // A configuration reached through two of the user's groups counts once.
        assert_eq!(c.applicable(&g(&[7, 8, 42])), vec![2, 3]);
        let p = c.effective(&g(&[7, 8]));
        assert_eq!(
            p.configurations.iter().map(|c| c.id).collect::<Vec<_>>(),
            [list[1].id, list[0].id]
        );
        assert_eq!(Value::Object(p.policy_settings), json!({"k": 2}));
        assert!(c.effective(&g(&[42])).configurations.is_empty());
    }

    #[test]
    fn documents_are_shared_and_bounded_per_tenant() {
        let list: Vec<_> = (1..=20)
            .map(|n| config(n, n as i32, Some(r#"{"k":1}"#), None))
            .collect();
        let by_config = group_map(
            &list
                .iter()
                .enumerate()
                .map(|(i, c)| assignment(c.id, i as u128))
                .collect::<Vec<_>>(),
        );
        let limits = Limits {
            max_documents: 4,
            ..Limits::default()
        };
        let c = TenantPolicy::compile(&tenant(), Some(1), &list, &by_config, &limits);
        let g = |n: u128| vec![Uuid::from_u128(n), Uuid::from_u128(1000 + n)];
        // Same applicable configurations → the same document, no merging.
        let first = c.document(&g(1));
        assert!(Arc::ptr_eq(&first, &c.document(&[Uuid::from_u128(1)])));
        for n in 0..20 {
            c.document(&g(n));
        }
        assert!(c.documents.lock().unwrap().map.len() <= 4);
        // Not cacheable (feed not live): nothing is kept.
        let uncached = TenantPolicy::compile(&tenant(), None, &list, &by_config, &limits);
        let d = uncached.document(&g(1));
        assert!(!Arc::ptr_eq(&d, &uncached.document(&g(1))));
        assert!(uncached.documents.lock().unwrap().map.is_empty());
    }

    #[test]
    fn the_index_serves_only_the_current_generation_and_stays_bounded() {
        let t = |s: &str| TenantId::parse(s).unwrap();
        let list = vec![config(1, 1, Some(r#"{"k":1}"#), None)];
        let by_config = group_map(&[assignment(list[0].id, 7)]);
        let index = PolicyIndex::new(Limits {
            max_tenants: 3,
            ..Limits::default()
        });
        let compile = |tenant: &TenantId, g: Option<u64>| {
            Arc::new(TenantPolicy::compile(
                tenant,
                g,
                &list,
                &by_config,
                index.limits(),
            ))
        };
        let a = t("a");
        index.insert(&compile(&a, Some(5)));
        assert!(index.get(&a, 5).is_some());
        assert!(index.get(&a, 6).is_none(), "a newer generation is a miss");
        // A compile from an older generation never replaces a newer one.
        index.insert(&compile(&a, Some(4)));
        assert!(index.get(&a, 5).is_some());
        index.insert(&compile(&a, Some(6)));
        assert!(index.get(&a, 5).is_none() && index.get(&a, 6).is_some());
        // Uncacheable compiles are not held.
        index.insert(&compile(&t("b"), None));
        assert!(index.get(&t("b"), 0).is_none());
        // The tenant bound evicts the least recently used.
        for name in ["c", "d"] {
            index.insert(&compile(&t(name), Some(1)));
        }
        index.get(&a, 6);
        index.insert(&compile(&t("e"), Some(1)));
        assert_eq!(index.len(), 3);
        assert!(index.get(&a, 6).is_some(), "recently used stays");
        assert!(index.get(&t("c"), 1).is_none(), "least recently used went");
    }

    #[test]
    fn the_byte_bound_holds_and_evicted_tenants_give_their_bytes_back() {
        let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(10_000));
        let list = vec![config(1, 1, Some(&big), None)];
        let by_config = group_map(&[assignment(list[0].id, 7)]);
        let limits = Limits {
            max_tenants: 100,
            max_bytes: 200_000,
            max_documents: 8,
        };
        let index = PolicyIndex::new(limits);
        for i in 0..50 {
            let tenant = TenantId::parse(&format!("t{i}")).unwrap();
            let c = Arc::new(TenantPolicy::compile(
                &tenant,
                Some(1),
                &list,
                &by_config,
                &limits,
            ));
            index.insert(&c);
            c.document(&[Uuid::from_u128(7)]);
            assert!(index.bytes() <= limits.max_bytes, "{} bytes", index.bytes());
        }
        assert!(index.len() < 50 && !index.is_empty());
        // Tenants evicted while requests still hold them no longer count.
        let held: Vec<_> = (0..50)
            .map(|i| {
                let tenant = TenantId::parse(&format!("h{i}")).unwrap();
                let c = Arc::new(TenantPolicy::compile(
                    &tenant,
                    Some(1),
                    &list,
                    &by_config,
                    &limits,
                ));
                index.insert(&c);
                c
            })
            .collect();
        let fit = index.len();
        assert!(fit > 1, "only {fit} tenants held");
        drop(held);
        assert!(index.bytes() <= limits.max_bytes);
        // One tenant bigger than a quarter of the budget is never held.
        let huge = vec![config(
            1,
            1,
            Some(&format!(r#"{{"k":"{}"}}"#, "x".repeat(100_000))),
            None,
        )];
        let c = Arc::new(TenantPolicy::compile(
            &tenant(),
            Some(1),
            &huge,
            &by_config,
            &limits,
        ));
        index.insert(&c);
        assert!(index.get(&tenant(), 1).is_none());
        drop(c);
        // Dropping the index's tenants returns every byte.
        let bytes = index.bytes.clone();
        drop(index);
        assert_eq!(bytes.load(Ordering::Relaxed), 0);
    }
}
