//! Compaction in slices: a new snapshot written a bounded number of bytes, in a bounded time,
//! per slice, with the loop back in `poll` between slices, so clients are served while it
//! runs. Its memory is a cursor in the retained store (the last
//! topic written), the list of persistent sessions' client ids, and a reference to each
//! message shared by several sessions; never a second copy of the state.
//!
//! How the result stays exact (see [`super::persist::Store`] for the files):
//! - at the pass a compaction starts (point P, right after that pass's journal records were
//!   synced), the journal of generation g is closed and a journal of generation g+1 starts in
//!   `<journal>.next`; it records every change after P relative to the state at P;
//! - the new snapshot (generation g+1) is written item by item, each retained topic and each
//!   session as it is at the moment its slice runs. Every journal record is an absolute
//!   value for one key (a topic's message, a session's head, one entry's place, an entry or
//!   session gone), so replaying every change made after P over items taken at or after P
//!   gives the current state, whenever each item was taken;
//! - the snapshot is put in place (fsync, rename, fsync of the directory) only in a pass
//!   right after the journal's records of that pass were synced, and then the new journal is
//!   renamed over the old one.
//!
//! A crash at any point leaves one of: snapshot g + journal g (+ journal g+1 in `.next`),
//! replayed in that order; snapshot g+1 + journal g+1 in `.next` (the old journal, of
//! generation g, is ignored); snapshot g+1 + journal g+1. A temporary snapshot file left
//! behind is removed at the next start.

use super::core::Broker;
use super::persist::{create_temp, SnapWriter};
use super::session::Expiry;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of snapshot encoded per slice, at most.
pub const SLICE: usize = 16 * 1024;

/// Time a slice may take, at most (checked between items): on a slow CPU a slice is cut
/// short before [`SLICE`] bytes.
pub const SLICE_TIME: Duration = Duration::from_micros(250);

/// A slice (or one blocking step at the end of a compaction) starts no sooner than this
/// after the last one. Between them the loop waits in `poll` like an idle broker: it serves
/// whoever sends, and does not hold the CPU (a loop that never sleeps is preempted for whole
/// scheduler time slices on a busy machine, and then everyone waits).
pub const PACE: Duration = Duration::from_millis(1);

/// How long a written snapshot is left to the kernel's writeback before it is synced and
/// put in place: by then the sync finds its data on disk and the file system's metadata
/// committed (ext4 commits every 5 s), and costs the loop little.
pub const SETTLE: Duration = Duration::from_secs(6);

/// A snapshot smaller than this is synced and put in place without waiting.
pub const SETTLE_FROM: u64 = 1024 * 1024;

/// A snapshot being written.
pub struct Job {
    target: PathBuf,
    tmp: PathBuf,
    file: File,
    w: SnapWriter,
    /// The retained store is walked in topic order: the last topic taken, and whether the
    /// walk is over.
    topic: Option<Arc<str>>,
    topics_done: bool,
    clients: std::vec::IntoIter<Arc<str>>,
    /// Bytes in the temporary file.
    pub written: u64,
    /// Writeback of the file was started up to here.
    flushed: u64,
    /// The end record is written: the file waits to be synced and put in place.
    pub ended: bool,
    /// How far [`Job::finish_step`] got.
    stage: u8,
}

impl Job {
    /// Starts a snapshot of generation `gen` of what `broker` holds now, into a temporary
    /// file beside `target`.
    pub fn new(target: &Path, broker: &Broker, gen: u64) -> io::Result<Job> {
        let (tmp, file) = create_temp(target)?;
        let clients: Vec<Arc<str>> = broker
            .sessions_iter()
            .filter(|s| s.expiry != Expiry::OnDisconnect)
            .map(|s| s.client_id.clone())
            .collect();
        Ok(Job {
            target: target.to_path_buf(),
            tmp,
            file,
            w: SnapWriter::new(gen),
            topic: None,
            topics_done: false,
            clients: clients.into_iter(),
            written: 0,
            flushed: 0,
            ended: false,
            stage: 0,
        })
    }

