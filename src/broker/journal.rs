//! The persistence journal: every change to what persistence keeps (a retained message set or
//! cleared, a session entered, changed or removed, a message queued, sent, acknowledged or
//! expired, an inbound QoS 2 id added or released) appended as one small CRC-checked record.
//!
//! Guarantees:
//! - group commit: the loop calls [`Journal::flush`] once per pass, before that pass's
//!   PUBACK/PUBREC/SUBACK are written, and it returns only after `fdatasync`; an acknowledged
//!   message survives `kill -9` at any instant;
//! - linear cost: a queued message is written once (payload plus a small header), an
//!   acknowledgement is a few bytes; the session table is never re-serialised per change;
//! - recovery is the snapshot plus the journal of the same generation, replayed up to the
//!   first record that is torn or fails its CRC; such a journal is moved aside
//!   (`<file>.bad-<n>`) and reported, never silently dropped;
//! - reading never panics on file contents (a journal is input);
//! - compaction does not stall the loop: [`super::compact`] writes the new snapshot in
//!   slices while this journal goes on in `<file>.next`.
//!
//! A message's place in a session is an entry with an id (`jid`) unique for the life of the
//! state; records name entries by id, so replay needs none of the broker's routing logic.
//! Entries come back in id order, which is the order they entered their session.

use super::core::Broker;
use super::message::Message;
use super::persist::{self, put_record, Image};
use super::session::{Expiry, Inflight, OutState, Pending, Session};
use crate::protocol::codec::{put_string, Reader};
use bytes::{BufMut, BytesMut};
use log::error;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Version 2 adds the wall-clock time a session went offline to its head; version 1
/// journals are still read (and continued by a fresh snapshot, never appended to).
const MAGIC: &[u8; 8] = b"RMQTTJN\x02";
const MAGIC_V1: &[u8; 8] = b"RMQTTJN\x01";
/// Magic, generation (u64) and a CRC-32 of both.
const HEADER_LEN: usize = 20;

/// A retained message set (an empty payload clears its topic).
const J_RETAIN: u8 = 1;
/// A session's head (client id, user, expiry, subscriptions, inbound QoS 2 ids): an upsert.
const J_SESSION: u8 = 2;
/// A session removed, with every entry it held.
const J_SESSION_DEL: u8 = 3;
/// An entry with its message: client id, jid, place, delivery, message.
const J_PUT: u8 = 4;
/// An entry already written moved: client id, jid, place.
const J_MOVE: u8 = 5;
/// An entry gone (acknowledged, expired, dropped): client id, jid.
const J_DEL: u8 = 6;
/// A session's head as a version 1 journal wrote it (no offline time): what [`read`] makes
/// of a `J_SESSION` record in such a file. Never written.
const J_SESSION_V1: u8 = 0x82;

/// Where an entry is: waiting in the queue, or in flight with a packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Queue,
    Flight(u16, OutState),
}

fn put_place(b: &mut BytesMut, p: Place) {
    let (k, pid) = match p {
        Place::Queue => (0, 0),
        Place::Flight(pid, OutState::AwaitAck) => (1, pid),
        Place::Flight(pid, OutState::AwaitRec) => (2, pid),
        Place::Flight(pid, OutState::AwaitComp) => (3, pid),
    };
    b.put_u8(k);
    b.put_u16(pid);
}

