//! libFuzzer entry point for the `ws_frames` check in `rmqtt_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmqtt_fuzz::ws_frames(data));
