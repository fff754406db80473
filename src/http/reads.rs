//! The GET side of the API with OData query options: `$select`, `$expand`, `$filter`,
//! `$orderby`, `$search`, `$top`/`$skip`/`$skiptoken` paging, `$count` and the `/$count`
//! segment. Options are parsed and validated by [`crate::odata::query`]; collections are
//! queried in the database through [`crate::storage::query`].

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::handlers::{Ctx, entity, json_response, rendered_entity};
use super::render::{WireEntity, entity_body};
use crate::error::{GraphError, GraphResult};
use crate::model::{Assignment, ClientConfiguration, ConfigurationKind};
use crate::odata::edm::{ASSIGNMENT, CLIENT_CONFIGURATION, OFFICE_CONFIGURATION};
use crate::odata::paging;
use crate::odata::query::{Expand, ParsedQuery, Select, Target as QueryTarget};
use crate::storage::query::{CollectionQuery, EntitySet, Param, SortColumn, SortKey};

const CONFIGS: &str = "officeConfiguration/clientConfigurations";

/// Keeps the annotations, `id` and the selected properties.
fn project(map: Map<String, Value>, select: &Select) -> Map<String, Value> {
    if matches!(select, Select::All) {
        return map;
    }
    map.into_iter()
        .filter(|(k, _)| k.starts_with('@') || select.includes(k))
        .collect()
}

/// Whether a `$select` asks for any of the computed check-in properties (which cost queries).
fn selects_checkin_views(select: &Select, names: [&str; 2]) -> bool {
    names.iter().any(|n| select.includes(n))
}

const OFFICE_VIEWS: [&str; 2] = ["tenantCheckinStatuses", "tenantUserCheckinSummary"];
const CONFIGURATION_VIEWS: [&str; 2] = ["checkinStatuses", "userCheckinSummary"];

fn select_suffix(select: &Select) -> String {
    select
        .context_list()
        .map(|l| format!("({l})"))
        .unwrap_or_default()
}

fn cast_suffix(cast: Option<ConfigurationKind>) -> String {
    cast.map(|k| format!("/microsoft.graph.{}", k.type_name()))
        .unwrap_or_default()
}

fn configurations_type(cast: Option<ConfigurationKind>) -> &'static str {
    cast.map_or(CLIENT_CONFIGURATION, ConfigurationKind::type_name)
}

fn expand_of<'a>(q: &'a ParsedQuery, navigation: &str) -> Option<&'a Expand> {
    q.expand.iter().find(|e| e.navigation.name == navigation)
}

/// The sort keys of a query: `$orderby` (id is always the final tie-breaker), else the
/// collection's natural order.
fn sort_keys(q: &ParsedQuery, set: EntitySet) -> GraphResult<Vec<SortKey>> {
    let mut keys = Vec::new();
    for k in &q.orderby {
        if k.property.name == "id" {
            // The tie-breaker already orders by id ascending; a descending id order is the
            // one thing keyset paging here cannot express.
            if k.descending {
                return Err(GraphError::bad_request(
                    "$orderby=id desc is not supported; order by id ascending or by another property.",
                ));
            }
            break;
        }
        let column = SortColumn::for_property(set, k.property.name).ok_or_else(|| {
            GraphError::bad_request(format!(
                "The property '{}' cannot be used in $orderby.",
                k.property.name
            ))
        })?;
        keys.push(SortKey {
            column,
            descending: k.descending,
        });
    }
    if q.orderby.is_empty() {
        keys.push(SortKey {
            column: match set {
                EntitySet::Configurations => SortColumn::Priority,
                EntitySet::Assignments { .. } => SortColumn::Position,
            },
            descending: false,
        });
    }
    Ok(keys)
}

