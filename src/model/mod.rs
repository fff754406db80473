//! The Graph types of the officeConfiguration family, in Graph's own vocabulary, and how each is
//! written on the wire. Parsing and validation of request bodies lives in [`input`].

pub mod input;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

pub const NAMESPACE: &str = "microsoft.graph";

/// Tenant id: the token's `tid`. Every read and write is scoped by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Accepts what identity providers put in `tid`: a GUID, or for dev tokens any short
    /// name of letters, digits, `-`, `_` and `.`.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        ok.then(|| Self(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The concrete (non-abstract) types of `officeClientConfiguration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigurationKind {
    Windows,
    WindowsSecurity,
}

impl ConfigurationKind {
    pub const ALL: [ConfigurationKind; 2] = [Self::Windows, Self::WindowsSecurity];

    pub fn type_name(self) -> &'static str {
        match self {
            Self::Windows => "windowsOfficeClientConfiguration",
            Self::WindowsSecurity => "windowsOfficeClientSecurityConfiguration",
        }
    }

    pub fn odata_type(self) -> &'static str {
        match self {
            Self::Windows => "#microsoft.graph.windowsOfficeClientConfiguration",
            Self::WindowsSecurity => "#microsoft.graph.windowsOfficeClientSecurityConfiguration",
        }
    }

    pub fn from_type_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.type_name() == name)
    }
}

/// Strips the `#` and the namespace (or its alias `graph`) from an `@odata.type` value.
pub fn unqualified_type_name(odata_type: &str) -> Option<&str> {
    let t = odata_type.strip_prefix('#').unwrap_or(odata_type);
    t.strip_prefix("microsoft.graph.")
        .or_else(|| t.strip_prefix("graph."))
}

/// The two stream properties of a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    Policy,
    UserPreference,
}

impl PayloadKind {
    pub fn property(self) -> &'static str {
        match self {
            Self::Policy => "policyPayload",
            Self::UserPreference => "userPreferencePayload",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckinStatus {
    pub user_id: String,
    pub user_principal_name: Option<String>,
    pub device_name: Option<String>,
    pub device_platform: Option<String>,
    pub device_platform_version: Option<String>,
    pub was_successful: bool,
    pub checkin_date_time: OffsetDateTime,
    pub error_message: Option<String>,
    pub applied_policies: Vec<Option<String>>,
    pub last_task_name: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserCheckinSummary {
    pub succeeded_user_count: i32,
    pub failed_user_count: i32,
}

/// The per-tenant singleton `officeConfiguration`.
#[derive(Clone, Debug, PartialEq)]
pub struct OfficeConfiguration {
    pub id: Uuid,
    pub tenant_checkin_statuses: Vec<CheckinStatus>,
    pub tenant_user_checkin_summary: UserCheckinSummary,
    /// Set by a Graph PATCH of the check-in properties: the stored values are shown instead
    /// of the computed views until the next check-in in the tenant (DESIGN §3).
    pub checkin_override: bool,
    pub version: i64,
}

/// An `officeClientConfiguration` (always one of the concrete kinds).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfiguration {
    pub id: Uuid,
    pub kind: ConfigurationKind,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub priority: i32,
    pub policy_payload: Option<Vec<u8>>,
    pub user_preference_payload: Option<Vec<u8>>,
    pub checkin_statuses: Vec<CheckinStatus>,
    pub user_checkin_summary: UserCheckinSummary,
    /// As on the singleton, for check-ins that applied this configuration.
    pub checkin_override: bool,
    pub last_modified_date_time: OffsetDateTime,
    pub version: i64,
}

impl ClientConfiguration {
    pub fn payload(&self, kind: PayloadKind) -> Option<&[u8]> {
        match kind {
            PayloadKind::Policy => self.policy_payload.as_deref(),
            PayloadKind::UserPreference => self.user_preference_payload.as_deref(),
        }
    }

    pub fn payload_mut(&mut self, kind: PayloadKind) -> &mut Option<Vec<u8>> {
        match kind {
            PayloadKind::Policy => &mut self.policy_payload,
            PayloadKind::UserPreference => &mut self.user_preference_payload,
        }
    }
}

/// `officeConfigurationAssignmentTarget` is abstract; the group target is its only concrete type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignmentTarget {
    Group { group_id: Uuid },
}

impl AssignmentTarget {
    pub fn group_id(&self) -> Uuid {
        match self {
            Self::Group { group_id } => *group_id,
        }
    }
}

/// An `officeClientConfigurationAssignment`, contained in one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub id: Uuid,
    pub configuration_id: Uuid,
    pub target: AssignmentTarget,
    pub version: i64,
}

// ---- wire representation -------------------------------------------------------------------

