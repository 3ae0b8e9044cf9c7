//! A client session: subscriptions, the outbound in-flight window, the queue behind it and the
//! inbound QoS 2 packet ids. Outlives its connection when the session is persistent.
//!
//! Pure state with no I/O; the router in `core` decides what to send.

use super::message::Message;
use crate::protocol::{QoS, SubOptions};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;

/// Where an outbound QoS 1/2 message stands. [MQTT-4.3.2] [MQTT-4.3.3]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 PUBLISH sent, PUBACK awaited.
    AwaitAck,
    /// QoS 2 PUBLISH sent, PUBREC awaited.
    AwaitRec,
    /// PUBREL sent, PUBCOMP awaited.
    AwaitComp,
}

/// One message on its way to one session: what to send and how.
#[derive(Debug, Clone)]
pub struct Pending {
    pub msg: Rc<Message>,
    /// QoS of this delivery: the lower of the message's and the subscription's.
    pub qos: QoS,
    pub retain: bool,
    /// Entry id in the journal: unique for the life of the state, 0 when not journaled.
    pub jid: u64,
    /// What few deliveries carry, boxed so that the common one stays 32 bytes: it is moved
    /// through the queue and the window, and every queued message holds one.
    extra: Option<Box<Routing>>,
}

/// The rare parts of a [`Pending`].
#[derive(Debug, Clone)]
struct Routing {
    /// MQTT 5 subscription identifiers of the matching subscriptions.
    sub_ids: Vec<u32>,
    /// The shared subscription (`group/filter`) it came through, so it can go to another
    /// member if this one leaves without acknowledging it.
    share: Option<Rc<str>>,
}

impl Pending {
    pub fn new(
        msg: Rc<Message>,
        qos: QoS,
        retain: bool,
        sub_ids: Vec<u32>,
        share: Option<Rc<str>>,
    ) -> Pending {
        let extra =
            (!sub_ids.is_empty() || share.is_some()).then(|| Box::new(Routing { sub_ids, share }));
        Pending {
            msg,
            qos,
            retain,
            jid: 0,
            extra,
        }
    }

    /// MQTT 5 subscription identifiers of the matching subscriptions.
    pub fn sub_ids(&self) -> &[u32] {
        self.extra.as_deref().map_or(&[], |e| &e.sub_ids)
    }

    /// The shared subscription (`group/filter`) it came through, if any.
    pub fn share(&self) -> Option<&Rc<str>> {
        self.extra.as_deref().and_then(|e| e.share.as_ref())
    }
}

/// A QoS 1/2 message sent (or to be re-sent on reconnect) and not yet acknowledged.
#[derive(Debug)]
pub struct Inflight {
    pub pid: u16,
    pub d: Pending,
    pub state: OutState,
}

/// Session expiry: how long a session outlives its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Removed when the connection closes (3.1.1 clean session, 5.0 expiry 0).
    OnDisconnect,
    /// Seconds after the connection closes.
    After(u32),
    Never,
}

/// A set of packet ids: a sorted vector, half the size of a hash set when empty (the usual
/// case) and never more than 65,535 entries.
#[derive(Debug, Default)]
pub struct PidSet(Vec<u16>);

impl PidSet {
    /// Adds `pid`; false if it was already there.
    pub fn insert(&mut self, pid: u16) -> bool {
        match self.0.binary_search(&pid) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, pid);
                true
            }
        }
    }

    /// Removes `pid`; false if it was not there.
    pub fn remove(&mut self, pid: u16) -> bool {
        match self.0.binary_search(&pid) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, pid: u16) -> bool {
        self.0.binary_search(&pid).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }
}

