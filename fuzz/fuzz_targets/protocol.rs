//! Holder messages must never harm the daemon (see pinfs::fuzzer::targets::protocol).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pinfs::fuzzer::targets::protocol(data));
