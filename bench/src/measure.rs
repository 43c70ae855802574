//! One measured load run, whichever tool produced it.

use std::collections::BTreeMap;

use crate::procs::Usage;

#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// Wall time of the run, until the last response.
    pub elapsed_s: f64,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a response, by cause.
    pub errors: BTreeMap<String, u64>,
    /// Over all responses, whatever their status.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Over non-2xx responses only (oha's success breakdown), for the overload run.
    pub rejected_p99_ms: Option<f64>,
    /// Over 2xx responses only, when the tool reports it.
    pub ok_p99_ms: Option<f64>,
    /// Open-loop runs: how late the last scheduled request went out (0 when on time).
    pub schedule_behind_ms: Option<f64>,
    /// In-crate generator runs: `(when the request was due or sent, its latency)`, both in µs,
    /// the first from the run's earliest request; see [`Measurement::windows`].
    pub timed_us: Vec<(u64, u64)>,
    /// In-crate generator runs: the instant `timed_us` offsets count from.
    pub origin: Option<std::time::Instant>,
    pub usage: Usage,
}

/// Requests an open loop at `rate` for `duration` offers.
fn offered(rate: f64, duration: std::time::Duration) -> u64 {
    (rate * duration.as_secs_f64()).round() as u64
}

/// Why an open loop at `rate` for `duration` did not keep up, `None` when it did: fewer than 99%
/// of the requests it offered succeeded (`ok`, described by `mix`), or its last scheduled request
/// went out more than 1% of the duration late (`behind_ms`, when the run records its schedule).
pub fn shortfall(
    (ok, mix): (u64, &str),
    behind_ms: Option<f64>,
    rate: f64,
    duration: std::time::Duration,
) -> Option<String> {
    let offered = offered(rate, duration);
    let answered = ok as f64 >= 0.99 * offered as f64;
    let late = behind_ms.filter(|late| *late > duration.as_secs_f64() * 10.0);
    if answered && late.is_none() {
        return None;
    }
    let mut why =
        format!("short of the offered rate: {ok} of {offered} offered answered 2xx ({mix})");
    if let Some(late) = late {
        why.push_str(&format!(", the last request sent {late:.0} ms late"));
    }
    Some(why)
}

