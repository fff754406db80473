//! Parsing and validation of the system query options other than the `$filter` grammar
//! (which lives in [`super::filter`]), from the `(name, value)` pairs of [`QueryOptions`].
//! The result, [`ParsedQuery`], is checked against one entity type of the EDM model.

use super::QueryOptions;
use super::edm::{MODEL, NavigationProperty, Property};
use super::filter::{self, BoolExpr};
use crate::error::{GraphError, GraphResult};

/// Largest `$top` accepted.
pub const MAX_TOP: u32 = 999;
/// Longest `$search`, `$select`, `$expand`, `$orderby` or `$skiptoken` value accepted, in bytes.
pub const MAX_OPTION_LEN: usize = 4096;

/// What the request addresses: a collection (all options apply) or a single entity or the
/// singleton (only `$select` and `$expand`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Collection,
    Entity,
}

/// `$select`: which properties to return.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Select {
    /// No `$select`, or `$select=*`.
    #[default]
    All,
    /// Structural or navigation property names, in request order, without duplicates.
    Properties(Vec<&'static str>),
}

impl Select {
    /// Whether `name` is to be returned (`id` and `@odata.type` always are).
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Properties(p) => name == "id" || p.contains(&name),
        }
    }

    /// The select list of a context URL (`#…(id,displayName)`), if any.
    pub fn context_list(&self) -> Option<String> {
        match self {
            Self::All => None,
            Self::Properties(p) => Some(p.join(",")),
        }
    }
}

/// One `$expand` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expand {
    pub navigation: &'static NavigationProperty,
    /// Nested `$select` applying to the expanded entities.
    pub select: Select,
}

/// One `$orderby` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderKey {
    pub property: &'static Property,
    pub descending: bool,
}

/// The validated query options of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedQuery {
    /// The entity type the options were validated against (unqualified).
    pub entity_type: &'static str,
    pub select: Select,
    pub expand: Vec<Expand>,
    pub filter: Option<BoolExpr>,
    /// The `$filter` text as sent (for `@odata.nextLink` and binding a `$skiptoken` to it).
    pub filter_text: Option<String>,
    pub orderby: Vec<OrderKey>,
    pub top: Option<u32>,
    pub skip: Option<u64>,
    pub count: bool,
    /// The `$search` term, surrounding double quotes removed.
    pub search: Option<String>,
    /// Opaque; decoding and checking it is the paging layer's business.
    pub skiptoken: Option<String>,
}

fn bad(msg: impl Into<String>) -> GraphError {
    GraphError::bad_request(msg)
}

fn qualified(name: &str) -> String {
    format!("microsoft.graph.{name}")
}

impl ParsedQuery {
    /// Nothing asked for.
    pub fn empty(entity_type: &'static str) -> Self {
        Self {
            entity_type,
            select: Select::All,
            expand: Vec::new(),
            filter: None,
            filter_text: None,
            orderby: Vec::new(),
            top: None,
            skip: None,
            count: false,
            search: None,
            skiptoken: None,
        }
    }

    /// Validates `options` for a request on `entity_type` (unqualified, e.g.
    /// `officeClientConfiguration`, or a derived type after a cast segment).
    pub fn parse(
        options: &QueryOptions,
        entity_type: &'static str,
        target: Target,
    ) -> GraphResult<Self> {
        if MODEL.entity_type(entity_type).is_none() {
            return Err(GraphError::internal(anyhow::anyhow!(
                "query options validated against unknown type {entity_type}"
            )));
        }
        let mut q = Self::empty(entity_type);
        for (name, value) in &options.options {
            let collection_only = !matches!(name.as_str(), "select" | "expand");
            if collection_only && target == Target::Entity {
                return Err(bad(format!(
                    "The query option '${name}' is not allowed when requesting a single entity."
                )));
            }
            if value.len() > MAX_OPTION_LEN && name != "filter" {
                return Err(bad(format!(
                    "The value of the query option '${name}' is longer than {MAX_OPTION_LEN} bytes."
                )));
            }
            match name.as_str() {
                "select" => q.select = parse_select(value, entity_type, "$select")?,
                "expand" => q.expand = parse_expand(value, entity_type)?,
                "filter" => {
                    q.filter = Some(filter::parse_and_validate(value, entity_type)?);
                    q.filter_text = Some(value.clone());
                }
                "orderby" => q.orderby = parse_orderby(value, entity_type)?,
                "top" => q.top = Some(parse_top(value)?),
                "skip" => q.skip = Some(parse_skip(value)?),
                "count" => q.count = parse_bool(value, "$count")?,
                "search" => q.search = Some(parse_search(value)?),
                "skiptoken" => {
                    if value.is_empty() {
                        return Err(bad("The query option '$skiptoken' must not be empty."));
                    }
                    q.skiptoken = Some(value.clone());
                }
                other => {
                    return Err(bad(format!(
                        "The query option '${other}' is not supported."
                    )));
                }
            }
        }
        Ok(q)
    }
}

