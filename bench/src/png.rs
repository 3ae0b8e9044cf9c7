//! A minimal PNG writer (8-bit palette images, zlib with fixed-Huffman run-length deflate,
//! crc32 and adler32 by hand), a 5x7 bitmap font, and the ratio bar chart drawn with them.
//! Chart output is a pure function of its rows, and nothing here panics on any input.

/// A palette image: one byte per pixel, each an index into `PALETTE`.
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    px: Vec<u8>,
}

pub const WHITE: u8 = 0;
pub const BLACK: u8 = 1;
pub const GRID: u8 = 2;
pub const GREEN: u8 = 3;
pub const RED: u8 = 4;
pub const BAND: u8 = 5;
pub const GREY: u8 = 6;

const PALETTE: [[u8; 3]; 7] = [
    [255, 255, 255],
    [20, 20, 20],
    [200, 200, 200],
    [46, 160, 67],
    [207, 34, 46],
    [244, 246, 248],
    [110, 110, 110],
];

impl Canvas {
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![WHITE; w * h],
        }
    }

    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: u8) {
        let x0 = x.clamp(0, self.w as i64) as usize;
        let x1 = (x + w).clamp(0, self.w as i64) as usize;
        let y0 = y.clamp(0, self.h as i64) as usize;
        let y1 = (y + h).clamp(0, self.h as i64) as usize;
        for row in y0..y1 {
            if let Some(line) = self.px.get_mut(row * self.w + x0..row * self.w + x1) {
                line.fill(color);
            }
        }
    }

    /// Draws `text` (upper-cased; unknown characters as blanks) with its top-left at (x, y),
    /// each font pixel `scale` pixels wide. Returns the x after the last character.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: u8) -> i64 {
        let mut cx = x;
        for ch in text.chars() {
            if let Some(rows) = glyph(ch) {
                for (r, bits) in rows.iter().enumerate() {
                    for c in 0..5 {
                        if bits & (0x10 >> c) != 0 {
                            self.rect(cx + c * scale, y + r as i64 * scale, scale, scale, color);
                        }
                    }
                }
            }
            cx += 6 * scale;
        }
        cx
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity((self.w + 1) * self.h);
        for row in self.px.chunks(self.w.max(1)) {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(self.w as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
        chunk(&mut png, b"IHDR", &ihdr);
        let plte: Vec<u8> = PALETTE.iter().flatten().copied().collect();
        chunk(&mut png, b"PLTE", &plte);
        chunk(&mut png, b"IDAT", &zlib(&raw));
        chunk(&mut png, b"IEND", &[]);
        png
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_be_bytes());
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Huffman codes are sent most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let rev = code.reverse_bits() >> (32 - len);
        self.put(rev, len);
    }

    fn literal(&mut self, v: u32) {
        match v {
            0..=143 => self.code(0x30 + v, 8),
            144..=255 => self.code(0x190 + v - 144, 9),
            256..=279 => self.code(v - 256, 7),
            _ => self.code(0xc0 + v - 280, 8),
        }
    }
}

const LEN_BASE: [u32; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];

