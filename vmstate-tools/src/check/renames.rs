//! The renames QEMU's checker tolerates: field renames per description (its
//! hardcoded whitelist) and two section renames.

/// Which list of tolerated field renames to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Renames {
    /// The list in QEMU 10.0's script (the one that wrote the reference output kept with
    /// the test vectors).
    #[default]
    Qemu10_0,
    /// QEMU 10.0's list plus `hpet`: `num_timers` ↔ `num_timers_save`, added upstream in
    /// May 2025 (after 10.0) for the rename in QEMU commit 1433e38cc8.
    Upstream,
}

/// Field renames QEMU's checker tolerates, per description (or, for description names,
/// per section): any two names of one list are the same field.
const RENAMES: &[(&str, &[&str])] = &[
    ("apic", &["timer", "timer_expiry"]),
    ("e1000", &["dev", "parent_obj"]),
    ("ehci", &["dev", "pcidev"]),
    ("I440FX", &["dev", "parent_obj"]),
    ("ich9_ahci", &["card", "parent_obj"]),
    ("ich9-ahci", &["ahci", "ich9_ahci"]),
    ("ioh3420", &["PCIDevice", "PCIEDevice"]),
    (
        "ioh-3240-express-root-port",
        &[
            "port.br.dev",
            "parent_obj.parent_obj.parent_obj",
            "port.br.dev.exp.aer_log",
            "parent_obj.parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    (
        "cirrus_vga",
        &[
            "hw_cursor_x",
            "vga.hw_cursor_x",
            "hw_cursor_y",
            "vga.hw_cursor_y",
        ],
    ),
    ("lsiscsi", &["dev", "parent_obj"]),
    ("mch", &["d", "parent_obj"]),
    (
        "pci_bridge",
        &["bridge.dev", "parent_obj", "bridge.dev.shpc", "shpc"],
    ),
    ("pcnet", &["pci_dev", "parent_obj"]),
    ("PIIX3", &["pci_irq_levels", "pci_irq_levels_vmstate"]),
    (
        "piix4_pm",
        &[
            "dev",
            "parent_obj",
            "pci0_status",
            "acpi_pci_hotplug.acpi_pcihp_pci_status[0x0]",
            "pm1a.sts",
            "ar.pm1.evt.sts",
            "pm1a.en",
            "ar.pm1.evt.en",
            "pm1_cnt.cnt",
            "ar.pm1.cnt.cnt",
            "tmr.timer",
            "ar.tmr.timer",
            "tmr.overflow_time",
            "ar.tmr.overflow_time",
            "gpe",
            "ar.gpe",
        ],
    ),
    ("rtl8139", &["dev", "parent_obj"]),
    ("qxl", &["num_surfaces", "ssd.num_surfaces"]),
    (
        "usb-ccid",
        &["abProtocolDataStructure", "abProtocolDataStructure.data"],
    ),
    ("usb-host", &["dev", "parent_obj"]),
    ("usb-mouse", &["usb-ptr-queue", "HIDPointerEventQueue"]),
    ("usb-tablet", &["usb-ptr-queue", "HIDPointerEventQueue"]),
    ("vmware_vga", &["card", "parent_obj"]),
    ("vmware_vga_internal", &["depth", "new_depth"]),
    ("xhci", &["pci_dev", "parent_obj"]),
    ("x3130-upstream", &["PCIDevice", "PCIEDevice"]),
    (
        "xio3130-express-downstream-port",
        &[
            "port.br.dev",
            "parent_obj.parent_obj.parent_obj",
            "port.br.dev.exp.aer_log",
            "parent_obj.parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    ("xio3130-downstream", &["PCIDevice", "PCIEDevice"]),
    (
        "xio3130-express-upstream-port",
        &[
            "br.dev",
            "parent_obj.parent_obj",
            "br.dev.exp.aer_log",
            "parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    (
        "spapr_pci",
        &[
            "dma_liobn[0]",
            "mig_liobn",
            "mem_win_addr",
            "mig_mem_win_addr",
            "mem_win_size",
            "mig_mem_win_size",
            "io_win_addr",
            "mig_io_win_addr",
            "io_win_size",
            "mig_io_win_size",
        ],
    ),
];

/// The entry [`Renames::Upstream`] adds.
const UPSTREAM_RENAMES: &[(&str, &[&str])] = &[("hpet", &["num_timers", "num_timers_save"])];

/// Section renames QEMU's checker tolerates, in both directions.
const SECTION_RENAMES: &[(&str, &str)] = &[("ICH9 LPC", "ICH9-LPC"), ("e1000-82540em", "e1000")];

impl Renames {
    /// Whether `s` and `d` name the same field of `name` (equal, or both in its rename
    /// list). QEMU's `check_fields_match`.
    pub fn fields_match(self, name: &str, s: &str, d: &str) -> bool {
        if s == d {
            return true;
        }
        let extra: &[(&str, &[&str])] = match self {
            Renames::Qemu10_0 => &[],
            Renames::Upstream => UPSTREAM_RENAMES,
        };
        // QEMU's list is a dict: the first entry for a name is the only one.
        match RENAMES.iter().chain(extra).find(|(n, _)| *n == name) {
            Some((_, list)) => list.contains(&s) && list.contains(&d),
            None => false,
        }
    }
}

/// The tolerated other name of a section, if any. QEMU's `get_changed_sec_name`.
pub fn renamed_section(name: &str) -> Option<&'static str> {
    SECTION_RENAMES.iter().find_map(|&(a, b)| {
        if a == name {
            Some(b)
        } else if b == name {
            Some(a)
        } else {
            None
        }
    })
}
