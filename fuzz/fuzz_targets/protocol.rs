//! Holder messages must never harm the daemon (see pinfs::fuzz_targets::protocol).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pinfs::fuzz_targets::protocol(data));
