//! Release 1.1 (`demo-1.1`): `uart` version 2 adds `fcr` (`since = 2`); streams of
//! version 1 still load (`min_version = 1`).

use vmstate::release::{Release, ReleaseMap, Version};
use vmstate::{Registration, Registry, VmState, VmStateDescription};
use vmstate_tools::compat::{Subject, device};

use super::values as v;

/// The release.
pub const VERSION: Version = Version::new(1, 1, 0);
/// Its machine name.
pub const MACHINE: &str = "demo-1.1";

/// The serial port.
#[derive(VmState, Debug, Clone, Default, PartialEq, Eq)]
#[vmstate(name = "uart", version = 2, min_version = 1)]
pub struct Uart {
    /// Line control.
    pub lcr: u8,
    /// Line status.
    pub lsr: u8,
    /// Baud rate divisor.
    pub divisor: u16,
    /// Scratch register.
    pub scratch: u32,
    /// FIFO control: new in 1.1.
    #[vmstate(since = 2)]
    pub fcr: u8,
}

/// The interval timer (unchanged).
#[derive(VmState, Debug, Clone, Default, PartialEq, Eq)]
#[vmstate(name = "pit", version = 1)]
pub struct Pit {
    /// Mode register.
    pub mode: u8,
    /// The two counters.
    pub counters: [u16; 2],
}

/// The interrupt controller (unchanged).
#[derive(VmState, Debug, Clone, Default, PartialEq, Eq)]
#[vmstate(name = "intc", version = 1)]
pub struct Intc {
    /// Interrupt mask.
    pub imr: u8,
    /// Interrupt requests.
    pub irr: u8,
    /// In service.
    pub isr: u8,
    /// Edge/level control.
    pub elcr: u8,
    /// Vector base.
    pub base: u8,
}

/// The release's devices: `(section, description)`.
pub fn sections() -> [(&'static str, &'static VmStateDescription); 3] {
    [
        ("uart", Uart::DESCRIPTION),
        ("pit", Pit::DESCRIPTION),
        ("intc", Intc::DESCRIPTION),
    ]
}

/// The release, declared from its devices.
pub fn release() -> Release {
    Release::new(VERSION, MACHINE, sections())
}

/// What 1.1 knows: 1.0 (from its schema file) and itself.
pub fn release_map() -> ReleaseMap {
    ReleaseMap::new([super::kept_release(&super::r1_0::VERSION), release()])
        .expect("valid release map")
}

/// The state of every device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// `uart`.
    pub uart: Uart,
    /// `pit`.
    pub pit: Pit,
    /// `intc`.
    pub intc: Intc,
}

impl Machine {
    /// The golden "idle" state.
    pub fn idle() -> Self {
        Machine {
            uart: Uart {
                lcr: v::LCR,
                lsr: v::LSR,
                divisor: v::DIVISOR,
                scratch: v::SCRATCH,
                fcr: v::FCR,
            },
            pit: Pit {
                mode: v::MODE,
                counters: v::COUNTERS,
            },
            intc: Intc {
                imr: v::IMR,
                irr: v::IRR,
                isr: v::ISR,
                elcr: v::ELCR,
                base: v::BASE,
            },
        }
    }

    /// A registry holding the devices.
    pub fn registry(self) -> Registry {
        let mut reg = Registry::new();
        reg.register_device(self.uart, Registration::new())
            .expect("register uart");
        reg.register_device(self.pit, Registration::new())
            .expect("register pit");
        reg.register_device(self.intc, Registration::new())
            .expect("register intc");
        reg
    }

    /// The devices' state in a registry built by [`registry`](Self::registry).
    pub fn from_registry(reg: &mut Registry) -> Result<Self, String> {
        Ok(Machine {
            uart: device::<Uart>(reg, "uart")?.clone(),
            pit: device::<Pit>(reg, "pit")?.clone(),
            intc: device::<Intc>(reg, "intc")?.clone(),
        })
    }
}

/// The release for the harness, with its golden stream "idle".
pub fn subject() -> Subject {
    Subject::new(release_map(), || Machine::default().registry())
        .golden("idle", || Machine::idle().registry())
}
