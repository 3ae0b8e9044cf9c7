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

/// The addresses of network device `device` (`bind_interface`), as `getifaddrs` lists them:
/// IPv4 and IPv6 (with the device's index as scope id, for link-local ones), in its order.
/// `Ok(None)`: no such device. The name is compared ignoring case, as Mosquitto does.
#[allow(unsafe_code)]
pub fn interface_addrs(device: &str) -> io::Result<Option<Vec<SocketAddr>>> {
    use std::ffi::CStr;
    use std::net::{Ipv6Addr, SocketAddrV6};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below by freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = false;
    let mut addrs = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs;
        // its name is a NUL-terminated string and `ifa_addr` (when not null) points to a
        // sockaddr of the family it names, of at least that family's size.
        unsafe {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if !name.eq_ignore_ascii_case(device) {
                continue;
            }
            found = true;
            if ifa.ifa_addr.is_null() {
                continue;
            }
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    addrs.push(SocketAddr::new(IpAddr::V4(ip), 0));
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    let v6 = SocketAddrV6::new(ip, 0, 0, sin6.sin6_scope_id);
                    addrs.push(SocketAddr::V6(v6));
                }
                _ => {}
            }
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found.then_some(addrs))
}

/// A non-blocking connect to `peer` from local address `local` (`bridge_bind_address`).
#[allow(unsafe_code)]
pub fn connect_from(local: IpAddr, peer: SocketAddr) -> io::Result<TcpStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let family = if peer.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the result is checked before use and owned from then on.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let std_stream = std::net::TcpStream::from(owned);
    let bind = sockaddr(SocketAddr::new(local, 0), peer.is_ipv6())?;
    // SAFETY: `bind` holds a sockaddr of the length given, alive for the call.
    if unsafe { libc::bind(fd, bind.0.as_ptr().cast(), bind.1) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std_stream.set_nonblocking(true)?;
    let to = sockaddr(peer, peer.is_ipv6())?;
    // SAFETY: as above.
    if unsafe { libc::connect(fd, to.0.as_ptr().cast(), to.1) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from_std(std_stream))
}

/// `a` as the bytes of a `sockaddr_in` or `sockaddr_in6` (an IPv4 address mapped when the
/// socket is IPv6).
fn sockaddr(a: SocketAddr, v6: bool) -> io::Result<(Vec<u8>, libc::socklen_t)> {
    let port = a.port().to_be_bytes();
    if !v6 {
        let IpAddr::V4(ip) = a.ip() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "IPv6 address for an IPv4 peer",
            ));
        };
        let mut sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: u16::from_ne_bytes(port),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>();
        let bytes = as_bytes(&mut sa, len);
        return Ok((bytes, len as libc::socklen_t));
    }
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut sa = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: u16::from_ne_bytes(port),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: ip.octets(),
        },
        sin6_scope_id: 0,
    };
    let len = std::mem::size_of::<libc::sockaddr_in6>();
    let bytes = as_bytes(&mut sa, len);
    Ok((bytes, len as libc::socklen_t))
}

#[allow(unsafe_code)]
fn as_bytes<T>(v: &mut T, len: usize) -> Vec<u8> {
    // SAFETY: `v` is a plain C struct of `len` bytes, read once as bytes.
    unsafe { std::slice::from_raw_parts((v as *mut T).cast::<u8>(), len) }.to_vec()
}
