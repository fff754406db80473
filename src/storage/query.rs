//! Collection queries (`$filter`, `$search`, `$orderby`, keyset paging, `$skip`, `$count`)
//! translated to SQL. The SQL text is assembled only from fixed column names and numbered
//! placeholders (`$1`, `$2`, … — both engines accept them); every value a request supplies is
//! a bound parameter, never part of the text.

use std::fmt::Write as _;

use uuid::Uuid;

use crate::model::ConfigurationKind;
use crate::odata::filter::{BoolExpr, CompareOp, Field, LambdaKind, StringFunction, Value};

/// A bound parameter.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Param {
    Int(i64),
    Text(String),
}

/// Which collection is queried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntitySet {
    Configurations,
    /// The assignments of one configuration.
    Assignments {
        configuration_id: Uuid,
    },
}

/// A sortable column, by its Graph property name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortColumn {
    DisplayName,
    Description,
    Priority,
    LastModifiedDateTime,
    /// Stored order of assignments (their default order).
    Position,
}

impl SortColumn {
    /// The column for a sortable property of `set`, if it is one.
    pub fn for_property(set: EntitySet, name: &str) -> Option<Self> {
        match (set, name) {
            (EntitySet::Configurations, "displayName") => Some(Self::DisplayName),
            (EntitySet::Configurations, "description") => Some(Self::Description),
            (EntitySet::Configurations, "priority") => Some(Self::Priority),
            (EntitySet::Configurations, "lastModifiedDateTime") => Some(Self::LastModifiedDateTime),
            _ => None,
        }
    }

    /// The sort expression. Strings sort case-insensitively with nulls as '' (like Intune's
    /// case-insensitive collation), the same on both engines.
    fn expr(self, collate: &str) -> String {
        match self {
            Self::DisplayName => format!("lower(COALESCE(t.display_name, '')){collate}"),
            Self::Description => format!("lower(COALESCE(t.description, '')){collate}"),
            Self::Priority => "t.priority".into(),
            Self::LastModifiedDateTime => "t.last_modified_date_time".into(),
            Self::Position => "t.position".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub column: SortColumn,
    pub descending: bool,
}

/// A validated collection query, engine-neutral.
#[derive(Clone, Debug)]
pub struct CollectionQuery {
    pub set: EntitySet,
    pub filter: Option<BoolExpr>,
    pub search: Option<String>,
    /// From a type-cast segment: only these types.
    pub kinds: Option<Vec<ConfigurationKind>>,
    /// Sort keys; `id` ascending is always the final tie-breaker.
    pub order: Vec<SortKey>,
    /// Keyset cursor: the sort-key values of the last row already returned, then its id.
    pub after: Option<(Vec<Param>, String)>,
    pub offset: u64,
    pub limit: u32,
}

/// SQL text and its parameters.
pub struct Sql {
    pub text: String,
    pub params: Vec<Param>,
    collate: &'static str,
}

impl Sql {
    fn new(collate: &'static str) -> Self {
        Self {
            text: String::new(),
            params: Vec::new(),
            collate,
        }
    }

    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn bind(&mut self, p: Param) {
        self.params.push(p);
        let _ = write!(self.text, "${}", self.params.len());
    }
}

fn table(set: EntitySet) -> &'static str {
    match set {
        EntitySet::Configurations => "client_configurations",
        EntitySet::Assignments { .. } => "client_configuration_assignments",
    }
}

/// Columns selected for each set (the row decoders read these names).
fn columns(set: EntitySet) -> &'static str {
    match set {
        EntitySet::Configurations => {
            "t.id, t.odata_type, t.display_name, t.description, t.priority, t.policy_payload, t.user_preference_payload, t.checkin_statuses, t.user_checkin_summary, t.checkin_override, t.last_modified_date_time, t.version"
        }
        EntitySet::Assignments { .. } => {
            "t.id, t.configuration_id, t.target_type, t.group_id, t.version"
        }
    }
}

/// How a filterable field of a set is stored: the column and whether it holds text.
fn column_of(set: EntitySet, field: &Field, alias: &str) -> Option<(String, bool, bool)> {
    let key = field.key();
    let (col, text, nullable) = match (set, key.as_str()) {
        (_, "id") => ("id", true, false),
        (EntitySet::Configurations, "displayName") => ("display_name", true, true),
        (EntitySet::Configurations, "description") => ("description", true, true),
        (EntitySet::Configurations, "priority") => ("priority", false, false),
        (EntitySet::Configurations, "lastModifiedDateTime") => {
            ("last_modified_date_time", false, false)
        }
        (EntitySet::Assignments { .. }, "target/groupId") => ("group_id", true, true),
        _ => return None,
    };
    Some((format!("{alias}.{col}"), text, nullable))
}

