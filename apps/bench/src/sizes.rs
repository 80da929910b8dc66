//! Message sizes: parsing (`64,1K,200K`) and short labels.

/// Parses one size: a decimal number with an optional binary suffix
/// (`K`/`KB`/`KiB` = 1024, `M`/`MB`/`MiB` = 1024²), case-insensitive.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty size".into());
    }
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, suffix) = lower.split_at(digits_end);
    if num.is_empty() {
        return Err(format!("size {t:?}: expected a number, e.g. 64, 1K, 200K"));
    }
    let mult: usize = match suffix.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("size {t:?}: unknown suffix {other:?} (use K or M)")),
    };
    let n: usize = num.parse().map_err(|e| format!("size {t:?}: {e}"))?;
    let size = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size {t:?}: too large"))?;
    if size == 0 {
        return Err(format!("size {t:?}: must be at least 1 byte"));
    }
    Ok(size)
}

/// Parses a comma-separated list of sizes; keeps the given order, drops duplicates.
pub fn parse_sizes(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        let s = parse_size(part)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err("no sizes given".into());
    }
    Ok(out)
}

/// A short label: `64`, `1K`, `200K`, `1M`, or plain bytes when not a multiple of 1024.
pub fn format_size(size: usize) -> String {
    const M: usize = 1024 * 1024;
    if size >= M && size % M == 0 {
        format!("{}M", size / M)
    } else if size >= 1024 && size % 1024 == 0 {
        format!("{}K", size / 1024)
    } else {
        size.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size(" 200K "), Ok(200 * 1024));
        assert_eq!(parse_size("4KB"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("100b"), Ok(100));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("1.5K").is_err());
        assert!(parse_size("99999999999999999999K").is_err());
    }

    #[test]
    fn parses_lists() {
        assert_eq!(
            parse_sizes("64,256,1K,4K,16K,64K,200K,400K").unwrap(),
            vec![64, 256, 1024, 4096, 16384, 65536, 204800, 409600]
        );
        assert_eq!(parse_sizes("1K, 1024,2K,").unwrap(), vec![1024, 2048]);
        assert!(parse_sizes(",").is_err());
        assert!(parse_sizes("1K,bogus").is_err());
    }

    #[test]
    fn formats_labels() {
        assert_eq!(format_size(64), "64");
        assert_eq!(format_size(1024), "1K");
        assert_eq!(format_size(204800), "200K");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(1024 * 1024), "1M");
    }
}
