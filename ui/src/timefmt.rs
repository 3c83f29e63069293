//! Time formatting and the time axis.

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const MIN: u64 = 60 * S;

/// A duration with about three significant digits: `850ns`, `12.5µs`,
/// `3.20ms`, `12.3s`, `2m05s`, `1h02m`.
pub fn duration(ns: u64) -> String {
    fn sig(v: f64, unit: &str) -> String {
        if v >= 100.0 {
            format!("{v:.0}{unit}")
        } else if v >= 10.0 {
            format!("{v:.1}{unit}")
        } else {
            format!("{v:.2}{unit}")
        }
    }
    if ns == 0 {
        "0s".to_string()
    } else if ns < US {
        format!("{ns}ns")
    } else if ns < MS {
        sig(ns as f64 / US as f64, "µs")
    } else if ns < S {
        sig(ns as f64 / MS as f64, "ms")
    } else if ns < MIN {
        sig(ns as f64 / S as f64, "s")
    } else if ns < 60 * MIN {
        let s = (ns + S / 2) / S;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (ns + MIN / 2) / MIN;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// Tick steps, in ns: 1-2-5 below a second, then clock-friendly ones.
fn steps() -> impl Iterator<Item = u64> {
    let mut v = Vec::new();
    let mut p = 1u64;
    while p < S {
        v.extend([p, 2 * p, 5 * p]);
        p *= 10;
    }
    v.extend(
        [
            1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
        ]
        .iter()
        .map(|s| s * S),
    );
    let mut h = 4 * 3600 * S;
    std::iter::from_fn(move || {
        if !v.is_empty() {
            return Some(v.remove(0));
        }
        h = h.saturating_mul(2);
        Some(h)
    })
}

/// A time offset `t` (ns since the trace start) labelled to the precision a
/// tick `step` needs: `0s`, `1.5s`, `12.345s`, `2m`, `2m30s`.
pub fn offset_label(t: u64, step: u64) -> String {
    if step >= S && step.is_multiple_of(S) {
        let s = t / S;
        if t >= MIN || step >= MIN {
            let h = s / 3600;
            let m = (s % 3600) / 60;
            let sec = s % 60;
            return match (h, sec) {
                (0, 0) => format!("{m}m"),
                (0, _) => format!("{m}m{sec:02}s"),
                (_, 0) => format!("{h}h{m:02}m"),
                _ => format!("{h}h{m:02}m{sec:02}s"),
            };
        }
        return format!("{s}s");
    }
    // Decimals needed so that consecutive ticks differ.
    let mut decimals = 0;
    let mut unit = S;
    while !step.is_multiple_of(unit) && decimals < 9 {
        unit /= 10;
        decimals += 1;
    }
    let secs = t / S;
    let frac = t % S;
    if decimals == 0 {
        format!("{secs}s")
    } else {
        let frac_s = format!("{frac:09}");
        format!("{secs}.{}s", &frac_s[..decimals])
    }
}

/// Ticks for a window `[a, b)` drawn over `cols` columns, labelled relative
/// to `origin`: `(column, label)` pairs with labels not overlapping.
pub fn ticks(origin: u64, a: u64, b: u64, cols: usize) -> Vec<(usize, String)> {
    if cols < 4 || b <= a {
        return Vec::new();
    }
    let width = b - a;
    for step in steps() {
        // Room for the widest label plus two spaces, and at least 8 columns.
        let room = (step as u128 * cols as u128 / width as u128) as usize;
        if room < 4 && step < u64::MAX / 4 {
            continue;
        }
        let rel_a = a.saturating_sub(origin);
        let rel_b = b.saturating_sub(origin);
        let first = rel_a.div_ceil(step) * step;
        let mut out = Vec::new();
        let mut t = first;
        let mut widest = 0;
        while t < rel_b {
            let col = ((t - rel_a) as u128 * cols as u128 / width as u128) as usize;
            let label = offset_label(t, step);
            widest = widest.max(label.chars().count());
            out.push((col, label));
            t += step;
        }
        if room >= (widest + 2).max(8) || step >= u64::MAX / 4 {
            return out;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(12_500), "12.5µs");
        assert_eq!(duration(3_200_000), "3.20ms");
        assert_eq!(duration(12_340_000_000), "12.3s");
        assert_eq!(duration(125 * S), "2m05s");
        assert_eq!(duration(3720 * S), "1h02m");
    }

    #[test]
    fn labels() {
        assert_eq!(offset_label(0, S), "0s");
        assert_eq!(offset_label(1_500 * MS, 500 * MS), "1.5s");
        assert_eq!(offset_label(12_345 * MS, MS), "12.345s");
        assert_eq!(offset_label(120 * S, 60 * S), "2m");
        assert_eq!(offset_label(150 * S, 30 * S), "2m30s");
        assert_eq!(offset_label(30 * S, 30 * S), "30s");
    }

    #[test]
    fn ticks_do_not_overlap() {
        for cols in [20, 60, 130, 300] {
            for (a, b) in [(0, 10 * S), (3 * S, 3 * S + 1234), (0, 600 * S), (5, 7)] {
                let t = ticks(0, a, b, cols);
                assert!(!t.is_empty(), "{cols} {a} {b}");
                for w in t.windows(2) {
                    assert!(w[0].0 + w[0].1.chars().count() < w[1].0, "{w:?}");
                }
                assert!(t.iter().all(|(c, _)| *c < cols));
            }
        }
        assert_eq!(
            ticks(0, 0, 10 * S, 60)
                .iter()
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>(),
            ["0s", "2s", "4s", "6s", "8s"]
        );
    }
}
