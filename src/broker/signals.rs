//! Signal handling: handlers only record the signal and wake the event loop through a
//! self-pipe; the loop acts on it. With `memory` (the counting allocator), the only places in
//! rmqtt with `unsafe` code.
#![allow(unsafe_code)]

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

static PENDING: AtomicU32 = AtomicU32::new(0);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

pub const TERMINATE: u32 = 1;
pub const RELOAD: u32 = 2;
pub const SAVE: u32 = 4;

extern "C" fn on_signal(sig: libc::c_int) {
    let bit = match sig {
        libc::SIGINT | libc::SIGTERM => TERMINATE,
        libc::SIGHUP => RELOAD,
        libc::SIGUSR1 => SAVE,
        _ => 0,
    };
    PENDING.fetch_or(bit, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just means a wake-up is pending.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

/// The read end of the self-pipe, to register with the event loop.
pub struct Signals {
    reader: UnixStream,
    _writer: UnixStream,
}

impl Signals {
    /// Installs handlers for SIGINT, SIGTERM, SIGHUP and SIGUSR1.
    pub fn install() -> io::Result<Signals> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        WAKE_FD.store(writer.as_raw_fd(), Ordering::SeqCst);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
            // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid;
            // the handler only touches atomics and write(2).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Signals {
            reader,
            _writer: writer,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.reader.as_raw_fd()
    }

    /// Drains the pipe and returns the signals received since the last call.
    pub fn take(&mut self) -> u32 {
        let mut buf = [0u8; 64];
        while matches!(self.reader.read(&mut buf), Ok(n) if n > 0) {}
        PENDING.swap(0, Ordering::SeqCst)
    }
}
