//! Codec tests: byte fixtures, round trips, truncation and malformed variants.

use super::*;
use bytes::BytesMut;

fn enc(p: &Packet, v: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out);
    assert_eq!(out.len(), p.encoded_len(v));
    out.to_vec()
}

#[test]
fn pingreq_fixture() {
    assert_eq!(enc(&Packet::PingReq, Version::V311), [0xc0, 0]);
    assert_eq!(
        decode(&[0xc0, 0], Version::V311, 1024),
        Ok(Some((Packet::PingReq, 2)))
    );
}
