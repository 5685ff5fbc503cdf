//! The example machine's snapshots in QEMU's mapped-ram layout, loaded fully and
//! lazily: the state equals the machine's after the same deterministic run.

use vmstate::stream::{LoadOptions, StreamConfig, load_file, save_mapped_ram_snapshot};
use vmstate_examples::machine::{MACHINE_TYPE, Machine, RamSetup};

const RAM: u64 = 16 << 20;

fn expected() -> Machine {
    let m = Machine::new(RAM).unwrap();
    m.run_deterministic(20_000, RAM / 4);
    m
}

fn load(path: &std::path::Path, lazy: bool) -> Machine {
    let m = Machine::new(RAM).unwrap();
    let (mut reg, _) = m
        .registry_with(RamSetup {
            mapped_ram: true,
            lazy,
            ..Default::default()
        })
        .unwrap();
    let opts = LoadOptions {
        machine: Some(MACHINE_TYPE.into()),
        capabilities: vec!["mapped-ram".into()],
        ..Default::default()
    };
    load_file(&mut reg, path, opts, false).unwrap();
    m
}

#[test]
fn mapped_ram_snapshots_load_fully_and_lazily_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.mig");
    let src = expected();
    let (mut reg, _) = src
        .registry_with(RamSetup {
            mapped_ram: true,
            ..Default::default()
        })
        .unwrap();
    save_mapped_ram_snapshot(&mut reg, &path, StreamConfig::new(MACHINE_TYPE)).unwrap();
    let want = expected().digest().unwrap();

    let full = load(&path, false);
    let got = full.digest().unwrap();
    assert_eq!(got.differing_pages(&want), 0);
    assert!(got.differing_devices(&want).is_empty());

    let lazy = load(&path, true);
    assert_eq!(
        lazy.state.ram.missing_pages(),
        (RAM / 4096),
        "nothing read yet"
    );
    let got = lazy.digest().unwrap(); // touches every page
    assert_eq!(got.differing_pages(&want), 0);
    assert!(got.differing_devices(&want).is_empty());
    assert_eq!(lazy.state.ram.missing_pages(), 0);
}
