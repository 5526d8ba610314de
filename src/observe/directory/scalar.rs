//! YAML 1.2 core-schema scalars as the `file` directory reads them: tags, nulls, booleans,
//! integers and floats normalised to the text a directory value holds.

use saphyr_parser::Tag;

/// The YAML core schema's tag prefix (`!!x` is `tag:yaml.org,2002:x`).
pub(super) const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";
/// `!!null`, resolved.
pub(super) const TAG_NULL: &str = "tag:yaml.org,2002:null";

/// A tag as one string: `!local`, `tag:yaml.org,2002:str`, or a verbatim URI.
pub(super) fn full_tag(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

pub(super) fn is_null(v: &str) -> bool {
    matches!(v, "~" | "null" | "Null" | "NULL")
}

pub(super) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// What a plain, untagged scalar means under the YAML 1.2 core schema.
pub(super) enum Resolved {
    /// `~`, `null` or nothing.
    Null,
    /// A boolean or number as canonical text, or `None`: the scalar is a string as written.
    Text(Option<String>),
    /// An integer beyond the 64-bit range (serde_yaml refused those).
    TooLarge,
}

pub(super) fn resolve_plain(v: &str) -> Resolved {
    if v.is_empty() || is_null(v) {
        return Resolved::Null;
    }
    if let Some(b) = parse_bool(v) {
        return Resolved::Text(Some(b.to_string()));
    }
    match resolve_int(v) {
        Some(Ok(i)) => return Resolved::Text(Some(i)),
        Some(Err(())) => return Resolved::TooLarge,
        None => {}
    }
    if !leading_zero_digits(v)
        && let Some(f) = parse_float(v)
    {
        return Resolved::Text(Some(format_float(f)));
    }
    Resolved::Text(None)
}

/// `0123` and `-007` are strings in YAML 1.2, not octal or decimal numbers.
pub(super) fn leading_zero_digits(v: &str) -> bool {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

/// An integer (decimal, `0x`, `0o` or `0b`, one optional sign) as decimal text; `Err` when it
/// is an integer outside `i64::MIN..=u64::MAX` but inside 128 bits; `None` when the scalar is
/// not an integer.
pub(super) fn resolve_int(v: &str) -> Option<Result<String, ()>> {
    let (negative, unsigned) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let (radix, digits) = if let Some(d) = unsigned.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = unsigned.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = unsigned.strip_prefix("0b") {
        (2, d)
    } else {
        if leading_zero_digits(v) {
            return None;
        }
        (10, unsigned)
    };
    // from_str_radix would accept a sign of its own; YAML allows one sign, before any prefix.
    if digits.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    let fits = match negative {
        false => magnitude <= u128::from(u64::MAX),
        true => magnitude <= u128::from(i64::MIN.unsigned_abs()),
    };
    match (negative, fits) {
        (_, true) if magnitude == 0 => Some(Ok("0".into())),
        (false, true) => Some(Ok(magnitude.to_string())),
        (true, true) => Some(Ok(format!("-{magnitude}"))),
        (false, false) => Some(Err(())),
        (true, false) if magnitude <= i128::MIN.unsigned_abs() => Some(Err(())),
        (true, false) => None,
    }
}

/// A float: `.inf`, `-.inf`, `.nan` in their three spellings, or a finite decimal number.
pub(super) fn parse_float(v: &str) -> Option<f64> {
    let unsigned = match v.strip_prefix('+') {
        Some(rest) if rest.starts_with(['+', '-']) => return None,
        Some(rest) => rest,
        None => v,
    };
    match unsigned {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if matches!(v, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    unsigned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A float as serde_yaml printed it (with ryu): the shortest digits that read back to the
/// same value, in positional notation with at least one decimal (`1000.0`, `0.001`) when the
/// decimal exponent is between -5 and 16, in scientific notation otherwise (`1e30`, `1.5e-7`).
pub(super) fn format_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-.inf" } else { ".inf" }.into();
    }
    // `{:e}` gives the shortest round-trip digits too: "-1.234e-7".
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let Ok(exponent) = exponent.parse::<i64>() else {
        return scientific;
    };
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let digits = even_on_tie(
        f,
        mantissa.bytes().filter(u8::is_ascii_digit).collect(),
        exponent,
    );
    let digits = String::from_utf8(digits).unwrap_or_default();
    // Where the decimal point falls relative to the digits: 10^(point-1) <= |f| < 10^point.
    let point = exponent + 1;
    let len = digits.len() as i64;
    let body = if !(-5 < point && point <= 16) {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{first}{dot}{rest}e{exponent}")
    } else if point >= len {
        let zeros = "0".repeat(usize::try_from(point - len).unwrap_or(0));
        format!("{digits}{zeros}.0")
    } else if point > 0 {
        let (int, frac) = digits.split_at(usize::try_from(point).unwrap_or(0));
        format!("{int}.{frac}")
    } else {
        let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
        format!("0.{zeros}{digits}")
    };
    format!("{sign}{body}")
}

/// When two shortest digit strings are equally near `f` (`f` lies exactly halfway between
/// them), Rust's formatter takes the larger and ryu the even one: returns ryu's choice.
/// `digits` and `exponent` are Rust's shortest form of `f` (`d.ddd` times 10^exponent).
pub(super) fn even_on_tie(f: f64, mut digits: Vec<u8>, exponent: i64) -> Vec<u8> {
    let Some(&last) = digits.last() else {
        return digits;
    };
    // ASCII digits: an even byte is an even digit.
    if last.is_multiple_of(2) || digits == b"1" {
        return digits;
    }
    let mut lower = digits.clone();
    if let Some(d) = lower.last_mut() {
        *d -= 1;
    }
    let as_number = |d: &[u8]| {
        let (first, rest) = d.split_at(1);
        format!(
            "{}.{}e{exponent}",
            String::from_utf8_lossy(first),
            String::from_utf8_lossy(rest)
        )
    };
    let round_trips = as_number(&lower).parse::<f64>().ok() == Some(f.abs());
    // Halfway: |f| is exactly the lower digits followed by a 5 (checked 20 digits further).
    let mut halfway = lower.clone();
    halfway.push(b'5');
    let precise = format!("{:.*e}", halfway.len() + 19, f.abs());
    let mut expected = as_number(&halfway);
    if let Some(e) = expected.find('e') {
        expected.insert_str(e, &"0".repeat(20));
    }
    if round_trips && precise == expected {
        digits = lower;
    }
    digits
}
