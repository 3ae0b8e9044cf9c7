//! One MQTT client connection over a blocking `TcpStream`: CONNECT/CONNACK, sending and
//! receiving packets, keepalive pings, packet ids, and libmosquitto's `-d` debug lines.
//!
//! Reads use socket timeouts so that a PINGREQ goes out when the connection has been quiet for
//! the keepalive interval; callers pass a deadline when they have their own (`-W`). Nothing
//! here panics on what the broker sends: a bad packet is a [`ClientError::Protocol`].

use super::options::Config;
use crate::protocol::{
    self, Ack, ConnAck, Connect, Disconnect, Packet, Publish, QoS, Version, Will,
};
use bytes::{Bytes, BytesMut};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Largest packet the clients accept from a broker (the MQTT maximum).
const MAX_PACKET: usize = 268_435_460;

#[derive(Debug)]
pub enum ClientError {
    /// Name resolution failed.
    Lookup,
    /// A socket error, with the OS's wording.
    Io(io::Error),
    /// The broker closed the connection.
    Closed,
    /// The broker sent something that is not valid MQTT, or not valid here.
    Protocol(String),
    /// The broker answered CONNACK with this non-zero code.
    Refused(u8),
    /// No PINGRESP within the keepalive interval.
    KeepaliveTimeout,
    /// TLS set-up or handshake failed (untrusted certificate, bad files...).
    Tls(String),
    /// The broker sent DISCONNECT (a take-over, a shutdown...).
    BrokerDisconnect,
    /// SIGINT or SIGTERM arrived: the applet disconnects and exits 0.
    Stopped,
}

impl ClientError {
    /// Errors after which libmosquitto's `loop_forever` reconnects: the connection went away,
    /// as opposed to a broker that speaks bad MQTT or refuses us.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Closed
                | ClientError::Io(_)
                | ClientError::KeepaliveTimeout
                | ClientError::BrokerDisconnect
        )
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

/// `strerror` text of an I/O error, without Rust's " (os error N)" suffix.
pub fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Plain TCP, TLS when any TLS option was given, or a Unix domain socket (`--unix`).
enum Stream {
    Plain(TcpStream),
    Tls(Box<crate::tls::BlockingTls>),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.set_read_timeout(t),
            Stream::Tls(s) => s.socket().set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Plain(s) => s.shutdown(Shutdown::Write),
            Stream::Tls(s) => s.socket().shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf),
            Stream::Tls(t) => t.write_all(buf),
            Stream::Unix(s) => s.write_all(buf),
        }
    }
}

/// The byte stream to the broker: `--unix PATH`, or TCP (with TLS when asked) to `-h`/`-p`.
fn open_stream(cfg: &Config) -> Result<Stream, ClientError> {
    let host = cfg.host.as_deref().unwrap_or("localhost");
    let tls = cfg.tls.requested() || cfg.tls.insecure;
    if let Some(path) = &cfg.unix {
        let s = UnixStream::connect(path)?;
        if !tls {
            return Ok(Stream::Unix(s));
        }
        // TLS over the Unix socket, the certificate checked against `-h` (default
        // localhost), as the Mosquitto clients do.
        return tls_over(cfg, crate::tls::ClientSocket::Unix(s), host);
    }
    let port = cfg.port.unwrap_or(if tls { 8883 } else { 1883 });
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|_| ClientError::Lookup)?
        .collect();
    if addrs.is_empty() {
        return Err(ClientError::Lookup);
    }
    let mut last_err = io::Error::other("no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect(a) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let stream = stream.ok_or(ClientError::Io(last_err))?;
    if cfg.nodelay {
        stream.set_nodelay(true)?;
    }
    if !tls {
        return Ok(Stream::Plain(stream));
    }
    tls_over(cfg, crate::tls::ClientSocket::Tcp(stream), host)
}

/// The TLS handshake the options ask for, over `sock`.
fn tls_over(
    cfg: &Config,
    sock: crate::tls::ClientSocket,
    host: &str,
) -> Result<Stream, ClientError> {
    fn path(p: &Option<String>) -> Option<&std::path::Path> {
        p.as_deref().map(std::path::Path::new)
    }
    let tls = crate::tls::ClientTls::new(
        path(&cfg.tls.cafile),
        path(&cfg.tls.capath),
        path(&cfg.tls.certfile),
        path(&cfg.tls.keyfile),
        cfg.tls.insecure,
        cfg.tls.tls_version.as_deref(),
    )
    .map_err(ClientError::Tls)?;
    Ok(Stream::Tls(Box::new(
        tls.connect_blocking(sock, host).map_err(ClientError::Tls)?,
    )))
}

