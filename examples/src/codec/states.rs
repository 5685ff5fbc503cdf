//! The three representative device states, defined once and used by every codec.
//!
//! Each type derives all the codecs under test: `VmState` (this project), serde (for
//! postcard), bincode 2's own `Encode`/`Decode`, and versionize. The hand-written codec
//! is in [`super::hand`]. Byte arrays use `serde_bytes` on the serde side (one bulk
//! copy rather than one call per byte, the fastest way serde has).

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use versionize::{VersionMap, Versionize, VersionizeResult};
use versionize_derive::Versionize;
use vmstate::VmState;

/// The derives every benchmark state carries.
macro_rules! state {
    ($(#[$m:meta])* $vis:vis struct $name:ident $body:tt) => {
        #[derive(
            VmState, Serialize, Deserialize, Encode, Decode, Versionize,
            Debug, Clone, PartialEq,
        )]
        $(#[$m])*
        $vis struct $name $body
    };
}

state! {
    /// Small: a 16550 UART (QEMU's `serial`): ten u8 registers, the u16 divisor, a
    /// 16-byte receive FIFO with its count and two pending-interrupt flags (31 bytes).
    #[derive(Default)]
    #[vmstate(name = "serial", version = 3)]
    pub struct Uart16550 {
        /// Divisor latch.
        pub divider: u16,
        /// Receive buffer register.
        pub rbr: u8,
        /// Transmit holding register.
        pub thr: u8,
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
        /// Scratch register.
        pub scr: u8,
        /// FIFO control register.
        pub fcr: u8,
        /// Receive FIFO contents.
        #[serde(with = "serde_bytes")]
        pub fifo: [u8; 16],
        /// Bytes in the receive FIFO.
        pub fifo_count: u8,
        /// A THR-empty interrupt is pending.
        pub thr_ipending: bool,
        /// A character-timeout interrupt is pending.
        pub timeout_ipending: bool,
    }
}

state! {
    /// One i8254 channel (QEMU's `PITChannelState`, 32 bytes).
    #[derive(Copy, Default)]
    #[vmstate(name = "pit_channel", version = 2)]
    pub struct PitChannel {
        /// Reload value.
        pub count: u32,
        /// Latched counter value.
        pub latched_count: u16,
        /// Which half of the count is latched.
        pub count_latched: u8,
        /// The status byte is latched.
        pub status_latched: u8,
        /// Latched status byte.
        pub status: u8,
        /// Read sequence state.
        pub read_state: u8,
        /// Write sequence state.
        pub write_state: u8,
        /// First byte of a 16-bit write.
        pub write_latch: u8,
        /// Access mode.
        pub rw_mode: u8,
        /// Counter mode (0-5).
        pub mode: u8,
        /// BCD counting.
        pub bcd: u8,
        /// Gate input.
        pub gate: u8,
        /// When the count was loaded (ns).
        pub count_load_time: i64,
        /// When the output next changes (ns).
        pub next_transition_time: u64,
    }
}

state! {
    /// Medium: an i8254 PIT, three channels plus a 256-byte buffer (352 bytes).
    ///
    /// A benchmark shape, not QEMU's `vmstate_pit_common` layout: the model of that,
    /// used by the tests against real QEMU streams, is `compat_tests::qemu10::I8254`.
    #[vmstate(name = "i8254", version = 3)]
    pub struct Pit {
        /// The three counters.
        pub channels: [PitChannel; 3],
        /// Opaque device buffer (`VMSTATE_BUFFER`).
        #[vmstate(buffer)]
        #[serde(with = "serde_bytes")]
        pub buf: [u8; 256],
    }
}

state! {
    /// A segment register's cached descriptor (18 bytes).
    #[derive(Copy, Default)]
    #[vmstate(name = "segment", version = 1)]
    pub struct Segment {
        /// Selector.
        pub selector: u16,
        /// Base address.
        pub base: u64,
        /// Limit.
        pub limit: u32,
        /// Descriptor flags.
        pub flags: u32,
    }
}

state! {
    /// One model-specific register (12 bytes).
    #[derive(Copy, Default)]
    #[vmstate(name = "msr", version = 1)]
    pub struct Msr {
        /// MSR index.
        pub index: u32,
        /// MSR value.
        pub value: u64,
    }
}

