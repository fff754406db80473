//! `$filter`: a winnow parser into a syntax tree ([`Expr`]), then validation against the EDM
//! model into a typed tree ([`BoolExpr`]) that the SQL builder translates.
//!
//! Grammar (OData 4.01 precedence, loosest first): `or` < `and` < `eq ne` < `gt ge lt le` <
//! prefix `not` < primary (`in`, member paths, calls, lambdas, literals, parentheses). `eq`/`ne`
//! and the relational operators are non-associative. Keywords are case-insensitive and need a
//! word boundary (`android` is an identifier). `and`/`or` chains are flattened into n-ary
//! nodes, so the tree depth is bounded by the nesting of parentheses, `not` and lambdas
//! ([`MAX_DEPTH`]); the input length is bounded by [`MAX_LEN`].

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;
use winnow::ascii::{Caseless, digit1, multispace0};
use winnow::combinator::{
    Infix, Prefix, alt, cut_err, expression, not, opt, peek, preceded, repeat, separated,
};
use winnow::error::{ContextError, ErrMode, StrContext, StrContextValue};
use winnow::prelude::*;
use winnow::stream::Stream;
use winnow::token::{literal, one_of, take, take_while};
use winnow::{ModalResult, Stateful};

use super::edm::{MODEL, NavigationProperty, Primitive, Property, StructuredType, TypeKind};
use crate::error::{GraphError, GraphResult};

/// Longest `$filter` accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not`, calls and lambdas accepted.
pub const MAX_DEPTH: usize = 32;

// ------------------------------------------------------------------------------------------
// Syntax tree
// ------------------------------------------------------------------------------------------

/// Where a node was written, as byte offsets into the `$filter` text. Spans are diagnostics
/// only: they compare equal to each other, so two trees are equal whatever their layout.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl PartialEq for Span {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Span {}

/// A primitive literal as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Null,
    Boolean(bool),
    /// Any integer that fits `Edm.Int64`; narrowed to the property's type by validation.
    Integer(i64),
    String(String),
    Guid(Uuid),
    DateTimeOffset(OffsetDateTime),
}

impl Literal {
    /// The EDM type name of the literal, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Boolean(_) => "Edm.Boolean",
            Self::Integer(n) if i32::try_from(*n).is_ok() => "Edm.Int32",
            Self::Integer(_) => "Edm.Int64",
            Self::String(_) => "Edm.String",
            Self::Guid(_) => "Edm.Guid",
            Self::DateTimeOffset(_) => "Edm.DateTimeOffset",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Gt => "gt",
            Self::Ge => "ge",
            Self::Lt => "lt",
            Self::Le => "le",
        }
    }

    /// The operator with its operands swapped (`5 lt p` is `p gt 5`).
    pub fn flipped(self) -> Self {
        match self {
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            other => other,
        }
    }

    fn power(self) -> i64 {
        match self {
            Self::Eq | Self::Ne => 6,
            _ => 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LambdaKind {
    Any,
    All,
}

/// The `$filter` syntax tree, before any name resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal {
        value: Literal,
        span: Span,
    },
    /// A member path such as `displayName` or `a/target/microsoft.graph.x/groupId`.
    Path {
        segments: Vec<String>,
        span: Span,
    },
    /// A function call; the name is stored lower-case.
    Call {
        name: String,
        args: Vec<Expr>,
        span: Span,
    },
    /// `path/any(var: body)`, `path/any()`, `path/all(var: body)`.
    Lambda {
        path: Vec<String>,
        kind: LambdaKind,
        body: Option<(String, Box<Expr>)>,
        span: Span,
    },
    Compare {
        op: CompareOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `left in (l1, l2, …)`; the list holds literals only.
    In {
        left: Box<Expr>,
        list: Vec<Expr>,
        span: Span,
    },
    Not(Box<Expr>),
    /// Two or more operands, none of them an `And`.
    And(Vec<Expr>),
    /// Two or more operands, none of them an `Or`.
    Or(Vec<Expr>),
}

const PREC_OR: i64 = 2;
const PREC_AND: i64 = 4;
const PREC_NOT: i64 = 14;
/// `in` is a primary-group operator, but not chainable: `(a in (1)) in (true)`.
const PREC_IN: i64 = 18;
const PREC_PRIMARY: i64 = 20;

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Self::Literal { span, .. }
            | Self::Path { span, .. }
            | Self::Call { span, .. }
            | Self::Lambda { span, .. }
            | Self::In { span, .. } => *span,
            Self::Compare { left, right, .. } => Span {
                start: left.span().start,
                end: right.span().end,
            },
            Self::Not(e) => e.span(),
            Self::And(items) | Self::Or(items) => Span {
                start: items.first().map_or(0, |e| e.span().start),
                end: items.last().map_or(0, |e| e.span().end),
            },
        }
    }

    /// `a and b`, flattening nested `And`s.
    pub fn and(a: Expr, b: Expr) -> Expr {
        let mut items = Vec::new();
        for e in [a, b] {
            match e {
                Expr::And(inner) => items.extend(inner),
                other => items.push(other),
            }
        }
        Expr::And(items)
    }

    /// `a or b`, flattening nested `Or`s.
    pub fn or(a: Expr, b: Expr) -> Expr {
        let mut items = Vec::new();
        for e in [a, b] {
            match e {
                Expr::Or(inner) => items.extend(inner),
                other => items.push(other),
            }
        }
        Expr::Or(items)
    }

    fn precedence(&self) -> i64 {
        match self {
            Self::Or(_) => PREC_OR,
            Self::And(_) => PREC_AND,
            Self::Compare { op, .. } => op.power(),
            Self::Not(_) => PREC_NOT,
            Self::In { .. } => PREC_IN,
            _ => PREC_PRIMARY,
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Boolean(b) => write!(f, "{b}"),
            Self::Integer(n) => write!(f, "{n}"),
            Self::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Self::Guid(g) => write!(f, "{}", g.hyphenated()),
            Self::DateTimeOffset(t) => f.write_str(&t.format(&Rfc3339).map_err(|_| fmt::Error)?),
        }
    }
}