fn get_place(r: &mut Reader<'_>) -> Result<Place, &'static str> {
    let e = |_| "truncated place";
    let k = r.u8().map_err(e)?;
    let pid = r.u16().map_err(e)?;
    Ok(match k {
        0 => Place::Queue,
        1 => Place::Flight(pid, OutState::AwaitAck),
        2 => Place::Flight(pid, OutState::AwaitRec),
        3 => Place::Flight(pid, OutState::AwaitComp),
        _ => return Err("bad place"),
    })
}

/// What changed in the broker since the journal's last pass; filled by the broker's hooks.
#[derive(Default)]
pub struct Changes {
    next_jid: u64,
    pub(super) retained: Vec<Rc<Message>>,
    pub(super) removed: Vec<Arc<str>>,
    pub(super) dirty: Vec<usize>,
}

impl Changes {
    pub(super) fn next_jid(&mut self) -> u64 {
        self.next_jid += 1;
        self.next_jid
    }
}

/// Journal hooks on the broker.
impl Broker {
    /// Stores a retained message (or clears its topic) and notes it for persistence.
    pub(super) fn set_retained(&mut self, msg: Rc<Message>) {
        self.retained.set(msg.clone());
        self.changes += 1;
        if let Some(j) = &mut self.jlog {
            j.retained.push(msg);
        }
    }

    /// Starts noting changes for a journal; entry ids continue after `last_jid`.
    pub fn enable_journal(&mut self, last_jid: u64) {
        self.jlog = Some(Box::new(Changes {
            next_jid: last_jid,
            ..Changes::default()
        }));
    }
}

/// A framed journal file, read up to its first bad record.
pub struct Read<'a> {
    pub gen: u64,
    /// The format version of the file (1 or 2).
    pub version: u8,
    pub records: Vec<(u8, &'a [u8])>,
    /// Why reading stopped early, if it did.
    pub damage: Option<String>,
}

/// Splits journal bytes into records. `None` when the header itself is missing or bad.
pub fn read(data: &[u8]) -> Option<Read<'_>> {
    let head = data.get(..HEADER_LEN)?;
    let (body, crc) = head.split_at_checked(16)?;
    let mut r = Reader::new(crc);
    let version = if body.starts_with(MAGIC) {
        2
    } else if body.starts_with(MAGIC_V1) {
        1
    } else {
        return None;
    };
    if r.u32().ok()? != persist::crc32(body) {
        return None;
    }
    let gen = persist::get_u64(&mut Reader::new(body.get(8..)?)).ok()?;
    let mut r = Reader::new(data.get(HEADER_LEN..)?);
    let mut records = Vec::new();
    let mut damage = None;
    while !r.is_empty() {
        let start = r.remaining_slice();
        let n = records.len() + 1;
        let (Ok(kind), Ok(len)) = (r.u8(), r.u32()) else {
            damage = Some(format!("record {n} torn"));
            break;
        };
        let (Ok(body), Ok(crc)) = (r.take(len as usize), r.u32()) else {
            damage = Some(format!("record {n} torn"));
            break;
        };
        let covered = start.get(..5 + len as usize).unwrap_or_default();
        if persist::crc32(covered) != crc {
            damage = Some(format!("checksum mismatch in record {n}"));
            break;
        }
        let kind = if version == 1 && kind == J_SESSION {
            J_SESSION_V1
        } else {
            kind
        };
        records.push((kind, body));
    }
    Some(Read {
        gen,
        version,
        records,
        damage,
    })
}

fn header(gen: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&gen.to_be_bytes());
    let crc = persist::crc32(&h);
    h.extend_from_slice(&crc.to_be_bytes());
    h
}

/// A session while the journal is replayed: its head and its entries by id.
struct Replayed {
    s: Session,
    entries: BTreeMap<u64, (Place, Pending)>,
}

