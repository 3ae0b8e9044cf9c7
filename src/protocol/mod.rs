//! MQTT 3.1, 3.1.1 and 5.0 wire format: bytes to typed packets and back.
//!
//! Pure code: no sockets, no clock, no logging. The contract:
//! - [`decode`] never panics, whatever the input; it answers `Ok(None)` when more bytes are
//!   needed and rejects an oversized packet from its fixed header alone, before the body arrives.
//! - [`Packet::encode`] never panics and writes exactly [`Packet::encoded_len`] bytes.
//! - Everything the specification requires of a well-formed packet is checked here; what
//!   depends on session state (packet ids in use, topic aliases, authorisation) is the broker's.

pub(crate) mod codec;
mod decode;
mod encode;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;

#[cfg(test)]
mod tests;

pub use decode::{decode, decode_publish, frame_len, short_ack};
pub use encode::{short_ack_bytes, PublishView};
pub use packet::*;
pub use properties::Properties;

use std::fmt;

/// Protocol level as carried in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl Version {
    pub fn level(self) -> u8 {
        match self {
            Version::V31 => 3,
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }

    pub fn from_level(level: u8) -> Option<Version> {
        match level {
            3 => Some(Version::V31),
            4 => Some(Version::V311),
            5 => Some(Version::V5),
            _ => None,
        }
    }

    pub fn protocol_name(self) -> &'static str {
        match self {
            Version::V31 => "MQIsdp",
            _ => "MQTT",
        }
    }

    pub fn is_v5(self) -> bool {
        self == Version::V5
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Why bytes could not be decoded into a packet. [`DecodeError::reason_code`] maps each to the
/// MQTT 5 reason code the broker answers with; [`DecodeError::connack_v3`] to the 3.1.1 CONNACK
/// code where one applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A variable byte integer (remaining length, property length...) longer than four bytes or
    /// not in its shortest form. [MQTT-1.5.5-1]
    MalformedLength,
    /// The packet announced more bytes than the limit allows.
    TooLarge { size: usize, max: usize },
    /// Packet type 0, or reserved flags set wrongly. [MQTT-2.2.2-2]
    InvalidHeader(u8),
    /// The body ended early, or had bytes left over, or a field held a forbidden value.
    Malformed(&'static str),
    /// A string is not well-formed UTF-8 or holds U+0000. [MQTT-1.5.3-1] [MQTT-1.5.3-2]
    BadUtf8,
    /// A rule of the protocol is broken (duplicate property, property in the wrong packet...).
    Protocol(&'static str),
    /// CONNECT with a protocol name that is not MQTT / MQIsdp.
    BadProtocolName,
    /// CONNECT with a protocol level we do not speak. [MQTT-3.1.2-2]
    UnsupportedVersion(u8),
    /// A topic name with wildcards, or empty. [MQTT-3.3.2-2]
    BadTopicName,
    /// A topic filter with misplaced wildcards, or empty. [MQTT-4.7.1-2]
    BadTopicFilter,
}

impl DecodeError {
    /// The MQTT 5 reason code for a CONNACK or DISCONNECT answering this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedVersion(_) | DecodeError::BadProtocolName => {
                reason::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::BadTopicName => reason::TOPIC_NAME_INVALID,
            DecodeError::BadTopicFilter => reason::TOPIC_FILTER_INVALID,
            DecodeError::MalformedLength
            | DecodeError::InvalidHeader(_)
            | DecodeError::Malformed(_)
            | DecodeError::BadUtf8 => reason::MALFORMED_PACKET,
        }
    }

    /// The 3.1/3.1.1 CONNACK return code owed before closing, if the spec asks for one.
    pub fn connack_v3(&self) -> Option<u8> {
        match self {
            // [MQTT-3.1.2-2]
            DecodeError::UnsupportedVersion(_) => Some(reason::V3_UNACCEPTABLE_PROTOCOL_VERSION),
            _ => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::MalformedLength => f.write_str("malformed remaining length"),
            DecodeError::TooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the limit of {max}")
            }
            DecodeError::InvalidHeader(b) => write!(f, "invalid fixed header 0x{b:02x}"),
            DecodeError::Malformed(what) => write!(f, "malformed packet: {what}"),
            DecodeError::BadUtf8 => f.write_str("invalid UTF-8 string"),
            DecodeError::Protocol(what) => write!(f, "protocol error: {what}"),
            DecodeError::BadProtocolName => f.write_str("invalid protocol name"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::BadTopicName => f.write_str("invalid topic name"),
            DecodeError::BadTopicFilter => f.write_str("invalid topic filter"),
        }
    }
}

impl std::error::Error for DecodeError {}
