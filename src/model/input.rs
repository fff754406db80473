//! Strict parsing of request bodies into the domain types. Every rejection names the property
//! (as a JSON path) and says what was expected, so a caller can fix the request without guessing.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{
    AssignmentTarget, CheckinStatus, ConfigurationKind, UserCheckinSummary, unqualified_type_name,
};
use crate::error::{GraphError, GraphResult};

fn bad(msg: impl Into<String>) -> GraphError {
    GraphError::BadRequest(msg.into())
}

/// How a JSON value is described in error messages.
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn as_object<'a>(v: &'a Value, what: &str) -> GraphResult<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        bad(format!(
            "{what} must be a JSON object; got {}.",
            describe(v)
        ))
    })
}

fn unknown_property(name: &str, type_name: &str) -> GraphError {
    bad(format!(
        "The property '{name}' does not exist on type 'microsoft.graph.{type_name}'. Make sure to only use property names that are defined by the type."
    ))
}

/// Instance and property annotations (`@odata.context`, `displayName@odata.type`, ...) are
/// ignored on input: clients round-trip GET bodies into PATCH.
fn is_annotation(key: &str) -> bool {
    key.contains('@')
}

pub fn string_opt(v: &Value, path: &str) -> GraphResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(bad(format!(
            "The property '{path}' must be a string or null (Edm.String); got {}.",
            describe(other)
        ))),
    }
}

fn string_required(v: &Value, path: &str) -> GraphResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(not_a_string(path, other)),
    }
}

fn not_a_string(path: &str, v: &Value) -> GraphError {
    bad(format!(
        "The property '{path}' must be a string (Edm.String, not nullable); got {}.",
        describe(v)
    ))
}

pub fn int32(v: &Value, path: &str) -> GraphResult<i32> {
    let Value::Number(n) = v else {
        return Err(bad(format!(
            "The property '{path}' must be an Edm.Int32 number; got {}.",
            describe(v)
        )));
    };
    let Some(i) = n.as_i64() else {
        return Err(bad(format!(
            "The property '{path}' must be an Edm.Int32 integer; got {n}."
        )));
    };
    i32::try_from(i).map_err(|_| {
        bad(format!(
            "The value {i} of property '{path}' is out of range for Edm.Int32 ({}..={}).",
            i32::MIN,
            i32::MAX
        ))
    })
}

fn boolean(v: &Value, path: &str) -> GraphResult<bool> {
    v.as_bool().ok_or_else(|| {
        bad(format!(
            "The property '{path}' must be a boolean (Edm.Boolean); got {}.",
            describe(v)
        ))
    })
}

fn datetime(v: &Value, path: &str) -> GraphResult<OffsetDateTime> {
    let Value::String(s) = v else {
        return Err(bad(format!(
            "The property '{path}' must be an Edm.DateTimeOffset string such as '2024-01-31T12:00:00Z'; got {}.",
            describe(v)
        )));
    };
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        bad(format!(
            "The property '{path}' must be an ISO 8601 date and time with an offset, such as '2024-01-31T12:00:00Z'; got '{s}'."
        ))
    })
}

fn array<'a>(v: &'a Value, path: &str) -> GraphResult<&'a Vec<Value>> {
    v.as_array().ok_or_else(|| {
        bad(format!(
            "The property '{path}' must be a JSON array; got {}.",
            describe(v)
        ))
    })
}

/// Accepts a GUID in any of the usual spellings, with or without braces.
pub fn parse_guid(s: &str) -> Option<Uuid> {
    let t = s.trim_start_matches('{').trim_end_matches('}');
    if t.len() != 36 {
        return None;
    }
    Uuid::parse_str(t).ok()
}

/// An `@odata.type` value, which must be a string.
fn odata_type_str<'a>(v: &'a Value, path: &str) -> GraphResult<&'a str> {
    v.as_str()
        .ok_or_else(|| bad(format!("'{path}' must be a string; got {}.", describe(v))))
}

