//! Which periods of a recording were exact and at what rate they were sampled, from the
//! header and the MODE records (the overhead budget's switches).

use crate::model::timeline::{ModeChange, Source, Timeline};

use super::Metadata;

/// `[start_ns, end_ns)` in one mode at one sampling rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub start_ns: u64,
    pub end_ns: u64,
    pub mode: Source,
    pub rate_hz: f64,
    /// Why this period began (the MODE record's reason; empty for the first).
    pub reason: String,
}

/// The periods of a trace, in time order (one period without MODE records).
pub fn periods(meta: &Metadata, tl: &Timeline) -> Vec<Period> {
    let start = tl.start_ns.unwrap_or(meta.clock.start_ns);
    let end = tl.end_ns.unwrap_or(start).max(start);
    periods_of(meta, start, end, &tl.modes)
}

/// [`periods`] of a recording from `start` to `end` with the MODE records `modes`.
pub fn periods_of(meta: &Metadata, start: u64, end: u64, modes: &[ModeChange]) -> Vec<Period> {
    let end = end.max(start);
    let mut out = vec![Period {
        start_ns: start,
        end_ns: end,
        mode: meta.mode,
        rate_hz: meta.options.rate_hz,
        reason: String::new(),
    }];
    for m in modes {
        let t = m.time_ns.clamp(start, end);
        if let Some(last) = out.last_mut() {
            last.end_ns = t;
        }
        out.push(Period {
            start_ns: t,
            end_ns: end,
            mode: m.mode,
            rate_hz: m.rate_hz,
            reason: m.reason.clone(),
        });
    }
    out.retain(|p| p.end_ns > p.start_ns || modes.is_empty());
    out
}

/// "exact 0.000–0.251 s at 1000 Hz, sampled 0.251–4.000 s at 1000 Hz" (times from the
/// recording's start).
pub fn describe(periods: &[Period]) -> String {
    let t0 = periods.first().map_or(0, |p| p.start_ns);
    periods
        .iter()
        .map(|p| {
            format!(
                "{} {:.3}–{:.3} s at {:.0} Hz",
                match p.mode {
                    Source::Exact => "exact",
                    Source::Sampled => "sampled",
                },
                p.start_ns.saturating_sub(t0) as f64 / 1e9,
                p.end_ns.saturating_sub(t0) as f64 / 1e9,
                p.rate_hz
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::Event;

    #[test]
    fn periods_follow_mode_records() {
        let meta = Metadata {
            mode: Source::Exact,
            ..Default::default()
        };
        let mut tl = Timeline::new();
        tl.start_ns = Some(1_000_000_000);
        tl.end_ns = Some(5_000_000_000);
        tl.apply(&Event::Mode {
            time_ns: 1_250_000_000,
            mode: Source::Sampled,
            rate_hz: 1000.0,
            own_ppm: 1,
            probes_ppm: 50_000,
            reason: "over".into(),
        });
        tl.apply(&Event::Mode {
            time_ns: 3_000_000_000,
            mode: Source::Sampled,
            rate_hz: 250.0,
            own_ppm: 30_000,
            probes_ppm: 0,
            reason: "rate".into(),
        });
        let p = periods(&meta, &tl);
        assert_eq!(p.len(), 3);
        assert_eq!(
            describe(&p),
            "exact 0.000–0.250 s at 1000 Hz, sampled 0.250–2.000 s at 1000 Hz, sampled \
             2.000–4.000 s at 250 Hz"
        );
        let plain = periods(&meta, &Timeline::new());
        assert_eq!(plain.len(), 1);
    }
}