/// A session's message flow: the outbound in-flight window, the queue behind it and the
/// inbound QoS 2 state. Boxed in the session and made on first use, since most sessions (a
/// router's sensors and switches) never hold a QoS 1/2 message: they pay one pointer.
#[derive(Debug, Default)]
pub struct Flow {
    /// The in-flight window, oldest first. Entries go in through [`Flow::push_sent`] (a
    /// packet id from [`Flow::alloc_pid`], in order) or [`Flow::restore_inflight`] (ids from
    /// elsewhere); removing any entry keeps the order.
    pub inflight: VecDeque<Inflight>,
    pub queue: VecDeque<Pending>,
    pub queued_bytes: usize,
    /// Packet ids of QoS 2 messages received and answered with PUBREC, awaiting PUBREL.
    pub inbound_qos2: PidSet,
    /// The packet id handed out last (0: none yet).
    last_pid: u16,
    /// The window holds ids that [`Flow::alloc_pid`] did not hand out in order (restored
    /// ones): the next id is then checked against every entry. Cleared when it empties.
    foreign: bool,
    /// Messages are being dropped (queue full) and that was logged; cleared when one is queued.
    pub dropping: bool,
    /// Journaled entries that entered (`Some`) or left (`None`) the queue since the journal
    /// last looked; emptied on every journal pass.
    pub jlog: Vec<(u64, Option<Pending>)>,
}

/// The bit of [`Session`]'s link that says it is connected (the rest is the connection's
/// index); without it the rest is the time it went offline.
const LINKED: u64 = 1 << 63;

/// A bridge that announced itself (try_private): what it publishes is not sent back to it.
const NO_ECHO: u8 = 1;
/// Held its publishers back for the whole stall timeout: no longer allowed to, until its
/// output drains. Its QoS 0 messages are dropped past the output limit meanwhile.
const STALLED: u8 = 2;

/// What [`Session::flow`] shows for a session that never had one.
const NO_FLOW: &Flow = &Flow {
    inflight: VecDeque::new(),
    queue: VecDeque::new(),
    queued_bytes: 0,
    inbound_qos2: PidSet(Vec::new()),
    last_pid: 0,
    foreign: false,
    dropping: false,
    jlog: Vec::new(),
};

impl Flow {
    /// Next free packet id: never 0, never one still in flight. [MQTT-2.2.1-3]
    /// `None` only when all 65,535 are in flight.
    pub fn alloc_pid(&mut self) -> Option<u16> {
        if self.inflight.is_empty() {
            self.foreign = false;
        }
        if !self.foreign {
            // Every id in the window was handed out here, in order: they lie on the ring of
            // ids 1..=65535 between the oldest entry's and the last one handed out, so the
            // next id is free unless that stretch is the whole ring. No scan per delivery.
            let next = self.last_pid.wrapping_add(1).max(1);
            let stretch = self.inflight.front().map_or(0, |f| {
                (u32::from(self.last_pid) + 65_535 - u32::from(f.pid)) % 65_535 + 1
            });
            if stretch < 65_535 {
                self.last_pid = next;
                return Some(next);
            }
            // An id kept a whole lap: what comes next may go round again, so the window
            // is no longer one ordered lap.
            self.foreign = true;
        }
        for _ in 0..u16::MAX {
            self.last_pid = self.last_pid.wrapping_add(1).max(1);
            let pid = self.last_pid;
            if !self.inflight.iter().any(|f| f.pid == pid) {
                return Some(pid);
            }
        }
        None
    }

    /// A message just sent with an id from [`Flow::alloc_pid`] enters the window.
    pub fn push_sent(&mut self, f: Inflight) {
        self.inflight.push_back(f);
    }

    /// An in-flight entry from persistence or a migration, with an id of its own.
    pub fn restore_inflight(&mut self, f: Inflight) {
        self.foreign = true;
        self.inflight.push_back(f);
    }

    pub fn push_pending(&mut self, p: Pending) {
        self.queued_bytes += p.msg.size();
        if p.jid != 0 {
            self.jlog.push((p.jid, Some(p.clone())));
        }
        self.queue.push_back(p);
        self.dropping = false;
    }

    pub fn pop_pending(&mut self) -> Option<Pending> {
        let p = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(p.msg.size());
        if p.jid != 0 {
            self.jlog.push((p.jid, None));
        }
        Some(p)
    }

