//! The OpenAPI 3.0.3 document of the Graph-facing API (`GET /openapi/graph.json`), rendered
//! from the EDM model in [`super::edm`] like `$metadata` is: schemas from the entity and complex
//! types, paths from the singleton, its contained navigation properties, the stream properties,
//! the bound actions and the concrete derived types (cast segments). Nothing is written per
//! type. The rendered document is pinned by a snapshot (`openapi.snapshot.json` next to this
//! file), and a test checks that every path it lists is routed with the methods it lists.

use serde_json::{Map, Value, json};

use super::edm::{
    Action, MODEL, Model, NAMESPACE, NavigationProperty, Primitive, Property, StructuredType,
    TypeKind, TypeRef,
};

/// Properties `$search` matches (case-insensitive substring; see `storage::query`). A
/// collection gets `$search` when its element type has them.
const SEARCHED: &[&str] = &["displayName", "description"];

/// The shared error schema's name.
const ERROR_SCHEMA: &str = "microsoft.graph.ODataError";

fn schema_ref(qualified: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{qualified}") })
}

fn type_ref(name: &str) -> Value {
    schema_ref(&format!("{NAMESPACE}.{name}"))
}

fn primitive(p: Primitive) -> Value {
    match p {
        Primitive::String => json!({ "type": "string" }),
        Primitive::Int32 => json!({
            "type": "integer",
            "format": "int32",
            "maximum": i32::MAX,
            "minimum": i32::MIN,
        }),
        Primitive::Int64 => json!({ "type": "integer", "format": "int64" }),
        Primitive::Boolean => json!({ "type": "boolean" }),
        Primitive::Guid => json!({
            "type": "string",
            "format": "uuid",
            "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        }),
        Primitive::DateTimeOffset => json!({
            "type": "string",
            "format": "date-time",
            "pattern": "^[0-9]{4,}-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{1,12})?(Z|[+-][0-9][0-9]:[0-9][0-9])$",
        }),
        Primitive::Stream => json!({ "type": "string", "format": "base64url" }),
    }
}

/// The schema of one value of `kind`; `nullable` adds `nullable` (through `anyOf` for a
/// `$ref`, which OpenAPI 3.0 allows no siblings).
fn element(kind: TypeKind, nullable: bool) -> Value {
    match kind {
        TypeKind::Primitive(p) => {
            let mut v = primitive(p);
            if nullable {
                v["nullable"] = json!(true);
            }
            v
        }
        TypeKind::Complex(n) | TypeKind::Entity(n) if nullable => json!({
            "anyOf": [type_ref(n), { "type": "object", "nullable": true }]
        }),
        TypeKind::Complex(n) | TypeKind::Entity(n) => type_ref(n),
    }
}

/// A property, parameter or return type. As in CSDL, `Nullable` of a collection is about its
/// items; the items of a structured collection are never null on the wire, so they are plain
/// `$ref`s.
fn type_schema(ty: &TypeRef, nullable: bool) -> Value {
    if !ty.collection {
        return element(ty.kind, nullable);
    }
    let items = match ty.kind {
        TypeKind::Primitive(_) => element(ty.kind, nullable),
        _ => element(ty.kind, false),
    };
    json!({ "type": "array", "items": items })
}

fn property_schema(p: &Property) -> Value {
    type_schema(&p.ty, p.nullable)
}

/// The concrete types strictly derived from `name`.
fn derived_concrete(model: &'static Model, name: &str) -> Vec<&'static str> {
    model
        .concrete_types(name)
        .into_iter()
        .filter(|t| *t != name)
        .collect()
}

fn is_abstract(t: StructuredType) -> bool {
    match t {
        StructuredType::Entity(e) => e.is_abstract,
        StructuredType::Complex(c) => c.is_abstract,
    }
}

/// `components/schemas/microsoft.graph.<name>` for one entity or complex type.
fn structured_schema(model: &'static Model, t: StructuredType) -> Value {
    let name = t.name();
    let (base, declared, navigation) = match t {
        StructuredType::Entity(e) => (e.base, e.properties, e.navigation),
        StructuredType::Complex(c) => (c.base, c.properties, &[][..]),
    };
    let mut properties = Map::new();
    for p in declared {
        properties.insert(p.name.into(), property_schema(p));
    }
    for n in navigation {
        let mut v = type_schema(&n.type_ref(), false);
        v["x-ms-navigationProperty"] = json!(true);
        properties.insert(n.name.into(), v);
    }
    let mut odata_type = json!({ "type": "string" });
    if !is_abstract(t) {
        odata_type["default"] = json!(format!("#{NAMESPACE}.{name}"));
    }
    properties.insert("@odata.type".into(), odata_type);

    let mut own = Map::new();
    own.insert("title".into(), json!(name));
    if is_abstract(t) {
        own.insert("required".into(), json!(["@odata.type"]));
    }
    own.insert("type".into(), json!("object"));
    own.insert("properties".into(), Value::Object(properties));
    let derived = derived_concrete(model, name);
    if !derived.is_empty() {
        let mapping: Map<String, Value> = derived
            .iter()
            .map(|d| {
                (
                    format!("#{NAMESPACE}.{d}"),
                    json!(format!("#/components/schemas/{NAMESPACE}.{d}")),
                )
            })
            .collect();
        own.insert(
            "discriminator".into(),
            json!({ "propertyName": "@odata.type", "mapping": mapping }),
        );
    }
    match base {
        Some(b) => json!({ "allOf": [type_ref(b), Value::Object(own)] }),
        None => Value::Object(own),
    }
}

fn collection_response_name(entity: &str) -> String {
    format!("{NAMESPACE}.{entity}CollectionResponse")
}

/// Entity types that are listed as pageable collections (targets of collection navigation).
fn collection_types(model: &'static Model) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for t in model.entity_types {
        for n in t.navigation.iter().filter(|n| n.collection) {
            if !out.contains(&n.target) {
                out.push(n.target);
            }
        }
    }
    out
}

fn schemas(model: &'static Model) -> Map<String, Value> {
    let mut out = Map::new();
    for t in model.entity_types {
        out.insert(
            t.qualified_name(),
            structured_schema(model, StructuredType::Entity(t)),
        );
    }
    for t in model.complex_types {
        out.insert(
            format!("{NAMESPACE}.{}", t.name),
            structured_schema(model, StructuredType::Complex(t)),
        );
    }
    out.insert(
        "BaseCollectionPaginationCountResponse".into(),
        json!({
            "title": "Base collection pagination and count response",
            "type": "object",
            "properties": {
                "@odata.context": { "type": "string" },
                "@odata.count": { "type": "integer", "format": "int64", "nullable": true },
                "@odata.nextLink": { "type": "string", "nullable": true },
            },
        }),
    );
    for t in collection_types(model) {
        out.insert(
            collection_response_name(t),
            json!({
                "allOf": [
                    schema_ref("BaseCollectionPaginationCountResponse"),
                    {
                        "title": format!("Collection of {t}"),
                        "type": "object",
                        "properties": {
                            "value": { "type": "array", "items": type_ref(t) },
                        },
                    },
                ]
            }),
        );
    }
    out.insert(
        ERROR_SCHEMA.into(),
        json!({
            "required": ["error"],
            "type": "object",
            "properties": {
                "error": {
                    "required": ["code", "message"],
                    "type": "object",
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "innerError": {
                            "type": "object",
                            "properties": {
                                "date": {
                                    "type": "string",
                                    "description": "UTC, yyyy-MM-ddTHH:mm:ss",
                                },
                                "request-id": { "type": "string" },
                                "client-request-id": { "type": "string" },
                            },
                        },
                    },
                },
            },
        }),
    );
    out
}

fn parameters() -> Value {
    let query = |name: &str, description: &str, schema: Value| {
        json!({
            "name": name,
            "in": "query",
            "description": description,
            "style": "form",
            "explode": false,
            "schema": schema,
        })
    };
    json!({
        "top": query("$top", "Show only the first n items (page size, 0–999)", json!({ "minimum": 0, "maximum": 999, "type": "integer" })),
        "skip": query("$skip", "Skip the first n items", json!({ "minimum": 0, "type": "integer" })),
        "search": query("$search", "Search items by search phrases", json!({ "type": "string" })),
        "filter": query("$filter", "Filter items by property values", json!({ "type": "string" })),
        "count": query("$count", "Include count of items", json!({ "type": "boolean" })),
        "ifMatch": {
            "name": "If-Match",
            "in": "header",
            "description": "ETag (`W/\"<version>\"`) or `*`; a mismatch is 412",
            "schema": { "type": "string" },
        },
        "prefer": {
            "name": "Prefer",
            "in": "header",
            "description": "`return=minimal` or `return=representation`; `odata.maxpagesize=n` on lists",
            "schema": { "type": "string" },
        },
    })
}

fn param_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn key_param(name: &str, entity: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": format!("The unique identifier of {entity}"),
        "schema": { "type": "string" },
        "x-ms-docs-key-type": entity,
    })
}

