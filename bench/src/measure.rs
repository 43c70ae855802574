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
    pub usage: Usage,
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

    /// Whether an open-loop run at `rate` for `duration` was offered on time and answered: its last
    /// scheduled request went out at most 1% of the duration late (a generator starved of CPU, or
    /// workers all waiting on a server that fell behind, would send it later), and 99% of the
    /// requests it offered got a 2xx (counted, not divided by an elapsed time that includes the
    /// last answers' tail).
    pub fn kept_up(&self, rate: f64, duration: std::time::Duration) -> bool {
        let on_time = self
            .schedule_behind_ms
            .is_some_and(|late| late <= duration.as_secs_f64() * 10.0);
        on_time && self.ok() as f64 >= 0.99 * (rate * duration.as_secs_f64()).round()
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
