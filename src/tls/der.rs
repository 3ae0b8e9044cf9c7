//! Just enough DER to read an X.509 certificate's subject common name, for
//! `use_identity_as_username`. Every read is bounds-checked; malformed input gives `None`.

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const CONTEXT_0: u8 = 0xa0;
/// 2.5.4.3, id-at-commonName.
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];

/// One tag-length-value: (tag, contents, what follows).
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (lb, rest) = rest.split_at_checked(n)?;
        (
            lb.iter().fold(0usize, |l, &b| (l << 8) | usize::from(b)),
            rest,
        )
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

fn expect(buf: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, content, rest) = tlv(buf)?;
    (tag == want).then_some((content, rest))
}

fn string(tag: u8, val: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, TeletexString (treated as Latin-1 subset).
        0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(val).ok().map(str::to_owned),
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = val
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c.first().copied()?, c.get(1).copied()?]).into())
                .collect::<Option<Vec<u16>>>()?;
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// The first common name in the certificate's subject.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (cert, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut r = tbs;
    let (tag, _, rest) = tlv(r)?;
    if tag == CONTEXT_0 {
        r = rest;
    }
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        let (_, _, rest) = tlv(r)?;
        r = rest;
    }
    let (mut subject, _) = expect(r, SEQUENCE)?;
    while !subject.is_empty() {
        let (mut set, rest) = expect(subject, SET)?;
        subject = rest;
        while !set.is_empty() {
            let (atv, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(atv, OID)?;
            if oid == CN_OID {
                let (tag, val, _) = tlv(value)?;
                return string(tag, val);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if content.len() < 0x80 {
            v.push(content.len() as u8);
        } else {
            v.push(0x82);
            v.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(content);
        v
    }

    fn cert_with_subject(cn: &[u8], tag: u8) -> Vec<u8> {
        let mut atv = wrap(OID, &CN_OID);
        atv.extend(wrap(tag, cn));
        let mut o = wrap(OID, &[0x55, 0x04, 0x0a]);
        o.extend(wrap(0x0c, b"Org"));
        let mut rdns = wrap(SET, &wrap(SEQUENCE, &o));
        rdns.extend(wrap(SET, &wrap(SEQUENCE, &atv)));
        let subject = wrap(SEQUENCE, &rdns);
        let mut tbs = wrap(CONTEXT_0, &wrap(0x02, &[2]));
        tbs.extend(wrap(0x02, &[1, 2, 3]));
        tbs.extend(wrap(SEQUENCE, &wrap(OID, &[1, 2])));
        tbs.extend(wrap(SEQUENCE, &[]));
        tbs.extend(wrap(SEQUENCE, &[]));
        tbs.extend(subject);
        wrap(SEQUENCE, &wrap(SEQUENCE, &tbs))
    }

    #[test]
    fn finds_common_name() {
        let c = cert_with_subject(b"sensor-7", 0x0c);
        assert_eq!(subject_common_name(&c).as_deref(), Some("sensor-7"));
        let c = cert_with_subject(&[0, b'h', 0, b'i'], 0x1e);
        assert_eq!(subject_common_name(&c).as_deref(), Some("hi"));
    }

    #[test]
    fn truncation_never_panics() {
        let c = cert_with_subject(b"sensor-7", 0x13);
        for n in 0..c.len() {
            assert_eq!(subject_common_name(&c[..n]), None);
        }
        assert_eq!(subject_common_name(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
    }
}
