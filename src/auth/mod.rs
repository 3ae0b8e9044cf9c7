//! Mosquitto-compatible authentication data: the password file (`password_file`, written by
//! `mosquitto_passwd` / `rmqtt_passwd`) and the ACL file (`acl_file`).
//!
//! Both are loaded whole into memory, parsed strictly (errors carry file and line) and then only
//! read; the broker swaps in a freshly loaded value on reload. Neither module logs or returns
//! password hashes.

pub mod acl;
pub mod password;