/// Applies journal records to a snapshot image. Returns the image and the highest entry id
/// seen; stops at the first record that does not decode, with why.
pub fn replay(img: Image, records: &[(u8, &[u8])], now: Instant) -> (Image, u64, Option<String>) {
    let gen = img.gen;
    let mut retained: HashMap<Arc<str>, Rc<Message>> = HashMap::new();
    let mut order: Vec<Arc<str>> = Vec::new();
    for m in img.retained {
        order.push(m.topic.clone());
        retained.insert(m.topic.clone(), m);
    }
    let mut sessions: HashMap<Arc<str>, Replayed> = HashMap::new();
    let mut names: Vec<Arc<str>> = Vec::new();
    let mut top = 0u64;
    let mut synthetic = 0u64;
    for mut s in img.sessions {
        let mut entries = BTreeMap::new();
        let f = s.flow_mut();
        let mut put = |mut p: Pending, place: Place| {
            let jid = if p.jid == 0 {
                synthetic += 1;
                (1 << 63) | synthetic
            } else {
                p.jid
            };
            top = top.max(jid & !(1 << 63));
            p.jid = jid;
            entries.insert(jid, (place, p));
        };
        for i in f.inflight.drain(..) {
            put(i.d, Place::Flight(i.pid, i.state));
        }
        while let Some(p) = f.pop_pending() {
            put(p, Place::Queue);
        }
        f.jlog.clear();
        names.push(s.client_id.clone());
        sessions.insert(s.client_id.clone(), Replayed { s, entries });
    }
    let mut damage = None;
    for (n, (kind, body)) in records.iter().enumerate() {
        if let Err(e) = apply(
            *kind,
            body,
            now,
            &mut retained,
            &mut order,
            &mut sessions,
            &mut names,
            &mut top,
        ) {
            damage = Some(format!("record {}: {e}", n + 1));
            break;
        }
    }
    let mut out = Image {
        gen,
        ..Image::default()
    };
    for t in order {
        if let Some(m) = retained.remove(&t) {
            out.retained.push(m);
        }
    }
    for name in names {
        let Some(Replayed { mut s, entries }) = sessions.remove(&name) else {
            continue;
        };
        let f = s.flow_mut();
        for (_, (place, d)) in entries {
            match place {
                Place::Queue => f.push_pending(d),
                Place::Flight(pid, state) => f.restore_inflight(Inflight { pid, d, state }),
            }
        }
        f.jlog.clear();
        out.sessions.push(s);
    }
    (out, top, damage)
}

#[allow(clippy::too_many_arguments)]
fn apply(
    kind: u8,
    body: &[u8],
    now: Instant,
    retained: &mut HashMap<Arc<str>, Rc<Message>>,
    order: &mut Vec<Arc<str>>,
    sessions: &mut HashMap<Arc<str>, Replayed>,
    names: &mut Vec<Arc<str>>,
    top: &mut u64,
) -> Result<(), &'static str> {
    let e = |_| "truncated";
    let mut r = Reader::new(body);
    match kind {
        J_RETAIN => {
            let m = persist::get_message(&mut r, now)?;
            if m.payload.is_empty() {
                retained.remove(&m.topic);
            } else {
                if !retained.contains_key(&m.topic) {
                    order.push(m.topic.clone());
                }
                retained.insert(m.topic.clone(), Rc::new(m));
            }
        }
        J_SESSION | J_SESSION_V1 => {
            let mut head = persist::decode_session_head(&mut r, kind == J_SESSION)?;
            let n = r.u32().map_err(e)?;
            for _ in 0..n {
                head.flow_mut().inbound_qos2.insert(r.u16().map_err(e)?);
            }
            match sessions.get_mut(&head.client_id) {
                Some(x) => {
                    let entries = std::mem::take(&mut x.entries);
                    x.s = head;
                    x.entries = entries;
                }
                None => {
                    names.push(head.client_id.clone());
                    sessions.insert(
                        head.client_id.clone(),
                        Replayed {
                            s: head,
                            entries: BTreeMap::new(),
                        },
                    );
                }
            }
        }
        J_SESSION_DEL => {
            let id = r.string().map_err(e)?;
            sessions.remove(id);
        }
        J_PUT | J_MOVE | J_DEL => {
            let id = r.string().map_err(e)?;
            let jid = persist::get_u64(&mut r).map_err(e)?;
            *top = (*top).max(jid & !(1 << 63));
            let x = sessions.get_mut(id);
            match kind {
                J_PUT => {
                    let place = get_place(&mut r)?;
                    let make = persist::get_delivery(&mut r, Some(jid))?.ok_or("bad entry")?;
                    let m = persist::get_message(&mut r, now)?;
                    if let Some(x) = x {
                        x.entries.insert(jid, (place, make(Rc::new(m))));
                    }
                }
                J_MOVE => {
                    let place = get_place(&mut r)?;
                    if let Some(en) = x.and_then(|x| x.entries.get_mut(&jid)) {
                        en.0 = place;
                    }
                }
                _ => {
                    if let Some(x) = x {
                        x.entries.remove(&jid);
                    }
                }
            }
        }
        _ => return Err("unknown record kind"),
    }
    Ok(())
}

