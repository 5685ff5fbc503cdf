//! The schema reader and the checker on any JSON: two dumps split at the first NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstate::schema::Dump;
use vmstate_tools::check::{self, CheckOptions};

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let (Ok(src), Ok(dest)) = (
        serde_json::from_slice::<Dump>(a),
        serde_json::from_slice::<Dump>(b),
    ) else {
        return;
    };
    let opts = CheckOptions::default();
    let problems = check::check(&src, &dest, &opts);
    let _ = check::exit_code(&problems);
    let _ = check::check_reverse(&src, &dest, &opts);
});