fn param_of(v: &Value) -> Option<Param> {
    match v {
        Value::Null => None,
        Value::Boolean(b) => Some(Param::Int(i64::from(*b))),
        Value::Integer(i) => Some(Param::Int(*i)),
        Value::String(s) => Some(Param::Text(match Uuid::parse_str(s) {
            // GUID-valued strings (ids, group ids) are stored lower-case.
            Ok(g) if s.len() == 36 => g.to_string(),
            _ => s.clone(),
        })),
        Value::Guid(g) => Some(Param::Text(g.to_string())),
        Value::DateTimeOffset(t) => Some(Param::Int(super::sql::micros(*t))),
    }
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Errors here mean the validated filter names something this set does not store: a bug in
/// the model, reported as such.
#[derive(Debug)]
pub struct Untranslatable(pub String);

fn filter(sql: &mut Sql, set: EntitySet, alias: &str, e: &BoolExpr) -> Result<(), Untranslatable> {
    match e {
        BoolExpr::And(items) | BoolExpr::Or(items) => {
            let joiner = if matches!(e, BoolExpr::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.push("(");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sql.push(joiner);
                }
                filter(sql, set, alias, item)?;
            }
            sql.push(")");
        }
        BoolExpr::Not(inner) => {
            // Two-valued logic as OData has it: NOT of an unknown (NULL) comparison is true.
            sql.push("(NOT COALESCE((");
            filter(sql, set, alias, inner)?;
            sql.push("), FALSE))");
        }
        BoolExpr::Compare { field, op, value } => {
            let (col, text, nullable) =
                column_of(set, field, alias).ok_or_else(|| Untranslatable(field.key()))?;
            let Some(param) = param_of(value) else {
                sql.push(&col);
                sql.push(if *op == CompareOp::Ne {
                    " IS NOT NULL"
                } else {
                    " IS NULL"
                });
                return Ok(());
            };
            let lhs = if text {
                format!("lower({col}){}", sql.collate)
            } else {
                col.clone()
            };
            let op_sql = match op {
                CompareOp::Eq => "=",
                CompareOp::Ne => "<>",
                CompareOp::Gt => ">",
                CompareOp::Ge => ">=",
                CompareOp::Lt => "<",
                CompareOp::Le => "<=",
            };
            sql.push("(");
            if *op == CompareOp::Ne && nullable {
                // null ne 'x' is true in OData.
                sql.push(&format!("{col} IS NULL OR "));
            }
            sql.push(&format!("{lhs} {op_sql} "));
            if text {
                sql.push("lower(");
                sql.bind(param);
                sql.push(&format!("){}", sql.collate));
            } else {
                sql.bind(param);
            }
            sql.push(")");
        }
        BoolExpr::In { field, values } => {
            let (col, text, _) =
                column_of(set, field, alias).ok_or_else(|| Untranslatable(field.key()))?;
            let has_null = values.iter().any(|v| matches!(v, Value::Null));
            let params: Vec<Param> = values.iter().filter_map(param_of).collect();
            sql.push("(");
            if has_null {
                sql.push(&format!("{col} IS NULL"));
            }
            if !params.is_empty() {
                if has_null {
                    sql.push(" OR ");
                }
                sql.push(&if text {
                    format!("lower({col}) IN (")
                } else {
                    format!("{col} IN (")
                });
                for (i, p) in params.into_iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    if text {
                        sql.push("lower(");
                        sql.bind(p);
                        sql.push(")");
                    } else {
                        sql.bind(p);
                    }
                }
                sql.push(")");
            }
            sql.push(")");
        }
        BoolExpr::StringMatch {
            function,
            field,
            pattern,
        } => {
            let (col, _, _) =
                column_of(set, field, alias).ok_or_else(|| Untranslatable(field.key()))?;
            let escaped = escape_like(pattern);
            let like = match function {
                StringFunction::StartsWith => format!("{escaped}%"),
                StringFunction::EndsWith => format!("%{escaped}"),
                StringFunction::Contains => format!("%{escaped}%"),
            };
            sql.push(&format!("(lower({col}) LIKE lower("));
            sql.bind(Param::Text(like));
            sql.push(") ESCAPE '\\')");
        }
        BoolExpr::IsOf { concrete, .. } => {
            if concrete.is_empty() {
                sql.push("(1 = 0)");
            } else {
                sql.push(&format!("{alias}.odata_type IN ("));
                for (i, t) in concrete.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind(Param::Text((*t).to_string()));
                }
                sql.push(")");
            }
        }
        BoolExpr::Lambda {
            kind,
            navigation,
            predicate,
        } => {
            if navigation.name != "assignments" || set != EntitySet::Configurations {
                return Err(Untranslatable(navigation.name.to_string()));
            }
            let inner = EntitySet::Assignments {
                configuration_id: Uuid::nil(),
            };
            let exists = if *kind == LambdaKind::All {
                "NOT EXISTS"
            } else {
                "EXISTS"
            };
            sql.push(&format!(
                "({exists} (SELECT 1 FROM client_configuration_assignments a WHERE a.tenant_id = {alias}.tenant_id AND a.configuration_id = {alias}.id"
            ));
            if let Some(p) = predicate {
                sql.push(if *kind == LambdaKind::All {
                    " AND NOT COALESCE(("
                } else {
                    " AND ("
                });
                filter(sql, inner, "a", p)?;
                sql.push(if *kind == LambdaKind::All {
                    "), FALSE)"
                } else {
                    ")"
                });
            }
            sql.push("))");
        }
    }
    Ok(())
}

