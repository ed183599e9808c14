//! Loading CSV and Parquet files: good data and every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Decimal128Array, DictionaryArray, Float64Array, Int32Array, Int64Array, StringArray, UInt32Array,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use concord_data::{load_table, DataError, Table};
use concord_query::{ColumnDef, ColumnType, Schema};
use parquet::arrow::ArrowWriter;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("concord-data-load-{}-{}", std::process::id(), name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn write_parquet(&self, name: &str, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
        let path = self.0.join(name);
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn schema() -> Schema {
    Schema {
        table: "patients".to_string(),
        max_rows: 1_000_000_000,
        min_group_size: None,
        columns: vec![
            ColumnDef { name: "age".to_string(), ty: ColumnType::Int { min: 0, max: 120 } },
            ColumnDef { name: "weight".to_string(), ty: ColumnType::Decimal { scale: 2, min: -1000, max: 50000 } },
            ColumnDef {
                name: "sex".to_string(),
                ty: ColumnType::Category { values: vec!["F".to_string(), "M".to_string()] },
            },
        ],
    }
}

fn ints(table: &Table, col: usize) -> Vec<Option<i64>> {
    let a = table.column(col).unwrap();
    let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
    a.iter().collect()
}

fn cats(table: &Table, col: usize) -> Vec<Option<u32>> {
    let a = table.column(col).unwrap();
    let a = a.as_any().downcast_ref::<UInt32Array>().unwrap();
    a.iter().collect()
}

#[test]
fn loads_good_csv() {
    let dir = TempDir::new("good");
    // Columns in another order than the schema; spaces around fields; CRLF.
    let path = dir.write(
        "patients_a.csv",
        "sex,weight,age\r\nF,70.5,34\r\nM, 80.25 ,\r\n,,61\r\nM,-0.05,0\r\nF,+3,120\r\nM,.5,7\r\nF,5.,8\r\nF,70.100,9\r\n",
    );
    let table = load_table(&path, &schema()).unwrap();
    assert_eq!(table.num_rows(), 8);
    assert_eq!(table.schema(), &schema());
    assert_eq!(ints(&table, 0), vec![Some(34), None, Some(61), Some(0), Some(120), Some(7), Some(8), Some(9)]);
    assert_eq!(
        ints(&table, 1),
        vec![Some(7050), Some(8025), None, Some(-5), Some(300), Some(50), Some(500), Some(7010)]
    );
    assert_eq!(cats(&table, 2), vec![Some(0), Some(1), None, Some(1), Some(0), Some(1), Some(0), Some(0)]);
    assert!(table.column(3).is_none());
    assert_eq!(table.columns().len(), 3);
}

#[test]
fn loads_empty_csv_with_header_only() {
    let dir = TempDir::new("empty");
    let path = dir.write("p.csv", "age,weight,sex\n");
    let table = load_table(&path, &schema()).unwrap();
    assert_eq!(table.num_rows(), 0);
    assert_eq!(table.column(0).unwrap().len(), 0);
}

#[test]
fn loads_large_decimal_scale_exactly() {
    let dir = TempDir::new("scale18");
    let schema = Schema {
        table: "t".to_string(),
        max_rows: 10,
        min_group_size: None,
        columns: vec![ColumnDef {
            name: "x".to_string(),
            ty: ColumnType::Decimal { scale: 18, min: i64::MIN, max: i64::MAX },
        }],
    };
    let path = dir.write("x.csv", "x\n0.123456789012345678\n-9.223372036854775808\n");
    let table = load_table(&path, &schema).unwrap();
    assert_eq!(ints(&table, 0), vec![Some(123_456_789_012_345_678), Some(i64::MIN)]);
    let path = dir.write("y.csv", "x\n9.223372036854775808\n");
    let err = load_table(&path, &schema).unwrap_err().to_string();
    assert!(
        err.contains("row 1, column x: 9.223372036854775808 is above the declared maximum 9.223372036854775807"),
        "{err}"
    );
}

#[test]
fn loads_good_parquet() {
    let dir = TempDir::new("parquet");
    let age: ArrayRef = Arc::new(Int32Array::from(vec![Some(34), None, Some(61)]));
    // DECIMAL(10, 1): scale below the declared 2, rescaled exactly.
    let weight: ArrayRef =
        Arc::new(Decimal128Array::from(vec![Some(705), Some(-3), None]).with_precision_and_scale(10, 1).unwrap());
    let sex: ArrayRef = Arc::new(vec![Some("M"), None, Some("F")].into_iter().collect::<DictionaryArray<Int32Type>>());
    let path = dir.write_parquet("patients_b.parquet", vec![("weight", weight), ("sex", sex), ("age", age)]);
    let table = load_table(&path, &schema()).unwrap();
    assert_eq!(table.num_rows(), 3);
    assert_eq!(ints(&table, 0), vec![Some(34), None, Some(61)]);
    assert_eq!(ints(&table, 1), vec![Some(7050), Some(-30), None]);
    assert_eq!(cats(&table, 2), vec![Some(1), None, Some(0)]);
}

#[test]
fn loads_parquet_with_text_and_int64_and_finer_decimal() {
    let dir = TempDir::new("parquet2");
    let age: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(120)]));
    let weight: ArrayRef = Arc::new(StringArray::from(vec![Some("12.34"), Some("")]));
    let sex: ArrayRef = Arc::new(StringArray::from(vec![Some("F"), Some("M")]));
    let path = dir.write_parquet("p.parquet", vec![("age", age.clone()), ("weight", weight), ("sex", sex.clone())]);
    let table = load_table(&path, &schema()).unwrap();
    assert_eq!(ints(&table, 0), vec![Some(1), Some(120)]);
    assert_eq!(ints(&table, 1), vec![Some(1234), None]);
    assert_eq!(cats(&table, 2), vec![Some(0), Some(1)]);

    // DECIMAL(10, 3) whose third digit is zero is accepted...
    let weight: ArrayRef =
        Arc::new(Decimal128Array::from(vec![Some(70_120), Some(1_000)]).with_precision_and_scale(10, 3).unwrap());
    let path = dir.write_parquet("q.parquet", vec![("age", age.clone()), ("weight", weight), ("sex", sex.clone())]);
    let table = load_table(&path, &schema()).unwrap();
    assert_eq!(ints(&table, 1), vec![Some(7012), Some(100)]);

    // ...but not when it carries a nonzero third digit.
    let weight: ArrayRef =
        Arc::new(Decimal128Array::from(vec![Some(70_120), Some(70_125)]).with_precision_and_scale(10, 3).unwrap());
    let path = dir.write_parquet("r.parquet", vec![("age", age), ("weight", weight), ("sex", sex)]);
    let err = load_table(&path, &schema()).unwrap_err();
    assert!(matches!(err, DataError::Invalid { row: 2, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("r.parquet"), "{msg}");
    assert!(
        msg.contains("row 2, column weight: 70.125 has more digits after the decimal point than the declared scale 2"),
        "{msg}"
    );
}

#[test]
fn refuses_float_decimal_in_parquet() {
    let dir = TempDir::new("float");
    let age: ArrayRef = Arc::new(Int32Array::from(vec![Some(34)]));
    let weight: ArrayRef = Arc::new(Float64Array::from(vec![Some(70.5)]));
    let sex: ArrayRef = Arc::new(StringArray::from(vec![Some("F")]));
    let path = dir.write_parquet("f.parquet", vec![("age", age), ("weight", weight), ("sex", sex)]);
    let err = load_table(&path, &schema()).unwrap_err();
    assert!(matches!(err, DataError::ColumnType { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("f.parquet"), "{msg}");
    assert!(msg.contains("column weight"), "{msg}");
    assert!(msg.contains("decimals must be stored exactly as DECIMAL or text"), "{msg}");
}

#[test]
fn refuses_parquet_out_of_bounds_and_unknown_category() {
    let dir = TempDir::new("pq-bad");
    let age: ArrayRef = Arc::new(Int32Array::from(vec![Some(34), None, Some(130)]));
    let weight: ArrayRef = Arc::new(StringArray::from(vec![Some("1"), Some("2"), Some("3")]));
    let sex: ArrayRef = Arc::new(StringArray::from(vec![Some("F"), Some("M"), Some("F")]));
    let path = dir.write_parquet("b.parquet", vec![("age", age), ("weight", weight.clone()), ("sex", sex)]);
    let msg = load_table(&path, &schema()).unwrap_err().to_string();
    assert!(msg.contains("b.parquet, row 3, column age: 130 is above the declared maximum 120"), "{msg}");

    let age: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), Some(2), Some(3)]));
    let sex: ArrayRef = Arc::new(StringArray::from(vec![Some("F"), Some("X"), Some("F")]));
    let path = dir.write_parquet("c.parquet", vec![("age", age), ("weight", weight), ("sex", sex)]);
    let msg = load_table(&path, &schema()).unwrap_err().to_string();
    assert!(msg.contains("c.parquet, row 2, column sex: 'X' is not one of the declared values (F, M)"), "{msg}");
}

