//! Exact decimal text to scaled integer conversion (no floating point).

/// Why a decimal text could not be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecimalError {
    /// Not a decimal number.
    Malformed,
    /// More significant fractional digits than the scale allows.
    Inexact,
    /// Does not fit in an `i128` after scaling.
    TooLarge,
}

/// Parses `[+-]digits[.digits][(e|E)[+-]digits]` (underscores between digits
/// are accepted, as TOML writes them) into `value * 10^scale`, exactly.
pub(crate) fn parse_scaled(text: &str, scale: u32) -> Result<i128, DecimalError> {
    let t = text.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let exponent: i64 = match exponent {
        Some(e) => {
            let e = e.replace('_', "");
            if e.is_empty() || !e.trim_start_matches(['+', '-']).bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecimalError::Malformed);
            }
            e.parse().map_err(|_| DecimalError::TooLarge)?
        }
        None => 0,
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    let int_part = int_part.replace('_', "");
    let frac_part = frac_part.replace('_', "");
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(DecimalError::Malformed);
    }
    if !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(DecimalError::Malformed);
    }
    let mut digits = format!("{int_part}{frac_part}");
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| DecimalError::TooLarge)?;
    // value = digits * 10^(exponent - frac_len); scaled = value * 10^scale.
    let shift =
        exponent.checked_sub(frac_len).and_then(|s| s.checked_add(i64::from(scale))).ok_or(DecimalError::TooLarge)?;
    if shift >= 0 {
        let all_zero = digits.bytes().all(|b| b == b'0');
        if all_zero {
            return Ok(0);
        }
        if shift > 40 {
            return Err(DecimalError::TooLarge);
        }
        for _ in 0..shift {
            digits.push('0');
        }
    } else {
        let drop = usize::try_from(-shift).map_err(|_| DecimalError::TooLarge)?;
        let keep = digits.len().saturating_sub(drop);
        if !digits[keep..].bytes().all(|b| b == b'0') {
            return Err(DecimalError::Inexact);
        }
        digits.truncate(keep);
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    if digits.len() > 39 {
        return Err(DecimalError::TooLarge);
    }
    let magnitude: i128 = digits.parse().map_err(|_| DecimalError::TooLarge)?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// Renders a scaled integer as decimal text (`1234`, scale 2 → `12.34`).
pub(crate) fn format_scaled(value: i128, scale: u32) -> String {
    if scale == 0 {
        return value.to_string();
    }
    let sign = if value < 0 { "-" } else { "" };
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded =
        if digits.len() <= scale { format!("{}{digits}", "0".repeat(scale + 1 - digits.len())) } else { digits };
    let (i, f) = padded.split_at(padded.len() - scale);
    format!("{sign}{i}.{f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled() {
        assert_eq!(parse_scaled("10.0", 2), Ok(1000));
        assert_eq!(parse_scaled("10", 2), Ok(1000));
        assert_eq!(parse_scaled("-0.05", 2), Ok(-5));
        assert_eq!(parse_scaled("0.005", 2), Err(DecimalError::Inexact));
        assert_eq!(parse_scaled("1.50", 1), Ok(15));
        assert_eq!(parse_scaled("1.5", 0), Err(DecimalError::Inexact));
        assert_eq!(parse_scaled("2.0", 0), Ok(2));
        assert_eq!(parse_scaled("1e3", 0), Ok(1000));
        assert_eq!(parse_scaled("1.25e-1", 3), Ok(125));
        assert_eq!(parse_scaled("1_000.5", 1), Ok(10005));
        assert_eq!(parse_scaled("abc", 1), Err(DecimalError::Malformed));
        assert_eq!(parse_scaled(".", 1), Err(DecimalError::Malformed));
        assert_eq!(parse_scaled("1e400", 0), Err(DecimalError::TooLarge));
        assert_eq!(parse_scaled("0e400", 0), Ok(0));
        assert_eq!(parse_scaled("nan", 0), Err(DecimalError::Malformed));
        assert_eq!(format_scaled(1234, 2), "12.34");
        assert_eq!(format_scaled(-5, 2), "-0.05");
        assert_eq!(format_scaled(7, 0), "7");
    }
}
