//! Concord data layer: reads one party's local table and computes its local
//! sufficient statistics.
//!
//! A party's rows are loaded from a CSV or Parquet file with [`load_table`],
//! validated against the public [`Schema`] (column names, types, bounds,
//! declared category values) and kept in a [`Table`] of Apache Arrow arrays.
//! Numeric values are exact scaled integers: an `Int` column holds its values,
//! a `Decimal` column with scale s holds value * 10^s, parsed exactly from
//! text or converted exactly from a Parquet `DECIMAL` (never through a
//! floating-point number). Category columns hold the index of each value in
//! the declared list.
//!
//! [`local_stats`] then evaluates a [`Query`]'s WHERE predicate with SQL
//! three-valued logic using Apache Arrow compute kernels (comparison kernels
//! against scalars, Kleene AND/OR, NOT, IS NULL), selects the matching rows
//! with Arrow's `filter` kernel, and computes every statistic of a
//! [`StatsPlan`] as an exact `i128` sum per group. The local sums of all
//! parties add up to the pooled statistics; adding them securely is the job
//! of other crates.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, Datum, Int64Array, Int64Builder, PrimitiveArray, StringArray,
    UInt32Array, UInt32Builder,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::compute::kernels::cmp::{eq, gt, gt_eq, lt, lt_eq, neq};
use arrow::compute::{and_kleene, cast, is_not_null, is_null, not, or_kleene, FilterBuilder};
use arrow::datatypes::{
    DataType, Decimal128Type, Decimal32Type, Decimal64Type, Field, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use concord_query::order::OrderPlan;
use concord_query::{CmpOp, ColumnId, ColumnType, Literal, Predicate, Query, Schema, Stat, StatsPlan};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Rows read per batch from a file.
const BATCH_SIZE: usize = 64 * 1024;

/// Largest number of distinct GROUP BY keys (product of the declared value
/// counts of the GROUP BY columns) supported by [`local_stats`].
const MAX_GROUP_KEYS: usize = 1 << 24;

/// Name used in place of a file name for errors about in-memory tables.
const IN_MEMORY: &str = "<in-memory table>";

/// Errors of the data layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file name has neither the `.csv` nor the `.parquet` extension.
    #[error("{file}: unknown file type (expected a .csv or .parquet file)")]
    UnknownFormat {
        /// The file.
        file: String,
    },
    /// The file is not well-formed CSV or Parquet.
    #[error("{file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// What the reader reported.
        reason: String,
    },
    /// A column of the schema is not in the file.
    #[error("{file}: missing column {column} (the file has columns: {})", found.join(", "))]
    MissingColumn {
        /// The file.
        file: String,
        /// The missing column.
        column: String,
        /// The columns the file has.
        found: Vec<String>,
    },
    /// The file has a column that the schema does not declare.
    #[error("{file}: unexpected column {column} (not declared in the schema of table {table})")]
    ExtraColumn {
        /// The file.
        file: String,
        /// The extra column.
        column: String,
        /// The schema's table name.
        table: String,
    },
    /// The file has two columns with the same name.
    #[error("{file}: column {column} appears more than once")]
    DuplicateColumn {
        /// The file.
        file: String,
        /// The repeated column.
        column: String,
    },
    /// A Parquet column's (or an in-memory array's) type cannot hold the
    /// declared column type exactly.
    #[error("{file}, column {column}: {reason}")]
    ColumnType {
        /// The file.
        file: String,
        /// The column.
        column: String,
        /// Why the type is refused.
        reason: String,
    },
    /// A value violates the schema. `row` is the 1-based data row number: in
    /// a CSV file, the header is not counted (row 1 is the first line after
    /// the header); in a Parquet file, row 1 is the first row.
    #[error("{file}, row {row}, column {column}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based data row number (the CSV header is not counted).
        row: usize,
        /// The column.
        column: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// The query or plan does not fit the table (unknown column, a literal of
    /// the wrong kind, a numeric statistic of a category column, ...).
    #[error("invalid plan: {reason}")]
    Plan {
        /// What is wrong.
        reason: String,
    },
    /// A local sum does not fit in an `i128`.
    #[error("overflow computing {stat}")]
    Overflow {
        /// The statistic, described with column names.
        stat: String,
    },
    /// An Arrow compute kernel failed.
    #[error("arrow compute error: {0}")]
    Arrow(#[from] ArrowError),
}

/// A party's validated rows: one Arrow array per schema column, in schema
/// order. `Int` and `Decimal` columns are [`Int64Array`]s of exact scaled
/// values (value * 10^scale); `Category` columns are [`UInt32Array`]s of
/// indexes into the declared values. Any column may contain nulls.
#[derive(Clone, Debug)]
pub struct Table {
    schema: Schema,
    columns: Vec<ArrayRef>,
    num_rows: usize,
}