pub struct Session {
    stream: Stream,
    pub version: Version,
    inbuf: Vec<u8>,
    out: BytesMut,
    debug: bool,
    /// The id shown in debug lines: `(null)` until the broker assigns one to an empty id.
    pub id: String,
    keepalive: Option<Duration>,
    last_out: Instant,
    last_in: Instant,
    ping_outstanding: bool,
    last_mid: u16,
    /// The client id CONNECT carried, reused when reconnecting.
    connect_id: String,
}

fn random_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // Good enough for a client id: seeded from the clock, the pid and a stack address.
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    let local = 0u8;
    x ^= &local as *const u8 as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(CHARS[(x % CHARS.len() as u64) as usize])
        })
        .collect()
}

/// The client id CONNECT carries, as mosquitto_pub/sub choose it: `-i`, or `-I` plus the pid,
/// or (MQTT 3.1, which does not allow empty ids) `mosq-` and 18 random characters, or empty.
pub fn client_id(cfg: &Config) -> String {
    if let Some(id) = &cfg.id {
        return id.clone();
    }
    if let Some(prefix) = &cfg.id_prefix {
        return format!("{prefix}{}", std::process::id());
    }
    if cfg.version == Version::V31 {
        return format!("mosq-{}", random_alnum(18));
    }
    String::new()
}

impl Session {
    /// Opens the TCP connection, sends CONNECT and waits for CONNACK. Success means the broker
    /// accepted the connection.
    pub fn connect(cfg: &Config) -> Result<(Session, ConnAck), ClientError> {
        Session::connect_as(cfg, client_id(cfg))
    }

    /// A new connection for the same client, after this one was lost: same client id (a random
    /// MQTT 3.1 id too) and packet ids going on from where this one stopped, as libmosquitto's
    /// reconnect does.
    pub fn reconnect(&self, cfg: &Config) -> Result<(Session, ConnAck), ClientError> {
        let (mut s, ack) = Session::connect_as(cfg, self.connect_id.clone())?;
        s.last_mid = self.last_mid;
        Ok((s, ack))
    }

    fn connect_as(cfg: &Config, id: String) -> Result<(Session, ConnAck), ClientError> {
        let stream = open_stream(cfg)?;
        let mut s = Session {
            stream,
            version: cfg.version,
            inbuf: Vec::with_capacity(4096),
            out: BytesMut::with_capacity(4096),
            debug: cfg.debug,
            id: if id.is_empty() {
                "(null)".to_owned()
            } else {
                id.clone()
            },
            keepalive: (cfg.keepalive > 0).then(|| Duration::from_secs(u64::from(cfg.keepalive))),
            last_out: Instant::now(),
            last_in: Instant::now(),
            ping_outstanding: false,
            last_mid: 0,
            connect_id: id.clone(),
        };
        let will = cfg.will_topic.as_ref().map(|t| Will {
            topic: t.as_str().into(),
            payload: Bytes::from(cfg.will_payload.clone().unwrap_or_default()),
            qos: QoS::from_u8(cfg.will_qos).unwrap_or_default(),
            retain: cfg.will_retain,
            properties: cfg.props.will.clone(),
        });
        let mut props = cfg.props.connect.clone();
        if cfg.version == Version::V5 && cfg.msg_count > 0 && cfg.msg_count < 20 {
            // As mosquitto_sub does, so that no more than -C messages are in flight to us.
            props.receive_maximum = Some(cfg.msg_count as u16);
        }
        let connect = Connect {
            version: cfg.version,
            bridge: false,
            clean_start: cfg.clean_session,
            keep_alive: cfg.keepalive,
            client_id: id,
            will,
            username: cfg.username.clone(),
            password: cfg.password.clone().map(|p| Bytes::from(p.into_bytes())),
            properties: props,
        };
        s.send(&Packet::Connect(Box::new(connect)))?;
        loop {
            match s.recv(None)? {
                Some(Packet::ConnAck(ack)) => {
                    if ack.code != 0 {
                        return Err(ClientError::Refused(ack.code));
                    }
                    return Ok((s, ack));
                }
                Some(_) => {
                    return Err(ClientError::Protocol("expected CONNACK".into()));
                }
                None => {}
            }
        }
    }

    /// The next packet id, as libmosquitto counts: every PUBLISH (QoS 0 too), SUBSCRIBE and
    /// UNSUBSCRIBE takes one.
    pub fn next_mid(&mut self) -> u16 {
        self.last_mid = self.last_mid.wrapping_add(1);
        if self.last_mid == 0 {
            self.last_mid = 1;
        }
        self.last_mid
    }