/// What [`Journal::recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// No journal of the snapshot's generation: a new one is to be started.
    None,
    /// A journal read whole: (records, bytes); appending to it continues it.
    Whole(usize, u64),
    /// A damaged journal, moved aside: what was read of it is only in memory.
    Damaged,
    /// A compaction was interrupted: the journal and `.next`, or `.next` alone, were
    /// replayed; a fresh snapshot is to be written.
    Chained,
}

/// What the journal last wrote about one session.
#[derive(Default)]
struct Seen {
    head: Vec<u8>,
    /// Entries written and not deleted, with their place.
    entries: HashMap<u64, Place>,
    /// Entries in flight at the last pass.
    flight: Vec<u64>,
}

/// The open journal file and what it has written since the last snapshot.
pub struct Journal {
    path: PathBuf,
    /// Where the journal of a compaction in progress is written (`<path>.next`).
    next: PathBuf,
    /// Records go to `next`: a compaction started and its snapshot is not in place yet.
    pub chained: bool,
    /// The file was created and its directory entry is not synced yet.
    dir_unsynced: bool,
    file: Option<File>,
    gen: u64,
    buf: BytesMut,
    /// Bytes in the file.
    pub size: u64,
    seen: HashMap<Arc<str>, Seen>,
    /// Size of the last snapshot: the journal is compacted when it outgrows it.
    pub base: u64,
    pub writes: u64,
    pub bytes: u64,
}

/// The journal is compacted when it is larger than this and than `FACTOR` times the last
/// snapshot.
const MIN_COMPACT: u64 = 64 * 1024;
const FACTOR: u64 = 2;