/// `$select` (every structural property of `entity`) and `$expand` (its navigation
/// properties), each with an enum of the allowed names.
fn select_expand(model: &'static Model, entity: &str) -> Vec<Value> {
    let enum_param = |name: &str, description: &str, values: Vec<&str>| {
        json!({
            "name": name,
            "in": "query",
            "description": description,
            "style": "form",
            "explode": false,
            "schema": {
                "uniqueItems": true,
                "type": "array",
                "items": { "enum": values, "type": "string" },
            },
        })
    };
    let mut out = vec![enum_param(
        "$select",
        "Select properties to be returned",
        model.properties(entity).iter().map(|p| p.name).collect(),
    )];
    let navs: Vec<&str> = model
        .navigation_properties(entity)
        .iter()
        .map(|n| n.name)
        .collect();
    if !navs.is_empty() {
        out.push(enum_param("$expand", "Expand related entities", navs));
    }
    out
}

/// The query parameters of a list of `entity`.
fn list_parameters(model: &'static Model, entity: &str) -> Vec<Value> {
    let props = model.properties(entity);
    let filterable: Vec<&str> = props
        .iter()
        .filter(|p| p.filterable)
        .map(|p| p.name)
        .collect();
    let orderby: Vec<String> = props
        .iter()
        .filter(|p| p.sortable)
        .flat_map(|p| [p.name.to_string(), format!("{} desc", p.name)])
        .collect();
    let mut out = vec![param_ref("top"), param_ref("skip")];
    if SEARCHED.iter().all(|s| props.iter().any(|p| p.name == *s)) {
        out.push(param_ref("search"));
    }
    let mut filter = param_ref("filter");
    if !filterable.is_empty() {
        filter = json!({
            "name": "$filter",
            "in": "query",
            "description": format!("Filter items by property values (filterable: {})", filterable.join(", ")),
            "style": "form",
            "explode": false,
            "schema": { "type": "string" },
        });
    }
    out.push(filter);
    out.push(param_ref("count"));
    out.push(json!({
        "name": "$orderby",
        "in": "query",
        "description": "Order items by property values",
        "style": "form",
        "explode": false,
        "schema": {
            "uniqueItems": true,
            "type": "array",
            "items": { "enum": orderby, "type": "string" },
        },
    }));
    out.extend(select_expand(model, entity));
    out
}

