//! OData query options end to end (issue 4): `$select`, `$expand`, `$filter`, `$orderby`,
//! `$top`/`$skip`/`$count`, the `/$count` segment, `$search`, server-driven paging with
//! `$skiptoken` and `@odata.nextLink`, keyset stability, type-cast segments, `$metadata`, the
//! service document, and 400s for bad options. Every check asserts exact item sets and orders.
#[macro_use]
mod common;

use std::collections::{BTreeSet, HashSet};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const G1: &str = "bbbbbbbb-0000-4000-8000-000000000001";
const G2: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const SECURITY_CAST: &str = "microsoft.graph.windowsOfficeClientSecurityConfiguration";
const GROUP_TARGET: &str = "microsoft.graph.officeConfigurationGroupAssignmentTarget";

/// Percent-encodes a query option value.
fn enc(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `name=value&…` with the values encoded.
fn qs(options: &[(&str, &str)]) -> String {
    options
        .iter()
        .map(|(n, v)| format!("{n}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// GET `path?query`, asserting 200; the JSON body.
async fn get_ok(s: &Server, t: &str, path: &str, query: &str) -> Value {
    let r = s.get(&format!("{path}?{query}"), t).await;
    assert_eq!(r.status.as_u16(), 200, "{path}?{query}: {}", r.text);
    r.json()
}

/// The configurations matching `$filter`, by name, in the default (priority) order.
async fn filtered(s: &Server, t: &str, filter: &str) -> Vec<String> {
    let v = get_ok(s, t, CONFIGS, &qs(&[("$filter", filter)])).await;
    assert!(v.get("@odata.nextLink").is_none(), "{filter}: {v}");
    names(&v)
}

fn name_of(c: &Value) -> String {
    c["displayName"].as_str().unwrap_or("(none)").to_string()
}

fn names(v: &Value) -> Vec<String> {
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no value: {v}"))
        .iter()
        .map(name_of)
        .collect()
}

fn priorities(v: &Value) -> Vec<i64> {
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no value: {v}"))
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ctx(v: &Value) -> &str {
    v["@odata.context"]
        .as_str()
        .unwrap_or_else(|| panic!("no context: {v}"))
}

/// Six configurations with known names, descriptions, priorities and types, and
/// assignments: Alpha → G1; Gamma → G1, G2; Delta → G2. Returns the ids by name.
struct Seed {
    ids: std::collections::HashMap<String, String>,
}

impl Seed {
    fn id(&self, name: &str) -> &str {
        &self.ids[name]
    }
}

const ALL: [&str; 6] = ["Alpha", "Beta", "Gamma", "Delta", "alpha two", "(none)"];

async fn seed(s: &Server, t: &str) -> Seed {
    let rows: [(&str, Option<&str>, Option<&str>, i64); 6] = [
        (WINDOWS, Some("Alpha"), Some("first baseline"), 10),
        (SECURITY, Some("Beta"), None, 20),
        (WINDOWS, Some("Gamma"), Some("O'Brien's policy"), 30),
        (SECURITY, Some("Delta"), Some("Security Baseline"), 40),
        (WINDOWS, Some("alpha two"), Some(""), 50),
        (SECURITY, None, Some("50%_off"), 60),
    ];
    let mut ids = std::collections::HashMap::new();
    for (ty, name, desc, priority) in rows {
        let mut body = json!({"@odata.type": ty, "priority": priority});
        if let Some(n) = name {
            body["displayName"] = n.into();
        }
        if let Some(d) = desc {
            body["description"] = d.into();
        }
        let c = s.create(t, body).await;
        ids.insert(name_of(&c), id_of(&c));
    }
    for (name, group) in [("Alpha", G1), ("Gamma", G1), ("Gamma", G2), ("Delta", G2)] {
        let r = s
            .post(
                &format!("{}/assignments", cfg(&ids[name])),
                t,
                json!({"target": group_target(group)}),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    }
    Seed { ids }
}

fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------------------------------------------
// $select and $expand
// ------------------------------------------------------------------------------------------

async fn select_on_list_entity_and_singleton() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let seed = seed(&s, &t).await;

    let v = get_ok(&s, &t, CONFIGS, "$select=displayName,priority").await;
    assert!(
        ctx(&v).ends_with(
            "/beta/$metadata#officeConfiguration/clientConfigurations(displayName,priority)"
        ),
        "{v}"
    );
    assert_eq!(names(&v), strs(&ALL));
    assert_eq!(priorities(&v), [10, 20, 30, 40, 50, 60]);
    for item in v["value"].as_array().unwrap() {
        assert_eq!(
            keys(item),
            set(&[
                "@odata.type",
                "@odata.etag",
                "id",
                "displayName",
                "priority"
            ]),
            "{item}"
        );
    }
    // Without `$`, several spellings, a duplicate: the same projection, context in request order.
    let v = get_ok(
        &s,
        &t,
        CONFIGS,
        "select=description,displayName,description",
    )
    .await;
    assert!(
        ctx(&v).ends_with("#officeConfiguration/clientConfigurations(description,displayName)"),
        "{v}"
    );
    assert_eq!(
        keys(&v["value"][2]),
        set(&[
            "@odata.type",
            "@odata.etag",
            "id",
            "displayName",
            "description"
        ])
    );
    assert_eq!(v["value"][2]["description"], "O'Brien's policy");
    // `*` is everything.
    let all = get_ok(&s, &t, CONFIGS, "$select=*").await;
    assert!(ctx(&all).ends_with("#officeConfiguration/clientConfigurations"));
    assert!(keys(&all["value"][0]).contains("policyPayload"), "{all}");
    assert!(keys(&all["value"][0]).contains("lastModifiedDateTime"));

    // One entity.
    let gamma = seed.id("Gamma");
    let v = get_ok(&s, &t, &cfg(gamma), "$select=priority,description").await;
    assert!(
        ctx(&v)
            .ends_with("#officeConfiguration/clientConfigurations(priority,description)/$entity"),
        "{v}"
    );
    assert_eq!(
        keys(&v),
        set(&[
            "@odata.context",
            "@odata.type",
            "@odata.etag",
            "id",
            "priority",
            "description"
        ])
    );
    assert_eq!(v["id"], gamma);
    assert_eq!(v["priority"], 30);
    assert_eq!(v["description"], "O'Brien's policy");

    // An assignment list and one assignment.
    let a = get_ok(&s, &t, &format!("{}/assignments", cfg(gamma)), "$select=id").await;
    assert!(
        ctx(&a).ends_with(&format!("clientConfigurations('{gamma}')/assignments(id)")),
        "{a}"
    );
    assert_eq!(a["value"].as_array().unwrap().len(), 2);
    for item in a["value"].as_array().unwrap() {
        assert_eq!(
            keys(item),
            set(&["@odata.type", "@odata.etag", "id"]),
            "{item}"
        );
    }

    // The singleton.
    let full = s.get("/officeConfiguration", &t).await.json();
    assert!(keys(&full).contains("tenantUserCheckinSummary"), "{full}");
    assert!(keys(&full).contains("tenantCheckinStatuses"), "{full}");
    let v = get_ok(
        &s,
        &t,
        "/officeConfiguration",
        "$select=tenantUserCheckinSummary",
    )
    .await;
    assert!(
        ctx(&v).ends_with("/beta/$metadata#officeConfiguration(tenantUserCheckinSummary)"),
        "{v}"
    );
    assert!(keys(&v).contains("tenantUserCheckinSummary"), "{v}");
    assert!(!keys(&v).contains("tenantCheckinStatuses"), "{v}");
    assert_eq!(
        v["tenantUserCheckinSummary"],
        full["tenantUserCheckinSummary"]
    );
    assert_eq!(v["id"], full["id"]);
}

async fn expand_assignments_on_list_and_entity() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let seed = seed(&s, &t).await;
    let gamma = seed.id("Gamma");
    let stored = s
        .get(&format!("{}/assignments", cfg(gamma)), &t)
        .await
        .json();
    assert_eq!(stored["value"].as_array().unwrap().len(), 2);

    // Without $expand there is no navigation property in the payload.
    let v = get_ok(&s, &t, CONFIGS, "").await;
    assert!(v["value"][0].get("assignments").is_none(), "{v}");

    let v = get_ok(&s, &t, CONFIGS, "$expand=assignments").await;
    assert_eq!(names(&v), strs(&ALL));
    let groups: Vec<Vec<String>> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["assignments"]
                .as_array()
                .unwrap_or_else(|| panic!("no assignments: {c}"))
                .iter()
                .map(|a| a["target"]["groupId"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            vec![G1.to_string()],
            vec![],
            vec![G1.into(), G2.into()],
            vec![G2.into()],
            vec![],
            vec![]
        ]
    );
    // The expanded assignments are exactly what the navigation returns, in its order.
    let g = &v["value"][2];
    assert_eq!(g["assignments"], stored["value"]);
    assert!(
        g["assignments@odata.context"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "#officeConfiguration/clientConfigurations('{gamma}')/assignments"
            )),
        "{g}"
    );

    // Nested $select, with an outer $select too.
    let v = get_ok(
        &s,
        &t,
        CONFIGS,
        "$select=displayName&$expand=assignments($select=target)",
    )
    .await;
    let g = &v["value"][2];
    assert_eq!(
        keys(g),
        set(&[
            "@odata.type",
            "@odata.etag",
            "id",
            "displayName",
            "assignments@odata.context",
            "assignments"
        ]),
        "{g}"
    );
    assert!(
        g["assignments@odata.context"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "clientConfigurations('{gamma}')/assignments(target)"
            )),
        "{g}"
    );
    assert_eq!(g["assignments"], stored["value"]);
    let v = get_ok(&s, &t, CONFIGS, "expand=assignments(select=id)").await;
    for a in v["value"][2]["assignments"].as_array().unwrap() {
        assert_eq!(keys(a), set(&["@odata.type", "@odata.etag", "id"]), "{a}");
    }

    // One entity.
    let e = get_ok(
        &s,
        &t,
        &cfg(gamma),
        "$expand=assignments($select=id)&$select=priority",
    )
    .await;
    assert_eq!(
        keys(&e),
        set(&[
            "@odata.context",
            "@odata.type",
            "@odata.etag",
            "id",
            "priority",
            "assignments@odata.context",
            "assignments"
        ]),
        "{e}"
    );
    let ids: Vec<&str> = e["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let stored_ids: Vec<&str> = stored["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, stored_ids);
    let e = get_ok(&s, &t, &cfg(seed.id("Beta")), "$expand=*").await;
    assert_eq!(e["assignments"], json!([]), "{e}");
    assert_eq!(e["displayName"], "Beta");
}

async fn expand_client_configurations_on_the_singleton() {
    let s = Server::start().await;
    let t = s.token("contoso");
    seed(&s, &t).await;
    let v = get_ok(
        &s,
        &t,
        "/officeConfiguration",
        "$expand=clientConfigurations($select=displayName,priority)",
    )
    .await;
    assert!(ctx(&v).ends_with("#officeConfiguration"), "{v}");
    assert!(
        v["clientConfigurations@odata.context"]
            .as_str()
            .unwrap()
            .ends_with(
                "/beta/$metadata#officeConfiguration/clientConfigurations(displayName,priority)"
            ),
        "{v}"
    );
    let list = json!({"value": v["clientConfigurations"]});
    assert_eq!(names(&list), strs(&ALL));
    assert_eq!(priorities(&list), [10, 20, 30, 40, 50, 60]);
    for c in v["clientConfigurations"].as_array().unwrap() {
        assert_eq!(
            keys(c),
            set(&[
                "@odata.type",
                "@odata.etag",
                "id",
                "displayName",
                "priority"
            ]),
            "{c}"
        );
    }
    assert!(keys(&v).contains("tenantCheckinStatuses"));
    // With a $select on the singleton itself.
    let v = get_ok(
        &s,
        &t,
        "/officeConfiguration",
        "select=id&expand=clientConfigurations",
    )
    .await;
    assert!(ctx(&v).ends_with("#officeConfiguration(id)"), "{v}");
    assert!(!keys(&v).contains("tenantCheckinStatuses"), "{v}");
    assert_eq!(v["clientConfigurations"].as_array().unwrap().len(), 6);
    assert!(keys(&v["clientConfigurations"][0]).contains("policyPayload"));
    // Without $expand: no navigation property.
    let v = s.get("/officeConfiguration", &t).await.json();
    assert!(v.get("clientConfigurations").is_none(), "{v}");
}

// ------------------------------------------------------------------------------------------
// $filter
// ------------------------------------------------------------------------------------------

async fn filter_comparisons_and_literals() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let seed = seed(&s, &t).await;
    let cases: &[(&str, &[&str])] = &[
        ("priority eq 30", &["Gamma"]),
        (
            "priority ne 30",
            &["Alpha", "Beta", "Delta", "alpha two", "(none)"],
        ),
        ("priority gt 40", &["alpha two", "(none)"]),
        ("priority ge 40", &["Delta", "alpha two", "(none)"]),
        ("priority lt 20", &["Alpha"]),
        ("priority le 20", &["Alpha", "Beta"]),
        ("30 lt priority", &["Delta", "alpha two", "(none)"]),
        ("priority eq -5", &[]),
        ("priority EQ 10 AND displayName Ne null", &["Alpha"]),
        ("displayName eq 'Alpha'", &["Alpha"]),
        (
            "displayName ne 'Alpha'",
            &["Beta", "Gamma", "Delta", "alpha two", "(none)"],
        ),
        ("displayName eq null", &["(none)"]),
        (
            "displayName ne null",
            &["Alpha", "Beta", "Gamma", "Delta", "alpha two"],
        ),
        ("description eq null", &["Beta"]),
        ("description eq ''", &["alpha two"]),
        ("description eq 'O''Brien''s policy'", &["Gamma"]),
        ("contains(description,'''')", &["Gamma"]),
        // String comparisons are case-insensitive, like Intune's collation.
        ("displayName gt 'Beta'", &["Gamma", "Delta"]),
        ("displayName eq 'ALPHA'", &["Alpha"]),
        ("priority in (10, 40, 99)", &["Alpha", "Delta"]),
        (
            "displayName in ('Beta', 'Gamma', null)",
            &["Beta", "Gamma", "(none)"],
        ),
        ("startswith(displayName,'al')", &["Alpha", "alpha two"]),
        ("endswith(description,'baseline')", &["Alpha", "Delta"]),
        ("contains(displayName,'PH')", &["Alpha", "alpha two"]),
        ("contains(description,'%_')", &["(none)"]),
        ("contains(description,'_')", &["(none)"]),
        (
            "startswith(displayName,'al') eq true",
            &["Alpha", "alpha two"],
        ),
        (
            "startswith(displayName,'al') eq false",
            &["Beta", "Gamma", "Delta", "(none)"],
        ),
        ("lastModifiedDateTime gt 2000-01-01T00:00:00Z", &ALL),
        ("lastModifiedDateTime lt 2000-01-01T00:30:00.5+01:00", &[]),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            filtered(&s, &t, filter).await,
            strs(expected),
            "$filter={filter}"
        );
    }

    // GUID literals: unquoted, quoted, upper-case, in a list.
    let gamma = seed.id("Gamma");
    let guid_cases: Vec<(String, &[&str])> = vec![
        (format!("id eq {gamma}"), &["Gamma"]),
        (format!("id eq '{}'", gamma.to_uppercase()), &["Gamma"]),
        (
            format!("id ne {gamma}"),
            &["Alpha", "Beta", "Delta", "alpha two", "(none)"],
        ),
        (
            format!("id in ({}, '{}')", seed.id("Delta"), seed.id("Alpha")),
            &["Alpha", "Delta"],
        ),
    ];
    for (filter, expected) in guid_cases {
        assert_eq!(
            filtered(&s, &t, &filter).await,
            strs(expected),
            "$filter={filter}"
        );
    }

    // DateTimeOffset literals, as the server emits them (seven fractional digits).
    let list = get_ok(&s, &t, CONFIGS, "").await;
    let items = list["value"].as_array().unwrap();
    let stamp_of = |name: &str| {
        items.iter().find(|c| name_of(c) == name).unwrap()["lastModifiedDateTime"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let gamma_at = stamp_of("Gamma");
    let expect = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        items
            .iter()
            .filter(|c| pred(c["lastModifiedDateTime"].as_str().unwrap()))
            .map(name_of)
            .collect()
    };
    let later = expect(&|at| at >= gamma_at.as_str());
    assert!(
        later.contains(&"Gamma".to_string()) && later.len() < 6,
        "{later:?}"
    );
    assert_eq!(
        filtered(&s, &t, &format!("lastModifiedDateTime ge {gamma_at}")).await,
        later
    );
    assert_eq!(
        filtered(&s, &t, &format!("lastModifiedDateTime lt {gamma_at}")).await,
        expect(&|at| at < gamma_at.as_str())
    );
    assert_eq!(
        filtered(&s, &t, &format!("lastModifiedDateTime eq {gamma_at}")).await,
        expect(&|at| at == gamma_at.as_str())
    );
}

async fn filter_logic_precedence_isof_and_lambda() {
    let s = Server::start().await;
    let t = s.token("contoso");
    seed(&s, &t).await;
    let g1 = format!("assignments/any(a: a/target/{GROUP_TARGET}/groupId eq '{G1}')");
    let g2_upper = format!(
        "assignments/any(a: a/target/{GROUP_TARGET}/groupId eq '{}')",
        G2.to_uppercase()
    );
    let cases: Vec<(String, &[&str])> = vec![
        // `and` binds tighter than `or` (left-to-right would give nothing).
        (
            "priority eq 10 or priority eq 20 and priority eq 30".into(),
            &["Alpha"],
        ),
        (
            "priority eq 10 or priority eq 20 and priority ne 10".into(),
            &["Alpha", "Beta"],
        ),
        // Parentheses override it.
        (
            "(priority eq 10 or priority eq 20) and priority ne 10".into(),
            &["Beta"],
        ),
        (
            "((priority eq 10) or (priority eq 20 and (priority ne 10)))".into(),
            &["Alpha", "Beta"],
        ),
        // `not` binds tighter than `and`.
        ("not (priority eq 10) and priority lt 30".into(), &["Beta"]),
        ("not (priority le 40)".into(), &["alpha two", "(none)"]),
        (
            "NOT (priority le 40 OR priority eq 60)".into(),
            &["alpha two"],
        ),
        (
            "not startswith(displayName,'al')".into(),
            &["Beta", "Gamma", "Delta", "(none)"],
        ),
        (
            "priority gt 10 and priority lt 60 and not contains(displayName,'a')".into(),
            &[],
        ),
        (
            "priority ge 20 and (startswith(displayName,'B') or endswith(displayName,'TWO'))"
                .into(),
            &["Beta", "alpha two"],
        ),
        // isof: quoted and bare, derived and base types.
        (
            format!("isof('{SECURITY_CAST}')"),
            &["Beta", "Delta", "(none)"],
        ),
        (
            format!("not isof('{SECURITY_CAST}')"),
            &["Alpha", "Gamma", "alpha two"],
        ),
        (
            "isof(microsoft.graph.windowsOfficeClientConfiguration) and priority gt 10".into(),
            &["Gamma", "alpha two"],
        ),
        (
            "isof('microsoft.graph.officeClientConfiguration')".into(),
            &ALL,
        ),
        // Which configurations target a group.
        (g1.clone(), &["Alpha", "Gamma"]),
        (g2_upper, &["Gamma", "Delta"]),
        (format!("{g1} and priority gt 10"), &["Gamma"]),
        (
            format!("not {g1}"),
            &["Beta", "Delta", "alpha two", "(none)"],
        ),
        (
            format!(
                "assignments/any(x: x/target/{GROUP_TARGET}/groupId in ('{G2}', 'cccccccc-0000-4000-8000-000000000009'))"
            ),
            &["Gamma", "Delta"],
        ),
        ("assignments/any()".into(), &["Alpha", "Gamma", "Delta"]),
        (
            format!("assignments/all(a: a/target/{GROUP_TARGET}/groupId eq '{G2}')"),
            &["Beta", "Delta", "alpha two", "(none)"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            filtered(&s, &t, &filter).await,
            strs(expected),
            "$filter={filter}"
        );
    }
    // A group nobody targets.
    assert_eq!(
        filtered(
            &s,
            &t,
            &format!("assignments/any(a: a/target/{GROUP_TARGET}/groupId eq 'cccccccc-0000-4000-8000-000000000009')")
        )
        .await,
        Vec::<String>::new()
    );
}

async fn filter_on_assignments() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let seed = seed(&s, &t).await;
    let path = format!("{}/assignments", cfg(seed.id("Gamma")));
    let v = get_ok(
        &s,
        &t,
        &path,
        &qs(&[(
            "$filter",
            &format!("target/{GROUP_TARGET}/groupId eq '{G2}'"),
        )]),
    )
    .await;
    let groups: Vec<&str> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["target"]["groupId"].as_str().unwrap())
        .collect();
    assert_eq!(groups, [G2]);
    let v = get_ok(&s, &t, &path, "$count=true&$top=1").await;
    assert_eq!(v["@odata.count"], 2, "{v}");
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    assert!(v["@odata.nextLink"].is_string(), "{v}");
    let r = s.get(&format!("{path}/$count"), &t).await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (200, "2"));
    let r = s
        .get(
            &format!(
                "{path}/$count?{}",
                qs(&[("$filter", &format!("id ne '{}'", seed.id("Gamma")))])
            ),
            &t,
        )
        .await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (200, "2"));
}

