//! libFuzzer entry point for the `x509_subject` check in `rmqtt_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmqtt_fuzz::x509_subject(data));
