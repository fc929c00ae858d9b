//! Reading what the server says about its limits: `x-ratelimit-*` (with Go-style durations),
//! `retry-after-ms`, `retry-after` (seconds or an HTTP date) and `x-should-retry`.
//!
//! These parsers are independent of the simulator's formatters on purpose (a header written and
//! read by the same function proves nothing), and are property-tested never to panic.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The server's view of one budget (requests or tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Time until the budget is back to full.
    pub reset: Option<Duration>,
}

impl Budget {
    /// Remaining as a fraction of the limit, when both are known.
    pub fn remaining_fraction(&self) -> Option<f64> {
        match (self.limit, self.remaining) {
            (Some(l), Some(r)) if l > 0 => Some(r as f64 / l as f64),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// Everything a response said about rate limits and retrying.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub requests: Budget,
    pub tokens: Budget,
    /// `retry-after-ms`, else `retry-after`.
    pub retry_after: Option<Duration>,
    /// `x-should-retry: true|false`.
    pub should_retry: Option<bool>,
}

impl RateLimits {
    pub fn from_headers(h: &HeaderMap) -> Self {
        // One pass over the answer's headers, matching the few names by their text: looking
        // each of ten names up hashes it every time, and this runs on every answer. As with a
        // lookup, only a name's first value counts.
        let mut rl = RateLimits::default();
        let mut seen = 0u16;
        let mut retry_after_ms = None;
        let mut retry_after = None;
        for (name, value) in h {
            let n = name.as_str();
            let slot = match n.strip_prefix("x-ratelimit-") {
                Some("limit-requests") => 0,
                Some("remaining-requests") => 1,
                Some("reset-requests") => 2,
                Some("limit-tokens") => 3,
                Some("remaining-tokens") => 4,
                Some("reset-tokens") => 5,
                Some(_) => continue,
                None => match n {
                    "retry-after-ms" => 6,
                    "retry-after" => 7,
                    "x-should-retry" => 8,
                    _ => continue,
                },
            };
            if seen & (1 << slot) != 0 {
                continue;
            }
            seen |= 1 << slot;
            // The four counts straight from the bytes; the rest read as text.
            let counted = match slot {
                0 => Some(&mut rl.requests.limit),
                1 => Some(&mut rl.requests.remaining),
                3 => Some(&mut rl.tokens.limit),
                4 => Some(&mut rl.tokens.remaining),
                _ => None,
            };
            if let Some(field) = counted {
                *field = count(value);
                continue;
            }
            let Some(v) = value.to_str().ok().map(trim) else {
                continue;
            };
            match slot {
                2 => rl.requests.reset = parse_go_duration(v),
                5 => rl.tokens.reset = parse_go_duration(v),
                6 => retry_after_ms = parse_retry_after_ms(v),
                7 => retry_after = parse_retry_after(v, SystemTime::now()),
                _ if v.eq_ignore_ascii_case("true") => rl.should_retry = Some(true),
                _ if v.eq_ignore_ascii_case("false") => rl.should_retry = Some(false),
                _ => {}
            }
        }
        rl.retry_after = retry_after_ms.or(retry_after);
        rl
    }

    /// True when the response carried no rate-limit information at all.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.tokens.is_empty()
            && self.retry_after.is_none()
            && self.should_retry.is_none()
    }
}

/// A count, as `str::parse::<u64>` reads the value's trimmed text; the plain digits every
/// upstream sends are read from the bytes at once (no text check, no trim, no overflow test:
/// 19 digits always fit).
fn count(v: &http::HeaderValue) -> Option<u64> {
    let b = v.as_bytes();
    if (1..=19).contains(&b.len()) && b.iter().all(u8::is_ascii_digit) {
        return Some(b.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')));
    }
    v.to_str().ok().map(trim)?.parse().ok()
}

/// `x-request-id`, named once: a lookup by a string parses and checks the name every time.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The upstream's `x-request-id`, if it sent a readable one (answers and errors alike).
pub(crate) fn request_id(h: &HeaderMap) -> Option<String> {
    h.get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Longest wait any header may ask for; anything longer is treated as this.
const MAX_HEADER_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The unit at the start of `rest`, in nanoseconds, and its length in bytes.
fn go_unit(rest: &str) -> Option<(u64, usize)> {
    Some(if rest.starts_with("ms") {
        (1_000_000, 2)
    } else if rest.starts_with("us") {
        (1_000, 2)
    } else if rest.starts_with("µs") {
        (1_000, "µs".len())
    } else if rest.starts_with("ns") {
        (1, 2)
    } else if rest.starts_with('h') {
        (3_600_000_000_000, 1)
    } else if rest.starts_with('m') {
        (60_000_000_000, 1)
    } else if rest.starts_with('s') {
        (1_000_000_000, 1)
    } else {
        return None;
    })
}

/// A Go duration of whole numbers only (`6m0s`, `20ms`: what OpenAI sends on every answer),
/// exact and without floating point; `None` for anything else (a fraction, an unknown unit, a
/// long number), which [`parse_go_duration`] reads the general way.
fn whole_go_duration(s: &str) -> Option<Duration> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut nanos: u128 = 0;
    while i < b.len() {
        let start = i;
        let mut n: u128 = 0;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            n = n * 10 + u128::from(d - b'0');
            i += 1;
            if i - start > 20 {
                return None;
            }
        }
        if i == start {
            return None;
        }
        let (unit, len) = go_unit(&s[i..])?;
        nanos = nanos.saturating_add(n.saturating_mul(u128::from(unit)));
        i += len;
    }
    let capped = nanos.min(MAX_HEADER_WAIT.as_nanos());
    u64::try_from(capped).ok().map(Duration::from_nanos)
}

/// `str::trim`, answered at a glance for the usual value with nothing to trim (letters or
/// digits at both ends): the full trim consults Unicode's whitespace table, and every answer's
/// rate-limit headers pass here.
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// Parse a Go `time.Duration` string as OpenAI writes them: `6m0s`, `1s`, `20ms`, `1.234s`,
/// `1h2m3.5s`, `500us`/`500µs`, `0s`. `None` for anything else.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if let Some(d) = whole_go_duration(s) {
        return Some(d);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, unit_len) = go_unit(rest)?;
        // Correctly rounded: the same doubles as the literals 1e-3, 1e-6, 60.0, ...
        let unit_secs = unit as f64 / 1e9;
        rest = &rest[unit_len..];
        total += value * unit_secs;
    }
    if !total.is_finite() || total < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        total.min(MAX_HEADER_WAIT.as_secs_f64()),
    ))
}

