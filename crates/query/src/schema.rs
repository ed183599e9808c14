//! Reading a [`Schema`] from TOML, and looking columns up.
//!
//! ```toml
//! table = "patients"
//! max_rows = 1000000        # optional, default 1_000_000_000
//! min_group_size = 10       # optional: suppress groups with fewer rows (decided in MPC)
//! [[column]]
//! name = "age"
//! type = "int"              # int | decimal | category
//! min = 0
//! max = 120
//! [[column]]
//! name = "bmi"
//! type = "decimal"
//! scale = 2                 # 0..=18 digits after the point
//! min = 10.0                # float, integer or string; exact at the scale
//! max = "80.00"
//! [[column]]
//! name = "sex"
//! type = "category"
//! values = ["F", "M"]
//! ```

use std::collections::HashSet;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::decimal::{parse_scaled, DecimalError};
use crate::{ColumnDef, ColumnId, ColumnType, QueryError, Schema};

/// Default for `max_rows` when the schema does not set it.
pub const DEFAULT_MAX_ROWS: u64 = 1_000_000_000;

/// Largest decimal scale accepted.
pub const MAX_SCALE: u32 = 18;

impl Schema {
    /// Parses a schema from its TOML text (format in the [module docs](self)).
    ///
    /// Errors name the column and what is wrong; TOML syntax errors keep
    /// toml's line and column.
    pub fn from_toml(text: &str) -> Result<Schema, QueryError> {
        let doc = DeTable::parse(text).map_err(|e| QueryError::Toml(e.to_string().trim_end().to_string()))?;
        let doc = doc.get_ref();
        let err = |msg: String| QueryError::Schema(msg);
        for (key, value) in doc.iter() {
            let k: &str = key.get_ref();
            if !matches!(k, "table" | "max_rows" | "min_group_size" | "column") {
                return Err(err(format!(
                    "unknown key `{k}` at top level (line {}); expected table, max_rows, min_group_size, [[column]]",
                    line_of(text, value)
                )));
            }
        }
        let table = match doc.get("table").map(|v| v.get_ref()) {
            Some(DeValue::String(s)) if !s.trim().is_empty() => s.to_string(),
            Some(DeValue::String(_)) => return Err(err("`table` must not be empty".into())),
            Some(_) => return Err(err("`table` must be a string".into())),
            None => return Err(err("missing `table` (the table name used in FROM)".into())),
        };
        let max_rows = match doc.get("max_rows").map(|v| v.get_ref()) {
            None => DEFAULT_MAX_ROWS,
            Some(DeValue::Integer(i)) => match u64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if n >= 1 => n,
                _ => return Err(err(format!("`max_rows` must be an integer between 1 and {}, got {i}", u64::MAX))),
            },
            Some(_) => return Err(err("`max_rows` must be an integer".into())),
        };
        let min_group_size = match doc.get("min_group_size").map(|v| v.get_ref()) {
            None => None,
            Some(DeValue::Integer(i)) => match u64::from_str_radix(i.as_str(), i.radix()) {
                Ok(0) => None,
                Ok(k) => Some(k),
                _ => {
                    return Err(err(format!(
                        "`min_group_size` must be an integer between 0 (off) and {}, got {i}",
                        u64::MAX
                    )))
                }
            },
            Some(_) => return Err(err("`min_group_size` must be an integer (0 = off)".into())),
        };
        let columns_raw = match doc.get("column").map(|v| v.get_ref()) {
            Some(DeValue::Array(a)) => a,
            Some(_) => return Err(err("`column` must be an array of tables ([[column]])".into())),
            None => return Err(err("no columns: add at least one [[column]] table".into())),
        };
        let mut columns: Vec<ColumnDef> = Vec::with_capacity(columns_raw.len());
        let mut seen = HashSet::new();
        for (i, c) in columns_raw.iter().enumerate() {
            let DeValue::Table(t) = c.get_ref() else {
                return Err(err(format!("column #{} (line {}) must be a table", i + 1, line_of(text, c))));
            };
            let def = column_from_toml(text, i, c, t)?;
            if !seen.insert(def.name.to_lowercase()) {
                return Err(err(format!(
                    "duplicate column name `{}` (line {}; names are case-insensitive)",
                    def.name,
                    line_of(text, c)
                )));
            }
            columns.push(def);
        }
        if columns.is_empty() {
            return Err(err("no columns: add at least one [[column]] table".into()));
        }
        Ok(Schema { table, max_rows, min_group_size, columns })
    }

    /// Looks a column up by name, case-insensitively.
    pub fn column(&self, name: &str) -> Option<(ColumnId, &ColumnDef)> {
        self.columns.iter().enumerate().find(|(_, c)| c.name.eq_ignore_ascii_case(name))
    }
}

impl ColumnType {
    /// Decimal scale of the column's values (0 for `Int` and `Category`).
    pub fn scale(&self) -> u32 {
        match self {
            ColumnType::Decimal { scale, .. } => *scale,
            _ => 0,
        }
    }

    /// Scaled inclusive bounds of a numeric column (`None` for categories).
    pub fn bounds(&self) -> Option<(i64, i64)> {
        match self {
            ColumnType::Int { min, max } | ColumnType::Decimal { min, max, .. } => Some((*min, *max)),
            ColumnType::Category { .. } => None,
        }
    }

    /// Whether the column is `Int` or `Decimal`.
    pub fn is_numeric(&self) -> bool {
        !matches!(self, ColumnType::Category { .. })
    }

    /// The type's name as written in the schema (`int`, `decimal`, `category`).
    pub fn kind(&self) -> &'static str {
        match self {
            ColumnType::Int { .. } => "int",
            ColumnType::Decimal { .. } => "decimal",
            ColumnType::Category { .. } => "category",
        }
    }
}

