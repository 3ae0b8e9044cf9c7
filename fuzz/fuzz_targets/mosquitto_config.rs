//! libFuzzer entry point for the `mosquitto_config` check in `rmqtt_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmqtt_fuzz::mosquitto_config(data));
