//! Mosquitto 2.0's persistence file (`mosquitto.db`, format version 6) read and converted into
//! a snapshot [`Image`]: retained messages, persistent sessions with their subscriptions,
//! queued and in-flight outgoing messages, and incoming QoS 2 messages awaiting PUBREL.
//!
//! The file is a 15-byte magic, a 4-byte CRC field (always 0), a big-endian format version,
//! then chunks: a big-endian type and length, then the chunk. Mosquitto writes each chunk's
//! fixed part as a C struct, so integers it converts are big-endian, while the store ids and
//! the wall-clock times (`dbid_t`, `time_t`) are in the writer's byte order, and struct
//! padding depends on the writer's ABI; both are worked out from the file itself (the
//! configuration chunk's last store id; each chunk's length).
//!
//! [`parse`] is pure decoding into borrowed views and never panics on file contents;
//! [`convert`] takes the wall-clock time as an argument.

use super::message::Message;
use super::persist::Image;
use super::session::{Expiry, Inflight, OutState, Pending, Session};
use crate::protocol::codec::Reader;
use crate::protocol::properties::Owner;
use crate::protocol::{Properties, QoS, SubOptions};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first 15 bytes of every Mosquitto persistence file.
pub const MAGIC: &[u8; 15] = b"\x00\xB5\x00mosquitto db";
/// The format version Mosquitto 2.0 writes.
pub const VERSION: u32 = 6;

const CHUNK_CFG: u32 = 1;
const CHUNK_BASE_MSG: u32 = 2;
const CHUNK_CLIENT_MSG: u32 = 3;
const CHUNK_RETAIN: u32 = 4;
const CHUNK_SUB: u32 = 5;
const CHUNK_CLIENT: u32 = 6;

/// Fixed parts of the chunks (`PF_*` structs), as laid out by a 64-bit or a 32-bit writer.
const BASE_MSG_FIXED: usize = 32;
const CLIENT_MSG_FIXED: usize = 16;
const SUB_FIXED: usize = 12;
const RETAIN_FIXED: usize = 8;
/// `PF_client` is 24 bytes where `int64_t` is 8-aligned (x86-64, ARM, MIPS), 20 on i386.
const CLIENT_FIXED: [usize; 2] = [24, 20];
/// A QoS 1/2 payload larger than this is not a message Mosquitto could have stored.
const MAX_PAYLOAD: usize = 268_435_455;

/// Mosquitto's `mosquitto_msg_state` values that matter here.
const MS_PUBLISH_QOS0: u8 = 1;
const MS_PUBLISH_QOS1: u8 = 2;
const MS_WAIT_FOR_PUBACK: u8 = 3;
const MS_PUBLISH_QOS2: u8 = 4;
const MS_WAIT_FOR_PUBREC: u8 = 5;
const MS_RESEND_PUBREL: u8 = 6;
const MS_WAIT_FOR_PUBREL: u8 = 7;
const MS_WAIT_FOR_PUBCOMP: u8 = 9;
const MS_SEND_PUBREC: u8 = 10;
const MS_QUEUED: u8 = 11;
/// `mosq_md_in`: a message the client sent to the broker.
const DIRECTION_IN: u8 = 0;

/// MQTT 5 property: subscription identifier (variable byte integer).
const PROP_SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;

/// Whether `data` starts like a Mosquitto persistence file (any version).
pub fn is_mosquitto_db(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// A stored message (`DB_CHUNK_MSG_STORE`).
#[derive(Debug, Clone, PartialEq)]
pub struct BaseMsg<'a> {
    /// The store id, as the 8 bytes the writer wrote.
    pub id: [u8; 8],
    /// Wall-clock seconds when it expires; 0: never.
    pub expiry_time: i64,
    pub topic: &'a [u8],
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 properties: a variable byte integer length, then the properties.
    pub properties: &'a [u8],
}

/// A persistent session (`DB_CHUNK_CLIENT`).
#[derive(Debug, Clone, PartialEq)]
pub struct Client<'a> {
    pub id: &'a [u8],
    pub username: Option<&'a [u8]>,
    /// Wall-clock seconds when the session expires; 0: not set.
    pub session_expiry_time: i64,
    /// Seconds; `u32::MAX`: never (MQTT 3.x with clean session false).
    pub session_expiry_interval: u32,
}

