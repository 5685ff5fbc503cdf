//! What QEMU 10 loads without a word is an error here by default: a stream that ends
//! before every registered entry's section arrived, a section sent twice, and a
//! subsection version that does not fit the byte QEMU keeps of it.

use vmstate::stream::{LoadOptions, StreamConfig, load_stream, save_snapshot};
use vmstate::{ErrorKind, Reader, Registration, Registry, VmState};

#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "rtc")]
struct Rtc {
    seconds: u32,
}

#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "pit")]
struct Pit {
    count: u16,
}

/// Sent only when enabled, like QEMU's devices with a top-level `needed`.
#[derive(VmState, Default, Debug, PartialEq)]
#[vmstate(name = "hpet", needed = Self::enabled)]
struct Hpet {
    config: u64,
}

impl Hpet {
    fn enabled(&self) -> bool {
        self.config != 0
    }
}

fn stream_with_rtc() -> Vec<u8> {
    let mut reg = Registry::new();
    reg.register_device(Rtc { seconds: 7 }, Registration::new())
        .unwrap();
    let mut bytes = Vec::new();
    save_snapshot(&mut reg, &mut bytes, StreamConfig::new("pc")).unwrap();
    bytes
}

fn load(reg: &mut Registry, bytes: &[u8], opts: &LoadOptions) -> vmstate::Result<Vec<String>> {
    load_stream(reg, &mut Reader::from_slice(bytes), opts).map(|report| report.missing)
}

#[test]
fn a_registered_device_missing_from_the_stream_is_an_error_naming_it() {
    let mut reg = Registry::new();
    reg.register_device(Rtc::default(), Registration::new())
        .unwrap();
    reg.register_device(Pit::default(), Registration::new())
        .unwrap();
    let err = load(&mut reg, &stream_with_rtc(), &LoadOptions::default()).unwrap_err();
    match err.kind() {
        ErrorKind::SectionsMissing { missing } => assert_eq!(missing, &["pit (instance 0)"]),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("EOF"), "{err}");
}

#[test]
fn accept_partial_loads_and_reports_what_was_missing() {
    let mut reg = Registry::new();
    let rtc = reg
        .register_device(Rtc::default(), Registration::new())
        .unwrap();
    reg.register_device(Pit { count: 3 }, Registration::new())
        .unwrap();
    let opts = LoadOptions {
        accept_partial: true,
        ..LoadOptions::default()
    };
    let missing = load(&mut reg, &stream_with_rtc(), &opts).unwrap();
    assert_eq!(missing, ["pit (instance 0)"]);
    assert_eq!(reg.device_mut::<Rtc>(rtc).unwrap().seconds, 7);
}

#[test]
fn a_device_that_may_not_be_needed_is_not_missing() {
    let mut reg = Registry::new();
    reg.register_device(Rtc::default(), Registration::new())
        .unwrap();
    reg.register_device(Hpet::default(), Registration::new())
        .unwrap();
    assert_eq!(
        load(&mut reg, &stream_with_rtc(), &LoadOptions::default()).unwrap(),
        Vec::<String>::new()
    );
}

/// The byte range of the FULL section of `idstr` (header to footer) in `bytes`, for a
/// section whose payload is `payload_len` bytes.
fn full_section_range(bytes: &[u8], idstr: &str, payload_len: usize) -> std::ops::Range<usize> {
    let name_at = bytes
        .windows(idstr.len())
        .position(|w| w == idstr.as_bytes())
        .expect("idstr in the stream");
    // type byte, be32 section id, length byte, then the name.
    let start = name_at - 6;
    assert_eq!(bytes[start], 0x04, "a FULL section");
    let end = name_at + idstr.len() + 8 + payload_len + 5;
    start..end
}

#[test]
fn a_section_sent_twice_is_an_error() {
    let bytes = stream_with_rtc();
    let range = full_section_range(&bytes, "rtc", 4);
    let twice = [
        &bytes[..range.end],
        &bytes[range.clone()],
        &bytes[range.end..],
    ]
    .concat();
    let mut reg = Registry::new();
    reg.register_device(Rtc::default(), Registration::new())
        .unwrap();
    let err = load(&mut reg, &twice, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::SectionSentTwice { idstr, .. } if idstr == "rtc"),
        "{err}"
    );
    assert_eq!(err.offset(), Some(range.end as u64));
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    a: u8,
    #[vmstate(subsection, needed = Self::always)]
    sub: DevSub,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev/sub", version = 1)]
struct DevSub {
    b: u8,
}

impl Dev {
    fn always(&self) -> bool {
        true
    }
}

#[test]
fn a_subsection_version_past_a_byte_is_an_error() {
    let mut bytes = Dev::default().to_bytes().unwrap();
    // a, 0x05, len, "dev/sub", be32 version, b
    let version_at = 1 + 1 + 1 + "dev/sub".len();
    assert_eq!(bytes[version_at..version_at + 4], [0, 0, 0, 1]);
    bytes[version_at + 2] = 1; // 257: QEMU would read 1
    let err = Dev::default().load_bytes(&bytes, 1).unwrap_err();
    assert!(err.to_string().contains("257"), "{err}");
    assert_eq!(err.offset(), Some(version_at as u64));
}

/// An iterative handler that sends nothing when inactive (QEMU's `is_active`).
struct Dormant;

impl vmstate::IterativeHandler for Dormant {
    fn is_active(&self) -> bool {
        false
    }
    fn save_setup(&mut self, _: &mut vmstate::Writer<'_>) -> vmstate::Result<()> {
        Ok(())
    }
    fn pending(&mut self, _: bool) -> vmstate::Pending {
        vmstate::Pending::default()
    }
    fn save_iterate(
        &mut self,
        _: &mut vmstate::Writer<'_>,
        _: u64,
    ) -> vmstate::Result<vmstate::IterationStatus> {
        Ok(vmstate::IterationStatus::Done)
    }
    fn save_complete(&mut self, _: &mut vmstate::Writer<'_>) -> vmstate::Result<()> {
        Ok(())
    }
    fn load(&mut self, _: &mut Reader<'_>, _: u32, _: vmstate::Phase) -> vmstate::Result<()> {
        Ok(())
    }
}

#[test]
fn an_inactive_iterative_handler_is_not_missing() {
    let mut reg = Registry::new();
    reg.register_device(Rtc::default(), Registration::new())
        .unwrap();
    reg.register_iterative("dormant", 1, Dormant, Registration::new())
        .unwrap();
    assert_eq!(
        load(&mut reg, &stream_with_rtc(), &LoadOptions::default()).unwrap(),
        Vec::<String>::new()
    );
}
