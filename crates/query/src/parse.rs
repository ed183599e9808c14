//! The supported SQL subset, parsed with `sqlparser` and resolved against a
//! [`Schema`].
//!
//! ```sql
//! SELECT agg [AS alias], ... FROM <table> [WHERE pred] [GROUP BY col, ...]
//! ```
//!
//! Aggregates: `COUNT(*)`, `COUNT(col)`, `SUM`, `AVG`, `VAR_POP`, `VAR_SAMP`,
//! `STDDEV_POP`, `STDDEV_SAMP`, `COVAR_POP(y, x)`, `COVAR_SAMP(y, x)`,
//! `CORR(y, x)`, `REGR_SLOPE(y, x)`, `REGR_INTERCEPT(y, x)`, `REGR_R2(y, x)`,
//! `LINREG(y, x1, ..., xk)`, `HISTOGRAM(col, lo, hi, bins)`, and the order
//! statistics `MIN(col)`, `MAX(col)`, `MEDIAN(col)` and
//! `PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY col [ASC|DESC])` (p a literal
//! in [0, 1] with at most 6 digits after the point, kept exact; see
//! [`crate::order`]). A bare column in
//! the select list is accepted iff it is a GROUP BY column (GROUP BY keys are
//! always output first). `WHERE` supports comparisons of a column with a
//! literal, `AND`, `OR`, `NOT`, `[NOT] IN (...)`, `[NOT] BETWEEN`,
//! `IS [NOT] NULL`. `GROUP BY` accepts category columns only, so that the set
//! of groups is public.

use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    ObjectName, ObjectNamePart, SelectFlavor, SelectItem, SetExpr, Spanned, Statement, TableFactor, UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::decimal::{format_scaled, parse_scaled, DecimalError};
use crate::{Aggregate, CmpOp, ColumnId, ColumnType, Fraction, Literal, Predicate, Query, QueryError, Schema};

/// Largest number of histogram bins.
pub const MAX_BINS: u32 = 10_000;

/// Aggregates that are recognised but not available yet.
const RESERVED: &[&str] = &["PERCENTILE_DISC", "MODE"];

/// Digits after the point allowed in `PERCENTILE_CONT(p)` (p = P / 10^6 at most).
const FRACTION_DIGITS: u32 = 6;

/// Parses `sql` (one `SELECT` of the supported subset, optionally followed by
/// a semicolon) against `schema`.
///
/// Errors quote the offending SQL fragment with its 1-based line and column.
/// A trailing `WITH PRIVACY (...)` clause is checked and ignored here (read
/// it with [`crate::privacy::privacy_clause`]).
pub fn parse(sql: &str, schema: &Schema) -> Result<Query, QueryError> {
    let (sql, _) = crate::privacy::privacy_clause(sql)?;
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| QueryError::Syntax(e.to_string()))?;
    let ctx = Ctx { sql, schema, alias: None };
    let statement = match statements.as_slice() {
        [s] => s,
        [] => return Err(QueryError::Invalid("empty query: expected one SELECT statement".into())),
        [_, second, ..] => {
            return Err(QueryError::Unsupported(format!(
                "exactly one statement is allowed, found {}; the second is {}",
                statements.len(),
                ctx.at(second)
            )))
        }
    };
    let Statement::Query(q) = statement else {
        return Err(ctx.unsupported("only SELECT queries are supported", statement));
    };
    ctx.check_query_clauses(q)?;
    let select = match q.body.as_ref() {
        SetExpr::Select(s) => s.as_ref(),
        SetExpr::Query(sub) => return Err(ctx.unsupported("subqueries are not supported", sub.as_ref())),
        SetExpr::SetOperation { op, .. } => {
            return Err(ctx.unsupported_text(&format!("{op} is not supported"), &q.body.to_string(), q.body.span()))
        }
        other => return Err(ctx.unsupported("only SELECT queries are supported", other)),
    };
    let ctx = ctx.check_select(select)?;
    let group_by = ctx.group_by(&select.group_by)?;
    let filter = match &select.selection {
        Some(e) => Some(ctx.predicate(e)?),
        None => None,
    };
    let mut items = Vec::new();
    for item in &select.projection {
        let (expr, alias) =
            match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => return Err(ctx.unsupported(
                    "SELECT * is not supported: list the aggregates to compute (no individual row ever leaves a party)",
                    item,
                )),
                SelectItem::ExprWithAliases { .. } => {
                    return Err(ctx.unsupported("multiple aliases are not supported", item))
                }
            };
        let expr = strip_nested(expr);
        if let Some((col, _)) = ctx.column_ref(expr)? {
            if !group_by.contains(&col) {
                return Err(ctx.invalid(
                    "a bare column in the select list must appear in GROUP BY (individual values are never revealed); \
                     use an aggregate",
                    expr,
                ));
            }
            if alias.is_some() {
                return Err(ctx.unsupported("an alias on a GROUP BY column is not supported", item));
            }
            continue;
        }
        let Expr::Function(f) = expr else {
            return Err(ctx.unsupported(
                "only aggregates (and GROUP BY columns) are allowed in the select list; arithmetic on aggregates is \
                 not supported",
                expr,
            ));
        };
        let agg = ctx.aggregate(f)?;
        let name = alias.map_or_else(|| expr.to_string(), |a| a.value.clone());
        items.push((name, agg));
    }
    Ok(Query { select: items, filter, group_by })
}

