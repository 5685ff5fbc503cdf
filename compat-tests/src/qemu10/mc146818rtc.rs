//! The MC146818 real-time clock and CMOS: QEMU's `vmstate_rtc` ("mc146818rtc") and
//! `vmstate_rtc_irq_reinject_on_ack_count` in `hw/rtc/mc146818rtc.c`.
//!
//! An ISA device: idstr `mc146818rtc`, instance 0.

use vmstate::{Timer, VmState};

/// QEMU's `vmstate_rtc` ("mc146818rtc"), version 3, minimum version 1.
///
/// ```c
/// VMSTATE_BUFFER(cmos_data, MC146818RtcState),          /* uint8_t cmos_data[128] */
/// VMSTATE_UINT8(cmos_index, MC146818RtcState),
/// VMSTATE_UNUSED(7*4),
/// VMSTATE_TIMER_PTR(periodic_timer, MC146818RtcState),
/// VMSTATE_INT64(next_periodic_time, MC146818RtcState),
/// VMSTATE_UNUSED(3*8),
/// VMSTATE_UINT32_V(irq_coalesced, MC146818RtcState, 2),
/// VMSTATE_UINT32_V(period, MC146818RtcState, 2),
/// VMSTATE_UINT64_V(base_rtc, MC146818RtcState, 3),
/// VMSTATE_UINT64_V(last_update, MC146818RtcState, 3),
/// VMSTATE_INT64_V(offset, MC146818RtcState, 3),
/// VMSTATE_TIMER_PTR_V(update_timer, MC146818RtcState, 3),
/// VMSTATE_UINT64_V(next_alarm_time, MC146818RtcState, 3),
/// subsections: &vmstate_rtc_irq_reinject_on_ack_count
/// ```
///
/// `Default` is written by hand because `[u8; 128]` has no `Default` impl in `std`.
#[derive(VmState, Debug, Clone, PartialEq)]
#[vmstate(name = "mc146818rtc", version = 3, min_version = 1)]
pub struct Mc146818Rtc {
    /// `cmos_data`: the 128 CMOS bytes (clock registers, then NVRAM).
    #[vmstate(buffer)]
    pub cmos_data: [u8; 128],
    /// `cmos_index`: the selected CMOS register.
    pub cmos_index: u8,
    /// `VMSTATE_UNUSED(7*4)`.
    #[vmstate(unused = 28)]
    pub _unused0: (),
    /// `periodic_timer`.
    pub periodic_timer: Timer,
    /// `next_periodic_time`.
    pub next_periodic_time: i64,
    /// `VMSTATE_UNUSED(3*8)`.
    #[vmstate(unused = 24)]
    pub _unused1: (),
    /// `irq_coalesced` (since version 2).
    #[vmstate(since = 2)]
    pub irq_coalesced: u32,
    /// `period` (since version 2).
    #[vmstate(since = 2)]
    pub period: u32,
    /// `base_rtc`: guest RTC seconds at `last_update` (since version 3).
    #[vmstate(since = 3)]
    pub base_rtc: u64,
    /// `last_update` (since version 3).
    #[vmstate(since = 3)]
    pub last_update: u64,
    /// `offset` (since version 3).
    #[vmstate(since = 3)]
    pub offset: i64,
    /// `update_timer` (since version 3).
    #[vmstate(since = 3)]
    pub update_timer: Timer,
    /// `next_alarm_time` (since version 3).
    #[vmstate(since = 3)]
    pub next_alarm_time: u64,
    /// Subsection `mc146818rtc/irq_reinject_on_ack_count`, sent when the count is not 0.
    #[vmstate(subsection, needed = Self::irq_reinject_on_ack_count_needed)]
    pub irq_reinject_on_ack_count: RtcIrqReinjectOnAckCount,
}

impl Default for Mc146818Rtc {
    fn default() -> Self {
        Mc146818Rtc {
            cmos_data: [0; 128],
            cmos_index: 0,
            _unused0: (),
            periodic_timer: Timer::default(),
            next_periodic_time: 0,
            _unused1: (),
            irq_coalesced: 0,
            period: 0,
            base_rtc: 0,
            last_update: 0,
            offset: 0,
            update_timer: Timer::default(),
            next_alarm_time: 0,
            irq_reinject_on_ack_count: RtcIrqReinjectOnAckCount::default(),
        }
    }
}

impl Mc146818Rtc {
    /// QEMU's `rtc_irq_reinject_on_ack_count_needed`.
    fn irq_reinject_on_ack_count_needed(&self) -> bool {
        self.irq_reinject_on_ack_count.irq_reinject_on_ack_count != 0
    }
}

/// QEMU's `vmstate_rtc_irq_reinject_on_ack_count`
/// ("mc146818rtc/irq_reinject_on_ack_count"), version 1, minimum version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(
    name = "mc146818rtc/irq_reinject_on_ack_count",
    version = 1,
    min_version = 1
)]
pub struct RtcIrqReinjectOnAckCount {
    /// `irq_reinject_on_ack_count`.
    pub irq_reinject_on_ack_count: u16,
}