/// Checks `@odata.type` against the one type allowed at this position.
fn expect_type(v: &Value, path: &str, expected: &str) -> GraphResult<()> {
    let s = odata_type_str(v, path)?;
    match unqualified_type_name(s) {
        Some(name) if name == expected => Ok(()),
        _ => Err(bad(format!(
            "The type '{s}' in '{path}' is not valid here; expected '#microsoft.graph.{expected}'."
        ))),
    }
}

// ---- stream properties ----------------------------------------------------------------------

const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A payload holds JSON settings: the bytes must be a UTF-8 JSON object.
pub fn validate_payload_bytes(bytes: &[u8], path: &str) -> GraphResult<()> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| bad(format!("The content of '{path}' is not valid UTF-8 text.")))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("The content of '{path}' is not valid JSON: {e}.")))?;
    if !value.is_object() {
        return Err(bad(format!(
            "The content of '{path}' must be a JSON object of settings; got {}.",
            describe(&value)
        )));
    }
    Ok(())
}

/// A stream property sent inline: base64 (standard or URL-safe alphabet, padding optional)
/// of a UTF-8 JSON object, or null to clear it.
pub fn payload(v: &Value, path: &str) -> GraphResult<Option<Vec<u8>>> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s,
        other => {
            return Err(bad(format!(
                "The property '{path}' must be a base64 string or null (Edm.Stream); got {}.",
                describe(other)
            )));
        }
    };
    let engine = if s.contains(['-', '_']) {
        &URL_LENIENT
    } else {
        &STD_LENIENT
    };
    let bytes = engine
        .decode(s)
        .map_err(|e| bad(format!("The property '{path}' is not valid base64: {e}.")))?;
    validate_payload_bytes(&bytes, path)?;
    Ok(Some(bytes))
}

// ---- complex types --------------------------------------------------------------------------

pub fn user_checkin_summary(v: &Value, path: &str) -> GraphResult<UserCheckinSummary> {
    let obj = v.as_object().ok_or_else(|| {
        bad(format!(
            "The property '{path}' must be an officeUserCheckinSummary object; got {}.",
            describe(v)
        ))
    })?;
    let mut summary = UserCheckinSummary::default();
    for (key, value) in obj {
        let p = format!("{path}.{key}");
        match key.as_str() {
            "@odata.type" => expect_type(value, &p, "officeUserCheckinSummary")?,
            k if is_annotation(k) => {}
            "succeededUserCount" => summary.succeeded_user_count = count(value, &p)?,
            "failedUserCount" => summary.failed_user_count = count(value, &p)?,
            other => return Err(unknown_property(other, "officeUserCheckinSummary")),
        }
    }
    Ok(summary)
}

fn count(v: &Value, path: &str) -> GraphResult<i32> {
    let n = int32(v, path)?;
    if n < 0 {
        return Err(bad(format!(
            "The property '{path}' is a count and cannot be negative; got {n}."
        )));
    }
    Ok(n)
}

