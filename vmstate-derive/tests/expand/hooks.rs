//! Hooks and predicates: every container hook, a container `needed`, a field behind an
//! `exists` predicate, unused bytes behind one, and a subsection's `needed`.

use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(
    name = "pit",
    version = 3,
    min_version = 2,
    pre_save = Self::sync,
    post_save = Self::done,
    pre_load = Self::reset,
    post_load = Self::restart,
    needed = Self::enabled
)]
struct Pit {
    channels: [u16; 3],
    #[vmstate(exists = Self::has_speaker)]
    speaker: u8,
    #[vmstate(unused = 2, exists = Self::has_speaker)]
    _speaker_pad: (),
    #[vmstate(subsection, needed = Self::has_hpet)]
    hpet: PitHpet,
}

#[derive(VmState, Default)]
#[vmstate(name = "pit/hpet")]
struct PitHpet {
    legacy: bool,
}

impl Pit {
    fn sync(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn done(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
    fn reset(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn restart(&mut self, _version: u32) -> Result<(), String> {
        Ok(())
    }
    fn enabled(&self) -> bool {
        true
    }
    fn has_speaker(&self, version: u32) -> bool {
        version >= 3
    }
    fn has_hpet(&self) -> bool {
        self.hpet.legacy
    }
}

fn main() {
    let mut pit = Pit::default();
    let bytes = pit.to_bytes().unwrap();
    let mut back = Pit::default();
    back.load_bytes(&bytes, 3).unwrap();
}