fn strip_nested(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

struct Ctx<'a> {
    sql: &'a str,
    schema: &'a Schema,
    alias: Option<String>,
}

impl Ctx<'_> {
    /// "`fragment` at line L, column C" (position from the span, or found by text search).
    fn at<T: Spanned + std::fmt::Display>(&self, node: &T) -> String {
        self.at_text(&node.to_string(), node.span())
    }

    fn at_text(&self, fragment: &str, span: sqlparser::tokenizer::Span) -> String {
        let fragment = fragment.trim();
        // The span of a node may start inside the fragment's text (for
        // example at the expression of `ORDER BY 1`): prefer the last
        // occurrence of the fragment's text that starts at or before it.
        let pos = if span.start.line > 0 {
            let limit = byte_offset(self.sql, span.start.line, span.start.column);
            limit
                .and_then(|l| find_position_before(self.sql, fragment, l))
                .or(Some((span.start.line, span.start.column)))
        } else {
            find_position_before(self.sql, fragment, self.sql.len())
        };
        match pos {
            Some((l, c)) => format!("`{fragment}` at line {l}, column {c}"),
            None => format!("`{fragment}`"),
        }
    }

    fn unsupported<T: Spanned + std::fmt::Display>(&self, msg: &str, node: &T) -> QueryError {
        QueryError::Unsupported(format!("{msg}: {}", self.at(node)))
    }

    fn unsupported_text(&self, msg: &str, fragment: &str, span: sqlparser::tokenizer::Span) -> QueryError {
        QueryError::Unsupported(format!("{msg}: {}", self.at_text(fragment, span)))
    }

    fn invalid<T: Spanned + std::fmt::Display>(&self, msg: &str, node: &T) -> QueryError {
        QueryError::Invalid(format!("{msg}: {}", self.at(node)))
    }

    fn check_query_clauses(&self, q: &ast::Query) -> Result<(), QueryError> {
        if let Some(with) = &q.with {
            return Err(self.unsupported("WITH (common table expressions) is not supported", with));
        }
        if let Some(o) = &q.order_by {
            return Err(self.unsupported("ORDER BY is not supported", o));
        }
        if let Some(l) = &q.limit_clause {
            return Err(self.unsupported("LIMIT/OFFSET is not supported", l));
        }
        if let Some(f) = &q.fetch {
            return Err(self.unsupported("FETCH is not supported", f));
        }
        if !q.locks.is_empty() || q.for_clause.is_some() || q.settings.is_some() || q.format_clause.is_some() {
            return Err(self.unsupported("only SELECT ... FROM ... [WHERE ...] [GROUP BY ...] is supported", q));
        }
        if !q.pipe_operators.is_empty() {
            return Err(self.unsupported("pipe operators are not supported", q));
        }
        Ok(())
    }

    fn check_select(self, s: &ast::Select) -> Result<Self, QueryError> {
        if let Some(d) = &s.distinct {
            let text = d.to_string();
            return Err(self.unsupported_text("DISTINCT is not supported", &text, sqlparser::tokenizer::Span::empty()));
        }
        if let Some(t) = &s.top {
            return Err(self.unsupported_text(
                "TOP is not supported",
                &t.to_string(),
                sqlparser::tokenizer::Span::empty(),
            ));
        }
        if let Some(h) = &s.having {
            return Err(self.unsupported_text("HAVING is not supported", &format!("HAVING {h}"), h.span()));
        }
        if s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || !s.named_window.is_empty()
            || s.qualify.is_some()
            || s.exclude.is_some()
            || s.select_modifiers.is_some()
            || s.value_table_mode.is_some()
            || !s.optimizer_hints.is_empty()
            || !matches!(s.flavor, SelectFlavor::Standard)
        {
            return Err(self.unsupported("only SELECT ... FROM ... [WHERE ...] [GROUP BY ...] is supported", s));
        }
        let from = match s.from.as_slice() {
            [one] => one,
            [] => {
                return Err(QueryError::Invalid(format!(
                    "missing FROM {}: the query must read the table `{}`",
                    self.schema.table, self.schema.table
                )))
            }
            [_, second, ..] => return Err(self.unsupported("only one table is allowed in FROM (no joins)", second)),
        };
        if let Some(j) = from.joins.first() {
            return Err(self.unsupported_text("JOIN is not supported", &j.to_string(), j.relation.span()));
        }
        let alias = match &from.relation {
            TableFactor::Table {
                name,
                alias,
                args: None,
                with_hints,
                version: None,
                with_ordinality: false,
                partitions,
                json_path: None,
                sample: None,
                index_hints,
            } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
                self.check_table_name(name)?;
                match alias {
                    Some(a) if a.columns.is_empty() => Some(a.name.value.clone()),
                    Some(_) => {
                        return Err(self.unsupported("column aliases on the table are not supported", &from.relation))
                    }
                    None => None,
                }
            }
            TableFactor::Derived { .. } => return Err(self.unsupported("subqueries are not supported", &from.relation)),
            other => {
                return Err(
                    self.unsupported(&format!("only the table `{}` is allowed in FROM", self.schema.table), other)
                )
            }
        };
        Ok(Ctx { alias, ..self })
    }

    fn check_table_name(&self, name: &ObjectName) -> Result<(), QueryError> {
        let ok = match name.0.as_slice() {
            [ObjectNamePart::Identifier(id)] => id.value.eq_ignore_ascii_case(&self.schema.table),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(self.invalid(&format!("unknown table (the table is called `{}`)", self.schema.table), name))
        }
    }

    /// `Some(column)` if `e` is a column reference, `None` if it is not an
    /// identifier at all; an error for an unknown column.
    fn column_ref(&self, e: &Expr) -> Result<Option<(ColumnId, &crate::ColumnDef)>, QueryError> {
        let ident = match e {
            Expr::Identifier(id) => id,
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [t, c]
                    if t.value.eq_ignore_ascii_case(&self.schema.table)
                        || self.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(&t.value)) =>
                {
                    c
                }
                _ => return Err(self.invalid("unknown qualified column (qualify only with the table name)", e)),
            },
            _ => return Ok(None),
        };
        match self.schema.column(&ident.value) {
            Some(c) => Ok(Some(c)),
            None => {
                let hint = closest(&ident.value, self.schema.columns.iter().map(|c| c.name.as_str()))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                Err(QueryError::Invalid(format!(
                    "unknown column {}{hint}; the columns of `{}` are: {}",
                    self.at(e),
                    self.schema.table,
                    self.schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
        }
    }

    fn column(&self, e: &Expr) -> Result<(ColumnId, &crate::ColumnDef), QueryError> {
        let e = strip_nested(e);
        match self.column_ref(e)? {
            Some(c) => Ok(c),
            None => Err(self.unsupported("only a column name is allowed here (no expressions or arithmetic)", e)),
        }
    }

    fn group_by(&self, g: &GroupByExpr) -> Result<Vec<ColumnId>, QueryError> {
        let exprs = match g {
            GroupByExpr::All(_) => {
                return Err(self.unsupported_text(
                    "GROUP BY ALL is not supported",
                    "GROUP BY ALL",
                    sqlparser::tokenizer::Span::empty(),
                ))
            }
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(self.unsupported("GROUP BY modifiers are not supported", g));
                }
                exprs
            }
        };
        let mut out = Vec::new();
        for e in exprs {
            let (id, def) = self.column(e)?;
            if !matches!(def.ty, ColumnType::Category { .. }) {
                return Err(QueryError::Invalid(format!(
                    "GROUP BY needs a category column with declared values, so that the set of groups is public; {} \
                     is {} ({})",
                    def.name,
                    def.ty.kind(),
                    self.at(e)
                )));
            }
            if out.contains(&id) {
                return Err(self.invalid("column listed twice in GROUP BY", e));
            }
            out.push(id);
        }
        Ok(out)
    }

    fn predicate(&self, e: &Expr) -> Result<Predicate, QueryError> {
        match e {
            Expr::Nested(inner) => self.predicate(inner),
            Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
                Ok(Predicate::And(Box::new(self.predicate(left)?), Box::new(self.predicate(right)?)))
            }
            Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
                Ok(Predicate::Or(Box::new(self.predicate(left)?), Box::new(self.predicate(right)?)))
            }
            Expr::UnaryOp { op: UnaryOperator::Not, expr } => Ok(Predicate::Not(Box::new(self.predicate(expr)?))),
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::NotEq,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::LtEq,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::GtEq => CmpOp::GtEq,
                    _ => return Err(self.unsupported(&format!("operator {op} is not supported in WHERE"), e)),
                };
                let (l, r) = (strip_nested(left), strip_nested(right));
                let (col_expr, lit_expr, op) = match (self.column_ref(l)?, self.column_ref(r)?) {
                    (Some(_), Some(_)) => {
                        return Err(
                            self.unsupported("comparing two columns is not supported (only column vs literal)", e)
                        )
                    }
                    (Some(_), None) => (l, r, op),
                    (None, Some(_)) => (r, l, flip(op)),
                    (None, None) => {
                        return Err(
                            self.unsupported("a comparison needs a column on one side and a literal on the other", e)
                        )
                    }
                };
                let (col, def) = self.column(col_expr)?;
                if matches!(def.ty, ColumnType::Category { .. }) && !matches!(op, CmpOp::Eq | CmpOp::NotEq) {
                    return Err(self
                        .unsupported(&format!("category column {} supports only =, <>, IN and IS NULL", def.name), e));
                }
                let value = self.literal(lit_expr, col)?;
                Ok(Predicate::Compare { col, op, value })
            }
            Expr::InList { expr, list, negated } => {
                let (col, _) = self.column(expr)?;
                let values = list.iter().map(|v| self.literal(v, col)).collect::<Result<Vec<_>, _>>()?;
                Ok(Predicate::InList { col, values, negated: *negated })
            }
            Expr::Between { expr, negated, low, high } => {
                let (col, def) = self.column(expr)?;
                if !def.ty.is_numeric() {
                    return Err(
                        self.unsupported(&format!("BETWEEN needs a numeric column; {} is a category", def.name), e)
                    );
                }
                Ok(Predicate::Between {
                    col,
                    lo: self.literal(low, col)?,
                    hi: self.literal(high, col)?,
                    negated: *negated,
                })
            }
            Expr::IsNull(inner) => Ok(Predicate::IsNull { col: self.column(inner)?.0, negated: false }),
            Expr::IsNotNull(inner) => Ok(Predicate::IsNull { col: self.column(inner)?.0, negated: true }),
            Expr::InSubquery { .. } | Expr::Subquery(_) | Expr::Exists { .. } => {
                Err(self.unsupported("subqueries are not supported", e))
            }
            _ => Err(self.unsupported("unsupported condition in WHERE", e)),
        }
    }

    /// A literal resolved against column `col`.
    fn literal(&self, e: &Expr, col: ColumnId) -> Result<Literal, QueryError> {
        let def = &self.schema.columns[col];
        let e = strip_nested(e);
        match &def.ty {
            ColumnType::Category { values } => match e {
                Expr::Value(v) => {
                    match &v.value {
                        ast::Value::SingleQuotedString(s) => match values.iter().position(|d| d == s) {
                            Some(i) => Ok(Literal::Category(u32::try_from(i).unwrap_or(u32::MAX))),
                            None => Err(QueryError::Invalid(format!(
                                "{} is not a declared value of category column {}; the declared values are: {}",
                                self.at(e),
                                def.name,
                                values.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", ")
                            ))),
                        },
                        ast::Value::Null => Err(self.invalid("comparison with NULL is never true; use IS NULL", e)),
                        _ => Err(self
                            .invalid(&format!("category column {} needs a single-quoted string literal", def.name), e)),
                    }
                }
                _ => {
                    Err(self.invalid(&format!("category column {} needs a single-quoted string literal", def.name), e))
                }
            },
            ColumnType::Int { .. } | ColumnType::Decimal { .. } => {
                let v = self.number(e, def.ty.scale(), &def.name)?;
                Ok(Literal::Number(v))
            }
        }
    }

    /// A numeric literal (optionally negated), scaled exactly by `10^scale`.
    fn number(&self, e: &Expr, scale: u32, col_name: &str) -> Result<i128, QueryError> {
        let e = strip_nested(e);
        match e {
            Expr::UnaryOp { op: UnaryOperator::Minus, expr } => {
                self.number(expr, scale, col_name)?.checked_neg().ok_or_else(|| self.invalid("number too large", e))
            }
            Expr::UnaryOp { op: UnaryOperator::Plus, expr } => self.number(expr, scale, col_name),
            Expr::Value(v) => match &v.value {
                ast::Value::Number(text, _) => parse_scaled(text, scale).map_err(|err| match err {
                    DecimalError::Inexact if scale == 0 => {
                        self.invalid(&format!("{col_name} is an int column; the literal is not an integer"), e)
                    }
                    DecimalError::Inexact => self.invalid(
                        &format!(
                            "{col_name} is a decimal column with {scale} digits after the point; the literal has more"
                        ),
                        e,
                    ),
                    DecimalError::Malformed => self.invalid("malformed number", e),
                    DecimalError::TooLarge => self.invalid("number too large", e),
                }),
                ast::Value::Null => Err(self.invalid("comparison with NULL is never true; use IS NULL", e)),
                _ => Err(self.invalid(&format!("{col_name} is numeric: expected a number literal"), e)),
            },
            _ => Err(self.invalid(&format!("{col_name} is numeric: expected a number literal"), e)),
        }
    }

    fn aggregate(&self, f: &ast::Function) -> Result<Aggregate, QueryError> {
        let name = match f.name.0.as_slice() {
            [ObjectNamePart::Identifier(id)] => id.value.to_ascii_uppercase(),
            _ => return Err(self.unsupported("unknown function", f)),
        };
        if RESERVED.contains(&name.as_str()) {
            return Err(
                self.unsupported(&format!("{name} is not available yet (MIN, MAX, MEDIAN and PERCENTILE_CONT are)"), f)
            );
        }
        if f.over.is_some() {
            return Err(self.unsupported("window functions (OVER) are not supported", f));
        }
        if f.filter.is_some() {
            return Err(self.unsupported("FILTER is not supported (use WHERE)", f));
        }
        if f.null_treatment.is_some() || f.uses_odbc_syntax {
            return Err(self.unsupported("this form of aggregate call is not supported", f));
        }
        match (name.as_str(), f.within_group.is_empty()) {
            ("PERCENTILE_CONT", true) => {
                return Err(self.invalid("PERCENTILE_CONT(p) needs WITHIN GROUP (ORDER BY column)", f));
            }
            ("PERCENTILE_CONT", false) | (_, true) => {}
            (_, false) => {
                return Err(self.unsupported("WITHIN GROUP is only supported with PERCENTILE_CONT", f));
            }
        }
        if !matches!(f.parameters, FunctionArguments::None) {
            return Err(self.unsupported("parametric functions are not supported", f));
        }
        let list = match &f.args {
            FunctionArguments::List(list) => list,
            FunctionArguments::None => return Err(self.invalid(&format!("{name} needs arguments"), f)),
            FunctionArguments::Subquery(_) => return Err(self.unsupported("subqueries are not supported", f)),
        };
        if matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct)) {
            return Err(self.unsupported(&format!("{name}(DISTINCT ...) is not supported"), f));
        }
        if !list.clauses.is_empty() {
            return Err(self.unsupported("clauses inside aggregate arguments are not supported", f));
        }
        let mut args: Vec<&Expr> = Vec::with_capacity(list.args.len());
        let mut star = false;
        for a in &list.args {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e),
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if name == "COUNT" && list.args.len() == 1 => {
                    star = true
                }
                _ => return Err(self.unsupported(&format!("unsupported argument to {name}"), a)),
            }
        }
        let arity = |n: usize, sig: &str| -> Result<(), QueryError> {
            if args.len() == n && !star {
                Ok(())
            } else {
                Err(self.invalid(&format!("{name} takes {sig}"), f))
            }
        };
        let numeric = |e: &Expr| -> Result<ColumnId, QueryError> {
            let (id, def) = self.column(e)?;
            if def.ty.is_numeric() {
                Ok(id)
            } else {
                Err(QueryError::Invalid(format!(
                    "{name} needs a numeric (int or decimal) column; {} is a category ({}); category columns are only \
                     allowed in COUNT, WHERE and GROUP BY",
                    def.name,
                    self.at(e)
                )))
            }
        };
        let agg = match name.as_str() {
            "COUNT" => {
                if star {
                    Aggregate::CountStar
                } else {
                    arity(1, "one column or *")?;
                    Aggregate::Count(self.column(args[0])?.0)
                }
            }
            "SUM" | "AVG" | "VAR_POP" | "VAR_SAMP" | "VARIANCE" | "STDDEV_POP" | "STDDEV_SAMP" | "STDDEV" => {
                arity(1, "one numeric column")?;
                let c = numeric(args[0])?;
                match name.as_str() {
                    "SUM" => Aggregate::Sum(c),
                    "AVG" => Aggregate::Avg(c),
                    "VAR_POP" => Aggregate::VarPop(c),
                    "VAR_SAMP" | "VARIANCE" => Aggregate::VarSamp(c),
                    "STDDEV_POP" => Aggregate::StddevPop(c),
                    _ => Aggregate::StddevSamp(c),
                }
            }
            "COVAR_POP" | "COVAR_SAMP" | "CORR" | "REGR_SLOPE" | "REGR_INTERCEPT" | "REGR_R2" => {
                arity(2, "two numeric columns (y, x)")?;
                let y = numeric(args[0])?;
                let x = numeric(args[1])?;
                match name.as_str() {
                    "COVAR_POP" => Aggregate::CovarPop(y, x),
                    "COVAR_SAMP" => Aggregate::CovarSamp(y, x),
                    "CORR" => Aggregate::Corr(y, x),
                    "REGR_SLOPE" => Aggregate::RegrSlope(y, x),
                    "REGR_INTERCEPT" => Aggregate::RegrIntercept(y, x),
                    _ => Aggregate::RegrR2(y, x),
                }
            }
            "LINREG" => {
                if args.len() < 2 || star {
                    return Err(self.invalid("LINREG takes a response and at least one regressor (y, x1, ..., xk)", f));
                }
                let y = numeric(args[0])?;
                let mut xs = Vec::with_capacity(args.len() - 1);
                for a in &args[1..] {
                    let x = numeric(a)?;
                    if xs.contains(&x) {
                        return Err(self.invalid("LINREG: regressor listed twice (X'X would be singular)", *a));
                    }
                    xs.push(x);
                }
                Aggregate::Linreg { y, xs }
            }
            "MIN" | "MAX" | "MEDIAN" => {
                arity(1, "one numeric column")?;
                let c = numeric(args[0])?;
                match name.as_str() {
                    "MIN" => Aggregate::Min(c),
                    "MAX" => Aggregate::Max(c),
                    _ => Aggregate::Median(c),
                }
            }
            "PERCENTILE_CONT" => {
                arity(1, "one fraction p between 0 and 1, then WITHIN GROUP (ORDER BY column)")?;
                let p = self.fraction(args[0])?;
                let [order] = f.within_group.as_slice() else {
                    return Err(self.invalid("PERCENTILE_CONT orders by exactly one column", f));
                };
                if order.with_fill.is_some() {
                    return Err(self.unsupported("WITH FILL is not supported", f));
                }
                let col = numeric(&order.expr)?;
                let p = match &order.options.sort {
                    None | Some(ast::OrderBySort::Asc) => p,
                    // The p-quantile of the descending order is the (1 - p)-quantile of the ascending one.
                    Some(ast::OrderBySort::Desc) => p.complement(),
                    Some(ast::OrderBySort::Using(_)) => {
                        return Err(self.unsupported("ORDER BY ... USING is not supported", f))
                    }
                };
                Aggregate::PercentileCont { col, p }
            }
            "HISTOGRAM" => {
                arity(4, "(column, lo, hi, bins)")?;
                let (col, def) = self.column(args[0])?;
                if !def.ty.is_numeric() {
                    return Err(QueryError::Invalid(format!(
                        "HISTOGRAM needs a numeric (int or decimal) column; {} is a category ({}); use COUNT with \
                         GROUP BY for categories",
                        def.name,
                        self.at(args[0])
                    )));
                }
                let scale = def.ty.scale();
                let lo = self.number(args[1], scale, &def.name)?;
                let hi = self.number(args[2], scale, &def.name)?;
                if lo >= hi {
                    return Err(self.invalid(
                        &format!(
                            "HISTOGRAM needs lo < hi, got lo = {} and hi = {}",
                            format_scaled(lo, scale),
                            format_scaled(hi, scale)
                        ),
                        f,
                    ));
                }
                let bins = self.number(args[3], 0, "bins").ok().and_then(|b| u32::try_from(b).ok());
                let bins = match bins {
                    Some(b) if (1..=MAX_BINS).contains(&b) => b,
                    _ => {
                        return Err(self.invalid(
                            &format!("HISTOGRAM: the number of bins must be an integer from 1 to {MAX_BINS}"),
                            args[3],
                        ))
                    }
                };
                Aggregate::Histogram { col, lo, hi, bins }
            }
            _ => {
                let known = [
                    "COUNT",
                    "SUM",
                    "AVG",
                    "VAR_POP",
                    "VAR_SAMP",
                    "STDDEV_POP",
                    "STDDEV_SAMP",
                    "COVAR_POP",
                    "COVAR_SAMP",
                    "CORR",
                    "REGR_SLOPE",
                    "REGR_INTERCEPT",
                    "REGR_R2",
                    "LINREG",
                    "HISTOGRAM",
                    "MIN",
                    "MAX",
                    "MEDIAN",
                    "PERCENTILE_CONT",
                ];
                let hint =
                    closest(&name, known.iter().copied()).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
                return Err(QueryError::Unsupported(format!(
                    "unknown aggregate function {}{hint}; supported: {}",
                    self.at(f),
                    known.join(", ")
                )));
            }
        };
        Ok(agg)
    }
}

