//! The OpenAPI document of the Office client API, served at `GET /cirrus/v1/openapi.json`.
//!
//! The route table of `/cirrus/v1/client/` and the document come from the same place: the
//! handlers in [`super::client`] carry `#[utoipa::path]` annotations, and [`routes`] registers
//! them through `utoipa_axum`'s `OpenApiRouter`, so a routed client operation cannot be missing
//! from the document. The schemas below document the wire shapes the handlers write by hand
//! (`EffectivePolicy::to_json`, `CheckinStatus::to_json`, the error envelope) and the check-in
//! body `model::input::client_checkin` accepts; they are never serialised. What keeps them
//! honest is `tests/client_openapi.rs`: it validates real responses against the served document
//! and probes the documented limits against the server.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Schema};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, client};
use crate::model::ConfigurationKind;
use crate::model::input::{
    MAX_APPLIED_POLICIES, MAX_DEVICE_NAME, MAX_ERROR_MESSAGE, MAX_SHORT_TEXT,
};

/// Where the document is served.
pub const PATH: &str = "/cirrus/v1/openapi.json";

/// The name of the security scheme every client operation requires.
pub const BEARER: &str = "bearer";

/// The client routes (state still to be supplied) and their OpenAPI document.
pub fn routes() -> (Router<Arc<AppState>>, Document) {
    OpenApiRouter::with_openapi(ClientApi::openapi())
        .routes(routes!(client::policy))
        .routes(routes!(client::checkins))
        .split_for_parts()
}

/// The document alone (as served).
pub fn document() -> Document {
    routes().1
}

/// `GET /cirrus/v1/openapi.json` (no token needed).
pub async fn serve(doc: Arc<Document>) -> Response {
    axum::Json(doc.as_ref()).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cirrus Office client API",
        description = "What Office clients call: their effective policy and their check-ins \
            (not part of Microsoft Graph; the Graph API is described at /openapi/graph.json). \
            Every call needs a delegated (user) bearer token of the tenant; application tokens \
            are refused. Every response carries `request-id` and `client-request-id` headers, \
            and every error Graph's error envelope. Behaviour and choices: docs/api.md."
    ),
    modifiers(&BearerAuth),
    tags((name = "client", description = "The Office client API, under /cirrus/v1/client/"))
)]
struct ClientApi;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A delegated (user) token of the tenant: `tid`, `oid`, `upn` or \
                         `preferred_username`, and `groups` (the user's group ids, which select \
                         the configurations). No Graph permission is needed.",
                    ))
                    .build(),
            ),
        );
    }
}

// ---- operation prose (used by the annotations in client.rs) ---------------------------------

pub const POLICY_SUMMARY: &str = "The calling user's effective Office policy";
pub const POLICY_DESCRIPTION: &str = "The configurations assigned to any of the groups in the \
    token's `groups` claim, highest priority (lowest number) first, and the effective settings: \
    the top-level keys of every `policyPayload` merged so that the highest-priority configuration \
    setting a key wins, the same separately for `userPreferencePayload`, and which configuration \
    supplied each key. A user in no targeted group gets an empty policy, not an error. The \
    response has an `ETag`; sending it back in `If-None-Match` answers `304` while nothing \
    changed. Changes made through Graph show in the next response.";
pub const CHECKINS_SUMMARY: &str = "Report a check-in of the calling user's device";
pub const CHECKINS_DESCRIPTION: &str = "Stores the report as the latest status of (user, device) \
    — device names compare case-insensitively — and answers `201` with the status as stored, \
    once it is durable. The service fills `userId` and `userPrincipalName` from the token and \
    `checkinDateTime` from its clock. The body is checked strictly: unknown properties, wrong \
    types, missing required properties, over-long values and malformed configuration ids are \
    `400`s naming the property. OData annotations (keys containing `@`) are ignored.";

// ---- schemas ----------------------------------------------------------------------------------
//
// These types only describe the wire. They derive serde solely so that utoipa can read their
// `#[serde]` attributes (wire names, and `deny_unknown_fields` → `additionalProperties: false`).

/// The calling user's effective Office policy.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientPolicy {
    /// The configurations assigned to any of the user's groups, highest priority (lowest
    /// number) first.
    pub configurations: Vec<ClientPolicyConfiguration>,
    /// The effective policy settings: each top-level key of the `policyPayload`s, with the
    /// value from the highest-priority configuration that sets it.
    pub policy_settings: BTreeMap<String, Value>,
    /// The same for the `userPreferencePayload`s.
    pub user_preference_settings: BTreeMap<String, Value>,
    pub sources: ClientPolicySources,
    /// The token's `oid` claim.
    #[schema(required = true)]
    pub user_id: Option<String>,
    /// The token's `upn` (or `preferred_username`) claim.
    #[schema(required = true)]
    pub user_principal_name: Option<String>,
}

/// One configuration that applies to the user.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientPolicyConfiguration {
    /// The configuration's id.
    pub id: uuid::Uuid,
    #[serde(rename = "@odata.type")]
    #[schema(schema_with = configuration_type)]
    pub odata_type: String,
    /// The configuration's `displayName`.
    #[schema(required = true)]
    pub display_name: Option<String>,
    /// Lower numbers win.
    pub priority: i32,
}

