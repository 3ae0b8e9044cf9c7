//! libFuzzer entry point for the `persist_snapshot` check in `rmqtt_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmqtt_fuzz::persist_snapshot(data));
