//! TLS for listeners (and, later, for clients and bridges), behind the `tls` cargo feature.
//!
//! With the feature, [`ServerTls`] and [`ServerStream`] wrap rustls (ring provider) for the
//! non-blocking event loop. Without it, the same names exist but cannot be constructed:
//! `ServerTls::new` reports that TLS is not compiled in, and `ServerStream` is uninhabited,
//! so the event loop needs no `#[cfg]` of its own.

/// The certificate subject reader (public for the fuzz target).
#[cfg(feature = "tls")]
pub mod der;
#[cfg(feature = "tls")]
mod real;
#[cfg(feature = "tls")]
pub use real::*;

#[cfg(not(feature = "tls"))]
mod stub;
#[cfg(not(feature = "tls"))]
pub use stub::*;

/// The blocking socket a client applet's TLS connection runs on: TCP, or a Unix domain
/// socket (`--unix` with TLS options, as the Mosquitto clients allow).
pub enum ClientSocket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl ClientSocket {
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        match self {
            ClientSocket::Tcp(s) => s.set_read_timeout(t),
            ClientSocket::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        match self {
            ClientSocket::Tcp(s) => s.shutdown(how),
            ClientSocket::Unix(s) => s.shutdown(how),
        }
    }
}

impl std::io::Read for ClientSocket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientSocket::Tcp(s) => s.read(buf),
            ClientSocket::Unix(s) => s.read(buf),
        }
    }
}

impl std::io::Write for ClientSocket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            ClientSocket::Tcp(s) => s.write(buf),
            ClientSocket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ClientSocket::Tcp(s) => s.flush(),
            ClientSocket::Unix(s) => s.flush(),
        }
    }
}