impl Journal {
    pub fn new(path: PathBuf) -> Journal {
        let mut next = path.clone().into_os_string();
        next.push(".next");
        Journal {
            path,
            next: PathBuf::from(next),
            chained: false,
            dir_unsynced: false,
            file: None,
            gen: 0,
            buf: BytesMut::new(),
            size: 0,
            seen: HashMap::new(),
            base: 0,
            writes: 0,
            bytes: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn next_path(&self) -> &Path {
        &self.next
    }

    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// Reads the journal continuing `img` and applies it. A journal of another generation
    /// is older than the snapshot (a crash between the snapshot's rename and the new
    /// journal's) and is ignored; a damaged one is moved aside and reported. After an
    /// interrupted compaction the journal of the next generation in `.next` follows (see
    /// [`super::compact`]).
    pub fn recover(&mut self, img: Image, now: Instant) -> (Image, u64, Recovered) {
        self.gen = img.gen;
        let g = img.gen;
        let main = read_file(&self.path);
        let next = read_file(&self.next);
        let gen_of = |d: &Option<Vec<u8>>| d.as_deref().map(|d| read(d).map(|r| r.gen));
        let (main_gen, next_gen) = (gen_of(&main), gen_of(&next));
        if main_gen == Some(None) {
            set_aside(&self.path, "no valid header");
        }
        if next_gen == Some(None) {
            set_aside(&self.next, "no valid header");
        }
        let mut bad_header = main_gen == Some(None);
        // The files that continue the snapshot, in order.
        let mut chain: Vec<(&Path, &[u8])> = Vec::new();
        if main_gen == Some(Some(g)) {
            chain.extend(main.as_deref().map(|d| (self.path.as_path(), d)));
            if next_gen == Some(Some(g.wrapping_add(1))) {
                chain.extend(next.as_deref().map(|d| (self.next.as_path(), d)));
            }
        } else if next_gen == Some(Some(g)) {
            chain.extend(next.as_deref().map(|d| (self.next.as_path(), d)));
            bad_header = false;
        }
        if let (Some(Some(ng)), true) = (next_gen, chain.iter().all(|(p, _)| *p != self.next)) {
            // Older than the snapshot: every change in it is in the snapshot.
            if ng < g {
                let _ = fs::remove_file(&self.next);
            } else {
                set_aside(&self.next, "its generation does not follow the snapshot");
            }
        }
        let mut records = Vec::new();
        let mut damage = None;
        let mut old_format = false;
        for (path, data) in &chain {
            // Checked above: every file in the chain has a valid header.
            let Some(rd) = read(data) else { continue };
            old_format |= rd.version != 2;
            records.extend(rd.records);
            if let Some(d) = rd.damage {
                damage = Some(format!("{}: {d}", path.display()));
                break;
            }
        }
        let n = records.len();
        let (out, top, bad) = replay(img, &records, now);
        if let Some(why) = damage.or(bad) {
            for (path, _) in &chain {
                set_aside(path, &format!("{why}; {n} records replayed before it"));
            }
            return (out, top, Recovered::Damaged);
        }
        let found = match chain.as_slice() {
            [] if bad_header => Recovered::Damaged,
            [] => Recovered::None,
            // An older format is not appended to: a fresh snapshot continues it.
            _ if old_format => Recovered::Chained,
            [(p, d)] if *p == self.path => Recovered::Whole(n, d.len() as u64),
            _ => Recovered::Chained,
        };
        (out, top, found)
    }

    /// Begins generation `gen` after a snapshot of `broker` of `base` bytes: an empty
    /// journal, and what it knows is what `broker` holds. With `resume` (the size of a
    /// journal of that generation read whole), appends to that journal instead. A journal
    /// of a compaction in progress (`.next`) is removed: the snapshot holds what it held.
    pub fn start(
        &mut self,
        broker: &mut Broker,
        gen: u64,
        base: u64,
        resume: Option<u64>,
    ) -> io::Result<()> {
        self.reset(broker);
        self.gen = gen;
        self.base = base;
        if let Some(size) = resume {
            self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
            self.size = size;
            self.chained = false;
            return Ok(());
        }
        let path = self.path.clone();
        self.create(&path, gen, true)?;
        self.chained = false;
        if let Err(e) = fs::remove_file(&self.next) {
            if e.kind() != io::ErrorKind::NotFound {
                error!("Error: unable to remove {}: {e}", self.next.display());
            }
        }
        Ok(())
    }

    /// Point P of a compaction: the journal of generation `gen` starts in `.next`, and
    /// what it knows is what `broker` holds now. Called right after [`Journal::flush`].
    pub fn start_next(&mut self, broker: &mut Broker, gen: u64) -> io::Result<()> {
        let next = self.next.clone();
        self.create(&next, gen, false)?;
        self.reset(broker);
        self.gen = gen;
        self.chained = true;
        Ok(())
    }

    /// The compaction's snapshot (of `base` bytes) is in place: `.next` becomes the journal.
    /// In two steps, a pass each: the rename ([`Journal::promote`] returns the old
    /// journal, still open, for [`super::compact::Freeing`]), then the directory's sync
    /// ([`Journal::promoted`]).
    pub fn promote(&mut self) -> io::Result<Option<File>> {
        let old = OpenOptions::new().write(true).open(&self.path).ok();
        fs::rename(&self.next, &self.path)?;
        Ok(old)
    }

    pub fn promoted(&mut self, base: u64) {
        sync_dir(&self.path);
        self.chained = false;
        self.base = base;
    }

    /// Forgets what was written: from now on it knows what `broker` holds.
    fn reset(&mut self, broker: &mut Broker) {
        self.seen.clear();
        self.buf.clear();
        if let Some(j) = &mut broker.jlog {
            j.retained.clear();
            j.removed.clear();
            j.dirty.clear();
        }
        for sid in broker.table.ids() {
            if let Some(f) = broker.table.get_mut(sid).and_then(Session::flow_opt_mut) {
                f.jlog.clear();
            }
        }
        for (_, s) in broker.table.iter() {
            if s.expiry == Expiry::OnDisconnect {
                continue;
            }
            let mut seen = Seen {
                head: head_bytes(s),
                ..Seen::default()
            };
            for f in &s.flow().inflight {
                if f.d.jid != 0 {
                    seen.entries.insert(f.d.jid, Place::Flight(f.pid, f.state));
                    seen.flight.push(f.d.jid);
                }
            }
            for p in &s.flow().queue {
                if p.jid != 0 {
                    seen.entries.insert(p.jid, Place::Queue);
                }
            }
            self.seen.insert(s.client_id.clone(), seen);
        }
    }

    /// A new journal file with only its header at `at` (crash-safe: a temporary file
    /// renamed into place), opened for appending. Unless `durable`, the file and its
    /// directory are synced by the first [`Journal::flush`] instead (nothing in the file
    /// needs to survive a crash before that: a torn `.next` holds no acknowledged record).
    fn create(&mut self, at: &Path, gen: u64, durable: bool) -> io::Result<()> {
        let h = header(gen);
        // Exclusive, not through a symlink, mode 0600, removed if it cannot be put in place.
        let (tmp, mut f) = super::persist::create_temp(at)?;
        let written = f
            .write_all(&h)
            .and_then(|()| if durable { f.sync_all() } else { Ok(()) });
        drop(f);
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, at)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if durable {
            sync_dir(at);
        }
        self.dir_unsynced = !durable;
        self.file = Some(OpenOptions::new().append(true).open(at)?);
        self.size = h.len() as u64;
        self.bytes += h.len() as u64;
        Ok(())
    }

    /// Whether the journal has outgrown the state enough to be worth a new snapshot.
    pub fn wants_compaction(&self) -> bool {
        self.size > MIN_COMPACT && self.size > FACTOR * self.base
    }

    /// Appends the records for everything that changed since the last pass, then writes
    /// and syncs them. Nothing at all when nothing changed.
    pub fn flush(&mut self, broker: &mut Broker, now: Instant) -> io::Result<()> {
        let Some(mut ch) = broker.jlog.take() else {
            return Ok(());
        };
        self.collect(broker, &mut ch, now);
        ch.retained.clear();
        ch.removed.clear();
        ch.dirty.clear();
        broker.jlog = Some(ch);
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(f) = &mut self.file else {
            self.buf.clear();
            return Err(io::Error::other("journal not open"));
        };
        let r = f.write_all(&self.buf).and_then(|()| f.sync_data());
        if r.is_ok() && self.dir_unsynced {
            sync_dir(if self.chained { &self.next } else { &self.path });
            self.dir_unsynced = false;
        }
        self.size += self.buf.len() as u64;
        self.bytes += self.buf.len() as u64;
        self.writes += 1;
        self.buf.clear();
        r
    }

    fn collect(&mut self, broker: &mut Broker, ch: &mut Changes, now: Instant) {
        let b = &mut self.buf;
        for m in ch.retained.drain(..) {
            if m.topic.starts_with("$SYS") {
                continue;
            }
            let mut body = BytesMut::new();
            persist::put_message(&mut body, &m, now);
            put_record(b, J_RETAIN, &body);
        }
        for id in ch.removed.drain(..) {
            if self.seen.remove(&id).is_some() {
                let mut body = BytesMut::new();
                put_string(&mut body, &id);
                put_record(b, J_SESSION_DEL, &body);
            }
        }
        crate::sort::sort(&mut ch.dirty);
        ch.dirty.dedup();
        for &sid in &ch.dirty {
            let Some(s) = broker.table.get_mut(sid) else {
                continue;
            };
            let ops = s.flow_opt_mut().map(|f| std::mem::take(&mut f.jlog));
            if s.expiry == Expiry::OnDisconnect {
                if self.seen.remove(&s.client_id).is_some() {
                    let mut body = BytesMut::new();
                    put_string(&mut body, &s.client_id);
                    put_record(b, J_SESSION_DEL, &body);
                }
                continue;
            }
            let seen = self.seen.entry(s.client_id.clone()).or_default();
            let head = head_bytes(s);
            if head != seen.head {
                put_record(b, J_SESSION, &head);
                seen.head = head;
            }
            // What each touched entry is now: gone, queued (with its delivery) or in flight.
            let mut now_at: HashMap<u64, Option<(Place, Option<&Pending>)>> = HashMap::new();
            for jid in seen.flight.drain(..) {
                now_at.insert(jid, None);
            }
            if let Some(ops) = &ops {
                for (jid, op) in ops {
                    now_at.insert(*jid, op.as_ref().map(|p| (Place::Queue, Some(p))));
                }
            }
            for f in &s.flow().inflight {
                if f.d.jid != 0 {
                    now_at.insert(f.d.jid, Some((Place::Flight(f.pid, f.state), Some(&f.d))));
                    seen.flight.push(f.d.jid);
                }
            }
            let mut jids: Vec<u64> = now_at.keys().copied().collect();
            crate::sort::sort(&mut jids);
            for jid in jids {
                let Some(want) = now_at.get(&jid) else {
                    continue;
                };
                let had = seen.entries.get(&jid).copied();
                let mut body = BytesMut::new();
                put_string(&mut body, &s.client_id);
                body.put_u64(jid);
                match (want, had) {
                    (None, None) => continue,
                    (None, Some(_)) => {
                        seen.entries.remove(&jid);
                        put_record(b, J_DEL, &body);
                    }
                    (Some((place, _)), Some(h)) if *place == h => {}
                    (Some((place, _)), Some(_)) => {
                        put_place(&mut body, *place);
                        seen.entries.insert(jid, *place);
                        put_record(b, J_MOVE, &body);
                    }
                    (Some((place, d)), None) => {
                        let Some(d) = d else { continue };
                        put_place(&mut body, *place);
                        persist::put_delivery(&mut body, d);
                        persist::put_message(&mut body, &d.msg, now);
                        seen.entries.insert(jid, *place);
                        put_record(b, J_PUT, &body);
                    }
                }
            }
        }
    }
}

/// A session's head record: what [`persist::put_session_head`] writes and the inbound QoS 2
/// ids.
fn head_bytes(s: &Session) -> Vec<u8> {
    let mut b = BytesMut::new();
    persist::put_session_head(&mut b, s);
    b.put_u32(s.flow().inbound_qos2.len() as u32);
    for pid in s.flow().inbound_qos2.iter() {
        b.put_u16(pid);
    }
    b.to_vec()
}

fn read_file(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(d) => Some(d),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                error!("Error: unable to read journal {}: {e}", path.display());
            }
            None
        }
    }
}

