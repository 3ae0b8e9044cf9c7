//! MQTT 5.0 properties (section 2.2.2): one struct for every packet, with decode rules that
//! reject a property in a packet that may not carry it, a duplicate, or an out-of-range value.
//!
//! Never panics on input. An empty `Properties` encodes as the single byte `0`.

use super::codec::{self, put_binary, put_string, put_varint, varint_len, Reader};
use super::DecodeError;
use bytes::{BufMut, Bytes, BytesMut};

/// Which packet a property block belongs to; the will properties of CONNECT count as their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Will = 0,
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    Disconnect = 14,
    Auth = 15,
}

const fn bit(o: Owner) -> u16 {
    1 << (o as u16)
}

const ACKS: u16 = bit(Owner::PubAck)
    | bit(Owner::PubRec)
    | bit(Owner::PubRel)
    | bit(Owner::PubComp)
    | bit(Owner::SubAck)
    | bit(Owner::UnsubAck);
const MSG: u16 = bit(Owner::Publish) | bit(Owner::Will);

pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const AUTHENTICATION_METHOD: u8 = 0x15;
pub const AUTHENTICATION_DATA: u8 = 0x16;
pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub const WILL_DELAY_INTERVAL: u8 = 0x18;
pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub const RESPONSE_INFORMATION: u8 = 0x1A;
pub const SERVER_REFERENCE: u8 = 0x1C;
pub const REASON_STRING: u8 = 0x1F;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const MAXIMUM_QOS: u8 = 0x24;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// The packets each property may appear in (table 2-4 of the 5.0 specification).
fn allowed(id: u8) -> Option<u16> {
    use Owner::*;
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => MSG,
        SUBSCRIPTION_IDENTIFIER => bit(Publish) | bit(Subscribe),
        SESSION_EXPIRY_INTERVAL => bit(Connect) | bit(ConnAck) | bit(Disconnect),
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => bit(ConnAck),
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => bit(Connect) | bit(ConnAck) | bit(Auth),
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => bit(Connect),
        WILL_DELAY_INTERVAL => bit(Will),
        SERVER_REFERENCE => bit(ConnAck) | bit(Disconnect),
        REASON_STRING => bit(ConnAck) | ACKS | bit(Disconnect) | bit(Auth),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => bit(Connect) | bit(ConnAck),
        TOPIC_ALIAS => bit(Publish),
        USER_PROPERTY => 0xffff,
        _ => return None,
    })
}

/// Every MQTT 5.0 property. Absent properties are `None` / empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

fn set<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("duplicate property"));
    }
    *slot = Some(v);
    Ok(())
}

fn flag(v: u8) -> Result<u8, DecodeError> {
    if v > 1 {
        return Err(DecodeError::Protocol("property value must be 0 or 1"));
    }
    Ok(v)
}

fn nonzero<T: PartialEq + Default>(v: T) -> Result<T, DecodeError> {
    if v == T::default() {
        return Err(DecodeError::Protocol("property value must not be 0"));
    }
    Ok(v)
}