    /// Whether every item was written (only [`Job::finish`] is left).
    pub fn done(&self) -> bool {
        self.topics_done && self.clients.len() == 0
    }

    /// Encodes items as they are now until about `budget` bytes are ready, or (with a
    /// clock and a deadline) the clock says the deadline is past, and writes them. An item
    /// that is gone since the job started is skipped (the journal has its removal).
    pub fn step(
        &mut self,
        broker: &Broker,
        now: Instant,
        budget: usize,
        until: Option<(&dyn Fn() -> Instant, Instant)>,
    ) -> io::Result<()> {
        while self.w.out.len() < budget && until.is_none_or(|(clock, t)| clock() < t) {
            if !self.topics_done {
                let (w, topic) = (&mut self.w, &mut self.topic);
                let mut n = 0;
                broker
                    .retained
                    .after(topic.clone().as_deref(), 8, &mut |m| {
                        n += 1;
                        if !m.topic.starts_with("$SYS") {
                            w.retained(m, now);
                        }
                        *topic = Some(m.topic.clone());
                    });
                self.topics_done = n == 0;
                continue;
            }
            let Some(c) = self.clients.next() else {
                break;
            };
            let s = broker.table.id_of(&c).and_then(|sid| broker.table.get(sid));
            if let Some(s) = s.filter(|s| s.expiry != Expiry::OnDisconnect) {
                self.w.session(s, now);
            }
        }
        self.write_out()
    }

    fn write_out(&mut self) -> io::Result<()> {
        if self.w.out.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.w.out)?;
        self.written += self.w.out.len() as u64;
        self.w.out.clear();
        // Start writing back what is there, so the final sync has little left to wait for.
        if self.written - self.flushed >= 256 * 1024 {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(())
    }

    /// Writes whatever is left and the end record, and starts writing the file back: the
    /// kernel writes it while the loop goes on, and [`Job::finish`] has little to wait for.
    pub fn end(&mut self, broker: &Broker, now: Instant) -> io::Result<()> {
        while !self.done() {
            self.step(broker, now, usize::MAX, None)?;
        }
        if !self.ended {
            self.w.finish();
            self.write_out()?;
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
            self.ended = true;
        }
        Ok(())
    }

    /// The end of a compaction, one blocking call per pass so that no pass waits for more
    /// than one: sync the file (step 0), rename it over the target (1), sync the directory
    /// (2). The target's old file is kept open and returned by step 1, so the rename does
    /// not free its blocks ([`Freeing`] does, a slice per pass). True once in place.
    pub fn finish_step(
        &mut self,
        broker: &Broker,
        now: Instant,
    ) -> io::Result<(bool, Option<File>)> {
        self.end(broker, now)?;
        let mut old = None;
        match self.stage {
            0 => self.file.sync_all()?,
            1 => {
                old = fs::OpenOptions::new().write(true).open(&self.target).ok();
                fs::rename(&self.tmp, &self.target)?;
            }
            _ => {
                if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if let Ok(d) = File::open(dir) {
                        let _ = d.sync_all();
                    }
                }
            }
        }
        self.stage += 1;
        Ok((self.stage > 2, old))
    }

    /// Gives up: the temporary file is removed.
    pub fn abort(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Bytes of a replaced file freed per pass.
const FREE_SLICE: u64 = 1024 * 1024;

/// Files replaced by a compaction are kept open and truncated a slice per pass: freeing the
/// blocks of a large file at once (as a rename over it would) costs tens of milliseconds.
/// Shortens the first of `files` by a slice; an emptied file is closed.
pub fn free_slice(files: &mut Vec<File>) {
    let Some(f) = files.first() else {
        return;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let short = len.saturating_sub(FREE_SLICE);
    if short == 0 || f.set_len(short).is_err() {
        files.remove(0);
    }
}

/// Asks the kernel to start writing a range of `file` back, without waiting for it.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor `file` owns; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}