// ------------------------------------------------------------------------------------------
// $orderby, $top, $skip, $count, /$count, $search
// ------------------------------------------------------------------------------------------

async fn orderby_several_keys() {
    let s = Server::start().await;
    let t = s.token("contoso");
    for (name, priority) in [("Bee", 1), ("ant", 2), ("Bee", 3), ("Ant", 4), ("cat", 5)] {
        s.create(
            &t,
            json!({"@odata.type": WINDOWS, "displayName": name, "priority": priority, "description": format!("d{}", 6 - priority)}),
        )
        .await;
    }
    let cases: &[(&str, &[i64])] = &[
        ("", &[1, 2, 3, 4, 5]),
        ("priority desc", &[5, 4, 3, 2, 1]),
        ("priority asc", &[1, 2, 3, 4, 5]),
        // Case-insensitive names; ties broken by the next key.
        ("displayName,priority desc", &[4, 2, 3, 1, 5]),
        ("displayName asc,priority", &[2, 4, 1, 3, 5]),
        ("displayName desc,priority asc", &[5, 1, 3, 2, 4]),
        ("displayName DESC, priority DESC", &[5, 3, 1, 4, 2]),
        ("description", &[5, 4, 3, 2, 1]),
        ("lastModifiedDateTime desc", &[5, 4, 3, 2, 1]),
        ("lastModifiedDateTime", &[1, 2, 3, 4, 5]),
    ];
    for (orderby, expected) in cases {
        let query = if orderby.is_empty() {
            String::new()
        } else {
            qs(&[("$orderby", orderby)])
        };
        let v = get_ok(&s, &t, CONFIGS, &query).await;
        assert_eq!(priorities(&v), *expected, "$orderby={orderby}");
    }
    // With $top and $skip, and without `$`.
    let v = get_ok(
        &s,
        &t,
        CONFIGS,
        &qs(&[
            ("orderby", "displayName,priority desc"),
            ("top", "2"),
            ("skip", "1"),
        ]),
    )
    .await;
    assert_eq!(priorities(&v), [2, 3]);
    // Paging through a multi-key order visits everything once, in order.
    let all = follow(
        &s,
        &t,
        &format!(
            "{CONFIGS}?{}",
            qs(&[("$orderby", "displayName desc,priority"), ("$top", "2")])
        ),
        &[],
    )
    .await;
    assert_eq!(all.pages, [2, 2, 1]);
    let got: Vec<i64> = all
        .items
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [5, 1, 3, 2, 4]);
}

