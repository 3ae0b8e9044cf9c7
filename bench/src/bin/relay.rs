//! rmqtt-relay: the raw relay baseline. One thread, one mio loop, no MQTT parsing: each
//! connection first sends a 4-byte hello (pair number u16 big-endian, role b'P' or b'S', 0),
//! then every byte from a publisher goes to the subscriber of its pair and back. Once a pair is
//! complete, both sides get the two bytes of an MQTT PINGRESP, so the load generator knows the
//! path is open before it starts the clock. It is the
//! practical upper bound of one single-threaded hop over the same sockets a broker uses.
//! Backpressure: a side stops being read while its peer has more than 256 KiB queued.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

const LISTENER: Token = Token(usize::MAX);
const HIGH_WATER: usize = 256 * 1024;
/// An MQTT PINGRESP: the only bytes the relay makes up, sent to both sides of a new pair.
const PAIRED: [u8; 2] = [0xd0, 0x00];

struct Conn {
    stream: TcpStream,
    hello: Vec<u8>,
    peer: Option<usize>,
    /// Bytes waiting to be written to this connection.
    out: Vec<u8>,
    out_pos: usize,
    /// Read readiness not yet consumed because the peer was full (edge-triggered events).
    unread: bool,
    closed: bool,
}

struct Relay {
    conns: HashMap<usize, Conn>,
    pairs: HashMap<(u16, u8), usize>,
    buf: Vec<u8>,
}

impl Relay {
    fn pending(&self, i: usize) -> usize {
        self.conns
            .get(&i)
            .map(|c| c.out.len() - c.out_pos)
            .unwrap_or(0)
    }

    /// Appends to `to`'s queue and writes as much as the socket takes.
    fn send(&mut self, to: usize, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&to) else {
            return;
        };
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
            let mut written = 0;
            while written < data.len() {
                match c.stream.write(data.get(written..).unwrap_or_default()) {
                    Ok(0) => {
                        c.closed = true;
                        return;
                    }
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.closed = true;
                        return;
                    }
                }
            }
            c.out
                .extend_from_slice(data.get(written..).unwrap_or_default());
        } else {
            c.out.extend_from_slice(data);
        }
    }

    fn flush(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(&i) else {
            return;
        };
        while c.out_pos < c.out.len() {
            match c.stream.write(c.out.get(c.out_pos..).unwrap_or_default()) {
                Ok(0) => {
                    c.closed = true;
                    return;
                }
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.closed = true;
                    return;
                }
            }
        }
        c.out.clear();
        c.out_pos = 0;
    }

    fn read(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(c) = self.conns.get_mut(&i) {
            if let Some(p) = c.peer {
                if self.pending(p) > HIGH_WATER {
                    if let Some(c) = self.conns.get_mut(&i) {
                        c.unread = true;
                    }
                    break;
                }
            }
            let Some(c) = self.conns.get_mut(&i) else {
                break;
            };
            c.unread = false;
            let n = match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.closed = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.closed = true;
                    break;
                }
            };
            let mut data = buf.get(..n).unwrap_or_default();
            if c.hello.len() < 4 {
                let take = (4 - c.hello.len()).min(data.len());
                c.hello
                    .extend_from_slice(data.get(..take).unwrap_or_default());
                data = data.get(take..).unwrap_or_default();
                if c.hello.len() == 4 {
                    let pair = u16::from_be_bytes([c.hello[0], c.hello[1]]);
                    let role = c.hello[2];
                    let other = if role == b'P' { b'S' } else { b'P' };
                    self.pairs.insert((pair, role), i);
                    if let Some(&p) = self.pairs.get(&(pair, other)) {
                        if let Some(c) = self.conns.get_mut(&i) {
                            c.peer = Some(p);
                        }
                        if let Some(pc) = self.conns.get_mut(&p) {
                            pc.peer = Some(i);
                        }
                        // Whatever the first side sent before its peer arrived waits in its
                        // own queue under the peer-less state; move it across now.
                        let early = self
                            .conns
                            .get_mut(&p)
                            .map(|pc| std::mem::take(&mut pc.hello))
                            .unwrap_or_default();
                        if let Some(pc) = self.conns.get_mut(&p) {
                            pc.hello = early.get(..4).unwrap_or_default().to_vec();
                        }
                        self.send(p, &PAIRED);
                        self.send(i, &PAIRED);
                        if let Some(rest) = early.get(4..) {
                            self.send(i, rest);
                        }
                    }
                }
            }
            let Some(c) = self.conns.get_mut(&i) else {
                break;
            };
            match c.peer {
                Some(p) => self.send(p, data),
                // No peer yet: keep the bytes behind the hello until it connects.
                None => c.hello.extend_from_slice(data),
            }
        }
        self.buf = buf;
    }
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let addr: SocketAddr = match arg.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => match arg.parse() {
            Ok(a) => a,
            Err(_) => {
                eprintln!("usage: rmqtt-relay PORT|ADDR:PORT");
                std::process::exit(2);
            }
        },
    };
    if let Err(e) = run(addr) {
        eprintln!("rmqtt-relay: {e}");
        std::process::exit(1);
    }
}

fn run(addr: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(addr)?;
    if addr.port() == 0 {
        // Port 0: the caller learns the chosen port from this line (no bind race in tests).
        println!("{}", listener.local_addr()?);
    }
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut relay = Relay {
        conns: HashMap::new(),
        pairs: HashMap::new(),
        buf: vec![0; 64 * 1024],
    };
    let mut next = 0usize;
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut touched = Vec::new();
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let i = next;
                            next += 1;
                            poll.registry().register(
                                &mut stream,
                                Token(i),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            relay.conns.insert(
                                i,
                                Conn {
                                    stream,
                                    hello: Vec::new(),
                                    peer: None,
                                    out: Vec::new(),
                                    out_pos: 0,
                                    unread: false,
                                    closed: false,
                                },
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            eprintln!("rmqtt-relay: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let i = ev.token().0;
            if ev.is_writable() {
                relay.flush(i);
                // The peer may have been held back by this side's full queue.
                if relay.pending(i) <= HIGH_WATER {
                    if let Some(p) = relay.conns.get(&i).and_then(|c| c.peer) {
                        if relay.conns.get(&p).is_some_and(|c| c.unread) {
                            relay.read(p);
                            touched.push(p);
                        }
                    }
                }
            }
            if ev.is_readable() || ev.is_read_closed() {
                relay.read(i);
            }
            touched.push(i);
        }
        for i in touched {
            let closed = relay.conns.get(&i).is_some_and(|c| c.closed);
            if closed {
                let peer = relay.conns.get(&i).and_then(|c| c.peer);
                for k in [Some(i), peer].into_iter().flatten() {
                    if let Some(mut c) = relay.conns.remove(&k) {
                        let _ = poll.registry().deregister(&mut c.stream);
                        relay.pairs.retain(|_, v| *v != k);
                    }
                }
            }
        }
    }
}