impl Table {
    /// Builds a table from arrays already in the internal representation
    /// (one per schema column, in schema order, as described on [`Table`]),
    /// checking types, lengths, bounds and category indexes. Rows are
    /// numbered from 1 in errors; the file is reported as `<in-memory table>`.
    pub fn new(schema: Schema, columns: Vec<ArrayRef>) -> Result<Self, DataError> {
        if columns.len() != schema.columns.len() {
            return Err(DataError::Plan {
                reason: format!(
                    "the schema of table {} has {} columns but {} arrays were given",
                    schema.table,
                    schema.columns.len(),
                    columns.len()
                ),
            });
        }
        let num_rows = columns.first().map_or(0, |c| c.len());
        for (def, array) in schema.columns.iter().zip(&columns) {
            let type_error = |reason: String| DataError::ColumnType {
                file: IN_MEMORY.to_string(),
                column: def.name.clone(),
                reason,
            };
            if array.len() != num_rows {
                return Err(type_error(format!("has {} rows, the first column has {num_rows}", array.len())));
            }
            let bad_row = |i: usize, reason: String| DataError::Invalid {
                file: IN_MEMORY.to_string(),
                row: i + 1,
                column: def.name.clone(),
                reason,
            };
            match &def.ty {
                ColumnType::Int { min, max } | ColumnType::Decimal { min, max, .. } => {
                    let scale = scale_of(&def.ty);
                    let values = array
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| type_error(format!("expected Int64, found {}", array.data_type())))?;
                    for (i, v) in values.iter().enumerate() {
                        if let Some(v) = v {
                            check_bounds(i128::from(v), scale, *min, *max).map_err(|r| bad_row(i, r))?;
                        }
                    }
                }
                ColumnType::Category { values: declared } => {
                    let values = array
                        .as_any()
                        .downcast_ref::<UInt32Array>()
                        .ok_or_else(|| type_error(format!("expected UInt32, found {}", array.data_type())))?;
                    for (i, v) in values.iter().enumerate() {
                        if let Some(v) = v {
                            if usize::try_from(v).map_or(true, |v| v >= declared.len()) {
                                return Err(bad_row(
                                    i,
                                    format!(
                                        "category index {v} is not below the number of declared values {}",
                                        declared.len()
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(Self { schema, columns, num_rows })
    }

    /// The schema the rows were validated against.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// The array of column `id` ([`Int64Array`] or [`UInt32Array`], see [`Table`]).
    pub fn column(&self, id: ColumnId) -> Option<&ArrayRef> {
        self.columns.get(id)
    }

    /// All arrays, in schema order.
    pub fn columns(&self) -> &[ArrayRef] {
        &self.columns
    }
}

/// Scale of a numeric column type (0 for `Int` and `Category`).
fn scale_of(ty: &ColumnType) -> u32 {
    match ty {
        ColumnType::Decimal { scale, .. } => *scale,
        _ => 0,
    }
}

/// Renders a scaled integer as a decimal number with `scale` digits after the point.
fn fmt_scaled(v: i128, scale: u32) -> String {
    if scale == 0 {
        return v.to_string();
    }
    let digits = v.unsigned_abs().to_string();
    let width = scale as usize + 1;
    let padded = format!("{digits:0>width$}");
    let (int_part, frac_part) = padded.split_at(padded.len() - scale as usize);
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}{int_part}.{frac_part}")
}

/// Checks a scaled value against the declared bounds.
fn check_bounds(v: i128, scale: u32, min: i64, max: i64) -> Result<i64, String> {
    if v > i128::from(max) {
        return Err(format!(
            "{} is above the declared maximum {}",
            fmt_scaled(v, scale),
            fmt_scaled(i128::from(max), scale)
        ));
    }
    if v < i128::from(min) {
        return Err(format!(
            "{} is below the declared minimum {}",
            fmt_scaled(v, scale),
            fmt_scaled(i128::from(min), scale)
        ));
    }
    // Bounds are i64, so v fits.
    i64::try_from(v).map_err(|_| format!("{} does not fit in 64 bits", fmt_scaled(v, scale)))
}

/// Outcome of parsing a number from text.
enum Parsed {
    /// The exact scaled value.
    Value(i128),
    /// Too large in magnitude for any bound (true if negative).
    Huge(bool),
}

/// Parses `text` exactly as a number scaled by 10^scale. Integers
/// (`is_int`) accept no decimal point. Digits after the point beyond the
/// scale are accepted only if they are zeros.
fn parse_scaled(text: &str, scale: u32, is_int: bool) -> Result<Parsed, String> {
    let kind = if is_int { "an integer" } else { "a decimal number" };
    let malformed = || format!("'{text}' is not {kind}");
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some(_) if is_int => return Err(malformed()),
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(malformed());
    }
    let scale_len = scale as usize;
    let (kept, dropped) = if frac_part.len() > scale_len { frac_part.split_at(scale_len) } else { (frac_part, "") };
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!(
            "'{text}' has {} digits after the decimal point, more than the declared scale {scale}",
            frac_part.len()
        ));
    }
    let mut acc: i128 = 0;
    let padding = scale_len - kept.len();
    let digits = int_part.bytes().chain(kept.bytes()).chain(std::iter::repeat_n(b'0', padding));
    for d in digits {
        match acc.checked_mul(10).and_then(|a| a.checked_add(i128::from(d - b'0'))) {
            Some(a) => acc = a,
            None => return Ok(Parsed::Huge(negative)),
        }
    }
    Ok(Parsed::Value(if negative { -acc } else { acc }))
}

/// How a schema column's values are converted.
enum Target<'a> {
    /// Int (`is_int`) or Decimal: exact scaled integer within bounds.
    Numeric { scale: u32, min: i64, max: i64, is_int: bool },
    /// Category: index of the value in the declared list.
    Category { lookup: HashMap<&'a str, u32>, declared: &'a [String] },
}

impl<'a> Target<'a> {
    fn new(ty: &'a ColumnType) -> Self {
        match ty {
            ColumnType::Int { min, max } => Target::Numeric { scale: 0, min: *min, max: *max, is_int: true },
            ColumnType::Decimal { scale, min, max } => {
                Target::Numeric { scale: *scale, min: *min, max: *max, is_int: false }
            }
            ColumnType::Category { values } => Target::Category {
                lookup: values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| Some((v.as_str(), u32::try_from(i).ok()?)))
                    .collect(),
                declared: values,
            },
        }
    }
}

/// Accumulates one column's converted values.
enum ColumnBuilder {
    Numeric(Int64Builder),
    Category(UInt32Builder),
}

impl ColumnBuilder {
    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Numeric(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Category(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Where a batch of values comes from (for error messages).
struct Ctx<'a> {
    file: &'a str,
    column: &'a str,
    /// Number of data rows before this batch.
    first_row: usize,
}

impl Ctx<'_> {
    fn invalid(&self, index: usize, reason: String) -> DataError {
        DataError::Invalid {
            file: self.file.to_string(),
            row: self.first_row + index + 1,
            column: self.column.to_string(),
            reason,
        }
    }

    fn column_type(&self, reason: String) -> DataError {
        DataError::ColumnType { file: self.file.to_string(), column: self.column.to_string(), reason }
    }
}

/// Whether a source array type is accepted for a target column type; the
/// reason if not.
fn check_source_type(dt: &DataType, ty: &ColumnType) -> Result<(), String> {
    let is_text = matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        || matches!(dt, DataType::Dictionary(_, v) if matches!(v.as_ref(), DataType::Utf8 | DataType::LargeUtf8));
    match ty {
        ColumnType::Category { .. } if is_text => Ok(()),
        ColumnType::Category { .. } => {
            Err(format!("type {dt} cannot hold a category column; categories must be stored as strings"))
        }
        _ if is_text || dt.is_integer() => Ok(()),
        _ if matches!(dt, DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..)) => Ok(()),
        ColumnType::Decimal { .. } if dt.is_floating() => {
            Err(format!("type {dt} is a floating-point type; decimals must be stored exactly as DECIMAL or text"))
        }
        ColumnType::Decimal { .. } => {
            Err(format!("type {dt} cannot hold a decimal column; decimals must be stored exactly as DECIMAL or text"))
        }
        _ => Err(format!("type {dt} cannot hold an integer column; integers must be stored as integers or text")),
    }
}

/// Converts one source array (any accepted type) and appends it to `out`.
fn ingest(array: &ArrayRef, target: &Target<'_>, out: &mut ColumnBuilder, ctx: &Ctx<'_>) -> Result<(), DataError> {
    match (target, out) {
        (Target::Numeric { scale, min, max, is_int }, ColumnBuilder::Numeric(b)) => {
            let dt = array.data_type().clone();
            let (to, min, max) = (*scale, *min, *max);
            match dt {
                DataType::Int8 => ingest_decimal::<Int8Type>(array, 0, to, min, max, b, ctx),
                DataType::Int16 => ingest_decimal::<Int16Type>(array, 0, to, min, max, b, ctx),
                DataType::Int32 => ingest_decimal::<Int32Type>(array, 0, to, min, max, b, ctx),
                DataType::Int64 => ingest_decimal::<Int64Type>(array, 0, to, min, max, b, ctx),
                DataType::UInt8 => ingest_decimal::<UInt8Type>(array, 0, to, min, max, b, ctx),
                DataType::UInt16 => ingest_decimal::<UInt16Type>(array, 0, to, min, max, b, ctx),
                DataType::UInt32 => ingest_decimal::<UInt32Type>(array, 0, to, min, max, b, ctx),
                DataType::UInt64 => ingest_decimal::<UInt64Type>(array, 0, to, min, max, b, ctx),
                DataType::Decimal32(_, s) => ingest_decimal::<Decimal32Type>(array, s, to, min, max, b, ctx),
                DataType::Decimal64(_, s) => ingest_decimal::<Decimal64Type>(array, s, to, min, max, b, ctx),
                DataType::Decimal128(_, s) => ingest_decimal::<Decimal128Type>(array, s, to, min, max, b, ctx),
                _ => {
                    let ty = if *is_int {
                        ColumnType::Int { min, max }
                    } else {
                        ColumnType::Decimal { scale: to, min, max }
                    };
                    check_source_type(&dt, &ty).map_err(|r| ctx.column_type(r))?;
                    let text = as_text(array)?;
                    let text = text
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| ctx.column_type(format!("type {dt} is not supported")))?;
                    for (i, v) in text.iter().enumerate() {
                        let Some(s) = v.map(str::trim).filter(|s| !s.is_empty()) else {
                            b.append_null();
                            continue;
                        };
                        let value = match parse_scaled(s, to, *is_int).map_err(|r| ctx.invalid(i, r))? {
                            Parsed::Value(v) => check_bounds(v, to, min, max),
                            Parsed::Huge(negative) => Err(huge_reason(s, negative, to, min, max)),
                        };
                        b.append_value(value.map_err(|r| ctx.invalid(i, r))?);
                    }
                    Ok(())
                }
            }
        }
        (Target::Category { lookup, declared }, ColumnBuilder::Category(b)) => {
            let dt = array.data_type().clone();
            check_source_type(&dt, &ColumnType::Category { values: Vec::new() }).map_err(|r| ctx.column_type(r))?;
            let text = as_text(array)?;
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| ctx.column_type(format!("type {dt} is not supported")))?;
            for (i, v) in text.iter().enumerate() {
                match v.map(str::trim).filter(|s| !s.is_empty()) {
                    None => b.append_null(),
                    Some(s) => match lookup.get(s) {
                        Some(&index) => b.append_value(index),
                        None => {
                            return Err(ctx.invalid(
                                i,
                                format!("'{s}' is not one of the declared values ({})", list_values(declared)),
                            ))
                        }
                    },
                }
            }
            Ok(())
        }
        _ => Err(DataError::Plan { reason: format!("internal: builder mismatch for column {}", ctx.column) }),
    }
}

