//! Just enough DER to read an X.509 certificate's subject: its common name, for
//! `use_identity_as_username`, and the whole name as RFC 2253 text the way OpenSSL's
//! `X509_NAME_print_ex(..., XN_FLAG_RFC2253)` writes it, for `use_subject_as_username`.
//! Every read is bounds-checked; malformed input gives `None`, never a panic.

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

/// The subject Name of a certificate: its RDN SETs, DER order.
fn subject(cert: &[u8]) -> Option<&[u8]> {
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
    expect(r, SEQUENCE).map(|(name, _)| name)
}

/// One AttributeTypeAndValue: (RDN index, OID contents, value TLV: tag, contents, whole).
type Ava<'a> = (usize, &'a [u8], u8, &'a [u8], &'a [u8]);

/// Every AttributeTypeAndValue of a Name, in DER order, with the index of its RDN.
fn avas(mut name: &[u8]) -> Option<Vec<Ava<'_>>> {
    let mut out = Vec::new();
    let mut rdn = 0;
    while !name.is_empty() {
        let (mut set, rest) = expect(name, SET)?;
        name = rest;
        while !set.is_empty() {
            let (atv, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(atv, OID)?;
            let (tag, content, after) = tlv(value)?;
            let whole = value.get(..value.len() - after.len())?;
            out.push((rdn, oid, tag, content, whole));
        }
        rdn += 1;
    }
    Some(out)
}

/// The first common name in the certificate's subject.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let name = subject(cert)?;
    let (_, _, tag, val, _) = avas(name)?.into_iter().find(|a| a.1 == CN_OID)?;
    string(tag, val)
}

/// OpenSSL's short names (`OBJ_nid2sn`) of the attributes certificates carry; any other
/// attribute is written as its dotted OID with the value as `#` and the DER in hex, as
/// OpenSSL does for the objects it does not know (`XN_FLAG_DUMP_UNKNOWN_FIELDS`).
const SHORT_NAMES: &[(&[u8], &str)] = &[
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x55, 0x04, 0x04], "SN"),
    (&[0x55, 0x04, 0x05], "serialNumber"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x09], "street"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x55, 0x04, 0x0c], "title"),
    (&[0x55, 0x04, 0x0d], "description"),
    (&[0x55, 0x04, 0x0f], "businessCategory"),
    (&[0x55, 0x04, 0x11], "postalCode"),
    (&[0x55, 0x04, 0x29], "name"),
    (&[0x55, 0x04, 0x2a], "GN"),
    (&[0x55, 0x04, 0x2b], "initials"),
    (&[0x55, 0x04, 0x2c], "generationQualifier"),
    (&[0x55, 0x04, 0x2e], "dnQualifier"),
    (&[0x55, 0x04, 0x41], "pseudonym"),
    (&[0x55, 0x04, 0x48], "role"),
    (&[0x55, 0x04, 0x61], "organizationIdentifier"),
    // 1.2.840.113549.1.9.1
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        "emailAddress",
    ),
    // 0.9.2342.19200300.100.1.25 and .1
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        "DC",
    ),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        "UID",
    ),
];

/// Dotted decimal of an OID's contents; `None` if malformed or an arc exceeds 64 bits.
fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    let mut pending = false;
    for &b in oid {
        if !pending && b == 0x80 {
            return None; // non-minimal
        }
        v = v.checked_mul(128)?.checked_add(u64::from(b & 0x7f))?;
        pending = b & 0x80 != 0;
        if !pending {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    if pending || arcs.is_empty() {
        return None;
    }
    let text: Vec<String> = arcs.iter().map(u64::to_string).collect();
    Some(text.join("."))
}

fn hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// A string value's bytes as OpenSSL prints them, before escaping: UTF8String as it is (it
/// takes the bytes one by one "to avoid converting twice", valid or not), the 8-bit types as
/// Latin-1, BMPString (two bytes a character) and UniversalString (four) converted to UTF-8.
/// `Some(None)`: a type it dumps as hex instead; `None`: a truncated character, on which
/// OpenSSL fails too.
fn value_bytes(tag: u8, val: &[u8]) -> Option<Option<Vec<u8>>> {
    let width = match tag {
        0x0c => return Some(Some(val.to_vec())),
        // Numeric, Printable, T61, IA5, UTCTime, GeneralizedTime, Visible.
        0x12 | 0x13 | 0x14 | 0x16 | 0x17 | 0x18 | 0x1a => 1,
        0x1c => 4,
        0x1e => 2,
        _ => return Some(None),
    };
    if val.len() % width != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(val.len());
    for c in val.chunks_exact(width) {
        utf8_putc(
            c.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)),
            &mut out,
        );
    }
    Some(Some(out))
}

