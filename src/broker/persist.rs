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

use super::core::Broker;
use super::message::Message;
use super::session::{Expiry, Inflight, OutState, Pending, Session};
use crate::config::Config;
use crate::protocol::codec::{put_string, Reader};
use crate::protocol::properties::Owner;
use crate::protocol::{Properties, QoS, SubOptions};
use bytes::{BufMut, Bytes, BytesMut};
use log::{error, info, warn};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 8] = b"RMQTTDB\x01";
const REC_MESSAGE: u8 = 1;
const REC_RETAINED: u8 = 2;
const REC_SESSION: u8 = 3;
const REC_END: u8 = 0xff;

/// CRC-32 (IEEE 802.3), bitwise: snapshots are small and saved rarely.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn put_record(out: &mut BytesMut, kind: u8, body: &[u8]) {
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

fn put_pending(b: &mut BytesMut, p: &Pending, ids: &HashMap<*const Message, u32>) {
    b.put_u32(ids.get(&Rc::as_ptr(&p.msg)).copied().unwrap_or(0));
    b.put_u8(p.qos.as_u8());
    b.put_u8(u8::from(p.retain));
    b.put_u16(p.sub_ids.len().min(255) as u16);
    for id in p.sub_ids.iter().take(255) {
        b.put_u32(*id);
    }
    put_string(b, p.share.as_deref().unwrap_or(""));
}

/// The whole persistent state of `broker` as snapshot bytes.
pub fn encode(broker: &Broker, now: Instant) -> Vec<u8> {
    let sessions: Vec<&Session> = broker
        .sessions_iter()
        .filter(|s| s.expiry != Expiry::OnDisconnect)
        .collect();
    encode_state(&broker.retained_messages(), &sessions, now)
}

/// Snapshot bytes of plain data: the retained messages and the sessions to save.
pub fn encode_state(retained: &[Rc<Message>], sessions: &[&Session], now: Instant) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(4096);
    out.put_slice(MAGIC);
    let mut ids: HashMap<*const Message, u32> = HashMap::new();
    let mut records = 0u32;
    let mut add_msg = |out: &mut BytesMut, m: &Rc<Message>, records: &mut u32| {
        let key = Rc::as_ptr(m);
        if ids.contains_key(&key) {
            return;
        }
        let id = ids.len() as u32 + 1;
        ids.insert(key, id);
        let mut b = BytesMut::new();
        b.put_u32(id);
        put_string(&mut b, &m.topic);
        b.put_u32(m.payload.len() as u32);
        b.put_slice(&m.payload);
        b.put_u8(m.qos.as_u8());
        b.put_u8(u8::from(m.retain));
        b.put_u32(secs_left(m.expires, now));
        match &m.properties {
            Some(p) => p.encode(&mut b),
            None => b.put_u8(0),
        }
        put_record(out, REC_MESSAGE, &b);
        *records += 1;
    };
    for m in retained {
        add_msg(&mut out, m, &mut records);
    }
    for s in sessions {
        for f in &s.flow().inflight {
            add_msg(&mut out, &f.d.msg, &mut records);
        }
        for p in &s.flow().queue {
            add_msg(&mut out, &p.msg, &mut records);
        }
    }
    for m in retained {
        let mut b = BytesMut::new();
        b.put_u32(ids.get(&Rc::as_ptr(m)).copied().unwrap_or(0));
        put_record(&mut out, REC_RETAINED, &b);
        records += 1;
    }
    for s in sessions {
        let mut b = BytesMut::new();
        put_string(&mut b, &s.client_id);
        put_string(&mut b, s.username.as_deref().unwrap_or(""));
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
        b.put_u32(s.subs().len() as u32);
        for (f, o, id) in s.subs() {
            put_string(&mut b, f);
            b.put_u8(o.to_byte());
            b.put_u32(id.map_or(0, NonZeroU32::get));
        }
        b.put_u32(s.flow().inflight.len() as u32);
        for f in &s.flow().inflight {
            b.put_u16(f.pid);
            b.put_u8(match f.state {
                OutState::AwaitAck => 0,
                OutState::AwaitRec => 1,
                OutState::AwaitComp => 2,
            });
            put_pending(&mut b, &f.d, &ids);
        }
        b.put_u32(s.flow().queue.len() as u32);
        for p in &s.flow().queue {
            put_pending(&mut b, p, &ids);
        }
        b.put_u32(s.flow().inbound_qos2.len() as u32);
        for pid in s.flow().inbound_qos2.iter() {
            b.put_u16(pid);
        }
        put_record(&mut out, REC_SESSION, &b);
        records += 1;
    }
    let mut b = BytesMut::new();
    b.put_u32(records);
    put_record(&mut out, REC_END, &b);
    out.to_vec()
}

