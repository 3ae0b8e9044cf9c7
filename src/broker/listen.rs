//! A listening socket: TCP, or a Unix domain socket (`listener 0 /path/to.sock`, as in
//! Mosquitto 2.0). What it accepts is either kind of stream; a Unix-socket peer has no address,
//! and is given 127.0.0.1 port 0, so that it counts as local (`allow_anonymous local`) and
//! reads as local in the log.

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub enum ListenSock {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

pub enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The address a Unix-socket peer is shown with.
pub const UNIX_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

impl ListenSock {
    /// Binds a Unix socket at `path`, replacing a stale socket file left by an earlier run
    /// (never any other kind of file).
    pub fn bind_unix(path: &Path) -> io::Result<ListenSock> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if m.file_type().is_socket() {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(ListenSock::Unix(UnixListener::bind(path)?, path.to_owned()))
    }

    pub fn source(&mut self) -> &mut dyn Source {
        match self {
            ListenSock::Tcp(l) => l,
            ListenSock::Unix(l, _) => l,
        }
    }

    pub fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        match self {
            ListenSock::Tcp(l) => l.accept().map(|(s, a)| (Accepted::Tcp(s), a)),
            ListenSock::Unix(l, _) => l.accept().map(|(s, _)| (Accepted::Unix(s), UNIX_PEER)),
        }
    }

    /// What the log calls it: `port 1883` or `path /run/mqtt.sock`.
    pub fn describe(&self, port: u16) -> String {
        match self {
            ListenSock::Tcp(_) => format!("port {port}"),
            ListenSock::Unix(_, p) => format!("path {}", p.display()),
        }
    }

    /// Removes the socket file of a Unix listener being closed.
    pub fn remove_file(&self) {
        if let ListenSock::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}
