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
    let mut out = Vec::with_capacity(DATETIME_LEN);
    write_datetime(&mut out, t);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Length of [`format_datetime`]'s text for years 0–9999.
const DATETIME_LEN: usize = 28;

/// Appends [`format_datetime`]'s text. Digits are written directly: this runs for every
/// check-in's response, where `format!` was a measurable share of the request's CPU.
pub fn write_datetime(out: &mut Vec<u8>, t: OffsetDateTime) {
    let t = t.to_offset(time::UtcOffset::UTC);
    let year = t.year();
    if !(0..=9999).contains(&year) {
        out.extend_from_slice(
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
                year,
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.nanosecond() / 100
            )
            .as_bytes(),
        );
        return;
    }
    let mut buf = *b"0000-00-00T00:00:00.0000000Z";
    let mut digits = |at: usize, width: usize, mut n: u32| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(0, 4, year.unsigned_abs());
    digits(5, 2, u32::from(u8::from(t.month())));
    digits(8, 2, u32::from(t.day()));
    digits(11, 2, u32::from(t.hour()));
    digits(14, 2, u32::from(t.minute()));
    digits(17, 2, u32::from(t.second()));
    digits(20, 7, t.nanosecond() / 100);
    out.extend_from_slice(&buf);
}

/// Appends `s` as a JSON string, byte for byte as `serde_json` writes it (it escapes only `"`,
/// `\` and control characters); strings without those are copied in one go.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn write_json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
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

impl CheckinStatus {
    /// The status as JSON, the same bytes as `serde_json::to_vec(self)` (tested), written
    /// directly: it is the body of every check-in's `201`, the service's hottest write path.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + 40 * self.applied_policies.len());
        out.extend_from_slice(
            br##"{"@odata.type":"#microsoft.graph.officeClientCheckinStatus","userId":"##,
        );
        write_json_str(&mut out, &self.user_id);
        out.extend_from_slice(br#","userPrincipalName":"#);
        write_json_opt_str(&mut out, self.user_principal_name.as_deref());
        out.extend_from_slice(br#","deviceName":"#);
        write_json_opt_str(&mut out, self.device_name.as_deref());
        out.extend_from_slice(br#","devicePlatform":"#);
        write_json_opt_str(&mut out, self.device_platform.as_deref());
        out.extend_from_slice(br#","devicePlatformVersion":"#);
        write_json_opt_str(&mut out, self.device_platform_version.as_deref());
        out.extend_from_slice(if self.was_successful {
            br#","wasSuccessful":true,"checkinDateTime":""#
        } else {
            br#","wasSuccessful":false,"checkinDateTime":""#
        });
        write_datetime(&mut out, self.checkin_date_time);
        out.extend_from_slice(br#"","errorMessage":"#);
        write_json_opt_str(&mut out, self.error_message.as_deref());
        out.extend_from_slice(br#","appliedPolicies":["#);
        for (i, id) in self.applied_policies.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_opt_str(&mut out, id.as_deref());
        }
        out.push(b']');
        if let Some(task) = &self.last_task_name {
            out.extend_from_slice(br#","lastTaskName":"#);
            write_json_str(&mut out, task);
        }
        out.push(b'}');
        out
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

    /// A report of one user of `tenant` for `device` at `at`, applying `applied` (for tests).
    #[cfg(test)]
    pub fn sample(tenant: &str, device: &str, at: OffsetDateTime, applied: &[uuid::Uuid]) -> Self {
        Self {
            tenant: TenantId::parse(tenant).expect("tenant id"),
            status: CheckinStatus {
                user_id: "00000000-0000-4000-8000-000000000001".into(),
                user_principal_name: Some("user@contoso.example".into()),
                device_name: Some(device.into()),
                device_platform: Some("Windows".into()),
                device_platform_version: None,
                was_successful: true,
                checkin_date_time: at,
                error_message: None,
                applied_policies: applied.iter().map(|id| Some(id.to_string())).collect(),
                last_task_name: None,
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status(
        text: &str,
        successful: bool,
        applied: Vec<Option<String>>,
        task: Option<String>,
    ) -> CheckinStatus {
        CheckinStatus {
            user_id: "00000000-0000-4000-8000-000000000001".into(),
            user_principal_name: Some(format!("{text}@contoso.example")),
            device_name: Some(text.to_string()),
            device_platform: None,
            device_platform_version: Some("10.0.22631".into()),
            was_successful: successful,
            checkin_date_time: OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_700)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            error_message: (!successful).then(|| format!("failed: {text}")),
            applied_policies: applied,
            last_task_name: task,
        }
    }

    #[test]
    fn checkin_status_bytes_are_serdes_bytes() {
        for s in [
            status("PC-1", true, vec![], None),
            status(
                "quote \" back \\ slash",
                false,
                vec![None, Some("a".into())],
                Some("Sync".into()),
            ),
            status(
                "tab\tnew\nline \u{1} \u{7f} é 日本",
                true,
                vec![Some("x\"y".into())],
                None,
            ),
            status("", false, vec![Some(String::new())], Some(String::new())),
        ] {
            let expected = serde_json::to_vec(&s).expect("serialize");
            assert_eq!(
                String::from_utf8_lossy(&s.to_json_bytes()),
                String::from_utf8_lossy(&expected)
            );
        }
    }

    #[test]
    fn datetimes_are_written_as_before() {
        for (nanos, text) in [
            (0, "1970-01-01T00:00:00.0000000Z"),
            (1_764_000_000_123_456_789, "2025-11-24T16:00:00.1234567Z"),
            (-62_135_596_800_000_000_000, "0001-01-01T00:00:00.0000000Z"),
        ] {
            let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("in range");
            assert_eq!(format_datetime(t), text);
        }
    }

    proptest! {
        #[test]
        fn any_text_is_written_as_serde_writes_it(text in any::<String>(), ok in any::<bool>(), secs in -62_135_596_800i64..253_402_300_799) {
            let mut s = status(&text, ok, vec![Some(text.clone()), None], Some(text.clone()));
            s.checkin_date_time = OffsetDateTime::from_unix_timestamp(secs).expect("in range");
            prop_assert_eq!(s.to_json_bytes(), serde_json::to_vec(&s).expect("serialize"));
            let old = {
                let t = s.checkin_date_time;
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
                    t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second(), t.nanosecond() / 100
                )
            };
            prop_assert_eq!(format_datetime(s.checkin_date_time), old);
        }
    }
}
