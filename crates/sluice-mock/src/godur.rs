//! Durations written the way OpenAI's rate-limit headers write them: Go's `time.Duration`
//! format (`6m0s`, `1s`, `20ms`, `1.234s`), at millisecond precision, rounded up so that a
//! client that waits exactly the advertised time is never early.

use std::time::Duration;

/// Format `d` as a Go duration string, rounded up to whole milliseconds.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let secs_ms = ms % 60_000;
    let whole = secs_ms / 1000;
    let frac = secs_ms % 1000;
    let secs = if frac == 0 {
        format!("{whole}s")
    } else {
        let f = format!("{frac:03}");
        format!("{whole}.{}s", f.trim_end_matches('0'))
    };
    if hours > 0 {
        format!("{hours}h{minutes}m{secs}")
    } else if minutes > 0 {
        format!("{minutes}m{secs}")
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ms"),
            (20, "20ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1234, "1.234s"),
            (1500, "1.5s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
            (90_500, "1m30.5s"),
            (3_600_000, "1h0m0s"),
            (3_723_400, "1h2m3.4s"),
        ];
        for (ms, want) in cases {
            assert_eq!(go_duration(Duration::from_millis(ms)), want, "{ms}ms");
        }
    }

    #[test]
    fn rounds_up_sub_millisecond() {
        assert_eq!(go_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(go_duration(Duration::from_micros(1001)), "2ms");
    }
}
