//! rmqtt: a small single-threaded MQTT broker and mosquitto-compatible command-line clients.
//!
//! `protocol` is the pure wire format; `broker` the event loop and its state; `client` what the
//! `rmqtt_pub` / `rmqtt_sub` applets share. The binary in `main.rs` only dispatches.
#![deny(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod civil;
pub mod client;
pub mod config;
pub mod names;
pub mod passwd;
pub mod protocol;
pub mod sort;
pub mod tls;
