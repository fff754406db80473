//! Thin handlers: each turns an HTTP request for one Graph operation into a call of the
//! domain [`Service`](crate::domain::Service) and writes the OData response. Routing,
//! authentication and authorisation happen once, in [`graph`], before any handler runs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::batch;
use super::body::{read_json, read_stream};
use super::reads;
use super::route::{self, Target};
use super::{AppState, RequestIds};
use crate::auth::Principal;
use crate::error::{GraphError, GraphResult};
use crate::model::{Assignment, PayloadKind, etag, input};
use crate::odata::{
    self, Context, JSON_CONTENT_TYPE, ODATA_VERSION, QueryOptions, ReturnPreference,
};

/// Everything a handler needs to know about the request besides its body.
pub(super) struct Ctx<'a> {
    pub state: &'a AppState,
    pub principal: &'a Principal,
    pub headers: &'a HeaderMap,
    pub query: &'a QueryOptions,
    /// The request path as sent (for `@odata.nextLink`).
    pub path: &'a str,
    /// The public base URL (`scheme://host[:port]`).
    pub base: String,
    pub service_root: String,
}

impl Ctx<'_> {
    pub fn context(&self, fragment: &str) -> String {
        Context {
            service_root: &self.service_root,
        }
        .url(fragment)
    }

    fn configuration_url(&self, id: Uuid) -> String {
        format!(
            "{}/officeConfiguration/clientConfigurations/{id}",
            self.service_root
        )
    }

    fn limit(&self) -> usize {
        self.state.config.max_body_bytes
    }

    fn if_match(&self) -> GraphResult<Option<crate::domain::IfMatch>> {
        odata::if_match(self.headers)
    }

    pub fn tenant(&self) -> &crate::model::TenantId {
        &self.principal.tenant
    }
}

/// The Graph entry point: every `/beta/...` request comes through here.
pub async fn graph(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match handle(&state, req).await {
        Ok(res) => res,
        Err(err) => err.into_response(),
    }
}