/// `WHERE` clause shared by the page query and the count query.
fn where_clause(sql: &mut Sql, tenant: &str, q: &CollectionQuery) -> Result<(), Untranslatable> {
    sql.push(" WHERE t.tenant_id = ");
    sql.bind(Param::Text(tenant.to_string()));
    if let EntitySet::Assignments { configuration_id } = q.set {
        sql.push(" AND t.configuration_id = ");
        sql.bind(Param::Text(configuration_id.to_string()));
    }
    if let Some(kinds) = &q.kinds {
        sql.push(" AND t.odata_type IN (");
        for (i, k) in kinds.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Param::Text(k.type_name().to_string()));
        }
        sql.push(")");
    }
    if let Some(f) = &q.filter {
        sql.push(" AND ");
        filter(sql, q.set, "t", f)?;
    }
    if let Some(term) = &q.search
        && q.set == EntitySet::Configurations
    {
        let pattern = format!("%{}%", escape_like(term));
        sql.push(" AND (lower(COALESCE(t.display_name, '')) LIKE lower(");
        sql.bind(Param::Text(pattern.clone()));
        sql.push(") ESCAPE '\\' OR lower(COALESCE(t.description, '')) LIKE lower(");
        sql.bind(Param::Text(pattern));
        sql.push(") ESCAPE '\\')");
    }
    Ok(())
}

/// The page query: matching rows in order, after the cursor, with their sort-key values as
/// `k0, k1, …` (so the next cursor is computed by the database, exactly as it compares).
pub fn page(
    tenant: &str,
    q: &CollectionQuery,
    collate: &'static str,
) -> Result<Sql, Untranslatable> {
    let mut sql = Sql::new(collate);
    sql.push(&format!("SELECT {}", columns(q.set)));
    for (i, k) in q.order.iter().enumerate() {
        sql.push(&format!(", {} AS k{i}", k.column.expr("")));
    }
    sql.push(&format!(" FROM {} t", table(q.set)));
    where_clause(&mut sql, tenant, q)?;
    if let Some((values, last_id)) = &q.after
        && q.order.iter().all(|k| !k.descending)
    {
        // All ascending: one row-value comparison, which both engines answer with an index
        // range scan on (tenant_id, priority, id) — a deep page costs what the first does.
        sql.push(" AND (");
        for k in &q.order {
            sql.push(&format!("{}, ", k.column.expr(collate)));
        }
        sql.push("t.id) > (");
        for (j, _) in q.order.iter().enumerate() {
            sql.bind(values.get(j).cloned().unwrap_or(Param::Int(0)));
            sql.push(", ");
        }
        sql.bind(Param::Text(last_id.clone()));
        sql.push(")");
    } else if let Some((values, last_id)) = &q.after {
        // (k0, k1, …, id) strictly after the cursor, each key in its own direction.
        sql.push(" AND (");
        let n = q.order.len();
        for i in 0..=n {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push("(");
            for (j, key) in q.order.iter().enumerate().take(i) {
                if j > 0 {
                    sql.push(" AND ");
                }
                sql.push(&format!("{} = ", key.column.expr(collate)));
                sql.bind(values.get(j).cloned().unwrap_or(Param::Int(0)));
            }
            if i > 0 {
                sql.push(" AND ");
            }
            if i < n {
                let key = q.order[i];
                let op = if key.descending { "<" } else { ">" };
                sql.push(&format!("{} {op} ", key.column.expr(collate)));
                sql.bind(values.get(i).cloned().unwrap_or(Param::Int(0)));
            } else {
                sql.push("t.id > ");
                sql.bind(Param::Text(last_id.clone()));
            }
            sql.push(")");
        }
        sql.push(")");
    }
    sql.push(" ORDER BY ");
    for k in &q.order {
        sql.push(&format!(
            "{} {}, ",
            k.column.expr(collate),
            if k.descending { "DESC" } else { "ASC" }
        ));
    }
    sql.push("t.id ASC LIMIT ");
    sql.bind(Param::Int(i64::from(q.limit)));
    sql.push(" OFFSET ");
    sql.bind(Param::Int(i64::try_from(q.offset).unwrap_or(i64::MAX)));
    Ok(sql)
}

