//! Persistence: retained messages and persistent sessions (subscriptions, queued and in-flight
//! QoS 1/2 messages, inbound QoS 2 ids) saved to one snapshot file and restored at start.
//!
//! Crash-safe and flash-aware:
//! - a save writes a temporary file, fsyncs it, renames it over the old one and fsyncs the
//!   directory, so a crash at any moment leaves either the old or the new snapshot;
//! - nothing is written while nothing changed, and by default at most once per
//!   `autosave_interval`; with `autosave_on_changes`, after that many changes, and before the
//!   acknowledgements of that loop pass are sent, so an acknowledged message survives `kill -9`;
//! - the format is versioned and every record carries a CRC-32; a damaged file is moved aside
//!   (never deleted) and the broker starts with every record before the damage.
//!
//! Decoding never panics on file contents.

use super::compact::{self, Job};
use super::core::Broker;
use super::journal::{Journal, Recovered};
use super::message::Message;
use super::mosquitto_db;
use super::session::{Expiry, Inflight, OutState, Pending, Session};
use crate::config::Config;
use crate::protocol::codec::{put_string, Reader};
use crate::protocol::properties::Owner;
use crate::protocol::{DecodeError, Properties, QoS, SubOptions};
use bytes::{BufMut, BytesMut};
use log::{error, info, warn};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Version 2 adds the journal generation and an entry id per queued message; version 3 the
/// wall-clock time a session went offline. Versions 1 and 2 are still read.
const MAGIC: &[u8; 8] = b"RMQTTDB\x03";
const MAGIC_V2: &[u8; 8] = b"RMQTTDB\x02";
const MAGIC_V1: &[u8; 8] = b"RMQTTDB\x01";
const REC_MESSAGE: u8 = 1;
const REC_RETAINED: u8 = 2;
const REC_SESSION: u8 = 3;
/// The journal generation this snapshot starts (version 2).
const REC_GEN: u8 = 4;
const REC_END: u8 = 0xff;

/// CRC-32 (IEEE 802.3) lookup table, one entry per byte value.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE 802.3), a byte at a time from a table: every journal record and snapshot
/// record is checked with it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        let i = usize::from((crc as u8) ^ b);
        crc = (crc >> 8) ^ CRC_TABLE.get(i).copied().unwrap_or(0);
    }
    !crc
}

/// Frames one record: kind, body length, body, and a CRC-32 over all three.
pub(super) fn put_record(out: &mut BytesMut, kind: u8, body: &[u8]) {
    let start = out.len();
    out.put_u8(kind);
    out.put_u32(body.len() as u32);
    out.put_slice(body);
    let crc = crc32(out.get(start..).unwrap_or_default());
    out.put_u32(crc);
}

fn secs_left(at: Option<Instant>, now: Instant) -> u32 {
    at.map_or(0, |e| {
        u32::try_from(e.saturating_duration_since(now).as_secs() + 1).unwrap_or(u32::MAX)
    })
}

fn put_pending(b: &mut BytesMut, p: &Pending, id: u32) {
    b.put_u32(id);
    b.put_u64(p.jid);
    put_delivery(b, p);
}

/// How one message goes to one session (QoS, retain, subscription ids, shared group).
pub(super) fn put_delivery(b: &mut BytesMut, p: &Pending) {
    b.put_u8(p.qos.as_u8());
    b.put_u8(u8::from(p.retain));
    b.put_u16(p.sub_ids().len().min(255) as u16);
    for id in p.sub_ids().iter().take(255) {
        b.put_u32(*id);
    }
    put_string(b, p.share().map_or("", |s| &**s));
}

/// A message: topic, payload, QoS, retain, seconds left to live (0: no expiry), properties.
pub(super) fn put_message(b: &mut BytesMut, m: &Message, now: Instant) {
    put_string(b, &m.topic);
    b.put_u32(m.payload.len() as u32);
    b.put_slice(&m.payload);
    b.put_u8(m.qos.as_u8());
    b.put_u8(u8::from(m.retain));
    b.put_u32(secs_left(m.expires, now));
    match &m.properties {
        Some(p) => p.encode(b),
        None => b.put_u8(0),
    }
}

/// A session without its messages: client id, user name, expiry, the wall-clock time it went
/// offline (milliseconds since the Unix epoch, 0: connected or not known), subscriptions
/// (and, in a snapshot, the counts and entries that follow).
pub(super) fn put_session_head(b: &mut BytesMut, s: &Session) {
    put_string(b, &s.client_id);
    put_string(b, s.username.as_deref().unwrap_or(""));
    b.put_u8(u8::from(s.username.is_some()));
    match s.expiry {
        Expiry::Never => {
            b.put_u8(0);
            b.put_u32(0);
        }
        Expiry::After(n) => {
            b.put_u8(1);
            b.put_u32(n);
        }
        Expiry::OnDisconnect => {
            b.put_u8(2);
            b.put_u32(0);
        }
    }
    b.put_u64(s.offline_at());
    b.put_u32(s.subs().len() as u32);
    for (f, o, id) in s.subs() {
        put_string(b, f);
        b.put_u8(o.to_byte());
        b.put_u32(id.map_or(0, NonZeroU32::get));
    }
}