/// The `/$count` query parameters of a collection of `entity`.
fn count_parameters(model: &'static Model, entity: &str) -> Vec<Value> {
    let props = model.properties(entity);
    let mut out = Vec::new();
    if SEARCHED.iter().all(|s| props.iter().any(|p| p.name == *s)) {
        out.push(param_ref("search"));
    }
    out.push(param_ref("filter"));
    out
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

fn no_content(description: &str) -> Value {
    json!({ "description": description })
}

/// Adds the error responses: `codes` (specific ones worth naming) plus 4XX/5XX.
fn with_errors(mut responses: Map<String, Value>, codes: &[&str]) -> Value {
    for c in codes.iter().chain(["4XX", "5XX"].iter()) {
        responses.insert(
            (*c).into(),
            json!({ "$ref": "#/components/responses/error" }),
        );
    }
    Value::Object(responses)
}

struct Op {
    tag: String,
    id: String,
    summary: String,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Op {
    fn into_json(self) -> Value {
        let mut v = Map::new();
        v.insert("tags".into(), json!([self.tag]));
        v.insert("summary".into(), json!(self.summary));
        v.insert("operationId".into(), json!(self.id));
        if !self.parameters.is_empty() {
            v.insert("parameters".into(), json!(self.parameters));
        }
        if let Some(b) = self.body {
            v.insert("requestBody".into(), b);
        }
        v.insert("responses".into(), self.responses);
        Value::Object(v)
    }
}

fn body(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema), "required": true })
}

