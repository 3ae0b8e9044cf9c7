//! Admission: what a connection may cost before it has logged in.
//!
//! The event loop asks here at accept time (pre-login sockets capped overall and per source
//! address: at the cap the oldest pre-login socket in that scope is closed to make room, so
//! silent sockets cannot lock newcomers out; addresses with a run of failed logins are backed
//! off) and on every read before
//! login (the first byte must be CONNECT, and its fixed header may announce at most
//! `max_connect_size` bytes). Both checks run before any packet body is buffered, so an
//! unauthenticated peer costs at most `max_connect_size` bytes of buffer plus a socket.
//! The tables are bounded: one counter per address with pre-login sockets, and at most
//! [`MAX_TRACKED`] addresses with failed logins. Pure: time is passed in; never panics.

use crate::config::Config;
use crate::protocol::{frame_len, DecodeError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses whose failed logins are remembered; the stalest is forgotten beyond this.
pub const MAX_TRACKED: usize = 1024;
/// Failed logins an address may have before it is backed off.
pub const FREE_FAILURES: u32 = 5;
/// The first back-off; each further failure doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Failures are forgotten this long after the last one.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);

/// MQTT CONNECT's packet type, the high nibble of the first byte. [MQTT-3.1.0-1]
const CONNECT: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_connect_size: usize,
    /// 0: no limit.
    pub max_pending: usize,
    /// 0: no limit.
    pub max_pending_per_address: usize,
}

