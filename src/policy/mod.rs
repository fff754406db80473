//! The policy engine: what an Office client receives. For a user's groups, the configurations
//! assigned to any of them, by priority (lower number first), and the effective settings: the
//! top-level keys of every `policyPayload` merged so that the highest-priority configuration
//! setting a key wins — the same, separately, for `userPreferencePayload` — with the
//! configuration that supplied each key. Pure: the caller loads the data.
//!
//! [`effective_policy`] is the reference semantics; requests are served from the compiled,
//! cached form in [`index`], which must give the same result.

pub mod index;

pub mod ingest;

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::model::{Assignment, ClientConfiguration, PayloadKind};

/// The effective policy of one user.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    /// Applicable configurations, highest priority first.
    pub configurations: Vec<AppliedConfiguration>,
    pub policy_settings: Map<String, Value>,
    pub policy_sources: Map<String, Value>,
    pub user_preference_settings: Map<String, Value>,
    pub user_preference_sources: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppliedConfiguration {
    pub id: Uuid,
    pub odata_type: &'static str,
    pub display_name: Option<String>,
    pub priority: i32,
}

/// Computes the effective policy for a member of `groups`.
pub fn effective_policy(
    configurations: &[ClientConfiguration],
    assignments: &HashMap<Uuid, Vec<Assignment>>,
    groups: &HashSet<Uuid>,
) -> EffectivePolicy {
    let mut applicable: Vec<&ClientConfiguration> = configurations
        .iter()
        .filter(|c| {
            assignments
                .get(&c.id)
                .is_some_and(|list| list.iter().any(|a| groups.contains(&a.target.group_id())))
        })
        .collect();
    // Priorities are unique per tenant; the id breaks ties deterministically all the same.
    applicable.sort_by_key(|c| (c.priority, c.id));
    let mut out = EffectivePolicy {
        configurations: applicable
            .iter()
            .map(|c| AppliedConfiguration {
                id: c.id,
                odata_type: c.kind.odata_type(),
                display_name: c.display_name.clone(),
                priority: c.priority,
            })
            .collect(),
        policy_settings: Map::new(),
        policy_sources: Map::new(),
        user_preference_settings: Map::new(),
        user_preference_sources: Map::new(),
    };
    for c in &applicable {
        merge(
            c,
            PayloadKind::Policy,
            &mut out.policy_settings,
            &mut out.policy_sources,
        );
        merge(
            c,
            PayloadKind::UserPreference,
            &mut out.user_preference_settings,
            &mut out.user_preference_sources,
        );
    }
    out
}

/// Adds the keys of one payload that no higher-priority configuration has set yet.
fn merge(
    c: &ClientConfiguration,
    kind: PayloadKind,
    settings: &mut Map<String, Value>,
    sources: &mut Map<String, Value>,
) {
    let Some(bytes) = c.payload(kind) else { return };
    // Stored payloads were validated as JSON objects on the way in.
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    for (key, value) in map {
        if !settings.contains_key(&key) {
            sources.insert(key.clone(), c.id.to_string().into());
            settings.insert(key, value);
        }
    }
}

impl EffectivePolicy {
    pub fn to_json(&self) -> Value {
        json!({
            "configurations": self.configurations.iter().map(|c| json!({
                "id": c.id.to_string(),
                "@odata.type": c.odata_type,
                "displayName": c.display_name,
                "priority": c.priority,
            })).collect::<Vec<_>>(),
            "policySettings": self.policy_settings,
            "userPreferenceSettings": self.user_preference_settings,
            "sources": {
                "policySettings": self.policy_sources,
                "userPreferenceSettings": self.user_preference_sources,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AssignmentTarget, ConfigurationKind, UserCheckinSummary};

    fn config(
        n: u128,
        kind: ConfigurationKind,
        priority: i32,
        policy: &str,
        prefs: Option<&str>,
    ) -> ClientConfiguration {
        ClientConfiguration {
            id: Uuid::from_u128(n),
            kind,
            display_name: Some(format!("c{n}")),
            description: None,
            priority,
            policy_payload: Some(policy.as_bytes().to_vec()),
            user_preference_payload: prefs.map(|p| p.as_bytes().to_vec()),
            checkin_statuses: vec![],
            user_checkin_summary: UserCheckinSummary::default(),
            checkin_override: false,
            last_modified_date_time: time::OffsetDateTime::UNIX_EPOCH,
            version: 1,
        }
    }

    fn assign(config: u128, group: u128) -> (Uuid, Vec<Assignment>) {
        (
            Uuid::from_u128(config),
            vec![Assignment {
                id: Uuid::from_u128(1000 + config),
                configuration_id: Uuid::from_u128(config),
                target: AssignmentTarget::Group {
                    group_id: Uuid::from_u128(group),
                },
                version: 1,
            }],
        )
    }

    #[test]
    fn lower_priority_number_wins_per_key_and_sources_are_named() {
        let configs = [
            config(
                1,
                ConfigurationKind::Windows,
                5,
                r#"{"a":1,"b":1}"#,
                Some(r#"{"p":"low"}"#),
            ),
            config(
                2,
                ConfigurationKind::WindowsSecurity,
                2,
                r#"{"a":2,"c":2}"#,
                None,
            ),
        ];
        let assignments: HashMap<_, _> = [assign(1, 7), assign(2, 7)].into();
        let p = effective_policy(&configs, &assignments, &[Uuid::from_u128(7)].into());
        assert_eq!(
            p.configurations
                .iter()
                .map(|c| c.priority)
                .collect::<Vec<_>>(),
            [2, 5]
        );
        assert_eq!(
            Value::Object(p.policy_settings.clone()),
            json!({"a": 2, "c": 2, "b": 1})
        );
        assert_eq!(p.policy_sources["a"], Uuid::from_u128(2).to_string());
        assert_eq!(p.policy_sources["b"], Uuid::from_u128(1).to_string());
        assert_eq!(
            Value::Object(p.user_preference_settings),
            json!({"p": "low"})
        );
    }

    #[test]
    fn only_targeted_groups_count() {
        let configs = [
            config(1, ConfigurationKind::Windows, 1, r#"{"a":1}"#, None),
            config(2, ConfigurationKind::Windows, 2, r#"{"b":1}"#, None),
        ];
        let assignments: HashMap<_, _> = [assign(1, 7), assign(2, 8)].into();
        let p = effective_policy(&configs, &assignments, &[Uuid::from_u128(8)].into());
        assert_eq!(p.configurations.len(), 1);
        assert_eq!(Value::Object(p.policy_settings), json!({"b": 1}));
        let none = effective_policy(&configs, &assignments, &HashSet::new());
        assert!(none.configurations.is_empty() && none.policy_settings.is_empty());
    }
}
