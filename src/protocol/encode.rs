//! Packets to bytes. Encoders never panic; `encoded_len` is exact, so a caller can reserve once.
//!
//! Fields that cannot fit the wire format (strings over 65,535 bytes) are cut rather than
//! allowed to corrupt the stream; callers validate user input before it gets here.

use super::codec::{binary_len, put_binary, put_string, put_varint, varint_len};
use super::packet::kind;
use super::*;
use bytes::{BufMut, BytesMut};

fn props_len(v: Version, p: &Properties) -> usize {
    if v.is_v5() {
        p.encoded_len()
    } else {
        0
    }
}

fn put_props(out: &mut BytesMut, v: Version, p: &Properties) {
    if v.is_v5() {
        p.encode(out);
    }
}

/// Body length of a 5.0 ack-like packet in its shortest form (reason and properties omitted
/// when they are the defaults). [MQTT-3.4.2.1] [MQTT-3.14.2.1]
fn reason_len(v: Version, reason: u8, p: &Properties) -> usize {
    if !v.is_v5() || (reason == 0 && p.is_empty()) {
        0
    } else if p.is_empty() {
        1
    } else {
        1 + p.encoded_len()
    }
}

fn put_reason(out: &mut BytesMut, v: Version, reason: u8, p: &Properties) {
    if !v.is_v5() || (reason == 0 && p.is_empty()) {
        return;
    }
    out.put_u8(reason);
    if !p.is_empty() {
        p.encode(out);
    }
}

/// What a PUBLISH carries, borrowed, so the broker can encode one stored message for many
/// subscribers without building a `Publish` for each.
#[derive(Debug, Clone, Copy)]
pub struct PublishView<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: &'a str,
    pub pid: u16,
    pub payload: &'a [u8],
    pub properties: Option<&'a Properties>,
}

impl PublishView<'_> {
    fn body_len(&self, v: Version) -> usize {
        binary_len(self.topic.as_bytes())
            + if self.qos == QoS::AtMostOnce { 0 } else { 2 }
            + if v.is_v5() {
                self.properties.map_or(1, |p| p.encoded_len())
            } else {
                0
            }
            + self.payload.len()
    }

    pub fn encoded_len(&self, v: Version) -> usize {
        let body = self.body_len(v);
        1 + varint_len(body as u32) + body
    }

    pub fn encode(&self, v: Version, out: &mut BytesMut) {
        let body = self.body_len(v);
        out.reserve(1 + varint_len(body as u32) + body);
        // Fixed header and the topic's length in one write: this runs once per delivery.
        let mut head = [0u8; 7];
        let topic = self.topic.as_bytes();
        let topic = topic.get(..usize::from(u16::MAX)).unwrap_or(topic);
        let n = publish_head(
            &mut head,
            (kind::PUBLISH << 4)
                | (u8::from(self.dup) << 3)
                | (self.qos.as_u8() << 1)
                | u8::from(self.retain),
            body as u32,
            topic.len() as u16,
        );
        out.extend_from_slice(head.get(..n).unwrap_or_default());
        out.extend_from_slice(topic);
        if self.qos != QoS::AtMostOnce {
            out.extend_from_slice(&self.pid.to_be_bytes());
        }
        if v.is_v5() {
            match self.properties {
                Some(p) => p.encode(out),
                None => out.put_u8(0),
            }
        }
        out.put_slice(self.payload);
    }
}

/// A PUBLISH's first byte, remaining length (clamped to [`super::codec::VARINT_MAX`]) and
/// topic length into `head`; returns how many bytes they took (4 to 7).
fn publish_head(head: &mut [u8; 7], first: u8, body: u32, topic_len: u16) -> usize {
    let ([a, b, c, d], k) = super::codec::varint_bytes(body);
    let [hi, lo] = topic_len.to_be_bytes();
    *head = match k {
        1 => [first, a, hi, lo, 0, 0, 0],
        2 => [first, a, b, hi, lo, 0, 0],
        3 => [first, a, b, c, hi, lo, 0],
        _ => [first, a, b, c, d, hi, lo],
    };
    k.min(4) + 3
}

/// The four bytes of a 3.1/3.1.1 PUBACK, PUBREC, PUBREL or PUBCOMP (`kind::PUBACK`...) as
/// [`Packet::encode`] writes `Ack::new(pid)` in one, without building the packet.
pub fn short_ack_bytes(k: u8, pid: u16) -> [u8; 4] {
    let flags = if k == kind::PUBREL { 0x02 } else { 0 };
    let [hi, lo] = pid.to_be_bytes();
    [k << 4 | flags, 2, hi, lo]
}

impl Publish {
    pub fn view(&self) -> PublishView<'_> {
        PublishView {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            pid: self.pid,
            payload: &self.payload,
            properties: Some(&self.properties),
        }
    }
}

