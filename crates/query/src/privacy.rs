//! The `WITH PRIVACY (...)` clause: a query's differential privacy parameters,
//! written after the `SELECT` (Concord's extension of SQL).
//!
//! ```sql
//! SELECT AVG(age) FROM patients WITH PRIVACY (epsilon = 0.5)
//! SELECT COUNT(*) FROM patients GROUP BY region WITH PRIVACY (rho = 0.02)
//! ```
//!
//! `epsilon` asks for pure `epsilon`-DP (discrete Laplace noise), `rho` for
//! `rho`-zero-concentrated DP (discrete Gaussian noise); exactly one of them.
//! The clause must end the query (a trailing `;` is allowed after it).
//! [`crate::parse()`] accepts and ignores it; [`privacy_clause`] reads it.

use crate::QueryError;

/// Differential privacy parameters of one query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PrivacyParam {
    /// Pure `epsilon`-DP with discrete Laplace noise.
    Epsilon(f64),
    /// `rho`-zCDP with discrete Gaussian noise.
    Rho(f64),
}

impl PrivacyParam {
    /// Checks that the parameter is finite and positive (and not absurdly large).
    pub fn validate(self) -> Result<Self, QueryError> {
        let (name, v) = match self {
            PrivacyParam::Epsilon(v) => ("epsilon", v),
            PrivacyParam::Rho(v) => ("rho", v),
        };
        if !(v.is_finite() && v > 0.0 && v <= 1e6) {
            return Err(QueryError::Invalid(format!("privacy: {name} must be a number in (0, 1e6], got {v}")));
        }
        Ok(self)
    }
}

impl std::fmt::Display for PrivacyParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivacyParam::Epsilon(v) => write!(f, "epsilon = {v}"),
            PrivacyParam::Rho(v) => write!(f, "rho = {v}"),
        }
    }
}

/// Splits a trailing `WITH PRIVACY (name = value)` clause off `sql`: the query
/// without it, and the parameter if the clause is present.
///
/// Errors name what is wrong in the clause: an unknown parameter, two
/// parameters, a value that is not a positive number, text after the clause.
pub fn privacy_clause(sql: &str) -> Result<(&str, Option<PrivacyParam>), QueryError> {
    let Some(at) = find_clause(sql) else {
        return Ok((sql, None));
    };
    let (head, clause) = sql.split_at(at);
    let bad = |msg: String| QueryError::Invalid(format!("WITH PRIVACY clause {:?}: {msg}", clause.trim()));
    // Skip the keywords `WITH` and `PRIVACY` (checked by `find_clause`).
    let rest = clause.trim_start();
    let rest = rest.get(4..).unwrap_or("").trim_start();
    let rest = rest.get(7..).unwrap_or("").trim_start();
    let Some(inner) = rest.strip_prefix('(') else {
        return Err(bad("expected `(` after WITH PRIVACY".into()));
    };
    let Some(close) = inner.find(')') else {
        return Err(bad("missing `)`".into()));
    };
    let (body, tail) = inner.split_at(close);
    let tail = tail.get(1..).unwrap_or("").trim();
    if !(tail.is_empty() || tail == ";") {
        return Err(bad(format!("unexpected text {tail:?} after the clause; it must end the query")));
    }
    let mut param = None;
    for item in body.split(',') {
        let Some((name, value)) = item.split_once('=') else {
            return Err(bad(format!("expected `name = value`, got {:?}", item.trim())));
        };
        let name = name.trim().to_ascii_lowercase();
        let value: f64 =
            value.trim().parse().map_err(|_| bad(format!("{name}: {:?} is not a number", value.trim())))?;
        let p = match name.as_str() {
            "epsilon" => PrivacyParam::Epsilon(value),
            "rho" => PrivacyParam::Rho(value),
            other => return Err(bad(format!("unknown parameter {other:?}: expected epsilon or rho"))),
        };
        if param.is_some() {
            return Err(bad("give exactly one of epsilon and rho".into()));
        }
        param = Some(p.validate()?);
    }
    Ok((head.trim_end(), param))
}

/// Byte offset of the last `WITH` that is followed (after whitespace) by
/// `PRIVACY`, is preceded by whitespace or `)`, and lies outside string literals.
fn find_clause(sql: &str) -> Option<usize> {
    let bytes = sql.as_bytes();
    let mut in_string = false;
    let mut found = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            in_string = !in_string;
        } else if !in_string
            && sql.get(i..i + 4).is_some_and(|w| w.eq_ignore_ascii_case("with"))
            && (i == 0 || bytes[i - 1].is_ascii_whitespace() || bytes[i - 1] == b')')
        {
            let after = sql.get(i + 4..).unwrap_or("");
            let trimmed = after.trim_start();
            if trimmed.len() < after.len() && trimmed.get(..7).is_some_and(|w| w.eq_ignore_ascii_case("privacy")) {
                found = Some(i);
            }
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_the_clause() {
        let (q, p) = privacy_clause("SELECT AVG(age) FROM t WITH PRIVACY (epsilon = 0.5)").unwrap();
        assert_eq!(q, "SELECT AVG(age) FROM t");
        assert_eq!(p, Some(PrivacyParam::Epsilon(0.5)));
        let (q, p) = privacy_clause("select count(*) from t group by r\n  with privacy(RHO=0.02);").unwrap();
        assert_eq!(q, "select count(*) from t group by r");
        assert_eq!(p, Some(PrivacyParam::Rho(0.02)));
        let (q, p) = privacy_clause("SELECT COUNT(*) FROM t WHERE name = 'with privacy (x)'").unwrap();
        assert_eq!(q, "SELECT COUNT(*) FROM t WHERE name = 'with privacy (x)'");
        assert_eq!(p, None);
    }

    #[test]
    fn refuses_bad_clauses_naming_the_problem() {
        for (sql, want) in [
            ("SELECT COUNT(*) FROM t WITH PRIVACY (delta = 1)", "unknown parameter \"delta\""),
            ("SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = 1, rho = 1)", "exactly one"),
            ("SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = abc)", "\"abc\" is not a number"),
            ("SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = -1)", "epsilon must be a number in (0, 1e6]"),
            ("SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = 0)", "epsilon must be"),
            ("SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = NaN)", "epsilon must be"),
            ("SELECT COUNT(*) FROM t WITH PRIVACY epsilon = 1", "expected `(`"),
            ("SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = 1", "missing `)`"),
            ("SELECT COUNT(*) FROM t WITH PRIVACY (epsilon = 1) GROUP BY r", "must end the query"),
            ("SELECT COUNT(*) FROM t WITH PRIVACY (epsilon)", "expected `name = value`"),
        ] {
            let e = privacy_clause(sql).unwrap_err().to_string();
            assert!(e.contains(want), "{sql}: {e}");
        }
    }
}
