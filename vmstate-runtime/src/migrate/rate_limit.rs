//! Rate limiting in windows of 100 ms, as QEMU does (`max-bandwidth / 10` per window).

use std::time::{Duration, Instant};

/// Rate limiting in windows of 100 ms, as QEMU (`max-bandwidth / 10` per window).
pub(super) struct RateLimit {
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
        RateLimit {
            per_window: max_bandwidth.map(|b| (b / 10).max(4096)),
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Bytes that may be sent now; sleeps until the next window if none.
    pub(super) fn budget(&mut self) -> u64 {
        let Some(limit) = self.per_window else {
            return UNLIMITED_ROUND;
        };
        let elapsed = self.window_start.elapsed();
        if elapsed >= WINDOW {
            self.window_start = Instant::now();
            self.window_bytes = 0;
        } else if self.window_bytes >= limit {
            std::thread::sleep(WINDOW - elapsed);
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        limit - self.window_bytes.min(limit)
    }

    pub(super) fn sent(&mut self, bytes: u64) {
        self.window_bytes += bytes;
    }
}