/// Splits a `$expand` value (or the options inside one item) on `sep` outside parentheses
/// and single-quoted strings.
fn split_top_level(s: &str, sep: char) -> GraphResult<Vec<&str>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    bad(format!("Invalid $expand: unbalanced ')' at position {i}."))
                })?;
            }
            c if c == sep && !quoted && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 || quoted {
        return Err(bad("Invalid $expand: unbalanced parentheses or quotes."));
    }
    out.push(&s[start..]);
    Ok(out)
}

/// Parses a `$select` list for `type_name`; `option` names the option in errors.
fn parse_select(value: &str, type_name: &'static str, option: &str) -> GraphResult<Select> {
    let mut props: Vec<&'static str> = Vec::new();
    let mut star = false;
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad(format!(
                "The query option '{option}' contains an empty item."
            )));
        }
        if item == "*" {
            star = true;
            continue;
        }
        let name = if let Some(p) = MODEL.property(type_name, item) {
            p.name
        } else if let Some(n) = MODEL.navigation_property(type_name, item) {
            n.name
        } else {
            let hint = MODEL
                .similar_property(type_name, item)
                .map(|p| format!(" Did you mean '{p}'?"))
                .unwrap_or_default();
            return Err(bad(format!(
                "Invalid {option}: could not find a property named '{item}' on type '{}'.{hint}",
                qualified(type_name)
            )));
        };
        if !props.contains(&name) {
            props.push(name);
        }
    }
    Ok(if star {
        Select::All
    } else {
        Select::Properties(props)
    })
}

fn parse_expand(value: &str, type_name: &'static str) -> GraphResult<Vec<Expand>> {
    let mut out: Vec<Expand> = Vec::new();
    for item in split_top_level(value, ',')? {
        let item = item.trim();
        let (name, nested) = match item.find('(') {
            Some(open) => {
                let Some(inner) = item[open + 1..].strip_suffix(')') else {
                    return Err(bad(format!(
                        "Invalid $expand: '{item}' has text after its closing parenthesis."
                    )));
                };
                (item[..open].trim(), Some(inner))
            }
            None => (item, None),
        };
        if name.is_empty() {
            return Err(bad("Invalid $expand: empty item."));
        }
        let navs: Vec<&'static NavigationProperty> = if name == "*" {
            MODEL.navigation_properties(type_name)
        } else if let Some(n) = MODEL.navigation_property(type_name, name) {
            vec![n]
        } else if MODEL.property(type_name, name).is_some() {
            return Err(bad(format!(
                "Invalid $expand: '{name}' is not a navigation property of type '{}'; only navigation properties can be expanded.",
                qualified(type_name)
            )));
        } else {
            return Err(bad(format!(
                "Invalid $expand: could not find a navigation property named '{name}' on type '{}'.",
                qualified(type_name)
            )));
        };
        for nav in navs {
            let select = match nested {
                Some(inner) => parse_nested(inner, nav)?,
                None => Select::All,
            };
            if out.iter().any(|e| e.navigation.name == nav.name) {
                return Err(bad(format!(
                    "Invalid $expand: '{}' is expanded more than once.",
                    nav.name
                )));
            }
            out.push(Expand {
                navigation: nav,
                select,
            });
        }
    }
    Ok(out)
}

/// The options inside `nav(…)`: `$select` (with or without `$`), `;`-separated.
fn parse_nested(inner: &str, nav: &'static NavigationProperty) -> GraphResult<Select> {
    let mut select = Select::All;
    let mut seen = false;
    for opt in split_top_level(inner, ';')? {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let Some((name, value)) = opt.split_once('=') else {
            return Err(bad(format!(
                "Invalid $expand: '{opt}' inside '{}(…)' is not a query option.",
                nav.name
            )));
        };
        let bare = name.trim();
        let bare = bare.strip_prefix('$').unwrap_or(bare).to_ascii_lowercase();
        if bare != "select" {
            return Err(bad(format!(
                "Invalid $expand: the query option '${bare}' is not supported inside '{}(…)'; only $select is.",
                nav.name
            )));
        }
        if seen {
            return Err(bad(format!(
                "Invalid $expand: $select is given more than once inside '{}(…)'.",
                nav.name
            )));
        }
        seen = true;
        select = parse_select(value, nav.target, "$select inside $expand")?;
    }
    Ok(select)
}

