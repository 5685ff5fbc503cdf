//! The RAM handler's section payload, in every phase.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::{IterativeHandler, Phase, Reader};

fuzz_target!(|data: &[u8]| {
    let blocks = vec![
        Arc::new(RamBlock::new("pc.ram", 16 * 4096).unwrap()),
        Arc::new(RamBlock::new("vga.vram", 3 * 4096).unwrap()),
    ];
    let mut ram = RamHandler::new(blocks).unwrap();
    ram.load_setup().unwrap();
    let mut r = Reader::from_slice(data);
    // Payloads follow each other as sections do; CONTINUE spans them.
    for phase in [Phase::Start, Phase::Part, Phase::End] {
        if ram.load(&mut r, RAM_VERSION, phase).is_err() {
            break;
        }
    }
    ram.load_cleanup();
});