    /// Index in the in-flight window of `pid` in state `state`.
    pub fn find_inflight(&self, pid: u16, state: OutState) -> Option<usize> {
        // Clients acknowledge in order: the oldest entry first, without a scan.
        if self
            .inflight
            .front()
            .is_some_and(|f| f.pid == pid && f.state == state)
        {
            return Some(0);
        }
        self.inflight
            .iter()
            .position(|f| f.pid == pid && f.state == state)
    }
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    /// [`NO_ECHO`] and [`STALLED`]: one byte for both keeps a session at 96 bytes.
    flags: u8,
    /// User name of the last connection, for ACL checks while the client is away.
    pub username: Option<Arc<str>>,
    /// The auth scope (listener) of the last connection, for ACL checks while it is away.
    pub scope: u8,
    /// Which attachment this is: renewed on every attach and detach, and unique for the life
    /// of the process. Every timer for the session carries the epoch it was set in, so a
    /// timer from an earlier attachment (or an earlier session in the same slot) is
    /// recognised and ignored. [STYLE 19c]
    pub epoch: u32,
    /// While connected, [`LINKED`] and the connection's slab index (below 2^32); while
    /// offline, the wall-clock time the session went offline, in milliseconds since the Unix
    /// epoch (0: not known). Persistence saves that time, so that a restart gives an offline
    /// session only the expiry it had left. One word for both: see [`Session::conn`] and
    /// [`Session::offline_at`].
    link: u64,
    pub expiry: Expiry,
    /// (filter, options, MQTT 5 subscription identifier): 24 bytes each. Changed only by the
    /// session table, which keeps the tree and the shared groups in step.
    subs: Vec<(Box<str>, SubOptions, Option<NonZeroU32>)>,
    /// How many QoS 1/2 messages may be unacknowledged: the broker's limit, lowered by a 5.0
    /// client's Receive Maximum. [MQTT-3.3.4-7]
    window: u16,
    /// A will held back by a 5.0 Will Delay Interval, cancelled if the client returns.
    pub pending_will: Option<Box<crate::protocol::Will>>,
    flow: Option<Box<Flow>>,
}

impl Session {
    pub fn new(client_id: Arc<str>, epoch: u32, expiry: Expiry) -> Session {
        Session {
            client_id,
            flags: 0,
            username: None,
            scope: super::core::GLOBAL_SCOPE,
            epoch,
            link: 0,
            expiry,
            subs: Vec::new(),
            window: 20,
            pending_will: None,
            flow: None,
        }
    }

    /// How many QoS 1/2 messages may be unacknowledged.
    pub fn window(&self) -> usize {
        usize::from(self.window)
    }

    pub fn set_window(&mut self, window: usize) {
        self.window = u16::try_from(window).unwrap_or(u16::MAX);
    }

    /// See [`NO_ECHO`].
    pub fn no_echo(&self) -> bool {
        self.flags & NO_ECHO != 0
    }

    pub fn set_no_echo(&mut self, on: bool) {
        self.set_flag(NO_ECHO, on);
    }

    /// See [`STALLED`].
    pub fn stalled(&self) -> bool {
        self.flags & STALLED != 0
    }