/// Writes `e`, in parentheses when it binds looser than `min` requires.
fn write_child(f: &mut fmt::Formatter<'_>, e: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

/// Canonical text that parses back to an equal tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal { value, .. } => write!(f, "{value}"),
            Self::Path { segments, .. } => f.write_str(&segments.join("/")),
            Self::Call { name, args, .. } => {
                write!(f, "{name}(")?;
                for (n, a) in args.iter().enumerate() {
                    if n > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Self::Lambda {
                path, kind, body, ..
            } => {
                let k = match kind {
                    LambdaKind::Any => "any",
                    LambdaKind::All => "all",
                };
                write!(f, "{}/{k}(", path.join("/"))?;
                if let Some((var, body)) = body {
                    write!(f, "{var}:{body}")?;
                }
                f.write_str(")")
            }
            Self::Compare { op, left, right } => {
                let p = op.power();
                write_child(f, left, left.precedence() <= p)?;
                write!(f, " {} ", op.keyword())?;
                write_child(f, right, right.precedence() <= p)
            }
            Self::In { left, list, .. } => {
                write_child(f, left, left.precedence() < PREC_PRIMARY)?;
                f.write_str(" in (")?;
                for (n, a) in list.iter().enumerate() {
                    if n > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Self::Not(e) => {
                f.write_str("not ")?;
                write_child(f, e, e.precedence() < PREC_NOT)
            }
            Self::And(items) | Self::Or(items) => {
                let (p, word) = if matches!(self, Self::And(_)) {
                    (PREC_AND, " and ")
                } else {
                    (PREC_OR, " or ")
                };
                for (n, e) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(word)?;
                    }
                    write_child(f, e, e.precedence() <= p)?;
                }
                Ok(())
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Parser
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct State {
    depth: usize,
    len: usize,
}

type Input<'a> = Stateful<&'a str, State>;
type Error = ErrMode<ContextError>;

const RESERVED: &[&str] = &["not", "null", "true", "false"];

fn offset(i: &Input<'_>) -> usize {
    i.state.len - i.input.len()
}

fn span_from(i: &Input<'_>, start: usize) -> Span {
    Span {
        start,
        end: offset(i),
    }
}

/// A cut (non-backtracking) error with a message of our own.
fn failure<O>(msg: &'static str) -> ModalResult<O> {
    let mut e = ContextError::new();
    e.push(StrContext::Label(msg));
    Err(ErrMode::Cut(e))
}

fn expected(what: &'static str) -> StrContext {
    StrContext::Expected(StrContextValue::Description(what))
}

fn ws(i: &mut Input<'_>) -> ModalResult<()> {
    multispace0.void().parse_next(i)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn kw<'a>(word: &'static str) -> impl Parser<Input<'a>, (), Error> {
    (literal(Caseless(word)), not(one_of(is_ident_char))).void()
}

fn enter(i: &mut Input<'_>) -> ModalResult<()> {
    if i.state.depth >= MAX_DEPTH {
        return failure("the expression is nested too deeply (more than 32 levels)");
    }
    i.state.depth += 1;
    Ok(())
}

fn leave(i: &mut Input<'_>) {
    i.state.depth = i.state.depth.saturating_sub(1);
}

fn identifier<'a>(i: &mut Input<'a>) -> ModalResult<&'a str> {
    (
        one_of(|c: char| c.is_ascii_alphabetic() || c == '_'),
        take_while(0.., is_ident_char),
    )
        .take()
        .verify(|s: &str| !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)))
        .parse_next(i)
}

/// An identifier or a qualified name (`microsoft.graph.x`).
fn segment<'a>(i: &mut Input<'a>) -> ModalResult<&'a str> {
    (identifier, repeat::<_, _, (), _, _>(0.., ('.', identifier)))
        .take()
        .parse_next(i)
}

fn string_lit(i: &mut Input<'_>) -> ModalResult<Literal> {
    let start = i.checkpoint();
    '\''.parse_next(i)?;
    let mut out = String::new();
    loop {
        let chunk: &str = take_while(0.., |c: char| c != '\'').parse_next(i)?;
        out.push_str(chunk);
        if opt('\'').parse_next(i)?.is_none() {
            i.reset(&start);
            return failure("unterminated string literal");
        }
        if opt('\'').parse_next(i)?.is_some() {
            out.push('\'');
        } else {
            return Ok(Literal::String(out));
        }
    }
}

fn datetime_lit(i: &mut Input<'_>) -> ModalResult<Literal> {
    let start = i.checkpoint();
    let digits = |n: usize| take_while(n, |c: char| c.is_ascii_digit());
    peek((
        digits(4),
        '-',
        digits(2),
        '-',
        digits(2),
        one_of(['T', 't']),
    ))
    .parse_next(i)?;
    let text: &str = take_while(1.., |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '-' | '+')
    })
    .parse_next(i)?;
    match OffsetDateTime::parse(&text.to_ascii_uppercase(), &Rfc3339) {
        Ok(t) => Ok(Literal::DateTimeOffset(t)),
        Err(_) => {
            i.reset(&start);
            failure("invalid DateTimeOffset literal (expected e.g. 2024-01-31T12:00:00Z)")
        }
    }
}

