//! Primitive field readers and writers: integers, variable byte integers, strings, binary data.
//!
//! [`Reader`] checks every read against the bytes it holds and never panics; the `put_*`
//! writers append to a `BytesMut` that grows as needed.

use super::DecodeError;
use bytes::{BufMut, BytesMut};

/// The largest value a variable byte integer can carry (four bytes). [MQTT-1.5.5]
pub const VARINT_MAX: u32 = 268_435_455;

/// A cursor over the body of one packet.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

const SHORT: DecodeError = DecodeError::Malformed("packet shorter than its fields");

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything not read yet, without consuming it.
    pub fn remaining_slice(&self) -> &'a [u8] {
        self.buf
    }

    /// Everything not read yet, consuming the reader.
    pub fn rest(self) -> &'a [u8] {
        self.buf
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(SHORT)?;
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, tail) = self.buf.split_first().ok_or(SHORT)?;
        self.buf = tail;
        Ok(b)
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_be_bytes(a))
    }

    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(self.buf)? {
            Some((v, n)) => {
                self.buf = self.buf.get(n..).unwrap_or_default();
                Ok(v)
            }
            None => Err(SHORT),
        }
    }

    /// Binary data: two-byte length, then the bytes. [MQTT-1.5.6]
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.take(n as usize)
    }

    /// UTF-8 string: two-byte length, then well-formed UTF-8 without U+0000. [MQTT-1.5.4]
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.binary()?;
        utf8(b)
    }
}

/// Checks a string the way [MQTT-1.5.4-1] and [MQTT-1.5.4-2] require.
pub fn utf8(b: &[u8]) -> Result<&str, DecodeError> {
    let s = std::str::from_utf8(b).map_err(|_| DecodeError::BadUtf8)?;
    if s.contains('\0') {
        return Err(DecodeError::BadUtf8);
    }
    Ok(s)
}

/// Reads a variable byte integer. `Ok(None)`: more bytes needed; an error for a fifth byte or
/// for a value not written in its shortest form. [MQTT-1.5.5-1]
pub fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(DecodeError::MalformedLength);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::MalformedLength)
}

pub fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// `v` (clamped to [`VARINT_MAX`]) as a variable byte integer: its bytes, and how many
/// of the four it takes.
pub fn varint_bytes(v: u32) -> ([u8; 4], usize) {
    let mut v = v.min(VARINT_MAX);
    let mut out = [0u8; 4];
    let mut n = 0;
    for b in out.iter_mut() {
        *b = (v & 0x7f) as u8;
        v >>= 7;
        n += 1;
        if v == 0 {
            break;
        }
        *b |= 0x80;
    }
    (out, n)
}

/// Writes `v` (clamped to [`VARINT_MAX`]) as a variable byte integer.
pub fn put_varint(out: &mut BytesMut, v: u32) {
    let (b, n) = varint_bytes(v);
    out.extend_from_slice(b.get(..n).unwrap_or_default());
}

/// Length on the wire of a string or binary field. Fields longer than 65,535 bytes are cut.
pub fn binary_len(b: &[u8]) -> usize {
    2 + b.len().min(u16::MAX as usize)
}

pub fn put_binary(out: &mut BytesMut, b: &[u8]) {
    let n = b.len().min(u16::MAX as usize);
    out.put_u16(n as u16);
    out.put_slice(b.get(..n).unwrap_or_default());
}

pub fn put_string(out: &mut BytesMut, s: &str) {
    put_binary(out, s.as_bytes());
}