/// Whether a decoded cursor has one value of the right type per sort key and a GUID id, so
/// that a forged token can never bind a mistyped parameter.
fn cursor_fits(order: &[SortKey], values: &[Param], last_id: &str) -> bool {
    order.len() == values.len()
        && Uuid::parse_str(last_id).is_ok()
        && order.iter().zip(values).all(|(k, v)| match k.column {
            SortColumn::DisplayName | SortColumn::Description => matches!(v, Param::Text(_)),
            SortColumn::Priority | SortColumn::LastModifiedDateTime | SortColumn::Position => {
                matches!(v, Param::Int(_))
            }
        })
}

/// Builds the storage query of a collection request, with its cursor decoded and checked.
fn collection_query(
    ctx: &Ctx<'_>,
    q: &ParsedQuery,
    set: EntitySet,
    kinds: Option<Vec<ConfigurationKind>>,
) -> GraphResult<CollectionQuery> {
    let binding = paging::binding(ctx.tenant().as_str(), ctx.path, ctx.query);
    let order = sort_keys(q, set)?;
    let after = q
        .skiptoken
        .as_deref()
        .map(|t| paging::decode(t, binding))
        .transpose()?;
    if let Some((values, last_id)) = &after
        && !cursor_fits(&order, values, last_id)
    {
        return Err(paging::invalid_token());
    }
    Ok(CollectionQuery {
        set,
        filter: q.filter.clone(),
        search: q.search.clone(),
        kinds,
        order,
        offset: if after.is_some() {
            0
        } else {
            q.skip.unwrap_or(0)
        },
        after,
        limit: 0,
    })
}

/// The validated options and storage query of a configurations collection request.
fn configurations_query(
    ctx: &Ctx<'_>,
    cast: Option<ConfigurationKind>,
) -> GraphResult<(ParsedQuery, CollectionQuery)> {
    let q = ParsedQuery::parse(
        ctx.query,
        configurations_type(cast),
        QueryTarget::Collection,
    )?;
    let query = collection_query(ctx, &q, EntitySet::Configurations, cast.map(|k| vec![k]))?;
    Ok((q, query))
}

/// The validated options and storage query of an assignments collection request.
fn assignments_query(
    ctx: &Ctx<'_>,
    configuration_id: Uuid,
) -> GraphResult<(ParsedQuery, CollectionQuery)> {
    let q = ParsedQuery::parse(ctx.query, ASSIGNMENT, QueryTarget::Collection)?;
    let query = collection_query(ctx, &q, EntitySet::Assignments { configuration_id }, None)?;
    Ok((q, query))
}

/// Writes a collection page: context, count, nextLink, value.
fn page_response(
    ctx: &Ctx<'_>,
    fragment: &str,
    items: Vec<Value>,
    count: Option<u64>,
    next: Option<(Vec<Param>, String)>,
    applied_page_size: Option<u32>,
) -> Response {
    let mut body = Map::new();
    body.insert("@odata.context".into(), ctx.context(fragment).into());
    if let Some(n) = count {
        body.insert("@odata.count".into(), n.into());
    }
    if let Some((keys, last)) = next {
        let binding = paging::binding(ctx.tenant().as_str(), ctx.path, ctx.query);
        let token = paging::encode(keys, last, binding);
        body.insert(
            "@odata.nextLink".into(),
            paging::next_link(&ctx.base, ctx.path, ctx.query, &token).into(),
        );
    }
    body.insert("value".into(), Value::Array(items));
    let mut res = json_response(StatusCode::OK, Value::Object(body));
    if let Some(n) = applied_page_size
        && let Ok(v) = HeaderValue::from_str(&format!("odata.maxpagesize={n}"))
    {
        res.headers_mut().insert("preference-applied", v);
    }
    res
}

fn count_response(n: u64) -> Response {
    let mut res = (StatusCode::OK, n.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain;charset=utf-8"),
    );
    res.headers_mut().insert(
        "odata-version",
        HeaderValue::from_static(crate::odata::ODATA_VERSION),
    );
    res
}

