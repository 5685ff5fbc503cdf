//! The vmdesc-driven decoder, the state JSON of `vmstate dump`, and the encoder: a
//! stream that decodes with its pages kept re-encodes to exactly its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstate_tools::decode::{self, DecodeOptions, DumpOptions};

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        keep_pages: true,
        ..Default::default()
    };
    let (stream, err) = decode::decode_slice_partial(data, opts);
    let _ = decode::state_json_string(&stream, &DumpOptions { memory: true, expand: true });
    if err.is_none() {
        let again = decode::encode_to_vec(&stream).expect("a decoded stream encodes");
        assert_eq!(again, data, "decode + encode is not the identity");
    }
});
