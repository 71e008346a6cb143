//! Parse, translate both ways, clamp the MSS, and run the keeper on one packet; the body and
//! its oracle are `sessionkeeper::fuzzing::fuzz_one`, which `tests/fuzz_corpus.rs` also runs
//! over the corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sessionkeeper::fuzzing::fuzz_one(data, std::time::Instant::now());
});
