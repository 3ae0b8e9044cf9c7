//! Bytes to packets. Every function here returns an error rather than panic, and checks the
//! announced size against the limit before the body is buffered.

use super::codec::{read_varint, utf8, Reader};
use super::packet::kind;
use super::properties::Owner;
use super::topic::{valid_topic_filter, valid_topic_name};
use super::*;
use bytes::Bytes;
use std::sync::Arc;

/// Reads the fixed header at the start of `buf`. `Ok(None)`: not all of it has arrived.
/// `Ok(Some((first_byte, total_len)))` once it has: the whole packet is `total_len` bytes.
/// Fails as soon as the remaining length is malformed or announces more than `max` bytes.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, DecodeError> {
    Ok(fixed_header(buf, max)?.map(|(first, _, total)| (first, total)))
}

/// First byte, fixed header length and total length of the packet at the front of `buf`.
fn fixed_header(buf: &[u8], max: usize) -> Result<Option<(u8, usize, usize)>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let Some((remaining, n)) = read_varint(rest)? else {
        return Ok(None);
    };
    let total = 1 + n + remaining as usize;
    if total > max {
        return Err(DecodeError::TooLarge { size: total, max });
    }
    Ok(Some((first, 1 + n, total)))
}

/// Decodes one packet from the front of `buf`.
///
/// `version` is the connection's protocol version (CONNECT carries its own and ignores it);
/// `max` bounds the size of the whole packet. Answers `Ok(None)` when the packet is not complete
/// yet, `Ok(Some((packet, bytes_used)))` otherwise.
pub fn decode(
    buf: &[u8],
    version: Version,
    max: usize,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some((first, header_len, total)) = fixed_header(buf, max)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(header_len..total) else {
        return Ok(None);
    };
    let flags = first & 0x0f;
    let r = Reader::new(body);
    let packet = match first >> 4 {
        kind::CONNECT => {
            expect_flags(first, 0)?;
            Packet::Connect(Box::new(connect(r)?))
        }
        kind::CONNACK => {
            expect_flags(first, 0)?;
            Packet::ConnAck(connack(r, version)?)
        }
        kind::PUBLISH => Packet::Publish(publish(flags, r, version)?),
        kind::PUBACK => {
            expect_flags(first, 0)?;
            Packet::PubAck(ack(r, version, Owner::PubAck)?)
        }
        kind::PUBREC => {
            expect_flags(first, 0)?;
            Packet::PubRec(ack(r, version, Owner::PubRec)?)
        }
        kind::PUBREL => {
            expect_flags(first, 2)?; // [MQTT-3.6.1-1]
            Packet::PubRel(ack(r, version, Owner::PubRel)?)
        }
        kind::PUBCOMP => {
            expect_flags(first, 0)?;
            Packet::PubComp(ack(r, version, Owner::PubComp)?)
        }
        kind::SUBSCRIBE => {
            expect_flags(first, 2)?; // [MQTT-3.8.1-1]
            Packet::Subscribe(subscribe(r, version)?)
        }
        kind::SUBACK => {
            expect_flags(first, 0)?;
            Packet::SubAck(suback(r, version)?)
        }
        kind::UNSUBSCRIBE => {
            expect_flags(first, 2)?; // [MQTT-3.10.1-1]
            Packet::Unsubscribe(unsubscribe(r, version)?)
        }
        kind::UNSUBACK => {
            expect_flags(first, 0)?;
            Packet::UnsubAck(unsuback(r, version)?)
        }
        kind::PINGREQ => {
            expect_flags(first, 0)?;
            expect_empty(r)?;
            Packet::PingReq
        }
        kind::PINGRESP => {
            expect_flags(first, 0)?;
            expect_empty(r)?;
            Packet::PingResp
        }
        kind::DISCONNECT => {
            expect_flags(first, 0)?;
            Packet::Disconnect(disconnect(r, version)?)
        }
        kind::AUTH if version.is_v5() => {
            expect_flags(first, 0)?;
            let (reason, properties) = reason_and_properties(r, Owner::Auth)?;
            Packet::Auth(Auth { reason, properties })
        }
        _ => return Err(DecodeError::InvalidHeader(first)),
    };
    Ok(Some((packet, total)))
}

