//! The data model shared by the query layer (this crate), the data layer
//! (`concord-data`, which evaluates plans on local rows) and the secure
//! aggregation (`concord-analytics`). Every type here is public knowledge:
//! schemas, queries and plans are identical at every party.

/// Index of a column in [`Schema::columns`].
pub type ColumnId = usize;

/// The public description of a table, identical at every party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// Table name used in `FROM`.
    pub table: String,
    /// Upper bound on the number of rows any one party holds (public; used to
    /// bound sums for overflow checks). Default 1,000,000,000.
    pub max_rows: u64,
    /// Optional top-level `min_group_size = k`: groups (or, without GROUP
    /// BY, the whole result) with fewer than k rows are suppressed, decided
    /// inside MPC (see [`crate::order`]). `None` (or 0) disables it.
    pub min_group_size: Option<u64>,
    /// Columns, in declaration order.
    pub columns: Vec<ColumnDef>,
}

/// One column of a [`Schema`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name (case-sensitive as declared; SQL identifiers match it case-insensitively).
    pub name: String,
    /// Type and bounds.
    pub ty: ColumnType,
}

/// Column types. Numeric values are exact integers: an `Int` as itself, a
/// `Decimal` with scale s as value * 10^s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Integer with inclusive bounds.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// Fixed-point decimal with `scale` digits after the point; bounds are
    /// given scaled (value * 10^scale).
    Decimal {
        /// Digits after the decimal point (0..=18).
        scale: u32,
        /// Smallest allowed value, scaled.
        min: i64,
        /// Largest allowed value, scaled.
        max: i64,
    },
    /// One of a declared set of strings; value i of `values` is encoded as i.
    Category {
        /// The declared values, in order.
        values: Vec<String>,
    },
}

/// A literal in a predicate, already resolved against the column's type:
/// numeric literals are scaled to the column's scale; category literals are
/// the index of the value in the declared list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal {
    /// A scaled numeric value (for `Int` columns scale 0). A literal that is
    /// not exactly representable at the column's scale is refused at parse time.
    Number(i128),
    /// Index into the category's declared values.
    Category(u32),
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

/// A WHERE predicate, evaluated locally by each party on its own rows with
/// SQL three-valued logic (a comparison with NULL is unknown; rows whose
/// predicate is not TRUE are dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// `col op literal` (a literal on the left is normalised to this form).
    Compare {
        /// The column.
        col: ColumnId,
        /// The operator.
        op: CmpOp,
        /// The literal.
        value: Literal,
    },
    /// `col [NOT] IN (v1, v2, ...)`.
    InList {
        /// The column.
        col: ColumnId,
        /// The values.
        values: Vec<Literal>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `col [NOT] BETWEEN lo AND hi` (inclusive).
    Between {
        /// The column.
        col: ColumnId,
        /// Lower bound.
        lo: Literal,
        /// Upper bound.
        hi: Literal,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `col IS [NOT] NULL`.
    IsNull {
        /// The column.
        col: ColumnId,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `a AND b`.
    And(Box<Predicate>, Box<Predicate>),
    /// `a OR b`.
    Or(Box<Predicate>, Box<Predicate>),
    /// `NOT a`.
    Not(Box<Predicate>),
}

/// An aggregate of the supported subset (PostgreSQL names and semantics:
/// NULLs are ignored; two-column aggregates use rows where both are non-null).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// `COUNT(*)`.
    CountStar,
    /// `COUNT(col)`: non-null values.
    Count(ColumnId),
    /// `SUM(col)`.
    Sum(ColumnId),
    /// `AVG(col)`.
    Avg(ColumnId),
    /// `VAR_POP(col)`.
    VarPop(ColumnId),
    /// `VAR_SAMP(col)`.
    VarSamp(ColumnId),
    /// `STDDEV_POP(col)`.
    StddevPop(ColumnId),
    /// `STDDEV_SAMP(col)`.
    StddevSamp(ColumnId),
    /// `COVAR_POP(y, x)`.
    CovarPop(ColumnId, ColumnId),
    /// `COVAR_SAMP(y, x)`.
    CovarSamp(ColumnId, ColumnId),
    /// `CORR(y, x)`.
    Corr(ColumnId, ColumnId),
    /// `REGR_SLOPE(y, x)`.
    RegrSlope(ColumnId, ColumnId),
    /// `REGR_INTERCEPT(y, x)`.
    RegrIntercept(ColumnId, ColumnId),
    /// `REGR_R2(y, x)`.
    RegrR2(ColumnId, ColumnId),
    /// `LINREG(y, x1, ..., xk)`: OLS with intercept; returns [b0, b1, ..., bk].
    Linreg {
        /// Response.
        y: ColumnId,
        /// Regressors.
        xs: Vec<ColumnId>,
    },
    /// `HISTOGRAM(col, lo, hi, bins)`: counts of non-null values in the
    /// half-open bins [lo + i w, lo + (i+1) w), w = (hi - lo) / bins; values
    /// outside [lo, hi) are not counted. `lo`, `hi` scaled to the column's scale.
    Histogram {
        /// The column.
        col: ColumnId,
        /// Lower edge, scaled.
        lo: i128,
        /// Upper edge, scaled.
        hi: i128,
        /// Number of bins (1..=10,000).
        bins: u32,
    },
    /// `MIN(col)`: the smallest non-null value (an order statistic, p = 0).
    Min(ColumnId),
    /// `MAX(col)`: the largest non-null value (p = 1).
    Max(ColumnId),
    /// `MEDIAN(col)` = `PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY col)`.
    Median(ColumnId),
    /// `PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY col)` with PostgreSQL's
    /// linear interpolation; `p` exact, in [0, 1] (`ORDER BY col DESC`
    /// is stored as 1 - p).
    PercentileCont {
        /// The column.
        col: ColumnId,
        /// The fraction p.
        p: Fraction,
    },
}

/// An exact fraction `num / den` in [0, 1] with `1 <= den <` [`crate::order::MAX_DENOMINATOR`]`+1`,
/// in lowest terms (so equal fractions compare equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fraction {
    num: u64,
    den: u64,
}

