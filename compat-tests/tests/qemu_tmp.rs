//! A real QEMU 10.0.2 section whose first field is a `VMSTATE_WITH_TMP`, modelled with
//! the derive: `virtio-mem-device-early` from `fixtures/qemu-10.0.2/q35-virtio-mem.mig`
//! (`-M q35 -m 128,maxmem=1G,slots=1 -object memory-backend-ram,id=mem0,size=128M
//! -device virtio-mem-pci,memdev=mem0`). Loaded through the temporary's checks, saved
//! again byte for byte, described exactly as QEMU's vmdesc, and refused with QEMU's
//! message when the destination's properties differ.

use std::sync::OnceLock;

use compat_tests::fixture::{Section, Stream};
use compat_tests::qemu10::{VirtioMemBitmap, VirtioMemEarly};
use vmstate::qjson::Style;
use vmstate::{Describer, ErrorKind, VmState, Writer};

const IDSTR: &str = "0000:00:01.0/virtio-mem-device-early";

fn stream() -> &'static Stream {
    static S: OnceLock<Stream> = OnceLock::new();
    S.get_or_init(|| Stream::load("q35-virtio-mem.mig"))
}

fn section() -> Section<'static> {
    stream()
        .full_section(IDSTR, 0)
        .expect("the stream has the virtio-mem-device-early section")
}

fn loaded() -> VirtioMemEarly {
    let s = section();
    let mut dev = VirtioMemEarly::q35_128m();
    dev.load_bytes(s.payload, s.version)
        .expect("QEMU's payload loads on a device with the same properties");
    dev
}

#[test]
fn qemus_section_is_the_temporary_then_size_and_bitmap() {
    let s = section();
    assert_eq!(s.version, 1);
    // addr 4 GiB, region 128 MiB, block 2 MiB, node 0; then size and bitmap, all 0.
    let mut expected = Vec::new();
    for word in [0x1_0000_0000u64, 128 << 20, 2 << 20] {
        expected.extend(word.to_be_bytes());
    }
    expected.extend([0; 4 + 8 + 8]);
    assert_eq!(s.payload, expected);
    let dev = loaded();
    assert_eq!((dev.size, dev.bitmap), (0, VirtioMemBitmap(0)));
}

#[test]
fn saves_qemus_bytes() {
    assert_eq!(loaded().to_bytes().unwrap(), section().payload);
}

#[test]
fn vmdesc_equals_qemus_text() {
    let mut dev = loaded();
    let mut d = Describer::new();
    dev.save_state(&mut Writer::new(), &mut d).unwrap();
    let ours = Style::QEMU.to_string_json(&d.finish());
    let expected = format!(
        "{{\"name\": \"{IDSTR}\", \"instance_id\": 0, {}",
        &ours[1..]
    );
    let text = std::str::from_utf8(stream().vmdesc_bytes().unwrap()).unwrap();
    assert!(
        text.contains(&expected),
        "our description is not in QEMU's vmdesc:\n{expected}"
    );
    assert!(ours.contains(r#"{"name": "tmp", "type": "tmp", "vmsd_name": "virtio-mem-device/sanity-checks", "version": 0, "fields": ["#));
}

#[test]
fn a_destination_with_another_block_size_refuses_the_stream_as_qemu_does() {
    let s = section();
    let mut dev = VirtioMemEarly {
        block_size: 4 << 20,
        ..VirtioMemEarly::q35_128m()
    };
    let err = dev.load_bytes(s.payload, s.version).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Hook {
                hook: "from_tmp",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.path(), "virtio-mem-device-early.tmp");
    // The temporary is 28 bytes; the check runs after it was read.
    assert_eq!(err.offset(), Some(28));
    assert!(
        err.to_string()
            .contains("Property 'block-size' changed from 0x200000 to 0x400000"),
        "{err}"
    );
}

#[test]
fn a_truncated_temporary_fails_naming_it() {
    let s = section();
    let err = VirtioMemEarly::q35_128m()
        .load_bytes(&s.payload[..20], s.version)
        .unwrap_err();
    // The path goes through the temporary to the field cut short.
    assert_eq!(err.path(), "virtio-mem-device-early.tmp.block_size");
}
