//! rustls (ring provider) driven from the single-threaded event loop: non-blocking
//! `read_tls` / `process_new_packets` / `write_tls`, certificates and keys from PEM files.
//!
//! A handshake or record error closes only that connection, after one attempt to send the
//! alert. Nothing here panics on what a peer sends.

use crate::config::Listener;
use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::{ring, CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SigningKey;
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, SupportedProtocolVersion,
};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use webpki::ring as alg;

/// The ring provider cut to what a broker and its bridges need: TLS 1.3 and 1.2 with AES-GCM and
/// ChaCha20-Poly1305 (ring's default suites, all nine), X25519 and P-256 key exchange, ECDSA
/// (P-256, P-384) and RSA signatures. Left out, so that the linker drops their code: P-384 key
/// exchange (every TLS stack that offers it offers X25519 or P-256 too) and Ed25519
/// certificates and keys (the CA/Browser Forum does not allow them; Mosquitto setups use RSA or
/// ECDSA). Built by hand rather than from `default_provider()`, whose tables would keep the
/// rest alive.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(provider_value())
}

fn provider_value() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: ring::DEFAULT_CIPHER_SUITES.to_vec(),
        kx_groups: vec![ring::kx_group::X25519, ring::kx_group::SECP256R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Ring,
        key_provider: &Ring,
    }
}

/// ring's verification table without Ed25519.
static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
        alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        ),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[alg::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[alg::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[alg::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

/// Randomness and private keys from ring, the keys RSA or ECDSA only.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ::ring::rand::SecureRandom as _;
        ::ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    fn load_private_key(
        &self,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        if let Ok(rsa) = ring::sign::RsaSigningKey::new(&key) {
            return Ok(Arc::new(rsa));
        }
        ring::sign::any_ecdsa_type(&key)
            .map_err(|_| rustls::Error::General("the private key is neither RSA nor ECDSA".into()))
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read private key from {}: {e}", path.display()))
}

/// Trust anchors from a CA file and/or every `.pem`/`.crt` file in a CA directory.
pub fn load_roots(cafile: Option<&Path>, capath: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let mut files: Vec<PathBuf> = cafile.iter().map(|p| p.to_path_buf()).collect();
    if let Some(dir) = capath {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read capath {}: {e}", dir.display()))?;
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "pem" || x == "crt" || x == "0")
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    for f in files {
        for c in load_certs(&f)? {
            roots
                .add(c)
                .map_err(|e| format!("bad CA certificate in {}: {e}", f.display()))?;
        }
    }
    Ok(roots)
}

/// Protocol versions allowed by a Mosquitto-style `tls_version` (the minimum version).
pub fn versions(v: Option<&str>) -> Result<&'static [&'static SupportedProtocolVersion], String> {
    static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match v {
        None | Some("tlsv1.2") => Ok(BOTH),
        Some("tlsv1.3") => Ok(ONLY13),
        Some(other) => Err(format!(
            "unsupported TLS version {other}; use tlsv1.2 or tlsv1.3"
        )),
    }
}

/// What a listener takes from the client certificate as the username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    Off,
    /// `use_identity_as_username`: the subject's common name.
    CommonName,
    /// `use_subject_as_username`: the whole subject, RFC 2253 as OpenSSL prints it.
    Subject,
}

/// A listener's TLS settings, ready to accept connections.
pub struct ServerTls {
    config: Arc<ServerConfig>,
    identity: Identity,
}

impl ServerTls {
    pub fn new(l: &Listener) -> Result<ServerTls, String> {
        let (Some(certfile), Some(keyfile)) = (&l.certfile, &l.keyfile) else {
            return Err(format!(
                "listener on port {}: TLS needs both certfile and keyfile",
                l.port
            ));
        };
        let certs = load_certs(certfile)?;
        let key = load_key(keyfile)?;
        let mut suites = provider_value();
        // `ciphers` limits the TLS 1.2 suites, `ciphers_tls1.3` the TLS 1.3 ones.
        suites.cipher_suites.retain(|cs| {
            let (list, names) = match cs.tls13() {
                Some(_) => (&l.ciphers_tls13, crate::config::TLS13_CIPHERS),
                None => (&l.ciphers, crate::config::TLS12_CIPHERS),
            };
            let ours = format!("{:?}", cs.suite());
            list.as_deref().is_none_or(|list| {
                crate::config::cipher_names(list)
                    .any(|n| names.iter().any(|(o, r)| *o == n && *r == ours))
            })
        });
        let builder = ServerConfig::builder_with_provider(Arc::new(suites))
            .with_protocol_versions(versions(l.tls_version.as_deref())?)
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let builder = if l.cafile.is_some() || l.capath.is_some() {
            let roots = load_roots(l.cafile.as_deref(), l.capath.as_deref())?;
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if let Some(f) = &l.crlfile {
                let crls = CertificateRevocationListDer::pem_file_iter(f)
                    .map_err(|e| format!("cannot read crlfile {}: {e}", f.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("bad CRL in {}: {e}", f.display()))?;
                if crls.is_empty() {
                    return Err(format!("no CRL found in {}", f.display()));
                }
                v = v.with_crls(crls);
            }
            let v = if l.require_certificate {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(v)
        } else if l.crlfile.is_some() {
            return Err(format!(
                "listener on port {}: crlfile needs cafile or capath",
                l.port
            ));
        } else if l.require_certificate {
            return Err(format!(
                "listener on port {}: require_certificate needs cafile or capath",
                l.port
            ));
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
        Ok(ServerTls {
            config: Arc::new(config),
            // Mosquitto looks at use_identity_as_username first.
            identity: if l.use_identity_as_username {
                Identity::CommonName
            } else if l.use_subject_as_username {
                Identity::Subject
            } else {
                Identity::Off
            },
        })
    }

    pub fn accept(&self, sock: TcpStream) -> Result<ServerStream, String> {
        self.accept_on(Socket::Tcp(sock))
    }

    /// TLS on a Unix socket listener, as Mosquitto 2.0 offers when it has `certfile`.
    pub fn accept_unix(&self, sock: mio::net::UnixStream) -> Result<ServerStream, String> {
        self.accept_on(Socket::Unix(sock))
    }

    fn accept_on(&self, sock: Socket) -> Result<ServerStream, String> {
        let conn = ServerConnection::new(self.config.clone()).map_err(|e| e.to_string())?;
        Ok(ServerStream {
            conn: Connection::Server(conn),
            sock,
            identity: self.identity,
        })
    }
}

/// Where trust anchors come from when none are configured: the system bundle, as OpenWrt's
/// ca-bundle and Debian's ca-certificates install it.
const SYSTEM_CA_PATHS: &[&str] = &["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"];

/// Verifies the chain but not the host name (`bridge_insecure`, `--insecure`).
#[derive(Debug)]
struct NoHostnameCheck(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// TLS for outgoing connections: bridges (and the client applets).
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    pub fn new(
        cafile: Option<&Path>,
        capath: Option<&Path>,
        certfile: Option<&Path>,
        keyfile: Option<&Path>,
        insecure: bool,
        min_version: Option<&str>,
    ) -> Result<ClientTls, String> {
        let roots = if cafile.is_some() || capath.is_some() {
            load_roots(cafile, capath)?
        } else {
            let system = SYSTEM_CA_PATHS
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or("no cafile or capath given and no system CA bundle found")?;
            load_roots(Some(system), None)?
        };
        let roots = Arc::new(roots);
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(min_version)?)
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let builder = if insecure {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("server certificate verifier: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoHostnameCheck(inner)))
        } else {
            builder.with_root_certificates(roots)
        };
        let config = match (certfile, keyfile) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(load_certs(c)?, load_key(k)?)
                .map_err(|e| format!("client certificate and key: {e}"))?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("a client certificate needs both certfile and keyfile".into()),
        };
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// Starts the handshake with `host` over a (possibly still connecting) socket.
    pub fn connect(&self, sock: TcpStream, host: &str) -> Result<ServerStream, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("invalid TLS server name {host}"))?;
        let conn = ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        Ok(ServerStream {
            conn: Connection::Client(conn),
            sock: Socket::Tcp(sock),
            identity: Identity::Off,
        })
    }
}

impl ClientTls {
    /// A blocking TLS connection for the client applets; the handshake completes here, so a
    /// certificate problem is reported before any MQTT is sent.
    pub fn connect_blocking(
        &self,
        mut sock: super::ClientSocket,
        host: &str,
    ) -> Result<BlockingTls, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("invalid TLS server name {host}"))?;
        let mut conn =
            ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        Ok(BlockingTls(rustls::StreamOwned::new(conn, sock)))
    }
}

