//! A derived device's load alone, at any version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstate::VmState;

fuzz_target!(|data: &[u8]| {
    let Some((&version, payload)) = data.split_first() else {
        return;
    };
    let mut dev = vmstate_fuzz::Dev::new();
    let _ = dev.load_bytes(payload, u32::from(version % 5));
});