pub fn checkin_status(v: &Value, path: &str) -> GraphResult<CheckinStatus> {
    let obj = v.as_object().ok_or_else(|| {
        bad(format!(
            "'{path}' must be an officeClientCheckinStatus object; got {}.",
            describe(v)
        ))
    })?;
    let (mut user_id, mut was_successful, mut checkin) = (None, None, None);
    let mut s = CheckinStatus {
        user_id: String::new(),
        user_principal_name: None,
        device_name: None,
        device_platform: None,
        device_platform_version: None,
        was_successful: false,
        checkin_date_time: OffsetDateTime::UNIX_EPOCH,
        error_message: None,
        applied_policies: Vec::new(),
        last_task_name: None,
    };
    for (key, value) in obj {
        let p = format!("{path}.{key}");
        match key.as_str() {
            "@odata.type" => expect_type(value, &p, "officeClientCheckinStatus")?,
            k if is_annotation(k) => {}
            "userId" => user_id = Some(string_required(value, &p)?),
            "userPrincipalName" => s.user_principal_name = string_opt(value, &p)?,
            "deviceName" => s.device_name = string_opt(value, &p)?,
            "devicePlatform" => s.device_platform = string_opt(value, &p)?,
            "devicePlatformVersion" => s.device_platform_version = string_opt(value, &p)?,
            "wasSuccessful" => was_successful = Some(boolean(value, &p)?),
            "checkinDateTime" => checkin = Some(datetime(value, &p)?),
            "errorMessage" => s.error_message = string_opt(value, &p)?,
            "lastTaskName" => s.last_task_name = string_opt(value, &p)?,
            "appliedPolicies" => {
                s.applied_policies = array(value, &p)?
                    .iter()
                    .enumerate()
                    .map(|(i, item)| string_opt(item, &format!("{p}[{i}]")))
                    .collect::<GraphResult<_>>()?;
            }
            other => return Err(unknown_property(other, "officeClientCheckinStatus")),
        }
    }
    let missing = |name: &str| {
        bad(format!(
            "'{path}' is missing the required property '{name}'."
        ))
    };
    s.user_id = user_id.ok_or_else(|| missing("userId"))?;
    s.was_successful = was_successful.ok_or_else(|| missing("wasSuccessful"))?;
    s.checkin_date_time = checkin.ok_or_else(|| missing("checkinDateTime"))?;
    Ok(s)
}

pub fn checkin_statuses(v: &Value, path: &str) -> GraphResult<Vec<CheckinStatus>> {
    array(v, path)?
        .iter()
        .enumerate()
        .map(|(i, item)| checkin_status(item, &format!("{path}[{i}]")))
        .collect()
}

pub fn assignment_target(v: &Value, path: &str) -> GraphResult<AssignmentTarget> {
    let obj = v.as_object().ok_or_else(|| {
        bad(format!(
            "The property '{path}' must be an officeConfigurationGroupAssignmentTarget object; got {}.",
            describe(v)
        ))
    })?;
    if let Some(t) = obj.get("@odata.type") {
        let s = odata_type_str(t, &format!("{path}.@odata.type"))?;
        match unqualified_type_name(s) {
            Some("officeConfigurationGroupAssignmentTarget") => {}
            Some("officeConfigurationAssignmentTarget") => {
                return Err(bad(format!(
                    "'{path}' names the abstract type 'microsoft.graph.officeConfigurationAssignmentTarget'; use '#microsoft.graph.officeConfigurationGroupAssignmentTarget' with a 'groupId'."
                )));
            }
            _ => {
                return Err(bad(format!(
                    "The type '{s}' in '{path}.@odata.type' is not a known assignment target type; expected '#microsoft.graph.officeConfigurationGroupAssignmentTarget'."
                )));
            }
        }
    }
    let mut group_id = None;
    for (key, value) in obj {
        match key.as_str() {
            k if is_annotation(k) => {}
            "groupId" => {
                let p = format!("{path}.groupId");
                let s = string_required(value, &p)?;
                group_id = Some(parse_guid(&s).ok_or_else(|| {
                    bad(format!(
                        "The property '{p}' must be the GUID of an Entra ID group; got '{s}'."
                    ))
                })?);
            }
            other => {
                return Err(unknown_property(
                    other,
                    "officeConfigurationGroupAssignmentTarget",
                ));
            }
        }
    }
    let group_id = group_id.ok_or_else(|| {
        bad(format!(
            "'{path}' is missing the required property 'groupId'."
        ))
    })?;
    Ok(AssignmentTarget::Group { group_id })
}

/// An `officeClientConfigurationAssignment` in a request body.
#[derive(Clone, Debug, PartialEq)]
pub struct AssignmentInput {
    /// A client-chosen id (kept by `assign`, as the docs' example shows); ignored on POST.
    pub id: Option<Uuid>,
    pub target: AssignmentTarget,
}

