//! The machine's devices, each described with `#[derive(VmState)]` the way an emulator
//! author would: registers, a FIFO counted by a field, nested channel structs, a
//! timer, and a subsection sent only when it matters.

use vmstate::{Timer, VmState};

/// A 16550-style UART.
#[derive(VmState, Debug, Clone, Default, PartialEq)]
#[vmstate(name = "serial", version = 2, min_version = 1)]
pub struct Serial {
    /// Divisor latch.
    pub divider: u16,
    /// Receive buffer register.
    pub rbr: u8,
    /// Interrupt enable register.
    pub ier: u8,
    /// Interrupt identification register.
    pub iir: u8,
    /// Line control register.
    pub lcr: u8,
    /// Modem control register.
    pub mcr: u8,
    /// Line status register.
    pub lsr: u8,
    /// Modem status register.
    pub msr: u8,
    /// Scratch register (added in version 2).
    #[vmstate(since = 2)]
    pub scr: u8,
    /// Bytes waiting in the receive FIFO.
    pub fifo_len: u8,
    /// The receive FIFO.
    #[vmstate(len = fifo_len)]
    pub fifo: Vec<u8>,
    /// Character timeout.
    pub timeout: Timer,
    /// Bytes transmitted (sent only when non-zero, as a subsection).
    #[vmstate(subsection, needed = Self::has_stats)]
    pub stats: SerialStats,
}

impl Serial {
    fn has_stats(&self) -> bool {
        self.stats.tx_bytes != 0
    }

    /// The guest writes a byte to the transmit register.
    pub fn transmit(&mut self, byte: u8) {
        self.stats.tx_bytes += 1;
        self.scr = byte;
        if self.fifo.len() < 16 {
            self.fifo.push(byte);
            self.fifo_len = self.fifo.len() as u8;
        } else {
            self.fifo.clear();
            self.fifo_len = 0;
        }
    }
}

/// `serial/stats`.
#[derive(VmState, Debug, Clone, Default, PartialEq)]
#[vmstate(name = "serial/stats", version = 1)]
pub struct SerialStats {
    /// Bytes transmitted since reset.
    pub tx_bytes: u64,
}

/// One PIT channel.
#[derive(VmState, Debug, Clone, Copy, Default, PartialEq)]
#[vmstate(name = "pit-channel", version = 1)]
pub struct PitChannel {
    /// Current count.
    pub count: u32,
    /// Latched count.
    pub latched_count: u16,
    /// Mode.
    pub mode: u8,
    /// Gate input.
    pub gate: bool,
    /// When the count was loaded, in guest ns.
    pub count_load_time: i64,
}

/// An i8254-style interval timer with three channels.
///
/// The demo machine's own device (`pit`), not QEMU's `vmstate_pit_common` layout: the
/// model of that is `compat_tests::qemu10::I8254`.
#[derive(VmState, Debug, Clone, Default, PartialEq)]
#[vmstate(name = "pit", version = 1)]
pub struct Pit {
    /// The channels.
    pub channels: [PitChannel; 3],
    /// Channel 0's timer.
    pub irq_timer: Timer,
}

impl Pit {
    /// The guest programs channel `ch`.
    pub fn program(&mut self, ch: usize, count: u32, now_ns: i64) {
        let c = &mut self.channels[ch % 3];
        c.count = count;
        c.mode = (count % 6) as u8;
        c.gate = count % 2 == 0;
        c.count_load_time = now_ns;
        self.irq_timer = Timer::armed_at(now_ns + count as i64);
    }
}

/// An i8259-style interrupt controller.
#[derive(VmState, Debug, Clone, Default, PartialEq)]
#[vmstate(name = "pic", version = 1)]
pub struct Pic {
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register.
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// Vector base.
    pub irq_base: u8,
    /// Edge/level control.
    pub elcr: u8,
    /// Runtime wiring, not migrated.
    #[vmstate(skip)]
    pub output_line: bool,
}

impl Pic {
    /// The guest raises irq `n`.
    pub fn raise(&mut self, n: u8) {
        self.irr |= 1 << (n % 8);
        self.isr ^= 1 << (n % 8);
    }
}
