//! The CPU timers: QEMU's `vmstate_timers` ("timer") in `system/cpu-timers.c`, with its
//! icount subsection tree (`timer/icount` and its three nested subsections).
//!
//! Registered with `vmstate_register(NULL, 0, ...)`, so the section idstr is `timer`,
//! instance 0, in every machine (`-M none` included).

use vmstate::{Timer, VmState};

/// QEMU's `vmstate_timers` (`system/cpu-timers.c`), version 2, minimum version 1.
///
/// ```c
/// VMSTATE_INT64(cpu_ticks_offset, TimersState),
/// VMSTATE_UNUSED(8),
/// VMSTATE_INT64_V(cpu_clock_offset, TimersState, 2),
/// subsections: &icount_vmstate_timers
/// ```
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "timer", version = 2, min_version = 1)]
pub struct CpuTimers {
    /// `cpu_ticks_offset`: host ticks offset of the guest TSC.
    pub cpu_ticks_offset: i64,
    /// `VMSTATE_UNUSED(8)`: formerly `dummy`.
    #[vmstate(unused = 8)]
    pub _unused: (),
    /// `cpu_clock_offset` (since version 2).
    #[vmstate(since = 2)]
    pub cpu_clock_offset: i64,
    /// Subsection `timer/icount`, sent when icount is enabled.
    #[vmstate(subsection, needed = Self::icount_state_needed)]
    pub icount: TimersIcount,
    /// Not migrated: whether `-icount` is on (QEMU's `icount_enabled()`).
    #[vmstate(skip)]
    pub icount_enabled: bool,
}

impl CpuTimers {
    /// QEMU's `icount_state_needed`.
    fn icount_state_needed(&self) -> bool {
        self.icount_enabled
    }
}

/// QEMU's `icount_vmstate_timers` ("timer/icount"), version 1, minimum version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "timer/icount", version = 1, min_version = 1)]
pub struct TimersIcount {
    /// `qemu_icount_bias`.
    pub qemu_icount_bias: i64,
    /// `qemu_icount`.
    pub qemu_icount: i64,
    /// Subsection `timer/icount/warp_timer`, sent when the warp timer exists.
    #[vmstate(subsection, needed = Self::warp_timer_state_needed)]
    pub warp_timer: TimersIcountWarpTimer,
    /// Subsection `timer/icount/timers`, sent when the adjust timers exist.
    #[vmstate(subsection, needed = Self::adjust_timers_state_needed)]
    pub timers: TimersIcountTimers,
    /// Subsection `timer/icount/shift`, sent in adaptive icount mode.
    #[vmstate(subsection, needed = Self::icount_shift_state_needed)]
    pub shift: TimersIcountShift,
    /// Not migrated: whether `icount_warp_timer` was created.
    #[vmstate(skip)]
    pub has_warp_timer: bool,
    /// Not migrated: whether `icount_rt_timer` was created.
    #[vmstate(skip)]
    pub has_adjust_timers: bool,
    /// Not migrated: `icount_enabled() == ICOUNT_ADAPTATIVE`.
    #[vmstate(skip)]
    pub adaptive: bool,
}

impl TimersIcount {
    /// QEMU's `warp_timer_state_needed`.
    fn warp_timer_state_needed(&self) -> bool {
        self.has_warp_timer
    }

    /// QEMU's `adjust_timers_state_needed`.
    fn adjust_timers_state_needed(&self) -> bool {
        self.has_adjust_timers
    }

    /// QEMU's `icount_shift_state_needed`.
    fn icount_shift_state_needed(&self) -> bool {
        self.adaptive
    }
}

/// QEMU's `icount_vmstate_warp_timer` ("timer/icount/warp_timer"), version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "timer/icount/warp_timer", version = 1, min_version = 1)]
pub struct TimersIcountWarpTimer {
    /// `vm_clock_warp_start`.
    pub vm_clock_warp_start: i64,
    /// `icount_warp_timer` (`VMSTATE_TIMER_PTR`).
    pub icount_warp_timer: Timer,
}

/// QEMU's `icount_vmstate_adjust_timers` ("timer/icount/timers"), version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "timer/icount/timers", version = 1, min_version = 1)]
pub struct TimersIcountTimers {
    /// `icount_rt_timer` (`VMSTATE_TIMER_PTR`).
    pub icount_rt_timer: Timer,
    /// `icount_vm_timer` (`VMSTATE_TIMER_PTR`).
    pub icount_vm_timer: Timer,
}

/// QEMU's `icount_vmstate_shift` ("timer/icount/shift"), version 2, minimum version 2.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "timer/icount/shift", version = 2, min_version = 2)]
pub struct TimersIcountShift {
    /// `icount_time_shift`.
    pub icount_time_shift: i16,
    /// `last_delta`.
    pub last_delta: i64,
}
