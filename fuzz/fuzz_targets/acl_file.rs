//! libFuzzer entry point for the `acl_file` check in `rmqtt_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmqtt_fuzz::acl_file(data));
