//! QEMU's auto-converge: when the guest dirties memory faster than the migration
//! drains it, slow the vCPUs down.
//!
//! As in QEMU (`migration_trigger_throttle`): over each period (QEMU evaluates at its
//! dirty-bitmap syncs, at most once a second), if the bytes the guest dirtied exceed half
//! of the bytes transferred (`throttle-trigger-threshold`, 50%), that counts once; on
//! the second count the throttle starts at 20% (`cpu-throttle-initial`), and each
//! further second count adds 10% (`cpu-throttle-increment`), up to 99%.

use std::time::Duration;

/// QEMU's `cpu-throttle-initial`.
const INITIAL: u8 = 20;
/// QEMU's `cpu-throttle-increment`.
const INCREMENT: u8 = 10;
/// QEMU's maximum throttle.
const MAX: u8 = 99;
/// QEMU's `throttle-trigger-threshold`, in percent of the bytes sent.
const TRIGGER_PERCENT: u64 = 50;

/// The throttle decision, round by round.
#[derive(Debug, Default)]
pub(super) struct AutoConverge {
    period: Duration,
    elapsed: Duration,
    sent: u64,
    dirtied: u64,
    high_periods: u32,
    percent: u8,
}

impl AutoConverge {
    /// The throttle in force.
    pub(super) fn percent(&self) -> u8 {
        self.percent
    }

    /// Evaluates once every `period` of rounds (zero: after every round).
    pub(super) fn new(period: Duration) -> Self {
        AutoConverge {
            period,
            ..Self::default()
        }
    }

    /// Records a round of `elapsed` that transferred `sent` bytes while the guest dirtied
    /// `dirtied`; returns the new throttle if it changes.
    pub(super) fn after_round(&mut self, sent: u64, dirtied: u64, elapsed: Duration) -> Option<u8> {
        self.sent = self.sent.saturating_add(sent);
        self.dirtied = self.dirtied.saturating_add(dirtied);
        self.elapsed += elapsed;
        if self.elapsed < self.period {
            return None;
        }
        let (sent, dirtied) = (self.sent, self.dirtied);
        (self.sent, self.dirtied, self.elapsed) = (0, 0, Duration::ZERO);
        if sent == 0 || dirtied.saturating_mul(100) <= sent.saturating_mul(TRIGGER_PERCENT) {
            return None;
        }
        self.high_periods += 1;
        if self.high_periods < 2 {
            return None;
        }
        self.high_periods = 0;
        let next = if self.percent == 0 {
            INITIAL
        } else {
            self.percent.saturating_add(INCREMENT).min(MAX)
        };
        (next != self.percent).then(|| {
            self.percent = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUND: Duration = Duration::from_millis(100);

    #[test]
    fn two_high_periods_start_at_20_then_add_10_up_to_99() {
        let mut a = AutoConverge::new(Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..40 {
            if let Some(p) = a.after_round(100, 80, ROUND) {
                seen.push(p);
            }
        }
        assert_eq!(seen, [20, 30, 40, 50, 60, 70, 80, 90, 99]);
        assert_eq!(a.percent(), 99);
    }

    #[test]
    fn rounds_below_half_do_not_count() {
        let mut a = AutoConverge::new(Duration::ZERO);
        assert_eq!(a.after_round(100, 50, ROUND), None);
        assert_eq!(a.after_round(100, 50, ROUND), None);
        assert_eq!(a.after_round(0, 50, ROUND), None);
        assert_eq!(a.after_round(100, 51, ROUND), None);
        assert_eq!(a.after_round(100, 51, ROUND), Some(20));
    }

    #[test]
    fn rounds_are_summed_over_a_period() {
        let mut a = AutoConverge::new(Duration::from_secs(1));
        // Nine rounds of a period: no decision yet; the tenth closes a high period.
        for _ in 0..9 {
            assert_eq!(a.after_round(100, 90, ROUND), None);
        }
        assert_eq!(a.after_round(100, 90, ROUND), None);
        for _ in 0..9 {
            assert_eq!(a.after_round(100, 90, ROUND), None);
        }
        assert_eq!(a.after_round(100, 90, ROUND), Some(20));
    }
}