/// How many MSRs the large state carries.
pub const N_MSRS: usize = 100;

state! {
    /// Large: an x86 vCPU: 16 GPRs, rip, rflags, six segments, control registers, a
    /// 4096-byte xsave area and 100 MSRs with their count (5492 bytes).
    #[vmstate(name = "cpu", version = 12)]
    pub struct X86Cpu {
        /// General-purpose registers.
        pub regs: [u64; 16],
        /// Instruction pointer.
        pub rip: u64,
        /// Flags.
        pub rflags: u64,
        /// ES, CS, SS, DS, FS, GS.
        pub segs: [Segment; 6],
        /// CR0, CR2, CR3, CR4, CR8.
        pub cr: [u64; 5],
        /// EFER.
        pub efer: u64,
        /// XSAVE area (`VMSTATE_BUFFER`).
        #[vmstate(buffer)]
        #[serde(with = "serde_bytes")]
        pub xsave: [u8; 4096],
        /// Number of MSRs that follow.
        pub nmsrs: u32,
        /// The MSRs.
        #[vmstate(len = nmsrs)]
        pub msrs: Vec<Msr>,
    }
}

/// A deterministic byte sequence (xorshift) to fill states with non-trivial values.
struct Fill(u64);

impl Fill {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn u8(&mut self) -> u8 {
        self.next() as u8
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.u8())
    }
}

impl Uart16550 {
    /// A UART mid-transfer, with every field set (seeded).
    pub fn sample(seed: u64) -> Self {
        let mut f = Fill(seed | 1);
        Uart16550 {
            divider: f.u16(),
            rbr: f.u8(),
            thr: f.u8(),
            ier: f.u8(),
            iir: f.u8(),
            lcr: f.u8(),
            mcr: f.u8(),
            lsr: f.u8(),
            msr: f.u8(),
            scr: f.u8(),
            fcr: f.u8(),
            fifo: f.bytes(),
            fifo_count: 9,
            thr_ipending: true,
            timeout_ipending: false,
        }
    }
}

impl PitChannel {
    fn sample(f: &mut Fill) -> Self {
        PitChannel {
            count: f.u32(),
            latched_count: f.u16(),
            count_latched: f.u8(),
            status_latched: f.u8(),
            status: f.u8(),
            read_state: f.u8(),
            write_state: f.u8(),
            write_latch: f.u8(),
            rw_mode: f.u8(),
            mode: f.u8() % 6,
            bcd: f.u8() & 1,
            gate: f.u8() & 1,
            count_load_time: f.next() as i64,
            next_transition_time: f.next(),
        }
    }
}

impl Pit {
    /// A running PIT, with every field set (seeded).
    pub fn sample(seed: u64) -> Self {
        let mut f = Fill(seed | 1);
        Pit {
            channels: std::array::from_fn(|_| PitChannel::sample(&mut f)),
            buf: f.bytes(),
        }
    }
}

impl Default for Pit {
    fn default() -> Self {
        Pit {
            channels: Default::default(),
            buf: [0; 256],
        }
    }
}

impl X86Cpu {
    /// A vCPU with every field set and [`N_MSRS`] MSRs (seeded).
    pub fn sample(seed: u64) -> Self {
        let mut f = Fill(seed | 1);
        let msrs: Vec<Msr> = (0..N_MSRS)
            .map(|_| Msr {
                index: f.u32(),
                value: f.next(),
            })
            .collect();
        X86Cpu {
            regs: std::array::from_fn(|_| f.next()),
            rip: f.next(),
            rflags: f.next(),
            segs: std::array::from_fn(|_| Segment {
                selector: f.u16(),
                base: f.next(),
                limit: f.u32(),
                flags: f.u32(),
            }),
            cr: std::array::from_fn(|_| f.next()),
            efer: f.next(),
            xsave: f.bytes(),
            nmsrs: msrs.len() as u32,
            msrs,
        }
    }
}

impl Default for X86Cpu {
    fn default() -> Self {
        X86Cpu {
            regs: [0; 16],
            rip: 0,
            rflags: 0,
            segs: Default::default(),
            cr: [0; 5],
            efer: 0,
            xsave: [0; 4096],
            nmsrs: 0,
            msrs: Vec::new(),
        }
    }
}