async fn top_skip_count_and_the_count_segment() {
    let s = Server::start().await;
    let t = s.token("contoso");
    seed(&s, &t).await;
    let v = get_ok(&s, &t, CONFIGS, "$top=2").await;
    assert_eq!(names(&v), ["Alpha", "Beta"]);
    assert!(v["@odata.nextLink"].is_string(), "{v}");
    assert!(v.get("@odata.count").is_none());
    let v = get_ok(&s, &t, CONFIGS, "$skip=4").await;
    assert_eq!(names(&v), ["alpha two", "(none)"]);
    assert!(v.get("@odata.nextLink").is_none(), "{v}");
    let v = get_ok(&s, &t, CONFIGS, "top=2&skip=1").await;
    assert_eq!(names(&v), ["Beta", "Gamma"]);
    let v = get_ok(&s, &t, CONFIGS, "$TOP=2&$Skip=2").await;
    assert_eq!(names(&v), ["Gamma", "Delta"]);
    let v = get_ok(&s, &t, CONFIGS, "$top=0").await;
    assert_eq!(names(&v), Vec::<String>::new());
    let v = get_ok(&s, &t, CONFIGS, "$skip=100").await;
    assert_eq!(names(&v), Vec::<String>::new());

    // $count counts every match, not the page.
    for spelling in ["$count=true", "$count=True", "count=TRUE", "$Count=true"] {
        let v = get_ok(
            &s,
            &t,
            CONFIGS,
            &format!("{spelling}&$top=2&{}", qs(&[("$filter", "priority gt 10")])),
        )
        .await;
        assert_eq!(v["@odata.count"], 5, "{spelling}: {v}");
        assert_eq!(names(&v), ["Beta", "Gamma"], "{spelling}");
        // @odata.count comes before value.
        let order: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(order.first().map(|k| k.as_str()), Some("@odata.context"));
        assert_eq!(order.last().map(|k| k.as_str()), Some("value"));
    }
    let v = get_ok(&s, &t, CONFIGS, "$count=false").await;
    assert!(v.get("@odata.count").is_none(), "{v}");
    assert_eq!(names(&v).len(), 6);
    let v = get_ok(&s, &t, CONFIGS, "$count=true&$search=baseline").await;
    assert_eq!(v["@odata.count"], 2, "{v}");

    // The /$count segment: text/plain, filters and searches apply.
    let r = s.get(&format!("{CONFIGS}/$count"), &t).await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (200, "6"));
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{:?}",
        r.header("content-type")
    );
    let r = s
        .get(
            &format!(
                "{CONFIGS}/$count?{}",
                qs(&[("$filter", "priority ge 40 or displayName eq 'Beta'")])
            ),
            &t,
        )
        .await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (200, "4"));
    let r = s
        .get(
            &format!("{CONFIGS}/$count?{}", qs(&[("search", "\"baseline\"")])),
            &t,
        )
        .await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (200, "2"));
    let r = s
        .get(
            &format!("{CONFIGS}/$count?{}", qs(&[("$filter", "priority eq")])),
            &t,
        )
        .await;
    r.assert_error(400, "BadRequest");
}

