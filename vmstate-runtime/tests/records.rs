//! The record readers on hand-built bytes (spec 1.2–1.12 and 5.1), independent of the
//! writers: every record kind read as its typed value, and every grammar rule the
//! readers enforce failing with the record, section and offset.

use vmstate::ErrorKind;
use vmstate::Reader;
use vmstate::ram::records::{BlockEntry, BlockRef, RamRecord, RamRecordReader};
use vmstate::stream::records::{Footers, Record, RecordReader, SectionKind, Trailer};

const HEADER: [u8; 8] = [b'Q', b'E', b'V', b'M', 0, 0, 0, 3];

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// `type, id, len, idstr, instance, version` of a START or FULL section.
fn full(ty: u8, id: u32, idstr: &str, instance: u32, version: u32) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend(be32(id));
    v.push(idstr.len() as u8);
    v.extend(idstr.as_bytes());
    v.extend(be32(instance));
    v.extend(be32(version));
    v
}

fn footer(id: u32) -> Vec<u8> {
    let mut v = vec![0x7e];
    v.extend(be32(id));
    v
}

fn stream(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = HEADER.to_vec();
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

#[test]
fn every_record_kind_reads_as_its_typed_value() {
    let mut cmd = vec![0x08, 0, 11, 0, 0]; // SWITCHOVER_START, no payload
    cmd.extend([0x08, 0, 2, 0, 4, 0, 0, 0, 9]); // PING 9
    let bytes = stream(&[
        &[0x07, 0xaa], // configuration, then a one-byte payload for the test
        &full(0x01, 2, "ram", 0, 4),
        &[0xbb],
        &footer(2),
        &[0x02, 0, 0, 0, 2, 0xcc],
        &footer(2),
        &cmd,
        &[0x03, 0, 0, 0, 2],
        &footer(2),
        &full(0x04, 5, "timer", 0, 2),
        &footer(5),
        &[0x00],
    ]);
    let mut r = Reader::from_slice(&bytes);
    let mut rr = RecordReader::new(Footers::Expected);
    let mut seen = Vec::new();
    loop {
        let rec = rr.next(&mut r).unwrap();
        match &rec {
            Record::Configuration => assert_eq!(r.get_u8().unwrap(), 0xaa),
            Record::Section(h) if h.kind == SectionKind::Start => {
                assert_eq!(r.get_u8().unwrap(), 0xbb)
            }
            Record::Section(h) if h.kind == SectionKind::Part => {
                // PART carries the START's identity.
                assert_eq!((h.idstr.as_str(), h.instance_id, h.version), ("ram", 0, 4));
                assert_eq!(r.get_u8().unwrap(), 0xcc)
            }
            _ => {}
        }
        let done = rec == Record::Eof;
        seen.push(rec);
        if done {
            break;
        }
    }
    let kinds: Vec<String> = seen
        .iter()
        .map(|r| match r {
            Record::Configuration => "config".to_string(),
            Record::Section(h) => format!("{} {}", h.kind.name(), h.section_id),
            Record::Footer { section_id } => format!("footer {section_id}"),
            Record::Command(c) => format!("{} {:?}", c.name, c.data),
            Record::Eof => "eof".to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "config",
            "START 2",
            "footer 2",
            "PART 2",
            "footer 2",
            "SWITCHOVER_START []",
            "PING [0, 0, 0, 9]",
            "END 2",
            "footer 2",
            "FULL 5",
            "footer 5",
            "eof"
        ]
    );
    assert_eq!(rr.trailer(&mut r).unwrap(), Trailer::None);
}

#[test]
fn a_packaged_command_carries_its_package() {
    let bytes = stream(&[&[0x08, 0, 7, 0, 4, 0, 0, 0, 3, 1, 2, 3, 0x00]]);
    let mut r = Reader::from_slice(&bytes);
    let mut rr = RecordReader::new(Footers::Expected).without_configuration();
    let Record::Command(c) = rr.next(&mut r).unwrap() else {
        panic!("not a command")
    };
    assert_eq!((c.name, c.package), ("PACKAGED", Some(vec![1, 2, 3])));
    assert_eq!(rr.next(&mut r).unwrap(), Record::Eof);
}

#[test]
fn the_trailer_after_eof_is_read() {
    let json = br#"{"devices": []}"#;
    let mut t = vec![0x06];
    t.extend(be32(json.len() as u32));
    t.extend(json);
    let bytes = stream(&[&[0x00], &t]);
    let mut r = Reader::from_slice(&bytes);
    let mut rr = RecordReader::new(Footers::Expected).without_configuration();
    assert_eq!(rr.next(&mut r).unwrap(), Record::Eof);
    assert_eq!(
        rr.trailer(&mut r).unwrap(),
        Trailer::Vmdesc {
            offset: 9,
            json: json.to_vec()
        }
    );
}

/// The first error of reading `bytes` to EOF, with footers `f`, no configuration.
fn first_error(bytes: &[u8], f: Footers) -> vmstate::Error {
    let mut r = Reader::from_slice(bytes);
    let mut rr = RecordReader::new(f).without_configuration();
    loop {
        match rr.next(&mut r) {
            Err(e) => return e,
            Ok(Record::Eof) => panic!("no error"),
            Ok(_) => {}
        }
    }
}

#[test]
fn a_wrong_or_missing_footer_names_the_section_and_offset() {
    let mismatched = stream(&[&full(0x04, 5, "timer", 1, 2), &footer(6), &[0]]);
    let e = first_error(&mismatched, Footers::Expected);
    assert!(matches!(
        e.kind(),
        ErrorKind::FooterMismatch {
            expected: 5,
            found: 6
        }
    ));
    let s = e.section().unwrap();
    assert_eq!(
        (s.idstr.as_str(), s.instance_id, s.section_id),
        ("timer", 1, 5)
    );
    assert_eq!((e.record(), e.section_version()), (Some("FULL"), Some(2)));
    assert_eq!(e.offset(), Some(8 + 19));
    assert!(
        e.to_string()
            .starts_with("FULL section 5 'timer' instance 1 (version 2): "),
        "{e}"
    );

    let missing = stream(&[&full(0x04, 5, "timer", 1, 2), &[0]]);
    let e = first_error(&missing, Footers::Expected);
    assert!(matches!(e.kind(), ErrorKind::MissingFooter { found: 0 }));
    // Without footers the same bytes are a well-formed stream.
    let mut r = Reader::from_slice(&missing);
    let mut rr = RecordReader::new(Footers::Absent).without_configuration();
    assert!(matches!(rr.next(&mut r).unwrap(), Record::Section(_)));
    assert_eq!(rr.next(&mut r).unwrap(), Record::Eof);
}

#[test]
fn detected_footers_follow_the_first_section_for_the_whole_stream() {
    let with = stream(&[
        &full(0x04, 1, "a", 0, 1),
        &footer(1),
        &full(0x04, 2, "b", 0, 1),
        &footer(2),
        &[0],
    ]);
    let mut r = Reader::from_slice(&with);
    let mut rr = RecordReader::new(Footers::Detect).without_configuration();
    assert!(matches!(rr.next(&mut r).unwrap(), Record::Section(_)));
    assert_eq!(rr.next(&mut r).unwrap(), Record::Footer { section_id: 1 });
    assert!(matches!(rr.next(&mut r).unwrap(), Record::Section(_)));
    assert_eq!(rr.next(&mut r).unwrap(), Record::Footer { section_id: 2 });
    assert_eq!(rr.next(&mut r).unwrap(), Record::Eof);
    // Without footers throughout: fine too.
    let without = stream(&[&full(0x04, 1, "a", 0, 1), &full(0x04, 2, "b", 0, 1), &[0]]);
    let mut r = Reader::from_slice(&without);
    let mut rr = RecordReader::new(Footers::Detect).without_configuration();
    assert!(matches!(rr.next(&mut r).unwrap(), Record::Section(_)));
    assert!(matches!(rr.next(&mut r).unwrap(), Record::Section(_)));
    assert_eq!(rr.next(&mut r).unwrap(), Record::Eof);
    // A section without a footer in a stream whose first section had one is an error
    // naming that section.
    let mixed = stream(&[
        &full(0x04, 1, "a", 0, 1),
        &footer(1),
        &full(0x04, 2, "b", 0, 1),
        &[0],
    ]);
    let e = first_error(&mixed, Footers::Detect);
    assert!(
        matches!(e.kind(), ErrorKind::MissingFooter { found: 0 }),
        "{e}"
    );
    assert_eq!(e.section().unwrap().idstr, "b");
    // A footer that follows no section payload is an error.
    let stray = stream(&[&footer(1), &[0]]);
    let e = first_error(&stray, Footers::Detect);
    assert_eq!(e.record(), Some("footer"));
}

#[test]
fn part_without_start_and_unknown_bytes_are_errors() {
    let e = first_error(&stream(&[&[0x02, 0, 0, 0, 7]]), Footers::Expected);
    assert!(matches!(
        e.kind(),
        ErrorKind::UnknownSectionId { section_id: 7 }
    ));
    assert_eq!(e.record(), Some("PART"));
    // A FULL section does not introduce an id for PART sections.
    let e = first_error(
        &stream(&[&full(0x04, 7, "d", 0, 1), &footer(7), &[0x03, 0, 0, 0, 7]]),
        Footers::Expected,
    );
    assert!(matches!(
        e.kind(),
        ErrorKind::UnknownSectionId { section_id: 7 }
    ));
    let e = first_error(&stream(&[&[0x42]]), Footers::Expected);
    assert!(matches!(
        e.kind(),
        ErrorKind::UnknownRecordType { byte: 0x42 }
    ));
    assert_eq!(e.offset(), Some(8));
}

#[test]
fn commands_are_checked_against_qemus_table() {
    for (bytes, detail) in [
        (vec![0x08, 0, 0, 0, 0], "not a command"),
        (vec![0x08, 0, 12, 0, 0], "not a command"),
        (vec![0x08, 0, 2, 0, 3, 1, 2, 3], "wrong payload length"),
    ] {
        let e = first_error(&stream(&[&bytes]), Footers::Expected);
        let ErrorKind::InvalidCommand { detail: d, .. } = e.kind() else {
            panic!("{e}")
        };
        assert!(d.contains(detail), "{e}");
        assert_eq!(e.record(), Some("COMMAND"));
    }
}

#[test]
fn the_configuration_must_come_first_when_expected() {
    let bytes = stream(&[&full(0x04, 1, "a", 0, 1)]);
    let mut rr = RecordReader::new(Footers::Expected);
    let e = rr.next(&mut Reader::from_slice(&bytes)).unwrap_err();
    assert!(
        e.to_string()
            .contains("expected the configuration section (0x07)"),
        "{e}"
    );
    // Later, 0x07 is not a record at all.
    let late = stream(&[&[0x07]]);
    let mut r = Reader::from_slice(&late);
    let mut rr = RecordReader::new(Footers::Expected).without_configuration();
    assert!(matches!(
        rr.next(&mut r).unwrap_err().kind(),
        ErrorKind::UnknownRecordType { byte: 0x07 }
    ));
}

#[test]
fn bad_header_is_refused_with_its_offset() {
    let mut bytes = HEADER.to_vec();
    bytes[7] = 2;
    let e = RecordReader::new(Footers::Expected)
        .header(&mut Reader::from_slice(&bytes))
        .unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::UnsupportedFormatVersion { found: 2 }
    ));
    assert_eq!((e.offset(), e.record()), (Some(4), Some("header")));
}

