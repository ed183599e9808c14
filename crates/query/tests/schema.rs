//! Schema TOML parsing and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_query::{ColumnType, QueryError, Schema};

const GOOD: &str = r#"
table = "patients"
max_rows = 1000000
[[column]]
name = "age"
type = "int"
min = 0
max = 120
[[column]]
name = "bmi"
type = "decimal"
scale = 2
min = 10.0
max = "80.25"
[[column]]
name = "Sex"
type = "category"
values = ["F", "M"]
[[column]]
name = "temp"
type = "decimal"
scale = 1
min = -5
max = 42.5
"#;

fn err(text: &str) -> String {
    match Schema::from_toml(text) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn col(extra: &str) -> String {
    format!("table = \"t\"\n[[column]]\nname = \"c\"\n{extra}\n")
}

#[test]
fn parses_good_schema() {
    let s = Schema::from_toml(GOOD).unwrap();
    assert_eq!(s.table, "patients");
    assert_eq!(s.max_rows, 1_000_000);
    assert_eq!(s.columns.len(), 4);
    assert_eq!(s.columns[0].ty, ColumnType::Int { min: 0, max: 120 });
    assert_eq!(s.columns[1].ty, ColumnType::Decimal { scale: 2, min: 1000, max: 8025 });
    assert_eq!(s.columns[2].ty, ColumnType::Category { values: vec!["F".into(), "M".into()] });
    assert_eq!(s.columns[3].ty, ColumnType::Decimal { scale: 1, min: -50, max: 425 });
}

#[test]
fn default_max_rows_and_lookup() {
    let s = Schema::from_toml(&col("type = \"int\"\nmin = 1\nmax = 2")).unwrap();
    assert_eq!(s.max_rows, 1_000_000_000);
    let s = Schema::from_toml(GOOD).unwrap();
    assert_eq!(s.column("SEX").map(|(i, _)| i), Some(2));
    assert_eq!(s.column("Age").map(|(i, c)| (i, c.name.as_str())), Some((0, "age")));
    assert!(s.column("nope").is_none());
}

#[test]
fn float_bounds_are_exact() {
    // 0.1 + 0.2 style values: converted from the decimal text, never via f64.
    let s = Schema::from_toml(&col("type = \"decimal\"\nscale = 2\nmin = 0.29\nmax = 1e2")).unwrap();
    assert_eq!(s.columns[0].ty, ColumnType::Decimal { scale: 2, min: 29, max: 10000 });
    let e = err(&col("type = \"decimal\"\nscale = 1\nmin = 0.25\nmax = 1"));
    assert!(e.contains("`c`") && e.contains("min") && e.contains("0.25") && e.contains("scale 1"), "{e}");
}

#[test]
fn toml_syntax_error_keeps_position() {
    let e = Schema::from_toml("table = \"t\"\n[[column]\nname = 1").unwrap_err();
    assert!(matches!(e, QueryError::Toml(_)));
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn schema_errors() {
    let cases: &[(&str, &[&str])] = &[
        (&col("type = \"float\"\nmin = 0\nmax = 1"), &["`c`", "unknown type `float`"]),
        (&col("type = \"int\"\nmin = 5\nmax = 1"), &["`c`", "min > max"]),
        (&col("type = \"int\"\nmin = 5"), &["`c`", "missing bound `max`"]),
        (&col("type = \"int\"\nmax = 5"), &["`c`", "missing bound `min`"]),
        (&col("type = \"decimal\"\nscale = 19\nmin = 0\nmax = 1"), &["`c`", "scale", "18"]),
        (&col("type = \"decimal\"\nmin = 0\nmax = 1"), &["`c`", "missing `scale`"]),
        (&col("type = \"category\"\nvalues = []"), &["`c`", "empty"]),
        (&col("type = \"category\"\nvalues = [\"a\", \"a\"]"), &["`c`", "duplicate category value \"a\""]),
        (&col("type = \"category\"\nvalues = [1]"), &["`c`", "strings"]),
        (&col("type = \"category\""), &["`c`", "missing `values`"]),
        (&col("type = \"decimal\"\nscale = 18\nmin = 0\nmax = 10"), &["`c`", "64-bit", "max"]),
        (&col("type = \"int\"\nmin = 0\nmax = 1\ncolour = \"red\""), &["`c`", "unknown key `colour`"]),
        (&col("type = \"int\"\nmin = 0\nmax = 1\nvalues = [\"x\"]"), &["`c`", "unknown key `values`"]),
        (&col("type = \"category\"\nvalues = [\"x\"]\nmin = 0"), &["`c`", "unknown key `min`"]),
        (&col("type = \"int\"\nmin = 0\nmax = 1.5"), &["`c`", "max", "1.5"]),
        (&col("type = \"int\"\nmin = 0\nmax = \"ten\""), &["`c`", "not a decimal number"]),
        (&col("type = \"int\"\nmin = 0\nmax = true"), &["`c`", "must be a number"]),
        (&col("min = 0\nmax = 1"), &["`c`", "missing `type`"]),
        ("table = \"t\"\ncolour = 1\n[[column]]\nname = \"c\"\ntype = \"int\"\nmin = 0\nmax = 1", &["unknown key `colour`"]),
        ("[[column]]\nname = \"c\"\ntype = \"int\"\nmin = 0\nmax = 1", &["missing `table`"]),
        ("table = \"t\"", &["no columns"]),
        ("table = \"t\"\nmax_rows = 0\n[[column]]\nname = \"c\"\ntype = \"int\"\nmin = 0\nmax = 1", &["max_rows"]),
        ("table = \"t\"\n[[column]]\ntype = \"int\"\nmin = 0\nmax = 1", &["column #1", "missing `name`"]),
        (
            "table = \"t\"\n[[column]]\nname = \"a\"\ntype = \"int\"\nmin = 0\nmax = 1\n[[column]]\nname = \"A\"\ntype = \"int\"\nmin = 0\nmax = 1",
            &["duplicate column name `A`"],
        ),
    ];
    for (text, needles) in cases {
        let e = err(text);
        for n in *needles {
            assert!(e.contains(n), "error {e:?} for\n{text}\nshould contain {n:?}");
        }
    }
}