/// A message in a session's queue or in flight (`DB_CHUNK_CLIENT_MSG`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMsg<'a> {
    pub client: &'a [u8],
    pub store: [u8; 8],
    pub mid: u16,
    pub qos: u8,
    pub state: u8,
    pub retain: bool,
    pub dup: bool,
    /// 0: from the client (incoming), 1: to it.
    pub direction: u8,
    pub subscription_id: Option<u32>,
}

/// A subscription (`DB_CHUNK_SUB`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sub<'a> {
    pub client: &'a [u8],
    pub topic: &'a [u8],
    pub qos: u8,
    /// Bit 2: no local; bit 3: retain as published.
    pub options: u8,
    pub identifier: u32,
}

/// The chunks of a Mosquitto persistence file, in file order per kind.
#[derive(Debug, Default)]
pub struct Db<'a> {
    pub version: u32,
    /// The writer stored its native integers big-endian.
    pub big_endian: bool,
    pub messages: Vec<BaseMsg<'a>>,
    pub clients: Vec<Client<'a>>,
    pub client_msgs: Vec<ClientMsg<'a>>,
    pub subs: Vec<Sub<'a>>,
    pub retains: Vec<[u8; 8]>,
    /// Chunks of a type this reader does not know, skipped.
    pub skipped: u32,
}

/// Reads the chunks of a Mosquitto 2.0 persistence file. `Err`: not one, or a version this
/// reader does not convert. `Ok` with a damage description: the file ends inside a chunk or
/// a chunk is inconsistent; everything before it was read.
pub fn parse(data: &[u8]) -> Result<(Db<'_>, Option<String>), String> {
    let Some(rest) = data.strip_prefix(MAGIC.as_slice()) else {
        return Err("not a Mosquitto persistence file".to_owned());
    };
    let mut r = Reader::new(rest);
    let (Ok(_crc), Ok(version)) = (r.u32(), r.u32()) else {
        return Err("Mosquitto persistence file without a header".to_owned());
    };
    if version != VERSION {
        return Err(format!(
            "Mosquitto persistence format version {version} (only version {VERSION}, Mosquitto 2.0, is converted)"
        ));
    }
    let mut db = Db {
        version,
        ..Db::default()
    };
    let mut n = 0u32;
    while !r.is_empty() {
        n += 1;
        let (Ok(kind), Ok(len)) = (r.u32(), r.u32()) else {
            return Ok((db, Some(format!("truncated in the header of chunk {n}"))));
        };
        let Ok(body) = r.take(len as usize) else {
            return Ok((db, Some(format!("truncated in chunk {n}"))));
        };
        let read = match kind {
            CHUNK_CFG => cfg(body, &mut db),
            CHUNK_BASE_MSG => base_msg(body, db.big_endian).map(|m| db.messages.push(m)),
            CHUNK_CLIENT => client(body, db.big_endian).map(|c| db.clients.push(c)),
            CHUNK_CLIENT_MSG => client_msg(body).map(|m| db.client_msgs.push(m)),
            CHUNK_SUB => sub(body).map(|s| db.subs.push(s)),
            CHUNK_RETAIN => id8(body).map(|id| db.retains.push(id)),
            _ => {
                db.skipped += 1;
                Some(())
            }
        };
        if read.is_none() {
            return Ok((db, Some(format!("chunk {n} (type {kind}) is malformed"))));
        }
    }
    Ok((db, None))
}

fn id8(b: &[u8]) -> Option<[u8; 8]> {
    b.get(..RETAIN_FIXED)?.try_into().ok()
}

fn i64_in(b: &[u8], big_endian: bool) -> Option<i64> {
    let a: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(if big_endian {
        i64::from_be_bytes(a)
    } else {
        i64::from_le_bytes(a)
    })
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let a: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(a))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let a: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(a))
}

/// `PF_cfg`: last store id (native), shutdown flag, id size. The last store id is a small
/// counter, so whichever byte order reads it smaller is the writer's.
fn cfg(b: &[u8], db: &mut Db<'_>) -> Option<()> {
    let a: [u8; 8] = b.get(..8)?.try_into().ok()?;
    if *b.get(9)? != 8 {
        return None; // dbid_size: Mosquitto 2.0 always writes 8
    }
    db.big_endian = if a == [0; 8] {
        cfg!(target_endian = "big")
    } else {
        u64::from_be_bytes(a) < u64::from_le_bytes(a)
    };
    Some(())
}

