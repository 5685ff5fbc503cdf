//! Rate limiting in windows of 100 ms, as QEMU does (`max-bandwidth / 10` per window).

use std::time::{Duration, Instant};

/// Rate limiting in windows of 100 ms, as QEMU (`max-bandwidth / 10` per window).
pub(super) struct RateLimit {
    window: Duration,
    per_window: Option<u64>,
    window_start: Instant,
    window_bytes: u64,
}

const WINDOW: Duration = Duration::from_millis(100);
/// Round size when the bandwidth is not limited: large enough to amortise the
/// per-round work, small enough to re-check convergence often.
const UNLIMITED_ROUND: u64 = 32 << 20;

impl RateLimit {
    pub(super) fn new(max_bandwidth: Option<u64>) -> Self {
        Self::with_window(max_bandwidth, WINDOW)
    }

    /// Windows of `window` instead of QEMU's 100 ms: shorter windows send in shorter
    /// bursts (postcopy's background pages, so that a request never waits behind a
    /// long burst).
    pub(super) fn with_window(max_bandwidth: Option<u64>, window: Duration) -> Self {
        let per_second = 1_000_000_000 / window.as_nanos().max(1) as u64;
        RateLimit {
            window,
            per_window: max_bandwidth.map(|b| (b / per_second.max(1)).max(4096)),
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Bytes that may be sent now; waits for the next window while the budget is spent.
    /// Bytes sent beyond a window's budget are carried into the next windows, so the
    /// average rate never exceeds the cap.
    pub(super) fn budget(&mut self) -> u64 {
        loop {
            if let Some(b) = self.try_budget() {
                return b;
            }
            let next = self.window_start + self.window;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }

    /// [`budget`](Self::budget) without waiting: `None` while this window's is spent.
    pub(super) fn try_budget(&mut self) -> Option<u64> {
        let Some(limit) = self.per_window else {
            return Some(UNLIMITED_ROUND);
        };
        let elapsed = self.window_start.elapsed();
        if elapsed >= self.window {
            let windows =
                (elapsed.as_nanos() / self.window.as_nanos()).min(u32::MAX as u128) as u32;
            self.window_start += self.window * windows;
            self.window_bytes = self
                .window_bytes
                .saturating_sub(limit.saturating_mul(u64::from(windows)));
        }
        (self.window_bytes < limit).then(|| limit - self.window_bytes)
    }

    pub(super) fn sent(&mut self, bytes: u64) {
        self.window_bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overshoot_is_carried_into_the_next_windows() {
        let mut r = RateLimit::new(Some(10 * 4096 * 10)); // 40 KiB per window
        assert_eq!(r.budget(), 40960);
        r.sent(3 * 40960 + 100); // three windows and a bit in one go
        // The debt covers three whole windows; what is left of the fourth is the budget.
        assert_eq!(r.budget(), 40960 - 100);
    }

    #[test]
    fn no_limit_means_fixed_rounds_and_no_waiting() {
        let mut r = RateLimit::new(None);
        r.sent(u64::MAX / 2);
        assert_eq!(r.budget(), UNLIMITED_ROUND);
    }
}