/// What may appear in a PATCH of an assignment: the target (or nothing).
pub fn assignment(
    v: &Value,
    path: &str,
    target_required: bool,
) -> GraphResult<(Option<Uuid>, Option<AssignmentTarget>)> {
    let obj = as_object(
        v,
        if path.is_empty() {
            "The request body"
        } else {
            path
        },
    )?;
    let at = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let (mut id, mut target) = (None, None);
    for (key, value) in obj {
        match key.as_str() {
            "@odata.type" => expect_type(value, &at(key), "officeClientConfigurationAssignment")?,
            k if is_annotation(k) => {}
            "id" => {
                let p = at("id");
                let s = string_required(value, &p)?;
                id = Some(parse_guid(&s).ok_or_else(|| {
                    bad(format!("The property '{p}' must be a GUID; got '{s}'."))
                })?);
            }
            "target" => {
                if value.is_null() {
                    return Err(bad(format!(
                        "The property '{}' cannot be null.",
                        at("target")
                    )));
                }
                target = Some(assignment_target(value, &at("target"))?);
            }
            other => {
                return Err(unknown_property(
                    other,
                    "officeClientConfigurationAssignment",
                ));
            }
        }
    }
    if target_required && target.is_none() {
        let what = if path.is_empty() {
            "The request body".to_string()
        } else {
            format!("'{path}'")
        };
        return Err(bad(format!(
            "{what} is missing the required property 'target'."
        )));
    }
    Ok((id, target))
}

pub fn assignment_input(v: &Value, path: &str) -> GraphResult<AssignmentInput> {
    let (id, target) = assignment(v, path, true)?;
    let target = target.ok_or_else(|| bad("missing target"))?;
    Ok(AssignmentInput { id, target })
}

fn assignment_list(v: &Value, path: &str) -> GraphResult<Vec<AssignmentInput>> {
    array(v, path)?
        .iter()
        .enumerate()
        .map(|(i, item)| assignment_input(item, &format!("{path}[{i}]")))
        .collect()
}

// ---- entities -------------------------------------------------------------------------------

/// The properties of an `officeClientConfiguration` in a POST or PATCH body. `None` = absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigurationInput {
    pub kind: Option<ConfigurationKind>,
    pub id: Option<String>,
    pub display_name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub priority: Option<i32>,
    pub policy_payload: Option<Option<Vec<u8>>>,
    pub user_preference_payload: Option<Option<Vec<u8>>>,
    pub checkin_statuses: Option<Vec<CheckinStatus>>,
    pub user_checkin_summary: Option<UserCheckinSummary>,
    /// Deep insert on POST.
    pub assignments: Option<Vec<AssignmentInput>>,
}

/// Resolves the body's `@odata.type` on a create: it must name a concrete derived type.
fn configuration_kind_for_create(body: &Map<String, Value>) -> GraphResult<ConfigurationKind> {
    let concrete = "'#microsoft.graph.windowsOfficeClientConfiguration' or '#microsoft.graph.windowsOfficeClientSecurityConfiguration'";
    let Some(t) = body.get("@odata.type") else {
        return Err(bad(format!(
            "The type 'microsoft.graph.officeClientConfiguration' is abstract: the request body must name a concrete type in '@odata.type': {concrete}."
        )));
    };
    let s = t.as_str().ok_or_else(|| {
        bad(format!(
            "'@odata.type' must be a string; got {}.",
            describe(t)
        ))
    })?;
    match unqualified_type_name(s) {
        Some(name) => match ConfigurationKind::from_type_name(name) {
            Some(kind) => Ok(kind),
            None if name == "officeClientConfiguration" => Err(bad(format!(
                "The type 'microsoft.graph.officeClientConfiguration' is abstract and cannot be created; use {concrete}."
            ))),
            None => Err(bad(format!(
                "The type '{s}' is not a type derived from 'microsoft.graph.officeClientConfiguration'; use {concrete}."
            ))),
        },
        None => Err(bad(format!(
            "The type '{s}' is not a known type; use {concrete}."
        ))),
    }
}