fn is_guid_text(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(n, c)| match n {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn guid_lit(i: &mut Input<'_>) -> ModalResult<Literal> {
    let text: &str = take(36usize).verify(is_guid_text).parse_next(i)?;
    not(one_of(|c: char| is_ident_char(c) || c == '-')).parse_next(i)?;
    Uuid::parse_str(text)
        .map(Literal::Guid)
        .or_else(|_| failure("invalid GUID literal"))
}

fn number_lit(i: &mut Input<'_>) -> ModalResult<Literal> {
    let start = i.checkpoint();
    let text: &str = (opt('-'), digit1).take().parse_next(i)?;
    if peek::<_, _, Error, _>(('.', one_of(|c: char| c.is_ascii_digit())))
        .parse_next(i)
        .is_ok()
    {
        i.reset(&start);
        return failure("decimal and floating-point literals are not supported");
    }
    not(one_of(is_ident_char)).parse_next(i)?;
    match text.parse::<i64>() {
        Ok(n) => Ok(Literal::Integer(n)),
        Err(_) => {
            i.reset(&start);
            failure("integer literal out of range for Edm.Int64")
        }
    }
}

fn literal_expr(i: &mut Input<'_>) -> ModalResult<Expr> {
    let start = offset(i);
    let value = alt((
        string_lit,
        kw("null").value(Literal::Null),
        kw("true").value(Literal::Boolean(true)),
        kw("false").value(Literal::Boolean(false)),
        datetime_lit,
        guid_lit,
        number_lit,
    ))
    .parse_next(i)?;
    Ok(Expr::Literal {
        value,
        span: span_from(i, start),
    })
}

fn close_paren(i: &mut Input<'_>) -> ModalResult<()> {
    ws(i)?;
    cut_err(')')
        .context(StrContext::Expected(StrContextValue::CharLiteral(')')))
        .void()
        .parse_next(i)
}

fn paren_expr(i: &mut Input<'_>) -> ModalResult<Expr> {
    '('.parse_next(i)?;
    enter(i)?;
    let e = cut_err(expr)
        .context(expected("an expression"))
        .parse_next(i)?;
    close_paren(i)?;
    leave(i);
    Ok(e)
}

fn call_args(i: &mut Input<'_>) -> ModalResult<Vec<Expr>> {
    '('.parse_next(i)?;
    enter(i)?;
    ws(i)?;
    let args = if peek::<_, _, Error, _>(')').parse_next(i).is_ok() {
        Vec::new()
    } else {
        separated(1.., cut_err(expr), (multispace0, ','))
            .context(expected("a function argument"))
            .parse_next(i)?
    };
    close_paren(i)?;
    leave(i);
    Ok(args)
}

fn lambda_rest(
    i: &mut Input<'_>,
    path: Vec<String>,
    kind: LambdaKind,
    start: usize,
) -> ModalResult<Expr> {
    ws(i)?;
    '('.parse_next(i)?;
    enter(i)?;
    ws(i)?;
    let body = if peek::<_, _, Error, _>(')').parse_next(i).is_ok() {
        None
    } else {
        let var = cut_err(identifier)
            .context(expected("a lambda variable name"))
            .parse_next(i)?;
        ws(i)?;
        cut_err(':')
            .context(StrContext::Expected(StrContextValue::CharLiteral(':')))
            .parse_next(i)?;
        let body = cut_err(expr)
            .context(expected("a lambda expression"))
            .parse_next(i)?;
        Some((var.to_string(), Box::new(body)))
    };
    close_paren(i)?;
    leave(i);
    Ok(Expr::Lambda {
        path,
        kind,
        body,
        span: span_from(i, start),
    })
}

fn path_or_call(i: &mut Input<'_>) -> ModalResult<Expr> {
    let start = offset(i);
    let first = segment.parse_next(i)?;
    if peek::<_, _, Error, _>((multispace0, '('))
        .parse_next(i)
        .is_ok()
    {
        ws(i)?;
        let args = call_args(i)?;
        return Ok(Expr::Call {
            name: first.to_ascii_lowercase(),
            args,
            span: span_from(i, start),
        });
    }
    let mut segments = vec![first.to_string()];
    while opt('/').parse_next(i)?.is_some() {
        let seg = cut_err(segment)
            .context(expected("a property name or type name after '/'"))
            .parse_next(i)?;
        let lambda = if seg.eq_ignore_ascii_case("any") {
            Some(LambdaKind::Any)
        } else if seg.eq_ignore_ascii_case("all") {
            Some(LambdaKind::All)
        } else {
            None
        };
        if let Some(kind) = lambda
            && peek::<_, _, Error, _>((multispace0, '('))
                .parse_next(i)
                .is_ok()
        {
            return lambda_rest(i, segments, kind, start);
        }
        segments.push(seg.to_string());
    }
    Ok(Expr::Path {
        segments,
        span: span_from(i, start),
    })
}

fn in_list(i: &mut Input<'_>) -> ModalResult<Vec<Expr>> {
    ws(i)?;
    cut_err('(')
        .context(StrContext::Expected(StrContextValue::CharLiteral('(')))
        .parse_next(i)?;
    enter(i)?;
    let items = cut_err(separated(
        1..,
        preceded(multispace0, literal_expr),
        (multispace0, ','),
    ))
    .context(expected("a list of literals"))
    .parse_next(i)?;
    close_paren(i)?;
    leave(i);
    Ok(items)
}

fn operand(i: &mut Input<'_>) -> ModalResult<Expr> {
    ws(i)?;
    let start = offset(i);
    let primary = alt((paren_expr, literal_expr, path_or_call)).parse_next(i)?;
    if opt((multispace0, kw("in"))).parse_next(i)?.is_some() {
        let list = in_list(i)?;
        return Ok(Expr::In {
            left: Box::new(primary),
            list,
            span: span_from(i, start),
        });
    }
    Ok(primary)
}

fn prefix_op<'a>(i: &mut Input<'a>) -> ModalResult<Prefix<Input<'a>, Expr, Error>> {
    ws(i)?;
    kw("not").parse_next(i)?;
    enter(i)?;
    Ok(Prefix(PREC_NOT, |i, e| {
        leave(i);
        Ok(Expr::Not(Box::new(e)))
    }))
}

fn compare(op: CompareOp, a: Expr, b: Expr) -> ModalResult<Expr> {
    Ok(Expr::Compare {
        op,
        left: Box::new(a),
        right: Box::new(b),
    })
}

fn infix_op<'a>(i: &mut Input<'a>) -> ModalResult<Infix<Input<'a>, Expr, Error>> {
    use Infix::{Left, Neither};
    ws(i)?;
    alt((
        kw("or").value(Left(PREC_OR, |_, a, b| Ok(Expr::or(a, b)))),
        kw("and").value(Left(PREC_AND, |_, a, b| Ok(Expr::and(a, b)))),
        kw("eq").value(Neither(6, |_, a, b| compare(CompareOp::Eq, a, b))),
        kw("ne").value(Neither(6, |_, a, b| compare(CompareOp::Ne, a, b))),
        kw("gt").value(Neither(8, |_, a, b| compare(CompareOp::Gt, a, b))),
        kw("ge").value(Neither(8, |_, a, b| compare(CompareOp::Ge, a, b))),
        kw("lt").value(Neither(8, |_, a, b| compare(CompareOp::Lt, a, b))),
        kw("le").value(Neither(8, |_, a, b| compare(CompareOp::Le, a, b))),
    ))
    .parse_next(i)
}

fn expr(i: &mut Input<'_>) -> ModalResult<Expr> {
    expression(operand)
        .prefix(prefix_op)
        .infix(infix_op)
        .parse_next(i)
}

/// A `$filter` that could not be parsed or validated: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// Byte offset into the `$filter` text.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Invalid $filter at position {}: {}",
            self.offset, self.message
        )
    }
}

impl std::error::Error for FilterError {}

impl From<FilterError> for GraphError {
    fn from(e: FilterError) -> Self {
        GraphError::BadRequest(e.to_string())
    }
}

fn snippet(text: &str, at: usize) -> String {
    let rest = text.get(at..).unwrap_or_default();
    let mut s: String = rest.chars().take(24).collect();
    if rest.chars().count() > 24 {
        s.push('…');
    }
    s
}

fn describe(text: &str, offset: usize, e: &ContextError) -> String {
    if let Some(msg) = e.context().find_map(|c| match c {
        StrContext::Label(l) => Some(*l),
        _ => None,
    }) {
        return msg.to_string();
    }
    let expected: Vec<String> = e
        .context()
        .filter_map(|c| match c {
            StrContext::Expected(v) => Some(v.to_string()),
            _ => None,
        })
        .collect();
    let found = if offset >= text.len() {
        "unexpected end of input".to_string()
    } else {
        format!("syntax error near '{}'", snippet(text, offset))
    };
    if expected.is_empty() {
        found
    } else {
        format!("{found}; expected {}", expected.join(" or "))
    }
}

/// Parses `$filter` text into its syntax tree.
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    if text.len() > MAX_LEN {
        return Err(FilterError {
            offset: MAX_LEN,
            message: format!("the expression is longer than {MAX_LEN} bytes"),
        });
    }
    if text.trim().is_empty() {
        return Err(FilterError {
            offset: 0,
            message: "the expression is empty".into(),
        });
    }
    let input = Stateful {
        input: text,
        state: State {
            depth: 0,
            len: text.len(),
        },
    };
    let mut top = (expr, multispace0).map(|(e, _)| e);
    top.parse(input).map_err(|e| {
        let offset = e.offset();
        FilterError {
            offset,
            message: describe(text, offset, e.inner()),
        }
    })
}

// ------------------------------------------------------------------------------------------
// Validated tree
// ------------------------------------------------------------------------------------------