async fn handle(state: &AppState, req: Request) -> GraphResult<Response> {
    let (parts, body) = req.into_parts();
    let routed = route::parse(parts.uri.path());
    // Public documents need no token; everything else authenticates before anything else is
    // revealed (including whether a path exists).
    if let Ok(target) = &routed
        && target.access(&parts.method).is_none()
    {
        if !target.allows(&parts.method) {
            return Err(GraphError::MethodNotAllowed {
                allow: target.allow(),
            });
        }
        let service_root = service_root(state, &parts.headers);
        return public(target, &service_root);
    }
    let principal = state.auth.authenticate(&parts.headers).await?;
    let target = routed?;
    if !target.allows(&parts.method) {
        return Err(GraphError::MethodNotAllowed {
            allow: target.allow(),
        });
    }
    if let Some(access) = target.access(&parts.method) {
        principal.authorize(access)?;
    }
    // Throttling, before anything runs (a refused request has no effect). The `$batch` POST
    // itself is not counted: each of its sub-requests comes back through here and counts.
    if !matches!(target, Target::Batch) {
        state.throttle.check(
            principal.tenant.as_str(),
            principal.app_id.as_deref(),
            super::throttle::is_write(&parts.method),
        )?;
    }
    let query = QueryOptions::parse(parts.uri.query())?;
    let _ids = parts.extensions.get::<RequestIds>();
    let base = public_base(state, &parts.headers);
    let ctx = Ctx {
        state,
        principal: &principal,
        headers: &parts.headers,
        query: &query,
        path: parts.uri.path(),
        service_root: format!("{base}/beta"),
        base,
    };
    let svc = &state.service;
    let m = &parts.method;
    match target {
        Target::ServiceRoot | Target::Metadata => unreachable_public(),
        Target::Batch => batch::run(&ctx, &parts.extensions, body).await,
        Target::ClientConfigurationsCount { cast } => reads::count_configurations(&ctx, cast).await,
        Target::AssignmentsCount(config) => reads::count_assignments(&ctx, config).await,
        Target::OfficeConfiguration if m == Method::GET => reads::office_configuration(&ctx).await,
        Target::OfficeConfiguration => {
            let parsed =
                input::office_configuration(&read_json(ctx.headers, body, ctx.limit()).await?)?;
            let value = svc
                .update_office_configuration(ctx.tenant(), parsed, ctx.if_match()?.as_ref())
                .await?;
            Ok(updated(
                &ctx,
                "officeConfiguration",
                value.to_json(),
                value.version,
            ))
        }
        Target::ClientConfigurations { cast } if m == Method::GET => {
            reads::list_configurations(&ctx, cast).await
        }
        Target::ClientConfigurations { .. } => {
            let parsed =
                input::configuration(&read_json(ctx.headers, body, ctx.limit()).await?, None)?;
            let (value, assignments) = svc.create_configuration(ctx.tenant(), parsed).await?;
            let mut json = value.to_json();
            if !assignments.is_empty() {
                json.insert(
                    "assignments@odata.context".into(),
                    ctx.context(&format!(
                        "officeConfiguration/clientConfigurations('{}')/assignments",
                        value.id
                    ))
                    .into(),
                );
                json.insert(
                    "assignments".into(),
                    Value::Array(
                        assignments
                            .iter()
                            .map(|a| Value::Object(a.to_json()))
                            .collect(),
                    ),
                );
            }
            Ok(created(
                &ctx,
                "officeConfiguration/clientConfigurations/$entity",
                json,
                value.version,
                ctx.configuration_url(value.id),
            ))
        }
        Target::UpdatePriorities => {
            let (ids, priorities) = input::update_priorities_parameters(
                &read_json(ctx.headers, body, ctx.limit()).await?,
            )?;
            svc.update_priorities(ctx.tenant(), &ids, &priorities)
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Target::ClientConfiguration { id, cast } if m == Method::GET => {
            reads::configuration(&ctx, id, cast).await
        }
        Target::ClientConfiguration { id, cast } if m == Method::PATCH => {
            let stored = svc.configuration(ctx.tenant(), id).await?;
            if cast.is_some_and(|k| k != stored.kind) {
                return Err(GraphError::NotFound(format!(
                    "No configuration of the cast type with id '{id}' exists."
                )));
            }
            let parsed = input::configuration(
                &read_json(ctx.headers, body, ctx.limit()).await?,
                Some(stored.kind),
            )?;
            let value = svc
                .update_configuration(ctx.tenant(), id, parsed, ctx.if_match()?.as_ref())
                .await?;
            Ok(updated(
                &ctx,
                "officeConfiguration/clientConfigurations/$entity",
                value.to_json(),
                value.version,
            ))
        }
        Target::ClientConfiguration { id, cast } => {
            if let Some(kind) = cast
                && svc.configuration(ctx.tenant(), id).await?.kind != kind
            {
                return Err(GraphError::NotFound(format!(
                    "No configuration of the cast type with id '{id}' exists."
                )));
            }
            svc.delete_configuration(ctx.tenant(), id, ctx.if_match()?.as_ref())
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Target::Payload { id, kind } if m == Method::GET => payload(&ctx, id, kind).await,
        Target::Payload { id, kind } => {
            let bytes = read_stream(ctx.headers, body, ctx.limit()).await?;
            svc.put_payload(ctx.tenant(), id, kind, bytes, ctx.if_match()?.as_ref())
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Target::Assign(id) => {
            let inputs =
                input::assign_parameters(&read_json(ctx.headers, body, ctx.limit()).await?)?;
            let set = svc.assign(ctx.tenant(), id, inputs).await?;
            Ok(collection(
                &ctx,
                "Collection(microsoft.graph.officeClientConfigurationAssignment)",
                set.iter().map(Assignment::to_json),
            ))
        }
        Target::Assignments(config) if m == Method::GET => {
            reads::list_assignments(&ctx, config).await
        }
        Target::Assignments(config) => {
            let (_, target) =
                input::assignment(&read_json(ctx.headers, body, ctx.limit()).await?, "", true)?;
            let target = target.ok_or_else(|| {
                GraphError::bad_request(
                    "The request body is missing the required property 'target'.",
                )
            })?;
            let value = svc.create_assignment(ctx.tenant(), config, target).await?;
            let fragment =
                format!("officeConfiguration/clientConfigurations('{config}')/assignments/$entity");
            let location = format!("{}/assignments/{}", ctx.configuration_url(config), value.id);
            Ok(created(
                &ctx,
                &fragment,
                value.to_json(),
                value.version,
                location,
            ))
        }
        Target::Assignment {
            configuration_id,
            id,
        } => {
            let fragment = format!(
                "officeConfiguration/clientConfigurations('{configuration_id}')/assignments/$entity"
            );
            match *m {
                Method::GET => reads::assignment(&ctx, configuration_id, id).await,
                Method::PATCH => {
                    let (body_id, target) = input::assignment(
                        &read_json(ctx.headers, body, ctx.limit()).await?,
                        "",
                        false,
                    )?;
                    let value = svc
                        .update_assignment(
                            ctx.tenant(),
                            configuration_id,
                            id,
                            body_id,
                            target,
                            ctx.if_match()?.as_ref(),
                        )
                        .await?;
                    Ok(updated(&ctx, &fragment, value.to_json(), value.version))
                }
                _ => {
                    svc.delete_assignment(
                        ctx.tenant(),
                        configuration_id,
                        id,
                        ctx.if_match()?.as_ref(),
                    )
                    .await?;
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
            }
        }
    }
}

fn unreachable_public() -> GraphResult<Response> {
    Err(GraphError::internal(anyhow::anyhow!(
        "public target reached the authenticated dispatcher"
    )))
}

fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    odata::public_base(
        headers,
        state.config.public_url.as_deref(),
        &state.config.fallback_host,
    )
}

fn service_root(state: &AppState, headers: &HeaderMap) -> String {
    format!("{}/beta", public_base(state, headers))
}

/// Documents that need no token.
fn public(target: &Target, service_root: &str) -> GraphResult<Response> {
    match target {
        Target::ServiceRoot => Ok(json_response(
            StatusCode::OK,
            odata::csdl::service_document(service_root),
        )),
        Target::Metadata => {
            let mut res = (StatusCode::OK, odata::csdl::metadata_xml()).into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml;charset=utf-8"),
            );
            h.insert("odata-version", HeaderValue::from_static(ODATA_VERSION));
            Ok(res)
        }
        _ => unreachable_public(),
    }
}

pub(super) fn json_response(status: StatusCode, value: Value) -> Response {
    json_bytes_response(status, value.to_string().into_bytes())
}

/// A JSON response from an already serialised body, with the headers of [`json_response`].
pub(super) fn json_bytes_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    h.insert("odata-version", HeaderValue::from_static(ODATA_VERSION));
    res
}

fn with_context(ctx: &Ctx<'_>, fragment: &str, body: Map<String, Value>) -> Value {
    let mut out = Map::with_capacity(body.len() + 1);
    out.insert("@odata.context".into(), ctx.context(fragment).into());
    out.extend(body);
    Value::Object(out)
}

fn set_etag(res: &mut Response, version: i64) {
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        res.headers_mut().insert(header::ETAG, v);
    }
}