/// What a snapshot holds, ready to be put into a broker.
#[derive(Default)]
pub struct Image {
    pub retained: Vec<Rc<Message>>,
    pub sessions: Vec<Session>,
}

fn qos(v: u8) -> Result<QoS, &'static str> {
    QoS::from_u8(v).ok_or("bad QoS")
}

fn get_pending(
    r: &mut Reader<'_>,
    msgs: &HashMap<u32, Rc<Message>>,
) -> Result<Option<Pending>, &'static str> {
    let e = |_| "truncated entry";
    let id = r.u32().map_err(e)?;
    let q = qos(r.u8().map_err(e)?)?;
    let retain = r.u8().map_err(e)? != 0;
    let n = r.u16().map_err(e)?;
    let mut sub_ids = Vec::new();
    for _ in 0..n {
        sub_ids.push(r.u32().map_err(e)?);
    }
    let share = r.string().map_err(e)?;
    Ok(msgs.get(&id).map(|m| Pending {
        msg: m.clone(),
        qos: q,
        retain,
        sub_ids,
        share: (!share.is_empty()).then(|| Rc::from(share)),
    }))
}

fn decode_session(body: &[u8], msgs: &HashMap<u32, Rc<Message>>) -> Result<Session, &'static str> {
    let e = |_| "truncated session";
    let mut r = Reader::new(body);
    let client_id: Arc<str> = Arc::from(r.string().map_err(e)?);
    let username = r.string().map_err(e)?.to_owned();
    let has_user = r.u8().map_err(e)? != 0;
    let expiry = match (r.u8().map_err(e)?, r.u32().map_err(e)?) {
        (0, _) => Expiry::Never,
        (1, n) => Expiry::After(n),
        _ => Expiry::OnDisconnect,
    };
    let mut s = Session::new(client_id, 0, expiry);
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
    for _ in 0..r.u32().map_err(e)? {
        let pid = r.u16().map_err(e)?;
        let state = match r.u8().map_err(e)? {
            0 => OutState::AwaitAck,
            1 => OutState::AwaitRec,
            _ => OutState::AwaitComp,
        };
        if let Some(d) = get_pending(&mut r, msgs)? {
            s.flow_mut().inflight.push_back(Inflight { pid, d, state });
        }
    }
    for _ in 0..r.u32().map_err(e)? {
        if let Some(p) = get_pending(&mut r, msgs)? {
            s.push_pending(p);
        }
    }
    for _ in 0..r.u32().map_err(e)? {
        s.flow_mut().inbound_qos2.insert(r.u16().map_err(e)?);
    }
    Ok(s)
}

fn decode_message(body: &[u8], now: Instant) -> Result<(u32, Message), &'static str> {
    let e = |_| "truncated message";
    let mut r = Reader::new(body);
    let id = r.u32().map_err(e)?;
    let topic = r.string().map_err(e)?;
    let len = r.u32().map_err(e)? as usize;
    let payload = Bytes::copy_from_slice(r.take(len).map_err(e)?);
    let q = qos(r.u8().map_err(e)?)?;
    let retain = r.u8().map_err(e)? != 0;
    let left = r.u32().map_err(e)?;
    let props = Properties::decode(&mut r, Owner::Publish).map_err(|_| "bad properties")?;
    Ok((
        id,
        Message {
            topic: Arc::from(topic),
            payload,
            qos: q,
            retain,
            properties: (!props.is_empty()).then(|| Box::new(props)),
            expires: (left > 0).then(|| now + Duration::from_secs(u64::from(left))),
        },
    ))
}

