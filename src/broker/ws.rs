//! WebSockets (RFC 6455) for MQTT listeners with `protocol websockets`: the HTTP/1.1 upgrade
//! and the framing, as pure functions over bytes.
//!
//! MQTT is a byte stream, so frame boundaries do not matter: binary frames (fragmented or not)
//! are unmasked and appended to the stream; one frame may hold several MQTT packets or part of
//! one. Never panics on input; every limit is checked before bytes are buffered.

use crate::auth::password::base64_encode;
use bytes::{Buf, BufMut, BytesMut};

/// Largest upgrade request accepted (Mosquitto's `websockets_headers_size` default is 4096).
pub const MAX_HEADERS: usize = 4096;
/// Largest frame payload accepted from a client once it has logged in. Before that the
/// event loop passes `max_connect_size` to [`decode_frames_max`].
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade request was not one we accept; the text says why (logged, and sent as 400).
    BadRequest(&'static str),
    /// A frame broke the protocol: close with this status code.
    Protocol(u16, &'static str),
    /// The upgrade came from a web page whose `Origin` is not in `websockets_origin`.
    Forbidden,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::BadRequest(w) => write!(f, "bad WebSocket upgrade request: {w}"),
            WsError::Protocol(code, w) => write!(f, "WebSocket protocol error {code}: {w}"),
            WsError::Forbidden => write!(f, "WebSocket upgrade from an Origin not allowed"),
        }
    }
}

fn header<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Answers an upgrade request at the front of `buf`. `Ok(None)`: headers not complete yet.
/// `Ok(Some((used, response)))`: the `101 Switching Protocols` response to send.
pub fn handshake(buf: &[u8]) -> Result<Option<(usize, Vec<u8>)>, WsError> {
    handshake_with(buf, &[])
}

/// [`handshake`] with an `Origin` allow-list: when `origins` is not empty, the request must
/// carry an `Origin` header equal (ignoring ASCII case) to one of them. Browsers always send
/// one, so this keeps web pages from other sites off the broker; clients that are not
/// browsers may send none and are then refused too.
pub fn handshake_with(buf: &[u8], origins: &[String]) -> Result<Option<(usize, Vec<u8>)>, WsError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEADERS {
            return Err(WsError::BadRequest("headers too large"));
        }
        return Ok(None);
    };
    if end > MAX_HEADERS {
        return Err(WsError::BadRequest("headers too large"));
    }
    let head = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| WsError::BadRequest("headers are not text"))?;
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    if parts.next() != Some("GET") {
        return Err(WsError::BadRequest("method is not GET"));
    }
    let _path = parts.next().ok_or(WsError::BadRequest("no path"))?;
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(WsError::BadRequest("not HTTP/1.1"));
    }
    let lines: Vec<&str> = lines.collect();
    if !header(&lines, "upgrade").is_some_and(|v| has_token(v, "websocket")) {
        return Err(WsError::BadRequest("no Upgrade: websocket"));
    }
    if !header(&lines, "connection").is_some_and(|v| has_token(v, "upgrade")) {
        return Err(WsError::BadRequest("no Connection: Upgrade"));
    }
    if header(&lines, "sec-websocket-version") != Some("13") {
        return Err(WsError::BadRequest("unsupported Sec-WebSocket-Version"));
    }
    let key = header(&lines, "sec-websocket-key").ok_or(WsError::BadRequest("no key"))?;
    if !origins.is_empty()
        && !header(&lines, "origin")
            .is_some_and(|o| origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
    {
        return Err(WsError::Forbidden);
    }
    // Browsers offer "mqtt"; older clients "mqttv3.1". Without the header we still talk MQTT.
    let protocol = match header(&lines, "sec-websocket-protocol") {
        Some(v) if has_token(v, "mqtt") => Some("mqtt"),
        Some(v) if has_token(v, "mqttv3.1") => Some("mqttv3.1"),
        Some(_) => return Err(WsError::BadRequest("no MQTT subprotocol offered")),
        None => None,
    };
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        base64_encode(digest.as_ref())
    );
    if let Some(p) = protocol {
        resp.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    resp.push_str("\r\n");
    Ok(Some((end + 4, resp.into_bytes())))
}

/// The answer to a refused upgrade.
pub fn bad_request() -> &'static [u8] {
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
}

/// The answer to an upgrade from an `Origin` not allowed.
pub fn forbidden() -> &'static [u8] {
    b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
}

/// What a run of frames asked for besides data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// Bytes to send back (pongs, the close reply).
    pub reply: Vec<u8>,
    /// The peer closed the WebSocket.
    pub closed: bool,
    /// Where the pong at the end of `reply` starts: a newer ping replaces it, so a ping
    /// flood costs one pong, not one per ping. [RFC 6455 5.5.3]
    pub pong_at: Option<usize>,
    /// Pings seen.
    pub pings: u32,
}