/// The whole persistent state of `broker` as snapshot bytes, starting journal generation
/// `gen` (0 without a journal).
pub fn encode(broker: &Broker, now: Instant, gen: u64) -> Vec<u8> {
    let sessions: Vec<&Session> = broker
        .sessions_iter()
        .filter(|s| s.expiry != Expiry::OnDisconnect)
        .collect();
    encode_state(&broker.retained_messages(), &sessions, now, gen)
}

/// Snapshot bytes of plain data: the retained messages and the sessions to save.
pub fn encode_state(
    retained: &[Rc<Message>],
    sessions: &[&Session],
    now: Instant,
    gen: u64,
) -> Vec<u8> {
    let mut w = SnapWriter::new(gen);
    for m in retained {
        w.retained(m, now);
    }
    for s in sessions {
        w.session(s, now);
    }
    w.finish();
    w.out.to_vec()
}

/// A snapshot written one item at a time, so that it can be written in slices between loop
/// passes ([`super::compact`]): each retained message and each session is preceded by the
/// message records it refers to that were not written yet.
///
/// A message shared by several items (a publish queued for several sessions) is written
/// once; the writer keeps a reference to such a message until it is done, so its address
/// cannot be reused by another message meanwhile. A message only one item holds is not
/// remembered: the writer's memory is one entry per shared message, never a copy.
pub(super) struct SnapWriter {
    pub out: BytesMut,
    ids: HashMap<*const Message, (u32, Rc<Message>)>,
    last_id: u32,
    records: u32,
}

impl SnapWriter {
    pub fn new(gen: u64) -> SnapWriter {
        let mut out = BytesMut::with_capacity(4096);
        out.put_slice(MAGIC);
        put_record(&mut out, REC_GEN, &gen.to_be_bytes());
        SnapWriter {
            out,
            ids: HashMap::new(),
            last_id: 0,
            records: 1,
        }
    }

    /// The id of `m` in this snapshot; its record is written first if it has none yet.
    fn message(&mut self, m: &Rc<Message>, now: Instant) -> u32 {
        let key = Rc::as_ptr(m);
        if let Some((id, _)) = self.ids.get(&key) {
            return *id;
        }
        self.last_id += 1;
        let id = self.last_id;
        if Rc::strong_count(m) > 1 {
            self.ids.insert(key, (id, m.clone()));
        }
        let mut b = BytesMut::new();
        b.put_u32(id);
        put_message(&mut b, m, now);
        put_record(&mut self.out, REC_MESSAGE, &b);
        self.records += 1;
        id
    }

    pub fn retained(&mut self, m: &Rc<Message>, now: Instant) {
        let id = self.message(m, now);
        put_record(&mut self.out, REC_RETAINED, &id.to_be_bytes());
        self.records += 1;
    }

    pub fn session(&mut self, s: &Session, now: Instant) {
        let fl = s.flow();
        let flight: Vec<u32> = fl
            .inflight
            .iter()
            .map(|f| self.message(&f.d.msg, now))
            .collect();
        let queue: Vec<u32> = fl.queue.iter().map(|p| self.message(&p.msg, now)).collect();
        let mut b = BytesMut::new();
        put_session_head(&mut b, s);
        b.put_u32(fl.inflight.len() as u32);
        for (f, id) in fl.inflight.iter().zip(flight) {
            b.put_u16(f.pid);
            b.put_u8(match f.state {
                OutState::AwaitAck => 0,
                OutState::AwaitRec => 1,
                OutState::AwaitComp => 2,
            });
            put_pending(&mut b, &f.d, id);
        }
        b.put_u32(fl.queue.len() as u32);
        for (p, id) in fl.queue.iter().zip(queue) {
            put_pending(&mut b, p, id);
        }
        b.put_u32(fl.inbound_qos2.len() as u32);
        for pid in fl.inbound_qos2.iter() {
            b.put_u16(pid);
        }
        put_record(&mut self.out, REC_SESSION, &b);
        self.records += 1;
    }

    /// The end record, with the number of records before it.
    pub fn finish(&mut self) {
        put_record(&mut self.out, REC_END, &self.records.to_be_bytes());
        self.ids.clear();
    }
}

/// What a snapshot holds, ready to be put into a broker.
#[derive(Default)]
pub struct Image {
    pub retained: Vec<Rc<Message>>,
    pub sessions: Vec<Session>,
    /// The journal generation that continues this snapshot (0: none).
    pub gen: u64,
}

fn qos(v: u8) -> Result<QoS, &'static str> {
    QoS::from_u8(v).ok_or("bad QoS")
}

pub(super) fn get_u64(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    Ok((u64::from(r.u32()?) << 32) | u64::from(r.u32()?))
}