async fn search_over_display_name_and_description() {
    let s = Server::start().await;
    let t = s.token("contoso");
    seed(&s, &t).await;
    let cases: &[(&str, &str, &[&str])] = &[
        ("$search", "\"baseline\"", &["Alpha", "Delta"]),
        ("$search", "baseline", &["Alpha", "Delta"]),
        ("$search", "ALPHA", &["Alpha", "alpha two"]),
        // Only in a description.
        ("$search", "\"security\"", &["Delta"]),
        // Only in a name.
        ("$search", "bet", &["Beta"]),
        ("search", "\"o'brien\"", &["Gamma"]),
        // LIKE wildcards are literal.
        ("$search", "\"%\"", &["(none)"]),
        ("$search", "\"_\"", &["(none)"]),
        ("$search", "nothing-matches", &[]),
    ];
    for (option, term, expected) in cases {
        let v = get_ok(&s, &t, CONFIGS, &qs(&[(option, term)])).await;
        assert_eq!(names(&v), strs(expected), "{option}={term}");
    }
    // Combined with $filter and $orderby.
    let v = get_ok(
        &s,
        &t,
        CONFIGS,
        &qs(&[
            ("$search", "a"),
            ("$filter", &format!("not isof('{SECURITY_CAST}')")),
            ("$orderby", "priority desc"),
        ]),
    )
    .await;
    assert_eq!(names(&v), ["alpha two", "Gamma", "Alpha"]);
}

// ------------------------------------------------------------------------------------------
// Paging
// ------------------------------------------------------------------------------------------

struct Followed {
    items: Vec<Value>,
    pages: Vec<usize>,
    links: Vec<String>,
}