/// The responses of a PATCH: 204, or 200 with the entity on `return=representation`.
fn patch_responses(entity: &str, keyed: bool) -> Value {
    let mut r = Map::new();
    r.insert(
        "200".into(),
        ok(
            "Updated entity (with `Prefer: return=representation`)",
            type_ref(entity),
        ),
    );
    r.insert("204".into(), no_content("Updated"));
    let codes: &[&str] = if keyed { &["404", "409", "412"] } else { &[] };
    with_errors(r, codes)
}

/// Collects the path items.
struct Paths<'m> {
    model: &'static Model,
    paths: Map<String, Value>,
    tag: &'m str,
}

impl Paths<'_> {
    fn add(&mut self, path: String, method: &str, op: Op, shared: &[Value]) {
        let item = self
            .paths
            .entry(path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item");
        if !shared.is_empty() && !item.contains_key("parameters") {
            item.insert("parameters".into(), json!(shared));
        }
        item.insert(method.into(), op.into_json());
    }

    fn op(&self, id: &[&str], summary: String) -> Op {
        Op {
            tag: self.tag.to_string(),
            id: id.join("."),
            summary,
            parameters: Vec::new(),
            body: None,
            responses: json!({}),
        }
    }

    /// A contained collection navigation `nav` under `path` (whose key parameters are
    /// `keys`), recursively.
    fn collection(&mut self, path: &str, ids: &[&str], keys: &[Value], nav: &NavigationProperty) {
        let model = self.model;
        let entity = nav.target;
        let coll = format!("{path}/{}", nav.name);
        let mut id: Vec<&str> = ids.to_vec();
        id.push(nav.name);

        let mut list = self.op(&[&id[..], &["List"]].concat(), format!("List {}", nav.name));
        list.parameters = list_parameters(model, entity);
        let mut r = Map::new();
        r.insert(
            "200".into(),
            ok(
                "Retrieved collection",
                schema_ref(&collection_response_name(entity)),
            ),
        );
        list.responses = with_errors(r, &[]);
        self.add(coll.clone(), "get", list, keys);

        let mut create = self.op(
            &[&id[..], &["Create"]].concat(),
            format!(
                "Create new navigation property to {} for {}",
                nav.name, path
            ),
        );
        create.parameters = vec![param_ref("prefer")];
        create.body = Some(body("New navigation property", type_ref(entity)));
        let mut r = Map::new();
        r.insert(
            "201".into(),
            json!({
                "description": "Created entity",
                "headers": {
                    "Location": { "description": "The new entity's URL", "schema": { "type": "string" } },
                },
                "content": json_content(type_ref(entity)),
            }),
        );
        r.insert(
            "204".into(),
            no_content("Created (with `Prefer: return=minimal`)"),
        );
        create.responses = with_errors(r, &["409"]);
        self.add(coll.clone(), "post", create, keys);

        self.count(&coll, &id, keys, entity, nav.name);

        // Type-cast collections, one per concrete derived type.
        for derived in derived_concrete(model, entity) {
            let cast_path = format!("{coll}/{NAMESPACE}.{derived}");
            let as_name = format!("as{}{}", derived[..1].to_uppercase(), &derived[1..]);
            let cast_id: Vec<&str> = [&id[..], &[as_name.as_str()]].concat();
            let mut list = self.op(
                &[&cast_id[..], &["List"]].concat(),
                format!(
                    "List the items of type {NAMESPACE}.{derived} in {}",
                    nav.name
                ),
            );
            list.parameters = list_parameters(model, derived);
            let mut r = Map::new();
            r.insert(
                "200".into(),
                ok(
                    "Retrieved collection",
                    schema_ref(&collection_response_name(entity)),
                ),
            );
            list.responses = with_errors(r, &[]);
            self.add(cast_path.clone(), "get", list, keys);
            self.count(&cast_path, &cast_id, keys, derived, nav.name);
        }

        // Actions bound to the collection.
        for action in model.actions {
            let b = action.binding();
            if b.ty.collection
                && matches!(b.ty.kind, TypeKind::Entity(t) if model.is_derived_from(entity, t))
            {
                self.action(&coll, &id, keys, action);
            }
        }

        // One item.
        let key_name = if keys.is_empty() {
            "id".to_string()
        } else {
            format!("{}Id", nav.name.strip_suffix('s').unwrap_or(nav.name))
        };
        let item = format!("{coll}/{{{key_name}}}");
        let mut item_keys = keys.to_vec();
        item_keys.push(key_param(&key_name, entity));
        let item_id: Vec<&str> = id.clone();
        let keyed = &["404"][..];

        let mut get = self.op(
            &[&item_id[..], &["Get"]].concat(),
            format!("Get {} from {path}", nav.name),
        );
        get.parameters = select_expand(model, entity);
        let mut r = Map::new();
        r.insert("200".into(), ok("Retrieved entity", type_ref(entity)));
        get.responses = with_errors(r, keyed);
        self.add(item.clone(), "get", get, &item_keys);

        let mut patch = self.op(
            &[&item_id[..], &["Update"]].concat(),
            format!("Update the navigation property {} in {path}", nav.name),
        );
        patch.parameters = vec![param_ref("ifMatch"), param_ref("prefer")];
        patch.body = Some(body("New property values", type_ref(entity)));
        patch.responses = patch_responses(entity, true);
        self.add(item.clone(), "patch", patch, &item_keys);

        let mut delete = self.op(
            &[&item_id[..], &["Delete"]].concat(),
            format!("Delete navigation property {} for {path}", nav.name),
        );
        delete.parameters = vec![param_ref("ifMatch")];
        let mut r = Map::new();
        r.insert("204".into(), no_content("Success"));
        delete.responses = with_errors(r, &["404", "412"]);
        self.add(item.clone(), "delete", delete, &item_keys);

        // Stream properties of the item.
        for p in model.properties(entity) {
            if p.scalar() != Some(Primitive::Stream) {
                continue;
            }
            let stream = format!("{item}/{}", p.name);
            let stream_id: Vec<&str> = [&item_id[..], &[p.name]].concat();
            let mut get = self.op(
                &[&stream_id[..], &["Get"]].concat(),
                format!("Get {} (raw bytes)", p.name),
            );
            let mut r = Map::new();
            r.insert(
                "200".into(),
                json!({
                    "description": "The stream's bytes",
                    "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } },
                }),
            );
            r.insert("204".into(), no_content("The stream is null"));
            get.responses = with_errors(r, keyed);
            self.add(stream.clone(), "get", get, &item_keys);

            let mut put = self.op(
                &[&stream_id[..], &["Set"]].concat(),
                format!("Replace {} (raw bytes)", p.name),
            );
            put.parameters = vec![param_ref("ifMatch")];
            let binary = json!({ "schema": { "type": "string", "format": "binary" } });
            put.body = Some(json!({
                "description": "New stream contents (a UTF-8 JSON object)",
                "content": {
                    "application/octet-stream": binary,
                    "application/json": binary,
                    "text/plain": binary,
                },
                "required": true,
            }));
            let mut r = Map::new();
            r.insert("204".into(), no_content("Success"));
            put.responses = with_errors(r, &["404", "412", "415"]);
            self.add(stream, "put", put, &item_keys);
        }

        // Actions bound to one item.
        for action in model.actions {
            let b = action.binding();
            if !b.ty.collection
                && matches!(b.ty.kind, TypeKind::Entity(t) if model.is_derived_from(entity, t))
            {
                self.action(&item, &item_id, &item_keys, action);
            }
        }

        // Contained navigation of the item, recursively.
        for n in model.navigation_properties(entity) {
            if n.contains_target && n.collection {
                self.collection(&item, &item_id, &item_keys, n);
            }
        }
    }

    fn count(&mut self, coll: &str, id: &[&str], keys: &[Value], entity: &str, nav: &str) {
        let mut op = self.op(
            &[id, &["GetCount"]].concat(),
            format!("Get the number of the resource ({nav})"),
        );
        op.parameters = count_parameters(self.model, entity);
        let mut r = Map::new();
        r.insert(
            "200".into(),
            json!({
                "description": "The count of the resource",
                "content": { "text/plain": { "schema": { "type": "integer", "format": "int32" } } },
            }),
        );
        op.responses = with_errors(r, &[]);
        self.add(format!("{coll}/$count"), "get", op, keys);
    }

    fn action(&mut self, path: &str, id: &[&str], keys: &[Value], action: &Action) {
        let mut properties = Map::new();
        for p in &action.parameters[1..] {
            properties.insert(p.name.into(), type_schema(&p.ty, p.nullable));
        }
        let mut op = self.op(
            &[id, &[action.name]].concat(),
            format!("Invoke action {}", action.name),
        );
        op.body = Some(body(
            "Action parameters",
            json!({ "type": "object", "properties": properties }),
        ));
        let mut r = Map::new();
        match &action.return_type {
            Some(ret) if ret.collection => {
                let element = type_schema(&TypeRef::single(ret.kind), false);
                let title = match ret.kind {
                    TypeKind::Primitive(p) => p.edm_name().to_string(),
                    TypeKind::Complex(n) | TypeKind::Entity(n) => n.to_string(),
                };
                r.insert(
                    "200".into(),
                    ok(
                        "Success",
                        json!({
                            "title": format!("Collection of {title}"),
                            "type": "object",
                            "properties": {
                                "@odata.context": { "type": "string" },
                                "value": { "type": "array", "items": element },
                            },
                        }),
                    ),
                );
            }
            Some(ret) => {
                r.insert("200".into(), ok("Success", type_schema(ret, true)));
            }
            None => {
                r.insert("204".into(), no_content("Success"));
            }
        }
        op.responses = with_errors(r, &["404", "409"]);
        self.add(format!("{path}/{}", action.name), "post", op, keys);
    }
}

