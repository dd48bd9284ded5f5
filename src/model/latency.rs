//! A lock-free latency histogram (power-of-two microsecond buckets), for figures
//! such as read-through's load latency: cheap to record from any thread, and
//! good enough for a p50/p99 within a factor of two.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 40;

/// Counts of durations by bucket: bucket `i` holds durations below `2^i` µs.
pub struct Latency {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Latency {
    fn default() -> Latency {
        Latency { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Latency {
    /// Records one duration.
    pub fn record(&self, took: Duration) {
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        self.buckets[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound, in µs, of the bucket holding quantile `q` (0 < q ≤ 1);
    /// 0 when nothing was recorded.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return 1u64 << i;
            }
        }
        1u64 << (BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let l = Latency::default();
        assert_eq!(l.quantile_micros(0.5), 0);
        for _ in 0..98 {
            l.record(Duration::from_micros(300));
        }
        l.record(Duration::from_millis(20));
        l.record(Duration::from_millis(20));
        assert_eq!(l.quantile_micros(0.5), 512);
        assert_eq!(l.quantile_micros(0.99), 32_768);
        l.record(Duration::ZERO);
        assert_eq!(l.quantile_micros(0.001), 1);
    }
}
