//! libFuzzer entry point for the `decode_v311` check in `rmqtt_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmqtt_fuzz::decode_v311(data));
