//! Parsing human-friendly sizes (`64MiB`) and durations (`30s`, `250ms`) from flags.

/// Splits `64 MiB` into `(64, "MiB")`; `what` describes the expected form for the error.
fn number_and_unit<'a>(text: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number
        .parse()
        .map_err(|_| format!("`{text}` is not {what}"))?;
    Ok((number, unit.trim()))
}

pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text, "a size like 65536, 64KiB or 64MiB")?;
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

pub fn parse_millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text, "a duration like 500ms or 30s")?;
    let factor: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration above zero, for timeouts: a zero timeout would refuse everything.
pub fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    match parse_millis(text)? {
        0 => Err(format!("`{}` must be above zero", text.trim())),
        millis => Ok(std::time::Duration::from_millis(millis)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("24h"), Ok(86_400_000));
        assert_eq!(parse_timeout("10s"), Ok(std::time::Duration::from_secs(10)));
        assert!(parse_timeout("0s").is_err());
        assert_eq!(parse_millis("100"), Ok(100));
        assert!(parse_millis("soon").is_err());
    }
}