impl Properties {
    /// No property present. Field by field, on the hot path (every PUBLISH): comparing
    /// with `Properties::default()` built and dropped a whole value each time. The
    /// destructuring makes a new field a compile error here until it is checked.
    pub fn is_empty(&self) -> bool {
        let Properties {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        payload_format_indicator.is_none()
            && message_expiry_interval.is_none()
            && content_type.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && subscription_identifiers.is_empty()
            && session_expiry_interval.is_none()
            && assigned_client_identifier.is_none()
            && server_keep_alive.is_none()
            && authentication_method.is_none()
            && authentication_data.is_none()
            && request_problem_information.is_none()
            && will_delay_interval.is_none()
            && request_response_information.is_none()
            && response_information.is_none()
            && server_reference.is_none()
            && reason_string.is_none()
            && receive_maximum.is_none()
            && topic_alias_maximum.is_none()
            && topic_alias.is_none()
            && maximum_qos.is_none()
            && retain_available.is_none()
            && user_properties.is_empty()
            && maximum_packet_size.is_none()
            && wildcard_subscription_available.is_none()
            && subscription_identifier_available.is_none()
            && shared_subscription_available.is_none()
    }

    /// Reads a property block (length, then properties) for a packet of kind `owner`.
    pub(crate) fn decode(r: &mut Reader<'_>, owner: Owner) -> Result<Properties, DecodeError> {
        let len = r.varint()? as usize;
        let block = r.take(len)?;
        let mut r = Reader::new(block);
        let mut p = Properties::default();
        while !r.is_empty() {
            // Identifiers are variable byte integers but every defined one fits in one byte.
            let id = r.varint()?;
            let id = u8::try_from(id).map_err(|_| DecodeError::Protocol("unknown property"))?;
            let mask = allowed(id).ok_or(DecodeError::Protocol("unknown property"))?;
            if mask & bit(owner) == 0 {
                // MQTT 5 §2.2.2.2: a property not defined for the packet makes it malformed.
                return Err(DecodeError::Malformed(
                    "property not allowed in this packet",
                ));
            }
            match id {
                PAYLOAD_FORMAT_INDICATOR => set(&mut p.payload_format_indicator, flag(r.u8()?)?)?,
                MESSAGE_EXPIRY_INTERVAL => set(&mut p.message_expiry_interval, r.u32()?)?,
                CONTENT_TYPE => set(&mut p.content_type, r.string()?.to_owned())?,
                RESPONSE_TOPIC => {
                    let t = r.string()?;
                    // [MQTT-3.3.2-14] a response topic is a topic name.
                    if !super::topic::valid_topic_name(t) {
                        return Err(DecodeError::BadTopicName);
                    }
                    set(&mut p.response_topic, t.to_owned())?
                }
                CORRELATION_DATA => {
                    set(&mut p.correlation_data, Bytes::copy_from_slice(r.binary()?))?
                }
                SUBSCRIPTION_IDENTIFIER => {
                    let v = nonzero(r.varint()?)?;
                    if owner == Owner::Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::Protocol("duplicate property"));
                    }
                    p.subscription_identifiers.push(v);
                }
                SESSION_EXPIRY_INTERVAL => set(&mut p.session_expiry_interval, r.u32()?)?,
                ASSIGNED_CLIENT_IDENTIFIER => {
                    set(&mut p.assigned_client_identifier, r.string()?.to_owned())?
                }
                SERVER_KEEP_ALIVE => set(&mut p.server_keep_alive, r.u16()?)?,
                AUTHENTICATION_METHOD => set(&mut p.authentication_method, r.string()?.to_owned())?,
                AUTHENTICATION_DATA => set(
                    &mut p.authentication_data,
                    Bytes::copy_from_slice(r.binary()?),
                )?,
                REQUEST_PROBLEM_INFORMATION => {
                    set(&mut p.request_problem_information, flag(r.u8()?)?)?
                }
                WILL_DELAY_INTERVAL => set(&mut p.will_delay_interval, r.u32()?)?,
                REQUEST_RESPONSE_INFORMATION => {
                    set(&mut p.request_response_information, flag(r.u8()?)?)?
                }
                RESPONSE_INFORMATION => set(&mut p.response_information, r.string()?.to_owned())?,
                SERVER_REFERENCE => set(&mut p.server_reference, r.string()?.to_owned())?,
                REASON_STRING => set(&mut p.reason_string, r.string()?.to_owned())?,
                RECEIVE_MAXIMUM => set(&mut p.receive_maximum, nonzero(r.u16()?)?)?,
                TOPIC_ALIAS_MAXIMUM => set(&mut p.topic_alias_maximum, r.u16()?)?,
                TOPIC_ALIAS => set(&mut p.topic_alias, nonzero(r.u16()?)?)?,
                MAXIMUM_QOS => set(&mut p.maximum_qos, flag(r.u8()?)?)?,
                RETAIN_AVAILABLE => set(&mut p.retain_available, flag(r.u8()?)?)?,
                USER_PROPERTY => {
                    let k = r.string()?.to_owned();
                    let v = r.string()?.to_owned();
                    p.user_properties.push((k, v));
                }
                MAXIMUM_PACKET_SIZE => set(&mut p.maximum_packet_size, nonzero(r.u32()?)?)?,
                WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    set(&mut p.wildcard_subscription_available, flag(r.u8()?)?)?
                }
                SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    set(&mut p.subscription_identifier_available, flag(r.u8()?)?)?
                }
                SHARED_SUBSCRIPTION_AVAILABLE => {
                    set(&mut p.shared_subscription_available, flag(r.u8()?)?)?
                }
                _ => return Err(DecodeError::Protocol("unknown property")),
            }
        }
        Ok(p)
    }

    /// Length of the properties themselves, without the length prefix.
    fn body_len(&self) -> usize {
        let s = |o: &Option<String>| {
            o.as_ref()
                .map_or(0, |v| 1 + codec::binary_len(v.as_bytes()))
        };
        let b = |o: &Option<Bytes>| o.as_ref().map_or(0, |v| 1 + codec::binary_len(v));
        let n1 = |o: &Option<u8>| o.map_or(0, |_| 2);
        let n2 = |o: &Option<u16>| o.map_or(0, |_| 3);
        let n4 = |o: &Option<u32>| o.map_or(0, |_| 5);
        n1(&self.payload_format_indicator)
            + n4(&self.message_expiry_interval)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + self
                .subscription_identifiers
                .iter()
                .map(|&v| 1 + varint_len(v))
                .sum::<usize>()
            + n4(&self.session_expiry_interval)
            + s(&self.assigned_client_identifier)
            + n2(&self.server_keep_alive)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + n1(&self.request_problem_information)
            + n4(&self.will_delay_interval)
            + n1(&self.request_response_information)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + n2(&self.receive_maximum)
            + n2(&self.topic_alias_maximum)
            + n2(&self.topic_alias)
            + n1(&self.maximum_qos)
            + n1(&self.retain_available)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 1 + codec::binary_len(k.as_bytes()) + codec::binary_len(v.as_bytes()))
                .sum::<usize>()
            + n4(&self.maximum_packet_size)
            + n1(&self.wildcard_subscription_available)
            + n1(&self.subscription_identifier_available)
            + n1(&self.shared_subscription_available)
    }

    /// Encoded length including the variable byte integer length prefix.
    pub fn encoded_len(&self) -> usize {
        let n = self.body_len();
        varint_len(n as u32) + n
    }

    pub fn encode(&self, out: &mut BytesMut) {
        put_varint(out, self.body_len() as u32);
        let u8p = |out: &mut BytesMut, id: u8, v: Option<u8>| {
            if let Some(v) = v {
                out.put_u8(id);
                out.put_u8(v);
            }
        };
        let u16p = |out: &mut BytesMut, id: u8, v: Option<u16>| {
            if let Some(v) = v {
                out.put_u8(id);
                out.put_u16(v);
            }
        };
        let u32p = |out: &mut BytesMut, id: u8, v: Option<u32>| {
            if let Some(v) = v {
                out.put_u8(id);
                out.put_u32(v);
            }
        };
        let strp = |out: &mut BytesMut, id: u8, v: &Option<String>| {
            if let Some(v) = v {
                out.put_u8(id);
                put_string(out, v);
            }
        };
        let binp = |out: &mut BytesMut, id: u8, v: &Option<Bytes>| {
            if let Some(v) = v {
                out.put_u8(id);
                put_binary(out, v);
            }
        };
        u8p(out, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        u32p(out, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        strp(out, CONTENT_TYPE, &self.content_type);
        strp(out, RESPONSE_TOPIC, &self.response_topic);
        binp(out, CORRELATION_DATA, &self.correlation_data);
        for &v in &self.subscription_identifiers {
            out.put_u8(SUBSCRIPTION_IDENTIFIER);
            put_varint(out, v);
        }
        u32p(out, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        strp(
            out,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        );
        u16p(out, SERVER_KEEP_ALIVE, self.server_keep_alive);
        strp(out, AUTHENTICATION_METHOD, &self.authentication_method);
        binp(out, AUTHENTICATION_DATA, &self.authentication_data);
        u8p(
            out,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        u32p(out, WILL_DELAY_INTERVAL, self.will_delay_interval);
        u8p(
            out,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        strp(out, RESPONSE_INFORMATION, &self.response_information);
        strp(out, SERVER_REFERENCE, &self.server_reference);
        strp(out, REASON_STRING, &self.reason_string);
        u16p(out, RECEIVE_MAXIMUM, self.receive_maximum);
        u16p(out, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        u16p(out, TOPIC_ALIAS, self.topic_alias);
        u8p(out, MAXIMUM_QOS, self.maximum_qos);
        u8p(out, RETAIN_AVAILABLE, self.retain_available);
        for (k, v) in &self.user_properties {
            out.put_u8(USER_PROPERTY);
            put_string(out, k);
            put_string(out, v);
        }
        u32p(out, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        u8p(
            out,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        u8p(
            out,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifier_available,
        );
        u8p(
            out,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
    }
}