/// OpenSSL's `UTF8_putc`, which also encodes what UTF-8 proper excludes (surrogates from a
/// BMPString, values past U+10FFFF from a UniversalString), as the printing does.
fn utf8_putc(c: u32, out: &mut Vec<u8>) {
    let n = match c {
        0..=0x7f => {
            out.push(c as u8);
            return;
        }
        0x80..=0x7ff => 2,
        0x800..=0xffff => 3,
        0x1_0000..=0x1f_ffff => 4,
        0x20_0000..=0x3ff_ffff => 5,
        _ => 6,
    };
    let lead: u8 = match n {
        2 => 0xc0,
        3 => 0xe0,
        4 => 0xf0,
        5 => 0xf8,
        _ => 0xfc,
    };
    out.push(lead | (c >> (6 * (n - 1))) as u8 & (0x7f >> n));
    for i in (0..n - 1).rev() {
        out.push(0x80 | ((c >> (6 * i)) & 0x3f) as u8);
    }
}

/// Appends `bytes` escaped as `ASN1_STRFLGS_RFC2253` does: `,+"\<>;` with a backslash, as
/// are `#` first and a space first or last; control characters and every byte above 0x7f as
/// `\XX`.
fn escape(out: &mut String, bytes: &[u8]) {
    let last = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';')
            || (i == 0 && (b == b'#' || b == b' '))
            || (i == last && b == b' ');
        if special {
            out.push('\\');
            out.push(char::from(b));
        } else if !(0x20..0x7f).contains(&b) {
            out.push('\\');
            hex(out, &[b]);
        } else {
            out.push(char::from(b));
        }
    }
}