impl Measurement {
    pub fn count(&self, pred: impl Fn(u16) -> bool) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| pred(**s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn ok(&self) -> u64 {
        self.count(|s| (200..300).contains(&s))
    }

    /// Why an open-loop run at `rate` for `duration` was not offered on time and answered;
    /// `None` when it was: 99% of the requests it offered got a 2xx (counted, not divided by an
    /// elapsed time that includes the last answers' tail), and, when the run records its schedule
    /// (the in-crate generator), its last scheduled request went out at most 1% of the duration
    /// late (a generator starved of CPU, or workers all waiting on a server that fell behind,
    /// would send it later). oha's `-q` runs record no schedule and need none: oha's pacer stops
    /// at the deadline instead of finishing a schedule it fell behind on, so a backlog shows as
    /// requests never sent. An open-loop p99 goal counts as met only when this is `None`.
    pub fn shortfall(&self, rate: f64, duration: std::time::Duration) -> Option<String> {
        shortfall(
            (self.ok(), &self.mix()),
            self.schedule_behind_ms,
            rate,
            duration,
        )
    }

    pub fn responses(&self) -> u64 {
        self.count(|_| true)
    }

    /// Successful (2xx) responses per second: the throughput that counts.
    pub fn ok_rps(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.ok() as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// The run's latencies in consecutive windows of [`WINDOW_SECS`] by due time, so that a tail
    /// shows as steady or as a few stalls; `slow` counts those above `slower_than_ms`.
    pub fn windows(&self, slower_than_ms: f64) -> Vec<Window> {
        windows(&self.timed_us, (slower_than_ms * 1000.0) as u64)
    }

    /// "200×1234, 503×5, timeout×1".
    pub fn mix(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        parts.extend(self.errors.iter().map(|(e, n)| format!("{e}×{n}")));
        if parts.is_empty() {
            "no responses".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Width of the windows of [`Measurement::windows`].
pub const WINDOW_SECS: u64 = 5;

/// The answers to the requests due within one window of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests answered later than the threshold given to [`windows`].
    pub slow: u64,
}

/// Splits `(offset from the run's start, latency)` pairs, both in µs, into consecutive windows
/// of [`WINDOW_SECS`] by offset (window `i` is `[i, i + 1) × WINDOW_SECS`; one nothing was due
/// in is all zeros, so positions stay aligned with other per-window series); `slow` counts
/// latencies above `slower_than_us`. The last, partial window is kept only if it holds at least
/// half a window's worth of time.
pub fn windows(samples: &[(u64, u64)], slower_than_us: u64) -> Vec<Window> {
    let width = WINDOW_SECS * 1_000_000;
    let Some(last) = samples.iter().map(|(at, _)| *at).max() else {
        return Vec::new();
    };
    let full = (last / width) as usize + 1;
    let mut buckets: Vec<Vec<u64>> = vec![Vec::new(); full];
    for &(at, latency) in samples {
        buckets[(at / width) as usize].push(latency);
    }
    if last % width < width / 2 && full > 1 {
        buckets.pop();
    }
    buckets
        .into_iter()
        .map(|mut b| {
            b.sort_unstable();
            let ms = |us: u64| us as f64 / 1000.0;
            Window {
                p99_ms: quantile(&b, 0.99).map_or(0.0, ms),
                max_ms: b.last().copied().map_or(0.0, ms),
                slow: b.iter().filter(|&&l| l > slower_than_us).count() as u64,
            }
        })
        .collect()
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn windows_split_by_due_time() {
        let s = |secs: f64, ms: u64| ((secs * 1e6) as u64, ms * 1000);
        // Window 0: 100 answers of 2 ms and one of 40 ms; window 1: 100 of 3 ms; a last
        // partial window of 1 s is dropped (less than half a window).
        let mut samples: Vec<(u64, u64)> = (0..100).map(|i| s(i as f64 * 0.04, 2)).collect();
        samples.push(s(2.5, 40));
        samples.extend((0..100).map(|i| s(5.0 + i as f64 * 0.04, 3)));
        samples.push(s(11.0, 90));
        let w = windows(&samples, 15_000);
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0],
            Window {
                p99_ms: 2.0,
                max_ms: 40.0,
                slow: 1
            }
        );
        assert_eq!((w[1].p99_ms, w[1].max_ms, w[1].slow), (3.0, 3.0, 0));
        // A last window past its half is kept.
        samples.push(s(13.0, 20));
        assert_eq!(windows(&samples, 15_000).len(), 3);
        // A window nothing was due in keeps its place.
        let gap = windows(&[s(0.0, 1), s(12.5, 1)], 15_000);
        assert_eq!(gap.len(), 3);
        assert_eq!((gap[1].p99_ms, gap[1].slow), (0.0, 0));
        assert!(windows(&[], 1).is_empty());
    }

    #[test]
    fn open_loop_shortfall() {
        let d = std::time::Duration::from_secs(10);
        let mut m = Measurement::default();
        m.statuses.insert(200, 990);
        m.statuses.insert(503, 10);
        // 100/s for 10 s offers 1,000: 990 answered 2xx is 99%; oha records no schedule.
        assert_eq!(m.shortfall(100.0, d), None);
        m.statuses.insert(200, 989);
        assert_eq!(
            m.shortfall(100.0, d).as_deref(),
            Some("short of the offered rate: 989 of 1000 offered answered 2xx (200×989, 503×10)")
        );
        // The in-crate generator must also have sent its last request within 1% of the run.
        m.statuses = BTreeMap::from([(200, 1000)]);
        m.schedule_behind_ms = Some(100.0);
        assert_eq!(m.shortfall(100.0, d), None);
        m.schedule_behind_ms = Some(101.0);
        assert_eq!(
            m.shortfall(100.0, d).as_deref(),
            Some(
                "short of the offered rate: 1000 of 1000 offered answered 2xx (200×1000), \
                 the last request sent 101 ms late"
            )
        );
    }

    #[test]
    fn counts_and_mix() {
        let mut m = Measurement {
            elapsed_s: 2.0,
            ..Default::default()
        };
        m.statuses.insert(200, 10);
        m.statuses.insert(503, 4);
        m.errors.insert("timeout".into(), 1);
        assert_eq!(m.ok(), 10);
        assert_eq!(m.responses(), 14);
        assert_eq!(m.ok_rps(), 5.0);
        assert_eq!(m.mix(), "200×10, 503×4, timeout×1");
    }
}