fn paths(model: &'static Model) -> Map<String, Value> {
    let mut all = Map::new();
    for s in model.singletons {
        let tag = s.name.to_string();
        let mut p = Paths {
            model,
            paths: Map::new(),
            tag: &tag,
        };
        let path = format!("/{}", s.name);

        let mut get = p.op(&[s.name, "Get"], format!("Get {}", s.name));
        get.parameters = select_expand(model, s.entity_type);
        let mut r = Map::new();
        r.insert(
            "200".into(),
            ok("Retrieved entity", type_ref(s.entity_type)),
        );
        get.responses = with_errors(r, &[]);
        p.add(path.clone(), "get", get, &[]);

        let mut patch = p.op(&[s.name, "Update"], format!("Update {}", s.name));
        patch.parameters = vec![param_ref("prefer")];
        patch.body = Some(body("New property values", type_ref(s.entity_type)));
        patch.responses = patch_responses(s.entity_type, false);
        p.add(path.clone(), "patch", patch, &[]);

        for n in model.navigation_properties(s.entity_type) {
            if n.contains_target && n.collection {
                p.collection(&path, &[s.name], &[], n);
            }
        }
        all.extend(p.paths);
    }
    all
}

/// Renders the OpenAPI document of `model`, served under `service_root` (e.g.
/// `https://host/beta`, no trailing slash).
pub fn render(model: &'static Model, service_root: &str) -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "cirrus: Microsoft Graph beta officeConfiguration",
            "description": "The officeConfiguration API cirrus serves, generated from the same EDM model as $metadata. Behaviour and choices: docs/api.md.",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "servers": [{ "url": service_root }],
        "paths": paths(model),
        "components": {
            "schemas": schemas(model),
            "responses": {
                "error": {
                    "description": "Error (Graph's error envelope)",
                    "content": json_content(schema_ref(ERROR_SCHEMA)),
                },
            },
            "parameters": parameters(),
            "securitySchemes": {
                "bearerAuth": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            },
        },
        "security": [{ "bearerAuth": [] }],
    })
}