/// Loads `text` as a CSV file named `name` and returns the error message.
fn csv_error(dir: &TempDir, name: &str, text: &str) -> (DataError, String) {
    let path = dir.write(name, text);
    let err = load_table(&path, &schema()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(name), "{msg}");
    (err, msg)
}

#[test]
fn refuses_unknown_extension() {
    let dir = TempDir::new("ext");
    let (err, msg) = csv_error(&dir, "patients.txt", "age,weight,sex\n1,2,F\n");
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err:?}");
    assert!(msg.contains("expected a .csv or .parquet file"), "{msg}");
}

#[test]
fn refuses_missing_file() {
    let err = load_table(std::path::Path::new("/nonexistent/concord/p.csv"), &schema()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/concord/p.csv"));
}

#[test]
fn refuses_missing_extra_and_duplicate_columns() {
    let dir = TempDir::new("columns");
    let (err, msg) = csv_error(&dir, "m.csv", "age,sex\n1,F\n");
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err:?}");
    assert!(msg.contains("missing column weight (the file has columns: age, sex)"), "{msg}");

    let (err, msg) = csv_error(&dir, "e.csv", "age,weight,sex,name\n1,2,F,Ann\n");
    assert!(matches!(err, DataError::ExtraColumn { .. }), "{err:?}");
    assert!(msg.contains("unexpected column name"), "{msg}");

    let (err, msg) = csv_error(&dir, "d.csv", "age,weight,sex,age\n1,2,F,1\n");
    assert!(matches!(err, DataError::DuplicateColumn { .. }), "{err:?}");
    assert!(msg.contains("column age appears more than once"), "{msg}");

    // Column names are case-sensitive.
    let (err, msg) = csv_error(&dir, "c.csv", "Age,weight,sex\n1,2,F\n");
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err:?}");
    assert!(msg.contains("missing column age"), "{msg}");

    // An empty file has no header.
    let (err, _) = csv_error(&dir, "z.csv", "");
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err:?}");
}