impl Packet {
    /// First byte of the fixed header.
    fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(p) => {
                (u8::from(p.dup) << 3) | (p.qos.as_u8() << 1) | u8::from(p.retain)
            }
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 2,
            _ => 0,
        };
        (self.kind() << 4) | flags
    }

    fn body_len(&self, v: Version) -> usize {
        match self {
            Packet::Connect(c) => {
                let cv = c.version;
                binary_len(cv.protocol_name().as_bytes())
                    + 1
                    + 1
                    + 2
                    + props_len(cv, &c.properties)
                    + binary_len(c.client_id.as_bytes())
                    + c.will.as_ref().map_or(0, |w| {
                        props_len(cv, &w.properties)
                            + binary_len(w.topic.as_bytes())
                            + binary_len(&w.payload)
                    })
                    + c.username.as_ref().map_or(0, |u| binary_len(u.as_bytes()))
                    + c.password.as_ref().map_or(0, |p| binary_len(p))
            }
            Packet::ConnAck(c) => 2 + props_len(v, &c.properties),
            Packet::Publish(p) => p.view().body_len(v),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                2 + reason_len(v, a.reason, &a.properties)
            }
            Packet::Subscribe(s) => {
                2 + props_len(v, &s.properties)
                    + s.filters
                        .iter()
                        .map(|(f, _)| binary_len(f.as_bytes()) + 1)
                        .sum::<usize>()
            }
            Packet::SubAck(s) => 2 + props_len(v, &s.properties) + s.codes.len(),
            Packet::Unsubscribe(u) => {
                2 + props_len(v, &u.properties)
                    + u.filters
                        .iter()
                        .map(|f| binary_len(f.as_bytes()))
                        .sum::<usize>()
            }
            Packet::UnsubAck(u) => {
                2 + if v.is_v5() {
                    u.properties.encoded_len() + u.codes.len()
                } else {
                    0
                }
            }
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => reason_len(v, d.reason, &d.properties),
            Packet::Auth(a) => reason_len(v, a.reason, &a.properties),
        }
    }

    /// Exact number of bytes [`Packet::encode`] writes for protocol version `v`.
    pub fn encoded_len(&self, v: Version) -> usize {
        let body = self.body_len(v);
        1 + varint_len(body as u32) + body
    }

    /// Appends the packet as protocol version `v` encodes it. CONNECT uses its own version.
    pub fn encode(&self, v: Version, out: &mut BytesMut) {
        if let Packet::Publish(p) = self {
            return p.view().encode(v, out);
        }
        let body = self.body_len(v);
        out.reserve(1 + varint_len(body as u32) + body);
        out.put_u8(self.first_byte());
        put_varint(out, body as u32);
        match self {
            Packet::Connect(c) => {
                let cv = c.version;
                put_string(out, cv.protocol_name());
                out.put_u8(cv.level() | if c.bridge { 0x80 } else { 0 });
                let mut flags = 0u8;
                if c.clean_start {
                    flags |= 0x02;
                }
                if let Some(w) = &c.will {
                    flags |= 0x04 | (w.qos.as_u8() << 3);
                    if w.retain {
                        flags |= 0x20;
                    }
                }
                if c.password.is_some() {
                    flags |= 0x40;
                }
                if c.username.is_some() {
                    flags |= 0x80;
                }
                out.put_u8(flags);
                out.put_u16(c.keep_alive);
                put_props(out, cv, &c.properties);
                put_string(out, &c.client_id);
                if let Some(w) = &c.will {
                    put_props(out, cv, &w.properties);
                    put_string(out, &w.topic);
                    put_binary(out, &w.payload);
                }
                if let Some(u) = &c.username {
                    put_string(out, u);
                }
                if let Some(p) = &c.password {
                    put_binary(out, p);
                }
            }
            Packet::ConnAck(c) => {
                out.put_u8(u8::from(c.session_present));
                out.put_u8(c.code);
                put_props(out, v, &c.properties);
            }
            Packet::Publish(_) => {}
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                out.put_u16(a.pid);
                put_reason(out, v, a.reason, &a.properties);
            }
            Packet::Subscribe(s) => {
                out.put_u16(s.pid);
                put_props(out, v, &s.properties);
                for (f, o) in &s.filters {
                    put_string(out, f);
                    out.put_u8(if v.is_v5() {
                        o.to_byte()
                    } else {
                        o.qos.as_u8()
                    });
                }
            }
            Packet::SubAck(s) => {
                out.put_u16(s.pid);
                put_props(out, v, &s.properties);
                out.put_slice(&s.codes);
            }
            Packet::Unsubscribe(u) => {
                out.put_u16(u.pid);
                put_props(out, v, &u.properties);
                for f in &u.filters {
                    put_string(out, f);
                }
            }
            Packet::UnsubAck(u) => {
                out.put_u16(u.pid);
                if v.is_v5() {
                    u.properties.encode(out);
                    out.put_slice(&u.codes);
                }
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => put_reason(out, v, d.reason, &d.properties),
            Packet::Auth(a) => put_reason(out, v, a.reason, &a.properties),
        }
    }
}

#[cfg(test)]
mod head_tests {
    use super::*;

    #[test]
    fn publish_head_is_the_fixed_header_and_topic_length() {
        for body in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
            u32::MAX,
        ] {
            let mut want = BytesMut::new();
            want.put_u8(0x32);
            put_varint(&mut want, body);
            want.put_u16(0x1234);
            let mut head = [0u8; 7];
            let n = publish_head(&mut head, 0x32, body, 0x1234);
            assert_eq!(&head[..n], &want[..], "body {body}");
        }
    }
}