/// Follows `@odata.nextLink`s from `first` (a path under /beta, with its query) to the end,
/// sending `headers` with every request. Links must be absolute on the server's base URL.
async fn follow(s: &Server, t: &str, first: &str, headers: &[(&str, &str)]) -> Followed {
    let mut url = s.url(first);
    let mut out = Followed {
        items: Vec::new(),
        pages: Vec::new(),
        links: Vec::new(),
    };
    loop {
        let mut rb = s.client.get(&url).bearer_auth(t);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = Server::finish(rb).await;
        assert_eq!(r.status.as_u16(), 200, "{url}: {}", r.text);
        let v = r.json();
        let page = v["value"].as_array().unwrap().clone();
        out.pages.push(page.len());
        out.items.extend(page);
        assert!(out.pages.len() < 100, "paging does not end");
        match v["@odata.nextLink"].as_str() {
            Some(link) => {
                assert!(
                    link.starts_with(&format!(
                        "{}/beta/officeConfiguration/clientConfigurations",
                        s.base
                    )),
                    "nextLink not absolute on the base: {link}"
                );
                assert!(link.contains("$skiptoken="), "{link}");
                out.links.push(link.to_string());
                url = link.to_string();
            }
            None => return out,
        }
    }
}

fn unique_ids(items: &[Value]) -> Vec<String> {
    let ids: Vec<String> = items.iter().map(id_of).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "duplicates across pages");
    ids
}

async fn server_driven_paging() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let mut created = Vec::new();
    for i in 1..=250 {
        let c = s
            .create(
                &t,
                json!({"@odata.type": if i % 3 == 0 { SECURITY } else { WINDOWS }, "displayName": format!("item {i:03}"), "priority": i}),
            )
            .await;
        created.push(id_of(&c));
    }
    // Default page: 100.
    let all = follow(&s, &t, CONFIGS, &[]).await;
    assert_eq!(all.pages, [100, 100, 50]);
    assert_eq!(unique_ids(&all.items), created);

    // $top is the page size, up to 999.
    let v = get_ok(&s, &t, CONFIGS, "$top=150").await;
    assert_eq!(priorities(&v), (1..=150).collect::<Vec<_>>());
    assert!(
        v["@odata.nextLink"].as_str().unwrap().contains("$top=150"),
        "{v}"
    );
    let all = follow(&s, &t, &format!("{CONFIGS}?$top=150"), &[]).await;
    assert_eq!(all.pages, [150, 100]);
    assert_eq!(unique_ids(&all.items), created);
    let v = get_ok(&s, &t, CONFIGS, "$top=999").await;
    assert_eq!(priorities(&v), (1..=250).collect::<Vec<_>>());
    assert!(v.get("@odata.nextLink").is_none());
    let msg = s
        .get(&format!("{CONFIGS}?$top=1000"), &t)
        .await
        .assert_error(400, "BadRequest");
    assert!(msg.contains("$top") && msg.contains("999"), "{msg}");

    // Prefer: odata.maxpagesize.
    let r = Server::finish(
        s.req(Method::GET, CONFIGS, Some(&t))
            .header("prefer", "odata.maxpagesize=40"),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.header("preference-applied"), Some("odata.maxpagesize=40"));
    assert_eq!(priorities(&r.json()), (1..=40).collect::<Vec<_>>());
    let all = follow(&s, &t, CONFIGS, &[("prefer", "odata.maxpagesize=40")]).await;
    assert_eq!(all.pages, [40, 40, 40, 40, 40, 40, 10]);
    assert_eq!(unique_ids(&all.items), created);
    // $top wins over the preference, which is then not applied.
    let r = Server::finish(
        s.req(Method::GET, &format!("{CONFIGS}?$top=60"), Some(&t))
            .header("prefer", "odata.maxpagesize=40"),
    )
    .await;
    assert_eq!(r.header("preference-applied"), None);
    assert_eq!(priorities(&r.json()).len(), 60);

    // $skip then paging: the nextLink drops $skip and continues after the page.
    let v = get_ok(&s, &t, CONFIGS, "$top=5&$skip=240").await;
    assert_eq!(priorities(&v), [241, 242, 243, 244, 245]);
    let link = v["@odata.nextLink"].as_str().unwrap();
    assert!(!link.contains("$skip="), "{link}");
    let next = s
        .get(link.strip_prefix(&s.url("")).unwrap(), &t)
        .await
        .json();
    assert_eq!(priorities(&next), [246, 247, 248, 249, 250]);
    assert!(next.get("@odata.nextLink").is_none());

    // A filter and a type cast survive the nextLink.
    let filter = "priority le 90 and (startswith(displayName,'item 0') or priority eq 1)";
    let all = follow(
        &s,
        &t,
        &format!(
            "{CONFIGS}/{SECURITY_CAST}?{}",
            qs(&[("$filter", filter), ("$top", "7")])
        ),
        &[],
    )
    .await;
    let expected: Vec<i64> = (1..=90).filter(|i| i % 3 == 0).collect();
    let got: Vec<i64> = all
        .items
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(all.pages, [7, 7, 7, 7, 2]);
    assert!(
        all.links[0].starts_with(&format!("{}/{SECURITY_CAST}?", s.url(CONFIGS))),
        "{}",
        all.links[0]
    );
}

async fn next_link_on_the_public_base() {
    let s = Server::start().await;
    let t = s.token("contoso");
    seed(&s, &t).await;
    let headers = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "graph.contoso.example"),
    ];
    let mut rb = s.req(
        Method::GET,
        &format!(
            "{CONFIGS}?{}",
            qs(&[("$top", "4"), ("$filter", "priority gt 10")])
        ),
        Some(&t),
    );
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    let v = Server::finish(rb).await.json();
    assert_eq!(names(&v), ["Beta", "Gamma", "Delta", "alpha two"]);
    assert!(
        ctx(&v).starts_with("https://graph.contoso.example/beta/$metadata#"),
        "{v}"
    );
    let link = v["@odata.nextLink"].as_str().unwrap();
    let public = "https://graph.contoso.example/beta/officeConfiguration/clientConfigurations?";
    assert!(link.starts_with(public), "{link}");
    assert!(link.contains("$filter=priority%20gt%2010"), "{link}");
    assert!(link.contains("$top=4"), "{link}");
    // The link works when sent back through the proxy.
    let mut rb = s
        .client
        .get(link.replace("https://graph.contoso.example", &s.base))
        .bearer_auth(&t);
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    let r = Server::finish(rb).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    let v = r.json();
    assert_eq!(names(&v), ["(none)"]);
    assert!(v.get("@odata.nextLink").is_none());
}

/// Pages through `first` while mutating between pages: `between(page_number)` runs after each
/// page. Returns the items in the order received.
async fn page_with_mutations<F, Fut>(s: &Server, t: &str, first: &str, mut between: F) -> Vec<Value>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut url = s.url(first);
    let mut items = Vec::new();
    for page in 0.. {
        assert!(page < 100, "paging does not end");
        let r = Server::finish(s.client.get(&url).bearer_auth(t)).await;
        assert_eq!(r.status.as_u16(), 200, "{url}: {}", r.text);
        let v = r.json();
        items.extend(v["value"].as_array().unwrap().iter().cloned());
        let Some(link) = v["@odata.nextLink"].as_str() else {
            break;
        };
        url = link.to_string();
        between(page).await;
    }
    items
}

