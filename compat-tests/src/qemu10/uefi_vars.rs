//! The UEFI variable store: QEMU's `vmstate_uefi_vars_sysbus` ("uefi-vars-sysbus") in
//! `hw/uefi/var-service-sysbus.c`, with the `uefi-vars` state and its two QTAILQs of
//! variables and policies (`hw/uefi/var-service-vars.c`, `var-service-policy.c`).
//!
//! A sysbus device: `-device uefi-vars-x64` on `pc` or `q35`, idstr
//! `uefi-vars-sysbus`, instance 0. At start it holds six variables (SetupMode,
//! SignatureSupport, SecureBoot, CustomMode, VendorKeysNv, VendorKeys) and no policy.

use std::collections::VecDeque;

use vmstate::VmState;

/// QEMU's `vmstate_uefi_vars_sysbus` ("uefi-vars-sysbus"), version 0.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "uefi-vars-sysbus", version = 0, min_version = 0)]
pub struct UefiVarsSysbus {
    /// `state`: the variable store.
    pub state: UefiVars,
}

/// QEMU's `vmstate_uefi_vars` ("uefi-vars"), version 0.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "uefi-vars", version = 0, min_version = 0)]
pub struct UefiVars {
    /// `sts`.
    pub sts: u16,
    /// `buf_size`: the transfer buffer's size.
    pub buf_size: u32,
    /// `buf_addr_lo`.
    pub buf_addr_lo: u32,
    /// `buf_addr_hi`.
    pub buf_addr_hi: u32,
    /// `pio_xfer_offset`.
    pub pio_xfer_offset: u32,
    /// `pio_xfer_buffer`: `VMSTATE_VBUFFER_ALLOC_UINT32` of `buf_size` bytes.
    #[vmstate(buffer, len = buf_size)]
    pub pio_xfer_buffer: Vec<u8>,
    /// `end_of_dxe`.
    pub end_of_dxe: bool,
    /// `ready_to_boot`.
    pub ready_to_boot: bool,
    /// `exit_boot_service`.
    pub exit_boot_service: bool,
    /// `policy_locked`.
    pub policy_locked: bool,
    /// `used_storage`.
    pub used_storage: u64,
    /// `variables`: `VMSTATE_QTAILQ_V(variables, uefi_vars_state, 0, ...)`.
    #[vmstate(qtailq)]
    pub variables: VecDeque<UefiVariable>,
    /// `var_policies`: `VMSTATE_QTAILQ_V(var_policies, uefi_vars_state, 0, ...)`.
    #[vmstate(qtailq)]
    pub var_policies: VecDeque<UefiVarPolicy>,
}

/// QEMU's `vmstate_uefi_variable` ("uefi-variable"), version 0.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "uefi-variable", version = 0, min_version = 0)]
pub struct UefiVariable {
    /// `guid.data`: the vendor GUID, 16 bytes in EFI's in-memory order.
    #[vmstate(rename = "guid.data")]
    pub guid: [u8; 16],
    /// `name_size`: bytes of `name`.
    pub name_size: u32,
    /// `data_size`: bytes of `data`.
    pub data_size: u32,
    /// `attributes`.
    pub attributes: u32,
    /// `name`: UTF-16LE with its NUL.
    #[vmstate(buffer, len = name_size)]
    pub name: Vec<u8>,
    /// `data`.
    #[vmstate(buffer, len = data_size)]
    pub data: Vec<u8>,
    /// `time`.
    pub time: UefiTime,
}

/// QEMU's `vmstate_uefi_time` ("uefi-time"), version 0.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "uefi-time", version = 0, min_version = 0)]
pub struct UefiTime {
    /// `year`.
    pub year: u16,
    /// `month`.
    pub month: u8,
    /// `day`.
    pub day: u8,
    /// `hour`.
    pub hour: u8,
    /// `minute`.
    pub minute: u8,
    /// `second`.
    pub second: u8,
    /// `nanosecond`.
    pub nanosecond: u32,
}

/// QEMU's `vmstate_uefi_var_policy` ("uefi-var-policy"), version 0.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "uefi-var-policy", version = 0, min_version = 0)]
pub struct UefiVarPolicy {
    /// `entry_size`: bytes of `entry`.
    pub entry_size: u32,
    /// `entry`.
    #[vmstate(buffer, len = entry_size)]
    pub entry: Vec<u8>,
}

impl UefiVariable {
    /// The variable's name, decoded from UTF-16LE without its NUL.
    pub fn name_str(&self) -> String {
        let units: Vec<u16> = self
            .name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16_lossy(&units)
    }
}
