//! A coverage-less mutation fuzzer: the fallback when libFuzzer cannot be built (no C++
//! compiler, no sanitizer support). Runs one target for a bounded time over mutations of its
//! seed corpus and prints the number of executions.
//!
//! Usage: `mutate TARGET SECONDS [CORPUS_DIR]`. On a panic, the input is written to
//! `artifacts/TARGET/crash-<hash>` and the exit status is 1.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::panic;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that tend to sit on parser boundaries: lengths, flags, separators, keywords.
const INTERESTING: &[&[u8]] = &[
    &[0x00],
    &[0xff],
    &[0x7f],
    &[0x80],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0x80, 0x80, 0x80, 0x80, 0x01],
    &[0xff, 0xff],
    &[0x00, 0x00],
    b"\n",
    b" ",
    b"'",
    b"\"",
    b"\\",
    b"#",
    b"+",
    b"/",
    b"%c",
    b"%u",
    b"$7$",
    b"$6$",
    b":",
    b"\r\n\r\n",
    b"listener ",
    b"config ",
    b"option ",
    b"list ",
    b"topic ",
    b"user ",
    b"pattern ",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i) + 1;
                input.drain(i..i + n.min(16));
            }
            4 => {
                let i = rng.below(len + 1);
                let s = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(i..i, s.iter().copied());
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = (rng.below(len - i) + 1).min(64);
                let chunk: Vec<u8> = input[i..i + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let at = rng.below(len + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => input.truncate(rng.below(len)),
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(1 << 16);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(secs)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: mutate TARGET SECONDS [CORPUS_DIR]");
        std::process::exit(2);
    };
    let Some(&(_, target)) = rmqtt_fuzz::TARGETS.iter().find(|(n, _)| n == name) else {
        eprintln!("mutate: unknown target {name}");
        std::process::exit(2);
    };
    let corpus = args
        .get(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("corpus").join(name));
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&corpus)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut execs: u64 = 0;
    let mut input = Vec::new();
    while execs % 256 != 0 || Instant::now() < deadline {
        if execs % 8 == 0 || input.is_empty() {
            input = seeds[rng.below(seeds.len())].clone();
        }
        mutate(&mut rng, &mut input, &seeds);
        execs += 1;
        let data = input.clone();
        if panic::catch_unwind(|| target(&data)).is_err() {
            let mut h = DefaultHasher::new();
            data.hash(&mut h);
            let dir = PathBuf::from("artifacts").join(name);
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("crash-{:016x}", h.finish()));
            let _ = std::fs::write(&path, &data);
            let _ = panic::take_hook();
            let _ = panic::catch_unwind(|| target(&data));
            println!(
                "{name}: CRASH after {execs} executions, input saved to {}",
                path.display()
            );
            std::process::exit(1);
        }
    }
    println!("{name}: {execs} executions in {secs} s (mutate, no coverage feedback)");
}
