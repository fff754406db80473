//! `$metadata` (CSDL XML) and the service document, both rendered from the EDM model in
//! [`super::edm`]. The rendered XML is pinned by a snapshot (`metadata.snapshot.xml` next to
//! this file), so a model change shows up as a reviewed diff.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::edm::{Action, ComplexType, EntityType, MODEL, Model, Property};

/// The `Content-Type` of `$metadata`.
pub const METADATA_CONTENT_TYPE: &str = "application/xml";

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Writes one element: `<name a="v" …/>` (no children) or the opening tag (children follow).
fn open(out: &mut String, indent: usize, name: &str, attrs: &[(&str, String)], empty: bool) {
    let _ = write!(out, "{:indent$}<{name}", "");
    for (k, v) in attrs {
        let _ = write!(out, " {k}=\"{}\"", escape(v));
    }
    out.push_str(if empty { "/>\n" } else { ">\n" });
}

fn close(out: &mut String, indent: usize, name: &str) {
    let _ = writeln!(out, "{:indent$}</{name}>", "");
}

fn type_attrs(name: &str, base: Option<&str>, is_abstract: bool) -> Vec<(&'static str, String)> {
    let mut attrs = vec![("Name", name.to_string())];
    if let Some(b) = base {
        attrs.push(("BaseType", format!("{}.{b}", MODEL.alias)));
    }
    if is_abstract {
        attrs.push(("Abstract", "true".into()));
    }
    attrs
}

fn property(out: &mut String, indent: usize, p: &Property) {
    let mut attrs = vec![("Name", p.name.to_string()), ("Type", p.ty.csdl_name())];
    if !p.nullable {
        attrs.push(("Nullable", "false".into()));
    }
    open(out, indent, "Property", &attrs, true);
}

fn entity_type(out: &mut String, t: &EntityType) {
    let attrs = type_attrs(t.name, t.base, t.is_abstract);
    if t.key.is_empty() && t.properties.is_empty() && t.navigation.is_empty() {
        open(out, 6, "EntityType", &attrs, true);
        return;
    }
    open(out, 6, "EntityType", &attrs, false);
    if !t.key.is_empty() {
        open(out, 8, "Key", &[], false);
        for k in t.key {
            open(out, 10, "PropertyRef", &[("Name", k.to_string())], true);
        }
        close(out, 8, "Key");
    }
    for p in t.properties {
        property(out, 8, p);
    }
    for n in t.navigation {
        let mut attrs = vec![
            ("Name", n.name.to_string()),
            ("Type", n.type_ref().csdl_name()),
        ];
        if n.contains_target {
            attrs.push(("ContainsTarget", "true".into()));
        }
        open(out, 8, "NavigationProperty", &attrs, true);
    }
    close(out, 6, "EntityType");
}

fn complex_type(out: &mut String, t: &ComplexType) {
    let attrs = type_attrs(t.name, t.base, t.is_abstract);
    if t.properties.is_empty() {
        open(out, 6, "ComplexType", &attrs, true);
        return;
    }
    open(out, 6, "ComplexType", &attrs, false);
    for p in t.properties {
        property(out, 8, p);
    }
    close(out, 6, "ComplexType");
}

fn action(out: &mut String, a: &Action) {
    open(
        out,
        6,
        "Action",
        &[("Name", a.name.to_string()), ("IsBound", "true".into())],
        false,
    );
    for p in a.parameters {
        let mut attrs = vec![("Name", p.name.to_string()), ("Type", p.ty.csdl_name())];
        if !p.nullable {
            attrs.push(("Nullable", "false".into()));
        }
        open(out, 8, "Parameter", &attrs, true);
    }
    if let Some(r) = &a.return_type {
        open(out, 8, "ReturnType", &[("Type", r.csdl_name())], true);
    }
    close(out, 6, "Action");
}

