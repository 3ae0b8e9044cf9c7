//! libFuzzer entry point for the `mosquitto_db` check in `rmqtt_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmqtt_fuzz::mosquitto_db(data));