/// Casts a string-like array (Utf8, LargeUtf8, Utf8View, dictionary of strings) to Utf8.
fn as_text(array: &ArrayRef) -> Result<ArrayRef, DataError> {
    if array.data_type() == &DataType::Utf8 {
        Ok(Arc::clone(array))
    } else {
        Ok(cast(array.as_ref(), &DataType::Utf8)?)
    }
}

/// The declared values for an error message (at most 20).
fn list_values(declared: &[String]) -> String {
    let mut s = declared.iter().take(20).map(String::as_str).collect::<Vec<_>>().join(", ");
    if declared.len() > 20 {
        let _ = write!(s, ", ... ({} values)", declared.len());
    }
    s
}

/// Converts integers or decimals with source scale `from` to the target
/// scale `to`, exactly, checking the bounds.
#[allow(clippy::too_many_arguments)]
fn ingest_decimal<T>(
    array: &ArrayRef,
    from: i8,
    to: u32,
    min: i64,
    max: i64,
    b: &mut Int64Builder,
    ctx: &Ctx<'_>,
) -> Result<(), DataError>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    let values = array
        .as_any()
        .downcast_ref::<PrimitiveArray<T>>()
        .ok_or_else(|| ctx.column_type(format!("unexpected array for type {}", array.data_type())))?;
    let shift = i64::from(to) - i64::from(from);
    let factor = u32::try_from(shift.unsigned_abs()).ok().and_then(|e| 10i128.checked_pow(e));
    let source_scale = u32::try_from(from).unwrap_or(0);
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else {
            b.append_null();
            continue;
        };
        let v: i128 = v.into();
        let scaled = if v == 0 {
            0
        } else if shift >= 0 {
            match factor.and_then(|f| v.checked_mul(f)) {
                Some(s) => s,
                None => return Err(ctx.invalid(i, huge_reason(&fmt_scaled(v, source_scale), v < 0, to, min, max))),
            }
        } else {
            match factor {
                Some(f) if v % f == 0 => v / f,
                _ => {
                    return Err(ctx.invalid(
                        i,
                        format!(
                            "{} has more digits after the decimal point than the declared scale {to}",
                            fmt_scaled(v, source_scale)
                        ),
                    ))
                }
            }
        };
        let scaled = check_bounds(scaled, to, min, max).map_err(|r| ctx.invalid(i, r))?;
        b.append_value(scaled);
    }
    Ok(())
}