#[test]
fn refuses_invalid_values_with_row_and_column() {
    let dir = TempDir::new("values");
    let header = "age,weight,sex\n";
    let good = "40,70.5,F\n";
    let cases: &[(&str, &str, usize, &str, &str)] = &[
        ("above.csv", "130,70,F\n", 2, "age", "130 is above the declared maximum 120"),
        ("below.csv", "-1,70,F\n", 2, "age", "-1 is below the declared minimum 0"),
        ("dec_below.csv", "1,-10.01,F\n", 2, "weight", "-10.01 is below the declared minimum -10.00"),
        ("dec_above.csv", "1,500.01,F\n", 2, "weight", "500.01 is above the declared maximum 500.00"),
        (
            "huge.csv",
            "99999999999999999999999999999999999999999999,1,F\n",
            2,
            "age",
            "is above the declared maximum 120",
        ),
        (
            "neg_huge.csv",
            "1,-99999999999999999999999999999999999999999999.5,F\n",
            2,
            "weight",
            "is below the declared minimum -10.00",
        ),
        ("malformed.csv", "abc,70,F\n", 2, "age", "'abc' is not an integer"),
        ("int_point.csv", "3.5,70,F\n", 2, "age", "'3.5' is not an integer"),
        ("exp.csv", "3,1e5,F\n", 2, "weight", "'1e5' is not a decimal number"),
        ("dot.csv", "3,.,F\n", 2, "weight", "'.' is not a decimal number"),
        ("sign.csv", "3,-,F\n", 2, "weight", "'-' is not a decimal number"),
        (
            "scale.csv",
            "3,70.123,F\n",
            2,
            "weight",
            "'70.123' has 3 digits after the decimal point, more than the declared scale 2",
        ),
        ("category.csv", "3,70,X\n", 2, "sex", "'X' is not one of the declared values (F, M)"),
        ("category_case.csv", "3,70,f\n", 2, "sex", "'f' is not one of the declared values (F, M)"),
    ];
    for (name, line, row, column, reason) in cases {
        let text = format!("{header}{good}{line}{good}");
        let (err, msg) = csv_error(&dir, name, &text);
        match &err {
            DataError::Invalid { row: r, column: c, .. } => {
                assert_eq!(r, row, "{msg}");
                assert_eq!(c, column, "{msg}");
            }
            other => panic!("{name}: expected Invalid, got {other:?}"),
        }
        let expected = format!("{name}, row {row}, column {column}: ");
        assert!(msg.contains(&expected), "{msg} lacks {expected}");
        assert!(msg.contains(reason), "{msg} lacks {reason}");
    }
}

