//! A run of guest Ethernet frames through the guest link over the client engine; the body and its
//! oracle are `vmm_shim::fuzzing::guest_frames`, which `tests/fuzz_corpus.rs` also runs over the
//! corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm_shim::fuzzing::guest_frames(data, std::time::Instant::now());
});