/// Renders the CSDL XML document of `model`.
pub fn render(model: &Model) -> String {
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(
        "<edmx:Edmx Version=\"4.0\" xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\">\n",
    );
    out.push_str("  <edmx:DataServices>\n");
    open(
        &mut out,
        4,
        "Schema",
        &[
            ("Namespace", model.namespace.to_string()),
            ("Alias", model.alias.to_string()),
            (
                "xmlns",
                "http://docs.oasis-open.org/odata/ns/edm".to_string(),
            ),
        ],
        false,
    );
    for t in model.entity_types {
        entity_type(&mut out, t);
    }
    for t in model.complex_types {
        complex_type(&mut out, t);
    }
    for a in model.actions {
        action(&mut out, a);
    }
    open(
        &mut out,
        6,
        "EntityContainer",
        &[("Name", model.container.to_string())],
        false,
    );
    for s in model.singletons {
        open(
            &mut out,
            8,
            "Singleton",
            &[
                ("Name", s.name.to_string()),
                ("Type", format!("{}.{}", model.alias, s.entity_type)),
            ],
            true,
        );
    }
    close(&mut out, 6, "EntityContainer");
    close(&mut out, 4, "Schema");
    out.push_str("  </edmx:DataServices>\n");
    out.push_str("</edmx:Edmx>\n");
    out
}

/// The `$metadata` document of the service.
pub fn metadata_xml() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| render(&MODEL))
}

/// The JSON service document served at `GET {service_root}/` (service root without a
/// trailing slash, e.g. `https://host/beta`).
pub fn service_document(service_root: &str) -> Value {
    let value: Vec<Value> = MODEL
        .singletons
        .iter()
        .map(|s| json!({ "name": s.name, "kind": "Singleton", "url": s.name }))
        .collect();
    json!({
        "@odata.context": format!("{service_root}/$metadata"),
        "value": value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = "src/odata/metadata.snapshot.xml";

    #[test]
    fn metadata_matches_snapshot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT);
        let rendered = metadata_xml();
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, rendered).expect("write snapshot");
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == rendered,
            "$metadata differs from {SNAPSHOT}. If the model change is intended, run\n  \
             UPDATE_SNAPSHOTS=1 cargo test --lib odata::csdl\nand review the diff of {SNAPSHOT}.\n\
             --- rendered ---\n{rendered}"
        );
    }

    #[test]
    fn metadata_has_what_clients_need() {
        let xml = metadata_xml();
        for needle in [
            r#"<Schema Namespace="microsoft.graph" Alias="graph" xmlns="http://docs.oasis-open.org/odata/ns/edm">"#,
            r#"<EntityType Name="entity" Abstract="true">"#,
            r#"<PropertyRef Name="id"/>"#,
            r#"<EntityType Name="officeClientConfiguration" BaseType="graph.entity" Abstract="true">"#,
            r#"<EntityType Name="windowsOfficeClientSecurityConfiguration" BaseType="graph.officeClientConfiguration"/>"#,
            r#"<Property Name="priority" Type="Edm.Int32" Nullable="false"/>"#,
            r#"<NavigationProperty Name="assignments" Type="Collection(graph.officeClientConfigurationAssignment)" ContainsTarget="true"/>"#,
            r#"<ComplexType Name="officeConfigurationAssignmentTarget" Abstract="true"/>"#,
            r#"<Parameter Name="officeConfigurationPriorities" Type="Collection(Edm.Int32)"/>"#,
            r#"<ReturnType Type="Collection(graph.officeClientConfigurationAssignment)"/>"#,
            r#"<Singleton Name="officeConfiguration" Type="graph.officeConfiguration"/>"#,
        ] {
            assert!(xml.contains(needle), "missing {needle}");
        }
        // Well-formed enough: every opened element is closed.
        assert_eq!(
            xml.matches("<EntityType ").count(),
            MODEL.entity_types.len()
        );
        assert_eq!(
            xml.matches("<Action ").count(),
            xml.matches("</Action>").count()
        );
    }

    #[test]
    fn service_document_lists_the_singleton() {
        let doc = service_document("https://graph.example/beta");
        assert_eq!(
            doc,
            json!({
                "@odata.context": "https://graph.example/beta/$metadata",
                "value": [{"name": "officeConfiguration", "kind": "Singleton", "url": "officeConfiguration"}]
            })
        );
        assert_eq!(escape(r#"<a&"'>"#), "&lt;a&amp;&quot;&apos;&gt;");
    }
}
