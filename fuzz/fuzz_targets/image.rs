//! Mutated images must make fsck and mount fail cleanly (see pinfs::fuzz_targets::image).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pinfs::fuzz_targets::image(data));