/// Reassembles client frames from `raw` (consumed as frames complete) into the MQTT byte
/// stream `data`. Control frames are answered in `ctl`.
pub fn decode_frames(
    raw: &mut BytesMut,
    data: &mut BytesMut,
    ctl: &mut Control,
) -> Result<(), WsError> {
    decode_frames_max(raw, data, ctl, MAX_FRAME)
}

/// [`decode_frames`] with frames larger than `max_frame` refused from their header.
pub fn decode_frames_max(
    raw: &mut BytesMut,
    data: &mut BytesMut,
    ctl: &mut Control,
    max_frame: usize,
) -> Result<(), WsError> {
    loop {
        let b = raw.as_ref();
        let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
            return Ok(());
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol(1002, "reserved bits set"));
        }
        let opcode = b0 & 0x0f;
        if b1 & 0x80 == 0 {
            // [RFC 6455 5.1] a client must mask every frame.
            return Err(WsError::Protocol(1002, "unmasked client frame"));
        }
        let (len, mut off) = match b1 & 0x7f {
            126 => match b.get(2..4).and_then(|l| <[u8; 2]>::try_from(l).ok()) {
                Some(l) => (usize::from(u16::from_be_bytes(l)), 4),
                None => return Ok(()),
            },
            127 => match b.get(2..10).and_then(|l| <[u8; 8]>::try_from(l).ok()) {
                Some(l) => (
                    usize::try_from(u64::from_be_bytes(l)).unwrap_or(usize::MAX),
                    10,
                ),
                None => return Ok(()),
            },
            n => (usize::from(n), 2),
        };
        let control = opcode & 0x08 != 0;
        if control && (len > 125 || !fin) {
            return Err(WsError::Protocol(1002, "bad control frame"));
        }
        if len > max_frame {
            return Err(WsError::Protocol(1009, "frame too large"));
        }
        let Some(mask) = b
            .get(off..off + 4)
            .and_then(|m| <[u8; 4]>::try_from(m).ok())
        else {
            return Ok(());
        };
        off += 4;
        let Some(payload) = b.get(off..off + len) else {
            return Ok(());
        };
        let key = |i: usize| mask.get(i % 4).copied().unwrap_or(0);
        if opcode == 0x1 {
            return Err(WsError::Protocol(1003, "text frames carry no MQTT"));
        }
        if !matches!(opcode, 0x0 | 0x2 | 0x8 | 0x9 | 0xA) {
            return Err(WsError::Protocol(1002, "unknown opcode"));
        }
        // Unmasked in place: no allocation per frame, whatever a peer sends.
        let mut small = [0u8; 125];
        if control {
            for (i, (d, &x)) in small.iter_mut().zip(payload).enumerate() {
                *d = x ^ key(i);
            }
        } else {
            // Continuation and binary frames carry the stream.
            let start = data.len();
            data.extend_from_slice(payload);
            if let Some(tail) = data.get_mut(start..) {
                for (i, x) in tail.iter_mut().enumerate() {
                    *x ^= key(i);
                }
            }
        }
        let body = small.get(..len).unwrap_or_default();
        raw.advance(off + len);
        match opcode {
            0x8 => {
                ctl.closed = true;
                // Echo the status code, as RFC 6455 5.5.1 asks.
                let code = body.get(..2).unwrap_or(&[0x03, 0xe8]);
                encode_frame(0x8, code, &mut ctl.reply);
                return Ok(());
            }
            0x9 => {
                ctl.pings = ctl.pings.saturating_add(1);
                if let Some(at) = ctl.pong_at.filter(|&at| at <= ctl.reply.len()) {
                    ctl.reply.truncate(at);
                }
                ctl.pong_at = Some(ctl.reply.len());
                encode_frame(0xA, body, &mut ctl.reply);
            }
            _ => {}
        }
    }
}

/// Appends one unmasked, final server frame.
pub fn encode_frame(opcode: u8, payload: &[u8], out: &mut impl BufMut) {
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.put_u8(n as u8),
        n @ 126..=65535 => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
}

