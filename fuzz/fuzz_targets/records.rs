//! The record readers alone: every record to EOF (skipping no payload), and RAM records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstate::Reader;
use vmstate::ram::records::{RamRecord, RamRecordReader};
use vmstate::stream::records::{Footers, Record, RecordReader};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::from_slice(data);
    let mut records = RecordReader::new(Footers::Detect)
        .detect_configuration()
        .ending_at(data.len() as u64);
    while let Ok(rec) = records.next(&mut r) {
        if rec == Record::Eof {
            let _ = records.trailer(&mut r);
            break;
        }
    }
    let mut r = Reader::from_slice(data);
    let mut ram = RamRecordReader::new(4096);
    while let Ok(rec) = ram.next(&mut r) {
        match rec {
            RamRecord::Eos => break,
            RamRecord::MemSize { total } => {
                if ram.block_list(&mut r, total, |_, _| Ok(())).is_err() {
                    break;
                }
            }
            RamRecord::Page { .. } => {
                if r.skip(4096).is_err() {
                    break;
                }
            }
            _ => {}
        }
    }
});
