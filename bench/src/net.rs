//! Many non-blocking client sockets on one mio `Poll`: buffered writes, reads drained until
//! `WouldBlock`, and every complete packet handed to the scenario. One thread drives all clients,
//! so the generator takes one core and leaves the other to the broker under test.

use crate::mqtt::{self, Packet};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

const READ_CHUNK: usize = 64 * 1024;

/// Write buffers of every connection, handed to the packet handler so it can answer on any
/// connection while the read buffer of another is borrowed.
pub struct Out {
    bufs: Vec<Vec<u8>>,
    pos: Vec<usize>,
    writable: Vec<bool>,
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
}

impl Out {
    /// The write buffer of connection `i`; it is flushed at the end of the current turn.
    pub fn buf(&mut self, i: usize) -> &mut Vec<u8> {
        if let Some(d) = self.is_dirty.get_mut(i) {
            if !*d {
                *d = true;
                self.dirty.push(i);
            }
        }
        &mut self.bufs[i]
    }

    /// Bytes queued on connection `i` that the kernel has not taken yet.
    pub fn pending(&self, i: usize) -> usize {
        self.bufs[i].len() - self.pos[i]
    }
}

/// Bytes read but not yet decoded: `data[..len]`.
struct RBuf {
    data: Vec<u8>,
    len: usize,
}

/// Why a connection stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    Open,
    Eof,
    Error(String),
}

pub struct Net {
    poll: Poll,
    events: Events,
    streams: Vec<TcpStream>,
    rbufs: Vec<RBuf>,
    pub state: Vec<Closed>,
    pub out: Out,
    /// Packets decoded since the net was created; the scenarios use it to detect stalls.
    pub packets_in: u64,
}

impl Net {
    pub fn new() -> io::Result<Net> {
        Ok(Net {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            streams: Vec::new(),
            rbufs: Vec::new(),
            state: Vec::new(),
            out: Out {
                bufs: Vec::new(),
                pos: Vec::new(),
                writable: Vec::new(),
                dirty: Vec::new(),
                is_dirty: Vec::new(),
            },
            packets_in: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Starts a non-blocking connect; returns the connection index.
    pub fn connect(&mut self, addr: SocketAddr) -> io::Result<usize> {
        let i = self.streams.len();
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        self.poll
            .registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        self.streams.push(s);
        self.rbufs.push(RBuf {
            data: Vec::new(),
            len: 0,
        });
        self.state.push(Closed::Open);
        self.out.bufs.push(Vec::new());
        self.out.pos.push(0);
        self.out.writable.push(false);
        self.out.is_dirty.push(false);
        Ok(i)
    }

    /// Closes connection `i` at once with a reset (SO_LINGER 0), so that tens of thousands of
    /// benchmark connections do not leave TIME_WAIT sockets behind.
    pub fn abort(&mut self, i: usize) {
        if let Some(s) = self.streams.get_mut(i) {
            set_linger_zero(s);
            let _ = self.poll.registry().deregister(s);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(st) = self.state.get_mut(i) {
            if *st == Closed::Open {
                *st = Closed::Eof;
            }
        }
    }

    /// Sends what is queued, polls once, reads every readable socket and hands each decoded
    /// packet to `handle`, then sends what the handler queued.
    pub fn turn<F>(&mut self, timeout: Duration, mut handle: F) -> io::Result<()>
    where
        F: FnMut(&mut Out, usize, Packet<'_>),
    {
        self.flush();
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed(),
                    e.is_writable(),
                )
            })
            .collect();
        for (i, readable, writable) in ready {
            if i >= self.streams.len() || self.state[i] != Closed::Open {
                continue;
            }
            if writable {
                self.out.writable[i] = true;
                if self.out.pending(i) > 0 {
                    self.out.buf(i);
                }
            }
            if readable {
                self.read_one(i, &mut handle);
            }
        }
        self.flush();
        Ok(())
    }

    fn read_one<F>(&mut self, i: usize, handle: &mut F)
    where
        F: FnMut(&mut Out, usize, Packet<'_>),
    {
        let rb = &mut self.rbufs[i];
        let mut stream = &self.streams[i];
        loop {
            // The buffer is zeroed only when it grows, never per read.
            if rb.data.len() - rb.len < READ_CHUNK / 4 {
                let grow = (rb.data.len() * 2).max(4096).max(rb.len + READ_CHUNK / 4);
                rb.data.resize(grow.max(rb.len + 4096), 0);
            }
            let Some(spare) = rb.data.get_mut(rb.len..) else {
                break;
            };
            match stream.read(spare) {
                Ok(0) => {
                    self.state[i] = Closed::Eof;
                    break;
                }
                Ok(n) => rb.len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.state[i] = Closed::Error(e.to_string());
                    break;
                }
            }
        }
        let mut at = 0;
        loop {
            match mqtt::decode(rb.data.get(at..rb.len).unwrap_or_default()) {
                Ok(Some((p, used))) => {
                    self.packets_in += 1;
                    handle(&mut self.out, i, p);
                    at += used;
                }
                Ok(None) => break,
                Err(e) => {
                    self.state[i] = Closed::Error(format!("malformed packet from broker: {}", e.0));
                    at = rb.len;
                    break;
                }
            }
        }
        if at > 0 {
            rb.data.copy_within(at..rb.len, 0);
            rb.len -= at;
        }
        if rb.data.len() > 4 * READ_CHUNK && rb.len < READ_CHUNK {
            rb.data.truncate(READ_CHUNK);
            rb.data.shrink_to_fit();
        }
    }

    /// Writes every dirty buffer until it is empty or the socket would block.
    pub fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.out.dirty);
        for i in dirty {
            self.out.is_dirty[i] = false;
            if self.state[i] != Closed::Open || !self.out.writable[i] {
                continue;
            }
            let mut stream = &self.streams[i];
            let buf = &mut self.out.bufs[i];
            let pos = &mut self.out.pos[i];
            while *pos < buf.len() {
                match stream.write(&buf[*pos..]) {
                    Ok(0) => {
                        self.state[i] = Closed::Eof;
                        break;
                    }
                    Ok(n) => *pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.out.writable[i] = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.state[i] = Closed::Error(e.to_string());
                        break;
                    }
                }
            }
            if *pos == buf.len() {
                buf.clear();
                *pos = 0;
                if buf.capacity() > 1 << 20 {
                    buf.shrink_to(64 * 1024);
                }
            } else if *pos > 1 << 20 {
                buf.drain(..*pos);
                *pos = 0;
            }
        }
    }

    /// The first connection that failed, with its reason, if any.
    pub fn first_error(&self) -> Option<(usize, String)> {
        self.state.iter().enumerate().find_map(|(i, s)| match s {
            Closed::Open => None,
            Closed::Eof => Some((i, "connection closed by broker".to_string())),
            Closed::Error(e) => Some((i, e.clone())),
        })
    }
}

#[allow(unsafe_code)]
fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd owned by `s` and a properly sized, initialised linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