fn base_msg(b: &[u8], big_endian: bool) -> Option<BaseMsg<'_>> {
    let id = id8(b)?;
    let expiry_time = i64_in(b.get(8..)?, big_endian)?;
    let payload_len = be32(b, 16)? as usize;
    if payload_len > MAX_PAYLOAD {
        return None;
    }
    let source_id_len = usize::from(be16(b, 22)?);
    let source_user_len = usize::from(be16(b, 24)?);
    let topic_len = usize::from(be16(b, 26)?);
    let qos = *b.get(30)?;
    let retain = *b.get(31)? != 0;
    let rest = b.get(BASE_MSG_FIXED..)?;
    let rest = rest.get(source_id_len + source_user_len..)?;
    let (topic, rest) = rest.split_at_checked(topic_len)?;
    let (payload, properties) = rest.split_at_checked(payload_len)?;
    if qos > 2 {
        return None;
    }
    Some(BaseMsg {
        id,
        expiry_time,
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

fn client(b: &[u8], big_endian: bool) -> Option<Client<'_>> {
    let session_expiry_time = i64_in(b, big_endian)?;
    let session_expiry_interval = be32(b, 8)?;
    let id_len = usize::from(be16(b, 14)?);
    let user_len = usize::from(be16(b, 18)?);
    // The chunk is exactly the fixed part and the two strings; that tells the padding.
    let fixed = b.len().checked_sub(id_len + user_len)?;
    if !CLIENT_FIXED.contains(&fixed) {
        return None;
    }
    let rest = b.get(fixed..)?;
    let (id, user) = rest.split_at_checked(id_len)?;
    Some(Client {
        id,
        username: (user_len > 0).then_some(user),
        session_expiry_time,
        session_expiry_interval,
    })
}

fn client_msg(b: &[u8]) -> Option<ClientMsg<'_>> {
    let store = id8(b)?;
    let mid = be16(b, 8)?;
    let id_len = usize::from(be16(b, 10)?);
    let qos = *b.get(12)?;
    let state = *b.get(13)?;
    let retain_dup = *b.get(14)?;
    let direction = *b.get(15)?;
    let rest = b.get(CLIENT_MSG_FIXED..)?;
    let (client, props) = rest.split_at_checked(id_len)?;
    Some(ClientMsg {
        client,
        store,
        mid,
        qos,
        state,
        retain: retain_dup >> 4 != 0,
        dup: retain_dup & 0x0f != 0,
        direction,
        subscription_id: subscription_id(props)?,
    })
}

/// The subscription identifier in a client message's property blob (length, properties);
/// `None` when the blob is malformed.
fn subscription_id(blob: &[u8]) -> Option<Option<u32>> {
    if blob.is_empty() {
        return Some(None);
    }
    let mut r = Reader::new(blob);
    let len = r.varint().ok()? as usize;
    let mut p = Reader::new(r.take(len).ok()?);
    let mut id = None;
    while !p.is_empty() {
        match p.u8().ok()? {
            PROP_SUBSCRIPTION_IDENTIFIER => id = Some(p.varint().ok()?),
            _ => return None, // Mosquitto writes nothing else here
        }
    }
    Some(id)
}

fn sub(b: &[u8]) -> Option<Sub<'_>> {
    let identifier = be32(b, 0)?;
    let id_len = usize::from(be16(b, 4)?);
    let topic_len = usize::from(be16(b, 6)?);
    let qos = *b.get(8)?;
    let options = *b.get(9)?;
    let rest = b.get(SUB_FIXED..)?;
    let (client, rest) = rest.split_at_checked(id_len)?;
    let topic = rest.get(..topic_len)?;
    Some(Sub {
        client,
        topic,
        qos,
        options,
        identifier,
    })
}

/// What a conversion produced and what it had to leave out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub retained: usize,
    pub sessions: usize,
    pub subscriptions: usize,
    pub queued: usize,
    pub inflight: usize,
    /// Incoming QoS 2 messages the client had sent but not yet released (PUBREL).
    pub incoming: usize,
    /// Messages already expired, sessions already expired, entries naming a client or a
    /// message the file lacks, strings that are not UTF-8.
    pub dropped: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} retained messages, {} sessions with {} subscriptions, {} queued and {} in-flight messages, {} incoming QoS 2 messages",
            self.retained, self.sessions, self.subscriptions, self.queued, self.inflight, self.incoming
        )?;
        if self.dropped > 0 {
            write!(f, "; {} expired or unusable entries left out", self.dropped)?;
        }
        Ok(())
    }
}