/// Parses a configuration body. `stored` is the stored type on PATCH (a body may omit
/// `@odata.type` but may not change it) and `None` on POST.
pub fn configuration(
    v: &Value,
    stored: Option<ConfigurationKind>,
) -> GraphResult<ConfigurationInput> {
    let body = as_object(v, "The request body")?;
    let kind = match stored {
        None => configuration_kind_for_create(body)?,
        Some(stored) => {
            if let Some(t) = body.get("@odata.type") {
                let s = odata_type_str(t, "@odata.type")?;
                if unqualified_type_name(s) != Some(stored.type_name()) {
                    return Err(bad(format!(
                        "The type of an existing configuration cannot be changed: it is '{}', the request names '{s}'.",
                        stored.odata_type()
                    )));
                }
            }
            stored
        }
    };
    let type_name = kind.type_name();
    let mut input = ConfigurationInput {
        kind: Some(kind),
        ..Default::default()
    };
    for (key, value) in body {
        match key.as_str() {
            "@odata.type" => {}
            k if is_annotation(k) => {}
            "id" => input.id = Some(string_required(value, "id")?),
            "displayName" => input.display_name = Some(string_opt(value, "displayName")?),
            "description" => input.description = Some(string_opt(value, "description")?),
            "priority" => input.priority = Some(int32(value, "priority")?),
            "policyPayload" => input.policy_payload = Some(payload(value, "policyPayload")?),
            "userPreferencePayload" => {
                input.user_preference_payload = Some(payload(value, "userPreferencePayload")?)
            }
            "checkinStatuses" => {
                input.checkin_statuses = Some(checkin_statuses(value, "checkinStatuses")?)
            }
            "userCheckinSummary" => {
                input.user_checkin_summary =
                    Some(user_checkin_summary(value, "userCheckinSummary")?)
            }
            // Server-maintained: accepted (clients round-trip GET bodies) and ignored.
            "lastModifiedDateTime" => {}
            "assignments" => {
                if stored.is_some() {
                    return Err(bad(
                        "The navigation property 'assignments' cannot be changed with PATCH; use the 'assign' action or the assignments collection.",
                    ));
                }
                input.assignments = Some(assignment_list(value, "assignments")?);
            }
            other => return Err(unknown_property(other, type_name)),
        }
    }
    Ok(input)
}

/// The properties of the `officeConfiguration` singleton in a PATCH body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OfficeConfigurationInput {
    pub id: Option<String>,
    pub tenant_checkin_statuses: Option<Vec<CheckinStatus>>,
    pub tenant_user_checkin_summary: Option<UserCheckinSummary>,
}

pub fn office_configuration(v: &Value) -> GraphResult<OfficeConfigurationInput> {
    let body = as_object(v, "The request body")?;
    let mut input = OfficeConfigurationInput::default();
    for (key, value) in body {
        match key.as_str() {
            "@odata.type" => expect_type(value, "@odata.type", "officeConfiguration")?,
            k if is_annotation(k) => {}
            "id" => input.id = Some(string_required(value, "id")?),
            "tenantCheckinStatuses" => {
                input.tenant_checkin_statuses =
                    Some(checkin_statuses(value, "tenantCheckinStatuses")?)
            }
            "tenantUserCheckinSummary" => {
                input.tenant_user_checkin_summary =
                    Some(user_checkin_summary(value, "tenantUserCheckinSummary")?)
            }
            "clientConfigurations" => {
                return Err(bad(
                    "The navigation property 'clientConfigurations' cannot be set with PATCH; create configurations with POST /officeConfiguration/clientConfigurations.",
                ));
            }
            other => return Err(unknown_property(other, "officeConfiguration")),
        }
    }
    Ok(input)
}

// ---- action parameters ----------------------------------------------------------------------

fn unknown_parameter(name: &str, action: &str) -> GraphError {
    bad(format!(
        "The parameter '{name}' is not a parameter of the action 'microsoft.graph.{action}'."
    ))
}

