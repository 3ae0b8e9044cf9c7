//! The event loop: one thread, one mio `Poll`, the listening sockets and the connections'
//! sockets. Bytes read go to [`Broker::input`]; what the broker queues is written back once
//! per pass of the loop, so many messages share one `write`.
//!
//! Write interest is registered only while a connection has output the socket did not take.
//! Each pass handles what the broker queued for it ([`Effect`]s) once; a connection reads at
//! most [`READ_BUDGET`] bytes a pass, so a fast publisher cannot starve the others. The loop
//! polls without sleeping while effects are queued, and otherwise sleeps until the broker's
//! next deadline, a socket event or a signal.

use super::admission::{self, Admission, AdmissionLimits, Evict};
use super::conn::Login;
use super::core::{fmt_addr, Broker, Close, Effect};
use super::listen::{Accepted, ListenSock};
use super::logging;
use super::persist::Store;
use super::signals::{self, Signals};
use super::slab::Slab;
use super::sys::LoopFigures;
use super::ws;
use crate::config::{Anonymous, Config, Listener, ListenerProtocol};
use crate::tls::{ServerStream, ServerTls};
use bytes::{Buf, BytesMut};
use log::{error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Tokens at or above this are listening sockets (`LISTENER_BASE + n`, `n` never reused);
/// below are connection ids.
const LISTENER_BASE: usize = usize::MAX / 2;
const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// Bytes read per `read` call; one buffer shared by every connection.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes one connection may read per pass of the loop. A connection with more to read is
/// read again next pass ([`Effect::Read`]), after the others have had their turn.
const READ_BUDGET: usize = READ_CHUNK;
/// How long an idle loop keeps the spare output buffers and spent messages of a busy spell
/// (see conn.rs and message.rs).
const SPARE_TRIM_AFTER: Duration = Duration::from_millis(200);

/// A listener the configuration asks for, before it is bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub spec: Listener,
    /// A local-only mode listener: loopback addresses only, IPv6 optional.
    pub local: bool,
}

impl Planned {
    fn tls(&self) -> bool {
        self.spec.certfile.is_some() || self.spec.keyfile.is_some()
    }

    /// Whether a reload can keep `self`'s sockets (and connections) for `other`: same port,
    /// address, protocol and TLS or not. Other settings are applied in place.
    fn same_socket(&self, other: &Planned) -> bool {
        self.local == other.local
            && self.spec.port == other.spec.port
            && self.spec.bind == other.spec.bind
            && self.spec.protocol == other.spec.protocol
            && self.tls() == other.tls()
    }
}

/// Which old listener each new one keeps (`None`: open it), and which old ones close.
/// Old listeners are matched at most once, in order.
fn diff_listeners(old: &[&Planned], new: &[Planned]) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut claimed = vec![false; old.len()];
    let keep = new
        .iter()
        .map(|n| {
            let i = old
                .iter()
                .zip(claimed.iter())
                .position(|(o, c)| !c && o.same_socket(n))?;
            if let Some(c) = claimed.get_mut(i) {
                *c = true;
            }
            Some(i)
        })
        .collect();
    let close = claimed
        .iter()
        .enumerate()
        .filter(|(_, c)| !**c)
        .map(|(i, _)| i)
        .collect();
    (keep, close)
}

/// One configured listener: its sockets (one per address) and the settings connections get.
struct Bound {
    /// Stable id that connections remember; never the position in the list.
    id: u16,
    plan: Planned,
    /// (token, socket, port it got)
    sockets: Vec<(usize, ListenSock, u16)>,
    tls: Option<ServerTls>,
    anonymous: Anonymous,
    /// The auth scope its connections get ([`super::core::Auth::scope_of_listener`]).
    scope: u8,
    open: i64,
}

/// A listener's sockets, bound but not yet registered.
pub struct Opened {
    plan: Planned,
    sockets: Vec<(ListenSock, u16)>,
}

/// A connection's byte stream: plain TCP, TLS over it, or WebSockets over either.
enum Transport {
    Plain(TcpStream),
    Tls(Box<ServerStream>),
    Ws(Box<WsStream>),
    Unix(mio::net::UnixStream),
}

/// Plaintext bytes a WebSocket connection accepts before it says "would block".
const WS_OUT_LIMIT: usize = 64 * 1024;
/// Control replies (pongs) are queued only while the WebSocket's output is below this: a
/// peer that pings and never reads gets no more than that held for it.
const WS_CONTROL_LIMIT: usize = WS_OUT_LIMIT + 4096;
/// Pings a WebSocket peer may send before its CONNECT is accepted; more is a flood, closed
/// with status 1008.
const WS_PRELOGIN_PINGS: u32 = 16;
/// Pings a logged-in WebSocket peer may send with no MQTT data in between. MQTT keeps the
/// connection alive with PINGREQ, and browsers cannot send WebSocket pings at all.
const WS_PINGS_WITHOUT_DATA: u32 = 1000;
/// Raw bytes one `WsStream::read` takes from the socket when they carry no MQTT data
/// (pings, empty frames): the rest is read next pass, so a ping flood cannot hold the loop.
const WS_RAW_BUDGET: usize = 64 * 1024;

