//! The `nossl` build: TLS types that cannot be constructed.

use crate::config::Listener;
use mio::net::TcpStream;
use std::io;

pub struct ServerTls;

impl ServerTls {
    pub fn new(_l: &Listener) -> Result<ServerTls, String> {
        Err("TLS listener options are set, but this build of rmqtt has no TLS support".into())
    }

    pub fn accept(&self, _sock: TcpStream) -> Result<ServerStream, String> {
        Err("no TLS support".into())
    }

    pub fn accept_unix(&self, _sock: mio::net::UnixStream) -> Result<ServerStream, String> {
        Err("no TLS support".into())
    }
}

pub struct ClientTls;

impl ClientTls {
    pub fn new(
        _cafile: Option<&std::path::Path>,
        _capath: Option<&std::path::Path>,
        _certfile: Option<&std::path::Path>,
        _keyfile: Option<&std::path::Path>,
        _insecure: bool,
        _min_version: Option<&str>,
    ) -> Result<ClientTls, String> {
        Err("TLS options are set, but this build of rmqtt has no TLS support".into())
    }

    pub fn connect(&self, _sock: TcpStream, _host: &str) -> Result<ServerStream, String> {
        Err("no TLS support".into())
    }

    pub fn connect_blocking(
        &self,
        _sock: super::ClientSocket,
        _host: &str,
    ) -> Result<BlockingTls, String> {
        Err("no TLS support".into())
    }
}

/// Uninhabited in a build without TLS.
pub enum BlockingTls {}

impl BlockingTls {
    pub fn socket(&self) -> &super::ClientSocket {
        match *self {}
    }
}

impl std::io::Read for BlockingTls {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
}

impl std::io::Write for BlockingTls {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    fn flush(&mut self) -> io::Result<()> {
        match *self {}
    }
}

/// Uninhabited: no value of it can exist in a build without TLS.
pub enum ServerStream {}

impl ServerStream {
    pub fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    pub fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    pub fn flush_pending(&mut self) -> io::Result<()> {
        match *self {}
    }

    pub fn has_pending(&self) -> bool {
        match *self {}
    }

    pub fn socket(&mut self) -> Option<&mut TcpStream> {
        match *self {}
    }

    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match *self {}
    }

    pub fn shutdown(&mut self) {
        match *self {}
    }

    pub fn peer_identity(&self) -> Option<String> {
        match *self {}
    }
}