/// One step of a resolved member path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldStep {
    Property(&'static Property),
    /// A type cast (unqualified type name) restricting the value to a derived type.
    Cast(&'static str),
}

/// A resolved, filterable primitive member such as `displayName` or `target/groupId`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub steps: Vec<FieldStep>,
    pub ty: Primitive,
    pub nullable: bool,
}

impl Field {
    /// Property names joined by `/`, casts left out: `displayName`, `target/groupId`. This is
    /// the key a query builder maps to a column.
    pub fn key(&self) -> String {
        self.steps
            .iter()
            .filter_map(|s| match s {
                FieldStep::Property(p) => Some(p.name),
                FieldStep::Cast(_) => None,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The final property.
    pub fn property(&self) -> &'static Property {
        self.steps
            .iter()
            .rev()
            .find_map(|s| match s {
                FieldStep::Property(p) => Some(*p),
                FieldStep::Cast(_) => None,
            })
            .expect("a field always ends in a property")
    }
}

/// A literal converted to the type of the property it is compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    /// `Edm.Int32` (range checked) or `Edm.Int64`.
    Integer(i64),
    String(String),
    Guid(Uuid),
    DateTimeOffset(OffsetDateTime),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringFunction {
    StartsWith,
    EndsWith,
    Contains,
}

/// A validated `$filter`, ready for translation to SQL. Every field is filterable and every
/// value has its field's type.
#[derive(Clone, Debug, PartialEq)]
pub enum BoolExpr {
    And(Vec<BoolExpr>),
    Or(Vec<BoolExpr>),
    Not(Box<BoolExpr>),
    /// `field op value`; `value` is `Null` only with `Eq`/`Ne`.
    Compare {
        field: Field,
        op: CompareOp,
        value: Value,
    },
    /// `field in (values…)`, at least one value.
    In {
        field: Field,
        values: Vec<Value>,
    },
    /// `startswith/endswith/contains(field, 'pattern')` on a string field.
    StringMatch {
        function: StringFunction,
        field: Field,
        pattern: String,
    },
    /// `isof('microsoft.graph.x')`: the instance is one of `concrete` (the non-abstract types
    /// that are `type_name` or derive from it and are possible for the filtered type).
    IsOf {
        type_name: &'static str,
        concrete: Vec<&'static str>,
    },
    /// `nav/any(v: predicate)` (no predicate: the collection is not empty) or
    /// `nav/all(v: predicate)`. The predicate's fields are relative to the navigation target.
    Lambda {
        kind: LambdaKind,
        navigation: &'static NavigationProperty,
        predicate: Option<Box<BoolExpr>>,
    },
}

fn err_at(span: Span, message: impl Into<String>) -> FilterError {
    FilterError {
        offset: span.start,
        message: message.into(),
    }
}

fn qualified(name: &str) -> String {
    format!("microsoft.graph.{name}")
}

struct Scope<'s> {
    type_name: &'static str,
    /// Inside a lambda: the range variable.
    variable: Option<&'s str>,
}

/// Parses and validates a `$filter` against an entity type (unqualified name, e.g.
/// `officeClientConfiguration`). Errors are `400`s that say where.
pub fn parse_and_validate(text: &str, entity_type: &'static str) -> GraphResult<BoolExpr> {
    let e = parse(text)?;
    Ok(validate(&e, entity_type)?)
}

/// Validates a syntax tree against an entity type of [`MODEL`].
pub fn validate(e: &Expr, entity_type: &'static str) -> Result<BoolExpr, FilterError> {
    let scope = Scope {
        type_name: entity_type,
        variable: None,
    };
    boolean(e, &scope)
}

fn boolean(e: &Expr, scope: &Scope<'_>) -> Result<BoolExpr, FilterError> {
    match e {
        Expr::And(items) => Ok(BoolExpr::And(
            items
                .iter()
                .map(|x| boolean(x, scope))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Or(items) => Ok(BoolExpr::Or(
            items
                .iter()
                .map(|x| boolean(x, scope))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Not(x) => Ok(BoolExpr::Not(Box::new(boolean(x, scope)?))),
        Expr::Compare { op, left, right } => comparison(*op, left, right, scope),
        Expr::In { left, list, .. } => {
            let Expr::Path { segments, span } = left.as_ref() else {
                return Err(err_at(
                    left.span(),
                    "the left side of 'in' must be a property",
                ));
            };
            let field = field(segments, *span, scope)?;
            let values = list
                .iter()
                .map(|item| match item {
                    Expr::Literal { value, span } => coerce(value, &field, *span),
                    other => Err(err_at(other.span(), "'in' lists may only hold literals")),
                })
                .collect::<Result<_, _>>()?;
            Ok(BoolExpr::In { field, values })
        }
        Expr::Call { name, args, span } => call(name, args, *span, scope),
        Expr::Lambda {
            path,
            kind,
            body,
            span,
        } => lambda(path, *kind, body.as_ref(), *span, scope),
        Expr::Path { span, segments } => Err(err_at(
            *span,
            format!(
                "'{}' is not a boolean condition; compare it with a value (e.g. eq)",
                segments.join("/")
            ),
        )),
        Expr::Literal { span, .. } => Err(err_at(
            *span,
            "a literal on its own is not a condition; compare a property with it",
        )),
    }
}

fn comparison(
    op: CompareOp,
    left: &Expr,
    right: &Expr,
    scope: &Scope<'_>,
) -> Result<BoolExpr, FilterError> {
    let (path, lit, op) = match (left, right) {
        (Expr::Path { .. }, Expr::Literal { .. }) => (left, right, op),
        (Expr::Literal { .. }, Expr::Path { .. }) => (right, left, op.flipped()),
        // `startswith(displayName,'x') eq true`
        (Expr::Call { .. }, Expr::Literal { value, span })
        | (Expr::Literal { value, span }, Expr::Call { .. })
            if matches!(op, CompareOp::Eq | CompareOp::Ne) =>
        {
            let call = if matches!(left, Expr::Call { .. }) {
                left
            } else {
                right
            };
            // The call first: an unsupported function is the problem to report.
            let inner = boolean(call, scope)?;
            let Literal::Boolean(b) = value else {
                return Err(err_at(
                    *span,
                    "a function result can only be compared with true or false",
                ));
            };
            return Ok(if *b == (op == CompareOp::Eq) {
                inner
            } else {
                BoolExpr::Not(Box::new(inner))
            });
        }
        (Expr::Path { .. }, Expr::Path { .. }) => {
            return Err(err_at(
                left.span(),
                "comparing two properties is not supported; compare a property with a literal",
            ));
        }
        _ => {
            let bad = if matches!(left, Expr::Path { .. } | Expr::Literal { .. }) {
                right
            } else {
                left
            };
            return Err(err_at(
                bad.span(),
                format!(
                    "the operands of '{}' must be a property and a literal",
                    op.keyword()
                ),
            ));
        }
    };
    let (Expr::Path { segments, span }, Expr::Literal { value, span: lspan }) = (path, lit) else {
        unreachable!("matched above");
    };
    let field = field(segments, *span, scope)?;
    let value = coerce(value, &field, *lspan)?;
    if value == Value::Null && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
        return Err(err_at(
            *lspan,
            format!(
                "null can only be compared with eq or ne, not {}",
                op.keyword()
            ),
        ));
    }
    Ok(BoolExpr::Compare { field, op, value })
}

fn coerce(lit: &Literal, field: &Field, span: Span) -> Result<Value, FilterError> {
    let prop = field.property();
    let mismatch = || {
        err_at(
            span,
            format!(
                "a literal of type {} cannot be compared with property '{}' of type {}",
                lit.type_name(),
                prop.name,
                field.ty.edm_name()
            ),
        )
    };
    Ok(match (field.ty, lit) {
        (_, Literal::Null) => Value::Null,
        (Primitive::String, Literal::String(s)) => Value::String(s.clone()),
        // Keys are strings holding GUIDs; accept an unquoted GUID for them.
        (Primitive::String, Literal::Guid(g)) => Value::String(g.hyphenated().to_string()),
        (Primitive::Int32, Literal::Integer(n)) => {
            if i32::try_from(*n).is_err() {
                return Err(err_at(
                    span,
                    format!("{n} is out of range for Edm.Int32 property '{}'", prop.name),
                ));
            }
            Value::Integer(*n)
        }
        (Primitive::Int64, Literal::Integer(n)) => Value::Integer(*n),
        (Primitive::Boolean, Literal::Boolean(b)) => Value::Boolean(*b),
        (Primitive::Guid, Literal::Guid(g)) => Value::Guid(*g),
        (Primitive::Guid, Literal::String(s)) => {
            Value::Guid(Uuid::parse_str(s).map_err(|_| mismatch())?)
        }
        (Primitive::DateTimeOffset, Literal::DateTimeOffset(t)) => Value::DateTimeOffset(*t),
        (Primitive::DateTimeOffset, Literal::String(_)) => {
            return Err(err_at(
                span,
                format!(
                    "property '{}' is an Edm.DateTimeOffset; write the value without quotes, e.g. 2024-01-31T00:00:00Z",
                    prop.name
                ),
            ));
        }
        _ => return Err(mismatch()),
    })
}

/// Resolves a member path to a filterable primitive field.
fn field(segments: &[String], span: Span, scope: &Scope<'_>) -> Result<Field, FilterError> {
    let mut rest = segments;
    if let Some(var) = scope.variable {
        match rest.split_first() {
            Some((first, tail)) if first == var => rest = tail,
            _ => {
                return Err(err_at(
                    span,
                    format!("inside a lambda, paths must start with its variable '{var}'"),
                ));
            }
        }
        if rest.is_empty() {
            return Err(err_at(
                span,
                format!("the lambda variable '{var}' must be followed by a property"),
            ));
        }
    }
    let mut current: StructuredType = MODEL
        .structured_type(scope.type_name)
        .expect("scope type is in the model");
    let mut steps = Vec::new();
    let mut iter = rest.iter().peekable();
    while let Some(seg) = iter.next() {
        if seg.contains('.') {
            let Some(cast) = MODEL.resolve_qualified(seg) else {
                return Err(err_at(span, format!("unknown type '{seg}'")));
            };
            if !MODEL.is_derived_from(cast, current.name()) {
                return Err(err_at(
                    span,
                    format!(
                        "type '{}' does not derive from '{}'",
                        qualified(cast),
                        qualified(current.name())
                    ),
                ));
            }
            steps.push(FieldStep::Cast(cast));
            current = MODEL.structured_type(cast).expect("resolved");
            continue;
        }
        let Some(prop) = MODEL.property(current.name(), seg) else {
            if MODEL.navigation_property(current.name(), seg).is_some() {
                return Err(err_at(
                    span,
                    format!(
                        "'{seg}' is a navigation property; use it in a lambda such as {seg}/any(x: x/id eq '…')"
                    ),
                ));
            }
            let hint = MODEL
                .similar_property(current.name(), seg)
                .map(|p| format!(" (did you mean '{p}'?)"))
                .unwrap_or_default();
            return Err(err_at(
                span,
                format!(
                    "could not find a property named '{seg}' on type '{}'{hint}",
                    qualified(current.name())
                ),
            ));
        };
        steps.push(FieldStep::Property(prop));
        match (prop.ty.kind, prop.ty.collection) {
            (TypeKind::Complex(c), false) if iter.peek().is_some() => {
                current = MODEL.structured_type(c).expect("model is consistent");
            }
            (TypeKind::Primitive(p), false) if iter.peek().is_none() => {
                if !prop.filterable {
                    return Err(err_at(
                        span,
                        format!("property '{}' cannot be used in $filter", prop.name),
                    ));
                }
                return Ok(Field {
                    steps,
                    ty: p,
                    nullable: prop.nullable,
                });
            }
            _ => {
                return Err(err_at(
                    span,
                    format!(
                        "property '{}' of type {} cannot be used in $filter{}",
                        prop.name,
                        prop.ty.csdl_name(),
                        if iter.peek().is_some() {
                            " and has no members to select with '/'"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
    }
    Err(err_at(span, "the path does not end in a property"))
}

fn string_arg(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal {
            value: Literal::String(s),
            ..
        } => Some(s),
        _ => None,
    }
}

fn call(name: &str, args: &[Expr], span: Span, scope: &Scope<'_>) -> Result<BoolExpr, FilterError> {
    let function = match name {
        "startswith" => Some(StringFunction::StartsWith),
        "endswith" => Some(StringFunction::EndsWith),
        "contains" => Some(StringFunction::Contains),
        _ => None,
    };
    if let Some(function) = function {
        let [Expr::Path { segments, span: ps }, pattern] = args else {
            return Err(err_at(
                span,
                format!(
                    "{name} takes a property and a string literal, e.g. {name}(displayName,'x')"
                ),
            ));
        };
        let field = field(segments, *ps, scope)?;
        if field.ty != Primitive::String {
            return Err(err_at(
                *ps,
                format!(
                    "{name} needs a string property; '{}' is {}",
                    field.property().name,
                    field.ty.edm_name()
                ),
            ));
        }
        let Some(pattern) = string_arg(pattern) else {
            return Err(err_at(
                pattern.span(),
                format!("the second argument of {name} must be a string literal"),
            ));
        };
        return Ok(BoolExpr::StringMatch {
            function,
            field,
            pattern: pattern.to_string(),
        });
    }
    if name == "isof" {
        let type_text = match args {
            [arg] => match arg {
                Expr::Literal {
                    value: Literal::String(s),
                    ..
                } => s.clone(),
                Expr::Path { segments, .. } if segments.len() == 1 => segments[0].clone(),
                other => {
                    return Err(err_at(
                        other.span(),
                        "isof takes a qualified type name, e.g. isof('microsoft.graph.windowsOfficeClientConfiguration')",
                    ));
                }
            },
            _ => {
                return Err(err_at(
                    span,
                    "only the one-argument form isof('microsoft.graph.…') is supported",
                ));
            }
        };
        let Some(type_name) = MODEL.resolve_qualified(&type_text) else {
            return Err(err_at(span, format!("unknown type '{type_text}' in isof")));
        };
        let related = MODEL.is_derived_from(type_name, scope.type_name)
            || MODEL.is_derived_from(scope.type_name, type_name);
        if !related || MODEL.entity_type(type_name).is_none() {
            return Err(err_at(
                span,
                format!(
                    "type '{}' is not related to '{}'",
                    qualified(type_name),
                    qualified(scope.type_name)
                ),
            ));
        }
        let possible = MODEL.concrete_types(scope.type_name);
        let concrete = MODEL
            .concrete_types(type_name)
            .into_iter()
            .filter(|t| possible.contains(t))
            .collect();
        return Ok(BoolExpr::IsOf {
            type_name,
            concrete,
        });
    }
    Err(err_at(
        span,
        format!(
            "unknown or unsupported function '{name}'; supported: startswith, endswith, contains, isof"
        ),
    ))
}

fn lambda(
    path: &[String],
    kind: LambdaKind,
    body: Option<&(String, Box<Expr>)>,
    span: Span,
    scope: &Scope<'_>,
) -> Result<BoolExpr, FilterError> {
    if scope.variable.is_some() {
        return Err(err_at(span, "nested lambdas are not supported"));
    }
    let [nav_name] = path else {
        return Err(err_at(
            span,
            "a lambda must follow a navigation property directly, e.g. assignments/any(…)",
        ));
    };
    let Some(navigation) = MODEL.navigation_property(scope.type_name, nav_name) else {
        let what = if MODEL.property(scope.type_name, nav_name).is_some() {
            "is not a navigation property"
        } else {
            "is not a property"
        };
        return Err(err_at(
            span,
            format!(
                "'{nav_name}' {what} of type '{}'; any/all apply to navigation collections",
                qualified(scope.type_name)
            ),
        ));
    };
    let predicate = match body {
        None if kind == LambdaKind::All => {
            return Err(err_at(
                span,
                "all() needs a condition, e.g. all(x: x/id ne '…')",
            ));
        }
        None => None,
        Some((var, body)) => {
            let inner = Scope {
                type_name: navigation.target,
                variable: Some(var),
            };
            Some(Box::new(boolean(body, &inner)?))
        }
    };
    Ok(BoolExpr::Lambda {
        kind,
        navigation,
        predicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odata::edm::{ASSIGNMENT, CLIENT_CONFIGURATION, OFFICE_CONFIGURATION};

    fn p(s: &str) -> Expr {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn path(s: &str) -> Expr {
        Expr::Path {
            segments: s.split('/').map(String::from).collect(),
            span: Span::default(),
        }
    }

    fn lit(l: Literal) -> Expr {
        Expr::Literal {
            value: l,
            span: Span::default(),
        }
    }

    fn int(n: i64) -> Expr {
        lit(Literal::Integer(n))
    }

    fn cmp(op: CompareOp, a: Expr, b: Expr) -> Expr {
        Expr::Compare {
            op,
            left: Box::new(a),
            right: Box::new(b),
        }
    }

    fn v(s: &str) -> BoolExpr {
        parse_and_validate(s, CLIENT_CONFIGURATION).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn verr(s: &str) -> String {
        match parse_and_validate(s, CLIENT_CONFIGURATION) {
            Ok(x) => panic!("{s} validated: {x:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            p("a eq 1 and b eq 2 or c eq 3"),
            Expr::Or(vec![
                Expr::And(vec![
                    cmp(CompareOp::Eq, path("a"), int(1)),
                    cmp(CompareOp::Eq, path("b"), int(2)),
                ]),
                cmp(CompareOp::Eq, path("c"), int(3)),
            ])
        );
        assert_eq!(
            p("a eq 1 or b eq 2 and c eq 3"),
            Expr::Or(vec![
                cmp(CompareOp::Eq, path("a"), int(1)),
                Expr::And(vec![
                    cmp(CompareOp::Eq, path("b"), int(2)),
                    cmp(CompareOp::Eq, path("c"), int(3)),
                ]),
            ])
        );
        assert_eq!(
            p("(a eq 1 or b eq 2) and c eq 3").to_string(),
            "(a eq 1 or b eq 2) and c eq 3"
        );
        // Chains flatten.
        assert!(matches!(p("a eq 1 or b eq 2 or c eq 3"), Expr::Or(v) if v.len() == 3));
    }

    #[test]
    fn not_binds_tighter_than_and() {
        let e = p("not contains(displayName,'x') and priority gt 5");
        let Expr::And(items) = &e else {
            panic!("{e:?}")
        };
        assert!(matches!(&items[0], Expr::Not(inner) if matches!(**inner, Expr::Call { .. })));
        assert_eq!(items[1], cmp(CompareOp::Gt, path("priority"), int(5)));
        assert_eq!(
            p("not (a eq 1)"),
            Expr::Not(Box::new(cmp(CompareOp::Eq, path("a"), int(1))))
        );
        assert_eq!(p("NOT (a EQ 1)"), p("not (a eq 1)"));
    }

    #[test]
    fn literals() {
        assert_eq!(
            p("displayName eq 'O''Neil'"),
            cmp(
                CompareOp::Eq,
                path("displayName"),
                lit(Literal::String("O'Neil".into()))
            )
        );
        assert_eq!(
            p("x eq ''''"),
            cmp(CompareOp::Eq, path("x"), lit(Literal::String("'".into())))
        );
        assert_eq!(p("p/q eq -1"), cmp(CompareOp::Eq, path("p/q"), int(-1)));
        assert_eq!(
            p("x eq -9223372036854775808"),
            cmp(CompareOp::Eq, path("x"), int(i64::MIN))
        );
        assert!(
            parse("x eq 9223372036854775808")
                .unwrap_err()
                .message
                .contains("out of range")
        );
        assert_eq!(
            p("x eq null and y ne true and z eq False"),
            Expr::And(vec![
                cmp(CompareOp::Eq, path("x"), lit(Literal::Null)),
                cmp(CompareOp::Ne, path("y"), lit(Literal::Boolean(true))),
                cmp(CompareOp::Eq, path("z"), lit(Literal::Boolean(false))),
            ])
        );
        let g = "0b2a1c3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e";
        assert_eq!(
            p(&format!("id eq {g}")),
            cmp(
                CompareOp::Eq,
                path("id"),
                lit(Literal::Guid(Uuid::parse_str(g).unwrap()))
            )
        );
        let Expr::Compare { right, .. } = p("t ge 2024-01-31T12:00:00.5+02:00") else {
            panic!()
        };
        assert!(matches!(
            &*right,
            Expr::Literal { value: Literal::DateTimeOffset(t), .. } if t.unix_timestamp() == 1_706_695_200
        ));
        assert!(parse("x eq 1.5").unwrap_err().message.contains("decimal"));
        assert!(
            parse("x eq 'abc")
                .unwrap_err()
                .message
                .contains("unterminated")
        );
        assert!(
            parse("t eq 2024-13-01T00:00:00Z")
                .unwrap_err()
                .message
                .contains("DateTimeOffset")
        );
    }

    #[test]
    fn keywords_need_word_boundaries() {
        assert_eq!(
            p("android eq 1 and oregon eq 2"),
            Expr::And(vec![
                cmp(CompareOp::Eq, path("android"), int(1)),
                cmp(CompareOp::Eq, path("oregon"), int(2)),
            ])
        );
        assert_eq!(
            p("notes eq nullable"),
            cmp(CompareOp::Eq, path("notes"), path("nullable"))
        );
        assert_eq!(p("equal eq 1"), cmp(CompareOp::Eq, path("equal"), int(1)));
        assert_eq!(p("a in (1,2)"), p("a  in  ( 1 , 2 )"));
        assert_eq!(p("indexed eq 1").to_string(), "indexed eq 1");
        assert!(parse("a eq 1and b eq 2").is_err());
        assert!(parse("not").is_err());
    }

    #[test]
    fn in_calls_and_lambdas() {
        assert_eq!(
            p("priority in (1, 2,3)"),
            Expr::In {
                left: Box::new(path("priority")),
                list: vec![int(1), int(2), int(3)],
                span: Span::default()
            }
        );
        assert_eq!(
            p("isof('microsoft.graph.windowsOfficeClientSecurityConfiguration')").to_string(),
            "isof('microsoft.graph.windowsOfficeClientSecurityConfiguration')"
        );
        let text = "assignments/any(a: a/target/microsoft.graph.officeConfigurationGroupAssignmentTarget/groupId eq 'g1')";
        let Expr::Lambda {
            path: lp,
            kind,
            body: Some((var, body)),
            ..
        } = p(text)
        else {
            panic!()
        };
        assert_eq!(lp, vec!["assignments"]);
        assert_eq!(kind, LambdaKind::Any);
        assert_eq!(var, "a");
        assert!(matches!(*body, Expr::Compare { .. }));
        assert!(matches!(
            p("assignments/any()"),
            Expr::Lambda { body: None, .. }
        ));
        assert!(parse("a in ()").is_err());
        assert!(parse("a in (b)").is_err());
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = parse("displayName eq 'x' andd priority eq 1").unwrap_err();
        assert_eq!(e.offset, 19, "{e}");
        assert!(e.to_string().contains("position 19"), "{e}");
        let e = parse("(a eq 1").unwrap_err();
        assert_eq!(e.offset, 7, "{e}");
        assert!(e.message.contains("end of input"), "{e}");
        let e = parse("a eq").unwrap_err();
        assert!(e.to_string().starts_with("Invalid $filter"), "{e}");
        assert!(parse("").is_err());
        assert!(parse("a eq 1 eq 2").is_err(), "eq is non-associative");
        assert!(
            parse("a gt 1 lt 2").is_err(),
            "relational is non-associative"
        );
    }

    #[test]
    fn limits() {
        let deep = format!("{}a eq 1{}", "(".repeat(33), ")".repeat(33));
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let ok = format!("{}a eq 1{}", "(".repeat(31), ")".repeat(31));
        assert!(parse(&ok).is_ok());
        let nots = format!("{}a eq 1", "not ".repeat(40));
        assert!(parse(&nots).unwrap_err().message.contains("nested"));
        let huge = format!("displayName eq '{}'", "x".repeat(MAX_LEN));
        assert!(parse(&huge).unwrap_err().message.contains("longer"));
        // A long flat chain is fine and stays shallow.
        let chain = vec!["a eq 1"; 400].join(" or ");
        assert!(matches!(parse(&chain).unwrap(), Expr::Or(v) if v.len() == 400));
        let deep_lambda = format!("x/any(a:{}a eq 1{})", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep_lambda).is_err());
    }

    #[test]
    fn deepest_accepted_input_fits_a_small_stack() {
        // The worst case the limits allow, parsed, validated and printed on a 512 KiB stack
        // (a quarter of a tokio worker's default).
        let text = format!(
            "{}priority eq 1{}",
            "not (".repeat(MAX_DEPTH / 2 - 1),
            ")".repeat(MAX_DEPTH / 2 - 1)
        );
        let handle = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let e = parse(&text).expect("parses");
                validate(&e, CLIENT_CONFIGURATION).expect("validates");
                assert_eq!(parse(&e.to_string()).unwrap(), e);
                let too_deep = format!("{}a eq 1{}", "(".repeat(4000), ")".repeat(4000));
                assert!(parse(&too_deep[..MAX_LEN]).is_err());
            })
            .unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn validation_resolves_and_types() {
        assert_eq!(
            v("priority gt 5"),
            BoolExpr::Compare {
                field: Field {
                    steps: vec![FieldStep::Property(
                        MODEL.property(CLIENT_CONFIGURATION, "priority").unwrap()
                    )],
                    ty: Primitive::Int32,
                    nullable: false
                },
                op: CompareOp::Gt,
                value: Value::Integer(5)
            }
        );
        let BoolExpr::Compare { op, .. } = v("5 lt priority") else {
            panic!()
        };
        assert_eq!(op, CompareOp::Gt);
        assert!(matches!(
            v("startswith(displayName,'Con') eq false"),
            BoolExpr::Not(_)
        ));
        assert!(matches!(
            v("description eq null or contains(description,'x')"),
            BoolExpr::Or(_)
        ));
        assert!(matches!(
            v("lastModifiedDateTime ge 2024-01-01T00:00:00Z"),
            BoolExpr::Compare {
                value: Value::DateTimeOffset(_),
                ..
            }
        ));
        let BoolExpr::Compare { value, .. } = v("id eq 0B2A1C3E-4F5A-6B7C-8D9E-0F1A2B3C4D5E")
        else {
            panic!()
        };
        assert_eq!(
            value,
            Value::String("0b2a1c3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e".into())
        );
        assert_eq!(
            v("isof('microsoft.graph.windowsOfficeClientSecurityConfiguration')"),
            BoolExpr::IsOf {
                type_name: "windowsOfficeClientSecurityConfiguration",
                concrete: vec!["windowsOfficeClientSecurityConfiguration"]
            }
        );
        let BoolExpr::IsOf { concrete, .. } = v("isof(graph.officeClientConfiguration)") else {
            panic!()
        };
        assert_eq!(concrete.len(), 2);
        let BoolExpr::Lambda {
            navigation,
            predicate: Some(pred),
            ..
        } = v(
            "assignments/any(x: x/target/microsoft.graph.officeConfigurationGroupAssignmentTarget/groupId eq 'g')",
        )
        else {
            panic!()
        };
        assert_eq!(navigation.name, "assignments");
        let BoolExpr::Compare { field, .. } = *pred else {
            panic!()
        };
        assert_eq!(field.key(), "target/groupId");
        assert!(matches!(
            v("assignments/any(a: a/id in ('1','2'))"),
            BoolExpr::Lambda { .. }
        ));
        assert!(matches!(v("assignments/any()"), BoolExpr::Lambda { .. }));
        assert!(matches!(
            v("displayName in ('a','b') and not (priority le 3)"),
            BoolExpr::And(_)
        ));
        assert!(parse_and_validate("id eq 'x'", ASSIGNMENT).is_ok());
        assert!(parse_and_validate("id eq 'x'", OFFICE_CONFIGURATION).is_ok());
    }

    #[test]
    fn validation_errors_name_the_problem() {
        let e = verr("displayName eq 'a' and colour eq 'red'");
        assert!(e.contains("position 23") && e.contains("'colour'"), "{e}");
        let e = verr("priority eq 'x'");
        assert!(e.contains("Edm.String") && e.contains("priority"), "{e}");
        assert!(verr("priority eq 3000000000").contains("out of range"));
        assert!(verr("displayName eq 5").contains("Edm.Int32"));
        assert!(verr("lastModifiedDateTime gt '2024-01-01'").contains("without quotes"));
        assert!(verr("policyPayload eq 'x'").contains("cannot be used"));
        assert!(verr("checkinStatuses eq 'x'").contains("cannot be used"));
        assert!(verr("displayname eq 'x'").contains("did you mean 'displayName'"));
        assert!(verr("assignments eq 'x'").contains("navigation"));
        assert!(verr("priority gt null").contains("null"));
        assert!(verr("displayName eq description").contains("two properties"));
        assert!(verr("priority").contains("not a boolean"));
        assert!(verr("tolower(displayName) eq 'x'").contains("unsupported function 'tolower'"));
        assert!(verr("startswith(displayName,'a') eq 'x'").contains("true or false"));
        assert!(verr("length(displayName)").contains("unsupported function"));
        assert!(verr("startswith(priority,'1')").contains("string property"));
        assert!(
            verr("isof('microsoft.graph.officeClientConfigurationAssignment')")
                .contains("not related")
        );
        assert!(verr("isof('microsoft.graph.nope')").contains("unknown type"));
        assert!(verr("isof(displayName,'microsoft.graph.x')").contains("one-argument"));
        assert!(verr("assignments/any(a: b/id eq '1')").contains("variable 'a'"));
        assert!(verr("assignments/any(a: a/target/groupId eq '1')").contains("groupId"));
        assert!(verr("displayName/any(a: a eq '1')").contains("not a navigation"));
        assert!(verr("assignments/all()").contains("needs a condition"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn ident() -> impl Strategy<Value = String> {
            "[a-zA-Z_][a-zA-Z0-9_]{0,6}".prop_filter("not a keyword", |s| {
                ![
                    "not", "null", "true", "false", "and", "or", "eq", "ne", "gt", "ge", "lt",
                    "le", "in", "any", "all",
                ]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(s))
            })
        }

        fn segments() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec(
                prop_oneof![
                    3 => ident(),
                    1 => Just("microsoft.graph.windowsOfficeClientConfiguration".to_string()),
                ],
                1..4,
            )
        }

        fn literal() -> impl Strategy<Value = Literal> {
            prop_oneof![
                Just(Literal::Null),
                any::<bool>().prop_map(Literal::Boolean),
                any::<i64>().prop_map(Literal::Integer),
                ".{0,8}".prop_map(Literal::String),
                any::<u128>().prop_map(|n| Literal::Guid(Uuid::from_u128(n))),
                (0i64..4_000_000_000, -50_400i32..50_400, 0u32..1_000_000_000).prop_map(
                    |(s, off, ns)| {
                        let off = time::UtcOffset::from_whole_seconds(off / 60 * 60).unwrap();
                        let t = OffsetDateTime::from_unix_timestamp(s)
                            .unwrap()
                            .replace_nanosecond(ns)
                            .unwrap()
                            .to_offset(off);
                        Literal::DateTimeOffset(t)
                    }
                ),
            ]
        }

        fn lit_expr() -> impl Strategy<Value = Expr> {
            literal().prop_map(|value| Expr::Literal {
                value,
                span: Span::default(),
            })
        }

        fn leaf() -> impl Strategy<Value = Expr> {
            prop_oneof![
                lit_expr(),
                segments().prop_map(|segments| Expr::Path {
                    segments,
                    span: Span::default()
                }),
            ]
        }

        fn expr_strategy() -> impl Strategy<Value = Expr> {
            leaf().prop_recursive(4, 32, 4, |inner| {
                let op = prop_oneof![
                    Just(CompareOp::Eq),
                    Just(CompareOp::Ne),
                    Just(CompareOp::Gt),
                    Just(CompareOp::Ge),
                    Just(CompareOp::Lt),
                    Just(CompareOp::Le),
                ];
                prop_oneof![
                    (op, inner.clone(), inner.clone()).prop_map(|(op, a, b)| Expr::Compare {
                        op,
                        left: Box::new(a),
                        right: Box::new(b)
                    }),
                    inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                    (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::and(a, b)),
                    (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::or(a, b)),
                    (inner.clone(), prop::collection::vec(lit_expr(), 1..4)).prop_map(
                        |(l, list)| Expr::In {
                            left: Box::new(l),
                            list,
                            span: Span::default()
                        }
                    ),
                    (
                        prop_oneof![Just("contains"), Just("isof"), Just("startswith")],
                        prop::collection::vec(inner.clone(), 0..3)
                    )
                        .prop_map(|(name, args)| Expr::Call {
                            name: name.to_string(),
                            args,
                            span: Span::default()
                        }),
                    (segments(), any::<bool>(), ident(), prop::option::of(inner)).prop_map(
                        |(path, all, var, body)| Expr::Lambda {
                            path,
                            kind: if all {
                                LambdaKind::All
                            } else {
                                LambdaKind::Any
                            },
                            body: body.map(|b| (var, Box::new(b))),
                            span: Span::default()
                        }
                    ),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn never_panics_on_arbitrary_text(s in ".{0,200}") {
                let _ = parse(&s);
                let _ = parse_and_validate(&s, CLIENT_CONFIGURATION);
            }

            #[test]
            fn never_panics_on_filter_like_text(
                parts in prop::collection::vec(
                    prop_oneof![
                        Just("("), Just(")"), Just(" and "), Just(" or "), Just("not "),
                        Just(" eq "), Just(" in "), Just("'"), Just("''"), Just(","),
                        Just("displayName"), Just("priority"), Just("1"), Just("-"),
                        Just("assignments/any(a:"), Just("a/id"), Just("isof("), Just("/"),
                        Just("null"), Just("2024-01-01T00:00:00Z"), Just(" "), Just(":"),
                    ],
                    0..60,
                )
            ) {
                let s: String = parts.concat();
                let _ = parse(&s);
                let _ = parse_and_validate(&s, CLIENT_CONFIGURATION);
            }

            #[test]
            fn display_round_trips(e in expr_strategy()) {
                let text = e.to_string();
                let back = parse(&text);
                prop_assert!(back.is_ok(), "{} did not parse: {:?}", text, back);
                prop_assert_eq!(back.unwrap(), e, "text: {}", text);
            }
        }
    }
}