fn line_of<T>(text: &str, v: &Spanned<T>) -> usize {
    let start = v.span().start.min(text.len());
    text.as_bytes()[..start].iter().filter(|&&b| b == b'\n').count() + 1
}

fn column_from_toml(
    text: &str,
    index: usize,
    raw: &Spanned<DeValue<'_>>,
    t: &DeTable<'_>,
) -> Result<ColumnDef, QueryError> {
    let line = line_of(text, raw);
    let name = match t.get("name").map(|v| v.get_ref()) {
        Some(DeValue::String(s)) if !s.trim().is_empty() => s.to_string(),
        Some(DeValue::String(_)) => {
            return Err(QueryError::Schema(format!("column #{} (line {line}): `name` must not be empty", index + 1)))
        }
        Some(_) => {
            return Err(QueryError::Schema(format!("column #{} (line {line}): `name` must be a string", index + 1)))
        }
        None => return Err(QueryError::Schema(format!("column #{} (line {line}): missing `name`", index + 1))),
    };
    let err = |msg: String| QueryError::Schema(format!("column `{name}` (line {line}): {msg}"));
    let ty = match t.get("type").map(|v| v.get_ref()) {
        Some(DeValue::String(s)) => s.to_string(),
        Some(_) => return Err(err("`type` must be a string: int, decimal or category".into())),
        None => return Err(err("missing `type` (int, decimal or category)".into())),
    };
    let allowed: &[&str] = match ty.as_str() {
        "int" => &["name", "type", "min", "max"],
        "decimal" => &["name", "type", "scale", "min", "max"],
        "category" => &["name", "type", "values"],
        other => return Err(err(format!("unknown type `{other}` (expected int, decimal or category)"))),
    };
    for (key, _) in t.iter() {
        let k: &str = key.get_ref();
        if !allowed.contains(&k) {
            return Err(err(format!("unknown key `{k}` for a {ty} column (allowed: {})", allowed.join(", "))));
        }
    }
    let ty = match ty.as_str() {
        "category" => {
            let values = match t.get("values").map(|v| v.get_ref()) {
                Some(DeValue::Array(a)) => a,
                Some(_) => return Err(err("`values` must be an array of strings".into())),
                None => return Err(err("missing `values` (the declared category values)".into())),
            };
            if values.is_empty() {
                return Err(err("`values` is empty: declare at least one category value".into()));
            }
            let mut out: Vec<String> = Vec::with_capacity(values.len());
            for v in values.iter() {
                match v.get_ref() {
                    DeValue::String(s) => {
                        if out.iter().any(|o| o == s.as_ref()) {
                            return Err(err(format!("duplicate category value {s:?}")));
                        }
                        out.push(s.to_string());
                    }
                    _ => return Err(err("`values` must contain only strings".into())),
                }
            }
            if u32::try_from(out.len()).is_err() {
                return Err(err("too many category values".into()));
            }
            ColumnType::Category { values: out }
        }
        kind => {
            let scale = if kind == "decimal" {
                match t.get("scale").map(|v| v.get_ref()) {
                    Some(DeValue::Integer(i)) => match u32::from_str_radix(i.as_str(), i.radix()) {
                        Ok(s) if s <= MAX_SCALE => s,
                        _ => return Err(err(format!("`scale` must be an integer from 0 to {MAX_SCALE}, got {i}"))),
                    },
                    Some(_) => return Err(err(format!("`scale` must be an integer from 0 to {MAX_SCALE}"))),
                    None => return Err(err("missing `scale` (digits after the decimal point)".into())),
                }
            } else {
                0
            };
            let bound = |key: &str| -> Result<i64, QueryError> {
                let v = t.get(key).ok_or_else(|| err(format!("missing bound `{key}`")))?;
                let (text, parsed) = match v.get_ref() {
                    DeValue::Integer(i) => {
                        let parsed = if i.radix() == 10 {
                            parse_scaled(i.as_str(), scale)
                        } else {
                            i128::from_str_radix(i.as_str(), i.radix())
                                .map_err(|_| DecimalError::TooLarge)
                                .and_then(|x| x.checked_mul(10i128.pow(scale)).ok_or(DecimalError::TooLarge))
                        };
                        (i.to_string(), parsed)
                    }
                    DeValue::Float(f) => (f.as_str().to_string(), parse_scaled(f.as_str(), scale)),
                    DeValue::String(s) => (format!("{s:?}"), parse_scaled(s, scale)),
                    _ => return Err(err(format!("`{key}` must be a number"))),
                };
                let scaled = parsed.map_err(|e| match e {
                    DecimalError::Malformed => err(format!("`{key}` = {text} is not a decimal number")),
                    DecimalError::Inexact => err(format!(
                        "`{key}` = {text} has more digits after the point than the column's scale {scale} allows"
                    )),
                    DecimalError::TooLarge => err(format!("`{key}` = {text} is too large")),
                })?;
                i64::try_from(scaled).map_err(|_| {
                    err(format!("`{key}` = {text} does not fit in a 64-bit integer after scaling by 10^{scale}"))
                })
            };
            let min = bound("min")?;
            let max = bound("max")?;
            if min > max {
                return Err(err(format!("min > max ({} > {})", t_text(min, scale), t_text(max, scale))));
            }
            if kind == "decimal" {
                ColumnType::Decimal { scale, min, max }
            } else {
                ColumnType::Int { min, max }
            }
        }
    };
    Ok(ColumnDef { name, ty })
}

fn t_text(v: i64, scale: u32) -> String {
    crate::decimal::format_scaled(i128::from(v), scale)
}
