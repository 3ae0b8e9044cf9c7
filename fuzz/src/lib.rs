//! The checks behind every fuzz target, shared by the libFuzzer entry points in
//! `fuzz_targets/` and the coverage-less `mutate` loop.
//!
//! Each function takes arbitrary bytes and panics only when rmqtt breaks a promise: a parser
//! that panics, or a packet that decodes but does not survive encode → decode unchanged.

use bytes::BytesMut;
use rmqtt::auth::acl::{Access, Acl};
use rmqtt::auth::password::PasswordFile;
use rmqtt::broker::{mosquitto_db, persist, ws};
use rmqtt::protocol::{decode, Packet, Version};
use std::time::Instant;

/// Largest packet the decoder is asked to accept: the protocol's own maximum.
const MAX_PACKET: usize = 268_435_455 + 5;

/// Every packet at the front of `data` decodes without panic; each one that decodes encodes to
/// exactly `encoded_len` bytes and decodes back to itself.
fn decode_stream(data: &[u8], version: Version) {
    let mut rest = data;
    for _ in 0..64 {
        match decode(rest, version, MAX_PACKET) {
            Ok(Some((packet, used))) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                roundtrip(&packet, version);
                rest = rest.get(used..).unwrap_or_default();
            }
            Ok(None) | Err(_) => break,
        }
    }
    // A small limit must be enforced, never panicked over.
    let _ = decode(data, version, 16);
}

/// Encodes `packet` as `version` and insists the bytes decode to the same packet.
pub fn roundtrip(packet: &Packet, version: Version) {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out);
    assert_eq!(
        out.len(),
        packet.encoded_len(version),
        "encoded_len disagrees with encode for {packet:?}"
    );
    match decode(&out, version, MAX_PACKET) {
        Ok(Some((again, used))) => {
            assert_eq!(used, out.len(), "re-decode used a different length");
            assert_eq!(&again, packet, "round trip changed the packet");
        }
        other => panic!("re-encoded {packet:?} as {out:02x?} does not decode: {other:?}"),
    }
}

pub fn decode_v311(data: &[u8]) {
    decode_stream(data, Version::V311);
}

pub fn decode_v5(data: &[u8]) {
    decode_stream(data, Version::V5);
}

pub fn mosquitto_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = rmqtt::config::mosquitto::parse_str("fuzz.conf", &text);
}

pub fn uci_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = rmqtt::config::uci::looks_like_uci(&text);
    let _ = rmqtt::config::uci::parse("fuzz", &text);
    let _ = rmqtt::config::uci::parse_str("fuzz", &text);
}

/// Parsing only: checking a password would run the file's own PBKDF2 iteration count, which an
/// input may set to billions (a slow admin-chosen hash, not a parser bug).
pub fn password_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(pw) = PasswordFile::parse(&text, "fuzz") {
        let _ = pw.len();
        let _ = pw.contains("user");
    }
}

pub fn acl_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(acl) = Acl::parse(&text, "fuzz") {
        for (id, user, topic) in [
            ("c", Some("u"), "a/b"),
            ("c", None, "a/b"),
            ("x/y", Some("u/v"), "x/y/z"),
            ("+", Some("#"), "$SYS/broker"),
            ("", Some(""), "a/+/#"),
        ] {
            for access in [Access::Read, Access::Write, Access::Subscribe] {
                let _ = acl.allowed(id, user, topic, access);
            }
        }
    }
}

pub fn persist_snapshot(data: &[u8]) {
    let _ = persist::decode(data, Instant::now());
}

/// Mosquitto's persistence format: parsing and converting never panic; the fuzzer's bytes are tried
/// as a whole file and as the chunks after a version 6 header.
pub fn mosquitto_db(data: &[u8]) {
    // The fuzzer's bytes follow the header, so it spends its time on the chunks.
    let mut file = mosquitto_db::MAGIC.to_vec();
    file.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 6]);
    file.extend_from_slice(data);
    for input in [data, file.as_slice()] {
        if let Ok((db, _)) = mosquitto_db::parse(input) {
            let _ = mosquitto_db::convert(&db, 1_800_000_000, Instant::now());
        }
    }
}

/// The upgrade parser never panics; the framer gives the same stream whether the bytes arrive
/// at once or split in two at a point the input chooses.
pub fn ws_frames(data: &[u8]) {
    let _ = ws::handshake(data);
    let Some((&split, frames)) = data.split_first() else {
        return;
    };
    let whole = run_frames(&[frames]);
    let cut = usize::from(split).min(frames.len());
    let (a, b) = frames.split_at(cut);
    let parts = run_frames(&[a, b]);
    if let (Ok(w), Ok(p)) = (&whole, &parts) {
        assert_eq!(w, p, "framing depends on how the bytes were split");
    }
}

fn run_frames(chunks: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>, bool), ws::WsError> {
    let mut raw = BytesMut::new();
    let mut data = BytesMut::new();
    let mut ctl = ws::Control::default();
    for c in chunks {
        if ctl.closed {
            break;
        }
        raw.extend_from_slice(c);
        ws::decode_frames(&mut raw, &mut data, &mut ctl)?;
    }
    Ok((data.to_vec(), ctl.reply, ctl.closed))
}

/// A client certificate's subject, as `use_identity_as_username` and
/// `use_subject_as_username` read it: never a panic, and a subject with a common name
/// names it in its text (when every attribute can be written).
pub fn x509_subject(data: &[u8]) {
    let cn = rmqtt::tls::der::subject_common_name(data);
    let dn = rmqtt::tls::der::subject_rfc2253(data);
    if let (Some(_), Some(dn)) = (&cn, &dn) {
        assert!(dn.contains("CN="), "a common name, but {dn:?}");
    }
}

/// Every target by name, for the `mutate` loop and the seed checks.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("decode_v311", decode_v311),
    ("decode_v5", decode_v5),
    ("mosquitto_config", mosquitto_config),
    ("uci_config", uci_config),
    ("password_file", password_file),
    ("acl_file", acl_file),
    ("persist_snapshot", persist_snapshot),
    ("mosquitto_db", mosquitto_db),
    ("ws_frames", ws_frames),
    ("x509_subject", x509_subject),
];