/// The reason for a value too large in magnitude to represent.
fn huge_reason(shown: &str, negative: bool, scale: u32, min: i64, max: i64) -> String {
    if negative {
        format!("{shown} is below the declared minimum {}", fmt_scaled(i128::from(min), scale))
    } else {
        format!("{shown} is above the declared maximum {}", fmt_scaled(i128::from(max), scale))
    }
}

/// Checks the file's column names against the schema and returns, for each
/// schema column, the index of the file column holding it.
fn match_columns(file: &str, names: &[String], schema: &Schema) -> Result<Vec<usize>, DataError> {
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(DataError::DuplicateColumn { file: file.to_string(), column: name.clone() });
        }
    }
    let mut positions = Vec::with_capacity(schema.columns.len());
    for def in &schema.columns {
        match names.iter().position(|n| *n == def.name) {
            Some(p) => positions.push(p),
            None => {
                return Err(DataError::MissingColumn {
                    file: file.to_string(),
                    column: def.name.clone(),
                    found: names.to_vec(),
                })
            }
        }
    }
    if let Some(extra) = names.iter().find(|n| !schema.columns.iter().any(|c| c.name == **n)) {
        return Err(DataError::ExtraColumn {
            file: file.to_string(),
            column: extra.clone(),
            table: schema.table.clone(),
        });
    }
    Ok(positions)
}

