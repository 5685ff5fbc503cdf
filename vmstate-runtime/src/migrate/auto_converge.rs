//! QEMU's auto-converge: when the guest dirties memory faster than the migration
//! drains it, slow the vCPUs down.
//!
//! As in QEMU (`migration_trigger_throttle`): after each round, if the bytes the guest
//! dirtied during it exceed half of what the round sent (`throttle-trigger-threshold`,
//! 50%), that counts once; on the second count the throttle starts at 20%
//! (`cpu-throttle-initial`), and each further second count adds 10%
//! (`cpu-throttle-increment`), up to 99%.

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
    high_rounds: u32,
    percent: u8,
}

impl AutoConverge {
    /// The throttle in force.
    pub(super) fn percent(&self) -> u8 {
        self.percent
    }

    /// Records a round that sent `sent` bytes while the guest dirtied `dirtied`; returns
    /// the new throttle if it changes.
    pub(super) fn after_round(&mut self, sent: u64, dirtied: u64) -> Option<u8> {
        if sent == 0 || dirtied.saturating_mul(100) <= sent.saturating_mul(TRIGGER_PERCENT) {
            return None;
        }
        self.high_rounds += 1;
        if self.high_rounds < 2 {
            return None;
        }
        self.high_rounds = 0;
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

    #[test]
    fn two_high_rounds_start_at_20_then_add_10_up_to_99() {
        let mut a = AutoConverge::default();
        let mut seen = Vec::new();
        for _ in 0..40 {
            if let Some(p) = a.after_round(100, 80) {
                seen.push(p);
            }
        }
        assert_eq!(seen, [20, 30, 40, 50, 60, 70, 80, 90, 99]);
        assert_eq!(a.percent(), 99);
    }

    #[test]
    fn rounds_below_half_do_not_count() {
        let mut a = AutoConverge::default();
        assert_eq!(a.after_round(100, 50), None);
        assert_eq!(a.after_round(100, 50), None);
        assert_eq!(a.after_round(0, 50), None);
        assert_eq!(a.after_round(100, 51), None);
        assert_eq!(a.after_round(100, 51), Some(20));
    }
}
