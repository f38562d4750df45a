//! Patched images with recomputed checksums: fsck and mount never panic, agree, and a mounted
//! image works (see pinfs::fuzz_targets::image).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pinfs::fuzz_targets::image(data));