fn get_pending(
    r: &mut Reader<'_>,
    msgs: &HashMap<u32, Rc<Message>>,
    v1: bool,
) -> Result<Option<Pending>, &'static str> {
    let e = |_| "truncated entry";
    let id = r.u32().map_err(e)?;
    let jid = if v1 { 0 } else { get_u64(r).map_err(e)? };
    Ok(get_delivery(r, Some(jid))?.and_then(|f| msgs.get(&id).map(|m| f(m.clone()))))
}

/// Reads what [`put_delivery`] wrote; `jid` is the entry id to give it. The result takes the
/// message.
pub(super) type MakePending = Box<dyn FnOnce(Rc<Message>) -> Pending>;

pub(super) fn get_delivery(
    r: &mut Reader<'_>,
    jid: Option<u64>,
) -> Result<Option<MakePending>, &'static str> {
    let e = |_| "truncated entry";
    let jid = jid.unwrap_or(0);
    let q = qos(r.u8().map_err(e)?)?;
    let retain = r.u8().map_err(e)? != 0;
    let n = r.u16().map_err(e)?;
    let mut sub_ids = Vec::new();
    for _ in 0..n {
        sub_ids.push(r.u32().map_err(e)?);
    }
    let share: Option<Rc<str>> = Some(r.string().map_err(e)?)
        .filter(|s| !s.is_empty())
        .map(Rc::from);
    Ok(Some(Box::new(move |msg| {
        let mut p = Pending::new(msg, q, retain, sub_ids, share);
        p.jid = jid;
        p
    })))
}

/// Reads what [`put_session_head`] wrote; `stamped`: the format has the offline time (snapshot
/// version 3, journal version 2).
pub(super) fn decode_session_head(
    r: &mut Reader<'_>,
    stamped: bool,
) -> Result<Session, &'static str> {
    let e = |_| "truncated session";
    let client_id: Arc<str> = Arc::from(r.string().map_err(e)?);
    let username = r.string().map_err(e)?.to_owned();
    let has_user = r.u8().map_err(e)? != 0;
    let expiry = match (r.u8().map_err(e)?, r.u32().map_err(e)?) {
        (0, _) => Expiry::Never,
        (1, n) => Expiry::After(n),
        _ => Expiry::OnDisconnect,
    };
    let offline_at = if stamped { get_u64(r).map_err(e)? } else { 0 };
    let mut s = Session::new(client_id, 0, expiry);
    s.set_offline_at(offline_at);
    s.username = has_user.then(|| Arc::from(username));
    for _ in 0..r.u32().map_err(e)? {
        let f = r.string().map_err(e)?;
        let o = r.u8().map_err(e)?;
        let id = r.u32().map_err(e)?;
        let opts = SubOptions {
            qos: qos(o & 3)?,
            no_local: o & 4 != 0,
            retain_as_published: o & 8 != 0,
            retain_handling: (o >> 4) & 3,
        };
        s.add_sub(f, opts, (id != 0).then_some(id));
    }
    Ok(s)
}

fn decode_session(
    body: &[u8],
    msgs: &HashMap<u32, Rc<Message>>,
    version: u8,
) -> Result<Session, &'static str> {
    let e = |_| "truncated session";
    let v1 = version == 1;
    let mut r = Reader::new(body);
    let mut s = decode_session_head(&mut r, version >= 3)?;
    for _ in 0..r.u32().map_err(e)? {
        let pid = r.u16().map_err(e)?;
        let state = match r.u8().map_err(e)? {
            0 => OutState::AwaitAck,
            1 => OutState::AwaitRec,
            _ => OutState::AwaitComp,
        };
        if let Some(d) = get_pending(&mut r, msgs, v1)? {
            s.flow_mut().restore_inflight(Inflight { pid, d, state });
        }
    }
    for _ in 0..r.u32().map_err(e)? {
        if let Some(p) = get_pending(&mut r, msgs, v1)? {
            s.push_pending(p);
        }
    }
    for _ in 0..r.u32().map_err(e)? {
        s.flow_mut().inbound_qos2.insert(r.u16().map_err(e)?);
    }
    Ok(s)
}

fn decode_message(body: &[u8], now: Instant) -> Result<(u32, Message), &'static str> {
    let mut r = Reader::new(body);
    let id = r.u32().map_err(|_| "truncated message")?;
    Ok((id, get_message(&mut r, now)?))
}