/// Which configuration (by id) supplied each effective setting.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientPolicySources {
    /// Setting key → id of the configuration whose `policyPayload` supplied it.
    pub policy_settings: BTreeMap<String, uuid::Uuid>,
    /// Setting key → id of the configuration whose `userPreferencePayload` supplied it.
    pub user_preference_settings: BTreeMap<String, uuid::Uuid>,
}

// Fields with `schema_with` are described by their schema function, which takes the limits from
// `model::input` (a doc comment on such a field would not reach the document).
/// What an Office client reports. `userId`, `userPrincipalName` and `checkinDateTime` are set by
/// the service and must not be sent.
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCheckin {
    #[serde(rename = "@odata.type")]
    #[schema(schema_with = checkin_status_type_input)]
    pub odata_type: Option<String>,
    #[schema(schema_with = device_name)]
    pub device_name: String,
    #[schema(schema_with = short_text)]
    pub device_platform: Option<String>,
    #[schema(schema_with = short_text)]
    pub device_platform_version: Option<String>,
    /// Whether the policy applied.
    pub was_successful: bool,
    #[schema(schema_with = error_message)]
    pub error_message: Option<String>,
    #[schema(schema_with = applied_policies_input)]
    pub applied_policies: Option<Vec<uuid::Uuid>>,
    #[schema(schema_with = short_text)]
    pub last_task_name: Option<String>,
}

/// A check-in status as stored (the same type Graph shows in `tenantCheckinStatuses` and
/// `checkinStatuses`).
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = microsoft::graph::officeClientCheckinStatus)]
pub struct OfficeClientCheckinStatus {
    #[serde(rename = "@odata.type")]
    #[schema(schema_with = checkin_status_type)]
    pub odata_type: String,
    /// The reporting user's id (the token's `oid`).
    pub user_id: String,
    /// The token's `upn` (or `preferred_username`).
    #[schema(required = true)]
    pub user_principal_name: Option<String>,
    #[schema(required = true)]
    pub device_name: Option<String>,
    #[schema(required = true)]
    pub device_platform: Option<String>,
    #[schema(required = true)]
    pub device_platform_version: Option<String>,
    pub was_successful: bool,
    /// When the service received the report (UTC).
    #[schema(value_type = String, format = DateTime)]
    pub checkin_date_time: String,
    #[schema(required = true)]
    pub error_message: Option<String>,
    /// The reported configuration ids, lower-case, without duplicates.
    pub applied_policies: Vec<uuid::Uuid>,
    /// Present when the client sent one.
    pub last_task_name: Option<String>,
}

/// Graph's error envelope, the body of every error response.
#[derive(serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = microsoft::graph::ODataError)]
pub struct ODataError {
    #[schema(inline)]
    pub error: MainError,
}

#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MainError {
    /// E.g. `BadRequest`, `InvalidAuthenticationToken`, `Forbidden`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    #[schema(inline)]
    pub inner_error: InnerError,
}

#[derive(serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InnerError {
    /// UTC, `yyyy-MM-ddTHH:mm:ss`.
    pub date: String,
    /// The `request-id` response header.
    #[serde(rename = "request-id")]
    pub request_id: String,
    /// The `client-request-id` response header (the client's, echoed, or the request id).
    #[serde(rename = "client-request-id")]
    pub client_request_id: String,
}

// ---- schemas built from the model and the parser's limits -----------------------------------

fn configuration_type() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(
            ConfigurationKind::ALL.map(ConfigurationKind::odata_type),
        ))
        .description(Some("The configuration's type."))
        .into()
}

const CHECKIN_STATUS_TYPE: &str = "#microsoft.graph.officeClientCheckinStatus";

fn checkin_status_type() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([CHECKIN_STATUS_TYPE]))
        .into()
}

fn checkin_status_type_input() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([CHECKIN_STATUS_TYPE]))
        .description(Some("Optional; when sent, the status type."))
        .into()
}

/// A string of at most `max` characters, or null.
fn bounded_text(max: usize, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .max_length(Some(max))
        .description(Some(description))
        .into()
}

fn device_name() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_DEVICE_NAME))
        .description(Some(
            "The device's name: not blank, no control characters. With the user, it keys the \
             stored status (case-insensitively).",
        ))
        .into()
}

fn short_text() -> RefOr<Schema> {
    bounded_text(MAX_SHORT_TEXT, "No control characters.")
}

fn error_message() -> RefOr<Schema> {
    bounded_text(
        MAX_ERROR_MESSAGE,
        "What went wrong, when it did (may span lines).",
    )
}

fn applied_policies_input() -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
        .max_items(Some(MAX_APPLIED_POLICIES))
        .description(Some(
            "The ids of the configurations the client applied (duplicates are dropped).",
        ))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_requires_the_bearer_scheme() {
        let doc = serde_json::to_value(document()).expect("serialise");
        let scheme = &doc["components"]["securitySchemes"][BEARER];
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{ BEARER: [] }]),
                    "{method} {path}"
                );
            }
        }
    }
}