/// MQTT over WebSockets: the upgrade, then binary frames both ways (see `ws`).
struct WsStream {
    inner: Transport,
    open: bool,
    closing: bool,
    raw_in: BytesMut,
    data: BytesMut,
    raw_out: BytesMut,
    /// Largest frame accepted: `max_connect_size` before login, [`ws::MAX_FRAME`] after.
    max_frame: usize,
    /// `websockets_origin`: the `Origin`s an upgrade may come from; empty: any.
    origins: std::rc::Rc<[String]>,
    /// The last read stopped at [`WS_RAW_BUDGET`] with bytes left in the socket.
    more: bool,
    /// Not logged in yet: [`WS_PRELOGIN_PINGS`] applies.
    prelogin: bool,
    pings: u32,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl WsStream {
    fn new(inner: Transport, max_frame: usize, origins: std::rc::Rc<[String]>) -> WsStream {
        WsStream {
            inner,
            open: false,
            closing: false,
            raw_in: BytesMut::new(),
            data: BytesMut::new(),
            raw_out: BytesMut::new(),
            max_frame,
            origins,
            more: false,
            prelogin: true,
            pings: 0,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let mut raw_read = 0usize;
        self.more = false;
        loop {
            if !self.data.is_empty() {
                let n = buf.len().min(self.data.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.data.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.data.advance(n);
                return Ok(n);
            }
            if self.closing {
                return Ok(0);
            }
            if raw_read >= WS_RAW_BUDGET {
                self.more = true;
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
            let n = self.inner.read(&mut chunk)?;
            raw_read += n;
            if n == 0 {
                return Ok(0);
            }
            self.raw_in
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
            if !self.open {
                match ws::handshake_with(&self.raw_in, &self.origins) {
                    Ok(None) => continue,
                    Ok(Some((used, resp))) => {
                        self.raw_in.advance(used);
                        self.raw_out.extend_from_slice(&resp);
                        self.open = true;
                    }
                    Err(e) => {
                        self.raw_out.extend_from_slice(match e {
                            ws::WsError::Forbidden => ws::forbidden(),
                            _ => ws::bad_request(),
                        });
                        let _ = self.flush_pending();
                        return Err(invalid(e));
                    }
                }
            }
            let mut ctl = ws::Control::default();
            let decoded =
                ws::decode_frames_max(&mut self.raw_in, &mut self.data, &mut ctl, self.max_frame);
            if ctl.closed || self.raw_out.len() + ctl.reply.len() <= WS_CONTROL_LIMIT {
                self.raw_out.extend_from_slice(&ctl.reply);
            }
            if let Err(e) = decoded {
                if let ws::WsError::Protocol(code, _) = e {
                    self.raw_out.extend_from_slice(&ws::close_frame(code));
                }
                let _ = self.flush_pending();
                return Err(invalid(e));
            }
            if !self.prelogin && !self.data.is_empty() {
                self.pings = 0;
            }
            self.pings = self.pings.saturating_add(ctl.pings);
            let cap = if self.prelogin {
                WS_PRELOGIN_PINGS
            } else {
                WS_PINGS_WITHOUT_DATA
            };
            if self.pings > cap {
                self.raw_out.extend_from_slice(&ws::close_frame(1008));
                let _ = self.flush_pending();
                return Err(invalid("WebSocket ping flood"));
            }
            self.closing = ctl.closed;
            match self.flush_pending() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.open {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        match self.flush_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        if self.raw_out.len() >= WS_OUT_LIMIT {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let n = buf.len().min(WS_OUT_LIMIT);
        ws::encode_frame(0x2, buf.get(..n).unwrap_or_default(), &mut self.raw_out);
        match self.flush_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        while !self.raw_out.is_empty() {
            match self.inner.write(&self.raw_out) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => self.raw_out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.flush_pending()
    }

    fn has_pending(&self) -> bool {
        !self.raw_out.is_empty() || self.inner.has_pending()
    }
}

impl Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
            Transport::Ws(w) => w.read(buf),
            Transport::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
            Transport::Ws(w) => w.write(buf),
            Transport::Unix(s) => s.write(buf),
        }
    }

    /// Sends bytes the transport itself still holds (TLS records).
    fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) | Transport::Unix(_) => Ok(()),
            Transport::Tls(t) => t.flush_pending(),
            Transport::Ws(w) => w.flush_pending(),
        }
    }

    /// A WebSocket read stopped at its raw budget with bytes still in the socket.
    fn more(&self) -> bool {
        matches!(self, Transport::Ws(w) if w.more)
    }

    fn has_pending(&self) -> bool {
        match self {
            Transport::Plain(_) | Transport::Unix(_) => false,
            Transport::Tls(t) => t.has_pending(),
            Transport::Ws(w) => w.has_pending(),
        }
    }

    /// The TCP socket underneath; `None` for a Unix socket.
    fn socket(&mut self) -> Option<&mut TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Tls(t) => t.socket(),
            Transport::Ws(w) => w.inner.socket(),
            Transport::Unix(_) => None,
        }
    }