/// The document of the service's model.
pub fn document(service_root: &str) -> Value {
    render(&MODEL, service_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = "src/odata/openapi.snapshot.json";
    const ROOT: &str = "https://graph.example/beta";
    const GUID: &str = "0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01";

    fn rendered() -> String {
        let mut s = serde_json::to_string_pretty(&document(ROOT)).expect("serialise");
        s.push('\n');
        s
    }

    #[test]
    fn openapi_matches_snapshot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT);
        let rendered = rendered();
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &rendered).expect("write snapshot");
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == rendered,
            "the OpenAPI document differs from {SNAPSHOT}. If the model change is intended, run\n  \
             UPDATE_SNAPSHOTS=1 cargo test --lib odata::openapi\nand review the diff of {SNAPSHOT}.\n\
             --- rendered ---\n{rendered}"
        );
    }

    /// Replaces every `{…}` placeholder with a GUID.
    fn concrete(path: &str) -> String {
        let mut out = String::new();
        let mut rest = path;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let j = rest[i..].find('}').expect("closing brace") + i;
            out.push_str(GUID);
            rest = &rest[j + 1..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn every_documented_operation_is_routed() {
        let doc = document(ROOT);
        let paths = doc["paths"].as_object().unwrap();
        let mut operations = 0;
        for (path, item) in paths {
            let url = format!("/beta{}", concrete(path));
            let target = crate::http::route::parse(&url)
                .unwrap_or_else(|e| panic!("{path} ({url}) does not route: {e:?}"));
            for method in item.as_object().unwrap().keys() {
                if method == "parameters" {
                    continue;
                }
                let m = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                assert!(
                    target.allows(&m),
                    "{method} {path}: {target:?} allows only {}",
                    target.allow()
                );
                operations += 1;
            }
        }
        // docs/api.md's operations, plus /$count, the cast collections and their /$count.
        assert_eq!(operations, 24, "{:#?}", paths.keys().collect::<Vec<_>>());
    }

    #[test]
    fn document_has_what_clients_need() {
        let doc = document(ROOT);
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(doc["servers"][0]["url"], ROOT);
        assert_eq!(doc["security"][0]["bearerAuth"], json!([]));
        let schemas = &doc["components"]["schemas"];
        let base = &schemas["microsoft.graph.officeClientConfiguration"]["allOf"];
        assert_eq!(
            base[0]["$ref"],
            "#/components/schemas/microsoft.graph.entity"
        );
        assert_eq!(
            base[1]["discriminator"],
            json!({
                "propertyName": "@odata.type",
                "mapping": {
                    "#microsoft.graph.windowsOfficeClientConfiguration": "#/components/schemas/microsoft.graph.windowsOfficeClientConfiguration",
                    "#microsoft.graph.windowsOfficeClientSecurityConfiguration": "#/components/schemas/microsoft.graph.windowsOfficeClientSecurityConfiguration",
                }
            })
        );
        let props = &base[1]["properties"];
        assert_eq!(
            props["priority"],
            json!({"type": "integer", "format": "int32", "maximum": 2147483647, "minimum": -2147483648})
        );
        assert_eq!(
            props["displayName"],
            json!({"type": "string", "nullable": true})
        );
        assert_eq!(
            props["policyPayload"],
            json!({"type": "string", "format": "base64url", "nullable": true})
        );
        assert_eq!(props["lastModifiedDateTime"]["format"], "date-time");
        assert_eq!(props["checkinStatuses"]["type"], "array");
        let target = &schemas["microsoft.graph.officeConfigurationAssignmentTarget"];
        assert_eq!(
            target["discriminator"]["mapping"]["#microsoft.graph.officeConfigurationGroupAssignmentTarget"],
            "#/components/schemas/microsoft.graph.officeConfigurationGroupAssignmentTarget"
        );
        assert_eq!(
            schemas["microsoft.graph.windowsOfficeClientConfiguration"]["allOf"][1]["properties"]["@odata.type"]
                ["default"],
            "#microsoft.graph.windowsOfficeClientConfiguration"
        );
        assert!(
            schemas[ERROR_SCHEMA]["properties"]["error"]["properties"]["innerError"]["properties"]
                ["request-id"]
                .is_object()
        );

        let paths = &doc["paths"];
        let coll = &paths["/officeConfiguration/clientConfigurations"];
        assert!(coll["post"]["responses"]["201"]["headers"]["Location"].is_object());
        let orderby = coll["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "$orderby")
            .unwrap();
        let sortable = orderby["schema"]["items"]["enum"].as_array().unwrap();
        assert!(sortable.contains(&json!("priority desc")));
        assert!(!sortable.contains(&json!("policyPayload")));
        let item = &paths["/officeConfiguration/clientConfigurations/{id}"];
        assert!(item["patch"]["responses"]["204"].is_object());
        assert!(item["patch"]["responses"]["200"].is_object());
        assert!(item["delete"]["responses"]["204"].is_object());
        let assign = &paths["/officeConfiguration/clientConfigurations/{id}/assign"]["post"];
        assert_eq!(
            assign["requestBody"]["content"]["application/json"]["schema"]["properties"]["officeConfigurationAssignments"]
                ["items"]["$ref"],
            "#/components/schemas/microsoft.graph.officeClientConfigurationAssignment"
        );
        assert_eq!(
            assign["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["value"]
                ["type"],
            "array"
        );
        let prio = &paths["/officeConfiguration/clientConfigurations/updatePriorities"]["post"];
        assert!(prio["responses"]["204"].is_object());
        assert!(
            paths["/officeConfiguration/clientConfigurations/microsoft.graph.windowsOfficeClientSecurityConfiguration"]["get"]
                .is_object()
        );
        assert!(
            paths["/officeConfiguration/clientConfigurations/{id}/assignments/{assignmentId}"]
                ["delete"]
                .is_object()
        );
        assert!(
            paths["/officeConfiguration/clientConfigurations/{id}/policyPayload"]["put"]
                .is_object()
        );

        // operationIds are unique.
        let mut ids: Vec<&str> = paths
            .as_object()
            .unwrap()
            .values()
            .flat_map(|i| i.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