impl Fraction {
    /// `num / den` in lowest terms; `None` unless `0 <= num <= den`,
    /// `1 <= den <= MAX_DENOMINATOR` (after reduction).
    pub fn new(num: u64, den: u64) -> Option<Fraction> {
        if den == 0 || num > den {
            return None;
        }
        let (mut a, mut b) = (num, den);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        let (num, den) = (num / a, den / a);
        (den <= crate::order::MAX_DENOMINATOR).then_some(Fraction { num, den })
    }

    /// The numerator P.
    pub fn num(&self) -> u64 {
        self.num
    }

    /// The denominator D.
    pub fn den(&self) -> u64 {
        self.den
    }

    /// 1 - p.
    pub fn complement(&self) -> Fraction {
        Fraction { num: self.den - self.num, den: self.den }
    }
}

impl Aggregate {
    /// The order statistic this aggregate needs, if it is one: MIN is
    /// p = 0, MAX p = 1, MEDIAN p = 1/2 (one code path for all four).
    pub fn order_stat(&self) -> Option<OrderStat> {
        let (col, p) = match self {
            Aggregate::Min(c) => (*c, Fraction { num: 0, den: 1 }),
            Aggregate::Max(c) => (*c, Fraction { num: 1, den: 1 }),
            Aggregate::Median(c) => (*c, Fraction { num: 1, den: 2 }),
            Aggregate::PercentileCont { col, p } => (*col, *p),
            _ => return None,
        };
        Some(OrderStat { col, p })
    }
}

/// One order statistic of a column, computed for every group: the value at
/// fraction p of the sorted non-null values, interpolated (PostgreSQL's
/// `percentile_cont`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderStat {
    /// The column (int or decimal).
    pub col: ColumnId,
    /// The fraction.
    pub p: Fraction,
}

/// A parsed query of the supported subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The selected aggregates with their output names (the SQL text of the
    /// item, or its alias).
    pub select: Vec<(String, Aggregate)>,
    /// WHERE predicate.
    pub filter: Option<Predicate>,
    /// GROUP BY columns (category columns only).
    pub group_by: Vec<ColumnId>,
}

/// A sufficient statistic: an exact integer sum over the party's filtered
/// rows of one group. Local sums of every party add up to the pooled sum.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stat {
    /// Sum over rows where every column of `nonnull` is non-null of the
    /// product of the (scaled) values of `monomial` (columns may repeat;
    /// empty product = 1, i.e. a row count). `nonnull` is sorted, deduplicated
    /// and contains every column of `monomial`.
    Moment {
        /// Columns required non-null.
        nonnull: Vec<ColumnId>,
        /// Columns multiplied (sorted; length 0..=2).
        monomial: Vec<ColumnId>,
    },
    /// Number of rows whose non-null value of `col` (scaled) lies in
    /// [lo + index * (hi - lo) / bins, lo + (index + 1) * (hi - lo) / bins),
    /// compared exactly: bins * (v - lo) in [index * (hi - lo), (index + 1) * (hi - lo)).
    Bin {
        /// The column.
        col: ColumnId,
        /// Lower edge, scaled.
        lo: i128,
        /// Upper edge, scaled.
        hi: i128,
        /// Number of bins.
        bins: u32,
        /// Which bin.
        index: u32,
    },
}

/// What every party computes locally, and what is summed securely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsPlan {
    /// The groups, in output order: for each GROUP BY column the index of a
    /// declared category value (the cartesian product of the declared
    /// values, public). One empty group when there is no GROUP BY.
    pub groups: Vec<Vec<u32>>,
    /// The statistics computed for every group, deduplicated, sorted.
    pub stats: Vec<Stat>,
}

impl StatsPlan {
    /// Length of the vector each party contributes: groups x stats, group-major
    /// (entry `g * stats.len() + s`).
    pub fn len(&self) -> usize {
        self.groups.len() * self.stats.len()
    }

    /// Whether the plan computes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value of a result cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An exact integer (counts; sums of Int columns).
    Int(i128),
    /// A number (exact decimal sums are rendered as `Number`, as are derived statistics).
    Number(f64),
    /// A category label (GROUP BY keys).
    Text(String),
    /// An undefined statistic (e.g. the variance of fewer than 2 values), as PostgreSQL's NULL.
    Null,
    /// Histogram counts or LINREG coefficients.
    Array(Vec<Value>),
    /// The group has fewer rows than the minimum group size (the value
    /// given): none of its aggregates was revealed.
    Suppressed(u64),
}

/// The answer to a query: one row per group.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultTable {
    /// Column names: the GROUP BY columns, then the select items.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
}

/// The arithmetic domain chosen for the secure sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// GF(2^61 - 1).
    M61,
    /// GF(2^127 - 1).
    M127,
}