    /// What the poll registers.
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.source(),
            Transport::Ws(w) => w.inner.source(),
            Transport::Unix(s) => s,
        }
    }

    fn shutdown(&mut self) {
        match self {
            Transport::Unix(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Transport::Tls(t) => t.shutdown(),
            other => {
                if let Some(s) = other.socket() {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }

    fn peer_identity(&self) -> Option<String> {
        match self {
            Transport::Plain(_) | Transport::Unix(_) => None,
            Transport::Tls(t) => t.peer_identity(),
            Transport::Ws(w) => w.inner.peer_identity(),
        }
    }
}

struct Sock {
    stream: Transport,
    /// An outgoing (bridge) connection whose TCP connect has not completed yet.
    connecting: bool,
    /// TLS identity already handed to the broker (or none expected).
    identity_done: bool,
    writing: bool,
    /// The id of the listener it came in on; `None` for outgoing bridge connections.
    listener: Option<u16>,
    /// Bytes of a packet not yet complete (or held back while the connection is paused).
    /// Boxed and dropped when empty: an idle connection pays a pointer.
    #[allow(clippy::box_collection)]
    pending: Option<Box<BytesMut>>,
    /// Accepted and not logged in yet: counted by [`Admission`], and held to its limits.
    prelogin: bool,
    /// Accept order, naming this connection in [`Server::prelogin_order`].
    seq: u64,
}

/// Why [`Server::run`] returned.
pub enum Stop {
    /// SIGINT or SIGTERM: connections were closed.
    Terminate,
    /// SIGHUP: re-read the configuration and call [`Server::reload`], then `run` again.
    Reload,
}

pub struct Server {
    poll: Poll,
    signals: Signals,
    store: Option<Store>,
    sys_interval: Option<Duration>,
    next_sys: Option<Instant>,
    listeners: Vec<Bound>,
    next_listener_id: u16,
    next_token: usize,
    socks: Slab<Sock>,
    broker: Broker,
    scratch: Vec<u8>,
    max_connections: i64,
    /// `set_tcp_nodelay`: TCP_NODELAY on accepted sockets.
    nodelay: bool,
    /// Pre-login limits and failed-login back-off.
    admission: Admission,
    /// Pre-login connections in accept order as (connection id, accept seq), oldest first:
    /// whom to close when a pre-login cap is reached. Entries of connections that logged in
    /// or closed are skipped and dropped lazily.
    prelogin_order: std::collections::VecDeque<(usize, u64)>,
    next_seq: u64,
    /// `websockets_origin`, shared by every WebSocket connection.
    ws_origins: std::rc::Rc<[String]>,
    /// The pass's effects and the output taken while flushing, kept between passes.
    effects: Vec<Effect>,
    /// Connections to read in this pass, each once; kept to reuse its allocation.
    reads: Vec<u32>,
    /// `round_robin false`: connects under way to bridges' first addresses, by bridge.
    probes: Vec<(usize, TcpStream)>,
    output: Vec<Effect>,
}

/// The listeners the configuration asks for. In local-only mode (no listener configured)
/// that is `ports` (1883 by default) on 127.0.0.1 and ::1 only.
pub fn plan(cfg: &Config, cli_ports: &[u16]) -> Vec<Planned> {
    if cfg.local_only() {
        let ports = if cli_ports.is_empty() {
            vec![1883]
        } else {
            cli_ports.to_vec()
        };
        return ports
            .into_iter()
            .map(|p| Planned {
                spec: Listener::new(p, None),
                local: true,
            })
            .collect();
    }
    cfg.listeners
        .iter()
        .cloned()
        .chain(cli_ports.iter().map(|&p| Listener::new(p, None)))
        .map(|spec| Planned { spec, local: false })
        .collect()
}

/// Binds every listener the configuration asks for; the first failure is the error.
pub fn bind(cfg: &Config, cli_ports: &[u16]) -> Result<Vec<Opened>, String> {
    plan(cfg, cli_ports).into_iter().map(bind_one).collect()
}

/// `bind_interface DEVICE`: what Mosquitto 2.0 does (`net__bind_interface`), not
/// SO_BINDTODEVICE (which needs CAP_NET_RAW): the listener binds to the device's addresses,
/// looked up with getifaddrs, its first IPv4 and its first IPv6 one (a global one before a
/// link-local one, which Mosquitto would fail to bind without its scope). With a listener
/// address as well, that address must be one of the device's. An address the device gets
/// later is not listened on until the listener is opened again (a restart or a changed
/// listener on reload), as with Mosquitto.
fn interface_listen_addrs(
    dev: &str,
    host: Option<&str>,
    given: Option<Vec<SocketAddr>>,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    let own = super::listen::interface_addrs(dev)
        .map_err(|e| format!("Error: bind_interface {dev}: {e}"))?
        .ok_or_else(|| format!("Error: bind_interface {dev}: Interface {dev} does not exist."))?;
    let with_port = |mut a: SocketAddr| {
        a.set_port(port);
        a
    };
    if let (Some(host), Some(given)) = (host, given) {
        let both: Vec<SocketAddr> = given
            .into_iter()
            .filter(|g| own.iter().any(|o| o.ip() == g.ip()))
            .map(|g| {
                own.iter()
                    .find(|o| o.ip() == g.ip())
                    .map_or(g, |o| with_port(*o))
            })
            .collect();
        if both.is_empty() {
            return Err(format!(
                "Error: bind_interface {dev}: Interface address for {dev} does not match \
                 specified listener address ({host})."
            ));
        }
        return Ok(both);
    }
    let v4 = own.iter().find(|a| a.is_ipv4());
    let link_local = |a: &&SocketAddr| match a.ip() {
        IpAddr::V6(ip) => ip.segments().first().is_some_and(|s| s & 0xffc0 == 0xfe80),
        IpAddr::V4(_) => false,
    };
    let v6 = own
        .iter()
        .filter(|a| a.is_ipv6())
        .find(|a| !link_local(a))
        .or_else(|| own.iter().find(|a| a.is_ipv6()));
    let addrs: Vec<SocketAddr> = v4.into_iter().chain(v6).map(|a| with_port(*a)).collect();
    if addrs.is_empty() {
        return Err(format!(
            "Error: bind_interface {dev}: Interface {dev} has no IPv4 or IPv6 address."
        ));
    }
    Ok(addrs)
}

/// Binds the sockets of one listener, logging each as Mosquitto does.
fn bind_one(p: Planned) -> Result<Opened, String> {
    let l = &p.spec;
    if let Some(path) = l.unix_path() {
        info!("Opening unix listen socket on path {}.", path.display());
        let s = ListenSock::bind_unix(path)
            .map_err(|e| format!("Error: {e} (unix socket {})", path.display()))?;
        return Ok(Opened {
            plan: p,
            sockets: vec![(s, 0)],
        });
    }
    let addrs: Vec<SocketAddr> = if p.local {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), l.port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), l.port),
        ]
    } else {
        let given = match &l.bind {
            Some(host) => Some(
                (host.as_str(), l.port)
                    .to_socket_addrs()
                    .map_err(|e| format!("Error: cannot resolve listener address {host}: {e}"))?
                    .collect::<Vec<SocketAddr>>(),
            ),
            None => None,
        };
        match (&l.bind_interface, given) {
            (Some(dev), given) => interface_listen_addrs(dev, l.bind.as_deref(), given, l.port)?,
            (None, Some(addrs)) => addrs,
            (None, None) => vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), l.port)],
        }
    };
    let mut sockets = Vec::new();
    for addr in addrs {
        let family = match (l.protocol, addr.is_ipv4()) {
            (ListenerProtocol::WebSockets, _) => "websockets",
            (_, true) => "ipv4",
            (_, false) => "ipv6",
        };
        match TcpListener::bind(addr) {
            Ok(s) => {
                let port = s.local_addr().map(|a| a.port()).unwrap_or(l.port);
                info!("Opening {family} listen socket on port {port}.");
                sockets.push((ListenSock::Tcp(s), port));
            }
            Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
                // No IPv6 on this host: fall back to IPv4 for "all addresses".
                let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
                let s = TcpListener::bind(v4)
                    .map_err(|e2| format!("Error: {e2} (port {}; ipv6: {e})", l.port))?;
                let port = s.local_addr().map(|a| a.port()).unwrap_or(l.port);
                info!("Opening ipv4 listen socket on port {port}.");
                sockets.push((ListenSock::Tcp(s), port));
            }
            // A device's IPv6 address can still be tentative (duplicate address detection)
            // when a router starts its services: listening on its IPv4 one is better than
            // not starting.
            Err(e)
                if (p.local || l.bind_interface.is_some())
                    && addr.is_ipv6()
                    && !sockets.is_empty() =>
            {
                warn!("Not listening on {addr}: {e}.");
            }
            Err(e) => return Err(format!("Error: {e} (listening on {addr})")),
        }
    }
    Ok(Opened { plan: p, sockets })
}