/// A converted file: the image to restore, and the incoming QoS 2 messages to publish once
/// it is restored (Mosquitto delivers them on PUBREL, which never came; the session keeps
/// their packet ids, so a PUBLISH sent again is not delivered twice).
#[derive(Default)]
pub struct Migrated {
    pub image: Image,
    pub incoming: Vec<Rc<Message>>,
    pub counts: Counts,
}

fn text(b: &[u8]) -> Option<&str> {
    crate::protocol::codec::utf8(b).ok()
}

/// Seconds from `wall_now` until `at` (wall-clock seconds); `None` when `at` has passed.
fn left(at: i64, wall_now: u64) -> Option<u64> {
    let now = i64::try_from(wall_now).unwrap_or(i64::MAX);
    u64::try_from(at.saturating_sub(now))
        .ok()
        .filter(|&s| s > 0)
}

fn message(m: &BaseMsg<'_>, wall_now: u64, now: Instant) -> Option<Message> {
    let expires = if m.expiry_time == 0 {
        None
    } else {
        Some(now + Duration::from_secs(left(m.expiry_time, wall_now)?))
    };
    let topic = text(m.topic)?;
    let properties = if m.properties.is_empty() {
        None
    } else {
        let p = Properties::decode(&mut Reader::new(m.properties), Owner::Publish).ok()?;
        (!p.is_empty()).then(|| Box::new(p))
    };
    Some(Message {
        topic: Arc::from(topic),
        payload: m.payload.into(),
        qos: QoS::from_u8(m.qos)?,
        retain: m.retain,
        properties,
        expires,
    })
}

/// Turns the parsed file into rmqtt's image; `wall_now` is the wall-clock time in seconds
/// since the epoch (Mosquitto stores absolute expiry times), `now` the monotonic time.
pub fn convert(db: &Db<'_>, wall_now: u64, now: Instant) -> Migrated {
    let mut out = Migrated::default();
    let mut msgs: HashMap<[u8; 8], Rc<Message>> = HashMap::new();
    for m in &db.messages {
        match message(m, wall_now, now) {
            Some(msg) => {
                msgs.insert(m.id, Rc::new(msg));
            }
            None => out.counts.dropped += 1,
        }
    }
    for id in &db.retains {
        match msgs.get(id) {
            Some(m) if m.retain => out.image.retained.push(m.clone()),
            Some(m) => out.image.retained.push(Rc::new(Message {
                topic: m.topic.clone(),
                payload: m.payload.clone(),
                qos: m.qos,
                retain: true,
                properties: m.properties.clone(),
                expires: m.expires,
            })),
            None => out.counts.dropped += 1,
        }
    }
    out.counts.retained = out.image.retained.len();
    let mut by_id: HashMap<&[u8], usize> = HashMap::new();
    for c in &db.clients {
        let expiry = match c.session_expiry_interval {
            u32::MAX => Some(Expiry::Never),
            0 => None, // ends at disconnect: nothing to keep
            n if c.session_expiry_time == 0 => Some(Expiry::After(n)),
            n => left(c.session_expiry_time, wall_now)
                .map(|s| Expiry::After(u32::try_from(s).unwrap_or(n).min(n))),
        };
        let (Some(expiry), Some(id)) = (expiry, text(c.id)) else {
            out.counts.dropped += 1;
            continue;
        };
        if id.is_empty() || by_id.contains_key(c.id) {
            out.counts.dropped += 1;
            continue;
        }
        let mut s = Session::new(Arc::from(id), 0, expiry);
        s.username = c.username.and_then(text).map(Arc::from);
        by_id.insert(c.id, out.image.sessions.len());
        out.image.sessions.push(s);
    }
    for sub in &db.subs {
        let (Some(&i), Some(filter), Some(q)) = (
            by_id.get(sub.client),
            text(sub.topic),
            QoS::from_u8(sub.qos),
        ) else {
            out.counts.dropped += 1;
            continue;
        };
        let Some(s) = out.image.sessions.get_mut(i) else {
            continue;
        };
        if filter.is_empty() || s.subscription(filter).is_some() {
            out.counts.dropped += 1;
            continue;
        }
        let opts = SubOptions {
            qos: q,
            no_local: sub.options & 4 != 0,
            retain_as_published: sub.options & 8 != 0,
            retain_handling: 0,
        };
        s.add_sub(filter, opts, Some(sub.identifier));
        out.counts.subscriptions += 1;
    }
    for cm in &db.client_msgs {
        let (Some(&i), Some(msg), Some(q)) = (
            by_id.get(cm.client),
            msgs.get(&cm.store),
            QoS::from_u8(cm.qos),
        ) else {
            out.counts.dropped += 1;
            continue;
        };
        let Some(s) = out.image.sessions.get_mut(i) else {
            continue;
        };
        if cm.direction == DIRECTION_IN {
            match cm.state {
                MS_WAIT_FOR_PUBREL | MS_SEND_PUBREC if q == QoS::ExactlyOnce => {
                    if s.flow_mut().inbound_qos2.insert(cm.mid) {
                        out.incoming.push(msg.clone());
                        out.counts.incoming += 1;
                    }
                }
                _ => out.counts.dropped += 1,
            }
            continue;
        }
        let d = Pending::new(
            msg.clone(),
            q,
            cm.retain,
            cm.subscription_id.into_iter().collect(),
            None,
        );
        let state = match cm.state {
            MS_WAIT_FOR_PUBACK if q == QoS::AtLeastOnce => Some(OutState::AwaitAck),
            MS_WAIT_FOR_PUBREC if q == QoS::ExactlyOnce => Some(OutState::AwaitRec),
            MS_RESEND_PUBREL | MS_WAIT_FOR_PUBCOMP if q == QoS::ExactlyOnce => {
                Some(OutState::AwaitComp)
            }
            _ => None,
        };
        let taken = cm.mid != 0 && s.flow().inflight.iter().any(|f| f.pid == cm.mid);
        match state {
            Some(state) if cm.mid != 0 && !taken => {
                s.flow_mut().restore_inflight(Inflight {
                    pid: cm.mid,
                    d,
                    state,
                });
                out.counts.inflight += 1;
            }
            Some(OutState::AwaitComp) => out.counts.dropped += 1,
            _ if matches!(
                cm.state,
                MS_PUBLISH_QOS0
                    | MS_PUBLISH_QOS1
                    | MS_PUBLISH_QOS2
                    | MS_QUEUED
                    | MS_WAIT_FOR_PUBACK
                    | MS_WAIT_FOR_PUBREC
            ) =>
            {
                // Not sent yet (or its packet id clashes): sent afresh from the queue.
                s.push_pending(d);
                out.counts.queued += 1;
            }
            _ => out.counts.dropped += 1,
        }
    }
    out.counts.sessions = out.image.sessions.len();
    out
}