/// A configuration as JSON, with its assignments when expanded.
fn configuration_json(
    ctx: &Ctx<'_>,
    c: &ClientConfiguration,
    q: &ParsedQuery,
    assignments: Option<&[Assignment]>,
) -> Map<String, Value> {
    let mut map = project(c.to_json(), &q.select);
    if let (Some(expand), Some(list)) = (expand_of(q, "assignments"), assignments) {
        map.insert(
            "assignments@odata.context".into(),
            ctx.context(&format!(
                "{CONFIGS}('{}')/assignments{}",
                c.id,
                select_suffix(&expand.select)
            ))
            .into(),
        );
        map.insert(
            "assignments".into(),
            Value::Array(
                list.iter()
                    .map(|a| Value::Object(project(a.to_json(), &expand.select)))
                    .collect(),
            ),
        );
    }
    map
}

/// The whole entity (no `$select`, no `$expand`): written straight to bytes, see [`render`].
///
/// [`render`]: super::render
fn whole_entity(
    ctx: &Ctx<'_>,
    q: &ParsedQuery,
    fragment: &str,
    value: &impl WireEntity,
    version: i64,
) -> Option<GraphResult<Response>> {
    if !matches!(q.select, Select::All) || !q.expand.is_empty() {
        return None;
    }
    Some(
        entity_body(&ctx.context(fragment), value)
            .map(|body| rendered_entity(StatusCode::OK, body, version))
            .map_err(GraphError::internal),
    )
}

pub(super) async fn office_configuration(ctx: &Ctx<'_>) -> GraphResult<Response> {
    let q = ParsedQuery::parse(ctx.query, OFFICE_CONFIGURATION, QueryTarget::Entity)?;
    let svc = &ctx.state.service;
    let mut value = svc.office_configuration(ctx.tenant()).await?;
    if selects_checkin_views(&q.select, OFFICE_VIEWS) {
        svc.fill_office_views(ctx.tenant(), &mut value).await?;
    }
    if let Some(res) = whole_entity(ctx, &q, "officeConfiguration", &value, value.version) {
        return res;
    }
    let mut map = project(value.to_json(), &q.select);
    if let Some(expand) = expand_of(&q, "clientConfigurations") {
        let mut configs = svc.configurations(ctx.tenant()).await?;
        if selects_checkin_views(&expand.select, CONFIGURATION_VIEWS) {
            svc.fill_configuration_views(ctx.tenant(), &mut configs)
                .await?;
        }
        map.insert(
            "clientConfigurations@odata.context".into(),
            ctx.context(&format!("{CONFIGS}{}", select_suffix(&expand.select)))
                .into(),
        );
        map.insert(
            "clientConfigurations".into(),
            Value::Array(
                configs
                    .iter()
                    .map(|c| Value::Object(project(c.to_json(), &expand.select)))
                    .collect(),
            ),
        );
    }
    let fragment = format!("officeConfiguration{}", select_suffix(&q.select));
    Ok(entity(ctx, StatusCode::OK, &fragment, map, value.version))
}

pub(super) async fn list_configurations(
    ctx: &Ctx<'_>,
    cast: Option<ConfigurationKind>,
) -> GraphResult<Response> {
    let (q, query) = configurations_query(ctx, cast)?;
    let (size, applied) = paging::page_size(q.top, ctx.headers, ctx.state.config.page_size);
    let svc = &ctx.state.service;
    let mut page = svc
        .list_configurations(ctx.tenant(), query, size, q.count)
        .await?;
    if selects_checkin_views(&q.select, CONFIGURATION_VIEWS) {
        svc.fill_configuration_views(ctx.tenant(), &mut page.items)
            .await?;
    }
    let mut expanded = if expand_of(&q, "assignments").is_some() {
        let ids: Vec<Uuid> = page.items.iter().map(|c| c.id).collect();
        Some(svc.assignments_of(ctx.tenant(), &ids).await?)
    } else {
        None
    };
    let items = page
        .items
        .iter()
        .map(|c| {
            let list = expanded
                .as_mut()
                .map(|m| m.remove(&c.id).unwrap_or_default());
            Value::Object(configuration_json(ctx, c, &q, list.as_deref()))
        })
        .collect();
    let fragment = format!("{CONFIGS}{}{}", cast_suffix(cast), select_suffix(&q.select));
    Ok(page_response(
        ctx, &fragment, items, page.count, page.next, applied,
    ))
}