/// Body of `assign`: `{"officeConfigurationAssignments": [...]}`.
pub fn assign_parameters(v: &Value) -> GraphResult<Vec<AssignmentInput>> {
    let body = as_object(v, "The request body")?;
    let mut list = None;
    for (key, value) in body {
        match key.as_str() {
            k if is_annotation(k) => {}
            "officeConfigurationAssignments" => {
                list = Some(assignment_list(value, "officeConfigurationAssignments")?)
            }
            other => return Err(unknown_parameter(other, "assign")),
        }
    }
    list.ok_or_else(|| bad("The action 'assign' requires the parameter 'officeConfigurationAssignments' (an array of officeClientConfigurationAssignment)."))
}

/// Body of `updatePriorities`: two parallel arrays.
pub fn update_priorities_parameters(v: &Value) -> GraphResult<(Vec<String>, Vec<i32>)> {
    let body = as_object(v, "The request body")?;
    let (mut ids, mut prios) = (None, None);
    for (key, value) in body {
        match key.as_str() {
            k if is_annotation(k) => {}
            "officeConfigurationPolicyIds" => {
                let p = "officeConfigurationPolicyIds";
                ids = Some(
                    array(value, p)?
                        .iter()
                        .enumerate()
                        .map(|(i, item)| string_required(item, &format!("{p}[{i}]")))
                        .collect::<GraphResult<Vec<_>>>()?,
                );
            }
            "officeConfigurationPriorities" => {
                let p = "officeConfigurationPriorities";
                prios = Some(
                    array(value, p)?
                        .iter()
                        .enumerate()
                        .map(|(i, item)| int32(item, &format!("{p}[{i}]")))
                        .collect::<GraphResult<Vec<_>>>()?,
                );
            }
            other => return Err(unknown_parameter(other, "updatePriorities")),
        }
    }
    let ids = ids.ok_or_else(|| {
        bad("The action 'updatePriorities' requires the parameter 'officeConfigurationPolicyIds'.")
    })?;
    let prios = prios.ok_or_else(|| {
        bad("The action 'updatePriorities' requires the parameter 'officeConfigurationPriorities'.")
    })?;
    Ok((ids, prios))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_requires_concrete_type() {
        let err = configuration(&json!({"displayName": "x"}), None).unwrap_err();
        assert!(err.to_string().contains("abstract"), "{err}");
        let err = configuration(
            &json!({"@odata.type": "#microsoft.graph.officeClientConfiguration"}),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("abstract"), "{err}");
        let err =
            configuration(&json!({"@odata.type": "#microsoft.graph.user"}), None).unwrap_err();
        assert!(err.to_string().contains("not a type derived"), "{err}");
        let ok = configuration(
            &json!({"@odata.type": "microsoft.graph.windowsOfficeClientSecurityConfiguration"}),
            None,
        )
        .unwrap();
        assert_eq!(ok.kind, Some(ConfigurationKind::WindowsSecurity));
    }

    #[test]
    fn patch_cannot_change_type() {
        let err = configuration(
            &json!({"@odata.type": "#microsoft.graph.windowsOfficeClientSecurityConfiguration"}),
            Some(ConfigurationKind::Windows),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot be changed"), "{err}");
    }

    #[test]
    fn int32_bounds_and_types() {
        assert_eq!(int32(&json!(2147483647), "p").unwrap(), i32::MAX);
        assert!(
            int32(&json!(2147483648i64), "p")
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert!(int32(&json!(1.5), "p").is_err());
        assert!(int32(&json!("1"), "p").is_err());
    }

    #[test]
    fn unknown_property_names_type() {
        let err = configuration(
            &json!({"@odata.type": "#microsoft.graph.windowsOfficeClientConfiguration", "foo": 1}),
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(
                "'foo' does not exist on type 'microsoft.graph.windowsOfficeClientConfiguration'"
            ),
            "{err}"
        );
    }

    #[test]
    fn payload_accepts_both_alphabets_and_no_padding() {
        // {"a":"??"} encodes with '+'/'/' characters in the standard alphabet.
        let raw = br#"{"k":"~~~???"}"#;
        let std = base64::engine::general_purpose::STANDARD.encode(raw);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(payload(&json!(std), "p").unwrap().unwrap(), raw);
        assert_eq!(payload(&json!(url), "p").unwrap().unwrap(), raw);
        assert_eq!(payload(&json!(null), "p").unwrap(), None);
    }

    #[test]
    fn payload_rejects_non_object_and_bad_base64() {
        let arr = base64::engine::general_purpose::STANDARD.encode(b"[1,2]");
        assert!(
            payload(&json!(arr), "p")
                .unwrap_err()
                .to_string()
                .contains("JSON object")
        );
        assert!(
            payload(&json!("<Unknown Primitive Type Edm.Stream>"), "p")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
        let bin = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe]);
        assert!(
            payload(&json!(bin), "p")
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        let notjson = base64::engine::general_purpose::STANDARD.encode(b"{nope");
        assert!(
            payload(&json!(notjson), "p")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn target_rules() {
        let g = "3c6f3e3a-6f4e-4e7e-9d51-4a7d1c0e0001";
        let t = assignment_target(&json!({"@odata.type": "microsoft.graph.officeConfigurationGroupAssignmentTarget", "groupId": g}), "target").unwrap();
        assert_eq!(t.group_id().to_string(), g);
        assert!(
            assignment_target(
                &json!({"@odata.type": "#microsoft.graph.officeConfigurationAssignmentTarget"}),
                "target"
            )
            .unwrap_err()
            .to_string()
            .contains("abstract")
        );
        assert!(assignment_target(&json!({"groupId": "not-a-guid"}), "target").is_err());
        assert!(
            assignment_target(&json!({}), "target")
                .unwrap_err()
                .to_string()
                .contains("groupId")
        );
        assert!(
            assignment_input(&json!({"id": g}), "x")
                .unwrap_err()
                .to_string()
                .contains("target")
        );
    }

    #[test]
    fn checkin_status_requires_non_nullable_fields() {
        let err = checkin_status(&json!({"userId": "u", "wasSuccessful": true}), "s").unwrap_err();
        assert!(err.to_string().contains("checkinDateTime"), "{err}");
        let ok = checkin_status(
            &json!({"userId": "u", "wasSuccessful": true, "checkinDateTime": "2024-01-01T00:00:00+02:00", "lastTaskName": "t"}),
            "s",
        )
        .unwrap();
        assert_eq!(ok.last_task_name.as_deref(), Some("t"));
    }

    #[test]
    fn update_priorities_parameters_require_both_arrays() {
        assert!(
            update_priorities_parameters(&json!({"officeConfigurationPolicyIds": []})).is_err()
        );
        assert!(
            update_priorities_parameters(&json!({"ids": [], "officeConfigurationPriorities": []}))
                .is_err()
        );
        let (ids, p) = update_priorities_parameters(
            &json!({"officeConfigurationPolicyIds": ["a"], "officeConfigurationPriorities": [3]}),
        )
        .unwrap();
        assert_eq!((ids, p), (vec!["a".to_string()], vec![3]));
    }
}

/// What an Office client reports in `POST /cirrus/v1/client/checkins` (DESIGN §3); the server
/// adds the user and the time.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientCheckinInput {
    pub device_name: String,
    pub device_platform: Option<String>,
    pub device_platform_version: Option<String>,
    pub was_successful: bool,
    pub error_message: Option<String>,
    /// Configuration ids, lower-case, without duplicates, in the order first reported.
    pub applied_policies: Vec<String>,
    pub last_task_name: Option<String>,
}

/// Limits on a client report, so one device cannot store unbounded data per check-in.
pub const MAX_DEVICE_NAME: usize = 256;
pub const MAX_SHORT_TEXT: usize = 256;
pub const MAX_ERROR_MESSAGE: usize = 4096;
pub const MAX_APPLIED_POLICIES: usize = 500;

fn bounded(value: Option<String>, path: &str, max: usize) -> GraphResult<Option<String>> {
    match value {
        Some(s) if s.chars().count() > max => Err(bad(format!(
            "The property '{path}' is longer than {max} characters."
        ))),
        Some(s) if s.chars().any(char::is_control) => Err(bad(format!(
            "The property '{path}' must not contain control characters."
        ))),
        other => Ok(other),
    }
}

/// Parses a client check-in body strictly: unknown properties, wrong types, missing required
/// properties, over-long values and malformed configuration ids are all 400s naming the property.
pub fn client_checkin(v: &Value) -> GraphResult<ClientCheckinInput> {
    let obj = as_object(v, "The check-in")?;
    let mut device_name = None;
    let mut was_successful = None;
    let mut input = ClientCheckinInput {
        device_name: String::new(),
        device_platform: None,
        device_platform_version: None,
        was_successful: false,
        error_message: None,
        applied_policies: Vec::new(),
        last_task_name: None,
    };
    for (key, value) in obj {
        let p = key.as_str();
        match p {
            "@odata.type" => expect_type(value, p, "officeClientCheckinStatus")?,
            k if is_annotation(k) => {}
            "deviceName" => {
                device_name = bounded(Some(string_required(value, p)?), p, MAX_DEVICE_NAME)?
            }
            "devicePlatform" => {
                input.device_platform = bounded(string_opt(value, p)?, p, MAX_SHORT_TEXT)?
            }
            "devicePlatformVersion" => {
                input.device_platform_version = bounded(string_opt(value, p)?, p, MAX_SHORT_TEXT)?
            }
            "wasSuccessful" => was_successful = Some(boolean(value, p)?),
            "errorMessage" => {
                input.error_message = match string_opt(value, p)? {
                    // Multi-line error text is normal; only length is bounded.
                    Some(s) if s.chars().count() > MAX_ERROR_MESSAGE => {
                        return Err(bad(format!(
                            "The property '{p}' is longer than {MAX_ERROR_MESSAGE} characters."
                        )));
                    }
                    other => other,
                }
            }
            "lastTaskName" => {
                input.last_task_name = bounded(string_opt(value, p)?, p, MAX_SHORT_TEXT)?
            }
            "appliedPolicies" => {
                if value.is_null() {
                    continue;
                }
                let items = array(value, p)?;
                if items.len() > MAX_APPLIED_POLICIES {
                    return Err(bad(format!(
                        "The property '{p}' lists {} policies; at most {MAX_APPLIED_POLICIES} are accepted.",
                        items.len()
                    )));
                }
                for (i, item) in items.iter().enumerate() {
                    // The item's path is only formatted for an error message.
                    let Some(id) = item.as_str() else {
                        return Err(not_a_string(&format!("{p}[{i}]"), item));
                    };
                    let Some(id) = parse_guid(id) else {
                        let path = format!("{p}[{i}]");
                        return Err(bad(format!(
                            "The property '{path}' must be the id (a GUID) of an officeClientConfiguration; got '{id}'."
                        )));
                    };
                    let id = id.to_string();
                    if !input.applied_policies.contains(&id) {
                        input.applied_policies.push(id);
                    }
                }
            }
            "userId" | "userPrincipalName" | "checkinDateTime" => {
                return Err(bad(format!(
                    "The property '{p}' is set by the service (from the token and its clock); do not send it."
                )));
            }
            other => return Err(unknown_property(other, "officeClientCheckinStatus")),
        }
    }
    let missing = |name: &str| {
        bad(format!(
            "The check-in is missing the required property '{name}'."
        ))
    };
    input.device_name = device_name.ok_or_else(|| missing("deviceName"))?;
    if input.device_name.trim().is_empty() {
        return Err(bad("The property 'deviceName' must not be empty."));
    }
    input.was_successful = was_successful.ok_or_else(|| missing("wasSuccessful"))?;
    Ok(input)
}