/// Reads a snapshot. Returns what could be read, and a description of the damage if the
/// file is not whole.
pub fn decode(data: &[u8], now: Instant) -> (Image, Option<String>) {
    let mut img = Image::default();
    let Some(rest) = data.strip_prefix(MAGIC.as_slice()) else {
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
            REC_SESSION => match decode_session(body, &msgs) {
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

/// The snapshot file and the policy for writing it.
pub struct Store {
    path: PathBuf,
    interval: Duration,
    /// `autosave_on_changes`: save after this many changes instead of after a time.
    every_changes: Option<u64>,
    saved_changes: u64,
    last_save: Instant,
    pub writes: u64,
    pub bytes: u64,
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
        Some(Store {
            path: dir.join(&cfg.persistence_file),
            interval: Duration::from_secs(u64::from(cfg.autosave_interval)),
            every_changes: cfg
                .autosave_on_changes
                .then_some(u64::from(cfg.autosave_interval.max(1))),
            saved_changes: 0,
            last_save: now,
            writes: 0,
            bytes: 0,
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

    /// Loads the snapshot into `broker`. A damaged file is reported, moved aside and what
    /// could be read is kept; a missing file is a fresh start.
    pub fn load(&mut self, broker: &mut Broker, now: Instant) {
        remove_stale_temps(&self.path);
        let data = match fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                error!(
                    "Error: unable to read persistence file {}: {e}",
                    self.path.display()
                );
                return;
            }
        };
        let (img, damage) = decode(&data, now);
        let damaged = damage.is_some();
        let (r, s) = (img.retained.len(), img.sessions.len());
        if let Some(why) = damage {
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = self
                .path
                .with_file_name(format!("{}.corrupt-{stamp}", self.file_name()));
            match fs::rename(&self.path, &aside) {
                Ok(()) => error!(
                    "Error: persistence file {} is damaged ({why}); moved to {}; recovered {r} retained messages and {s} sessions.",
                    self.path.display(),
                    aside.display()
                ),
                Err(e) => error!(
                    "Error: persistence file {} is damaged ({why}) and could not be moved aside: {e}",
                    self.path.display()
                ),
            }
        } else {
            info!(
                "Restored {r} retained messages and {s} sessions from {}.",
                self.path.display()
            );
        }
        broker.restore(img, now);
        self.saved_changes = broker.changes;
        if damaged {
            // What was recovered lives only in memory and in the file moved aside: write it
            // out now, so the next start finds it.
            self.saved_changes = broker.changes.wrapping_sub(1);
            self.maybe_save(broker, now, true);
        }
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rmqtt.db".to_owned())
    }

    /// When an interval save is due; `None` while nothing changed (an idle broker never
    /// wakes up to save), or when saving goes by change count.
    pub fn next_deadline(&self, changes: u64) -> Option<Instant> {
        if changes == self.saved_changes || self.every_changes.is_some() || self.interval.is_zero()
        {
            return None;
        }
        Some(self.last_save + self.interval)
    }

    /// Saves if the policy says so (or `force`, for shutdown and SIGUSR1) and something
    /// changed since the last save.
    pub fn maybe_save(&mut self, broker: &Broker, now: Instant, force: bool) {
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
        let data = encode(broker, now);
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
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, File)> {
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
        b.publish_internal("r/1", Bytes::from_static(b"one"), true, now);
        b.publish_internal("r/2", Bytes::from_static(b"two"), true, now);
        let data = encode(&b, now);
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
        let mut v2 = data.clone();
        v2[7] = 2;
        assert_eq!(
            decode(&v2, now).1.as_deref(),
            Some("unknown format version")
        );
    }
}