    fn debug_line(&self, what: std::fmt::Arguments<'_>) {
        if self.debug {
            let mut o = io::stdout().lock();
            let _ = writeln!(o, "Client {} {}", self.id, what);
            let _ = o.flush();
        }
    }

    fn log_sent(&self, p: &Packet, mid: u16) {
        if !self.debug {
            return;
        }
        match p {
            Packet::Connect(_) => self.debug_line(format_args!("sending CONNECT")),
            Packet::Publish(p) => self.debug_line(format_args!(
                "sending PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
                u8::from(p.dup),
                p.qos.as_u8(),
                u8::from(p.retain),
                mid,
                p.topic,
                p.payload.len()
            )),
            Packet::PubAck(a) => {
                self.debug_line(format_args!("sending PUBACK (m{}, rc{})", a.pid, a.reason))
            }
            Packet::PubRec(a) => {
                self.debug_line(format_args!("sending PUBREC (m{}, rc{})", a.pid, a.reason))
            }
            Packet::PubRel(a) => self.debug_line(format_args!("sending PUBREL (m{})", a.pid)),
            Packet::PubComp(a) => self.debug_line(format_args!("sending PUBCOMP (m{})", a.pid)),
            Packet::Subscribe(s) => {
                for (f, o) in &s.filters {
                    self.debug_line(format_args!(
                        "sending SUBSCRIBE (Mid: {}, Topic: {}, QoS: {}, Options: 0x{:02x})",
                        s.pid,
                        f,
                        o.qos.as_u8(),
                        o.to_byte() & 0xfc
                    ));
                }
            }
            Packet::Unsubscribe(u) => {
                for f in &u.filters {
                    self.debug_line(format_args!(
                        "sending UNSUBSCRIBE (Mid: {}, Topic: {})",
                        u.pid, f
                    ));
                }
            }
            other => self.debug_line(format_args!("sending {}", other.name())),
        }
    }

    fn log_received(&self, p: &Packet) {
        if !self.debug {
            return;
        }
        match p {
            Packet::ConnAck(a) => self.debug_line(format_args!("received CONNACK ({})", a.code)),
            Packet::Publish(p) => self.debug_line(format_args!(
                "received PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
                u8::from(p.dup),
                p.qos.as_u8(),
                u8::from(p.retain),
                p.pid,
                p.topic,
                p.payload.len()
            )),
            Packet::PubAck(a) => self.debug_line(format_args!(
                "received PUBACK (Mid: {}, RC:{})",
                a.pid, a.reason
            )),
            Packet::PubRec(a) => self.debug_line(format_args!("received PUBREC (Mid: {})", a.pid)),
            Packet::PubRel(a) => self.debug_line(format_args!("received PUBREL (Mid: {})", a.pid)),
            Packet::PubComp(a) => self.debug_line(format_args!(
                "received PUBCOMP (Mid: {}, RC:{})",
                a.pid, a.reason
            )),
            Packet::Disconnect(d) => {
                self.debug_line(format_args!("received DISCONNECT ({})", d.reason))
            }
            other => self.debug_line(format_args!("received {}", other.name())),
        }
    }

    /// Sends one packet; `Publish` packets show their mid from `pid` (use
    /// [`Session::send_publish`] for QoS 0, whose mid is not on the wire).
    pub fn send(&mut self, p: &Packet) -> Result<(), ClientError> {
        let mid = match p {
            Packet::Publish(p) => p.pid,
            _ => 0,
        };
        self.send_with_mid(p, mid)
    }

    pub fn send_publish(&mut self, p: Publish, mid: u16) -> Result<(), ClientError> {
        self.send_with_mid(&Packet::Publish(p), mid)
    }

    fn send_with_mid(&mut self, p: &Packet, mid: u16) -> Result<(), ClientError> {
        self.out.clear();
        p.encode(self.version, &mut self.out);
        self.log_sent(p, mid);
        self.stream.write_all(&self.out)?;
        self.last_out = Instant::now();
        Ok(())
    }

    pub fn disconnect(&mut self, props: &protocol::Properties) -> Result<(), ClientError> {
        self.disconnect_with(0, props)
    }

    /// DISCONNECT with a reason code (MQTT 5; 3.x DISCONNECT has none).
    pub fn disconnect_with(
        &mut self,
        reason: u8,
        props: &protocol::Properties,
    ) -> Result<(), ClientError> {
        let d = Disconnect {
            reason,
            properties: props.clone(),
        };
        self.send(&Packet::Disconnect(d))?;
        self.stream.shutdown_write();
        Ok(())
    }

