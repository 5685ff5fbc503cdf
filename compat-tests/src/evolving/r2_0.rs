//! Release 2.0 (`demo-2.0`):
//!
//! - `uart`: `scratch` is retired; its 4 bytes stay on the wire as `unused = 4`, so no
//!   version change. A subsection `uart/fifo` carries the FIFO contents, sent only when
//!   the FIFO holds data (`needed`): streams without it load in 1.x.
//! - `pit` version 2, min 1: more counters than the two fixed ones, as a `Vec` counted
//!   by `nextra`, both `since = 2`.

use vmstate::release::{Release, ReleaseMap, Version};
use vmstate::{Registration, Registry, VmState, VmStateDescription};
use vmstate_tools::compat::{Subject, device};

use super::values as v;

/// The release.
pub const VERSION: Version = Version::new(2, 0, 0);
/// Its machine name.
pub const MACHINE: &str = "demo-2.0";

/// The FIFO contents, a subsection of `uart`.
#[derive(VmState, Debug, Clone, Default, PartialEq, Eq)]
#[vmstate(name = "uart/fifo", version = 1, pre_save = Self::sync)]
pub struct UartFifo {
    /// Number of bytes in the FIFO.
    pub count: u8,
    /// The bytes.
    #[vmstate(len = count)]
    pub data: Vec<u8>,
}

impl UartFifo {
    fn sync(&mut self) -> Result<(), String> {
        self.count = u8::try_from(self.data.len()).map_err(|_| "FIFO longer than 255")?;
        Ok(())
    }
}

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
    /// Was `scratch: u32` up to 1.1.
    #[vmstate(unused = 4)]
    pub _scratch: (),
    /// FIFO control.
    #[vmstate(since = 2)]
    pub fcr: u8,
    /// The FIFO contents, sent when not empty.
    #[vmstate(subsection, needed = Self::fifo_needed)]
    pub fifo: UartFifo,
}

impl Uart {
    fn fifo_needed(&self) -> bool {
        !self.fifo.data.is_empty()
    }
}

/// The interval timer.
#[derive(VmState, Debug, Clone, Default, PartialEq, Eq)]
#[vmstate(name = "pit", version = 2, min_version = 1, pre_save = Self::sync)]
pub struct Pit {
    /// Mode register.
    pub mode: u8,
    /// The first two counters.
    pub counters: [u16; 2],
    /// Number of further counters.
    #[vmstate(since = 2)]
    pub nextra: u8,
    /// The further counters.
    #[vmstate(since = 2, len = nextra)]
    pub extra: Vec<u16>,
}

impl Pit {
    fn sync(&mut self) -> Result<(), String> {
        self.nextra = u8::try_from(self.extra.len()).map_err(|_| "too many counters")?;
        Ok(())
    }
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

/// What 2.0 knows: 1.0 and 1.1 (from their schema files) and itself.
pub fn release_map() -> ReleaseMap {
    ReleaseMap::new([
        super::kept_release(&super::r1_0::VERSION),
        super::kept_release(&super::r1_1::VERSION),
        release(),
    ])
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
    /// The golden "idle" state: registers only, FIFO empty, no extra counter.
    pub fn idle() -> Self {
        Machine {
            uart: Uart {
                lcr: v::LCR,
                lsr: v::LSR,
                divisor: v::DIVISOR,
                _scratch: (),
                fcr: v::FCR,
                fifo: UartFifo::default(),
            },
            pit: Pit {
                mode: v::MODE,
                counters: v::COUNTERS,
                nextra: 0,
                extra: Vec::new(),
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

    /// The golden "busy" state: FIFO data and extra counters.
    pub fn busy() -> Self {
        let mut m = Self::idle();
        m.uart.fifo = UartFifo {
            count: v::FIFO.len() as u8,
            data: v::FIFO.to_vec(),
        };
        m.pit.nextra = v::EXTRA.len() as u8;
        m.pit.extra = v::EXTRA.to_vec();
        m
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

/// The release for the harness, with its golden streams "idle" and "busy".
pub fn subject() -> Subject {
    Subject::new(release_map(), || Machine::default().registry())
        .golden("idle", || Machine::idle().registry())
        .golden("busy", || Machine::busy().registry())
}