async fn keyset_paging_is_stable_under_inserts_and_deletes() {
    let s = Server::start().await;
    for (tenant, orderby) in [("contoso", None), ("fabrikam", Some("displayName desc"))] {
        let t = s.token(tenant);
        let mut by_priority = std::collections::BTreeMap::new();
        for p in (10..=300i64).step_by(10) {
            let c = s
                .create(
                    &t,
                    json!({"@odata.type": WINDOWS, "displayName": format!("item {p:03}"), "priority": p}),
                )
                .await;
            by_priority.insert(p, id_of(&c));
        }
        let descending = orderby.is_some();
        // In the order of the collection: ascending priorities, or descending names (the
        // same as descending priorities here).
        let first = match orderby {
            None => format!("{CONFIGS}?$top=7"),
            Some(o) => format!("{CONFIGS}?{}", qs(&[("$orderby", o), ("$top", "7")])),
        };
        // Values seen first in page 0 (asc: 10..70; desc: 300..240).
        let (seen_already, not_yet, before, after, later_insert, later_delete) = if descending {
            (250, 230, 305, 235, 5, 100)
        } else {
            (20, 80, 5, 75, 305, 150)
        };
        let inserted = std::cell::RefCell::new(Vec::<(i64, String)>::new());
        let deleted = std::cell::RefCell::new(Vec::<String>::new());
        let items = page_with_mutations(&s, &t, &first, |page| {
            let (s, t, by_priority, inserted, deleted) = (&s, &t, &by_priority, &inserted, &deleted);
            async move {
                let insert = |p: i64| async move {
                    let c = s
                        .create(
                            t,
                            json!({"@odata.type": SECURITY, "displayName": format!("item {p:03}"), "priority": p}),
                        )
                        .await;
                    (p, id_of(&c))
                };
                let delete = |p: i64| {
                    let id = by_priority[&p].clone();
                    async move {
                        let r = s.delete(&cfg(&id), t).await;
                        assert_eq!(r.status.as_u16(), 204, "{}", r.text);
                        id
                    }
                };
                match page {
                    0 => {
                        let a = insert(before).await;
                        let b = insert(after).await;
                        inserted.borrow_mut().extend([a, b]);
                        let x = delete(seen_already).await;
                        let y = delete(not_yet).await;
                        deleted.borrow_mut().extend([x, y]);
                    }
                    1 => {
                        let c = insert(later_insert).await;
                        inserted.borrow_mut().push(c);
                        let z = delete(later_delete).await;
                        deleted.borrow_mut().push(z);
                    }
                    _ => {}
                }
            }
        })
        .await;
        let got = unique_ids(&items);
        let deleted = deleted.into_inner();
        let inserted = inserted.into_inner();
        // Every item that existed throughout, exactly once, in order.
        let mut survivors: Vec<(i64, String)> = by_priority
            .iter()
            .filter(|(p, id)| !deleted.contains(id) || **p == seen_already)
            .map(|(p, id)| (*p, id.clone()))
            .collect();
        // Items inserted behind the cursor are not returned; items ahead of it are.
        survivors.extend(inserted.iter().filter(|(p, _)| *p != before).cloned());
        survivors.sort();
        if descending {
            survivors.reverse();
        }
        let expected: Vec<String> = survivors.into_iter().map(|(_, id)| id).collect();
        assert_eq!(
            got,
            expected,
            "{tenant}: got {:?}",
            items.iter().map(name_of).collect::<Vec<_>>()
        );
    }
}

async fn skiptoken_is_bound_to_query_and_tenant() {
    let s = Server::start().await;
    let t = s.token("contoso");
    seed(&s, &t).await;
    let other = s.token("fabrikam");
    seed(&s, &other).await;
    let query = qs(&[("$filter", "priority gt 10"), ("$top", "2")]);
    let v = get_ok(&s, &t, CONFIGS, &query).await;
    assert_eq!(names(&v), ["Beta", "Gamma"]);
    let link = v["@odata.nextLink"].as_str().unwrap();
    let token = link.split("$skiptoken=").nth(1).unwrap().to_string();
    // Replayed as issued: the next page.
    let v = get_ok(&s, &t, CONFIGS, &format!("{query}&$skiptoken={token}")).await;
    assert_eq!(names(&v), ["Delta", "alpha two"]);
    // Another $top is still the same result set.
    let v = get_ok(
        &s,
        &t,
        CONFIGS,
        &format!(
            "{}&$skiptoken={token}",
            qs(&[("$filter", "priority gt 10"), ("$top", "1")])
        ),
    )
    .await;
    assert_eq!(names(&v), ["Delta"]);

    let refused = [
        (
            t.clone(),
            CONFIGS.to_string(),
            qs(&[("$filter", "priority gt 20"), ("$top", "2")]),
        ),
        (t.clone(), CONFIGS.to_string(), "$top=2".to_string()),
        (
            t.clone(),
            CONFIGS.to_string(),
            qs(&[
                ("$filter", "priority gt 10"),
                ("$orderby", "displayName"),
                ("$top", "2"),
            ]),
        ),
        (
            t.clone(),
            CONFIGS.to_string(),
            qs(&[
                ("$filter", "priority gt 10"),
                ("$search", "a"),
                ("$top", "2"),
            ]),
        ),
        (
            t.clone(),
            format!("{CONFIGS}/{SECURITY_CAST}"),
            qs(&[("$filter", "priority gt 10"), ("$top", "2")]),
        ),
        // The same query in another tenant.
        (other.clone(), CONFIGS.to_string(), query.clone()),
    ];
    for (tok, path, q) in refused {
        let r = s.get(&format!("{path}?{q}&$skiptoken={token}"), &tok).await;
        let msg = r.assert_error(400, "BadRequest");
        assert!(msg.contains("$skiptoken"), "{path}?{q}: {msg}");
    }

    // Tampered tokens.
    use base64::Engine as _;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let decoded: Value = serde_json::from_slice(&b64url.decode(&token).unwrap()).unwrap();
    let mut flipped = token.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let mut tampered = vec![
        String::from_utf8(flipped).unwrap(),
        format!("{token}x"),
        token[..token.len() - 3].to_string(),
        "not-a-token".to_string(),
        b64url.encode(b"{}"),
        b64url.encode(b"[1,2,3]"),
    ];
    for edit in [
        json!({"k": ["x"]}),
        json!({"k": [30, 40]}),
        json!({"k": []}),
        json!({"k": [{"a": 1}]}),
        json!({"h": "0000000000000000"}),
        json!({"i": 5}),
    ] {
        let mut t2 = decoded.clone();
        for (k, v) in edit.as_object().unwrap() {
            t2[k] = v.clone();
        }
        tampered.push(b64url.encode(t2.to_string()));
    }
    for bad in tampered {
        let r = s
            .get(&format!("{CONFIGS}?{query}&$skiptoken={}", enc(&bad)), &t)
            .await;
        let msg = r.assert_error(400, "BadRequest");
        assert!(msg.contains("$skiptoken"), "{bad}: {msg}");
    }
    // Empty.
    s.get(&format!("{CONFIGS}?{query}&$skiptoken="), &t)
        .await
        .assert_error(400, "BadRequest");
}

// ------------------------------------------------------------------------------------------
// Type casts, $metadata, the service document
// ------------------------------------------------------------------------------------------