/// A PUBLISH without properties at the front of `buf` (every 3.1/3.1.1 one, a 5.0 one with
/// property length 0), borrowed from `buf` as [`decode`] would decode it, without building a
/// [`Packet`]: the broker's hot path takes the message straight to routing, and neither a
/// `Packet` nor the 5.0 properties (several hundred bytes inline) are built, moved and dropped
/// for it. Same errors as `decode` for such a packet; `Ok(None)` also for any other packet
/// type and for a 5.0 PUBLISH with properties, which `decode` then takes.
///
/// `known` is a topic name that passed these checks before (the broker's last one): a topic
/// of the same bytes is that one, unchecked.
pub fn decode_publish<'a>(
    buf: &'a [u8],
    version: Version,
    max: usize,
    known: Option<&'a str>,
) -> Result<Option<(PublishView<'a>, usize)>, DecodeError> {
    if buf.first().is_none_or(|b| b >> 4 != kind::PUBLISH) {
        return Ok(None);
    }
    let Some((first, header_len, total)) = fixed_header(buf, max)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(header_len..total) else {
        return Ok(None);
    };
    let mut r = Reader::new(body);
    let (dup, qos, retain) = publish_flags(first & 0x0f)?;
    let name = r.binary()?;
    let known = known.filter(|k| k.as_bytes() == name);
    let topic = match known {
        Some(k) => k,
        None => utf8(name)?,
    };
    let pid = if qos == QoS::AtMostOnce {
        0
    } else {
        pid(&mut r)?
    };
    if version.is_v5() && r.u8().ok() != Some(0) {
        // Properties, or no property length at all: `decode` reads (or rejects) them.
        return Ok(None);
    }
    if known.is_none() && !valid_topic_name(topic) {
        return Err(DecodeError::BadTopicName);
    }
    let view = PublishView {
        dup,
        qos,
        retain,
        topic,
        pid,
        payload: r.rest(),
        properties: None,
    };
    Ok(Some((view, total)))
}

/// The four-byte acknowledgement at the front of `buf`, when it is one: PUBACK, PUBREC, PUBREL
/// or PUBCOMP with remaining length 2 and a non-zero packet identifier, in either version
/// (a 5.0 one that short has reason 0 and no properties). Answers its type (`kind::PUBACK`...)
/// and packet identifier; `None` for anything else, which [`decode`] then takes. What it
/// accepts, `decode` decodes to the same acknowledgement.
pub fn short_ack(buf: &[u8]) -> Option<(u8, u16)> {
    let head = buf.get(..4)?;
    let (&[first, 2], &[hi, lo]) = head.split_at(2) else {
        return None;
    };
    let pid = u16::from_be_bytes([hi, lo]);
    let kind = match first {
        0x40 => kind::PUBACK,
        0x50 => kind::PUBREC,
        0x62 => kind::PUBREL,
        0x70 => kind::PUBCOMP,
        _ => return None,
    };
    (pid != 0).then_some((kind, pid))
}

/// Reserved flag bits must hold exactly the value the spec gives. [MQTT-2.2.2-2]
fn expect_flags(first: u8, want: u8) -> Result<(), DecodeError> {
    if first & 0x0f != want {
        return Err(DecodeError::InvalidHeader(first));
    }
    Ok(())
}

fn expect_empty(r: Reader<'_>) -> Result<(), DecodeError> {
    if !r.is_empty() {
        return Err(DecodeError::Malformed(
            "unexpected bytes at the end of the packet",
        ));
    }
    Ok(())
}

fn read_properties(
    r: &mut Reader<'_>,
    v: Version,
    owner: Owner,
) -> Result<Properties, DecodeError> {
    if v.is_v5() {
        Properties::decode(r, owner)
    } else {
        Ok(Properties::default())
    }
}

fn pid(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    let pid = r.u16()?;
    if pid == 0 {
        // [MQTT-2.3.1-1]
        return Err(DecodeError::Malformed("packet identifier 0"));
    }
    Ok(pid)
}

