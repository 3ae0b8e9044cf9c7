//! The fourteen MQTT control packets (fifteen with 5.0's AUTH) as owned Rust values.
//!
//! Strings are validated UTF-8; payloads are `Bytes` so that one received message can be
//! shared by every subscriber it goes to without another copy.

use super::{Properties, QoS, Version};
use bytes::Bytes;
use std::sync::Arc;

/// Control packet type numbers (the high nibble of the first byte).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    /// A bridge announcing itself Mosquitto's way (`try_private`: protocol level | 0x80):
    /// the broker must not send it back what it publishes.
    pub bridge: bool,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    /// 3.1.1 return code or 5.0 reason code, as the connection's version says.
    pub code: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: Arc<str>,
    /// 0 for QoS 0.
    pub pid: u16,
    pub payload: Bytes,
    pub properties: Properties,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    pub pid: u16,
    pub reason: u8,
    pub properties: Properties,
}

impl Ack {
    pub fn new(pid: u16) -> Ack {
        Ack {
            pid,
            ..Ack::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained on subscribe; 1: only if the subscription is new; 2: never.
    pub retain_handling: u8,
}

impl SubOptions {
    pub fn to_byte(self) -> u8 {
        self.qos.as_u8()
            | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling & 3) << 4)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub pid: u16,
    pub filters: Vec<(String, SubOptions)>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub pid: u16,
    pub codes: Vec<u8>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pid: u16,
    pub filters: Vec<String>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub pid: u16,
    /// One reason code per filter in 5.0; empty in 3.1.1.
    pub codes: Vec<u8>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The control packet type number.
    pub fn kind(&self) -> u8 {
        match self {
            Packet::Connect(_) => kind::CONNECT,
            Packet::ConnAck(_) => kind::CONNACK,
            Packet::Publish(_) => kind::PUBLISH,
            Packet::PubAck(_) => kind::PUBACK,
            Packet::PubRec(_) => kind::PUBREC,
            Packet::PubRel(_) => kind::PUBREL,
            Packet::PubComp(_) => kind::PUBCOMP,
            Packet::Subscribe(_) => kind::SUBSCRIBE,
            Packet::SubAck(_) => kind::SUBACK,
            Packet::Unsubscribe(_) => kind::UNSUBSCRIBE,
            Packet::UnsubAck(_) => kind::UNSUBACK,
            Packet::PingReq => kind::PINGREQ,
            Packet::PingResp => kind::PINGRESP,
            Packet::Disconnect(_) => kind::DISCONNECT,
            Packet::Auth(_) => kind::AUTH,
        }
    }

    /// Upper-case name as Mosquitto prints it in debug lines.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }
}

pub fn kind_name(k: u8) -> &'static str {
    match k {
        kind::CONNECT => "CONNECT",
        kind::CONNACK => "CONNACK",
        kind::PUBLISH => "PUBLISH",
        kind::PUBACK => "PUBACK",
        kind::PUBREC => "PUBREC",
        kind::PUBREL => "PUBREL",
        kind::PUBCOMP => "PUBCOMP",
        kind::SUBSCRIBE => "SUBSCRIBE",
        kind::SUBACK => "SUBACK",
        kind::UNSUBSCRIBE => "UNSUBSCRIBE",
        kind::UNSUBACK => "UNSUBACK",
        kind::PINGREQ => "PINGREQ",
        kind::PINGRESP => "PINGRESP",
        kind::DISCONNECT => "DISCONNECT",
        kind::AUTH => "AUTH",
        _ => "UNKNOWN",
    }
}
