//! A virtio-net TX buffer: its header, then the frame's Ethernet, ARP and IP headers; the body and
//! its oracle are `vmm_shim::fuzzing::virtio_header`, which `tests/fuzz_corpus.rs` also runs over
//! the corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm_shim::fuzzing::virtio_header(data);
});