pub(super) fn entity(
    ctx: &Ctx<'_>,
    status: StatusCode,
    fragment: &str,
    body: Map<String, Value>,
    version: i64,
) -> Response {
    let mut res = json_response(status, with_context(ctx, fragment, body));
    set_etag(&mut res, version);
    res
}

/// [`entity`] for a body already serialised with its `@odata.context`.
pub(super) fn rendered_entity(status: StatusCode, body: Vec<u8>, version: i64) -> Response {
    let mut res = json_bytes_response(status, body);
    set_etag(&mut res, version);
    res
}

fn collection(
    ctx: &Ctx<'_>,
    fragment: &str,
    items: impl Iterator<Item = Map<String, Value>>,
) -> Response {
    let value: Vec<Value> = items.map(Value::Object).collect();
    json_response(
        StatusCode::OK,
        json!({ "@odata.context": ctx.context(fragment), "value": value }),
    )
}

/// PATCH: 204 by default; `Prefer: return=representation` → 200 with the entity.
fn updated(ctx: &Ctx<'_>, fragment: &str, body: Map<String, Value>, version: i64) -> Response {
    let mut res = if odata::return_preference(ctx.headers) == Some(ReturnPreference::Representation)
    {
        let mut r = entity(ctx, StatusCode::OK, fragment, body, version);
        r.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("return=representation"),
        );
        r
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    set_etag(&mut res, version);
    res
}

/// POST create: 201 with the entity and `Location`; `Prefer: return=minimal` → 204.
fn created(
    ctx: &Ctx<'_>,
    fragment: &str,
    body: Map<String, Value>,
    version: i64,
    location: String,
) -> Response {
    let mut res = if odata::return_preference(ctx.headers) == Some(ReturnPreference::Minimal) {
        let mut r = StatusCode::NO_CONTENT.into_response();
        r.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("return=minimal"),
        );
        set_etag(&mut r, version);
        r
    } else {
        entity(ctx, StatusCode::CREATED, fragment, body, version)
    };
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v.clone());
        res.headers_mut().insert("odata-entityid", v);
    }
    res
}

async fn payload(ctx: &Ctx<'_>, id: Uuid, kind: PayloadKind) -> GraphResult<Response> {
    match ctx.state.service.payload(ctx.tenant(), id, kind).await? {
        // OData: a null stream property reads as 204 No Content.
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(bytes) => {
            let mut res = (StatusCode::OK, Body::from(bytes)).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok(res)
        }
    }
}
