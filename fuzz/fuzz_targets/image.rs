//! Patched images with recomputed checksums: fsck and mount never panic, agree, and a mounted
//! image works (see pinfs::fuzzer::targets::image).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pinfs::fuzzer::targets::image(data));
