//! The run state sent at the end of a migration: QEMU's `vmstate_globalstate`
//! ("globalstate") in `migration/global_state.c`.
//!
//! Registered with `vmstate_register(NULL, 0, ...)`: idstr `globalstate`, instance 0.

use vmstate::VmState;

/// QEMU's `vmstate_globalstate` (`migration/global_state.c`), version 1.
///
/// ```c
/// VMSTATE_UINT32(size, GlobalState),
/// VMSTATE_BUFFER(runstate, GlobalState),          /* uint8_t runstate[32] */
/// VMSTATE_UINT8(has_vm_was_suspended, GlobalState),
/// VMSTATE_UINT8(vm_was_suspended, GlobalState),
/// VMSTATE_BUFFER(unused, GlobalState),            /* uint8_t unused[66] */
/// ```
///
/// `unused` is a real `VMSTATE_BUFFER` (type `buffer`), not a `VMSTATE_UNUSED`: its bytes
/// are sent as they are and loaded into the struct.
///
/// `Default` is written by hand: `[u8; 66]` has no `Default` impl in `std`, and QEMU's
/// `store-global-state` migration property defaults to on.
#[derive(VmState, Debug, Clone, PartialEq)]
#[vmstate(
    name = "globalstate",
    version = 1,
    min_version = 1,
    pre_save = Self::pre_save,
    needed = Self::global_state_needed
)]
pub struct GlobalState {
    /// `size`: length of the run state name including its NUL (set by `pre_save`).
    pub size: u32,
    /// `runstate`: the NUL-padded run state name (`"prelaunch"`, `"running"`, ...).
    #[vmstate(buffer)]
    pub runstate: [u8; 32],
    /// `has_vm_was_suspended`: 1 when `vm_was_suspended` is meaningful.
    pub has_vm_was_suspended: u8,
    /// `vm_was_suspended`.
    pub vm_was_suspended: u8,
    /// `unused`: 66 bytes of padding, sent as a `buffer`.
    #[vmstate(buffer)]
    pub unused: [u8; 66],
    /// Not migrated: the `store-global-state` migration property (default on).
    #[vmstate(skip)]
    pub store_global_state: bool,
}

impl Default for GlobalState {
    fn default() -> Self {
        GlobalState {
            size: 0,
            runstate: [0; 32],
            has_vm_was_suspended: 0,
            vm_was_suspended: 0,
            unused: [0; 66],
            store_global_state: true,
        }
    }
}

impl GlobalState {
    /// The run state name, up to its first NUL.
    pub fn runstate_name(&self) -> &[u8] {
        let end = self
            .runstate
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.runstate.len());
        &self.runstate[..end]
    }

    /// Sets the run state name (NUL-padded; at most 31 bytes so that a NUL remains).
    pub fn set_runstate(&mut self, name: &str) {
        assert!(name.len() < self.runstate.len(), "run state name too long");
        self.runstate = [0; 32];
        self.runstate[..name.len()].copy_from_slice(name.as_bytes());
    }

    /// QEMU's `global_state_pre_save`: `size = strnlen(runstate) + 1`, which must fit.
    fn pre_save(&mut self) -> Result<(), String> {
        let size = self.runstate_name().len() + 1;
        if size > self.runstate.len() {
            return Err("runstate is not NUL-terminated".into());
        }
        self.size = size as u32;
        Ok(())
    }

    /// QEMU's `global_state_needed`: always with `store-global-state`, otherwise only
    /// when the run state is neither `running` nor `paused`.
    fn global_state_needed(&self) -> bool {
        self.store_global_state || !matches!(self.runstate_name(), b"running" | b"paused")
    }
}