impl AdmissionLimits {
    pub fn from_config(c: &Config) -> AdmissionLimits {
        AdmissionLimits {
            max_connect_size: c.max_connect_size as usize,
            max_pending: c.max_pending_connections as usize,
            max_pending_per_address: c.max_pending_per_address as usize,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// New connections from the address are refused until then.
    until: Option<Instant>,
}

/// What "one source address" means for the caps and the back-off: an IPv4 address (also
/// when IPv4-mapped), or an IPv6 /64, which one host usually holds whole.
pub fn scope(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

/// Which pre-login socket must go to make room for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evict {
    /// The oldest of all (`max_pending_connections` reached).
    Oldest,
    /// The oldest from this address, as [`scope`] gives it (`max_pending_per_address`
    /// reached).
    OldestOf(IpAddr),
}

/// Pre-login sockets and failed logins, per source address.
#[derive(Debug)]
pub struct Admission {
    pub limits: AdmissionLimits,
    pending: usize,
    per_address: HashMap<IpAddr, u32>,
    failures: HashMap<IpAddr, Failures>,
}

/// The front of a pre-login byte stream is acceptable so far, or why not.
pub fn check_front(buf: &[u8], max_connect_size: usize) -> Result<(), String> {
    let Some(&first) = buf.first() else {
        return Ok(());
    };
    if first >> 4 != CONNECT {
        // [MQTT-3.1.0-1] the first packet must be CONNECT: known from its first byte.
        return Err(format!(
            "first packet is not CONNECT (first byte 0x{first:02x})"
        ));
    }
    // A remaining length still arriving already says at least this much.
    let mut at_least: usize = 0;
    for (i, &d) in buf.iter().skip(1).take(4).enumerate() {
        at_least = at_least.saturating_add(usize::from(d & 0x7f) << (7 * i));
        if d & 0x80 == 0 {
            break;
        }
    }
    if at_least.saturating_add(2) > max_connect_size {
        return Err(format!(
            "CONNECT of at least {} bytes is larger than max_connect_size ({max_connect_size})",
            at_least.saturating_add(2)
        ));
    }
    match frame_len(buf, max_connect_size) {
        Ok(_) => Ok(()),
        Err(DecodeError::TooLarge { size, max }) => Err(format!(
            "CONNECT of {size} bytes is larger than max_connect_size ({max})"
        )),
        Err(e) => Err(format!("malformed CONNECT: {e}")),
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        Admission {
            limits,
            pending: 0,
            per_address: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    /// Pre-login sockets now open.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// A new connection from `ip`: `Ok(None)` counts it as pre-login (call
    /// [`Admission::left`] once it logs in or closes); `Ok(Some(e))`: a cap is reached, close
    /// the socket `e` names (calling `left` for it) and ask again; `Err` says why it is
    /// refused.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<Option<Evict>, String> {
        let ip = scope(ip);
        if let Some(f) = self.failures.get(&ip) {
            if let Some(until) = f.until.filter(|&u| u > now) {
                return Err(format!(
                    "{} failed logins, backed off for {} s more",
                    f.count,
                    until.saturating_duration_since(now).as_secs().max(1)
                ));
            }
        }
        let l = self.limits;
        let n = self.per_address.get(&ip).copied().unwrap_or(0);
        if l.max_pending_per_address > 0 && n as usize >= l.max_pending_per_address {
            return Ok(Some(Evict::OldestOf(ip)));
        }
        if l.max_pending > 0 && self.pending >= l.max_pending {
            return Ok(Some(Evict::Oldest));
        }
        self.pending += 1;
        self.per_address.insert(ip, n.saturating_add(1));
        Ok(None)
    }

    /// A pre-login socket from `ip` logged in or closed.
    pub fn left(&mut self, ip: IpAddr) {
        let ip = scope(ip);
        self.pending = self.pending.saturating_sub(1);
        if let Some(n) = self.per_address.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_address.remove(&ip);
            }
        }
    }

    /// A login from `ip` succeeded: its failures are forgotten.
    pub fn login_ok(&mut self, ip: IpAddr) {
        let ip = scope(ip);
        self.failures.remove(&ip);
    }

    /// A login from `ip` was refused. Returns the back-off it starts, if any.
    pub fn login_failed(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let ip = scope(ip);
        if !self.failures.contains_key(&ip) && self.failures.len() >= MAX_TRACKED {
            self.failures
                .retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if self.failures.len() >= MAX_TRACKED {
                let stalest = self
                    .failures
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(ip, _)| *ip);
                if let Some(s) = stalest {
                    self.failures.remove(&s);
                }
            }
        }
        let f = self.failures.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            until: None,
        });
        if now.saturating_duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        let over = f.count.checked_sub(FREE_FAILURES).filter(|&n| n > 0)?;
        let backoff = FIRST_BACKOFF
            .checked_mul(1u32 << (over - 1).min(16))
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        f.until = Some(now + backoff);
        Some(backoff)
    }

    /// Addresses with remembered failures.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn adm(total: usize, per: usize) -> Admission {
        Admission::new(AdmissionLimits {
            max_connect_size: 100,
            max_pending: total,
            max_pending_per_address: per,
        })
    }

    #[test]
    fn first_byte_must_be_connect() {
        assert!(check_front(&[], 100).is_ok());
        assert!(check_front(&[0x10], 100).is_ok());
        for first in [0x00, 0x30, 0x82, 0xc0, 0xe0, 0x47, b'G'] {
            assert!(check_front(&[first], 100).is_err(), "{first:#x}");
        }
    }

    #[test]
    fn connect_size_is_refused_from_the_fixed_header() {
        assert!(check_front(&[0x10, 98], 100).is_ok());
        assert!(check_front(&[0x10, 99], 100).is_err());
        // 200,000,000 announced, no body sent.
        let e = check_front(&[0x10, 0x80, 0x84, 0xaf, 0x5f], 8192).unwrap_err();
        assert!(
            e.contains("200000002 bytes") || e.contains("at least"),
            "{e}"
        );
        assert!(e.contains("max_connect_size"), "{e}");
        // Too large is known from the first varint byte with the continuation bit.
        assert!(check_front(&[0x10, 0xff, 0xff], 8192).is_err());
        // Incomplete header under the limit: wait for more.
        assert!(check_front(&[0x10, 0x80], 8192).is_ok());
        // Five-byte remaining length.
        assert!(check_front(&[0x10, 0x80, 0x80, 0x80, 0x80, 0x01], usize::MAX).is_err());
    }

    #[test]
    fn pending_caps_overall_and_per_address() {
        let now = Instant::now();
        let mut a = adm(3, 2);
        assert_eq!(a.admit(ip(1), now), Ok(None));
        assert_eq!(a.admit(ip(1), now), Ok(None));
        assert_eq!(a.admit(ip(1), now), Ok(Some(Evict::OldestOf(ip(1)))));
        assert_eq!(a.admit(ip(2), now), Ok(None));
        assert_eq!(a.admit(ip(3), now), Ok(Some(Evict::Oldest)));
        a.left(ip(1));
        assert_eq!(a.pending(), 2);
        assert_eq!(a.admit(ip(3), now), Ok(None));
        for i in 1..=3 {
            a.left(ip(i));
        }
        a.left(ip(1));
        assert_eq!(a.pending(), 0);
        assert!(a.per_address.is_empty());
        let mut unlimited = adm(0, 0);
        for _ in 0..1000 {
            assert_eq!(unlimited.admit(ip(1), now), Ok(None));
        }
    }

    #[test]
    fn failed_logins_back_off_and_grow() {
        let t0 = Instant::now();
        let mut a = adm(0, 0);
        for _ in 0..FREE_FAILURES {
            assert_eq!(a.login_failed(ip(1), t0), None);
            assert_eq!(a.admit(ip(1), t0), Ok(None));
        }
        assert_eq!(a.login_failed(ip(1), t0), Some(FIRST_BACKOFF));
        assert!(a.admit(ip(1), t0).unwrap_err().contains("backed off"));
        assert_eq!(a.admit(ip(2), t0), Ok(None), "other addresses unaffected");
        let t1 = t0 + FIRST_BACKOFF;
        assert_eq!(a.admit(ip(1), t1), Ok(None));
        assert_eq!(a.login_failed(ip(1), t1), Some(FIRST_BACKOFF * 2));
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = a.login_failed(ip(1), t1).unwrap_or_default();
        }
        assert_eq!(last, MAX_BACKOFF);
        a.login_ok(ip(1));
        assert_eq!(a.admit(ip(1), t1), Ok(None));
        // Failures long ago are forgotten.
        for _ in 0..FREE_FAILURES {
            a.login_failed(ip(3), t0);
        }
        assert_eq!(a.login_failed(ip(3), t0 + FORGET_AFTER), None);
    }

    #[test]
    fn an_ipv6_64_counts_as_one_address() {
        let now = Instant::now();
        let mut a = adm(0, 2);
        let v6 =
            |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        assert_eq!(a.admit(v6(1), now), Ok(None));
        assert_eq!(a.admit(v6(2), now), Ok(None));
        assert_eq!(a.admit(v6(3), now), Ok(Some(Evict::OldestOf(scope(v6(9))))));
        let other = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_eq!(a.admit(other, now), Ok(None));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(scope(mapped), ip(1));
    }

    #[test]
    fn failure_table_is_bounded() {
        let t0 = Instant::now();
        let mut a = adm(0, 0);
        for i in 0..(MAX_TRACKED as u32 * 3) {
            a.login_failed(ip(i), t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(a.tracked(), MAX_TRACKED);
    }
}