    /// Waits for the next packet, sending PINGREQs as the keepalive requires and swallowing
    /// PINGRESPs. `Ok(None)`: `deadline` passed first.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<Packet>, ClientError> {
        loop {
            if super::signals::stop_requested() {
                return Err(ClientError::Stopped);
            }
            match protocol::decode(&self.inbuf, self.version, MAX_PACKET) {
                Ok(Some((packet, used))) => {
                    self.inbuf.drain(..used);
                    self.last_in = Instant::now();
                    if let Packet::ConnAck(a) = &packet {
                        if let Some(id) = &a.properties.assigned_client_identifier {
                            self.id = id.clone();
                        }
                    }
                    self.log_received(&packet);
                    if matches!(packet, Packet::PingResp) {
                        self.ping_outstanding = false;
                        continue;
                    }
                    return Ok(Some(packet));
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            let now = Instant::now();
            if let Some(ka) = self.keepalive {
                let due = self.last_out.min(self.last_in) + ka;
                if now >= due {
                    if self.ping_outstanding {
                        return Err(ClientError::KeepaliveTimeout);
                    }
                    self.send(&Packet::PingReq)?;
                    self.ping_outstanding = true;
                    // The PINGRESP must come within another keepalive interval.
                    self.last_in = Instant::now();
                    continue;
                }
            }
            let mut wake = self
                .keepalive
                .map(|ka| self.last_out.min(self.last_in) + ka);
            if let Some(d) = deadline {
                if now >= d {
                    return Ok(None);
                }
                wake = Some(wake.map_or(d, |w| w.min(d)));
            }
            let timeout = wake.map(|w| {
                w.saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            });
            self.stream.set_read_timeout(timeout)?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.inbuf.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// Answers an incoming PUBLISH as QoS requires: PUBACK for 1, PUBREC for 2.
    pub fn ack_incoming(&mut self, p: &Publish) -> Result<(), ClientError> {
        match p.qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => self.send(&Packet::PubAck(Ack::new(p.pid))),
            QoS::ExactlyOnce => self.send(&Packet::PubRec(Ack::new(p.pid))),
        }
    }
}

/// Prints what went wrong while connecting, in mosquitto's words, unless `quiet`. `pub_style`:
/// mosquitto_pub follows a refused CONNACK with a second line from its main loop.
pub fn report_connect_error(
    e: &ClientError,
    version: Version,
    quiet: bool,
    pub_style: bool,
) -> i32 {
    let (lines, code): (Vec<String>, i32) = match e {
        ClientError::Lookup => (vec!["Unable to connect (Lookup error.).".into()], 1),
        ClientError::Io(e) => (vec![format!("Error: {}", strerror(e))], 1),
        ClientError::Refused(code) => {
            let first = if version == Version::V5 {
                if *code == protocol::reason::UNSUPPORTED_PROTOCOL_VERSION {
                    format!(
                        "Connection error: {}. Try connecting to an MQTT v5 broker, or use MQTT v3.x mode.",
                        protocol::reason::reason_string(*code)
                    )
                } else {
                    format!(
                        "Connection error: {}",
                        protocol::reason::reason_string(*code)
                    )
                }
            } else {
                format!(
                    "Connection error: {}",
                    protocol::reason::connack_v3_string(*code)
                )
            };
            let mut v = vec![first];
            if pub_style {
                v.push(if version == Version::V5 {
                    "Error: A network protocol error occurred when communicating with the broker."
                        .into()
                } else {
                    "Error: The connection was refused.".into()
                });
            }
            (v, i32::from(*code))
        }
        ClientError::Closed => (vec!["Error: The connection was lost.".into()], 1),
        ClientError::Protocol(m) => (
            vec![format!(
                "Error: A network protocol error occurred when communicating with the broker. ({m})"
            )],
            1,
        ),
        ClientError::KeepaliveTimeout | ClientError::BrokerDisconnect => {
            (vec!["Error: The connection was lost.".into()], 1)
        }
        // Interrupted while connecting: nothing to say, as mosquitto says nothing.
        ClientError::Stopped => (Vec::new(), 0),
        // mosquitto's MOSQ_ERR_TLS (8); the detail follows on its own line.
        ClientError::Tls(why) => (
            vec!["Error: A TLS error occurred.".into(), format!("TLS: {why}")],
            8,
        ),
    };
    if !quiet {
        for l in lines {
            eprintln!("{l}");
        }
    }
    code
}
