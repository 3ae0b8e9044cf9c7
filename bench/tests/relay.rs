//! The raw relay binary: pairs a publisher and a subscriber by their hello, signals the pairing
//! with a PINGRESP on both sides, and forwards bytes both ways unchanged, including bytes sent
//! before the other side arrived.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Relay(Child, SocketAddr);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmqtt-relay"))
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.trim().parse().unwrap();
    Relay(child, addr)
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn forwards_both_ways_after_pairing() {
    let relay = start();
    let mut publisher = TcpStream::connect(relay.1).unwrap();
    // Sent before the subscriber exists: must be held, not lost.
    publisher.write_all(&[0, 7, b'P', 0, 1, 2, 3]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut subscriber = TcpStream::connect(relay.1).unwrap();
    subscriber.write_all(&[0, 7, b'S', 0]).unwrap();
    assert_eq!(read_exact(&mut subscriber, 5), [0xd0, 0, 1, 2, 3]);
    assert_eq!(read_exact(&mut publisher, 2), [0xd0, 0]);
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut p = publisher.try_clone().unwrap();
        let data = big.clone();
        std::thread::spawn(move || p.write_all(&data).unwrap())
    };
    assert_eq!(read_exact(&mut subscriber, big.len()), big);
    writer.join().unwrap();
    subscriber.write_all(b"ack").unwrap();
    assert_eq!(read_exact(&mut publisher, 3), b"ack");
}

#[test]
fn pairs_do_not_mix() {
    let relay = start();
    let mut socks = Vec::new();
    for pair in 0..3u8 {
        for role in [b'S', b'P'] {
            let mut s = TcpStream::connect(relay.1).unwrap();
            s.write_all(&[0, pair, role, 0]).unwrap();
            socks.push(s);
        }
    }
    for s in socks.iter_mut() {
        assert_eq!(read_exact(s, 2), [0xd0, 0]);
    }
    for pair in 0..3usize {
        socks[pair * 2 + 1].write_all(&[pair as u8; 10]).unwrap();
    }
    for pair in 0..3usize {
        assert_eq!(read_exact(&mut socks[pair * 2], 10), [pair as u8; 10]);
    }
}
