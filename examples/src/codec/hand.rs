//! The floor: hand-written `byteorder` code that writes exactly the bytes the derive
//! writes (QEMU's big-endian layout, fields in order, no framing), the way a person
//! would write it for one device: `WriteBytesExt` on a `Vec<u8>`, `ReadBytesExt` on a
//! `&[u8]`, bulk copies for byte arrays.

use std::io::{self, Read, Write};

use byteorder::{BigEndian as BE, ReadBytesExt, WriteBytesExt};

use super::states::{Msr, Pit, PitChannel, Segment, Uart16550, X86Cpu};

/// A state with a hand-written encoder and decoder.
pub trait HandCodec {
    /// Appends the state to `out`.
    fn encode(&self, out: &mut Vec<u8>) -> io::Result<()>;
    /// Reads the state from the front of `input` into `self`, advancing `input`.
    fn decode(&mut self, input: &mut &[u8]) -> io::Result<()>;
}

impl HandCodec for Uart16550 {
    fn encode(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.write_u16::<BE>(self.divider)?;
        out.write_u8(self.rbr)?;
        out.write_u8(self.thr)?;
        out.write_u8(self.ier)?;
        out.write_u8(self.iir)?;
        out.write_u8(self.lcr)?;
        out.write_u8(self.mcr)?;
        out.write_u8(self.lsr)?;
        out.write_u8(self.msr)?;
        out.write_u8(self.scr)?;
        out.write_u8(self.fcr)?;
        out.write_all(&self.fifo)?;
        out.write_u8(self.fifo_count)?;
        out.write_u8(self.thr_ipending as u8)?;
        out.write_u8(self.timeout_ipending as u8)
    }

    fn decode(&mut self, r: &mut &[u8]) -> io::Result<()> {
        self.divider = r.read_u16::<BE>()?;
        self.rbr = r.read_u8()?;
        self.thr = r.read_u8()?;
        self.ier = r.read_u8()?;
        self.iir = r.read_u8()?;
        self.lcr = r.read_u8()?;
        self.mcr = r.read_u8()?;
        self.lsr = r.read_u8()?;
        self.msr = r.read_u8()?;
        self.scr = r.read_u8()?;
        self.fcr = r.read_u8()?;
        r.read_exact(&mut self.fifo)?;
        self.fifo_count = r.read_u8()?;
        self.thr_ipending = r.read_u8()? != 0;
        self.timeout_ipending = r.read_u8()? != 0;
        Ok(())
    }
}

impl HandCodec for PitChannel {
    fn encode(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.write_u32::<BE>(self.count)?;
        out.write_u16::<BE>(self.latched_count)?;
        out.write_u8(self.count_latched)?;
        out.write_u8(self.status_latched)?;
        out.write_u8(self.status)?;
        out.write_u8(self.read_state)?;
        out.write_u8(self.write_state)?;
        out.write_u8(self.write_latch)?;
        out.write_u8(self.rw_mode)?;
        out.write_u8(self.mode)?;
        out.write_u8(self.bcd)?;
        out.write_u8(self.gate)?;
        out.write_i64::<BE>(self.count_load_time)?;
        out.write_u64::<BE>(self.next_transition_time)
    }

    fn decode(&mut self, r: &mut &[u8]) -> io::Result<()> {
        self.count = r.read_u32::<BE>()?;
        self.latched_count = r.read_u16::<BE>()?;
        self.count_latched = r.read_u8()?;
        self.status_latched = r.read_u8()?;
        self.status = r.read_u8()?;
        self.read_state = r.read_u8()?;
        self.write_state = r.read_u8()?;
        self.write_latch = r.read_u8()?;
        self.rw_mode = r.read_u8()?;
        self.mode = r.read_u8()?;
        self.bcd = r.read_u8()?;
        self.gate = r.read_u8()?;
        self.count_load_time = r.read_i64::<BE>()?;
        self.next_transition_time = r.read_u64::<BE>()?;
        Ok(())
    }
}

impl HandCodec for Pit {
    fn encode(&self, out: &mut Vec<u8>) -> io::Result<()> {
        for c in &self.channels {
            c.encode(out)?;
        }
        out.write_all(&self.buf)
    }

    fn decode(&mut self, r: &mut &[u8]) -> io::Result<()> {
        for c in &mut self.channels {
            c.decode(r)?;
        }
        r.read_exact(&mut self.buf)
    }
}

impl HandCodec for Segment {
    fn encode(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.write_u16::<BE>(self.selector)?;
        out.write_u64::<BE>(self.base)?;
        out.write_u32::<BE>(self.limit)?;
        out.write_u32::<BE>(self.flags)
    }

    fn decode(&mut self, r: &mut &[u8]) -> io::Result<()> {
        self.selector = r.read_u16::<BE>()?;
        self.base = r.read_u64::<BE>()?;
        self.limit = r.read_u32::<BE>()?;
        self.flags = r.read_u32::<BE>()?;
        Ok(())
    }
}

impl HandCodec for Msr {
    fn encode(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.write_u32::<BE>(self.index)?;
        out.write_u64::<BE>(self.value)
    }

    fn decode(&mut self, r: &mut &[u8]) -> io::Result<()> {
        self.index = r.read_u32::<BE>()?;
        self.value = r.read_u64::<BE>()?;
        Ok(())
    }
}

/// The most MSRs a stream may ask the decoder to allocate.
const MAX_MSRS: usize = 1 << 16;

impl HandCodec for X86Cpu {
    fn encode(&self, out: &mut Vec<u8>) -> io::Result<()> {
        if self.nmsrs as usize != self.msrs.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "nmsrs does not match the MSR list",
            ));
        }
        for reg in &self.regs {
            out.write_u64::<BE>(*reg)?;
        }
        out.write_u64::<BE>(self.rip)?;
        out.write_u64::<BE>(self.rflags)?;
        for s in &self.segs {
            s.encode(out)?;
        }
        for cr in &self.cr {
            out.write_u64::<BE>(*cr)?;
        }
        out.write_u64::<BE>(self.efer)?;
        out.write_all(&self.xsave)?;
        out.write_u32::<BE>(self.nmsrs)?;
        for m in &self.msrs {
            m.encode(out)?;
        }
        Ok(())
    }

    fn decode(&mut self, r: &mut &[u8]) -> io::Result<()> {
        r.read_u64_into::<BE>(&mut self.regs)?;
        self.rip = r.read_u64::<BE>()?;
        self.rflags = r.read_u64::<BE>()?;
        for s in &mut self.segs {
            s.decode(r)?;
        }
        r.read_u64_into::<BE>(&mut self.cr)?;
        self.efer = r.read_u64::<BE>()?;
        r.read_exact(&mut self.xsave)?;
        self.nmsrs = r.read_u32::<BE>()?;
        let n = self.nmsrs as usize;
        if n > MAX_MSRS {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many MSRs"));
        }
        self.msrs.resize(n, Msr::default());
        for m in &mut self.msrs {
            m.decode(r)?;
        }
        Ok(())
    }
}
