//! TLS for listeners (and, later, for clients and bridges), behind the `tls` cargo feature.
//!
//! With the feature, [`ServerTls`] and [`ServerStream`] wrap rustls (ring provider) for the
//! non-blocking event loop. Without it, the same names exist but cannot be constructed:
//! `ServerTls::new` reports that TLS is not compiled in, and `ServerStream` is uninhabited,
//! so the event loop needs no `#[cfg]` of its own.

#[cfg(feature = "tls")]
mod der;
#[cfg(feature = "tls")]
mod real;
#[cfg(feature = "tls")]
pub use real::*;

#[cfg(not(feature = "tls"))]
mod stub;
#[cfg(not(feature = "tls"))]
pub use stub::*;
