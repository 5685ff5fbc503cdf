//! The i8259 interrupt controller: QEMU's `vmstate_i8259_common` ("i8259") and
//! `vmstate_pic_ltim` ("i8259/ltim") in `hw/intc/i8259_common.c`.
//!
//! pc machines have two ISA `isa-i8259` devices: idstr `i8259`, instances 0 (master) and
//! 1 (slave).

use vmstate::VmState;

/// QEMU's `vmstate_i8259_common` ("i8259"), version 1, minimum version 1: sixteen
/// `VMSTATE_UINT8` fields and the `i8259/ltim` subsection.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "i8259", version = 1, min_version = 1)]
pub struct I8259 {
    /// `last_irr`: edge detection.
    pub last_irr: u8,
    /// `irr`: interrupt request register.
    pub irr: u8,
    /// `imr`: interrupt mask register.
    pub imr: u8,
    /// `isr`: interrupt service register.
    pub isr: u8,
    /// `priority_add`: highest irq priority.
    pub priority_add: u8,
    /// `irq_base`.
    pub irq_base: u8,
    /// `read_reg_select`.
    pub read_reg_select: u8,
    /// `poll`.
    pub poll: u8,
    /// `special_mask`.
    pub special_mask: u8,
    /// `init_state`.
    pub init_state: u8,
    /// `auto_eoi`.
    pub auto_eoi: u8,
    /// `rotate_on_auto_eoi`.
    pub rotate_on_auto_eoi: u8,
    /// `special_fully_nested_mode`.
    pub special_fully_nested_mode: u8,
    /// `init4`: true if 4 byte init.
    pub init4: u8,
    /// `single_mode`: true if the slave PIC is not initialized.
    pub single_mode: u8,
    /// `elcr`: PIIX edge/trigger selection.
    pub elcr: u8,
    /// Subsection `i8259/ltim`, sent when level-triggered mode is on.
    #[vmstate(subsection, needed = Self::ltim_state_needed)]
    pub ltim: I8259Ltim,
}

impl I8259 {
    /// QEMU's `ltim_state_needed`: `!!s->ltim`.
    fn ltim_state_needed(&self) -> bool {
        self.ltim.ltim != 0
    }
}

/// QEMU's `vmstate_pic_ltim` ("i8259/ltim"), version 1, minimum version 1.
#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "i8259/ltim", version = 1, min_version = 1)]
pub struct I8259Ltim {
    /// `ltim`: level-triggered interrupt mode (ICW1 bit 3).
    pub ltim: u8,
}