/// A TLS client connection on a blocking socket (the client applets).
pub struct BlockingTls(rustls::StreamOwned<ClientConnection, super::ClientSocket>);

impl BlockingTls {
    pub fn socket(&self) -> &super::ClientSocket {
        self.0.get_ref()
    }
}

impl Read for BlockingTls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for BlockingTls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The non-blocking socket under a TLS connection.
enum Socket {
    Tcp(TcpStream),
    Unix(mio::net::UnixStream),
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.flush(),
            Socket::Unix(s) => s.flush(),
        }
    }
}

/// One TLS connection (either side) on a non-blocking socket.
pub struct ServerStream {
    conn: Connection,
    sock: Socket,
    identity: Identity,
}

fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

impl ServerStream {
    /// Plaintext bytes, like a socket `read`: `Ok(0)` at end of stream, `WouldBlock` when
    /// nothing more can be had now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        // One attempt to tell the peer why. [rustls tlsserver-mio]
                        let _ = self.conn.write_tls(&mut self.sock);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    // Handshake messages may be waiting to go out.
                    match self.flush_pending() {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes plaintext to send; `WouldBlock` while rustls still holds a full buffer.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.flush_pending() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let n = self.conn.writer().write(buf)?;
        match self.flush_pending() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if n == 0 && !buf.is_empty() {
            return Err(would_block());
        }
        Ok(n)
    }

    /// Writes TLS records rustls has ready; `WouldBlock` if the socket took only part.
    pub fn flush_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn has_pending(&self) -> bool {
        self.conn.wants_write()
    }

    /// The TCP socket underneath; `None` on a Unix socket.
    pub fn socket(&mut self) -> Option<&mut TcpStream> {
        match &mut self.sock {
            Socket::Tcp(s) => Some(s),
            Socket::Unix(_) => None,
        }
    }

    /// What the poll registers.
    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match &mut self.sock {
            Socket::Tcp(s) => s,
            Socket::Unix(s) => s,
        }
    }

    /// Shuts the socket down both ways.
    pub fn shutdown(&mut self) {
        let _ = match &mut self.sock {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    /// The username the client certificate gives, on a listener that takes it from there:
    /// its common name, or its whole subject.
    pub fn peer_identity(&self) -> Option<String> {
        let cert = self.conn.peer_certificates()?.first()?;
        match self.identity {
            Identity::Off => None,
            Identity::CommonName => super::der::subject_common_name(cert.as_ref()),
            Identity::Subject => super::der::subject_rfc2253(cert.as_ref()),
        }
    }
}