async fn type_cast_segments() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let seed = seed(&s, &t).await;
    let path = format!("{CONFIGS}/{SECURITY_CAST}");
    let v = get_ok(&s, &t, &path, "").await;
    assert_eq!(names(&v), ["Beta", "Delta", "(none)"]);
    assert!(
        ctx(&v).ends_with(&format!(
            "#officeConfiguration/clientConfigurations/{SECURITY_CAST}"
        )),
        "{v}"
    );
    for c in v["value"].as_array().unwrap() {
        assert_eq!(c["@odata.type"], SECURITY);
    }
    let v = get_ok(
        &s,
        &t,
        &path,
        &qs(&[
            ("$filter", "priority gt 20"),
            ("$count", "true"),
            ("$select", "priority"),
        ]),
    )
    .await;
    assert_eq!(priorities(&v), [40, 60]);
    assert_eq!(v["@odata.count"], 2);
    assert!(
        ctx(&v).ends_with(&format!("clientConfigurations/{SECURITY_CAST}(priority)")),
        "{v}"
    );
    let r = s.get(&format!("{path}/$count"), &t).await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (200, "3"));
    // Other spellings: the graph alias, another case, the base type.
    let v = get_ok(
        &s,
        &t,
        &format!("{CONFIGS}/graph.WindowsOfficeClientConfiguration"),
        "",
    )
    .await;
    assert_eq!(names(&v), ["Alpha", "Gamma", "alpha two"]);
    let v = get_ok(
        &s,
        &t,
        &format!("{CONFIGS}/microsoft.graph.officeClientConfiguration"),
        "",
    )
    .await;
    assert_eq!(names(&v), strs(&ALL));
    // Read-only.
    let r = s.post(&path, &t, json!({"@odata.type": SECURITY})).await;
    assert_eq!(r.status.as_u16(), 405, "{}", r.text);

    // One entity through a cast: its own type answers, another type is 404.
    let beta = seed.id("Beta");
    let v = get_ok(
        &s,
        &t,
        &format!("{}/{SECURITY_CAST}", cfg(beta)),
        "$select=displayName",
    )
    .await;
    assert_eq!(v["id"], beta);
    assert_eq!(v["displayName"], "Beta");
    assert!(
        ctx(&v).ends_with(&format!(
            "clientConfigurations/{SECURITY_CAST}(displayName)/$entity"
        )),
        "{v}"
    );
    let v = get_ok(
        &s,
        &t,
        &format!("{}/microsoft.graph.officeClientConfiguration", cfg(beta)),
        "",
    )
    .await;
    assert_eq!(v["id"], beta);
    let alpha = seed.id("Alpha");
    s.get(&format!("{}/{SECURITY_CAST}", cfg(alpha)), &t)
        .await
        .assert_error(404, "ResourceNotFound");
    let v = get_ok(
        &s,
        &t,
        &format!(
            "{}/microsoft.graph.windowsOfficeClientConfiguration",
            cfg(alpha)
        ),
        "",
    )
    .await;
    assert_eq!(v["displayName"], "Alpha");
}

async fn metadata_and_service_document() {
    let s = Server::start().await;
    // Public: no token.
    let r = Server::finish(s.client.get(s.url("/$metadata"))).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/xml"),
        "{:?}",
        r.header("content-type")
    );
    assert_eq!(r.header("odata-version"), Some("4.0"));
    let xml = &r.text;
    assert!(xml.starts_with("<?xml"), "{xml}");
    for needle in [
        r#"<Schema Namespace="microsoft.graph" Alias="graph""#,
        r#"<Singleton Name="officeConfiguration" Type="graph.officeConfiguration"/>"#,
        r#"<EntityType Name="officeClientConfiguration" BaseType="graph.entity" Abstract="true">"#,
        r#"<EntityType Name="windowsOfficeClientConfiguration" BaseType="graph.officeClientConfiguration"/>"#,
        r#"<EntityType Name="windowsOfficeClientSecurityConfiguration" BaseType="graph.officeClientConfiguration"/>"#,
        r#"<ComplexType Name="officeConfigurationAssignmentTarget" Abstract="true"/>"#,
        r#"<ComplexType Name="officeConfigurationGroupAssignmentTarget" BaseType="graph.officeConfigurationAssignmentTarget">"#,
        r#"<NavigationProperty Name="clientConfigurations" Type="Collection(graph.officeClientConfiguration)" ContainsTarget="true"/>"#,
        r#"<NavigationProperty Name="assignments" Type="Collection(graph.officeClientConfigurationAssignment)" ContainsTarget="true"/>"#,
        r#"<Property Name="priority" Type="Edm.Int32" Nullable="false"/>"#,
        r#"<Action Name="assign" IsBound="true">"#,
        r#"<Parameter Name="officeConfigurationAssignments" Type="Collection(graph.officeClientConfigurationAssignment)"/>"#,
        r#"<ReturnType Type="Collection(graph.officeClientConfigurationAssignment)"/>"#,
        r#"<Action Name="updatePriorities" IsBound="true">"#,
        r#"<Parameter Name="bindingParameter" Type="Collection(graph.officeClientConfiguration)"/>"#,
        r#"<Parameter Name="officeConfigurationPolicyIds" Type="Collection(Edm.String)"/>"#,
        r#"<Parameter Name="officeConfigurationPriorities" Type="Collection(Edm.Int32)"/>"#,
    ] {
        assert!(xml.contains(needle), "$metadata lacks {needle}");
    }
    // Balanced: every opened element is closed.
    for el in [
        "Schema",
        "EntityContainer",
        "edmx:DataServices",
        "edmx:Edmx",
    ] {
        assert_eq!(
            xml.matches(&format!("<{el} ")).count() + xml.matches(&format!("<{el}>")).count(),
            xml.matches(&format!("</{el}>")).count(),
            "{el}"
        );
    }
    // The same with a token.
    let t = s.token("contoso");
    let r2 = s.get("/$metadata", &t).await;
    assert_eq!(r2.status.as_u16(), 200);
    assert_eq!(&r2.text, xml);

    // The service document, with and without the trailing slash.
    for path in ["/", ""] {
        let r = Server::finish(s.client.get(s.url(path))).await;
        assert_eq!(r.status.as_u16(), 200, "{path}: {}", r.text);
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json")
        );
        assert_eq!(
            r.json(),
            json!({
                "@odata.context": format!("{}/beta/$metadata", s.base),
                "value": [{"name": "officeConfiguration", "kind": "Singleton", "url": "officeConfiguration"}]
            })
        );
    }
    let r = Server::finish(
        s.client
            .get(s.url("/"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "graph.contoso.example"),
    )
    .await;
    assert_eq!(
        r.json()["@odata.context"],
        "https://graph.contoso.example/beta/$metadata"
    );
    let r = s.post("/$metadata", &t, json!({})).await;
    assert_eq!(r.status.as_u16(), 405);
}

// ------------------------------------------------------------------------------------------
// Bad input
// ------------------------------------------------------------------------------------------

/// A path, its query options, and what the error message must mention.
type BadCase<'a> = (String, &'a [(&'a str, &'a str)], &'a [&'a str]);