fn parse_orderby(value: &str, type_name: &'static str) -> GraphResult<Vec<OrderKey>> {
    let mut keys: Vec<OrderKey> = Vec::new();
    for item in value.split(',') {
        let mut words = item.split_whitespace();
        let Some(name) = words.next() else {
            return Err(bad("Invalid $orderby: empty item."));
        };
        let descending = match words.next() {
            None => false,
            Some(d) if d.eq_ignore_ascii_case("asc") => false,
            Some(d) if d.eq_ignore_ascii_case("desc") => true,
            Some(d) => {
                return Err(bad(format!(
                    "Invalid $orderby: expected 'asc' or 'desc' after '{name}', found '{d}'."
                )));
            }
        };
        if let Some(extra) = words.next() {
            return Err(bad(format!(
                "Invalid $orderby: unexpected '{extra}' after '{item}'.",
                item = item.trim()
            )));
        }
        let Some(property) = MODEL.property(type_name, name) else {
            let hint = MODEL
                .similar_property(type_name, name)
                .map(|p| format!(" Did you mean '{p}'?"))
                .unwrap_or_default();
            return Err(bad(format!(
                "Invalid $orderby: could not find a property named '{name}' on type '{}'.{hint}",
                qualified(type_name)
            )));
        };
        if !property.sortable {
            return Err(bad(format!(
                "Invalid $orderby: the property '{name}' cannot be used for sorting."
            )));
        }
        if keys.iter().any(|k| k.property.name == property.name) {
            return Err(bad(format!(
                "Invalid $orderby: '{name}' appears more than once."
            )));
        }
        keys.push(OrderKey {
            property,
            descending,
        });
    }
    Ok(keys)
}

fn parse_top(value: &str) -> GraphResult<u32> {
    let invalid = || {
        bad(format!(
            "Invalid value '{value}' for the query option '$top': expected an integer from 0 to {MAX_TOP}."
        ))
    };
    let n: i64 = value.trim().parse().map_err(|_| invalid())?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_TOP)
        .ok_or_else(invalid)
}

fn parse_skip(value: &str) -> GraphResult<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| {
            bad(format!(
                "Invalid value '{value}' for the query option '$skip': expected a non-negative integer."
            ))
        })
}

fn parse_bool(value: &str, option: &str) -> GraphResult<bool> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("true") => Ok(true),
        v if v.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(bad(format!(
            "Invalid value '{value}' for the query option '{option}': expected true or false."
        ))),
    }
}

