//! Sparklines of the short history (`GET …/history`), server-rendered as inline SVG: attributes
//! only (the CSP forbids inline style and script), a `<title>` naming what it shows, and the
//! numbers as a table in a `<details>` for whoever cannot see the line.

use super::fmt::{ago, iso};
use crate::service::views::{HistoryView, PolicyHistory};
use chrono::{DateTime, Utc};

/// The drawing's size in SVG units (and CSS pixels); templates/spark.html draws at this size.
pub const WIDTH: u32 = 96;
pub const HEIGHT: u32 = 24;

pub struct Spark {
    /// `<polyline points>`: one point per step, oldest left, scaled to the largest value.
    pub points: String,
    /// The accessible name: what, over which time, the total and the peak.
    pub title: String,
    /// What the numbers count ("Packets", "Bytes received").
    pub unit: String,
    /// The steps that counted anything, oldest first: (end of the step as ISO and as
    /// `HH:MM:SS` UTC, value).
    pub rows: Vec<(String, String, u64)>,
}

impl Spark {
    /// A sparkline of `values` (oldest first, the last ending at `newest`, `step` seconds
    /// each); `None` when there is nothing to draw yet.
    pub fn of(
        what: &str,
        unit: &str,
        values: &[u64],
        newest: DateTime<Utc>,
        step: u64,
    ) -> Option<Spark> {
        if values.is_empty() {
            return None;
        }
        let peak = values.iter().copied().max().unwrap_or(0);
        let n = values.len();
        // One step alone is drawn as a short flat stroke (a single point draws nothing).
        let drawn: Vec<u64> = if n == 1 {
            vec![values[0]; 2]
        } else {
            values.to_vec()
        };
        // Right-aligned: the newest step is at the right edge whatever the series' length.
        let dx = f64::from(WIDTH) / (crate::actors::tenant::SLOTS - 1) as f64;
        let x0 = f64::from(WIDTH) - dx * (drawn.len() - 1) as f64;
        let points = drawn
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let y = if peak == 0 {
                    f64::from(HEIGHT) - 1.0
                } else {
                    f64::from(HEIGHT) - 1.0 - (v as f64 / peak as f64) * f64::from(HEIGHT - 2)
                };
                format!("{:.1},{:.1}", x0 + dx * i as f64, y)
            })
            .collect::<Vec<_>>()
            .join(" ");
        let total: u64 = values.iter().sum();
        let span = n as u64 * step;
        let span = if span < 120 {
            format!("{span} s")
        } else {
            format!("{} min", span.div_ceil(60))
        };
        let rows = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0)
            .map(|(i, &v)| {
                let back = (n - 1 - i) as i64 * step as i64;
                let t = newest - chrono::Duration::seconds(back);
                (iso(t), t.format("%H:%M:%S").to_string(), v)
            })
            .collect();
        Some(Spark {
            points,
            title: format!(
                "{what}, last {span} in {step} s steps: {total} in all, at most {peak} in a step"
            ),
            unit: unit.into(),
            rows,
        })
    }
}

/// A policy's sparkline and its "last hit" / "never hit since" badge.
pub fn policy(
    h: &HistoryView,
    p: Option<&PolicyHistory>,
    now: DateTime<Utc>,
) -> (Option<Spark>, String) {
    let Some(p) = p else {
        return (None, String::new());
    };
    let spark = h.newest_at.and_then(|at| {
        Spark::of(
            "Packets per step",
            "Packets",
            &p.packets,
            at,
            h.step_seconds,
        )
    });
    let badge = match (p.last_hit_at, p.never_hit_since) {
        (Some(t), _) => format!("last hit {}", ago(t, now)),
        (None, Some(t)) => format!("never hit since {}", iso(t)),
        (None, None) => String::new(),
    };
    (spark, badge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_step_is_at_the_right_edge_and_the_peak_at_the_top() {
        let at = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let s = Spark::of("Packets", "Packets", &[0, 4, 2], at, 15).unwrap();
        let pts: Vec<&str> = s.points.split(' ').collect();
        assert_eq!(pts.len(), 3);
        assert!(pts[2].starts_with("96.0,"), "{pts:?}");
        assert!(pts[1].ends_with(",1.0"), "{pts:?}");
        assert!(pts[0].ends_with(",23.0"), "{pts:?}");
        assert_eq!(s.rows.len(), 2);
        assert_eq!(s.rows[1], (iso(at), "16:00:00".to_string(), 2));
        let one = Spark::of("x", "x", &[3], at, 15).unwrap();
        assert_eq!(one.points.split(' ').count(), 2, "{}", one.points);
        assert!(
            s.title.contains("last 45 s in 15 s steps: 6 in all"),
            "{}",
            s.title
        );
        assert!(Spark::of("x", "x", &[], at, 15).is_none());
    }
}
