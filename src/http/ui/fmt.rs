//! How the dashboard words times, sizes and selectors.

use chrono::{DateTime, Utc};

/// "12 s ago", "5 min ago", "3 h ago", "4 d ago".
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// An exact time for `title` and `<time datetime>`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// 1536 → "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t = |s| now - chrono::Duration::seconds(s);
        assert_eq!(ago(t(5), now), "5 s ago");
        assert_eq!(ago(t(300), now), "5 min ago");
        assert_eq!(ago(t(7200), now), "2 h ago");
        assert_eq!(ago(t(3 * 86400), now), "3 d ago");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