#[test]
fn reports_row_numbers_across_batches() {
    let dir = TempDir::new("batches");
    let mut text = String::from("age,weight,sex\n");
    for _ in 0..100_000 {
        text.push_str("40,1,M\n");
    }
    text.push_str("121,1,M\n");
    let (_, msg) = csv_error(&dir, "big.csv", &text);
    assert!(msg.contains("big.csv, row 100001, column age: 121 is above the declared maximum 120"), "{msg}");
}

#[test]
fn refuses_ragged_csv() {
    let dir = TempDir::new("ragged");
    let (err, _) = csv_error(&dir, "r.csv", "age,weight,sex\n1,2,F\n1,2\n");
    assert!(matches!(err, DataError::Read { .. }), "{err:?}");
}

#[test]
fn table_new_validates() {
    let schema = schema();
    let ok = Table::new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(Int64Array::from(vec![Some(-1000), Some(50000)])),
            Arc::new(UInt32Array::from(vec![Some(1), None])),
        ],
    )
    .unwrap();
    assert_eq!(ok.num_rows(), 2);

    let err = Table::new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), Some(121)])),
            Arc::new(Int64Array::from(vec![Some(0), Some(0)])),
            Arc::new(UInt32Array::from(vec![Some(1), None])),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("row 2, column age: 121 is above the declared maximum 120"), "{err}");

    let err = Table::new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![Some(1)])),
            Arc::new(Int64Array::from(vec![Some(0)])),
            Arc::new(UInt32Array::from(vec![Some(2)])),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Invalid { row: 1, .. }), "{err:?}");

    let err = Table::new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from(vec![Some(1)])),
            Arc::new(Int64Array::from(vec![Some(0)])),
            Arc::new(UInt32Array::from(vec![Some(0)])),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, DataError::ColumnType { .. }), "{err:?}");

    let err = Table::new(schema, vec![Arc::new(Int64Array::from(vec![Some(1)]))]).unwrap_err();
    assert!(matches!(err, DataError::Plan { .. }), "{err:?}");
}
