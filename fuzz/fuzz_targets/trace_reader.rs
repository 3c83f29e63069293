//! Fuzz the trace reader, the model and the summary with arbitrary bytes.
//! See fuzz/README.md.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As given, then with checksums fixed so the decoders get exercised.
    gilscope::fuzz::trace::fuzz_one(data);
});