fn connect(mut r: Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    let bridge = level & 0x80 != 0;
    let version = match (name, level & 0x7f) {
        ("MQTT", 4) => Version::V311,
        ("MQTT", 5) => Version::V5,
        ("MQIsdp", 3) => Version::V31,
        ("MQTT", l) | ("MQIsdp", l) => return Err(DecodeError::UnsupportedVersion(l)),
        _ => return Err(DecodeError::BadProtocolName),
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        // [MQTT-3.1.2-3]
        return Err(DecodeError::Malformed("reserved connect flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        // [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15]
        return Err(DecodeError::Malformed("will QoS or retain without a will"));
    }
    if password_flag && !username_flag && version != Version::V5 {
        // [MQTT-3.1.2-22]
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = read_properties(&mut r, version, Owner::Connect)?;
    let client_id = r.string()?.to_owned();
    let will = if will_flag {
        let properties = read_properties(&mut r, version, Owner::Will)?;
        let topic = r.string()?;
        if !valid_topic_name(topic) {
            return Err(DecodeError::BadTopicName);
        }
        let payload = Bytes::copy_from_slice(r.binary()?);
        Some(Will {
            topic: Arc::from(topic),
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?.to_owned())
    } else {
        None
    };
    let password = if password_flag {
        Some(Bytes::copy_from_slice(r.binary()?))
    } else {
        None
    };
    expect_empty(r)?;
    Ok(Connect {
        version,
        bridge,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(mut r: Reader<'_>, version: Version) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xfe != 0 {
        // [MQTT-3.2.2-1]
        return Err(DecodeError::Malformed("reserved connack flag set"));
    }
    let code = r.u8()?;
    let properties = if version.is_v5() && !r.is_empty() {
        Properties::decode(&mut r, Owner::ConnAck)?
    } else {
        Properties::default()
    };
    expect_empty(r)?;
    Ok(ConnAck {
        session_present: flags & 1 != 0,
        code,
        properties,
    })
}

/// DUP, QoS and RETAIN of a PUBLISH's fixed header flags.
fn publish_flags(flags: u8) -> Result<(bool, QoS, bool), DecodeError> {
    let dup = flags & 0x08 != 0;
    let retain = flags & 0x01 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("QoS 3"))?; // [MQTT-3.3.1-4]
    if qos == QoS::AtMostOnce && dup {
        // [MQTT-3.3.1-2]
        return Err(DecodeError::Malformed("DUP set on a QoS 0 message"));
    }
    Ok((dup, qos, retain))
}

fn publish(flags: u8, mut r: Reader<'_>, version: Version) -> Result<Publish, DecodeError> {
    let (dup, qos, retain) = publish_flags(flags)?;
    let topic = r.string()?;
    let pid = if qos == QoS::AtMostOnce {
        0
    } else {
        pid(&mut r)?
    };
    let properties = read_properties(&mut r, version, Owner::Publish)?;
    // An empty topic is allowed only when a topic alias stands for it. [MQTT-3.3.2-1]
    let alias_only = topic.is_empty() && properties.topic_alias.is_some();
    if !alias_only && !valid_topic_name(topic) {
        return Err(DecodeError::BadTopicName);
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic: Arc::from(topic),
        pid,
        payload: Bytes::copy_from_slice(r.rest()),
        properties,
    })
}

/// Reason code and properties of the 5.0 acknowledgements, both optional on the wire.
fn reason_and_properties(mut r: Reader<'_>, owner: Owner) -> Result<(u8, Properties), DecodeError> {
    let reason = if r.is_empty() { 0 } else { r.u8()? };
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        Properties::decode(&mut r, owner)?
    };
    expect_empty(r)?;
    Ok((reason, properties))
}

fn ack(mut r: Reader<'_>, version: Version, owner: Owner) -> Result<Ack, DecodeError> {
    let pid = pid(&mut r)?;
    if !version.is_v5() {
        expect_empty(r)?;
        return Ok(Ack::new(pid));
    }
    let (reason, properties) = reason_and_properties(r, owner)?;
    Ok(Ack {
        pid,
        reason,
        properties,
    })
}

fn subscribe(mut r: Reader<'_>, version: Version) -> Result<Subscribe, DecodeError> {
    let pid = pid(&mut r)?;
    let properties = read_properties(&mut r, version, Owner::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let opts = r.u8()?;
        let reserved = if version.is_v5() { 0xc0 } else { 0xfc };
        if opts & reserved != 0 {
            // [MQTT-3.8.3-4] (3.1.1) [MQTT-3.8.3-5] (5.0)
            return Err(DecodeError::Malformed(
                "reserved subscription option bits set",
            ));
        }
        let qos = QoS::from_u8(opts & 3).ok_or(DecodeError::Malformed("QoS 3"))?;
        let retain_handling = (opts >> 4) & 3;
        if retain_handling == 3 {
            return Err(DecodeError::Protocol("retain handling 3"));
        }
        if !valid_topic_filter(filter) {
            return Err(DecodeError::BadTopicFilter);
        }
        let no_local = opts & 0x04 != 0;
        if no_local && version.is_v5() && filter.starts_with("$share/") {
            // [MQTT-3.8.3-4] in 5.0 numbering: no local on a shared subscription.
            return Err(DecodeError::Protocol("no local on a shared subscription"));
        }
        filters.push((
            filter.to_owned(),
            SubOptions {
                qos,
                no_local,
                retain_as_published: opts & 0x08 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        // [MQTT-3.8.3-3]
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        pid,
        filters,
        properties,
    })
}

fn suback(mut r: Reader<'_>, version: Version) -> Result<SubAck, DecodeError> {
    let pid = pid(&mut r)?;
    let properties = read_properties(&mut r, version, Owner::SubAck)?;
    let codes = r.rest().to_vec();
    if codes.is_empty() {
        return Err(DecodeError::Malformed("SUBACK without return codes"));
    }
    Ok(SubAck {
        pid,
        codes,
        properties,
    })
}

fn unsubscribe(mut r: Reader<'_>, version: Version) -> Result<Unsubscribe, DecodeError> {
    let pid = pid(&mut r)?;
    let properties = read_properties(&mut r, version, Owner::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        if !valid_topic_filter(filter) {
            return Err(DecodeError::BadTopicFilter);
        }
        filters.push(filter.to_owned());
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2]
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        pid,
        filters,
        properties,
    })
}

fn unsuback(mut r: Reader<'_>, version: Version) -> Result<UnsubAck, DecodeError> {
    let pid = pid(&mut r)?;
    if !version.is_v5() {
        expect_empty(r)?;
        return Ok(UnsubAck {
            pid,
            codes: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = Properties::decode(&mut r, Owner::UnsubAck)?;
    Ok(UnsubAck {
        pid,
        codes: r.rest().to_vec(),
        properties,
    })
}

fn disconnect(r: Reader<'_>, version: Version) -> Result<Disconnect, DecodeError> {
    if !version.is_v5() {
        expect_empty(r)?;
        return Ok(Disconnect::default());
    }
    let (reason, properties) = reason_and_properties(r, Owner::Disconnect)?;
    Ok(Disconnect { reason, properties })
}