/// Reads what [`put_message`] wrote.
pub(super) fn get_message(r: &mut Reader<'_>, now: Instant) -> Result<Message, &'static str> {
    let e = |_| "truncated message";
    let topic = r.string().map_err(e)?;
    let len = r.u32().map_err(e)? as usize;
    let payload: Box<[u8]> = r.take(len).map_err(e)?.into();
    let q = qos(r.u8().map_err(e)?)?;
    let retain = r.u8().map_err(e)? != 0;
    let left = r.u32().map_err(e)?;
    let props = Properties::decode(r, Owner::Publish).map_err(|_| "bad properties")?;
    Ok(Message {
        topic: Arc::from(topic),
        payload,
        qos: q,
        retain,
        properties: (!props.is_empty()).then(|| Box::new(props)),
        expires: (left > 0).then(|| now + Duration::from_secs(u64::from(left))),
    })
}

/// Reads a snapshot. Returns what could be read, and a description of the damage if the
/// file is not whole.
pub fn decode(data: &[u8], now: Instant) -> (Image, Option<String>) {
    let mut img = Image::default();
    let version = [(MAGIC, 3), (MAGIC_V2, 2), (MAGIC_V1, 1)]
        .into_iter()
        .find_map(|(m, v)| data.strip_prefix(m.as_slice()).map(|rest| (rest, v)));
    let Some((rest, version)) = version else {
        let what = if data.starts_with(b"RMQTTDB") {
            "unknown format version"
        } else {
            "not an rmqtt persistence file"
        };
        return (img, Some(what.to_owned()));
    };
    let mut msgs: HashMap<u32, Rc<Message>> = HashMap::new();
    let mut r = Reader::new(rest);
    let mut count = 0u32;
    loop {
        if r.is_empty() {
            return (img, Some("truncated: no end record".to_owned()));
        }
        let start = r.remaining_slice();
        let (Ok(kind), Ok(len)) = (r.u8(), r.u32()) else {
            return (img, Some(format!("truncated after {count} records")));
        };
        let Ok(body) = r.take(len as usize) else {
            return (img, Some(format!("truncated in record {}", count + 1)));
        };
        let Ok(crc) = r.u32() else {
            return (img, Some(format!("truncated in record {}", count + 1)));
        };
        let covered = start.get(..5 + len as usize).unwrap_or_default();
        if crc32(covered) != crc {
            return (
                img,
                Some(format!("checksum mismatch in record {}", count + 1)),
            );
        }
        match kind {
            REC_MESSAGE => match decode_message(body, now) {
                Ok((id, m)) => {
                    msgs.insert(id, Rc::new(m));
                }
                Err(e) => return (img, Some(format!("record {}: {e}", count + 1))),
            },
            REC_RETAINED => {
                if let Some(m) = Reader::new(body).u32().ok().and_then(|id| msgs.get(&id)) {
                    img.retained.push(m.clone());
                }
            }
            REC_GEN => img.gen = get_u64(&mut Reader::new(body)).unwrap_or(0),
            REC_SESSION => match decode_session(body, &msgs, version) {
                Ok(s) => img.sessions.push(s),
                Err(e) => return (img, Some(format!("record {}: {e}", count + 1))),
            },
            REC_END => {
                let expected = Reader::new(body).u32().unwrap_or(u32::MAX);
                if expected != count {
                    return (
                        img,
                        Some(format!("{count} records, end record says {expected}")),
                    );
                }
                return (img, None);
            }
            _ => return (img, Some(format!("unknown record kind {kind}"))),
        }
        count += 1;
    }
}

/// The snapshot file, the journal, and the policy for writing them.
pub struct Store {
    path: PathBuf,
    interval: Duration,
    /// `autosave_on_changes`: save after this many changes instead of after a time.
    every_changes: Option<u64>,
    saved_changes: u64,
    last_save: Instant,
    pub writes: u64,
    pub bytes: u64,
    journal: Option<Journal>,
    /// The snapshot a compaction writes, beside the journal: `path` itself when they share
    /// a directory; else (a journal in RAM) `path` is written only by the autosave policy.
    jsnap: PathBuf,
    /// A compaction in progress, written in slices between passes.
    job: Option<Job>,
    /// Snapshot bytes a compaction writes per slice.
    pub slice: usize,
    /// Time between slices ([`compact::PACE`]).
    pub pace: Duration,
    /// When the next slice, or the next blocking step of a compaction's end, may run.
    next_step: Instant,
    /// A compaction's snapshot is put in place this long after it was written.
    pub settle: Duration,
    /// When the written snapshot of the compaction in progress is to be put in place.
    settle_at: Option<Instant>,
    /// The snapshot is in place; the journal's rename (0) or its directory's sync (1) is
    /// next; with the snapshot's size.
    promoting: Option<(u8, u64)>,
    /// Files replaced by compactions, freed a slice per pass.
    freeing: Vec<File>,
}

impl Store {
    /// `None` when persistence is off.
    pub fn from_config(cfg: &Config, now: Instant) -> Option<Store> {
        if !cfg.persistence {
            return None;
        }
        let dir = cfg
            .persistence_location
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        let jdir = cfg.journal_location.clone().unwrap_or_else(|| dir.clone());
        let file = &cfg.persistence_file;
        Some(Store {
            path: dir.join(file),
            interval: Duration::from_secs(u64::from(cfg.autosave_interval)),
            every_changes: cfg
                .autosave_on_changes
                .then_some(u64::from(cfg.autosave_interval.max(1))),
            saved_changes: 0,
            last_save: now,
            writes: 0,
            bytes: 0,
            journal: cfg
                .persistence_journal
                .then(|| Journal::new(jdir.join(format!("{file}.journal")))),
            jsnap: jdir.join(file),
            job: None,
            slice: compact::SLICE,
            pace: compact::PACE,
            next_step: now,
            settle: compact::SETTLE,
            settle_at: None,
            promoting: None,
            freeing: Vec::new(),
        })
    }

    /// Takes a reloaded `autosave_interval` and `autosave_on_changes`.
    pub fn set_policy(&mut self, cfg: &Config) {
        self.interval = Duration::from_secs(u64::from(cfg.autosave_interval));
        self.every_changes = cfg
            .autosave_on_changes
            .then_some(u64::from(cfg.autosave_interval.max(1)));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal and the snapshot beside it are in another directory than the snapshot
    /// the autosave policy writes (a journal in RAM, a snapshot on flash).
    fn split(&self) -> bool {
        self.journal.is_some() && self.jsnap != self.path
    }

    /// Loads the snapshot (and replays the journal) into `broker`. A damaged file is
    /// reported, moved aside and what could be read is kept; a missing file is a fresh
    /// start. With a journal, a fresh snapshot and an empty journal are written at once.
    pub fn load(&mut self, broker: &mut Broker, now: Instant) {
        remove_stale_temps(&self.path);
        if self.split() {
            remove_stale_temps(&self.jsnap);
        }
        if let Some(j) = &self.journal {
            remove_stale_temps(j.path());
            remove_stale_temps(j.next_path());
        }
        // After a crash the journal's side is the newer; after a reboot (RAM emptied)
        // only the autosaved snapshot is left.
        let from = match &self.journal {
            Some(j) if self.split() && (self.jsnap.exists() || j.path().exists()) => {
                self.jsnap.clone()
            }
            _ => self.path.clone(),
        };
        if let Some(dir) = self.jsnap.parent().filter(|_| self.split()) {
            if let Err(e) = fs::create_dir_all(dir) {
                error!(
                    "Error: unable to create journal directory {}: {e}",
                    dir.display()
                );
            }
        }
        let (img, damaged, incoming) = self.read_snapshot(&from, now);
        match &mut self.journal {
            Some(j) => {
                let gen = img.gen;
                let (img, top, found) = j.recover(img, now);
                let (r, s) = (img.retained.len(), img.sessions.len());
                broker.enable_journal(top);
                let expired = broker.restore(img, now);
                let s = s.saturating_sub(expired);
                if r + s > 0 {
                    info!(
                        "Restored {r} retained messages and {s} sessions from {} and {}.",
                        from.display(),
                        j.path().display()
                    );
                }
                mosquitto_db::publish_incoming(broker, incoming, now);
                self.saved_changes = broker.changes;
                let base = fs::metadata(&self.jsnap).map_or(0, |m| m.len());
                // What was read of a damaged file lives only in memory (and a snapshot
                // from flash is not beside the journal): a fresh snapshot keeps it.
                let compact = matches!(found, Recovered::Damaged | Recovered::Chained)
                    || damaged
                    || expired > 0
                    || from != self.jsnap;
                let started = match found {
                    _ if compact => Ok(()),
                    Recovered::Whole(_, size) => j.start(broker, gen, base, Some(size)),
                    _ => j.start(broker, gen, base, None),
                };
                if let Err(e) = started {
                    warn!("Unable to start journal {}: {e}", j.path().display());
                }
                if compact {
                    self.compact(broker, now);
                }
                if self.split() && damaged {
                    self.saved_changes = broker.changes.wrapping_sub(1);
                    self.maybe_save(broker, now, true);
                }
            }
            None => {
                let (r, s) = (img.retained.len(), img.sessions.len());
                let expired = broker.restore(img, now);
                let s = s.saturating_sub(expired);
                if !damaged && r + s > 0 {
                    info!(
                        "Restored {r} retained messages and {s} sessions from {}.",
                        from.display()
                    );
                }
                mosquitto_db::publish_incoming(broker, incoming, now);
                self.saved_changes = broker.changes;
                if damaged || expired > 0 {
                    // What was recovered lives only in memory and in the file moved aside
                    // (or the file still holds sessions that expired): write it out now,
                    // so the next start finds it.
                    self.saved_changes = broker.changes.wrapping_sub(1);
                    self.maybe_save(broker, now, true);
                }
            }
        }
    }

    /// Reads and decodes a snapshot; a damaged one is moved aside. Whether it was damaged
    /// (or converted from Mosquitto's format: either way a fresh snapshot is due), and the
    /// messages a converted file leaves to publish.
    fn read_snapshot(&self, path: &Path, now: Instant) -> (Image, bool, Vec<Rc<Message>>) {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match mosquitto_db::migrate_beside(path, now) {
                    Some((img, incoming)) => (img, true, incoming),
                    None => (Image::default(), false, Vec::new()),
                };
            }
            Err(e) => {
                error!(
                    "Error: unable to read persistence file {}: {e}",
                    path.display()
                );
                return (Image::default(), false, Vec::new());
            }
        };
        if mosquitto_db::is_mosquitto_db(&data) {
            return match mosquitto_db::migrate_file(path, &data, now, None) {
                Some((img, incoming)) => (img, true, incoming),
                None => (Image::default(), false, Vec::new()),
            };
        }
        let (img, damage) = decode(&data, now);
        let Some(why) = damage else {
            return (img, false, Vec::new());
        };
        let (r, s) = (img.retained.len(), img.sessions.len());
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rmqtt.db".to_owned());
        let aside = path.with_file_name(format!("{name}.corrupt-{stamp}"));
        match fs::rename(path, &aside) {
            Ok(()) => error!(
                "Error: persistence file {} is damaged ({why}); moved to {}; recovered {r} retained messages and {s} sessions.",
                path.display(),
                aside.display()
            ),
            Err(e) => error!(
                "Error: persistence file {} is damaged ({why}) and could not be moved aside: {e}",
                path.display()
            ),
        }
        (img, true, Vec::new())
    }

    /// A fresh snapshot beside the journal (crash-safe, as every snapshot) and a new,
    /// empty journal of the next generation, at once (at start and at shutdown; a
    /// compaction in progress is given up). A crash between the two leaves the new
    /// snapshot and the old journal, which is then ignored (its generation is older).
    fn compact(&mut self, broker: &mut Broker, now: Instant) {
        let Some(j) = &mut self.journal else {
            return;
        };
        if let Some(job) = self.job.take() {
            job.abort();
        }
        self.promoting = None;
        self.settle_at = None;
        let gen = j.gen().wrapping_add(1);
        let data = encode(broker, now, gen);
        if let Err(e) = write_atomically(&self.jsnap, &data) {
            warn!(
                "Unable to save persistence file {}: {e}",
                self.jsnap.display()
            );
            return;
        }
        self.writes += 1;
        self.bytes += data.len() as u64;
        if let Err(e) = j.start(broker, gen, data.len() as u64, None) {
            warn!("Unable to start journal {}: {e}", j.path().display());
        }
        if self.jsnap == self.path {
            self.saved_changes = broker.changes;
            self.last_save = now;
        }
    }

    /// Starts a compaction written in slices ([`compact`]); right after the journal's
    /// flush. Nothing if one is running, or if the journal of an earlier one is still in
    /// `.next` (its snapshot failed: only [`Store::compact`] may end that).
    fn begin_compaction(&mut self, broker: &mut Broker, now: Instant) {
        let Some(j) = &mut self.journal else {
            return;
        };
        if self.job.is_some() || self.promoting.is_some() || j.chained {
            return;
        }
        let gen = j.gen().wrapping_add(1);
        let job = match Job::new(&self.jsnap, broker, gen) {
            Ok(job) => job,
            Err(e) => {
                warn!(
                    "Unable to save persistence file {}: {e}",
                    self.jsnap.display()
                );
                return;
            }
        };
        if let Err(e) = j.start_next(broker, gen) {
            warn!("Unable to start journal {}: {e}", j.next_path().display());
            job.abort();
            return;
        }
        self.job = Some(job);
        if self.jsnap == self.path {
            self.saved_changes = broker.changes;
            self.last_save = now;
        }
    }

    /// Once per loop pass, after its output was written: the next slice of a compaction
    /// in progress, when one is due (see [`compact::PACE`]); `clock` reads the time, so that
    /// a slice ends within [`compact::SLICE_TIME`]. Its end comes in [`Store::maybe_save`],
    /// after a journal flush.
    pub fn step(&mut self, broker: &Broker, now: Instant, clock: &dyn Fn() -> Instant) {
        if now < self.next_step || self.step_due().is_none() {
            return;
        }
        self.next_step = now + self.pace;
        compact::free_slice(&mut self.freeing);
        let Some(job) = &mut self.job else {
            return;
        };
        if job.ended {
            return;
        }
        let r = if job.done() {
            // A small snapshot is synced at once: its sync costs little.
            let settle = if job.written < compact::SETTLE_FROM {
                Duration::ZERO
            } else {
                self.settle
            };
            self.settle_at = Some(now + settle);
            job.end(broker, now)
        } else {
            let until = clock() + compact::SLICE_TIME;
            job.step(broker, now, self.slice, Some((clock, until)))
        };
        if let Err(e) = r {
            warn!(
                "Unable to save persistence file {}: {e}",
                self.jsnap.display()
            );
            if let Some(job) = self.job.take() {
                job.abort();
            }
        }
    }

    /// When the next slice of a compaction, or of freeing a replaced file, is due; `None`
    /// when there is none to do.
    fn step_due(&self) -> Option<Instant> {
        let work = self.job.as_ref().is_some_and(|j| !j.ended)
            || self.promoting.is_some()
            || !self.freeing.is_empty();
        work.then_some(self.next_step)
    }

    /// Whether a compaction has slices left to write, or replaced files to free.
    pub fn busy(&self) -> bool {
        self.step_due().is_some()
    }

    /// Whether a compaction is in progress, its snapshot or journal not in place yet.
    pub fn compacting(&self) -> bool {
        self.job.is_some() || self.promoting.is_some()
    }

    /// Puts a finished compaction's snapshot in place and its journal after it, one
    /// blocking call per pass (see [`Job::finish_step`] and [`Journal::promote`]). A
    /// failure falls back to [`Store::compact`].
    fn finish_compaction(&mut self, broker: &mut Broker, now: Instant) {
        if let Some((stage, size)) = self.promoting {
            let Some(j) = &mut self.journal else {
                self.promoting = None;
                return;
            };
            if stage == 1 {
                j.promoted(size);
                self.promoting = None;
                return;
            }
            match j.promote() {
                Ok(old) => {
                    self.freeing.extend(old);
                    self.promoting = Some((1, size));
                }
                Err(e) => {
                    warn!("Unable to rename journal {}: {e}", j.next_path().display());
                    self.compact(broker, now);
                }
            }
            return;
        }
        let Some(job) = &mut self.job else {
            return;
        };
        match job.finish_step(broker, now) {
            Ok((done, old)) => {
                self.freeing.extend(old);
                if done {
                    let size = job.written;
                    self.job = None;
                    self.settle_at = None;
                    self.writes += 1;
                    self.bytes += size;
                    self.promoting = Some((0, size));
                }
            }
            Err(e) => {
                warn!(
                    "Unable to save persistence file {}: {e}",
                    self.jsnap.display()
                );
                self.compact(broker, now);
            }
        }
    }

    /// Bytes written by the journal (snapshots are counted in `bytes`).
    pub fn journal_bytes(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.bytes)
    }

    /// When an interval save, or the next slice of a compaction, is due; `None` while
    /// nothing changed and no compaction runs (an idle broker never wakes up to save).
    pub fn next_deadline(&self, changes: u64) -> Option<Instant> {
        let settle = self.settle_at.filter(|_| self.job.is_some());
        let settle = match (settle, self.step_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if changes == self.saved_changes || self.every_changes.is_some() || self.interval.is_zero()
        {
            return settle;
        }
        let save = self.last_save + self.interval;
        Some(settle.map_or(save, |t| t.min(save)))
    }

    /// Once per loop pass, before its acknowledgements go out: the journal's records are
    /// written and synced (and compacted when it has outgrown the state, or on `force`);
    /// then the snapshot is saved if the policy says so (or `force`, for shutdown and
    /// SIGUSR1) and something changed since the last save.
    pub fn maybe_save(&mut self, broker: &mut Broker, now: Instant, force: bool) {
        if let Some(j) = &mut self.journal {
            if let Err(e) = j.flush(broker, now) {
                warn!("Unable to write journal {}: {e}", j.path().display());
            }
            let wants = j.wants_compaction();
            if force {
                self.compact(broker, now);
            } else if self.promoting.is_some()
                || (self.job.as_ref().is_some_and(|j| j.ended)
                    && self.settle_at.is_none_or(|t| now >= t))
            {
                // One blocking call per pass, and no sooner than a slice would run.
                if now >= self.next_step {
                    self.next_step = now + self.pace;
                    self.finish_compaction(broker, now);
                }
            } else if wants {
                self.begin_compaction(broker, now);
            }
        }
        let changes = broker.changes;
        if changes == self.saved_changes {
            return;
        }
        let due = force
            || match self.every_changes {
                Some(n) => changes - self.saved_changes >= n,
                None => !self.interval.is_zero() && now >= self.last_save + self.interval,
            };
        if !due {
            return;
        }
        if self.journal.is_some() && !self.split() {
            // The snapshot beside the journal is the one the policy asks for.
            self.begin_compaction(broker, now);
            return;
        }
        self.save_snapshot(broker, now);
    }

    /// Group commit in the middle of a pass: the journal records of what the reads just
    /// made changed, written and synced before their acknowledgements are flushed. Without
    /// a journal, what [`Store::maybe_save`] does (`autosave_on_changes`).
    pub fn commit(&mut self, broker: &mut Broker, now: Instant) {
        match &mut self.journal {
            Some(j) => {
                if let Err(e) = j.flush(broker, now) {
                    warn!("Unable to write journal {}: {e}", j.path().display());
                }
            }
            None => self.maybe_save(broker, now, false),
        }
    }

    /// SIGUSR1: with a journal, a compaction starts (in slices) and, when the autosaved
    /// snapshot is elsewhere (on flash), that one is saved at once; without, a snapshot.
    pub fn save_now(&mut self, broker: &mut Broker, now: Instant) {
        let Some(j) = &mut self.journal else {
            self.maybe_save(broker, now, true);
            return;
        };
        if let Err(e) = j.flush(broker, now) {
            warn!("Unable to write journal {}: {e}", j.path().display());
        }
        self.begin_compaction(broker, now);
        if self.split() && broker.changes != self.saved_changes {
            self.save_snapshot(broker, now);
        }
    }

    /// Saves the whole snapshot the autosave policy writes.
    fn save_snapshot(&mut self, broker: &mut Broker, now: Instant) {
        let changes = broker.changes;
        let gen = self.journal.as_ref().map_or(0, Journal::gen);
        let data = encode(broker, now, gen);
        match write_atomically(&self.path, &data) {
            Ok(()) => {
                self.writes += 1;
                self.bytes += data.len() as u64;
                self.saved_changes = changes;
                self.last_save = now;
            }
            Err(e) => {
                // Keep going; the next pass tries again.
                warn!(
                    "Unable to save persistence file {}: {e}",
                    self.path.display()
                );
                self.last_save = now;
            }
        }
    }
}