impl Ctx<'_> {
    /// The fraction p of `PERCENTILE_CONT(p)`: a number literal in [0, 1]
    /// with at most [`FRACTION_DIGITS`] digits after the point, exact.
    fn fraction(&self, e: &Expr) -> Result<Fraction, QueryError> {
        let e = strip_nested(e);
        let bad = |why: &str| self.invalid(&format!("PERCENTILE_CONT: {why}"), e);
        let (negative, inner) = match e {
            Expr::UnaryOp { op: UnaryOperator::Minus, expr } => (true, strip_nested(expr)),
            Expr::UnaryOp { op: UnaryOperator::Plus, expr } => (false, strip_nested(expr)),
            other => (false, other),
        };
        let text = match inner {
            Expr::Value(v) => match &v.value {
                ast::Value::Number(text, _) => text,
                _ => return Err(bad("the fraction p must be a number literal between 0 and 1")),
            },
            _ => return Err(bad("the fraction p must be a number literal between 0 and 1")),
        };
        let den = 10u64.pow(FRACTION_DIGITS);
        let scaled = parse_scaled(text, FRACTION_DIGITS).map_err(|err| match err {
            DecimalError::Inexact => {
                bad(&format!("p may have at most {FRACTION_DIGITS} digits after the point (it is kept exact)"))
            }
            DecimalError::Malformed => bad("malformed number"),
            DecimalError::TooLarge => bad("p must be between 0 and 1"),
        })?;
        let num = u64::try_from(scaled).ok().filter(|&v| v <= den && !(negative && v != 0));
        num.and_then(|num| Fraction::new(num, den))
            .ok_or_else(|| bad(&format!("p must be between 0 and 1, got {}{text}", if negative { "-" } else { "" })))
    }
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::LtEq => CmpOp::GtEq,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::GtEq => CmpOp::LtEq,
        other => other,
    }
}