/// `Edm.DateTimeOffset` as Intune writes it: UTC, seven fractional digits, `Z`.
pub fn format_datetime(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn base64_out(bytes: Option<&[u8]>) -> Value {
    match bytes {
        Some(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        None => Value::Null,
    }
}

impl UserCheckinSummary {
    pub fn to_json(self) -> Value {
        json!({
            "@odata.type": "#microsoft.graph.officeUserCheckinSummary",
            "succeededUserCount": self.succeeded_user_count,
            "failedUserCount": self.failed_user_count,
        })
    }
}

impl CheckinStatus {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The Graph shape, written straight out (a check-in's `201` body is serialised without
/// building a `Value` first; [`CheckinStatus::to_json`] goes through this too).
impl serde::Serialize for CheckinStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@odata.type", "#microsoft.graph.officeClientCheckinStatus")?;
        m.serialize_entry("userId", &self.user_id)?;
        m.serialize_entry("userPrincipalName", &self.user_principal_name)?;
        m.serialize_entry("deviceName", &self.device_name)?;
        m.serialize_entry("devicePlatform", &self.device_platform)?;
        m.serialize_entry("devicePlatformVersion", &self.device_platform_version)?;
        m.serialize_entry("wasSuccessful", &self.was_successful)?;
        m.serialize_entry("checkinDateTime", &format_datetime(self.checkin_date_time))?;
        m.serialize_entry("errorMessage", &self.error_message)?;
        m.serialize_entry("appliedPolicies", &self.applied_policies)?;
        if let Some(task) = &self.last_task_name {
            m.serialize_entry("lastTaskName", task)?;
        }
        m.end()
    }
}

/// One client check-in, as ingested: the reporting tenant and the status the server built
/// from the client's report, its token and its clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkin {
    pub tenant: TenantId,
    pub status: CheckinStatus,
}

impl Checkin {
    /// The device part of the (user, device) key: Windows device names are case-insensitive.
    pub fn device_key(&self) -> String {
        self.status
            .device_name
            .as_deref()
            .unwrap_or_default()
            .to_lowercase()
    }
}

/// What Graph shows of the check-ins in one scope (the tenant, or one configuration).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckinView {
    /// The most recent statuses, newest first, capped.
    pub statuses: Vec<CheckinStatus>,
    /// Distinct users by the outcome of their latest check-in in the window.
    pub summary: UserCheckinSummary,
}

pub fn checkin_statuses_json(statuses: &[CheckinStatus]) -> Value {
    Value::Array(statuses.iter().map(CheckinStatus::to_json).collect())
}

impl OfficeConfiguration {
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "@odata.type".into(),
            "#microsoft.graph.officeConfiguration".into(),
        );
        m.insert("@odata.etag".into(), etag(self.version).into());
        m.insert("id".into(), self.id.to_string().into());
        m.insert(
            "tenantCheckinStatuses".into(),
            checkin_statuses_json(&self.tenant_checkin_statuses),
        );
        m.insert(
            "tenantUserCheckinSummary".into(),
            self.tenant_user_checkin_summary.to_json(),
        );
        m
    }
}

impl ClientConfiguration {
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("@odata.type".into(), self.kind.odata_type().into());
        m.insert("@odata.etag".into(), etag(self.version).into());
        m.insert("id".into(), self.id.to_string().into());
        m.insert(
            "userPreferencePayload".into(),
            base64_out(self.user_preference_payload.as_deref()),
        );
        m.insert(
            "policyPayload".into(),
            base64_out(self.policy_payload.as_deref()),
        );
        m.insert("description".into(), self.description.clone().into());
        m.insert("displayName".into(), self.display_name.clone().into());
        m.insert(
            "lastModifiedDateTime".into(),
            format_datetime(self.last_modified_date_time).into(),
        );
        m.insert("priority".into(), self.priority.into());
        m.insert(
            "userCheckinSummary".into(),
            self.user_checkin_summary.to_json(),
        );
        m.insert(
            "checkinStatuses".into(),
            checkin_statuses_json(&self.checkin_statuses),
        );
        m
    }
}

impl AssignmentTarget {
    pub fn to_json(&self) -> Value {
        match self {
            Self::Group { group_id } => json!({
                "@odata.type": "#microsoft.graph.officeConfigurationGroupAssignmentTarget",
                "groupId": group_id.to_string(),
            }),
        }
    }
}

impl Assignment {
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "@odata.type".into(),
            "#microsoft.graph.officeClientConfigurationAssignment".into(),
        );
        m.insert("@odata.etag".into(), etag(self.version).into());
        m.insert("id".into(), self.id.to_string().into());
        m.insert("target".into(), self.target.to_json());
        m
    }
}