/// Writes `data` to `path` so that a crash leaves either the old or the new file.
///
/// The temporary file sits beside `path` under a name with 64 random bits, and is created
/// with `O_EXCL | O_NOFOLLOW` and mode 0600: a symlink or hard link planted in the
/// directory is never written through, and queued payloads are not readable by other
/// users whatever the umask. A save that fails removes its temporary file.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let (tmp, mut f) = create_temp(path)?;
    let written = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    drop(f);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Removes temporary files a save interrupted by a crash left beside `path`
/// (`NAME.<16 hex digits>.tmp`). Symlinks are removed, never followed.
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let stale = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if stale {
            match fs::remove_file(e.path()) {
                Ok(()) => info!(
                    "Removed {} left by an interrupted save.",
                    e.path().display()
                ),
                Err(err) => warn!("Unable to remove {}: {err}", e.path().display()),
            }
        }
    }
}

/// A new file beside `path` named `NAME.XXXXXXXXXXXXXXXX.tmp` (random hex), created
/// exclusively, not through a symlink, mode 0600.
pub(super) fn create_temp(path: &Path) -> std::io::Result<(PathBuf, File)> {
    use ring::rand::{SecureRandom, SystemRandom};
    use std::os::unix::fs::OpenOptionsExt;
    let rng = SystemRandom::new();
    let name = path
        .file_name()
        .map_or_else(|| "rmqtt.db".into(), |n| n.to_string_lossy().into_owned());
    let mut last = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
    for _ in 0..8 {
        let mut r = [0u8; 8];
        rng.fill(&mut r)
            .map_err(|_| std::io::Error::other("no randomness for a temporary file name"))?;
        let tmp = path.with_file_name(format!("{name}.{:016x}.tmp", u64::from_be_bytes(r)));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::core::Limits;

    fn scratch_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rmqtt-persist-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn snapshot_is_private_and_temp_names_are_unpredictable() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = scratch_dir("mode");
        let db = d.join("rmqtt.db");
        // Planted where the old code wrote: a symlink to a file that must stay untouched.
        let victim = d.join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("rmqtt.new")).unwrap();
        // A hard link to the live file must not be truncated either.
        fs::write(&db, b"old").unwrap();
        fs::hard_link(&db, d.join("link")).unwrap();
        write_atomically(&db, b"new contents").unwrap();
        assert_eq!(fs::read(&db).unwrap(), b"new contents");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(d.join("link")).unwrap(), b"old");
        let meta = fs::metadata(&db).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.nlink(), 1);
        assert_eq!(entries(&d), ["link", "rmqtt.db", "rmqtt.new", "victim"]);
        let (a, _) = create_temp(&db).unwrap();
        let (b, _) = create_temp(&db).unwrap();
        assert_ne!(a, b);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn stale_temp_files_are_removed_and_nothing_else() {
        let d = scratch_dir("stale");
        let db = d.join("rmqtt.db");
        for f in [
            "rmqtt.db.0123456789abcdef.tmp",
            "rmqtt.db.short.tmp",
            "other.db.0123456789abcdef.tmp",
            "rmqtt.db",
        ] {
            fs::write(d.join(f), b"x").unwrap();
        }
        let victim = d.join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("rmqtt.db.fedcba9876543210.tmp")).unwrap();
        remove_stale_temps(&db);
        assert_eq!(
            entries(&d),
            [
                "other.db.0123456789abcdef.tmp",
                "rmqtt.db",
                "rmqtt.db.short.tmp",
                "victim"
            ]
        );
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn failed_save_leaves_no_temp_file() {
        let d = scratch_dir("fail");
        // Renaming a file over a non-empty directory fails after the data was written.
        let db = d.join("rmqtt.db");
        fs::create_dir_all(db.join("occupied")).unwrap();
        assert!(write_atomically(&db, b"data").is_err());
        assert_eq!(entries(&d), ["rmqtt.db"]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn crc_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn truncation_and_corruption_never_panic_and_keep_a_prefix() {
        let mut b = Broker::new(Limits::default(), 1);
        let now = Instant::now();
        b.publish_internal("r/1", b"one"[..].into(), true, now);
        b.publish_internal("r/2", b"two"[..].into(), true, now);
        let data = encode(&b, now, 0);
        let (img, damage) = decode(&data, now);
        assert!(damage.is_none());
        assert_eq!(img.retained.len(), 2);
        for n in 0..data.len() {
            let (_, damage) = decode(&data[..n], now);
            assert!(damage.is_some(), "prefix of {n} bytes is not whole");
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x5a;
            let (img, damage) = decode(&bad, now);
            assert!(damage.is_some(), "flipped byte {i} detected");
            assert!(img.retained.len() <= 2);
        }
        let mut v4 = data.clone();
        v4[7] = 4;
        assert_eq!(
            decode(&v4, now).1.as_deref(),
            Some("unknown format version")
        );
    }
}