/// Byte offset of a 1-based (line, column in characters) position.
fn byte_offset(sql: &str, line: u64, column: u64) -> Option<usize> {
    let line_start =
        if line <= 1 { 0 } else { sql.match_indices('\n').nth(usize::try_from(line - 2).ok()?).map(|(i, _)| i + 1)? };
    let rest = &sql[line_start..];
    let col = usize::try_from(column.saturating_sub(1)).ok()?;
    match rest.char_indices().nth(col) {
        Some((i, _)) => Some(line_start + i),
        None => Some(sql.len()),
    }
}

/// 1-based (line, column) of the last case-insensitive occurrence of
/// `fragment` in `sql` that starts at or before byte `limit`.
fn find_position_before(sql: &str, fragment: &str, limit: usize) -> Option<(u64, u64)> {
    if fragment.is_empty() {
        return None;
    }
    let hay = sql.to_ascii_lowercase();
    let needle = fragment.to_ascii_lowercase();
    let offset = hay.match_indices(&needle).map(|(i, _)| i).take_while(|&i| i <= limit).last()?;
    let before = &sql[..offset];
    let line = before.matches('\n').count() as u64 + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    Some((line, col))
}

/// Case-insensitive Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `name`, if close enough to be a plausible typo.
fn closest<'c>(name: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates.map(|c| (edit_distance(name, c), c)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("agee", "age"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("bim", ["age", "bmi", "sex"].into_iter()), Some("bmi"));
        assert_eq!(closest("zzzzzz", ["age", "bmi"].into_iter()), None);
    }

    #[test]
    fn position() {
        let sql = "SELECT a\nFROM t";
        assert_eq!(find_position_before(sql, "from", sql.len()), Some((2, 1)));
        assert_eq!(find_position_before("SELECT x", "y", 8), None);
        assert_eq!(byte_offset(sql, 2, 3), Some(11));
        assert_eq!(byte_offset(sql, 1, 1), Some(0));
    }
}
