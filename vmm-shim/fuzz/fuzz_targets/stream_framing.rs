//! A QEMU `-netdev stream` byte stream, in pieces, through the framing decoder; the body and its
//! oracle are `vmm_shim::fuzzing::stream_framing`, which `tests/fuzz_corpus.rs` also runs over the
//! corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm_shim::fuzzing::stream_framing(data);
});