/// Loads and validates a party's table from a CSV (`.csv`) or Parquet
/// (`.parquet`) file.
///
/// The file must have exactly the schema's columns, by exact name, in any
/// order. CSV files are comma-separated with a required header row; fields
/// are trimmed of surrounding whitespace and an empty field is NULL. Parquet
/// columns may be integers or text for `Int` columns, `DECIMAL`, integers or
/// text for `Decimal` columns (never floating point), and strings (plain or
/// dictionary-encoded) for `Category` columns; Parquet nulls are NULL.
///
/// Every value is checked: numbers are parsed exactly, must lie within the
/// declared bounds and may not have more digits after the decimal point than
/// the declared scale (unless they are zeros); category values must be
/// declared. The first violation is reported as [`DataError::Invalid`] with
/// the 1-based data row number (for CSV, the header is not counted).
pub fn load_table(path: &Path, schema: &Schema) -> Result<Table, DataError> {
    let file = path.display().to_string();
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let batches = match extension.as_deref() {
        Some("csv") => read_csv(path, &file, schema)?,
        Some("parquet") => read_parquet(path, &file, schema)?,
        _ => return Err(DataError::UnknownFormat { file }),
    };
    let (positions, batches) = batches;
    let targets: Vec<Target<'_>> = schema.columns.iter().map(|c| Target::new(&c.ty)).collect();
    let mut builders: Vec<ColumnBuilder> = schema
        .columns
        .iter()
        .map(|c| match c.ty {
            ColumnType::Category { .. } => ColumnBuilder::Category(UInt32Builder::new()),
            _ => ColumnBuilder::Numeric(Int64Builder::new()),
        })
        .collect();
    let mut first_row = 0usize;
    for batch in batches {
        let batch = batch.map_err(|e| DataError::Read { file: file.clone(), reason: e.to_string() })?;
        for (((def, target), builder), &pos) in schema.columns.iter().zip(&targets).zip(&mut builders).zip(&positions) {
            let array = batch.columns().get(pos).ok_or_else(|| DataError::Read {
                file: file.clone(),
                reason: format!("column {} is absent from a batch", def.name),
            })?;
            let ctx = Ctx { file: &file, column: &def.name, first_row };
            ingest(array, target, builder, &ctx)?;
        }
        first_row += batch.num_rows();
    }
    let columns = builders.into_iter().map(ColumnBuilder::finish).collect();
    Ok(Table { schema: schema.clone(), columns, num_rows: first_row })
}

/// A stream of record batches read from a file.
type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>;

fn open(path: &Path, file: &str) -> Result<File, DataError> {
    File::open(path).map_err(|source| DataError::Io { file: file.to_string(), source })
}

/// Reads the header, checks it, and returns a reader of all columns as text.
fn read_csv(path: &Path, file: &str, schema: &Schema) -> Result<(Vec<usize>, Batches), DataError> {
    let read_err = |e: ArrowError| DataError::Read { file: file.to_string(), reason: e.to_string() };
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (header, _) = format.infer_schema(open(path, file)?, Some(0)).map_err(read_err)?;
    let names: Vec<String> = header
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = f.name().trim();
            let name = if i == 0 { name.trim_start_matches('\u{feff}') } else { name };
            name.to_string()
        })
        .collect();
    let positions = match_columns(file, &names, schema)?;
    let fields: Vec<Field> = (0..names.len()).map(|i| Field::new(format!("c{i}"), DataType::Utf8, true)).collect();
    let reader = arrow::csv::ReaderBuilder::new(Arc::new(arrow::datatypes::Schema::new(fields)))
        .with_header(true)
        .with_batch_size(BATCH_SIZE)
        .build(std::io::BufReader::new(open(path, file)?))
        .map_err(read_err)?;
    Ok((positions, Box::new(reader)))
}

/// Opens a Parquet file, checks its columns and their types, and returns a batch reader.
fn read_parquet(path: &Path, file: &str, schema: &Schema) -> Result<(Vec<usize>, Batches), DataError> {
    let read_err = |e: parquet::errors::ParquetError| DataError::Read { file: file.to_string(), reason: e.to_string() };
    let builder = ParquetRecordBatchReaderBuilder::try_new(open(path, file)?).map_err(read_err)?;
    let arrow_schema = Arc::clone(builder.schema());
    let names: Vec<String> = arrow_schema.fields().iter().map(|f| f.name().clone()).collect();
    let positions = match_columns(file, &names, schema)?;
    for (def, &pos) in schema.columns.iter().zip(&positions) {
        if let Some(field) = arrow_schema.fields().get(pos) {
            check_source_type(field.data_type(), &def.ty).map_err(|reason| DataError::ColumnType {
                file: file.to_string(),
                column: def.name.clone(),
                reason,
            })?;
        }
    }
    let reader = builder.with_batch_size(BATCH_SIZE).build().map_err(read_err)?;
    Ok((positions, Box::new(reader)))
}

// ---------------------------------------------------------------------------
// Local statistics
// ---------------------------------------------------------------------------

fn plan_error(reason: String) -> DataError {
    DataError::Plan { reason }
}

fn column_name(schema: &Schema, col: ColumnId) -> String {
    schema.columns.get(col).map_or_else(|| format!("#{col}"), |c| c.name.clone())
}

/// Describes a statistic with column names, for error messages.
fn describe(schema: &Schema, stat: &Stat) -> String {
    match stat {
        Stat::Moment { nonnull, monomial } => {
            let product = if monomial.is_empty() {
                "1".to_string()
            } else {
                monomial.iter().map(|&c| column_name(schema, c)).collect::<Vec<_>>().join("*")
            };
            let cond = nonnull.iter().map(|&c| column_name(schema, c)).collect::<Vec<_>>().join(", ");
            if cond.is_empty() {
                format!("SUM({product})")
            } else {
                format!("SUM({product}) over rows where {cond} non-null")
            }
        }
        Stat::Bin { col, lo, hi, bins, index } => {
            format!("bin {index} of {bins} of {} in [{lo}, {hi})", column_name(schema, *col))
        }
    }
}

fn array_of(table: &Table, col: ColumnId) -> Result<&ArrayRef, DataError> {
    table.column(col).ok_or_else(|| {
        plan_error(format!("column {col} does not exist (the table has {} columns)", table.columns.len()))
    })
}

/// A boolean array with `value` everywhere except NULL where `array` is null.
fn constant(array: &dyn Array, value: bool) -> BooleanArray {
    let len = array.len();
    let values = if value { BooleanBuffer::new_set(len) } else { BooleanBuffer::new_unset(len) };
    BooleanArray::new(values, array.logical_nulls())
}