/// For `--test-config`: what the start would convert, as one `name: value` line; `None`
/// when persistence is off or there is no Mosquitto file to convert.
pub fn preview(cfg: &crate::config::Config) -> Option<String> {
    if !cfg.persistence {
        return None;
    }
    let dir = cfg
        .persistence_location
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let ours = dir.join(&cfg.persistence_file);
    let (path, beside) = match std::fs::symlink_metadata(&ours) {
        Ok(_) => (ours, false),
        Err(_) => (dir.join(DEFAULT_FILE), true),
    };
    let data = std::fs::read(&path).ok()?;
    if !is_mosquitto_db(&data) {
        return None;
    }
    let what = match parse(&data) {
        Ok((db, damage)) => {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let counts = convert(&db, wall, Instant::now()).counts;
            let damage = damage.map_or(String::new(), |d| format!(" (damaged: {d})"));
            let after = if beside {
                "left in place".to_owned()
            } else {
                format!("kept as {}", aside_name(&path).display())
            };
            format!("{counts}{damage}; converted at start, the original {after}")
        }
        Err(why) => format!("a {why}; not converted"),
    };
    Some(format!("mosquitto_migration: {}: {what}\n", path.display()))
}

/// Publishes the incoming QoS 2 messages of a converted file, once its sessions are
/// restored: retained ones replace the retained message of their topic, as on PUBREL.
pub(super) fn publish_incoming(b: &mut super::core::Broker, msgs: Vec<Rc<Message>>, now: Instant) {
    for m in msgs {
        if m.retain {
            b.retained.set(m.clone());
        }
        b.route(&m, None, now);
    }
}