/// `retry-after-ms`: a non-negative number of milliseconds (fractions allowed).
pub fn parse_retry_after_ms(s: &str) -> Option<Duration> {
    let v: f64 = trim(s).parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        (v / 1000.0).min(MAX_HEADER_WAIT.as_secs_f64()),
    ))
}

/// `retry-after`: delta-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(s: &str, now: SystemTime) -> Option<Duration> {
    let s = trim(s);
    if let Ok(v) = s.parse::<f64>() {
        if !v.is_finite() || v < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(
            v.min(MAX_HEADER_WAIT.as_secs_f64()),
        ));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_HEADER_WAIT),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_durations() {
        let ms = |s: &str| parse_go_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("6m0s"), Some(360_000));
        assert_eq!(ms("1s"), Some(1000));
        assert_eq!(ms("20ms"), Some(20));
        assert_eq!(ms("1.234s"), Some(1234));
        assert_eq!(ms("1h2m3.5s"), Some(3_723_500));
        assert_eq!(ms("0s"), Some(0));
        assert_eq!(parse_go_duration("500µs"), Some(Duration::from_micros(500)));
        assert_eq!(ms("7.66s"), Some(7660));
        for bad in ["", "s", "1", "1x", "-1s", "1.2.3s", "ms", "1s2"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after_ms("1500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after_ms("-3"), None);
    }

    #[test]
    fn from_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit-requests", "5000".parse().unwrap());
        h.insert("x-ratelimit-remaining-requests", "4999".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "12ms".parse().unwrap());
        h.insert("x-ratelimit-limit-tokens", "160000".parse().unwrap());
        h.insert("x-ratelimit-remaining-tokens", "40000".parse().unwrap());
        h.insert("x-ratelimit-reset-tokens", "45s".parse().unwrap());
        h.insert("retry-after", "3".parse().unwrap());
        h.insert("retry-after-ms", "2500".parse().unwrap());
        h.insert("x-should-retry", "false".parse().unwrap());
        let r = RateLimits::from_headers(&h);
        assert_eq!(r.requests.limit, Some(5000));
        assert_eq!(r.requests.reset, Some(Duration::from_millis(12)));
        assert_eq!(r.tokens.remaining_fraction(), Some(0.25));
        assert_eq!(r.retry_after, Some(Duration::from_millis(2500)), "ms wins");
        assert_eq!(r.should_retry, Some(false));
        assert_eq!(r.tokens.reset, Some(Duration::from_secs(45)));
        assert!(RateLimits::from_headers(&HeaderMap::new()).is_empty());
        // `retry-after` when there is no `-ms`; a name's first value is the one read, as a
        // lookup would; other headers are left alone.
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        h.append("x-ratelimit-remaining-tokens", "7".parse().unwrap());
        h.append("x-ratelimit-remaining-tokens", "9".parse().unwrap());
        h.insert("x-ratelimit-something-else", "1".parse().unwrap());
        h.insert("x-should-retry", "TRUE".parse().unwrap());
        let r = RateLimits::from_headers(&h);
        assert_eq!(r.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(r.tokens.remaining, Some(7));
        assert_eq!(r.tokens.limit, None);
        assert_eq!(r.should_retry, Some(true));
    }

    proptest! {
        /// Fuzz target (`PROPTEST_CASES=200000 cargo test -p sluice --lib fuzz_` for a long run):
        /// every rate-limit and retry header at once, any value.
        #[test]
        fn fuzz_rate_limit_headers(values in proptest::collection::vec("\\PC{0,24}", 9)) {
            let names = ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", "retry-after",
                "retry-after-ms", "x-should-retry"];
            let mut h = HeaderMap::new();
            for (n, v) in names.iter().zip(&values) {
                if let Ok(v) = http::HeaderValue::from_str(v) {
                    h.insert(*n, v);
                }
            }
            let r = RateLimits::from_headers(&h);
            let _ = r.tokens.remaining_fraction();
            let _ = r.requests.remaining_fraction();
        }

        #[test]
        fn a_count_is_what_parse_reads(s in "[ \t]{0,1}[+0-9]{0,22}[ a\t]{0,1}") {
            let Ok(v) = http::HeaderValue::from_str(&s) else { return Ok(()) };
            prop_assert_eq!(count(&v), trim(&s).parse::<u64>().ok());
        }

        #[test]
        fn the_quick_trim_is_the_whole_trim(s in "[ \\t\\x0b\\u{a0}]{0,2}\\PC{0,6}[ \\t\\x0b\\u{3000}]{0,2}") {
            prop_assert_eq!(trim(&s), s.trim());
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_go_duration(&s);
            let _ = parse_retry_after(&s, SystemTime::now());
            let _ = parse_retry_after_ms(&s);
        }

        #[test]
        fn whole_go_durations_are_exact(h in 0u64..30, m in 0u64..60, sec in 0u64..60, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{sec}s{ms}ms");
            let want = Duration::from_millis(((h * 60 + m) * 60 + sec) * 1000 + ms).min(MAX_HEADER_WAIT);
            prop_assert_eq!(parse_go_duration(&text), Some(want));
            prop_assert_eq!(parse_go_duration(&format!("{ms}ms")), Some(Duration::from_millis(ms)));
        }

        #[test]
        fn go_duration_roundtrip(ms in 0u64..86_400_000) {
            let h = ms / 3_600_000;
            let m = (ms / 60_000) % 60;
            let s = (ms % 60_000) as f64 / 1000.0;
            let text = if h > 0 { format!("{h}h{m}m{s}s") } else if m > 0 { format!("{m}m{s}s") } else { format!("{s}s") };
            let d = parse_go_duration(&text).unwrap();
            prop_assert!((d.as_secs_f64() * 1000.0 - ms as f64).abs() < 0.5, "{} -> {:?}", text, d);
        }
    }
}