/// `col op literal` with SQL NULL semantics.
fn compare(table: &Table, col: ColumnId, op: CmpOp, lit: &Literal) -> Result<BooleanArray, DataError> {
    let array = array_of(table, col)?;
    let scalar: Box<dyn Datum> = match (array.data_type(), lit) {
        (DataType::Int64, Literal::Number(n)) => match i64::try_from(*n) {
            Ok(v) => Box::new(Int64Array::new_scalar(v)),
            Err(_) => {
                // Every value of the column is below (n > 0) or above (n < 0) the literal.
                let below = *n > 0;
                let result = match op {
                    CmpOp::Eq => false,
                    CmpOp::NotEq => true,
                    CmpOp::Lt | CmpOp::LtEq => below,
                    CmpOp::Gt | CmpOp::GtEq => !below,
                };
                return Ok(constant(array.as_ref(), result));
            }
        },
        (DataType::UInt32, Literal::Category(c)) => Box::new(UInt32Array::new_scalar(*c)),
        (dt, lit) => {
            return Err(plan_error(format!(
                "literal {lit:?} cannot be compared with column {} of type {dt}",
                column_name(&table.schema, col)
            )))
        }
    };
    let lhs: &dyn Datum = array;
    let rhs = scalar.as_ref();
    Ok(match op {
        CmpOp::Eq => eq(lhs, rhs)?,
        CmpOp::NotEq => neq(lhs, rhs)?,
        CmpOp::Lt => lt(lhs, rhs)?,
        CmpOp::LtEq => lt_eq(lhs, rhs)?,
        CmpOp::Gt => gt(lhs, rhs)?,
        CmpOp::GtEq => gt_eq(lhs, rhs)?,
    })
}

/// Evaluates a predicate to a mask with SQL three-valued logic (NULL = unknown).
fn eval(table: &Table, pred: &Predicate) -> Result<BooleanArray, DataError> {
    Ok(match pred {
        Predicate::Compare { col, op, value } => compare(table, *col, *op, value)?,
        Predicate::InList { col, values, negated } => {
            let mut acc = constant(array_of(table, *col)?.as_ref(), false);
            for v in values {
                acc = or_kleene(&acc, &compare(table, *col, CmpOp::Eq, v)?)?;
            }
            if *negated {
                not(&acc)?
            } else {
                acc
            }
        }
        Predicate::Between { col, lo, hi, negated } => {
            let inside = and_kleene(&compare(table, *col, CmpOp::GtEq, lo)?, &compare(table, *col, CmpOp::LtEq, hi)?)?;
            if *negated {
                not(&inside)?
            } else {
                inside
            }
        }
        Predicate::IsNull { col, negated } => {
            let array = array_of(table, *col)?;
            if *negated {
                is_not_null(array.as_ref())?
            } else {
                is_null(array.as_ref())?
            }
        }
        Predicate::And(a, b) => and_kleene(&eval(table, a)?, &eval(table, b)?)?,
        Predicate::Or(a, b) => or_kleene(&eval(table, a)?, &eval(table, b)?)?,
        Predicate::Not(a) => not(&eval(table, a)?)?,
    })
}

fn int64<'a>(schema: &Schema, arrays: &'a [Option<ArrayRef>], col: ColumnId) -> Result<&'a Int64Array, DataError> {
    arrays
        .get(col)
        .and_then(Option::as_ref)
        .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| plan_error(format!("column {} is not numeric", column_name(schema, col))))
}

/// Marker for "this row belongs to no group of the plan".
const NO_GROUP: u32 = u32::MAX;

/// The rows of a query: the needed columns after WHERE, and the plan group
/// of every selected row.
struct Selection {
    /// Per schema column: the filtered array if needed.
    arrays: Vec<Option<ArrayRef>>,
    /// Plan group of each selected row ([`NO_GROUP`] for none).
    slots: Vec<u32>,
    /// For a plan group listed twice, the first occurrence.
    duplicate_of: Vec<Option<usize>>,
}

