//! A tiny MQTT 3.1.1 encoder and decoder, just enough for the load generator. Independent of the
//! rmqtt crate on purpose, so the benchmark measures the brokers on the wire only. The decoder
//! never panics on input: every read is bounds-checked and malformed bytes give `Err`.

/// Packets the load generator receives from a broker (or from the relay), borrowed from the
/// read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Connack {
        session_present: bool,
        code: u8,
    },
    Publish {
        qos: u8,
        retain: bool,
        dup: bool,
        pid: u16,
        topic: &'a [u8],
        payload: &'a [u8],
    },
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    Suback {
        pid: u16,
        codes: &'a [u8],
    },
    Unsuback(u16),
    Pingresp,
    /// Anything a client does not expect from a broker (CONNECT, SUBSCRIBE, ...), by type.
    Other(u8),
}

/// The input cannot be MQTT: a bad remaining length, flags or a packet too short for its kind.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Largest packet the generator accepts; a 256 KiB payload plus headers fits easily.
pub const MAX_PACKET: usize = 16 << 20;

fn put_len(buf: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

/// CONNECT, MQTT 3.1.1, clean session, no will, no credentials.
pub fn connect(buf: &mut Vec<u8>, client_id: &[u8], keepalive: u16) {
    buf.push(0x10);
    put_len(buf, 10 + 2 + client_id.len());
    put_str(buf, b"MQTT");
    buf.push(4);
    buf.push(0x02);
    buf.extend_from_slice(&keepalive.to_be_bytes());
    put_str(buf, client_id);
}

pub fn subscribe(buf: &mut Vec<u8>, pid: u16, filter: &[u8], qos: u8) {
    buf.push(0x82);
    put_len(buf, 2 + 2 + filter.len() + 1);
    buf.extend_from_slice(&pid.to_be_bytes());
    put_str(buf, filter);
    buf.push(qos);
}

/// PUBLISH with the payload written by `fill`, so callers can stamp sequence numbers in place
/// without building the payload separately.
pub fn publish_with(
    buf: &mut Vec<u8>,
    topic: &[u8],
    qos: u8,
    retain: bool,
    pid: u16,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) {
    buf.push(0x30 | (qos << 1) | u8::from(retain));
    let id_len = if qos > 0 { 2 } else { 0 };
    put_len(buf, 2 + topic.len() + id_len + payload_len);
    put_str(buf, topic);
    if qos > 0 {
        buf.extend_from_slice(&pid.to_be_bytes());
    }
    let start = buf.len();
    buf.resize(start + payload_len, 0);
    if let Some(body) = buf.get_mut(start..) {
        fill(body);
    }
}

fn ack(buf: &mut Vec<u8>, first: u8, pid: u16) {
    buf.push(first);
    buf.push(2);
    buf.extend_from_slice(&pid.to_be_bytes());
}

pub fn puback(buf: &mut Vec<u8>, pid: u16) {
    ack(buf, 0x40, pid);
}

pub fn pubrec(buf: &mut Vec<u8>, pid: u16) {
    ack(buf, 0x50, pid);
}

pub fn pubrel(buf: &mut Vec<u8>, pid: u16) {
    ack(buf, 0x62, pid);
}

pub fn pubcomp(buf: &mut Vec<u8>, pid: u16) {
    ack(buf, 0x70, pid);
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

/// Decodes one packet from the front of `buf`. `Ok(None)`: more bytes needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, Malformed> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len: usize = 0;
    let mut shift = 0;
    let mut pos = 1;
    loop {
        let Some(&b) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(Malformed("remaining length longer than 4 bytes"));
        }
    }
    if len > MAX_PACKET {
        return Err(Malformed("packet too large"));
    }
    let Some(body) = buf.get(pos..pos + len) else {
        return Ok(None);
    };
    let total = pos + len;
    let kind = first >> 4;
    let flags = first & 0x0f;
    let pid = || u16_at(body, 0).ok_or(Malformed("packet identifier missing"));
    let packet = match kind {
        2 => {
            let ack_flags = *body.first().ok_or(Malformed("short CONNACK"))?;
            let code = *body.get(1).ok_or(Malformed("short CONNACK"))?;
            Packet::Connack {
                session_present: ack_flags & 1 == 1,
                code,
            }
        }
        3 => {
            let qos = (flags >> 1) & 3;
            if qos == 3 {
                return Err(Malformed("PUBLISH with QoS 3"));
            }
            let tlen = usize::from(u16_at(body, 0).ok_or(Malformed("short PUBLISH"))?);
            let topic = body
                .get(2..2 + tlen)
                .ok_or(Malformed("short PUBLISH topic"))?;
            let mut at = 2 + tlen;
            let mut id = 0;
            if qos > 0 {
                id = u16_at(body, at).ok_or(Malformed("PUBLISH without packet id"))?;
                at += 2;
            }
            let payload = body.get(at..).ok_or(Malformed("short PUBLISH"))?;
            Packet::Publish {
                qos,
                retain: flags & 1 == 1,
                dup: flags & 8 == 8,
                pid: id,
                topic,
                payload,
            }
        }
        4 => Packet::Puback(pid()?),
        5 => Packet::Pubrec(pid()?),
        6 => Packet::Pubrel(pid()?),
        7 => Packet::Pubcomp(pid()?),
        9 => Packet::Suback {
            pid: pid()?,
            codes: body.get(2..).unwrap_or_default(),
        },
        11 => Packet::Unsuback(pid()?),
        13 => Packet::Pingresp,
        other => Packet::Other(other),
    };
    Ok(Some((packet, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_matches_the_spec_example_layout() {
        let mut b = Vec::new();
        connect(&mut b, b"ab", 60);
        assert_eq!(
            b,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'a', b'b']
        );
    }

    #[test]
    fn publish_round_trips_for_every_qos() {
        for qos in 0..3 {
            let mut b = Vec::new();
            publish_with(&mut b, b"a/b", qos, true, 7, 300, |p| p.fill(9));
            let (p, used) = decode(&b).unwrap().unwrap();
            assert_eq!(used, b.len());
            match p {
                Packet::Publish {
                    qos: q,
                    retain,
                    pid,
                    topic,
                    payload,
                    ..
                } => {
                    assert_eq!(q, qos);
                    assert!(retain);
                    assert_eq!(pid, if qos > 0 { 7 } else { 0 });
                    assert_eq!(topic, b"a/b");
                    assert_eq!(payload.len(), 300);
                    assert!(payload.iter().all(|&x| x == 9));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn acks_round_trip() {
        let mut b = Vec::new();
        puback(&mut b, 1);
        pubrec(&mut b, 2);
        pubrel(&mut b, 3);
        pubcomp(&mut b, 4);
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((p, n)) = decode(&b[at..]).unwrap() {
            got.push(format!("{p:?}"));
            at += n;
        }
        assert_eq!(got, ["Puback(1)", "Pubrec(2)", "Pubrel(3)", "Pubcomp(4)"]);
    }

    #[test]
    fn every_truncation_asks_for_more_bytes() {
        let mut b = Vec::new();
        publish_with(&mut b, b"t", 1, false, 1, 200, |_| {});
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(decode(&[0x36, 2, 0, 0]).is_err());
        assert!(decode(&[0x40, 1, 0]).is_err());
        assert!(decode(&[0x32, 3, 0, 5, b'a']).is_err());
    }

    #[test]
    fn suback_and_connack() {
        assert_eq!(
            decode(&[0x90, 3, 0, 1, 0x80]).unwrap().unwrap().0,
            Packet::Suback {
                pid: 1,
                codes: &[0x80]
            }
        );
        assert_eq!(
            decode(&[0x20, 2, 1, 5]).unwrap().unwrap().0,
            Packet::Connack {
                session_present: true,
                code: 5
            }
        );
    }
}
