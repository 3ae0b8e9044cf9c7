//! libFuzzer entry point for the `password_file` check in `rmqtt_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmqtt_fuzz::password_file(data));