/// Evaluates WHERE (three-valued logic) and assigns each selected row its
/// plan group; keeps the columns in `needed` and the GROUP BY columns.
fn select(
    table: &Table,
    query: &Query,
    plan: &StatsPlan,
    mut needed: BTreeSet<ColumnId>,
) -> Result<Selection, DataError> {
    let schema = &table.schema;
    let n_groups = plan.groups.len();
    if u32::try_from(n_groups).map_or(true, |g| g == NO_GROUP) {
        return Err(plan_error(format!("the plan has too many groups ({n_groups})")));
    }

    // GROUP BY columns: category columns, with their declared value counts.
    let mut radix = Vec::with_capacity(query.group_by.len());
    for &col in &query.group_by {
        match schema.columns.get(col).map(|c| &c.ty) {
            Some(ColumnType::Category { values }) => radix.push(values.len()),
            _ => {
                return Err(plan_error(format!(
                    "GROUP BY column {} is not a category column",
                    column_name(schema, col)
                )))
            }
        }
    }
    let key_count = radix
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|&k| k <= MAX_GROUP_KEYS)
        .ok_or_else(|| plan_error("too many GROUP BY combinations".to_string()))?;
    // Dense map from a mixed-radix key to the first plan group with that key.
    let mut key_to_group = vec![NO_GROUP; key_count];
    let mut duplicate_of: Vec<Option<usize>> = vec![None; n_groups];
    for (g, values) in plan.groups.iter().enumerate() {
        if values.len() != radix.len() {
            return Err(plan_error(format!(
                "group {g} has {} values but the query groups by {} columns",
                values.len(),
                radix.len()
            )));
        }
        let mut key = 0usize;
        let mut valid = true;
        for (&v, &n) in values.iter().zip(&radix) {
            let v = usize::try_from(v).unwrap_or(usize::MAX);
            valid &= v < n;
            key = key * n + v.min(n.saturating_sub(1));
        }
        if !valid {
            continue; // a value that no row can have: the group stays zero
        }
        if let Some(slot) = key_to_group.get_mut(key) {
            if *slot == NO_GROUP {
                *slot = u32::try_from(g).unwrap_or(NO_GROUP);
            } else {
                duplicate_of[g] = usize::try_from(*slot).ok();
            }
        }
    }

    // Columns needed after filtering.
    needed.extend(query.group_by.iter().copied());
    for &col in &needed {
        array_of(table, col)?;
    }

    // WHERE: mask with three-valued logic, then select rows with Arrow's filter kernel.
    let mut arrays: Vec<Option<ArrayRef>> = vec![None; table.columns.len()];
    let rows = match &query.filter {
        Some(pred) => {
            let mask = eval(table, pred)?;
            let predicate = FilterBuilder::new(&mask).optimize().build();
            for &col in &needed {
                if let (Some(slot), Some(array)) = (arrays.get_mut(col), table.columns.get(col)) {
                    *slot = Some(predicate.filter(array.as_ref())?);
                }
            }
            predicate.count()
        }
        None => {
            for &col in &needed {
                if let (Some(slot), Some(array)) = (arrays.get_mut(col), table.columns.get(col)) {
                    *slot = Some(Arc::clone(array));
                }
            }
            table.num_rows
        }
    };

    // Group of each selected row.
    let slots: Vec<u32> = if radix.is_empty() {
        vec![key_to_group.first().copied().unwrap_or(NO_GROUP); rows]
    } else {
        let mut keys = vec![0usize; rows];
        let mut valid = vec![true; rows];
        for (&col, &n) in query.group_by.iter().zip(&radix) {
            let array = arrays
                .get(col)
                .and_then(Option::as_ref)
                .and_then(|a| a.as_any().downcast_ref::<UInt32Array>())
                .ok_or_else(|| {
                    plan_error(format!("GROUP BY column {} is not a category column", column_name(schema, col)))
                })?;
            let nulls = array.nulls();
            for (i, (&v, (key, ok))) in array.values().iter().zip(keys.iter_mut().zip(valid.iter_mut())).enumerate() {
                let v = v as usize;
                if v >= n || nulls.is_some_and(|nb| nb.is_null(i)) {
                    *ok = false;
                } else {
                    *key = *key * n + v;
                }
            }
        }
        keys.iter()
            .zip(&valid)
            .map(|(&k, &ok)| if ok { key_to_group.get(k).copied().unwrap_or(NO_GROUP) } else { NO_GROUP })
            .collect()
    };

    Ok(Selection { arrays, slots, duplicate_of })
}