/// The certificate's subject as `X509_NAME_print_ex(..., XN_FLAG_RFC2253)` writes it:
/// attributes last to first (`XN_FLAG_DN_REV`, multi-valued RDNs included), `,` between RDNs
/// and `+` inside one, OpenSSL's short names, values escaped per RFC 2253 and converted to
/// UTF-8 with the non-ASCII bytes as `\XX`, other value types as `#` and their DER in hex.
pub fn subject_rfc2253(cert: &[u8]) -> Option<String> {
    let name = subject(cert)?;
    let mut out = String::new();
    let mut prev: Option<usize> = None;
    for (rdn, oid, tag, val, whole) in avas(name)?.into_iter().rev() {
        if let Some(p) = prev {
            out.push(if p == rdn { '+' } else { ',' });
        }
        prev = Some(rdn);
        let known = SHORT_NAMES.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n);
        match known {
            Some(n) => out.push_str(n),
            None => out.push_str(&dotted(oid)?),
        }
        out.push('=');
        match value_bytes(tag, val)? {
            Some(bytes) if known.is_some() => escape(&mut out, &bytes),
            _ => {
                out.push('#');
                hex(&mut out, whole);
            }
        }
    }
    Some(out)
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

    /// (OID, tag, value) of one attribute.
    type Attr<'a> = (&'a [u8], u8, &'a [u8]);

    /// A certificate whose subject has these RDNs (each a list of attributes).
    fn cert_with_rdns(rdns: &[&[Attr<'_>]]) -> Vec<u8> {
        let mut name = Vec::new();
        for rdn in rdns {
            let mut set = Vec::new();
            for (oid, tag, val) in *rdn {
                let mut atv = wrap(OID, oid);
                atv.extend(wrap(*tag, val));
                set.extend(wrap(SEQUENCE, &atv));
            }
            name.extend(wrap(SET, &set));
        }
        let mut tbs = wrap(CONTEXT_0, &wrap(0x02, &[2]));
        tbs.extend(wrap(0x02, &[1, 2, 3]));
        tbs.extend(wrap(SEQUENCE, &wrap(OID, &[1, 2])));
        tbs.extend(wrap(SEQUENCE, &[]));
        tbs.extend(wrap(SEQUENCE, &[]));
        tbs.extend(wrap(SEQUENCE, &name));
        wrap(SEQUENCE, &wrap(SEQUENCE, &tbs))
    }

    const C: &[u8] = &[0x55, 0x04, 0x06];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const OU: &[u8] = &[0x55, 0x04, 0x0b];
    const UID: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01];

    /// What `openssl x509 -nameopt RFC2253` prints for the same names (checked with
    /// OpenSSL 3 for the ones `openssl req` can make; tests/tls.rs compares certificates
    /// made by it with Mosquitto 2.0.11).
    #[test]
    fn subject_as_rfc2253() {
        let c = cert_with_rdns(&[
            &[(C, 0x13, b"DE")],
            &[(O, 0x0c, b"Acme, Inc.")],
            &[(CN_OID.as_slice(), 0x0c, b"#sensor 7 ")],
        ]);
        assert_eq!(
            subject_rfc2253(&c).as_deref(),
            Some(r"CN=\#sensor 7\ ,O=Acme\, Inc.,C=DE")
        );
        // Multi-valued RDN reversed too; RFC 2253 specials; a control character and
        // UTF-8 bytes as \XX; a Latin-1 T61String converted to UTF-8 first.
        let c = cert_with_rdns(&[
            &[(OU, 0x0c, "R+D;<x> \"q\" \\ é\u{1}".as_bytes())],
            &[(CN_OID.as_slice(), 0x0c, b"a"), (UID, 0x0c, b"b")],
            &[(O, 0x14, &[b'm', 0xe9])],
        ]);
        assert_eq!(
            subject_rfc2253(&c).as_deref(),
            Some(r#"O=m\C3\A9,UID=b+CN=a,OU=R\+D\;\<x\> \"q\" \\ \C3\A9\01"#)
        );
        // BMPString; an unknown attribute and a known one of a non-string type as #DER.
        let c = cert_with_rdns(&[
            &[(&[0x2a, 0x03, 0x04], 0x0c, b"custom")],
            &[(CN_OID.as_slice(), 0x1e, &[0, b'h', 0x00, 0xfc])],
            &[(O, 0x04, &[1, 2])],
        ]);
        assert_eq!(
            subject_rfc2253(&c).as_deref(),
            Some("O=#04020102,CN=h\\C3\\BC,1.2.3.4=#0C06637573746F6D")
        );
        assert_eq!(subject_rfc2253(&cert_with_rdns(&[])).as_deref(), Some(""));
        // A BMPString cut in the middle of a character: OpenSSL fails, so does this.
        let c = cert_with_rdns(&[&[(CN_OID.as_slice(), 0x1e, &[0, b'h', 0])]]);
        assert_eq!(subject_rfc2253(&c), None);
    }

    #[test]
    fn dotted_oids() {
        assert_eq!(dotted(&[0x2a, 0x03, 0x04]).as_deref(), Some("1.2.3.4"));
        assert_eq!(dotted(&[0x55, 0x04, 0x03]).as_deref(), Some("2.5.4.3"));
        assert_eq!(dotted(&[0x88, 0x37, 0x01]).as_deref(), Some("2.999.1"));
        assert_eq!(dotted(&[0x2a, 0x83]), None, "truncated arc");
        assert_eq!(dotted(&[0x80, 0x01]), None, "non-minimal arc");
        assert_eq!(dotted(&[0xff; 12]), None, "arc past 64 bits");
        assert_eq!(dotted(&[]), None);
    }

    /// Every prefix, and every single-byte corruption, of a certificate gives an answer
    /// or `None`, never a panic.
    #[test]
    fn rfc2253_never_panics() {
        let c = cert_with_rdns(&[
            &[(OU, 0x1c, &[0, 0, 0, b'a', 0, 0x10, 0xff, 0xff])],
            &[(CN_OID.as_slice(), 0x0c, b"x"), (UID, 0x1e, &[0xd8, 0x00])],
            &[(&[0x2a, 0x03, 0x04], 0x13, b"y")],
        ]);
        assert!(subject_rfc2253(&c).is_some());
        for n in 0..c.len() {
            assert_eq!(subject_rfc2253(&c[..n]), None, "prefix {n}");
        }
        for i in 0..c.len() {
            for v in [0x00, 0x7f, 0x80, 0x81, 0x84, 0xff] {
                let mut d = c.clone();
                d[i] = v;
                let _ = subject_rfc2253(&d);
                let _ = subject_common_name(&d);
            }
        }
    }
}