/// Moves a damaged journal to `<file>.bad-<n>` and says so.
fn set_aside(path: &Path, why: &str) {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut n = 1;
    let aside = loop {
        let p = path.with_file_name(format!("{name}.bad-{n}"));
        if !p.exists() || n > 1000 {
            break p;
        }
        n += 1;
    };
    match fs::rename(path, &aside) {
        Ok(()) => error!(
            "Error: journal {} is damaged ({why}); moved to {}.",
            path.display(),
            aside.display()
        ),
        Err(e) => error!(
            "Error: journal {} is damaged ({why}) and could not be moved aside: {e}",
            path.display()
        ),
    }
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_slice(&header(7));
        for (k, b) in records {
            put_record(&mut out, *k, b);
        }
        out.to_vec()
    }

    #[test]
    fn records_round_trip_and_every_flipped_byte_or_cut_is_caught() {
        let recs: [(u8, &[u8]); 3] = [(J_DEL, b"abc"), (J_SESSION_DEL, b""), (J_MOVE, b"xyz12")];
        let data = file(&recs);
        let rd = read(&data).unwrap();
        assert_eq!(rd.gen, 7);
        assert_eq!(rd.damage, None);
        assert_eq!(rd.records, recs.to_vec());
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            match read(&bad) {
                None => assert!(i < HEADER_LEN, "byte {i}"),
                Some(rd) => {
                    assert!(rd.damage.is_some(), "flipped byte {i} caught");
                    assert!(rd.records.len() < 3);
                }
            }
        }
        for cut in 0..data.len() {
            match read(&data[..cut]) {
                None => assert!(cut < HEADER_LEN),
                Some(rd) => {
                    assert!(rd.records.len() < 3);
                    assert_eq!(recs[..rd.records.len()], rd.records[..]);
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for n in 0..2000usize {
            let mut data = header(1);
            for _ in 0..(n % 97) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(x as u8);
            }
            if let Some(rd) = read(&data) {
                let _ = replay(Image::default(), &rd.records, Instant::now());
            }
            // Well-framed records with garbage bodies: replay stops, never panics.
            let body: Vec<u8> = data.iter().rev().copied().collect();
            for kind in 0..8u8 {
                let f = file(&[(kind, &body)]);
                let rd = read(&f).unwrap();
                let (_, _, bad) = replay(Image::default(), &rd.records, Instant::now());
                if kind == 0 || kind > J_DEL {
                    assert!(bad.is_some(), "unknown kind {kind} reported");
                }
            }
        }
    }
}