/// The assignments of several configurations (for `$expand`).
pub fn assignments_of(tenant: &str, configuration_ids: &[Uuid]) -> Sql {
    let mut sql = Sql::new("");
    sql.push(&format!(
        "SELECT {} FROM client_configuration_assignments t WHERE t.tenant_id = ",
        columns(EntitySet::Assignments {
            configuration_id: Uuid::nil()
        })
    ));
    sql.bind(Param::Text(tenant.to_string()));
    sql.push(" AND t.configuration_id IN (");
    for (i, id) in configuration_ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(Param::Text(id.to_string()));
    }
    if configuration_ids.is_empty() {
        sql.push("NULL");
    }
    sql.push(")");
    sql
}

pub fn count(
    tenant: &str,
    q: &CollectionQuery,
    collate: &'static str,
) -> Result<Sql, Untranslatable> {
    let mut sql = Sql::new(collate);
    sql.push(&format!("SELECT COUNT(*) FROM {} t", table(q.set)));
    where_clause(&mut sql, tenant, q)?;
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odata::filter::parse_and_validate;

    fn q(filter: &str) -> CollectionQuery {
        CollectionQuery {
            set: EntitySet::Configurations,
            filter: Some(parse_and_validate(filter, "officeClientConfiguration").unwrap()),
            search: None,
            kinds: None,
            order: vec![],
            after: None,
            offset: 0,
            limit: 10,
        }
    }

    #[test]
    fn values_are_always_bound_never_inlined() {
        let hostile = "x') OR 1=1 --";
        let sql = page(
            "t1",
            &q(&format!("displayName eq '{}'", hostile.replace('\'', "''"))),
            "",
        )
        .unwrap();
        assert!(!sql.text.contains("OR 1=1"), "{}", sql.text);
        assert!(sql.params.contains(&Param::Text(hostile.into())));
    }

    #[test]
    fn lambda_becomes_exists() {
        let sql = page(
            "t1",
            &q("assignments/any(a: a/target/microsoft.graph.officeConfigurationGroupAssignmentTarget/groupId eq '3c6f3e3a-6f4e-4e7e-9d51-4a7d1c0e0001')"),
            "",
        )
        .unwrap();
        assert!(
            sql.text
                .contains("EXISTS (SELECT 1 FROM client_configuration_assignments a"),
            "{}",
            sql.text
        );
        assert!(sql.text.contains("a.group_id"), "{}", sql.text);
    }

    #[test]
    fn keyset_condition_covers_every_prefix() {
        let mut query = q("priority gt 1");
        query.order = vec![
            SortKey {
                column: SortColumn::DisplayName,
                descending: true,
            },
            SortKey {
                column: SortColumn::Priority,
                descending: false,
            },
        ];
        query.after = Some((vec![Param::Text("b".into()), Param::Int(3)], "id-1".into()));
        let sql = page("t1", &query, "").unwrap();
        assert!(
            sql.text.contains("lower(COALESCE(t.display_name, '')) < $"),
            "{}",
            sql.text
        );
        assert!(sql.text.contains("t.priority > $"), "{}", sql.text);
        assert!(sql.text.contains("t.id > $"), "{}", sql.text);
    }

    #[test]
    fn ascending_keyset_uses_a_row_value_comparison() {
        let mut query = q("priority gt 1");
        query.order = vec![SortKey {
            column: SortColumn::Priority,
            descending: false,
        }];
        query.after = Some((vec![Param::Int(3)], "id-1".into()));
        let sql = page("t1", &query, "").unwrap();
        assert!(sql.text.contains("(t.priority, t.id) > ($"), "{}", sql.text);
    }

    #[test]
    fn like_patterns_are_escaped() {
        let sql = page("t1", &q("contains(displayName,'50%_off')"), "").unwrap();
        assert!(
            sql.params.contains(&Param::Text("%50\\%\\_off%".into())),
            "{:?}",
            sql.params
        );
    }
}
