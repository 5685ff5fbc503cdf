//! The registry loader: any bytes into a machine with RAM and devices (its RAM in
//! QEMU's mapped-ram layout when the first byte has bit 2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstate::Reader;
use vmstate::stream::{LoadOptions, load_stream};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the options a destination may have.
    let Some((&flags, stream)) = data.split_first() else {
        return;
    };
    let mapped_ram = flags & 4 != 0;
    let opts = LoadOptions {
        no_configuration: flags & 1 != 0,
        no_section_footers: flags & 2 != 0,
        capabilities: match mapped_ram {
            true => vec!["mapped-ram".into()],
            false => vec![],
        },
        ..Default::default()
    };
    let mut reg = vmstate_fuzz::machine_with(mapped_ram);
    let _ = load_stream(&mut reg, &mut Reader::from_slice(stream), &opts);
});
