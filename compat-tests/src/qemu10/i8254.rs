//! The i8254 programmable interval timer: QEMU's `vmstate_pit_common` ("i8254") and
//! `vmstate_pit_channel` ("pit channel") in `hw/timer/i8254_common.c`.
//!
//! An ISA device (`isa-pit` on pc machines): idstr `i8254`, instance 0.

use vmstate::VmState;

/// QEMU's `vmstate_pit_channel` ("pit channel"), version 2, minimum version 2: the state
/// of one of the three counters.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "pit channel", version = 2, min_version = 2)]
pub struct PitChannel {
    /// `count`: the reload value (0x10000 for a written 0).
    pub count: i32,
    /// `latched_count`.
    pub latched_count: u16,
    /// `count_latched`.
    pub count_latched: u8,
    /// `status_latched`.
    pub status_latched: u8,
    /// `status`.
    pub status: u8,
    /// `read_state`.
    pub read_state: u8,
    /// `write_state`.
    pub write_state: u8,
    /// `write_latch`.
    pub write_latch: u8,
    /// `rw_mode`.
    pub rw_mode: u8,
    /// `mode`: the counter mode (0..5).
    pub mode: u8,
    /// `bcd`.
    pub bcd: u8,
    /// `gate`.
    pub gate: u8,
    /// `count_load_time` (ns, QEMU_CLOCK_VIRTUAL).
    pub count_load_time: i64,
    /// `next_transition_time` (ns).
    pub next_transition_time: i64,
}

/// QEMU's `vmstate_pit_common` ("i8254"), version 3, minimum version 2.
///
/// ```c
/// VMSTATE_UINT32_V(channels[0].irq_disabled, PITCommonState, 3),
/// VMSTATE_STRUCT_ARRAY(channels, PITCommonState, 3, 2, vmstate_pit_channel, PITChannelState),
/// VMSTATE_INT64(channels[0].next_transition_time, PITCommonState), /* formerly irq_timer */
/// ```
///
/// QEMU sends `channels[0].next_transition_time` twice: inside the channel array and
/// again after it (where `irq_timer` used to be). The second copy is a separate field
/// here; `pre_save` fills it from channel 0 and `post_load` writes it back, so the value
/// loaded last wins, as in QEMU.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(
    name = "i8254",
    version = 3,
    min_version = 2,
    pre_save = Self::pre_save,
    post_load = Self::post_load
)]
pub struct I8254 {
    /// `channels[0].irq_disabled` (since version 3).
    #[vmstate(since = 3, rename = "channels[0].irq_disabled")]
    pub irq_disabled: u32,
    /// `channels`: the three counters (since version 2).
    #[vmstate(since = 2)]
    pub channels: [PitChannel; 3],
    /// `channels[0].next_transition_time`, sent again after the array.
    #[vmstate(rename = "channels[0].next_transition_time")]
    pub irq_timer: i64,
}

impl I8254 {
    fn pre_save(&mut self) -> Result<(), std::convert::Infallible> {
        self.irq_timer = self.channels[0].next_transition_time;
        Ok(())
    }

    fn post_load(&mut self, _version: u32) -> Result<(), std::convert::Infallible> {
        self.channels[0].next_transition_time = self.irq_timer;
        Ok(())
    }
}
