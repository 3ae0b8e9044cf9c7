//! How rmqtt_sub prints a message: plain, `-v`, or a `-F` format, byte for byte as
//! mosquitto_sub 2.0 (built with cJSON, as Debian's is) prints it.
//!
//! Times are printed in UTC (`+0000`): rmqtt links no C library for local time zones.
//! Never panics on any payload or format string.

use crate::protocol::{Publish, QoS};
use std::io::Write;

/// What `-F` needs beyond the message.
pub struct Style<'a> {
    pub format: Option<&'a str>,
    pub verbose: bool,
    pub eol: bool,
    pub pretty: bool,
}

/// Checks a `-F` format as mosquitto's `check_format` does; the error is its message.
pub fn check_format(f: &str) -> Result<(), String> {
    let b = f.as_bytes();
    let len = b.len();
    let incomplete = || Err("Error: Incomplete format specifier.\n".to_owned());
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut i = 0;
    while i < len {
        match b[i] {
            b'%' => {
                if i == len - 1 {
                    return incomplete();
                }
                if at(i + 1) == b'0' || at(i + 1) == b'-' {
                    i += 1;
                    if i == len - 1 {
                        return incomplete();
                    }
                }
                while at(i + 1).is_ascii_digit() {
                    i += 1;
                    if i == len - 1 {
                        return incomplete();
                    }
                }
                if at(i + 1) == b'.' {
                    i += 1;
                    if i == len - 1 {
                        return incomplete();
                    }
                    while at(i + 1).is_ascii_digit() {
                        i += 1;
                        if i == len - 1 {
                            return incomplete();
                        }
                    }
                }
                let c = at(i + 1);
                if !b"%ACDEFIlmPpqRSrtjJUxX".contains(&c) {
                    return Err(format!(
                        "Error: Invalid format specifier '{}'.\n",
                        char::from(c)
                    ));
                }
                i += 1;
            }
            b'@' => {
                if i == len - 1 {
                    return incomplete();
                }
                i += 1;
            }
            b'\\' => {
                if i == len - 1 {
                    return Err("Error: Incomplete escape specifier.\n".to_owned());
                }
                let c = at(i + 1);
                if !b"\\0aenrtv".contains(&c) {
                    return Err(format!(
                        "Error: Invalid escape specifier '{}'.\n",
                        char::from(c)
                    ));
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Wall-clock time, UTC, broken down.
#[derive(Clone, Copy)]
struct Tm {
    secs: i64,
    nanos: u32,
    year: i64,
    mon: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    wday: u32,
    yday: u32,
}

fn now() -> Tm {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let c = crate::civil::from_unix(secs);
    let (days, year, mon, day) = (c.days, c.year, c.month, c.day);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday =
        CUM.get(mon as usize - 1).copied().unwrap_or(0) + day - 1 + u32::from(leap && mon > 2);
    Tm {
        secs,
        nanos: d.subsec_nanos(),
        year,
        mon,
        day,
        hour: c.hour,
        min: c.minute,
        sec: c.second,
        wday: (days + 4).rem_euclid(7) as u32,
        yday,
    }
}

/// The `strftime` conversions people use in `@` specifiers; others print nothing.
fn strftime(out: &mut Vec<u8>, c: u8, t: &Tm) {
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    const MONS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let day = DAYS.get(t.wday as usize).copied().unwrap_or("");
    let mon = MONS.get(t.mon as usize - 1).copied().unwrap_or("");
    let _ = match c {
        b'Y' => write!(out, "{}", t.year),
        b'y' => write!(out, "{:02}", t.year.rem_euclid(100)),
        b'C' => write!(out, "{:02}", t.year.div_euclid(100)),
        b'm' => write!(out, "{:02}", t.mon),
        b'd' => write!(out, "{:02}", t.day),
        b'e' => write!(out, "{:2}", t.day),
        b'H' => write!(out, "{:02}", t.hour),
        b'I' => write!(out, "{:02}", (t.hour + 11) % 12 + 1),
        b'M' => write!(out, "{:02}", t.min),
        b'S' => write!(out, "{:02}", t.sec),
        b'p' => write!(out, "{}", if t.hour < 12 { "AM" } else { "PM" }),
        b'j' => write!(out, "{:03}", t.yday + 1),
        b'a' => write!(out, "{}", day.get(..3).unwrap_or("")),
        b'A' => write!(out, "{day}"),
        b'b' | b'h' => write!(out, "{}", mon.get(..3).unwrap_or("")),
        b'B' => write!(out, "{mon}"),
        b'u' => write!(out, "{}", if t.wday == 0 { 7 } else { t.wday }),
        b'w' => write!(out, "{}", t.wday),
        b's' => write!(out, "{}", t.secs),
        b'z' => write!(out, "+0000"),
        b'Z' => write!(out, "UTC"),
        b'F' => write!(out, "{}-{:02}-{:02}", t.year, t.mon, t.day),
        b'T' => write!(out, "{:02}:{:02}:{:02}", t.hour, t.min, t.sec),
        b'R' => write!(out, "{:02}:{:02}", t.hour, t.min),
        b'D' => write!(
            out,
            "{:02}/{:02}/{:02}",
            t.mon,
            t.day,
            t.year.rem_euclid(100)
        ),
        b'n' => writeln!(out),
        b't' => write!(out, "\t"),
        b'%' => write!(out, "%"),
        _ => Ok(()),
    };
}

fn pad_n(out: &mut Vec<u8>, pad: u8, n: i64) {
    for _ in 0..n.max(0) {
        out.push(pad);
    }
}

fn write_payload(out: &mut Vec<u8>, payload: &[u8], hex: u8, align: u8, pad: u8, width: i64) {
    let mut len = payload.len() as i64;
    let padlen;
    if width > 0 {
        if len > width {
            len = width;
        }
        if hex > 0 {
            len /= 2;
            padlen = width - len * 2;
        } else {
            padlen = width - len;
        }
    } else {
        padlen = width - len;
    }
    if align != b'-' {
        pad_n(out, pad, padlen);
    }
    let shown = payload.get(..len.max(0) as usize).unwrap_or(payload);
    match hex {
        0 => out.extend_from_slice(shown),
        1 => shown.iter().for_each(|b| {
            let _ = write!(out, "{b:02x}");
        }),
        _ => shown.iter().for_each(|b| {
            let _ = write!(out, "{b:02X}");
        }),
    }
    if align == b'-' {
        pad_n(out, b' ', padlen);
    }
}

fn print_int(out: &mut Vec<u8>, v: i64, align: u8, pad: u8, width: usize) {
    let _ = if width == 0 {
        write!(out, "{v}")
    } else if align == b'-' {
        write!(out, "{v:<width$}")
    } else if pad == b'0' {
        write!(out, "{v:0width$}")
    } else {
        write!(out, "{v:>width$}")
    };
}

fn print_str(out: &mut Vec<u8>, s: &str, align: u8, width: usize, precision: Option<usize>) {
    // printf counts bytes; so does this, on byte slices.
    let bytes = s.as_bytes();
    let shown = match precision {
        Some(p) => bytes.get(..p.min(bytes.len())).unwrap_or(bytes),
        None => bytes,
    };
    let padlen = width.saturating_sub(shown.len());
    if align != b'-' {
        pad_n(out, b' ', padlen as i64);
    }
    out.extend_from_slice(shown);
    if align == b'-' {
        pad_n(out, b' ', padlen as i64);
    }
}

fn blank(out: &mut Vec<u8>, pad: u8, width: usize) {
    pad_n(out, pad, width as i64);
}

/// A JSON string as cJSON prints it.
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 32 => {
                let _ = write!(out, "\\u{:04x}", c);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// `%j` / `%J`: the message as one JSON object. `Err` for `%J` when the payload is not JSON.
fn json_print(
    out: &mut Vec<u8>,
    m: &Publish,
    t: &Tm,
    escaped: bool,
    pretty: bool,
) -> Result<(), ()> {
    let payload = if escaped {
        let mut v = Vec::new();
        // cJSON takes the payload as a C string: it ends at the first NUL.
        let end = m
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(m.payload.len());
        json_string(&mut v, m.payload.get(..end).unwrap_or(&[]));
        v
    } else if m.payload.is_empty() {
        b"null".to_vec()
    } else {
        let mut v = Vec::new();
        json::reprint(&m.payload, &mut v, pretty, 1)?;
        v
    };
    let mut tst = Vec::new();
    let _ = write!(
        tst,
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z+0000",
        t.year,
        t.mon,
        t.day,
        t.hour,
        t.min,
        t.sec,
        t.nanos / 1000
    );
    let mut fields: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut ts = Vec::new();
    json_string(&mut ts, &tst);
    fields.push(("tst", ts));
    let mut topic = Vec::new();
    json_string(&mut topic, m.topic.as_bytes());
    fields.push(("topic", topic));
    fields.push(("qos", m.qos.as_u8().to_string().into_bytes()));
    fields.push(("retain", u8::from(m.retain).to_string().into_bytes()));
    fields.push(("payloadlen", m.payload.len().to_string().into_bytes()));
    if m.qos != QoS::AtMostOnce {
        fields.push(("mid", m.pid.to_string().into_bytes()));
    }
    if let Some(props) = json_properties(m, pretty) {
        fields.push(("properties", props));
    }
    fields.push(("payload", payload));
    json::object(out, &fields, pretty, 0);
    Ok(())
}

/// The v5 properties object cJSON builds for `%j`, if the message has properties.
fn json_properties(m: &Publish, pretty: bool) -> Option<Vec<u8>> {
    let p = &m.properties;
    if p.is_empty() {
        return None;
    }
    let mut fields: Vec<(&str, Vec<u8>)> = Vec::new();
    let s = |v: &[u8]| {
        let mut o = Vec::new();
        json_string(&mut o, v);
        o
    };
    if let Some(v) = p.payload_format_indicator {
        fields.push(("payload-format-indicator", v.to_string().into_bytes()));
    }
    if let Some(v) = p.message_expiry_interval {
        fields.push(("message-expiry-interval", v.to_string().into_bytes()));
    }
    if let Some(v) = &p.content_type {
        fields.push(("content-type", s(v.as_bytes())));
    }
    if let Some(v) = &p.response_topic {
        fields.push(("response-topic", s(v.as_bytes())));
    }
    if let Some(v) = &p.correlation_data {
        fields.push(("correlation-data", s(v)));
    }
    for v in &p.subscription_identifiers {
        fields.push(("subscription-identifier", v.to_string().into_bytes()));
    }
    if let Some(v) = p.topic_alias {
        fields.push(("topic-alias", v.to_string().into_bytes()));
    }
    if !p.user_properties.is_empty() {
        let user: Vec<(&str, Vec<u8>)> = p
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), s(v.as_bytes())))
            .collect();
        let mut o = Vec::new();
        json::object(&mut o, &user, pretty, 2);
        fields.push(("user-properties", o));
    }
    let mut o = Vec::new();
    json::object(&mut o, &fields, pretty, 1);
    Some(o)
}

/// Prints one message to stdout as `style` says, then flushes.
pub fn print_message(style: &Style<'_>, m: &Publish, quiet: bool) {
    let mut out = Vec::with_capacity(m.payload.len() + 64);
    if let Some(f) = style.format {
        formatted(&mut out, f, style, m, quiet);
    } else if style.verbose {
        if !m.payload.is_empty() {
            out.extend_from_slice(m.topic.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&m.payload);
            if style.eol {
                out.push(b'\n');
            }
        } else if style.eol {
            out.extend_from_slice(m.topic.as_bytes());
            out.extend_from_slice(b" (null)\n");
        }
    } else if !m.payload.is_empty() {
        out.extend_from_slice(&m.payload);
        if style.eol {
            out.push(b'\n');
        }
    }
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(&out);
    let _ = so.flush();
}

fn formatted(out: &mut Vec<u8>, f: &str, style: &Style<'_>, m: &Publish, quiet: bool) {
    let b = f.as_bytes();
    let len = b.len();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut time: Option<Tm> = None;
    let mut i = 0;
    while i < len {
        match at(i) {
            b'%' => {
                let mut align = 0u8;
                let mut pad = b' ';
                let mut width = 0usize;
                let mut precision: Option<usize> = None;
                if i < len - 1 {
                    i += 1;
                    if at(i) == b'-' {
                        align = b'-';
                        if i < len - 1 {
                            i += 1;
                        }
                    }
                    if at(i) == b'0' {
                        pad = b'0';
                        if i < len - 1 {
                            i += 1;
                        }
                    }
                    while i < len - 1 && at(i).is_ascii_digit() {
                        width = width
                            .saturating_mul(10)
                            .saturating_add(usize::from(at(i) - b'0'));
                        i += 1;
                    }
                    if at(i) == b'.' && i < len - 1 {
                        i += 1;
                        let mut p = 0usize;
                        while i < len - 1 && at(i).is_ascii_digit() {
                            p = p
                                .saturating_mul(10)
                                .saturating_add(usize::from(at(i) - b'0'));
                            i += 1;
                        }
                        precision = Some(p);
                    }
                    if i < len {
                        let t = *time.get_or_insert_with(now);
                        percent(
                            out,
                            at(i),
                            align,
                            pad,
                            width,
                            precision,
                            m,
                            &t,
                            style,
                            quiet,
                        );
                    }
                }
            }
            b'@' => {
                if i < len - 1 {
                    i += 1;
                    if at(i) == b'@' {
                        out.push(b'@');
                    } else {
                        let t = *time.get_or_insert_with(now);
                        if at(i) == b'N' {
                            let _ = write!(out, "{:09}", t.nanos);
                        } else {
                            strftime(out, at(i), &t);
                        }
                    }
                }
            }
            b'\\' => {
                if i < len - 1 {
                    i += 1;
                    match at(i) {
                        b'\\' => out.push(b'\\'),
                        b'0' => out.push(0),
                        b'a' => out.push(7),
                        b'e' => out.push(0x1b),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'v' => out.push(0x0b),
                        _ => {}
                    }
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    if style.eol {
        out.push(b'\n');
    }
}

#[allow(clippy::too_many_arguments)]
fn percent(
    out: &mut Vec<u8>,
    c: u8,
    align: u8,
    pad: u8,
    width: usize,
    precision: Option<usize>,
    m: &Publish,
    t: &Tm,
    style: &Style<'_>,
    quiet: bool,
) {
    let p = &m.properties;
    match c {
        b'%' => out.push(b'%'),
        b'A' => match p.topic_alias {
            Some(v) => print_int(out, i64::from(v), align, pad, width),
            None => blank(out, pad, width),
        },
        b'C' => match &p.content_type {
            Some(v) => print_str(out, v, align, width, precision),
            None => blank(out, b' ', width),
        },
        b'D' => {
            if let Some(v) = &p.correlation_data {
                out.extend_from_slice(v);
            }
        }
        b'E' => match p.message_expiry_interval {
            Some(v) => print_int(out, i64::from(v as i32), align, pad, width),
            None => blank(out, pad, width),
        },
        b'F' => match p.payload_format_indicator {
            Some(v) => print_int(out, i64::from(v), align, pad, width),
            None => blank(out, pad, width),
        },
        b'I' => {
            let mut s = Vec::new();
            for c in b"FTz" {
                strftime(&mut s, *c, t);
                if *c == b'F' {
                    s.push(b'T');
                }
            }
            print_str(out, &String::from_utf8_lossy(&s), align, width, precision);
        }
        b'j' | b'J' if json_print(out, m, t, c == b'j', style.pretty).is_err() && !quiet => {
            eprintln!(
                "Error: Message payload is not valid JSON on topic {}.",
                m.topic
            );
        }
        b'j' | b'J' => {}
        b'l' => print_int(out, m.payload.len() as i64, align, pad, width),
        b'm' => print_int(out, i64::from(m.pid), align, pad, width),
        b'P' => {
            for (n, (k, v)) in p.user_properties.iter().enumerate() {
                if n > 0 {
                    out.push(b' ');
                }
                let _ = write!(out, "{k}:{v}");
            }
        }
        b'p' => write_payload(out, &m.payload, 0, align, pad, width as i64),
        b'q' => out.push(b'0' + m.qos.as_u8()),
        b'R' => {
            if let Some(v) = &p.response_topic {
                print_str(out, v, align, width, precision);
            }
        }
        b'r' => out.push(if m.retain { b'1' } else { b'0' }),
        b'S' => match p.subscription_identifiers.first() {
            Some(&v) => print_int(out, i64::from(v as i32), align, pad, width),
            None => blank(out, pad, width),
        },
        b't' => print_str(out, &m.topic, align, width, precision),
        b'U' => {
            let _ = write!(out, "{}.{:09}", t.secs, t.nanos);
        }
        b'x' => write_payload(out, &m.payload, 1, align, pad, width as i64),
        b'X' => write_payload(out, &m.payload, 2, align, pad, width as i64),
        _ => {}
    }
}

/// Just enough JSON to do what cJSON does for `%J`: parse the payload and print it again,
/// minified or pretty (tabs), with cJSON's number and string forms.
mod json {
    use std::io::Write;

    pub fn object(out: &mut Vec<u8>, fields: &[(&str, Vec<u8>)], pretty: bool, depth: usize) {
        if fields.is_empty() {
            out.extend_from_slice(b"{}");
            return;
        }
        out.push(b'{');
        for (n, (k, v)) in fields.iter().enumerate() {
            if pretty {
                out.push(b'\n');
                indent(out, depth + 1);
            }
            super::json_string(out, k.as_bytes());
            out.push(b':');
            if pretty {
                out.push(b'\t');
            }
            out.extend_from_slice(v);
            if n + 1 < fields.len() {
                out.push(b',');
            }
        }
        if pretty {
            out.push(b'\n');
            indent(out, depth);
        }
        out.push(b'}');
    }

    fn indent(out: &mut Vec<u8>, depth: usize) {
        for _ in 0..depth {
            out.push(b'\t');
        }
    }

    struct P<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl P<'_> {
        fn ws(&mut self) {
            while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }
        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }
        fn lit(&mut self, s: &[u8]) -> Result<(), ()> {
            if self.b.get(self.i..self.i + s.len()) == Some(s) {
                self.i += s.len();
                Ok(())
            } else {
                Err(())
            }
        }
    }

    /// Parses `input` as one JSON value and prints it at nesting `depth`.
    pub fn reprint(input: &[u8], out: &mut Vec<u8>, pretty: bool, depth: usize) -> Result<(), ()> {
        let mut p = P { b: input, i: 0 };
        p.ws();
        value(&mut p, out, pretty, depth, 0)?;
        p.ws();
        if p.i != input.len() {
            return Err(());
        }
        Ok(())
    }

    fn value(
        p: &mut P<'_>,
        out: &mut Vec<u8>,
        pretty: bool,
        depth: usize,
        nest: usize,
    ) -> Result<(), ()> {
        if nest > 1000 {
            return Err(());
        }
        match p.peek().ok_or(())? {
            b'n' => p.lit(b"null").map(|_| out.extend_from_slice(b"null")),
            b't' => p.lit(b"true").map(|_| out.extend_from_slice(b"true")),
            b'f' => p.lit(b"false").map(|_| out.extend_from_slice(b"false")),
            b'"' => {
                let s = string(p)?;
                super::json_string(out, &s);
                Ok(())
            }
            b'[' => {
                p.i += 1;
                p.ws();
                out.push(b'[');
                if p.peek() == Some(b']') {
                    p.i += 1;
                    out.push(b']');
                    return Ok(());
                }
                loop {
                    p.ws();
                    value(p, out, pretty, depth, nest + 1)?;
                    p.ws();
                    match p.peek() {
                        Some(b',') => {
                            p.i += 1;
                            out.push(b',');
                            if pretty {
                                out.push(b' ');
                            }
                        }
                        Some(b']') => {
                            p.i += 1;
                            out.push(b']');
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'{' => {
                p.i += 1;
                p.ws();
                let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
                if p.peek() == Some(b'}') {
                    p.i += 1;
                } else {
                    loop {
                        p.ws();
                        if p.peek() != Some(b'"') {
                            return Err(());
                        }
                        let k = string(p)?;
                        p.ws();
                        p.lit(b":")?;
                        p.ws();
                        let mut v = Vec::new();
                        value(p, &mut v, pretty, depth + 1, nest + 1)?;
                        fields.push((String::from_utf8_lossy(&k).into_owned(), v));
                        p.ws();
                        match p.peek() {
                            Some(b',') => p.i += 1,
                            Some(b'}') => {
                                p.i += 1;
                                break;
                            }
                            _ => return Err(()),
                        }
                    }
                }
                let f: Vec<(&str, Vec<u8>)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                if f.is_empty() && pretty {
                    out.extend_from_slice(b"{\n");
                    indent(out, depth);
                    out.push(b'}');
                } else {
                    object(out, &f, pretty, depth);
                }
                Ok(())
            }
            _ => number(p, out),
        }
    }

    fn string(p: &mut P<'_>) -> Result<Vec<u8>, ()> {
        p.i += 1;
        let mut s = Vec::new();
        loop {
            let c = p.peek().ok_or(())?;
            p.i += 1;
            match c {
                b'"' => return Ok(s),
                b'\\' => {
                    let e = p.peek().ok_or(())?;
                    p.i += 1;
                    match e {
                        b'"' => s.push(b'"'),
                        b'\\' => s.push(b'\\'),
                        b'/' => s.push(b'/'),
                        b'b' => s.push(8),
                        b'f' => s.push(12),
                        b'n' => s.push(b'\n'),
                        b'r' => s.push(b'\r'),
                        b't' => s.push(b'\t'),
                        b'u' => {
                            let hex = p.b.get(p.i..p.i + 4).ok_or(())?;
                            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                            let cp = u32::from_str_radix(hex, 16).map_err(|_| ())?;
                            p.i += 4;
                            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                            let mut buf = [0u8; 4];
                            s.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return Err(()),
                    }
                }
                c => s.push(c),
            }
        }
    }

    fn number(p: &mut P<'_>, out: &mut Vec<u8>) -> Result<(), ()> {
        let start = p.i;
        while matches!(
            p.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            p.i += 1;
        }
        let text = std::str::from_utf8(p.b.get(start..p.i).ok_or(())?).map_err(|_| ())?;
        let v: f64 = text.parse().map_err(|_| ())?;
        if v.fract() == 0.0 && v.abs() < 2_147_483_648.0 {
            let _ = write!(out, "{}", v as i64);
        } else {
            let _ = write!(out, "{v}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(topic: &str, payload: &[u8]) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: topic.into(),
            pid: 7,
            payload: Bytes::copy_from_slice(payload),
            properties: Default::default(),
        }
    }

    fn fmt(f: &str, m: &Publish) -> Vec<u8> {
        let style = Style {
            format: Some(f),
            verbose: false,
            eol: false,
            pretty: false,
        };
        let mut out = Vec::new();
        formatted(&mut out, f, &style, m, true);
        out
    }

    #[test]
    fn specifiers_match_mosquitto() {
        let m = msg("f/x", b"he\"llo");
        assert_eq!(
            fmt("%t|%p|%x|%X|%l|%m|%q|%r|%%|%10t|%-10t|%5.2t|%08l|%-8l|\\t", &m),
            b"f/x|he\"llo|6865226c6c6f|6865226C6C6F|6|7|1|1|%|       f/x|f/x       |   f/|00000006|6       |\t"
        );
    }

    #[test]
    fn check_format_errors() {
        assert_eq!(
            check_format("%"),
            Err("Error: Incomplete format specifier.\n".into())
        );
        assert_eq!(
            check_format("%k"),
            Err("Error: Invalid format specifier 'k'.\n".into())
        );
        assert_eq!(
            check_format("\\q"),
            Err("Error: Invalid escape specifier 'q'.\n".into())
        );
        assert!(check_format("%-08.3t @Y \\n").is_ok());
    }

    #[test]
    fn json_reprint() {
        let mut o = Vec::new();
        json::reprint(br#" { "a" : [1, 2.5, "x\n"], "b":{} } "#, &mut o, false, 1).unwrap();
        assert_eq!(o, br#"{"a":[1,2.5,"x\n"],"b":{}}"#);
        assert!(json::reprint(b"{", &mut Vec::new(), false, 1).is_err());
    }
}