pub(super) async fn count_configurations(
    ctx: &Ctx<'_>,
    cast: Option<ConfigurationKind>,
) -> GraphResult<Response> {
    let (_, query) = configurations_query(ctx, cast)?;
    Ok(count_response(
        ctx.state.service.count(ctx.tenant(), &query).await?,
    ))
}

pub(super) async fn configuration(
    ctx: &Ctx<'_>,
    id: Uuid,
    cast: Option<ConfigurationKind>,
) -> GraphResult<Response> {
    let q = ParsedQuery::parse(ctx.query, configurations_type(cast), QueryTarget::Entity)?;
    let svc = &ctx.state.service;
    let mut value = svc.configuration(ctx.tenant(), id).await?;
    if selects_checkin_views(&q.select, CONFIGURATION_VIEWS) {
        svc.fill_configuration_views(ctx.tenant(), std::slice::from_mut(&mut value))
            .await?;
    }
    if let Some(kind) = cast
        && kind != value.kind
    {
        return Err(GraphError::NotFound(format!(
            "No {} with id '{id}' exists (the configuration is a {}).",
            kind.type_name(),
            value.kind.type_name()
        )));
    }
    let fragment = format!(
        "{CONFIGS}{}{}/$entity",
        cast_suffix(cast),
        select_suffix(&q.select)
    );
    if let Some(res) = whole_entity(ctx, &q, &fragment, &value, value.version) {
        return res;
    }
    let assignments = if expand_of(&q, "assignments").is_some() {
        Some(
            svc.assignments_of(ctx.tenant(), &[id])
                .await?
                .remove(&id)
                .unwrap_or_default(),
        )
    } else {
        None
    };
    let map = configuration_json(ctx, &value, &q, assignments.as_deref());
    Ok(entity(ctx, StatusCode::OK, &fragment, map, value.version))
}

pub(super) async fn list_assignments(
    ctx: &Ctx<'_>,
    configuration_id: Uuid,
) -> GraphResult<Response> {
    let (q, query) = assignments_query(ctx, configuration_id)?;
    let (size, applied) = paging::page_size(q.top, ctx.headers, ctx.state.config.page_size);
    let page = ctx
        .state
        .service
        .list_assignments(ctx.tenant(), query, size, q.count)
        .await?;
    let items = page
        .items
        .iter()
        .map(|a| Value::Object(project(a.to_json(), &q.select)))
        .collect();
    let fragment = format!(
        "{CONFIGS}('{configuration_id}')/assignments{}",
        select_suffix(&q.select)
    );
    Ok(page_response(
        ctx, &fragment, items, page.count, page.next, applied,
    ))
}

pub(super) async fn count_assignments(
    ctx: &Ctx<'_>,
    configuration_id: Uuid,
) -> GraphResult<Response> {
    let (_, query) = assignments_query(ctx, configuration_id)?;
    Ok(count_response(
        ctx.state.service.count(ctx.tenant(), &query).await?,
    ))
}

pub(super) async fn assignment(
    ctx: &Ctx<'_>,
    configuration_id: Uuid,
    id: Uuid,
) -> GraphResult<Response> {
    let q = ParsedQuery::parse(ctx.query, ASSIGNMENT, QueryTarget::Entity)?;
    let value = ctx
        .state
        .service
        .assignment(ctx.tenant(), configuration_id, id)
        .await?;
    let fragment = format!(
        "{CONFIGS}('{configuration_id}')/assignments{}/$entity",
        select_suffix(&q.select)
    );
    Ok(entity(
        ctx,
        StatusCode::OK,
        &fragment,
        project(value.to_json(), &q.select),
        value.version,
    ))
}
