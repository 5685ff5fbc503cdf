//! A small emulated machine for the examples: one RAM block, a UART, a PIT and a PIC,
//! and a guest workload of vCPU threads.
//!
//! [`Machine::registry`] registers everything for a save or load: RAM as the `ram`
//! iterative handler, the devices as FULL sections. [`Machine::digest`] fingerprints the
//! whole state (a checksum per RAM page, the devices' saved bytes) so that two machines
//! can be compared after a migration.

mod devices;
mod guest;
pub mod live;

use std::sync::{Arc, Mutex};

use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler, RamStats};
use vmstate::{Registration, Registry, VmState};

pub use devices::{Pic, Pit, PitChannel, Serial, SerialStats};
pub use guest::{GuestState, Vcpus, Workload};

/// The machine type name written in the stream's configuration section.
pub const MACHINE_TYPE: &str = "vmstate-demo-1.0";

/// The machine's state.
pub struct Machine {
    /// Guest RAM and devices.
    pub state: GuestState,
}

/// A fingerprint of a machine's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// One checksum per RAM page.
    pub pages: Vec<u64>,
    /// Each device's saved bytes.
    pub devices: Vec<(String, Vec<u8>)>,
}

impl Digest {
    /// Pages whose checksums differ (all of them if the sizes differ).
    pub fn differing_pages(&self, other: &Digest) -> usize {
        if self.pages.len() != other.pages.len() {
            return self.pages.len().max(other.pages.len());
        }
        self.pages
            .iter()
            .zip(&other.pages)
            .filter(|(a, b)| a != b)
            .count()
    }

    /// Names of devices whose state differs.
    pub fn differing_devices(&self, other: &Digest) -> Vec<String> {
        self.devices
            .iter()
            .zip(&other.devices)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.clone())
            .collect()
    }

    /// The digest as bytes: page count, page checksums, then each device.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = (self.pages.len() as u64).to_be_bytes().to_vec();
        for p in &self.pages {
            out.extend(p.to_be_bytes());
        }
        for (name, bytes) in &self.devices {
            out.push(name.len() as u8);
            out.extend(name.as_bytes());
            out.extend((bytes.len() as u32).to_be_bytes());
            out.extend(bytes);
        }
        out
    }

    /// Parses [`Digest::to_bytes`]; `None` if malformed.
    pub fn from_bytes(b: &[u8]) -> Option<Digest> {
        let n = u64::from_be_bytes(b.get(..8)?.try_into().ok()?) as usize;
        let mut at = 8;
        let mut pages = Vec::with_capacity(n.min(b.len() / 8));
        for _ in 0..n {
            pages.push(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?));
            at += 8;
        }
        let mut devices = Vec::new();
        while at < b.len() {
            let len = *b.get(at)? as usize;
            let name = String::from_utf8(b.get(at + 1..at + 1 + len)?.to_vec()).ok()?;
            at += 1 + len;
            let blen = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
            devices.push((name, b.get(at + 4..at + 4 + blen)?.to_vec()));
            at += 4 + blen;
        }
        Some(Digest { pages, devices })
    }
}

/// How the RAM handler sends and loads: XBZRLE, multifd channels.
#[derive(Default)]
pub struct RamSetup {
    /// Send with XBZRLE and a cache of this many bytes.
    pub xbzrle_cache: Option<u64>,
    /// Send the pages on multifd channels, each opened (after the main connection)
    /// by one of these in the channel's thread.
    pub multifd_channels: Vec<vmstate::multifd::send::ChannelOpener>,
    /// How those channels compress pages.
    pub multifd_compression: vmstate::multifd::compress::Compression,
    /// Load: wait at each multifd flush record with this (the channels' receiver's).
    pub multifd_flush: Option<vmstate::multifd::recv::FlushHook>,
    /// Save and load in QEMU's mapped-ram file layout.
    pub mapped_ram: bool,
    /// Load mapped-ram files lazily: pages fetched from the file on first touch.
    pub lazy: bool,
    /// Source: send requested pages on a postcopy-preempt channel opened with this.
    pub postcopy_preempt: Option<vmstate::ram::preempt::PreemptOpener>,
    /// Destination: take requested pages from a postcopy-preempt channel too.
    pub postcopy_preempt_incoming: Option<vmstate::ram::preempt::PreemptAcceptor>,
}