/// Computes this party's local statistics: for every group of `plan.groups`
/// and every statistic of `plan.stats`, the exact sum over the rows of the
/// group that satisfy `query.filter`, as defined on [`Stat`]. The result has
/// `plan.len()` entries, group-major: entry `g * plan.stats.len() + s`.
///
/// The WHERE predicate is evaluated with SQL three-valued logic (rows where
/// it is NULL or false are dropped). Rows whose GROUP BY value is NULL belong
/// to no group and are not counted. A plan group listed twice gets the same
/// sums twice.
pub fn local_stats(table: &Table, query: &Query, plan: &StatsPlan) -> Result<Vec<i128>, DataError> {
    let schema = &table.schema;
    let n_stats = plan.stats.len();
    let n_groups = plan.groups.len();
    let total = n_groups.checked_mul(n_stats).ok_or_else(|| plan_error("the plan is too large".to_string()))?;
    let mut needed: BTreeSet<ColumnId> = BTreeSet::new();
    for stat in &plan.stats {
        match stat {
            Stat::Moment { nonnull, monomial } => needed.extend(nonnull.iter().chain(monomial).copied()),
            Stat::Bin { col, .. } => {
                needed.insert(*col);
            }
        }
    }
    let Selection { arrays, slots, duplicate_of } = select(table, query, plan, needed)?;

    let mut out = vec![0i128; total];
    let mut acc = vec![0i128; n_groups];
    for (s, stat) in plan.stats.iter().enumerate() {
        acc.fill(0);
        let overflow = || DataError::Overflow { stat: describe(schema, stat) };
        match stat {
            Stat::Moment { nonnull, monomial } => {
                let mut validity: Option<NullBuffer> = None;
                for &col in nonnull.iter().chain(monomial) {
                    let array = arrays
                        .get(col)
                        .and_then(Option::as_ref)
                        .ok_or_else(|| plan_error(format!("column {col} is missing")))?;
                    validity = NullBuffer::union(validity.as_ref(), array.logical_nulls().as_ref());
                }
                let factors: Vec<&[i64]> = monomial
                    .iter()
                    .map(|&c| int64(schema, &arrays, c).map(|a| a.values().as_ref()))
                    .collect::<Result<_, _>>()?;
                let ok = |i: usize| validity.as_ref().is_none_or(|nb| nb.is_valid(i));
                let mut add = |g: u32, x: i128| -> Result<(), DataError> {
                    if let Some(a) = acc.get_mut(g as usize) {
                        *a = a.checked_add(x).ok_or_else(overflow)?;
                    }
                    Ok(())
                };
                match factors.as_slice() {
                    [] => {
                        for (i, &g) in slots.iter().enumerate() {
                            if g != NO_GROUP && ok(i) {
                                add(g, 1)?;
                            }
                        }
                    }
                    [a] => {
                        for (i, (&g, &x)) in slots.iter().zip(a.iter()).enumerate() {
                            if g != NO_GROUP && ok(i) {
                                add(g, i128::from(x))?;
                            }
                        }
                    }
                    [a, b] => {
                        for (i, ((&g, &x), &y)) in slots.iter().zip(a.iter()).zip(b.iter()).enumerate() {
                            if g != NO_GROUP && ok(i) {
                                add(g, i128::from(x) * i128::from(y))?;
                            }
                        }
                    }
                    many => {
                        for (i, &g) in slots.iter().enumerate() {
                            if g != NO_GROUP && ok(i) {
                                let mut p: i128 = 1;
                                for f in many {
                                    let x = f
                                        .get(i)
                                        .copied()
                                        .ok_or_else(|| plan_error("column length mismatch".to_string()))?;
                                    p = p.checked_mul(i128::from(x)).ok_or_else(overflow)?;
                                }
                                add(g, p)?;
                            }
                        }
                    }
                }
            }
            Stat::Bin { col, lo, hi, bins, index } => {
                let array = int64(schema, &arrays, *col)?;
                let width = hi.checked_sub(*lo).ok_or_else(overflow)?;
                let lower = width.checked_mul(i128::from(*index)).ok_or_else(overflow)?;
                let upper = width.checked_mul(i128::from(*index) + 1).ok_or_else(overflow)?;
                let bins = i128::from(*bins);
                let nulls = array.nulls();
                for (i, (&g, &v)) in slots.iter().zip(array.values().iter()).enumerate() {
                    if g == NO_GROUP || nulls.is_some_and(|nb| nb.is_null(i)) {
                        continue;
                    }
                    let d = i128::from(v).checked_sub(*lo).and_then(|d| d.checked_mul(bins)).ok_or_else(overflow)?;
                    if d >= lower && d < upper {
                        if let Some(a) = acc.get_mut(g as usize) {
                            *a = a.checked_add(1).ok_or_else(overflow)?;
                        }
                    }
                }
            }
        }
        for (g, &value) in acc.iter().enumerate() {
            let source = duplicate_of.get(g).copied().flatten().map_or(value, |d| acc.get(d).copied().unwrap_or(0));
            if let Some(o) = out.get_mut(g * n_stats + s) {
                *o = source;
            }
        }
    }
    Ok(out)
}

/// One party's private input to the interactive phase of a query with order
/// statistics or a minimum group size (`concord_query::order`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalOrder {
    /// Per plan group: the number of rows of the group that satisfy WHERE
    /// (its COUNT(*)).
    pub group_rows: Vec<u64>,
    /// Per plan group g and searched column j (`order.columns` order):
    /// entry `g * order.columns.len() + j` holds the group's non-null
    /// values of the column (scaled), sorted ascending, so that the number
    /// of values <= v is one `partition_point`.
    pub sorted: Vec<Vec<i64>>,
}

/// This party's [`LocalOrder`]: the same WHERE and groups as
/// [`local_stats`], each searched column's values sorted once per group.
pub fn local_order(table: &Table, query: &Query, plan: &StatsPlan, order: &OrderPlan) -> Result<LocalOrder, DataError> {
    let schema = &table.schema;
    let n_groups = plan.groups.len();
    let n_cols = order.columns.len();
    if order.groups != n_groups {
        return Err(plan_error(format!("the order plan has {} groups, the statistics plan {n_groups}", order.groups)));
    }
    let needed: BTreeSet<ColumnId> = order.columns.iter().map(|c| c.col).collect();
    let Selection { arrays, slots, duplicate_of } = select(table, query, plan, needed)?;
    let mut group_rows = vec![0u64; n_groups];
    for &g in &slots {
        if let Some(c) = group_rows.get_mut(g as usize) {
            *c += 1;
        }
    }
    let size = n_groups.checked_mul(n_cols).ok_or_else(|| plan_error("the order plan is too large".to_string()))?;
    let mut sorted: Vec<Vec<i64>> = vec![Vec::new(); size];
    for (j, c) in order.columns.iter().enumerate() {
        let array = int64(schema, &arrays, c.col)?;
        let nulls = array.nulls();
        for (i, (&g, &v)) in slots.iter().zip(array.values().iter()).enumerate() {
            if g == NO_GROUP || nulls.is_some_and(|nb| nb.is_null(i)) {
                continue;
            }
            if let Some(list) = sorted.get_mut(g as usize * n_cols + j) {
                list.push(v);
            }
        }
    }
    for list in &mut sorted {
        list.sort_unstable();
    }
    for (g, d) in duplicate_of.iter().enumerate() {
        if let Some(d) = *d {
            let rows = group_rows.get(d).copied().unwrap_or(0);
            if let Some(r) = group_rows.get_mut(g) {
                *r = rows;
            }
            for j in 0..n_cols {
                let copy = sorted.get(d * n_cols + j).cloned().unwrap_or_default();
                if let Some(slot) = sorted.get_mut(g * n_cols + j) {
                    *slot = copy;
                }
            }
        }
    }
    Ok(LocalOrder { group_rows, sorted })
}
