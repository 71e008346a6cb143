//! An ICMPv6 neighbour discovery message: checked, answered and written; the body and its oracle
//! are `vmm_shim::fuzzing::ndp_message`, which `tests/fuzz_corpus.rs` also runs over the corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm_shim::fuzzing::ndp_message(data);
});