async fn bad_options_are_400_naming_the_problem() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let seed = seed(&s, &t).await;
    let before = s.snapshot(&t).await;
    let entity = cfg(seed.id("Gamma"));
    let cases: Vec<BadCase> = vec![
        (CONFIGS.into(), &[("$count", "maybe")], &["$count", "maybe"]),
        (CONFIGS.into(), &[("$top", "-1")], &["$top", "-1"]),
        (CONFIGS.into(), &[("$top", "abc")], &["$top", "abc"]),
        (CONFIGS.into(), &[("top", "2.5")], &["$top"]),
        (CONFIGS.into(), &[("$top", "1000")], &["$top", "999"]),
        (CONFIGS.into(), &[("$skip", "-1")], &["$skip", "-1"]),
        (CONFIGS.into(), &[("$skip", "x")], &["$skip"]),
        (CONFIGS.into(), &[("$bogus", "1")], &["$bogus"]),
        (CONFIGS.into(), &[("$format", "json")], &["$format"]),
        (
            CONFIGS.into(),
            &[("$top", "1"), ("top", "2")],
            &["$top", "more than once"],
        ),
        (CONFIGS.into(), &[("$search", "\"\"")], &["$search"]),
        // $filter: syntax errors say where.
        (
            CONFIGS.into(),
            &[("$filter", "priority eq")],
            &["$filter", "position 11"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "priority eq 1)")],
            &["$filter", "position"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "(priority eq 1")],
            &["$filter", "position"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "displayName eq 'unterminated")],
            &["$filter", "position"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "priority eq 1 xor priority eq 2")],
            &["$filter", "position"],
        ),
        (CONFIGS.into(), &[("$filter", "")], &["$filter", "empty"]),
        // $filter: validation against the model.
        (
            CONFIGS.into(),
            &[("$filter", "colour eq 1")],
            &["$filter", "'colour'", "position 0"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "priority eq 1 and displayname eq 'x'")],
            &["'displayname'", "position 18", "displayName"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "priority eq 'x'")],
            &["Edm.String", "priority", "Edm.Int32"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "displayName eq 5")],
            &["displayName", "Edm.String"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "priority eq 3000000000")],
            &["out of range", "priority"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "lastModifiedDateTime gt '2024-01-01T00:00:00Z'")],
            &["lastModifiedDateTime", "DateTimeOffset"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "lastModifiedDateTime gt 2024-13-45T00:00:00Z")],
            &["DateTimeOffset"],
        ),
        (CONFIGS.into(), &[("$filter", "id eq 42")], &["id"]),
        (
            CONFIGS.into(),
            &[("$filter", "policyPayload eq null")],
            &["policyPayload"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "priority gt null")],
            &["null"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "startswith(priority,'1')")],
            &["startswith", "priority"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "tolower(displayName) eq 'x'")],
            &["tolower", "unsupported"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "startswith(displayName,'a') eq 1")],
            &["true or false"],
        ),
        (
            CONFIGS.into(),
            &[(
                "$filter",
                "isof('microsoft.graph.officeClientConfigurationAssignment')",
            )],
            &["not related", "officeClientConfigurationAssignment"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "isof('microsoft.graph.nope')")],
            &["nope"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "assignments/any(a: a/target/groupId eq 'x')")],
            &["groupId"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "displayName/any(a: a eq 'x')")],
            &["displayName"],
        ),
        (
            CONFIGS.into(),
            &[("$filter", "priority")],
            &["priority", "boolean"],
        ),
        // $orderby.
        (
            CONFIGS.into(),
            &[("$orderby", "colour")],
            &["$orderby", "'colour'"],
        ),
        (
            CONFIGS.into(),
            &[("$orderby", "policyPayload")],
            &["$orderby", "policyPayload", "sort"],
        ),
        (
            CONFIGS.into(),
            &[("$orderby", "checkinStatuses desc")],
            &["checkinStatuses"],
        ),
        (
            CONFIGS.into(),
            &[("$orderby", "priority sideways")],
            &["$orderby", "'sideways'"],
        ),
        (
            CONFIGS.into(),
            &[("$orderby", "priority,priority desc")],
            &["more than once"],
        ),
        // $select and $expand.
        (
            CONFIGS.into(),
            &[("$select", "colour")],
            &["$select", "'colour'"],
        ),
        (
            CONFIGS.into(),
            &[("$select", "displayname")],
            &["$select", "Did you mean 'displayName'"],
        ),
        (
            CONFIGS.into(),
            &[("$select", "id,,priority")],
            &["$select", "empty"],
        ),
        (
            CONFIGS.into(),
            &[("$expand", "displayName")],
            &["$expand", "'displayName'", "not a navigation property"],
        ),
        (
            CONFIGS.into(),
            &[("$expand", "colour")],
            &["$expand", "'colour'"],
        ),
        (
            CONFIGS.into(),
            &[("$expand", "assignments($select=priority)")],
            &["'priority'"],
        ),
        (
            CONFIGS.into(),
            &[("$expand", "assignments($top=1)")],
            &["$top"],
        ),
        (CONFIGS.into(), &[("$expand", "assignments(")], &["$expand"]),
        (
            "/officeConfiguration".into(),
            &[("$select", "displayName")],
            &["$select", "'displayName'"],
        ),
        (
            "/officeConfiguration".into(),
            &[("$expand", "tenantCheckinStatuses")],
            &["not a navigation property"],
        ),
        // Collection-only options on single entities.
        (entity.clone(), &[("$top", "1")], &["$top", "single entity"]),
        (
            entity.clone(),
            &[("$filter", "priority eq 1")],
            &["$filter", "single entity"],
        ),
        (
            "/officeConfiguration".into(),
            &[("$orderby", "id")],
            &["$orderby", "single entity"],
        ),
        (
            format!("{entity}/assignments"),
            &[("$orderby", "target")],
            &["$orderby", "target"],
        ),
        (
            format!("{entity}/assignments"),
            &[("$filter", "target eq null")],
            &["target"],
        ),
    ];
    for (path, options, needles) in cases {
        let url = format!("{path}?{}", qs(options));
        let r = s.get(&url, &t).await;
        let msg = r.assert_error(400, "BadRequest");
        for needle in needles {
            assert!(msg.contains(needle), "{url}: {msg:?} lacks {needle:?}");
        }
    }
    // Also on the /$count segment.
    s.get(
        &format!("{CONFIGS}/$count?{}", qs(&[("$filter", "colour eq 1")])),
        &t,
    )
    .await
    .assert_error(400, "BadRequest");
    // Custom (non-$) options are ignored; nothing changed.
    let v = get_ok(&s, &t, CONFIGS, "custom=1&api-version=2").await;
    assert_eq!(names(&v), strs(&ALL));
    assert_eq!(s.snapshot(&t).await, before);
}

engine_tests!(
    select_on_list_entity_and_singleton,
    expand_assignments_on_list_and_entity,
    expand_client_configurations_on_the_singleton,
    filter_comparisons_and_literals,
    filter_logic_precedence_isof_and_lambda,
    filter_on_assignments,
    orderby_several_keys,
    top_skip_count_and_the_count_segment,
    search_over_display_name_and_description,
    server_driven_paging,
    next_link_on_the_public_base,
    keyset_paging_is_stable_under_inserts_and_deletes,
    skiptoken_is_bound_to_query_and_tenant,
    type_cast_segments,
    metadata_and_service_document,
    bad_options_are_400_naming_the_problem,
);
