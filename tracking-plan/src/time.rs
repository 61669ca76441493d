//! RFC 3339 timestamps: decides whether a string is a valid `date-time` and converts
//! between timestamps and milliseconds since the Unix epoch.
//!
//! Hand-written on purpose: it is compiled into the browser SDK, where `chrono` or `time`
//! would add several KB of wasm for the few dozen lines needed here. Civil-date arithmetic
//! follows Howard Hinnant's public-domain `days_from_civil` algorithms.

use alloc::string::String;

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0')))
}

/// Parses an RFC 3339 date-time (`2026-11-23T10:00:00Z`, `...T10:00:00.123+02:00`; `t`,
/// `z` and a space separator are accepted, as RFC 3339 allows) into milliseconds since
/// the epoch. Fractions beyond milliseconds are truncated. `None` when invalid.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])? as i64, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 {
        return None;
    }
    // 60 is a leap second; it is folded into the next second.
    if sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &b[start..i];
        if frac.is_empty() {
            return None;
        }
        for (k, digit) in frac.iter().take(3).enumerate() {
            ms += i64::from(digit - b'0') * [100, 10, 1][k];
        }
    }
    let offset_min: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let oh = num(&[*oh1, *oh2])?;
            let om = num(&[*om1, *om2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let v = i64::from(oh * 60 + om);
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form that
/// JavaScript's `Date.prototype.toISOString` produces.
pub fn format_rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    // Digits by hand, from the right: `format!` would bring `core::fmt` into the SDK's
    // wasm, and a power of ten per digit (`i64::pow`, a loop at `-Oz`) was 2 ms of the
    // SDK's 1,000 track calls in a Chromium profile.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |v: i64, end: usize, max: i64| {
        let mut v = v.clamp(0, max);
        for c in out.get_mut(..end).unwrap_or_default().iter_mut().rev() {
            if v == 0 {
                break;
            }
            *c = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(y, 4, 9999);
    put(i64::from(m), 7, 99);
    put(i64::from(d), 10, 99);
    put(h, 13, 99);
    put(mi, 16, 99);
    put(s, 19, 99);
    put(milli, 23, 999);
    String::from(core::str::from_utf8(&out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-23T22:19:05.123Z"),
            Some(1_795_472_345_123)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T00:19:05.123+02:00"),
            Some(1_795_472_345_123)
        );
        assert_eq!(
            parse_rfc3339("2026-11-23t22:19:05.123456z"),
            Some(1_795_472_345_123)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(
            format_rfc3339(1_795_472_345_123),
            "2026-11-23T22:19:05.123Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn invalid_timestamps() {
        for s in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T10:00:00",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00+0200",
            "2026-11-23X10:00:00Z",
            "２０２6-11-23T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in -62_000_000_000_000i64..250_000_000_000_000) {
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