#[test]
fn ram_records_read_as_typed_values() {
    let mut b = Vec::new();
    b.extend((0x2000u64 | 0x4).to_be_bytes()); // MEM_SIZE 0x2000
    b.extend([1, b'a']);
    b.extend(0x1000u64.to_be_bytes());
    b.extend([1, b'b']);
    b.extend(0x1000u64.to_be_bytes());
    b.extend((0x1000u64 | 0x8).to_be_bytes()); // PAGE, block b named, offset 0x1000
    b.extend([1, b'b']);
    b.extend([0xee; 4096]);
    b.extend(0x22u64.to_be_bytes()); // ZERO at offset 0, CONTINUE
    b.push(0);
    b.extend(0x200u64.to_be_bytes()); // MULTIFD_FLUSH
    b.extend(0x10u64.to_be_bytes()); // EOS
    let mut r = Reader::from_slice(&b);
    let mut rr = RamRecordReader::new(4096);
    let RamRecord::MemSize { total } = rr.next(&mut r).unwrap() else {
        panic!()
    };
    assert_eq!(total, 0x2000);
    let mut blocks = Vec::new();
    rr.block_list(&mut r, total, |e, _| {
        blocks.push(e);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        blocks,
        [
            BlockEntry {
                name: "a".into(),
                used_length: 0x1000,
                mr_addr: None
            },
            BlockEntry {
                name: "b".into(),
                used_length: 0x1000,
                mr_addr: None
            }
        ]
    );
    assert_eq!(
        rr.next(&mut r).unwrap(),
        RamRecord::Page {
            block: BlockRef::Named("b".into()),
            offset: 0x1000
        }
    );
    r.skip(4096).unwrap();
    assert_eq!(
        rr.next(&mut r).unwrap(),
        RamRecord::Zero {
            block: BlockRef::Same,
            offset: 0
        }
    );
    assert_eq!(rr.next(&mut r).unwrap(), RamRecord::MultifdFlush);
    assert_eq!(rr.next(&mut r).unwrap(), RamRecord::Eos);
    assert_eq!(rr.last_word(), 0x10);
}

#[test]
fn ram_grammar_errors_carry_the_record_offset() {
    // CONTINUE before any named record.
    let e = RamRecordReader::new(4096)
        .next(&mut Reader::from_slice(&0x28u64.to_be_bytes()))
        .unwrap_err();
    assert!(e.to_string().contains("CONTINUE"), "{e}");
    assert_eq!(e.offset(), Some(0));
    // Two kinds at once.
    let e = RamRecordReader::new(4096)
        .next(&mut Reader::from_slice(&0xau64.to_be_bytes()))
        .unwrap_err();
    assert!(e.to_string().contains("ZERO|PAGE"), "{e}");
    // Block lengths adding up to more than MEM_SIZE's total.
    let mut b = vec![1, b'a'];
    b.extend(0x2000u64.to_be_bytes());
    let e = RamRecordReader::new(4096)
        .block_list(&mut Reader::from_slice(&b), 0x1000, |_, _| Ok(()))
        .unwrap_err();
    assert!(e.to_string().contains("more than the total"), "{e}");
    // An XBZRLE record longer than a page.
    let mut b = (0x40u64).to_be_bytes().to_vec();
    b.extend([1, b'a', 1, 0x10, 0x01]);
    let e = RamRecordReader::new(4096)
        .next(&mut Reader::from_slice(&b))
        .unwrap_err();
    assert!(e.to_string().contains("exceeds the page size"), "{e}");
}