    pub fn set_stalled(&mut self, on: bool) {
        self.set_flag(STALLED, on);
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// The connection, while the client is connected.
    #[inline(always)]
    pub fn conn(&self) -> Option<usize> {
        (self.link & LINKED != 0).then_some((self.link & 0xffff_ffff) as usize)
    }

    /// When the session went offline (wall clock, milliseconds since the Unix epoch); 0
    /// while connected or when not known.
    pub fn offline_at(&self) -> u64 {
        if self.link & LINKED != 0 {
            0
        } else {
            self.link
        }
    }

    /// Stamps an offline session with the wall-clock time it went offline; nothing while
    /// it is connected.
    pub fn set_offline_at(&mut self, wall_ms: u64) {
        if self.link & LINKED == 0 {
            self.link = wall_ms & !LINKED;
        }
    }

    /// A PUBREL for `pid`: true if that inbound QoS 2 message was awaiting it. Makes no flow
    /// for a PUBREL nobody asked for.
    pub fn release_qos2(&mut self, pid: u16) -> bool {
        self.flow
            .as_mut()
            .is_some_and(|f| f.inbound_qos2.remove(pid))
    }

    /// Detaches the connection, returning it.
    /// Takes the connection away; the session is offline, at a time not known until
    /// [`Session::set_offline_at`].
    pub fn take_conn(&mut self) -> Option<usize> {
        let c = self.conn();
        if c.is_some() {
            self.link = 0;
        }
        c
    }

    /// Connects the session to `conn`, or (`None`) takes its connection away, keeping the
    /// time an offline session went offline.
    pub fn set_conn(&mut self, conn: Option<usize>) {
        match conn.and_then(|c| u32::try_from(c).ok()) {
            Some(c) => self.link = LINKED | u64::from(c),
            None => {
                self.take_conn();
            }
        }
    }

    /// The message flow, empty if the session never had one.
    #[inline(always)]
    pub fn flow(&self) -> &Flow {
        self.flow.as_deref().unwrap_or(NO_FLOW)
    }

    /// The message flow, if the session has one.
    #[inline(always)]
    pub fn flow_opt_mut(&mut self) -> Option<&mut Flow> {
        self.flow.as_deref_mut()
    }

    /// The message flow, made now if the session had none.
    pub fn flow_mut(&mut self) -> &mut Flow {
        self.flow.get_or_insert_with(Default::default)
    }

    pub fn alloc_pid(&mut self) -> Option<u16> {
        self.flow_mut().alloc_pid()
    }

    pub fn push_pending(&mut self, p: Pending) {
        self.flow_mut().push_pending(p);
    }

    pub fn pop_pending(&mut self) -> Option<Pending> {
        self.flow.as_mut()?.pop_pending()
    }

    pub fn find_inflight(&self, pid: u16, state: OutState) -> Option<usize> {
        self.flow().find_inflight(pid, state)
    }

    /// (filter, options, subscription identifier) of every subscription.
    pub fn subs(&self) -> &[(Box<str>, SubOptions, Option<NonZeroU32>)] {
        &self.subs
    }

    /// Adds a subscription to a session not yet in the table (one being restored); the
    /// table indexes it on insert. The list is kept sorted by filter, so a look-up is a
    /// binary search (a linear scan made 100,000 subscriptions cost O(n²)). The first few
    /// grow the list one at a time: most sessions hold one to three, and a vector's default
    /// growth would reserve room for four.
    pub fn add_sub(&mut self, filter: &str, opts: SubOptions, id: Option<u32>) {
        self.set_sub(filter, opts, id);
    }

    /// Where `filter` is in the sorted list: `Ok(index)`, or `Err(where it would go)`.
    fn find_sub(&self, filter: &str) -> Result<usize, usize> {
        self.subs.binary_search_by(|(f, _, _)| (**f).cmp(filter))
    }

    pub fn subscription(&self, filter: &str) -> Option<usize> {
        self.find_sub(filter).ok()
    }

    /// Adds or updates the subscription to `filter`; whether it existed. For the table.
    pub(super) fn set_sub(&mut self, filter: &str, opts: SubOptions, id: Option<u32>) -> bool {
        match self.find_sub(filter) {
            Ok(i) => {
                if let Some(e) = self.subs.get_mut(i) {
                    e.1 = opts;
                    e.2 = id.and_then(NonZeroU32::new);
                }
                true
            }
            Err(i) => {
                if self.subs.len() < 4 {
                    self.subs.reserve_exact(1);
                }
                self.subs
                    .insert(i, (Box::from(filter), opts, id.and_then(NonZeroU32::new)));
                false
            }
        }
    }

    /// Removes the subscription to `filter`; whether it existed. For the table.
    pub(super) fn remove_sub(&mut self, filter: &str) -> bool {
        match self.find_sub(filter) {
            Ok(i) => {
                self.subs.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes every subscription out. For the table.
    pub(super) fn take_subs(&mut self) -> Vec<(Box<str>, SubOptions, Option<NonZeroU32>)> {
        std::mem::take(&mut self.subs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Rc<Message> {
        Rc::new(Message {
            topic: "t".into(),
            payload: b"x"[..].into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires: None,
        })
    }

    #[test]
    fn a_common_delivery_is_small() {
        // Each queued message holds one; the rare parts are boxed.
        assert!(std::mem::size_of::<Pending>() <= 32);
        let p = Pending::new(msg(), QoS::AtLeastOnce, false, vec![7], None);
        assert_eq!(p.sub_ids(), [7]);
        assert!(p.share().is_none());
        assert!(pending().sub_ids().is_empty());
    }

    fn pending() -> Pending {
        Pending::new(msg(), QoS::AtLeastOnce, false, Vec::new(), None)
    }

    #[test]
    fn pids_skip_zero_and_in_flight() {
        let mut s = Session::new("c".into(), 1, Expiry::Never);
        assert_eq!(s.alloc_pid(), Some(1));
        s.flow_mut().restore_inflight(Inflight {
            pid: 2,
            d: pending(),
            state: OutState::AwaitAck,
        });
        assert_eq!(s.alloc_pid(), Some(3));
        s.flow_mut().last_pid = u16::MAX - 1;
        assert_eq!(s.alloc_pid(), Some(u16::MAX));
        assert_eq!(s.alloc_pid(), Some(1), "wraps past 0");
    }

    /// The ids handed out in order are not scanned for; one still in flight a whole ring of
    /// ids later is skipped, restored ones too.
    #[test]
    fn pids_in_order_skip_the_oldest_still_in_flight() {
        let mut f = Flow::default();
        let sent = |f: &mut Flow, pid| {
            f.push_sent(Inflight {
                pid,
                d: pending(),
                state: OutState::AwaitAck,
            })
        };
        let first = f.alloc_pid().unwrap();
        assert_eq!(first, 1);
        sent(&mut f, first);
        // 65,533 more handed out and acknowledged at once, all while id 1 stays.
        for want in 2..=65_534u16 {
            let pid = f.alloc_pid().unwrap();
            assert_eq!(pid, want);
        }
        assert_eq!(f.alloc_pid(), Some(65_535));
        sent(&mut f, 65_535);
        // The ring is now full from 1 to 65,535: 1 is taken, so the scan finds 2.
        assert_eq!(f.alloc_pid(), Some(2));
        sent(&mut f, 2);
        // The window now goes round more than once (1, 65,535, 2): checked one by one, so
        // the next lap skips 65,535 (still in flight), then 1 and 2.
        f.last_pid = 65_533;
        assert_eq!(f.alloc_pid(), Some(65_534));
        assert_eq!(
            f.alloc_pid(),
            Some(3),
            "65,535, 1 and 2 are still in flight"
        );
        f.inflight.clear();
        f.last_pid = 2;
        assert_eq!(f.alloc_pid(), Some(3));
        // Restored ids are checked one by one.
        f.restore_inflight(Inflight {
            pid: 4,
            d: pending(),
            state: OutState::AwaitAck,
        });
        assert_eq!(f.alloc_pid(), Some(5));
        // Every id in flight: none left.
        let mut g = Flow::default();
        for _ in 0..65_535 {
            let pid = g.alloc_pid().unwrap();
            sent(&mut g, pid);
        }
        assert_eq!(g.alloc_pid(), None);
    }

    #[test]
    fn pid_set() {
        let mut p = PidSet::default();
        assert!(p.insert(7) && p.insert(3) && p.insert(65535));
        assert!(!p.insert(3), "already there");
        assert_eq!(p.iter().collect::<Vec<_>>(), [3, 7, 65535]);
        assert!(p.contains(7) && !p.contains(8));
        assert!(p.remove(7) && !p.remove(7));
        assert_eq!(p.len(), 2);
    }

    /// Subscriptions stay sorted whatever order they come in, so look-ups are binary searches.
    #[test]
    fn subscriptions_sorted_and_unique() {
        let mut s = Session::new("c".into(), 1, Expiry::Never);
        for f in ["b", "a/#", "c/+", "a", "b"] {
            s.add_sub(f, SubOptions::default(), None);
        }
        let names: Vec<&str> = s.subs().iter().map(|(f, _, _)| &**f).collect();
        assert_eq!(names, ["a", "a/#", "b", "c/+"]);
        assert!(s.set_sub("a/#", SubOptions::default(), Some(3)));
        assert_eq!(s.subscription("a/#"), Some(1));
        assert!(s.remove_sub("a") && !s.remove_sub("a"));
        assert_eq!(s.subscription("c/+"), Some(2));
        assert_eq!(s.subscription("zz"), None);
    }

    #[test]
    fn queue_accounts_bytes() {
        let mut s = Session::new("c".into(), 1, Expiry::Never);
        assert!(s.pop_pending().is_none(), "no flow yet");
        s.push_pending(pending());
        assert_eq!(s.flow().queued_bytes, 2);
        assert!(s.pop_pending().is_some());
        assert_eq!(s.flow().queued_bytes, 0);
    }
}