/// A close frame with `code`, to send before closing on a protocol error.
pub fn close_frame(code: u16) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(0x8, &code.to_be_bytes(), &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut v = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n @ 0..=125 => v.push(0x80 | n as u8),
            n @ 126..=65535 => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    #[test]
    fn rfc_handshake_example() {
        let req = b"GET /mqtt HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Version: 13\r\n\r\nrest";
        let (used, resp) = handshake(req).unwrap().unwrap();
        assert_eq!(used, req.len() - 4);
        let resp = String::from_utf8(resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 "));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        for n in 0..req.len() - 4 {
            assert_eq!(handshake(&req[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn bad_requests() {
        let good = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n";
        assert!(handshake(format!("{good}\r\n").as_bytes())
            .unwrap()
            .is_some());
        for bad in [
            good.replace("GET", "POST"),
            good.replace("websocket", "h2c"),
            good.replace("Version: 13", "Version: 8"),
            good.replace("Sec-WebSocket-Key: x\r\n", ""),
            format!("{good}Sec-WebSocket-Protocol: chat\r\n"),
        ] {
            assert!(handshake(format!("{bad}\r\n").as_bytes()).is_err(), "{bad}");
        }
        assert!(handshake(&vec![b'a'; MAX_HEADERS + 1]).is_err());
    }

    #[test]
    fn frames_fragments_and_control() {
        let mut raw = BytesMut::new();
        raw.extend_from_slice(&masked(0x2, false, b"ab"));
        raw.extend_from_slice(&masked(0x9, true, b"hi"));
        raw.extend_from_slice(&masked(0x0, true, b"cd"));
        raw.extend_from_slice(&masked(0x2, true, &[7u8; 300]));
        let whole = raw.clone();
        // Byte at a time: the same stream comes out.
        let (mut data, mut ctl) = (BytesMut::new(), Control::default());
        let mut fed = BytesMut::new();
        for &b in whole.iter() {
            fed.put_u8(b);
            decode_frames(&mut fed, &mut data, &mut ctl).unwrap();
        }
        assert_eq!(&data[..4], b"abcd");
        assert_eq!(data.len(), 304);
        let mut pong = Vec::new();
        encode_frame(0xA, b"hi", &mut pong);
        assert_eq!(ctl.reply, pong);
        let mut close = BytesMut::from(&masked(0x8, true, &[0x03, 0xe8])[..]);
        let mut ctl = Control::default();
        decode_frames(&mut close, &mut data, &mut ctl).unwrap();
        assert!(ctl.closed);
    }

    #[test]
    fn ping_flood_costs_one_pong_and_frames_are_capped() {
        let mut raw = BytesMut::new();
        for i in 0..1000u16 {
            raw.extend_from_slice(&masked(0x9, true, &i.to_be_bytes()));
        }
        let (mut data, mut ctl) = (BytesMut::new(), Control::default());
        decode_frames(&mut raw, &mut data, &mut ctl).unwrap();
        let mut pong = Vec::new();
        encode_frame(0xA, &999u16.to_be_bytes(), &mut pong);
        assert_eq!(ctl.reply, pong, "only the most recent ping is answered");
        let big = masked(0x2, true, &[0; 200]);
        let mut raw = BytesMut::from(&big[..4]);
        let r = decode_frames_max(&mut raw, &mut data, &mut Control::default(), 100);
        assert_eq!(r, Err(WsError::Protocol(1009, "frame too large")));
        let mut raw = BytesMut::from(&big[..]);
        assert!(decode_frames_max(&mut raw, &mut data, &mut Control::default(), 200).is_ok());
    }

    #[test]
    fn origin_allow_list() {
        let req = |origin: &str| {
            format!(
                "GET /mqtt HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
            )
        };
        let allowed = ["http://router.lan".to_owned()];
        assert!(handshake_with(req("").as_bytes(), &[]).unwrap().is_some());
        assert!(
            handshake_with(req("Origin: http://evil.example\r\n").as_bytes(), &[])
                .unwrap()
                .is_some()
        );
        assert!(
            handshake_with(req("Origin: HTTP://Router.lan\r\n").as_bytes(), &allowed)
                .unwrap()
                .is_some()
        );
        for bad in [
            "",
            "Origin: http://evil.example\r\n",
            "Origin: http://router.lan.evil\r\n",
        ] {
            assert_eq!(
                handshake_with(req(bad).as_bytes(), &allowed),
                Err(WsError::Forbidden),
                "{bad}"
            );
        }
    }

    #[test]
    fn protocol_errors() {
        for (frame, code) in [
            (masked(0x1, true, b"text"), 1003),
            (masked(0x9, false, b"x"), 1002),
            (masked(0x9, true, &[0; 126]), 1002),
            (masked(0x3, true, b""), 1002),
            (vec![0x82, 0x00], 1002),
            (vec![0xc2, 0x80, 0, 0, 0, 0], 1002),
            (vec![0x82, 0xff, 0, 0, 0, 0, 0x10, 0, 0, 0], 1009),
        ] {
            let mut raw = BytesMut::from(&frame[..]);
            let r = decode_frames(&mut raw, &mut BytesMut::new(), &mut Control::default());
            assert!(
                matches!(r, Err(WsError::Protocol(c, _)) if c == code),
                "{frame:?}: {r:?}"
            );
        }
    }

    #[test]
    fn server_frame_lengths() {
        for n in [0usize, 125, 126, 65535, 65536] {
            let mut v = Vec::new();
            encode_frame(0x2, &vec![1; n], &mut v);
            let header = match n {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(v.len(), header + n);
        }
    }
}