fn parse_search(value: &str) -> GraphResult<String> {
    let v = value.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    if v.trim().is_empty() {
        return Err(bad("The query option '$search' must not be empty."));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odata::edm::{ASSIGNMENT, CLIENT_CONFIGURATION, OFFICE_CONFIGURATION};

    fn q(query: &str, ty: &'static str, target: Target) -> GraphResult<ParsedQuery> {
        ParsedQuery::parse(&QueryOptions::parse(Some(query))?, ty, target)
    }

    fn ok(query: &str) -> ParsedQuery {
        q(query, CLIENT_CONFIGURATION, Target::Collection)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    fn err(query: &str) -> String {
        match q(query, CLIENT_CONFIGURATION, Target::Collection) {
            Ok(p) => panic!("{query} accepted: {p:?}"),
            Err(e) => {
                assert!(matches!(e, GraphError::BadRequest(_)), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn everything_at_once() {
        let p = ok(
            "$select=displayName,priority,displayName&$expand=assignments($select=target)\
                    &$filter=priority%20gt%201&$orderby=priority%20desc,displayName&$top=5\
                    &skip=2&$count=True&$search=%22contoso%22&$skiptoken=abc",
        );
        assert_eq!(
            p.select,
            Select::Properties(vec!["displayName", "priority"])
        );
        assert_eq!(p.select.context_list().unwrap(), "displayName,priority");
        assert!(p.select.includes("id") && !p.select.includes("description"));
        assert_eq!(p.expand.len(), 1);
        assert_eq!(p.expand[0].navigation.name, "assignments");
        assert_eq!(p.expand[0].select, Select::Properties(vec!["target"]));
        assert!(p.filter.is_some());
        assert_eq!(p.filter_text.as_deref(), Some("priority gt 1"));
        let keys: Vec<_> = p
            .orderby
            .iter()
            .map(|k| (k.property.name, k.descending))
            .collect();
        assert_eq!(keys, [("priority", true), ("displayName", false)]);
        assert_eq!(p.top, Some(5));
        assert_eq!(p.skip, Some(2));
        assert!(p.count);
        assert_eq!(p.search.as_deref(), Some("contoso"));
        assert_eq!(p.skiptoken.as_deref(), Some("abc"));
    }

    #[test]
    fn defaults() {
        assert_eq!(ok(""), ParsedQuery::empty(CLIENT_CONFIGURATION));
        assert_eq!(ok("$select=*").select, Select::All);
        assert!(!ok("$count=FALSE").count);
        assert_eq!(ok("$search=plain").search.as_deref(), Some("plain"));
        assert_eq!(ok("$top=0").top, Some(0));
        assert_eq!(ok("$top=999").top, Some(999));
        assert_eq!(ok("$orderby=id%20ASC").orderby[0].property.name, "id");
    }

    #[test]
    fn expand_forms() {
        let p = ok("$expand=*");
        assert_eq!(p.expand[0].navigation.name, "assignments");
        let p = ok("$expand=assignments($select=id,target;)");
        assert_eq!(p.expand[0].select, Select::Properties(vec!["id", "target"]));
        let p = ok("$expand=assignments(select=id)");
        assert_eq!(p.expand[0].select, Select::Properties(vec!["id"]));
        let p = q(
            "$expand=clientConfigurations($select=displayName,priority)&$select=id",
            OFFICE_CONFIGURATION,
            Target::Entity,
        )
        .unwrap();
        assert_eq!(p.expand[0].navigation.name, "clientConfigurations");
        assert_eq!(
            p.expand[0].select,
            Select::Properties(vec!["displayName", "priority"])
        );
        assert!(q("$expand=target", ASSIGNMENT, Target::Collection).is_err());
    }

    #[test]
    fn bad_input_names_the_problem() {
        assert!(err("$top=-1").contains("$top"));
        assert!(err("$top=abc").contains("$top"));
        assert!(err("$top=1000").contains("999"));
        assert!(err("$skip=-3").contains("$skip"));
        assert!(err("$count=yes").contains("$count"));
        assert!(err("$select=colour").contains("'colour'"));
        assert!(err("$select=displayname").contains("Did you mean 'displayName'"));
        assert!(err("$select=id,,priority").contains("empty"));
        assert!(err("$expand=displayName").contains("not a navigation property"));
        assert!(err("$expand=nothing").contains("'nothing'"));
        assert!(err("$expand=assignments($top=1)").contains("only $select"));
        assert!(err("$expand=assignments($select=priority)").contains("'priority'"));
        assert!(err("$expand=assignments(").contains("$expand: unbalanced"));
        assert!(err("$expand=assignments)").contains("$expand: unbalanced ')'"));
        assert!(err("$expand=assignments,assignments").contains("more than once"));
        assert!(err("$orderby=colour").contains("'colour'"));
        assert!(err("$orderby=policyPayload").contains("cannot be used for sorting"));
        assert!(err("$orderby=checkinStatuses%20desc").contains("sorting"));
        assert!(err("$orderby=priority%20down").contains("'down'"));
        assert!(err("$orderby=priority,priority%20desc").contains("more than once"));
        assert!(err("$filter=priority%20eq%20'x'").contains("$filter"));
        assert!(err("$filter=colour%20eq%201").contains("position 0"));
        assert!(err("$search=%22%22").contains("$search"));
        assert!(err("$format=json").contains("$format"));
        let e = q("$top=1", CLIENT_CONFIGURATION, Target::Entity).unwrap_err();
        assert!(e.to_string().contains("single entity"));
        assert!(
            q(
                "$filter=id%20eq%20'1'",
                OFFICE_CONFIGURATION,
                Target::Entity
            )
            .is_err()
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(
                name in prop_oneof![
                    Just("select"), Just("expand"), Just("orderby"), Just("top"),
                    Just("skip"), Just("count"), Just("search"), Just("skiptoken"),
                    Just("filter"),
                ],
                value in ".{0,64}",
                entity in any::<bool>(),
            ) {
                let options = QueryOptions { options: vec![(name.to_string(), value)] };
                let target = if entity { Target::Entity } else { Target::Collection };
                let _ = ParsedQuery::parse(&options, CLIENT_CONFIGURATION, target);
            }

            #[test]
            fn expand_never_panics(value in "[a-z*$=();, ']{0,40}") {
                let options = QueryOptions { options: vec![("expand".into(), value)] };
                let _ = ParsedQuery::parse(&options, OFFICE_CONFIGURATION, Target::Collection);
            }
        }
    }
}