/// A name beside `path` for its original: `NAME.mosquitto`, or `NAME.mosquitto.N` when that
/// exists already (an earlier migration), never an existing file.
fn aside_name(path: &std::path::Path) -> std::path::PathBuf {
    let name = path.file_name().map_or_else(
        || "mosquitto.db".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let first = path.with_file_name(format!("{name}.mosquitto"));
    if std::fs::symlink_metadata(&first).is_err() {
        return first;
    }
    (1..1000)
        .map(|n| path.with_file_name(format!("{name}.mosquitto.{n}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or(first)
}

/// The name Mosquitto gives its file by default.
pub const DEFAULT_FILE: &str = "mosquitto.db";

/// When rmqtt's own file `path` does not exist: Mosquitto's default file in the same
/// directory, if there is one and it is Mosquitto's. It is converted and left where it is
/// (rmqtt saves under its own name, so it is never overwritten).
pub(super) fn migrate_beside(
    path: &std::path::Path,
    now: Instant,
) -> Option<(Image, Vec<Rc<Message>>)> {
    let theirs = path.with_file_name(DEFAULT_FILE);
    if theirs == path {
        return None;
    }
    let data = std::fs::read(&theirs).ok()?;
    if !is_mosquitto_db(&data) {
        log::info!(
            "{} is not a Mosquitto persistence file; left alone.",
            theirs.display()
        );
        return None;
    }
    migrate_file(&theirs, &data, now, Some(path))
}

/// Converts the Mosquitto persistence file `data` read from `path`. When it is rmqtt's own
/// file (`saved_to` is `None`), the original is kept as `NAME.mosquitto` (a hard link or a
/// copy; the caller then writes rmqtt's snapshot over `path`), and a Mosquitto file this
/// reader cannot convert is moved to that name, so rmqtt's saves never overwrite it. When
/// rmqtt saves elsewhere (`saved_to`), the file stays where it is. Either way the log says
/// what happened. `Some` with the image and the incoming messages to publish after
/// restoring it; `None` when nothing was converted.
pub(super) fn migrate_file(
    path: &std::path::Path,
    data: &[u8],
    now: Instant,
    saved_to: Option<&std::path::Path>,
) -> Option<(Image, Vec<Rc<Message>>)> {
    use log::{error, info, warn};
    let aside = aside_name(path);
    let (db, damage) = match parse(data) {
        Ok(p) => p,
        Err(why) if saved_to.is_some() => {
            error!(
                "Error: {} is a {why}; not converted, left in place.",
                path.display()
            );
            return None;
        }
        Err(why) => {
            match std::fs::rename(path, &aside) {
                Ok(()) => error!(
                    "Error: persistence file {} is a {why}; not converted, moved to {}; starting without its retained messages and sessions.",
                    path.display(),
                    aside.display()
                ),
                Err(e) => error!(
                    "Error: persistence file {} is a {why}; not converted, and could not be moved aside: {e}",
                    path.display()
                ),
            }
            return None;
        }
    };
    if let Some(d) = &damage {
        warn!(
            "Warning: Mosquitto persistence file {} is damaged ({d}); converting what was read before the damage.",
            path.display()
        );
    }
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let m = convert(&db, wall, now);
    if let Some(to) = saved_to {
        info!(
            "Converted Mosquitto persistence file {}: {}. It is left in place; rmqtt saves to {}.",
            path.display(),
            m.counts,
            to.display()
        );
        return Some((m.image, m.incoming));
    }
    let kept =
        std::fs::hard_link(path, &aside).or_else(|_| std::fs::copy(path, &aside).map(|_| ()));
    match kept {
        Ok(()) => info!(
            "Converted Mosquitto persistence file {}: {}. The original is kept as {}.",
            path.display(),
            m.counts,
            aside.display()
        ),
        Err(e) => error!(
            "Error: converted Mosquitto persistence file {} ({}), but could not keep the original as {}: {e}",
            path.display(),
            m.counts,
            aside.display()
        ),
    }
    Some((m.image, m.incoming))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Mosquitto 2.0.11 (x86-64) on SIGTERM: retained `r/1`; session `s1` (MQTT
    /// 3.1.1, clean session false) subscribed to `q1/#` at QoS 1 and `q2/#` at QoS 2; session
    /// `s5` (MQTT 5, expiry 3600 s) on `q2/#` at QoS 2; then `q1/a` QoS 1, `q2/b` QoS 2 and
    /// `q2/c` QoS 2 with a user property and a 1000 s message expiry were published while
    /// both were offline.
    const REAL: &[u8] = include_bytes!("../../tests/fixtures/mosquitto-2.0.11.db");
    /// When the fixture was written (its messages' store time), in wall-clock seconds.
    const WRITTEN: u64 = 1_796_166_706;

    #[test]
    fn reads_the_file_mosquitto_wrote() {
        let (db, damage) = parse(REAL).unwrap();
        assert_eq!(damage, None);
        assert!(!db.big_endian);
        assert_eq!(db.messages.len(), 4);
        assert_eq!(db.retains.len(), 1);
        let ids: Vec<&[u8]> = db.clients.iter().map(|c| c.id).collect();
        assert_eq!(ids, [b"s1".as_slice(), b"s5"]);
        assert_eq!(db.clients[0].session_expiry_interval, u32::MAX);
        assert_eq!(db.clients[1].session_expiry_interval, 3600);
        assert_eq!(db.subs.len(), 3);
        assert_eq!(db.client_msgs.len(), 5);
        assert!(db.client_msgs.iter().all(|m| m.state == MS_QUEUED));
        let now = Instant::now();
        let m = convert(&db, WRITTEN, now);
        assert_eq!(
            m.counts,
            Counts {
                retained: 1,
                sessions: 2,
                subscriptions: 3,
                queued: 5,
                ..Counts::default()
            }
        );
        let r = &m.image.retained[0];
        assert_eq!(
            (&*r.topic, &r.payload[..], r.qos),
            ("r/1", &b"ret1"[..], QoS::AtLeastOnce)
        );
        let s1 = &m.image.sessions[0];
        assert_eq!(s1.expiry, Expiry::Never);
        let subs: Vec<(&str, QoS)> = s1.subs().iter().map(|(f, o, _)| (&**f, o.qos)).collect();
        assert!(subs.contains(&("q1/#", QoS::AtLeastOnce)));
        assert!(subs.contains(&("q2/#", QoS::ExactlyOnce)));
        let s5 = &m.image.sessions[1];
        assert!(matches!(s5.expiry, Expiry::After(n) if n <= 3600 && n > 3000));
        let q: Vec<&str> = s5.flow().queue.iter().map(|p| &*p.msg.topic).collect();
        assert_eq!(q.len(), 2);
        let c = s5
            .flow()
            .queue
            .iter()
            .find(|p| &*p.msg.topic == "q2/c")
            .unwrap();
        assert_eq!(c.qos, QoS::ExactlyOnce);
        let props = c.msg.properties.as_deref().unwrap();
        assert_eq!(props.user_properties.len(), 1);
        assert!(c.msg.expires.is_some());
        // An hour later the session and the message with a 1000 s expiry are gone.
        let later = convert(&db, WRITTEN + 4000, now);
        assert_eq!(later.counts.sessions, 1);
        assert!(later.counts.dropped >= 2);
    }

    #[test]
    fn truncation_and_flipped_bytes_never_panic() {
        let now = Instant::now();
        for n in 0..REAL.len() {
            if let Ok((db, damage)) = parse(&REAL[..n]) {
                assert!(damage.is_some() || n == REAL.len() || db.messages.len() <= 4);
                let _ = convert(&db, WRITTEN, now);
            }
        }
        for i in 0..REAL.len() {
            for bit in [0x01u8, 0x80, 0xff] {
                let mut bad = REAL.to_vec();
                bad[i] ^= bit;
                if let Ok((db, _)) = parse(&bad) {
                    let _ = convert(&db, WRITTEN, now);
                }
            }
        }
    }

    #[test]
    fn other_versions_and_files_are_refused() {
        assert!(parse(b"RMQTTDB\x02").is_err());
        let mut v5 = REAL.to_vec();
        v5[22] = 5;
        assert!(parse(&v5).unwrap_err().contains("version 5"));
        assert!(parse(&REAL[..20]).is_err());
        assert!(is_mosquitto_db(REAL));
        assert!(!is_mosquitto_db(b"RMQTTDB\x02"));
    }

    /// A chunk: big-endian type and length, then the body.
    fn chunk(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
    }

    /// A file as a big-endian writer with 4-byte `int64_t` alignment (i386-like padding on a
    /// big-endian host) would write it: one message in each outgoing state, an incoming
    /// QoS 2 message, a subscription with options and an identifier.
    fn built() -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&VERSION.to_be_bytes());
        let mut cfg = 9u64.to_be_bytes().to_vec();
        cfg.extend_from_slice(&[1, 8, 0, 0]);
        chunk(&mut f, CHUNK_CFG, &cfg);
        for (id, topic, qos) in [
            (1u64, "a/1", 1u8),
            (2, "a/2", 2),
            (3, "a/3", 2),
            (4, "in/x", 2),
        ] {
            let mut b = id.to_be_bytes().to_vec();
            b.extend_from_slice(&0i64.to_be_bytes());
            b.extend_from_slice(&2u32.to_be_bytes()); // payload length
            b.extend_from_slice(&[0, 7, 0, 1, 0, 0]); // source mid, id length 1, user 0
            b.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            b.extend_from_slice(&[0x07, 0x5b, qos, u8::from(id == 4)]);
            b.push(b'p');
            b.extend_from_slice(topic.as_bytes());
            b.extend_from_slice(b"hi");
            chunk(&mut f, CHUNK_BASE_MSG, &b);
        }
        let mut c = 0i64.to_be_bytes().to_vec();
        c.extend_from_slice(&60u32.to_be_bytes());
        c.extend_from_slice(&[0, 9, 0, 3, 0x07, 0x5b, 0, 0]); // last mid, id len, port, user
        c.extend_from_slice(b"cli");
        chunk(&mut f, CHUNK_CLIENT, &c);
        for (store, mid, qos, state, dir) in [
            (1u64, 5u16, 1u8, MS_WAIT_FOR_PUBACK, 1u8),
            (2, 6, 2, MS_WAIT_FOR_PUBREC, 1),
            (3, 7, 2, MS_WAIT_FOR_PUBCOMP, 1),
            (1, 0, 1, MS_QUEUED, 1),
            (4, 9, 2, MS_WAIT_FOR_PUBREL, 0),
        ] {
            let mut m = store.to_be_bytes().to_vec();
            m.extend_from_slice(&mid.to_be_bytes());
            m.extend_from_slice(&3u16.to_be_bytes());
            m.extend_from_slice(&[qos, state, 0x10, dir]);
            m.extend_from_slice(b"cli");
            if store == 2 {
                m.extend_from_slice(&[2, PROP_SUBSCRIPTION_IDENTIFIER, 42]);
            }
            chunk(&mut f, CHUNK_CLIENT_MSG, &m);
        }
        let mut s = 42u32.to_be_bytes().to_vec();
        s.extend_from_slice(&[0, 3, 0, 3, 2, 4 | 8, 0, 0]);
        s.extend_from_slice(b"clia/#");
        chunk(&mut f, CHUNK_SUB, &s);
        chunk(&mut f, 99, b"ignored");
        f
    }

    #[test]
    fn states_options_padding_and_byte_order() {
        let data = built();
        let (db, damage) = parse(&data).unwrap();
        assert_eq!(damage, None);
        assert!(db.big_endian);
        assert_eq!(db.skipped, 1);
        let now = Instant::now();
        let m = convert(&db, WRITTEN, now);
        assert_eq!(
            m.counts,
            Counts {
                sessions: 1,
                subscriptions: 1,
                queued: 1,
                inflight: 3,
                incoming: 1,
                ..Counts::default()
            }
        );
        let s = &m.image.sessions[0];
        assert_eq!(s.expiry, Expiry::After(60));
        let (f, o, id) = &s.subs()[0];
        assert_eq!(&**f, "a/#");
        assert_eq!(o.qos, QoS::ExactlyOnce);
        assert!(o.no_local && o.retain_as_published);
        assert_eq!(id.map(NonZeroU32::get), Some(42));
        let fl: Vec<(u16, OutState)> = s.flow().inflight.iter().map(|f| (f.pid, f.state)).collect();
        assert_eq!(
            fl,
            [
                (5, OutState::AwaitAck),
                (6, OutState::AwaitRec),
                (7, OutState::AwaitComp)
            ]
        );
        assert_eq!(s.flow().inflight[1].d.sub_ids(), [42]);
        assert!(s.flow().inflight[0].d.retain);
        assert_eq!(s.flow().queue.len(), 1);
        assert!(s.flow().inbound_qos2.contains(9));
        assert_eq!(&*m.incoming[0].topic, "in/x");
        assert!(m.incoming[0].retain);
        // Cut anywhere: what comes before the cut is read, nothing panics.
        for n in 23..data.len() {
            let (db, damage) = parse(&data[..n]).unwrap();
            let _ = convert(&db, WRITTEN, now);
            if n == data.len() - 1 {
                assert!(damage.unwrap().contains("truncated"));
            }
        }
    }

    use std::num::NonZeroU32;
}
