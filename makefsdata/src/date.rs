//! Calendar dates from Unix seconds (UTC), and IMF-fixdate (RFC 9110 §5.6.7) formatting,
//! e.g. `Sun, 06 Nov 1994 08:49:37 GMT`. The workspace's one copy of this arithmetic
//! (also used by `docknet-image` for OCI timestamps and by `docknet-bench` for reports).

/// UTC (year, month, day, hour, minute, second) for seconds since the Unix epoch.
pub fn utc_datetime(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let (y, mo, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    (y, mo, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Formats seconds since the Unix epoch (UTC) as an IMF-fixdate.
pub fn http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    const WDAY: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WDAY[(days % 7) as usize],
        d,
        MON[(mo - 1) as usize],
        y,
        h,
        m,
        s
    )
}

/// Howard Hinnant's `civil_from_days`, for days >= 0 since 1970-01-01: (year, month, day).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::{http_date, utc_datetime};

    #[test]
    fn datetime_fields() {
        assert_eq!(utc_datetime(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc_datetime(951_782_400 + 3_723), (2000, 2, 29, 1, 2, 3));
    }

    #[test]
    fn known_values() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // The example in RFC 9110.
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_234_567_890), "Fri, 13 Feb 2009 23:31:30 GMT");
        assert_eq!(http_date(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(http_date(2_147_483_647), "Tue, 19 Jan 2038 03:14:07 GMT");
        assert_eq!(http_date(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
        assert_eq!(http_date(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
    }
}
