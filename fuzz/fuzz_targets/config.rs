//! Fuzz target: gilscope::fuzz::config::fuzz_one (see its docs and fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gilscope::fuzz::config::fuzz_one(data);
});