impl Machine {
    /// A machine with `ram_bytes` of zeroed RAM and devices in their reset state.
    pub fn new(ram_bytes: u64) -> vmstate::Result<Self> {
        Ok(Machine {
            state: GuestState {
                ram: Arc::new(RamBlock::new("pc.ram", ram_bytes)?),
                serial: Arc::new(Mutex::new(Serial::default())),
                pit: Arc::new(Mutex::new(Pit::default())),
                pic: Arc::new(Mutex::new(Pic::default())),
            },
        })
    }

    /// A registry holding the machine's RAM and devices, and the RAM counters.
    pub fn registry(&self) -> vmstate::Result<(Registry, Arc<RamStats>)> {
        self.registry_with(RamSetup::default())
    }

    /// [`registry`](Self::registry) with its RAM handler set up as `setup` says.
    pub fn registry_with(&self, setup: RamSetup) -> vmstate::Result<(Registry, Arc<RamStats>)> {
        let mut reg = Registry::new();
        let mut ram = RamHandler::new(vec![self.state.ram.clone()])?;
        if let Some(bytes) = setup.xbzrle_cache {
            ram = ram.with_xbzrle(bytes);
        }
        if !setup.multifd_channels.is_empty() {
            ram = ram.with_multifd_connecting(setup.multifd_channels, setup.multifd_compression)?;
        }
        if let Some(hook) = setup.multifd_flush {
            ram = ram.with_multifd_flush(hook);
        }
        if let Some(open) = setup.postcopy_preempt {
            ram = ram.with_postcopy_preempt(open);
        }
        if let Some(accept) = setup.postcopy_preempt_incoming {
            ram = ram.with_postcopy_preempt_incoming(accept);
        }
        if setup.lazy {
            ram = ram.with_lazy_restore();
        } else if setup.mapped_ram {
            ram = ram.with_mapped_ram();
        }
        let stats = ram.stats();
        reg.register_iterative("ram", RAM_VERSION, ram, Registration::new())?;
        reg.register_device(self.state.pit.clone(), Registration::new())?;
        reg.register_device(self.state.pic.clone(), Registration::new())?;
        reg.register_device(
            self.state.serial.clone(),
            Registration::new().path("0000:00:1f.0"),
        )?;
        Ok((reg, stats))
    }

    /// The state's fingerprint.
    pub fn digest(&self) -> vmstate::Result<Digest> {
        let ram = &self.state.ram;
        let pages = (0..ram.pages()).map(|p| ram.page_checksum(p)).collect();
        let devices = vec![
            (
                "pit".to_string(),
                self.state.pit.lock().unwrap().to_bytes()?,
            ),
            (
                "pic".to_string(),
                self.state.pic.lock().unwrap().to_bytes()?,
            ),
            (
                "serial".to_string(),
                self.state.serial.lock().unwrap().to_bytes()?,
            ),
        ];
        Ok(Digest { pages, devices })
    }

    /// Runs the guest workload single-threaded and deterministically for `steps`
    /// page writes (for snapshots that must be reproducible).
    pub fn run_deterministic(&self, steps: u64, working_set: u64) {
        let page = self.state.ram.page_size() as u64;
        let pages = (working_set / page).clamp(1, self.state.ram.pages() as u64);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = x % pages;
            self.state
                .ram
                .write_u64(p * page + (x >> 40) % (page / 8) * 8, x);
            if i % 1000 == 0 {
                self.state.serial.lock().unwrap().transmit(x as u8);
                self.state
                    .pit
                    .lock()
                    .unwrap()
                    .program(i as usize, x as u32, i as i64);
                self.state.pic.lock().unwrap().raise(x as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_survives_its_byte_form() {
        let m = Machine::new(64 * 4096).unwrap();
        m.run_deterministic(5000, 32 * 4096);
        let d = m.digest().unwrap();
        assert_eq!(Digest::from_bytes(&d.to_bytes()), Some(d));
    }

    #[test]
    fn deterministic_runs_give_equal_digests_and_differ_from_reset() {
        let a = Machine::new(64 * 4096).unwrap();
        let b = Machine::new(64 * 4096).unwrap();
        a.run_deterministic(5000, 32 * 4096);
        b.run_deterministic(5000, 32 * 4096);
        let (da, db) = (a.digest().unwrap(), b.digest().unwrap());
        assert_eq!(da, db);
        let fresh = Machine::new(64 * 4096).unwrap().digest().unwrap();
        assert!(da.differing_pages(&fresh) > 0);
        assert_eq!(da.differing_devices(&fresh).len(), 3);
    }
}