/// zlib stream with one fixed-Huffman block whose only matches are runs (distance 1): charts
/// are long runs of one colour, so this is nearly as small as real deflate for them.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    bits.put(1, 1);
    bits.put(1, 2);
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        let run = if i > 0 && data.get(i - 1) == Some(&b) {
            data.get(i..)
                .unwrap_or_default()
                .iter()
                .take(258)
                .take_while(|&&x| x == b)
                .count()
        } else {
            0
        };
        if run >= 3 {
            let code = LEN_BASE
                .iter()
                .rposition(|&base| base <= run as u32)
                .unwrap_or(0);
            let base = LEN_BASE.get(code).copied().unwrap_or(3);
            let extra = LEN_EXTRA.get(code).copied().unwrap_or(0);
            bits.literal(257 + code as u32);
            if extra > 0 {
                bits.put(run as u32 - base, extra);
            }
            bits.code(0, 5);
            i += run;
        } else {
            bits.literal(u32::from(b));
            i += 1;
        }
    }
    bits.literal(256);
    if bits.n > 0 {
        bits.put(0, 8 - bits.n);
    }
    let mut out = bits.out;
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn glyph(c: char) -> Option<[u8; 7]> {
    let g = match c.to_ascii_uppercase() {
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'B' => [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'D' => [0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'G' => [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
        'H' => [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'P' => [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
        'Q' => [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' | 'µ' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
        'X' => [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04],
        'Z' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '#' => [0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a],
        '=' => [0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08],
        _ => return None,
    };
    Some(g)
}

/// One bar: a label, the ratio rmqtt/mosquitto, and whether more of the metric is better.
pub struct Bar {
    pub label: String,
    pub ratio: f64,
    pub higher_better: bool,
}

/// Horizontal bars on a log2 axis centred on 1.0 (equal): green where rmqtt is better, red where
/// it is worse. Ratios beyond 1/32..32 are drawn at the edge, with the true value printed.
pub fn ratio_chart(title: &str, bars: &[Bar]) -> Canvas {
    const S: i64 = 2;
    const ROW: i64 = 26;
    const TOP: i64 = 50;
    const LABEL_W: i64 = 330;
    const PLOT_W: i64 = 560;
    const SPAN: f64 = 5.0;
    let width = LABEL_W + PLOT_W + 150;
    let height = TOP + ROW * bars.len() as i64 + 50;
    let mut c = Canvas::new(width as usize, height as usize);
    c.text(10, 12, title, S, BLACK);
    let mid = LABEL_W + PLOT_W / 2;
    let x_of = |log: f64| mid + (log.clamp(-SPAN, SPAN) / SPAN * (PLOT_W / 2) as f64) as i64;
    for (k, _) in bars.iter().enumerate() {
        if k % 2 == 1 {
            c.rect(0, TOP + k as i64 * ROW, width, ROW, BAND);
        }
    }
    for t in -5i32..=5 {
        let x = x_of(f64::from(t));
        let color = if t == 0 { BLACK } else { GRID };
        c.rect(x, TOP - 4, 1, ROW * bars.len() as i64 + 8, color);
        let label = if t >= 0 {
            format!("{}", 1u32 << t)
        } else {
            format!("1/{}", 1u32 << -t)
        };
        let lw = label.len() as i64 * 6 * S;
        c.text(
            x - lw / 2,
            TOP + ROW * bars.len() as i64 + 12,
            &label,
            S,
            GREY,
        );
    }
    for (k, bar) in bars.iter().enumerate() {
        let y = TOP + k as i64 * ROW;
        c.text(10, y + 6, &bar.label, S, BLACK);
        if !(bar.ratio.is_finite() && bar.ratio > 0.0) {
            c.text(LABEL_W + PLOT_W + 20, y + 6, "N/A", S, BLACK);
            continue;
        }
        let ratio = bar.ratio;
        let log = ratio.log2();
        let better = if bar.higher_better {
            ratio >= 1.0
        } else {
            ratio <= 1.0
        };
        let color = if better { GREEN } else { RED };
        let x = x_of(log);
        let (x0, x1) = if x >= mid { (mid, x) } else { (x, mid) };
        c.rect(x0, y + 5, (x1 - x0).max(2), ROW - 10, color);
        c.text(
            LABEL_W + PLOT_W + 20,
            y + 6,
            &format!("{ratio:.2}"),
            S,
            BLACK,
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    /// A straightforward inflater for fixed-Huffman blocks, to check the encoder end to end.
    fn inflate_fixed(z: &[u8]) -> Vec<u8> {
        let data = &z[2..z.len() - 4];
        let mut pos = 0usize;
        let bit = |pos: &mut usize| -> u32 {
            let b = (data[*pos / 8] >> (*pos % 8)) & 1;
            *pos += 1;
            u32::from(b)
        };
        let bits = |pos: &mut usize, n: u32| -> u32 { (0..n).map(|i| bit(pos) << i).sum() };
        assert_eq!(bits(&mut pos, 3), 0b011);
        let mut out = Vec::new();
        loop {
            let mut code = 0u32;
            let mut len = 0;
            let sym = loop {
                code = (code << 1) | bit(&mut pos);
                len += 1;
                match len {
                    7 if code <= 0x17 => break code + 256,
                    8 if (0x30..=0xbf).contains(&code) => break code - 0x30,
                    8 if (0xc0..=0xc7).contains(&code) => break code - 0xc0 + 280,
                    9 if code >= 0x190 => break code - 0x190 + 144,
                    _ => {}
                }
            };
            match sym {
                0..=255 => out.push(sym as u8),
                256 => break,
                _ => {
                    let k = (sym - 257) as usize;
                    let n = LEN_BASE[k] + bits(&mut pos, LEN_EXTRA[k]);
                    let mut d = 0;
                    for _ in 0..5 {
                        d = (d << 1) | bit(&mut pos);
                    }
                    assert_eq!(d, 0, "only distance 1 is used");
                    for _ in 0..n {
                        out.push(*out.last().unwrap());
                    }
                }
            }
        }
        assert_eq!(
            u32::from_be_bytes(z[z.len() - 4..].try_into().unwrap()),
            adler32(&out)
        );
        out
    }

    #[test]
    fn deflate_round_trips_runs_and_literals() {
        let mut data = Vec::new();
        for i in 0..3000u32 {
            data.push((i / 7 % 256) as u8);
        }
        data.extend(std::iter::repeat(200).take(1000));
        data.extend((0..=255).map(|x| x as u8));
        data.extend(std::iter::repeat(0).take(259));
        for n in [0, 1, 2, 3, 4, 258, 259, data.len()] {
            assert_eq!(inflate_fixed(&zlib(&data[..n])), &data[..n], "n={n}");
        }
    }

    #[test]
    fn chart_is_a_well_formed_png() {
        let bars = [
            Bar {
                label: "fanin-q0 msgs/s".into(),
                ratio: 1.7,
                higher_better: true,
            },
            Bar {
                label: "bytes/conn".into(),
                ratio: 0.3,
                higher_better: false,
            },
            Bar {
                label: "pairs-q1 msgs/s".into(),
                ratio: 0.5,
                higher_better: true,
            },
            Bar {
                label: "broken".into(),
                ratio: f64::NAN,
                higher_better: true,
            },
        ];
        let png = ratio_chart("rmqtt / mosquitto", &bars).encode();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
        let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
        let len = u32::from_be_bytes(png[idat - 4..idat].try_into().unwrap()) as usize;
        let raw = inflate_fixed(&png[idat + 4..idat + 4 + len]);
        let c = ratio_chart("rmqtt / mosquitto", &bars);
        assert_eq!(raw.len(), (c.w + 1) * c.h);
        assert!(raw.contains(&GREEN) && raw.contains(&RED));
    }
}
