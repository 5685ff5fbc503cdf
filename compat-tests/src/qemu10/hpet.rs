//! The HPET: QEMU's `vmstate_hpet` ("hpet"), `vmstate_hpet_timer` ("hpet_timer") and the
//! subsections `hpet/rtc_irq_level` and `hpet/offset` in `hw/timer/hpet.c`.
//!
//! A sysbus device: idstr `hpet`, instance 0.

use vmstate::{Timer, VmState};

/// `HPET_MIN_TIMERS`: the default and smallest number of timers.
pub const HPET_MIN_TIMERS: usize = 3;
/// `HPET_MAX_TIMERS`.
pub const HPET_MAX_TIMERS: usize = 32;
/// `HPET_CFG_ENABLE`: bit 0 of the general configuration register.
pub const HPET_CFG_ENABLE: u64 = 1;

/// QEMU's `vmstate_hpet` ("hpet"), version 2, minimum version 1.
///
/// ```c
/// VMSTATE_UINT64(config, HPETState),
/// VMSTATE_UINT64(isr, HPETState),
/// VMSTATE_UINT64(hpet_counter, HPETState),
/// VMSTATE_UINT8_V(num_timers_save, HPETState, 2),
/// VMSTATE_VALIDATE("num_timers must match", hpet_validate_num_timers),
/// VMSTATE_STRUCT_VARRAY_UINT8(timer, HPETState, num_timers, 0,
///                             vmstate_hpet_timer, HPETTimer),
/// subsections: &vmstate_hpet_rtc_irq_level, &vmstate_hpet_offset
/// ```
///
/// As in QEMU, the timer array is counted by the configured number of timers
/// (`num_timers`, the `timers` property, not migrated), and the validation checks that
/// the stream's `num_timers_save` equals it before the timers are read. `pre_save` sets
/// both from the number of timers, as QEMU's `hpet_pre_save` sets
/// `num_timers_save = num_timers`. A version 1 stream (no `num_timers_save`) is loaded
/// with the count the device already has (3 by default, as QEMU's).
///
/// `Default` is written by hand to match a QEMU HPET with default properties: 3 timers
/// and `hpet-offset-saved=on`.
#[derive(VmState, Debug, Clone, PartialEq)]
#[vmstate(name = "hpet", version = 2, min_version = 1, pre_save = Self::pre_save)]
pub struct Hpet {
    /// `config`: general configuration register.
    pub config: u64,
    /// `isr`: interrupt status register.
    pub isr: u64,
    /// `hpet_counter`: main counter.
    pub hpet_counter: u64,
    /// `num_timers_save` (since version 2): the number of timers.
    #[vmstate(since = 2)]
    pub num_timers_save: u8,
    /// `VMSTATE_VALIDATE("num_timers must match", hpet_validate_num_timers)`: no bytes.
    #[vmstate(validate = Self::hpet_validate_num_timers, rename = "num_timers must match")]
    pub num_timers_must_match: (),
    /// Not migrated: the configured number of timers (QEMU's `num_timers`, the `timers`
    /// property), which counts `timer`.
    #[vmstate(skip)]
    pub num_timers: u8,
    /// `timer`: one entry per timer, counted by `num_timers`.
    #[vmstate(len = num_timers)]
    pub timer: Vec<HpetTimer>,
    /// Subsection `hpet/rtc_irq_level`, sent when the RTC irq line is high.
    #[vmstate(subsection, needed = Self::hpet_rtc_irq_level_needed)]
    pub rtc_irq_level: HpetRtcIrqLevel,
    /// Subsection `hpet/offset`, sent when the HPET is enabled and the offset is kept.
    #[vmstate(subsection, needed = Self::hpet_offset_needed)]
    pub offset: HpetOffset,
    /// Not migrated: the `hpet-offset-saved` property (default on).
    #[vmstate(skip)]
    pub hpet_offset_saved: bool,
}

impl Default for Hpet {
    fn default() -> Self {
        Hpet {
            config: 0,
            isr: 0,
            hpet_counter: 0,
            num_timers_save: HPET_MIN_TIMERS as u8,
            num_timers_must_match: (),
            num_timers: HPET_MIN_TIMERS as u8,
            timer: (0..HPET_MIN_TIMERS as u8)
                .map(|tn| HpetTimer {
                    tn,
                    ..HpetTimer::default()
                })
                .collect(),
            rtc_irq_level: HpetRtcIrqLevel::default(),
            offset: HpetOffset::default(),
            hpet_offset_saved: true,
        }
    }
}

impl Hpet {
    /// The part of QEMU's `hpet_pre_save` that touches migrated state:
    /// `num_timers_save = num_timers` (here both from the number of timers).
    fn pre_save(&mut self) -> Result<(), String> {
        let n = self.timer.len();
        if !(HPET_MIN_TIMERS..=HPET_MAX_TIMERS).contains(&n) {
            return Err(format!(
                "{n} HPET timers, expected {HPET_MIN_TIMERS}..={HPET_MAX_TIMERS}"
            ));
        }
        self.num_timers = n as u8;
        self.num_timers_save = self.num_timers;
        Ok(())
    }

    /// QEMU's `hpet_validate_num_timers`: the stream's timer count must be the
    /// configured one.
    fn hpet_validate_num_timers(&self, _version: u32) -> bool {
        self.num_timers == self.num_timers_save
    }

    /// QEMU's `hpet_rtc_irq_level_needed`.
    fn hpet_rtc_irq_level_needed(&self) -> bool {
        self.rtc_irq_level.rtc_irq_level != 0
    }

    /// QEMU's `hpet_offset_needed`: `hpet_enabled(s) && s->hpet_offset_saved`.
    fn hpet_offset_needed(&self) -> bool {
        self.config & HPET_CFG_ENABLE != 0 && self.hpet_offset_saved
    }
}

/// QEMU's `vmstate_hpet_timer` ("hpet_timer"), version 1, minimum version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "hpet_timer", version = 1, min_version = 1)]
pub struct HpetTimer {
    /// `tn`: the timer number.
    pub tn: u8,
    /// `config`: timer configuration and capabilities.
    pub config: u64,
    /// `cmp`: comparator.
    pub cmp: u64,
    /// `fsb`: FSB route.
    pub fsb: u64,
    /// `period`: last value written to the comparator.
    pub period: u64,
    /// `wrap_flag`.
    pub wrap_flag: u8,
    /// `qemu_timer` (`VMSTATE_TIMER_PTR`).
    pub qemu_timer: Timer,
}

/// QEMU's `vmstate_hpet_rtc_irq_level` ("hpet/rtc_irq_level"), version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "hpet/rtc_irq_level", version = 1, min_version = 1)]
pub struct HpetRtcIrqLevel {
    /// `rtc_irq_level`.
    pub rtc_irq_level: u8,
}

/// QEMU's `vmstate_hpet_offset` ("hpet/offset"), version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "hpet/offset", version = 1, min_version = 1)]
pub struct HpetOffset {
    /// `hpet_offset`: offset between the main counter and guest time.
    pub hpet_offset: u64,
}