impl Server {
    pub fn new(
        broker: Broker,
        cfg: &Config,
        bound: Vec<Opened>,
        signals: Signals,
    ) -> Result<Server, String> {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let fd = signals.fd();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                SIGNAL_TOKEN,
                Interest::READABLE,
            )
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        let mut broker = broker;
        broker.set_wall(wall_ms());
        let mut store = Store::from_config(cfg, now);
        if let Some(st) = &mut store {
            st.load(&mut broker, now);
        }
        broker.add_bridges(&cfg.bridges, now);
        let sys_interval =
            (cfg.sys_interval > 0).then(|| Duration::from_secs(u64::from(cfg.sys_interval)));
        let mut server = Server {
            poll,
            signals,
            store,
            sys_interval,
            next_sys: Some(now),
            listeners: Vec::new(),
            next_listener_id: 0,
            next_token: 0,
            socks: Slab::default(),
            broker,
            scratch: vec![0; READ_CHUNK],
            max_connections: cfg.max_connections,
            nodelay: cfg.set_tcp_nodelay,
            admission: Admission::new(AdmissionLimits::from_config(cfg)),
            ws_origins: cfg.websockets_origins.clone().into(),
            prelogin_order: Default::default(),
            next_seq: 0,
            effects: Vec::new(),
            reads: Vec::new(),
            probes: Vec::new(),
            output: Vec::new(),
        };
        for (i, o) in bound.into_iter().enumerate() {
            let tls = if o.plan.tls() {
                Some(ServerTls::new(&o.plan.spec)?)
            } else {
                None
            };
            // Planned listeners are the configured ones first, in order.
            let scope = server.broker.auth.scope_of_listener(i);
            server.add_listener(cfg, o, tls, scope)?;
        }
        Ok(server)
    }

    /// Registers a bound listener with the poll and gives it a fresh id and tokens.
    fn add_listener(
        &mut self,
        cfg: &Config,
        o: Opened,
        tls: Option<ServerTls>,
        scope: u8,
    ) -> Result<(), String> {
        let mut id = self.next_listener_id;
        while self.listeners.iter().any(|b| b.id == id) {
            id = id.wrapping_add(1);
        }
        self.next_listener_id = id.wrapping_add(1);
        let mut sockets = Vec::new();
        for (mut socket, port) in o.sockets {
            let token = LISTENER_BASE + self.next_token;
            self.next_token += 1;
            self.poll
                .registry()
                .register(socket.source(), Token(token), Interest::READABLE)
                .map_err(|e| e.to_string())?;
            sockets.push((token, socket, port));
        }
        self.listeners.push(Bound {
            id,
            anonymous: cfg.anonymous_policy(Some(&o.plan.spec)),
            scope,
            plan: o.plan,
            sockets,
            tls,
            open: 0,
        });
        Ok(())
    }

    /// Applies a reloaded configuration without dropping what did not change: limits (for
    /// new connections), `$SYS` interval, autosave policy, bridges, and the listeners.
    /// Listeners with the same port, address, protocol and TLS-ness keep their sockets and
    /// connections and take the new anonymous access, TLS certificates and limits; removed
    /// ones close, and their clients are disconnected as by a network failure (wills fire,
    /// sessions stay); new ones are opened. A listener that fails to open is logged.
    /// `auth` is the re-read password files and ACLs; `None` (they failed to load) keeps the
    /// old ones, and every connection and session keeps its scope.
    pub fn reload(&mut self, cfg: &Config, cli_ports: &[u16], auth: Option<super::core::Auth>) {
        let now = Instant::now();
        self.broker.limits = super::core::Limits::from_config(cfg);
        self.max_connections = cfg.max_connections;
        self.admission.limits = AdmissionLimits::from_config(cfg);
        self.ws_origins = cfg.websockets_origins.clone().into();
        if self.nodelay != cfg.set_tcp_nodelay {
            // New connections take it from `self.nodelay`; open ones are set here. Outgoing
            // (bridge) sockets keep what their dial set.
            self.nodelay = cfg.set_tcp_nodelay;
            for (_, sock) in self.socks.iter_mut().filter(|(_, s)| s.listener.is_some()) {
                if let Some(s) = sock.stream.socket() {
                    let _ = s.set_nodelay(self.nodelay);
                }
            }
        }
        let sys_interval =
            (cfg.sys_interval > 0).then(|| Duration::from_secs(u64::from(cfg.sys_interval)));
        if sys_interval != self.sys_interval {
            self.sys_interval = sys_interval;
            self.next_sys = sys_interval.map(|i| now + i);
        }
        if let Some(st) = &mut self.store {
            st.set_policy(cfg);
        }
        let rescope = auth.is_some();
        if let Some(a) = auth {
            self.broker.auth = a;
        }
        self.reload_listeners(cfg, cli_ports, rescope);
        self.broker.set_bridges(&cfg.bridges, now);
    }

    fn reload_listeners(&mut self, cfg: &Config, cli_ports: &[u16], rescope: bool) {
        let new = plan(cfg, cli_ports);
        let (keep, close) = {
            let old: Vec<&Planned> = self.listeners.iter().map(|b| &b.plan).collect();
            diff_listeners(&old, &new)
        };
        let closing: Vec<u16> = close
            .iter()
            .filter_map(|&i| self.listeners.get(i).map(|b| b.id))
            .collect();
        let kept: Vec<Option<u16>> = keep
            .iter()
            .map(|k| k.and_then(|i| self.listeners.get(i).map(|b| b.id)))
            .collect();
        for id in closing {
            self.close_listener(id);
        }
        let mut reloaded_tls = 0;
        // Old scope -> new scope of the listeners kept, for the sessions they left behind.
        let mut moved: Vec<(u8, u8)> = Vec::new();
        for (i, (p, keep_id)) in new.into_iter().zip(kept).enumerate() {
            let scope = if rescope {
                self.broker.auth.scope_of_listener(i)
            } else {
                self.listeners
                    .iter()
                    .find(|b| Some(b.id) == keep_id)
                    .map_or(super::core::GLOBAL_SCOPE, |b| b.scope)
            };
            let tls = if p.tls() {
                match ServerTls::new(&p.spec) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        error!("Error: TLS for the listener on port {}: {e}.", p.spec.port);
                        None
                    }
                }
            } else {
                None
            };
            if let Some(b) = self.listeners.iter_mut().find(|b| Some(b.id) == keep_id) {
                b.anonymous = cfg.anonymous_policy(Some(&p.spec));
                if b.scope != super::core::GLOBAL_SCOPE {
                    moved.push((b.scope, scope));
                }
                b.scope = scope;
                // Connections still waiting for their CONNECT get the new rule too; all take
                // the listener's new auth scope.
                for (c, _) in self.socks.iter().filter(|(_, s)| s.listener == Some(b.id)) {
                    if let Some(conn) = self.broker.conns.get_mut(c) {
                        let anonymous = if conn.connected {
                            conn.login.anonymous()
                        } else {
                            b.anonymous.allows(conn.peer().ip())
                        };
                        conn.login = Login::new(scope, anonymous);
                    }
                }
                b.plan = p;
                match tls {
                    Some(t) => {
                        b.tls = Some(t);
                        reloaded_tls += 1;
                    }
                    None if b.tls.is_some() => {
                        warn!(
                            "Keeping the old TLS certificates of the listener on port {}.",
                            b.plan.spec.port
                        );
                    }
                    None => {}
                }
                continue;
            }
            if p.tls() && tls.is_none() {
                error!(
                    "Error: not opening the listener on port {} without its TLS setup.",
                    p.spec.port
                );
                continue;
            }
            let port = p.spec.port;
            match bind_one(p).and_then(|o| self.add_listener(cfg, o, tls, scope)) {
                Ok(()) => {}
                Err(e) => error!(
                    "Error: unable to open the listener on port {port}: {}",
                    e.trim_start_matches("Error: ")
                ),
            }
        }
        if reloaded_tls > 0 {
            info!("Reloaded TLS certificates of {reloaded_tls} listener(s).");
        }
        if rescope {
            self.broker.rescope(&moved);
        }
    }

    /// Closes listener `id`'s sockets and disconnects its clients.
    fn close_listener(&mut self, id: u16) {
        let Some(i) = self.listeners.iter().position(|b| b.id == id) else {
            return;
        };
        let mut b = self.listeners.remove(i);
        for (_, socket, port) in &mut b.sockets {
            let _ = self.poll.registry().deregister(socket.source());
            info!("Closing listen socket on {}.", socket.describe(*port));
            socket.remove_file();
        }
        let conns: Vec<usize> = self
            .socks
            .iter()
            .filter(|(_, s)| s.listener == Some(id))
            .map(|(c, _)| c)
            .collect();
        for c in conns {
            if let Some(conn) = self.broker.conns.get(c) {
                info!(
                    "Client {} disconnected: its listener was removed.",
                    conn.display_id()
                );
            }
            self.broker.close_conn(c, Close::SocketError);
        }
    }

    /// Runs until a signal needs the caller: [`Stop::Terminate`] or [`Stop::Reload`].
    pub fn run(&mut self) -> io::Result<Stop> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            self.broker.set_wall(wall_ms());
            self.broker.poll(now);
            for (t, line) in logging::take_topic_lines() {
                self.broker.publish_internal(
                    &format!("$SYS/broker/log/{}", logging::topic_letter(t)),
                    line.into_bytes().into(),
                    false,
                    now,
                );
            }
            if self.next_sys.is_some_and(|t| now >= t) {
                self.publish_sys(now);
            }
            // Before the acknowledgements of this pass go out (autosave_on_changes).
            if let Some(st) = &mut self.store {
                st.maybe_save(&mut self.broker, now, false);
            }
            self.pass(now);
            if let Some(st) = &mut self.store {
                st.step(&self.broker, now, &Instant::now);
            }
            // Zero while the broker has effects queued: the loop never sleeps with work
            // pending (a resumed publisher's bytes are already in the kernel and bring no
            // new edge-triggered event).
            // A compaction's next slice is one of the store's deadlines: between slices the
            // loop waits here as when idle.
            let timeout = [
                self.broker.poll_delay(now),
                self.next_sys.map(|d| d.saturating_duration_since(now)),
                self.store
                    .as_ref()
                    .and_then(|st| st.next_deadline(self.broker.changes))
                    .map(|d| d.saturating_duration_since(now)),
            ]
            .into_iter()
            .flatten()
            .min();
            // Spare output buffers and spent messages kept from a busy spell go once a poll
            // finds nothing to do; while they are held, that poll waits at most
            // SPARE_TRIM_AFTER.
            let spares = self.broker.holds_busy_spares();
            let timeout = match timeout {
                Some(t) if spares => Some(t.min(SPARE_TRIM_AFTER)),
                None if spares => Some(SPARE_TRIM_AFTER),
                t => t,
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if spares && events.is_empty() && timeout.is_some_and(|t| !t.is_zero()) {
                self.broker.trim_busy_spares();
            }
            let now = Instant::now();
            self.broker.set_wall(wall_ms());
            for ev in events.iter() {
                match ev.token() {
                    SIGNAL_TOKEN => {
                        let got = self.signals.take();
                        if got & signals::TERMINATE != 0 {
                            self.shutdown();
                            return Ok(Stop::Terminate);
                        }
                        if got & signals::SAVE != 0 {
                            if let Some(st) = &mut self.store {
                                info!("Saving in-memory database to {}.", st.path().display());
                                st.save_now(&mut self.broker, now);
                            }
                        }
                        if got & signals::RELOAD != 0 {
                            return Ok(Stop::Reload);
                        }
                    }
                    Token(t) if t >= LISTENER_BASE => self.accept(t, now),
                    Token(id) => {
                        if ev.is_writable() {
                            self.write(id, now);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(id, now, ev.is_read_closed() || ev.is_error());
                        }
                    }
                }
            }
        }
    }

    /// One pass over what the broker queued: reads owed (resumed or over budget) and bridge
    /// dials first, then every write and close, those the reads produced included. Reads and
    /// dials queued meanwhile wait for the next pass, which comes without sleeping.
    fn pass(&mut self, now: Instant) {
        let mut effects = std::mem::take(&mut self.effects);
        self.broker.take_effects(&mut effects);
        // A connection is read at most once a pass, however many Resume/Read effects name
        // it: a publisher resumed on behalf of several congested subscribers would otherwise
        // get one read budget per effect, and everyone else would wait for it.
        let mut reads = std::mem::take(&mut self.reads);
        reads.clear();
        for e in &effects {
            match *e {
                Effect::Resume(id) | Effect::Read(id) => reads.push(id),
                Effect::Dial(idx) => self.connect_bridge(idx as usize, now),
                Effect::ProbePrimary(idx) => self.probe_primary(idx as usize, now),
                Effect::Write(_) | Effect::Close(_) => {}
            }
        }
        crate::sort::sort(&mut reads);
        reads.dedup();
        for &id in &reads {
            // Events may have come and gone while it was paused or over budget, a closed
            // read side among them: read until WouldBlock.
            self.read(id as usize, now, true);
        }
        // What those reads acknowledge is durable before the acknowledgements go out.
        if !reads.is_empty() {
            if let Some(st) = &mut self.store {
                st.commit(&mut self.broker, now);
            }
        }
        self.reads = reads;
        self.flush(&effects, now);
        self.effects = effects;
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        self.broker.set_wall(wall_ms());
        self.broker.shutdown();
        let mut effects = Vec::new();
        self.broker.take_effects(&mut effects);
        self.flush(&effects, now);
        if let Some(st) = &mut self.store {
            info!("Saving in-memory database to {}.", st.path().display());
            st.maybe_save(&mut self.broker, now, true);
        }
        info!("rmqtt version {} terminating", env!("CARGO_PKG_VERSION"));
    }

    /// `round_robin false`: whether bridge `idx`'s first address answers again, as
    /// Mosquitto's `bridge_check` finds out: a non-blocking TCP connect, whose outcome is
    /// read on the next probe a second later (nothing is sent on it; it is closed either way).
    fn probe_primary(&mut self, idx: usize, now: Instant) {
        if let Some(pos) = self.probes.iter().position(|(i, _)| *i == idx) {
            let (_, s) = self.probes.swap_remove(pos);
            let up = matches!(s.take_error(), Ok(None)) && s.peer_addr().is_ok();
            return self.broker.bridge_primary_probed(idx, Some(up), now);
        }
        let Some((host, port)) = self.broker.bridge_primary(idx) else {
            return;
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next());
        let from = self
            .broker
            .bridge_config(idx)
            .and_then(|b| b.bind_address.as_deref())
            .and_then(|a| a.parse::<IpAddr>().ok());
        let dialed = addr.and_then(|addr| {
            match from {
                Some(local) => super::listen::connect_from(local, addr),
                None => TcpStream::connect(addr),
            }
            .ok()
        });
        match dialed {
            Some(s) => {
                self.probes.push((idx, s));
                self.broker.bridge_primary_probed(idx, None, now);
            }
            None => self.broker.bridge_primary_probed(idx, Some(false), now),
        }
    }

    /// Starts a non-blocking connect for bridge `idx`; completion shows up as writability.
    fn connect_bridge(&mut self, idx: usize, now: Instant) {
        let Some((host, port)) = self.broker.bridge_address(idx) else {
            return;
        };
        let addr = match (host.as_str(), port).to_socket_addrs() {
            Ok(mut it) => it.next(),
            Err(_) => None,
        };
        let Some(addr) = addr else {
            let why = format!("cannot resolve {host}");
            return self.broker.bridge_failed(idx, &why, now);
        };
        let from = self
            .broker
            .bridge_config(idx)
            .and_then(|b| b.bind_address.as_deref())
            .and_then(|a| a.parse::<IpAddr>().ok());
        let dialed = match from {
            Some(local) => super::listen::connect_from(local, addr),
            None => TcpStream::connect(addr),
        };
        let stream = match dialed {
            Ok(s) => s,
            Err(e) => return self.broker.bridge_failed(idx, &e.to_string(), now),
        };
        let _ = stream.set_nodelay(true);
        let mut stream = match self.broker.bridge_config(idx).filter(|b| b.uses_tls()) {
            None => Transport::Plain(stream),
            Some(b) => match crate::tls::ClientTls::new(
                b.cafile.as_deref(),
                b.capath.as_deref(),
                b.certfile.as_deref(),
                b.keyfile.as_deref(),
                b.insecure,
                b.tls_version.as_deref(),
            )
            .and_then(|tls| tls.connect(stream, &host))
            {
                Ok(t) => Transport::Tls(Box::new(t)),
                Err(e) => return self.broker.bridge_failed(idx, &e, now),
            },
        };
        let Some(id) = self.broker.bridge_open(idx, addr, now) else {
            return;
        };
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            error!("Unable to register bridge connection: {e}.");
            self.broker.peer_closed(id, true);
            return;
        }
        self.socks.put(
            id,
            Sock {
                stream,
                connecting: true,
                identity_done: true,
                pending: None,
                prelogin: false,
                seq: 0,
                writing: true,
                listener: None,
            },
        );
    }

    fn publish_sys(&mut self, now: Instant) {
        let figures = LoopFigures {
            heap_bytes: resident_bytes(),
            persistence_writes: self.store.as_ref().map_or(0, |s| s.writes),
            persistence_bytes: self.store.as_ref().map_or(0, |s| s.bytes),
        };
        self.broker.publish_sys(now, figures);
        self.next_sys = self.sys_interval.map(|i| now + i);
    }

    fn accept(&mut self, token: usize, now: Instant) {
        loop {
            let Some(l) = self
                .listeners
                .iter_mut()
                .find(|b| b.sockets.iter().any(|(t, _, _)| *t == token))
            else {
                return;
            };
            let Some((_, socket, port)) = l.sockets.iter().find(|(t, _, _)| *t == token) else {
                return;
            };
            let port = *port;
            let (stream, addr) = match socket.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("Unable to accept new connection: {e}.");
                    return;
                }
            };
            let total = self.broker.conns.len() as i64;
            let max = l.plan.spec.max_connections;
            if (max > 0 && l.open >= max)
                || (self.max_connections > 0 && total >= self.max_connections)
            {
                info!(
                    "Client connection from {} denied: max_connections exceeded.",
                    fmt_addr(&addr)
                );
                continue;
            }
            // At most two evictions (per address, then overall) make room.
            let mut admitted = Err(String::new());
            for _ in 0..3 {
                admitted = match self.admission.admit(addr.ip(), now) {
                    Ok(None) => Ok(()),
                    Ok(Some(scope)) => {
                        if self.evict_prelogin(scope, now) {
                            continue;
                        }
                        Err("no pre-login connection to make room".to_owned())
                    }
                    Err(why) => Err(why),
                };
                break;
            }
            if let Err(why) = admitted {
                info!("Client connection from {} denied: {why}.", fmt_addr(&addr));
                continue;
            }
            // The eviction borrowed `self`: find the listener anew.
            let Some(l) = self
                .listeners
                .iter_mut()
                .find(|b| b.sockets.iter().any(|(t, _, _)| *t == token))
            else {
                self.admission.left(addr.ip());
                return;
            };
            let mut stream = match stream {
                Accepted::Unix(s) => match &l.tls {
                    None => Transport::Unix(s),
                    Some(tls) => match tls.accept_unix(s) {
                        Ok(t) => Transport::Tls(Box::new(t)),
                        Err(e) => {
                            error!("TLS setup for {} failed: {e}.", fmt_addr(&addr));
                            self.admission.left(addr.ip());
                            continue;
                        }
                    },
                },
                Accepted::Tcp(stream) => {
                    // On unless configured off: replies are batched per loop pass already.
                    let _ = stream.set_nodelay(self.nodelay);
                    match &l.tls {
                        None => Transport::Plain(stream),
                        Some(tls) => match tls.accept(stream) {
                            Ok(t) => Transport::Tls(Box::new(t)),
                            Err(e) => {
                                error!("TLS setup for {} failed: {e}.", fmt_addr(&addr));
                                self.admission.left(addr.ip());
                                continue;
                            }
                        },
                    }
                }
            };
            if l.plan.spec.protocol == ListenerProtocol::WebSockets {
                stream = Transport::Ws(Box::new(WsStream::new(
                    stream,
                    self.admission.limits.max_connect_size,
                    self.ws_origins.clone(),
                )));
            }
            let id = self
                .broker
                .accept(addr, port, l.anonymous.allows(addr.ip()), now);
            if let Some(c) = self.broker.conns.get_mut(id) {
                c.login = Login::new(l.scope, c.login.anonymous());
            }
            if let Err(e) =
                self.poll
                    .registry()
                    .register(stream.source(), Token(id), Interest::READABLE)
            {
                error!("Unable to register connection: {e}.");
                self.broker.peer_closed(id, true);
                self.broker.finish(id, now);
                self.admission.left(addr.ip());
                continue;
            }
            l.open += 1;
            self.socks.put(
                id,
                Sock {
                    stream,
                    connecting: false,
                    identity_done: !(l.plan.spec.use_identity_as_username
                        || l.plan.spec.use_subject_as_username),
                    pending: None,
                    prelogin: true,
                    seq: self.next_seq,
                    writing: false,
                    listener: Some(l.id),
                },
            );
            self.prelogin_order.push_back((id, self.next_seq));
            self.next_seq += 1;
            if self.prelogin_order.len() > 2 * self.admission.pending() + 64 {
                let socks = &self.socks;
                self.prelogin_order
                    .retain(|&(id, seq)| socks.get(id).is_some_and(|s| s.prelogin && s.seq == seq));
            }
        }
    }

    /// Closes the oldest pre-login connection in `scope` to make room for a new one;
    /// false when there is none.
    fn evict_prelogin(&mut self, scope: Evict, now: Instant) -> bool {
        let live = |socks: &Slab<Sock>, id: usize, seq: u64| {
            socks.get(id).is_some_and(|s| s.prelogin && s.seq == seq)
        };
        // Stale entries at the front are dropped on the way.
        while let Some(&(id, seq)) = self.prelogin_order.front() {
            if live(&self.socks, id, seq) {
                break;
            }
            self.prelogin_order.pop_front();
        }
        let victim = self.prelogin_order.iter().find_map(|&(id, seq)| {
            if !live(&self.socks, id, seq) {
                return None;
            }
            // One already closing has a `Close` effect queued: not a victim (its id must not
            // be closed twice once reused).
            let peer = self
                .broker
                .conns
                .get(id)
                .filter(|c| c.close.is_none())?
                .peer();
            match scope {
                Evict::Oldest => Some((id, peer)),
                Evict::OldestOf(want) => {
                    (admission::scope(peer.ip()) == want).then_some((id, peer))
                }
            }
        });
        let Some((id, peer)) = victim else {
            return false;
        };
        if let Some(s) = self.socks.get_mut(id) {
            s.prelogin = false;
        }
        self.admission.left(peer.ip());
        info!(
            "Client {} closed before CONNECT to make room: too many connections not logged in.",
            fmt_addr(&peer)
        );
        // Closed here and now, without a queued `Close` effect: the id is free for the
        // connection being accepted.
        self.close(id, now);
        true
    }

    /// Reads until the socket has nothing more (edge-triggered) or this pass's budget is
    /// used, handing bytes to the broker. Unless `drain`, a short read of a plain TCP socket
    /// counts as having nothing more.
    fn read(&mut self, id: usize, now: Instant, drain: bool) {
        let Some(sock) = self.socks.get_mut(id) else {
            return;
        };
        if let Some(p) = sock.pending.as_deref_mut() {
            let used = self.broker.input(id, p, now);
            p.advance(used);
        }
        let mut budget = READ_BUDGET;
        loop {
            match self.broker.conns.get(id) {
                Some(c) if c.close.is_none() && !c.paused => {}
                _ => break,
            }
            if budget == 0 {
                // Edge-triggered: what is left brings no new event.
                self.broker.read_again(id);
                break;
            }
            match sock.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.broker.peer_closed(id, false);
                    break;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.broker.stats.bytes_received += n as u64;
                    if !sock.identity_done {
                        // The handshake is over once application data flows.
                        sock.identity_done = true;
                        self.broker
                            .set_tls_identity(id, sock.stream.peer_identity());
                    }
                    let data = self.scratch.get(..n).unwrap_or_default();
                    if sock.prelogin {
                        if let Err(why) = prelogin_check(
                            sock.pending.as_deref().map_or(&[][..], |p| &p[..]),
                            data,
                            self.admission.limits.max_connect_size,
                        ) {
                            if let Some(c) = self.broker.conns.get(id) {
                                info!(
                                    "Client connection from {} refused before CONNECT: {why}.",
                                    fmt_addr(&c.peer())
                                );
                            }
                            sock.pending = None;
                            self.broker.close_conn(id, Close::ProtocolError);
                            break;
                        }
                    }
                    match sock.pending.as_deref_mut().filter(|p| !p.is_empty()) {
                        None => {
                            let used = self.broker.input(id, data, now);
                            if let Some(rest) = data.get(used..).filter(|r| !r.is_empty()) {
                                sock.pending
                                    .get_or_insert_with(Default::default)
                                    .extend_from_slice(rest);
                            }
                        }
                        Some(p) => {
                            p.extend_from_slice(data);
                            let used = self.broker.input(id, p, now);
                            p.advance(used);
                        }
                    }
                    if !drain
                        && n < self.scratch.len()
                        && matches!(sock.stream, Transport::Plain(_))
                    {
                        // A short read of a TCP socket took all it had, and what comes after
                        // the event (data or FIN) brings a new edge-triggered event: Linux
                        // wakes epoll on every arrival. So the read that would only say
                        // WouldBlock is saved. A FIN that was already there when the event
                        // was reported shows as read-closed, and then `drain` is set. TLS and
                        // WebSockets buffer inside the transport and read until WouldBlock.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sock.stream.more() {
                        self.broker.read_again(id);
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        // A WebSocket protocol violation or flood: say which.
                        if let Some(c) = self.broker.conns.get(id) {
                            info!(
                                "Client {} from {}: {e}, disconnecting.",
                                c.display_id(),
                                fmt_addr(&c.peer())
                            );
                        }
                    }
                    self.broker.peer_closed(id, true);
                    break;
                }
            }
        }
        if sock.prelogin {
            if let Some(c) = self.broker.conns.get(id) {
                let ip = c.peer().ip();
                if c.connected {
                    sock.prelogin = false;
                    if let Transport::Ws(w) = &mut sock.stream {
                        w.max_frame = ws::MAX_FRAME;
                        w.prelogin = false;
                        w.pings = 0;
                    }
                    self.admission.left(ip);
                    self.admission.login_ok(ip);
                } else if c.close == Some(Close::Refused) {
                    sock.prelogin = false;
                    self.admission.left(ip);
                    if let Some(b) = self.admission.login_failed(ip, now) {
                        info!(
                            "Backing off {} for {} s after repeated failed logins.",
                            ip,
                            b.as_secs()
                        );
                    }
                }
            }
        }
        if sock.pending.as_ref().is_some_and(|p| p.is_empty()) {
            // Idle connections hold no read buffer.
            sock.pending = None;
        }
        if sock.stream.has_pending() {
            // TLS handshake records that did not fit in the socket yet.
            self.write(id, now);
        }
    }

    /// Writes what the broker queued for `id`; asks for write readiness if the socket is full.
    fn write(&mut self, id: usize, now: Instant) {
        let Some(sock) = self.socks.get_mut(id) else {
            return;
        };
        let Some(conn) = self.broker.conns.get_mut(id) else {
            return;
        };
        if let Some(s) = sock.stream.socket().filter(|_| sock.connecting) {
            match (s.take_error(), s.peer_addr()) {
                (Ok(None), Ok(_)) => sock.connecting = false,
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                _ => {
                    self.broker.peer_closed(id, true);
                    return;
                }
            }
        }
        let mut failed = match sock.stream.flush_pending() {
            Ok(()) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        while !failed && !conn.out().is_empty() {
            match sock.stream.write(conn.out()) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => {
                    conn.out_consumed(n);
                    self.broker.stats.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            conn.out_clear();
            self.broker.peer_closed(id, true);
            return;
        }
        // Idle connections hold no output buffer (see `Conn::out_consumed`); a busy one pays
        // an allocation per batch of packets.
        let want = !conn.out().is_empty() || sock.stream.has_pending();
        if want != sock.writing {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(sock.stream.source(), Token(id), interest)
                .is_ok()
            {
                sock.writing = want;
            }
        }
        self.broker.flushed(id, now);
    }

    /// Writes every connection with new output and closes those marked for closing: first
    /// the `Write`s and `Close`s among `effects`, then those that handling them queues
    /// (wills, resumed sessions), until none are left.
    fn flush(&mut self, effects: &[Effect], now: Instant) {
        let mut output = std::mem::take(&mut self.output);
        let mut batch = effects;
        while !batch.is_empty() {
            for &e in batch {
                match e {
                    Effect::Write(id) => self.write(id as usize, now),
                    Effect::Close(id) => self.close(id as usize, now),
                    Effect::Resume(_)
                    | Effect::Read(_)
                    | Effect::Dial(_)
                    | Effect::ProbePrimary(_) => {}
                }
            }
            self.broker.take_output(&mut output);
            batch = &output;
        }
        self.output = output;
    }

    /// Writes what it can of a closing connection's output, drops the socket and lets the
    /// broker forget the connection.
    fn close(&mut self, id: usize, now: Instant) {
        self.write(id, now);
        if let Some(mut sock) = self.socks.take(id) {
            if sock.prelogin {
                if let Some(c) = self.broker.conns.get(id) {
                    self.admission.left(c.peer().ip());
                }
            }
            let _ = self.poll.registry().deregister(sock.stream.source());
            sock.stream.shutdown();
            if let Some(l) = sock
                .listener
                .and_then(|i| self.listeners.iter_mut().find(|b| b.id == i))
            {
                l.open -= 1;
            }
        }
        self.broker.finish(id, now);
    }
}

/// The admission check of a pre-login read: the first bytes of what is buffered followed by
/// what was just read (the fixed header may span both).
fn prelogin_check(pending: &[u8], data: &[u8], max: usize) -> Result<(), String> {
    let mut head = [0u8; 5];
    let mut n = 0;
    for (dst, src) in head.iter_mut().zip(pending.iter().chain(data.iter())) {
        *dst = *src;
        n += 1;
    }
    admission::check_front(head.get(..n).unwrap_or_default(), max)
}

/// Resident memory of this process, from /proc (0 where there is none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The wall clock in milliseconds since the Unix epoch (0 before it): read here, at the
/// edge, once per pass, and handed to the broker ([`Broker::set_wall`]).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(port: u16, bind: Option<&str>) -> Planned {
        Planned {
            spec: Listener::new(port, bind.map(str::to_owned)),
            local: false,
        }
    }

    fn tls(mut l: Planned) -> Planned {
        l.spec.certfile = Some("/c.pem".into());
        l.spec.keyfile = Some("/k.pem".into());
        l
    }

    fn diff(old: &[Planned], new: &[Planned]) -> (Vec<Option<usize>>, Vec<usize>) {
        let old: Vec<&Planned> = old.iter().collect();
        diff_listeners(&old, new)
    }

    #[test]
    fn unchanged_listeners_are_kept_in_any_order() {
        let old = [p(1883, None), p(8883, Some("127.0.0.1"))];
        let new = [p(8883, Some("127.0.0.1")), p(1883, None)];
        assert_eq!(diff(&old, &new), (vec![Some(1), Some(0)], vec![]));
    }

    #[test]
    fn settings_other_than_the_socket_do_not_reopen() {
        let old = [tls(p(8883, None))];
        let mut n = tls(p(8883, None));
        n.spec.allow_anonymous = Some(crate::config::Anonymous::Local);
        n.spec.max_connections = 5;
        n.spec.certfile = Some("/other.pem".into());
        n.spec.use_identity_as_username = true;
        assert_eq!(diff(&old, &[n]), (vec![Some(0)], vec![]));
    }

    #[test]
    fn changed_listeners_are_closed_and_opened() {
        let mut ws = p(1883, None);
        ws.spec.protocol = ListenerProtocol::WebSockets;
        let local = Planned {
            spec: Listener::new(1883, None),
            local: true,
        };
        for changed in [
            p(1884, None),
            p(1883, Some("127.0.0.1")),
            ws,
            tls(p(1883, None)),
            local,
        ] {
            assert_eq!(
                diff(&[p(1883, None)], std::slice::from_ref(&changed)),
                (vec![None], vec![0]),
                "{changed:?}"
            );
        }
    }

    #[test]
    fn added_removed_and_duplicates() {
        let old = [p(1, None), p(2, None), p(2, None), p(3, None)];
        let new = [p(2, None), p(4, None), p(2, None), p(2, None)];
        assert_eq!(
            diff(&old, &new),
            (vec![Some(1), None, Some(2), None], vec![0, 3])
        );
        assert_eq!(diff(&[], &[p(1, None)]), (vec![None], vec![]));
        assert_eq!(diff(&[p(1, None)], &[]), (vec![], vec![0]));
    }

    #[test]
    fn local_only_mode_plans_loopback_listeners() {
        let cfg = Config::default();
        let pl = plan(&cfg, &[]);
        assert_eq!(pl.len(), 1);
        assert!(pl[0].local);
        assert_eq!(pl[0].spec.port, 1883);
        assert_eq!(plan(&cfg, &[1, 2]).len(), 2);
        let cfg = Config {
            listeners: vec![Listener::new(9, None)],
            ..Config::default()
        };
        let pl = plan(&cfg, &[7]);
        assert_eq!(
            pl.iter()
                .map(|x| (x.spec.port, x.local))
                .collect::<Vec<_>>(),
            vec![(9, false), (7, false)]
        );
    }
}
