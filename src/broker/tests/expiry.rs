//! Session expiry across a restart: an offline session's wall-clock offline time is saved in
//! the snapshot and the journal, a restart gives it only the expiry it had left, and one that
//! expired while the broker was down is not restored. Older formats (snapshot version 2,
//! journal version 1) are still read, with the whole expiry left.

use super::*;
use crate::broker::persist::{self, Store};
use crate::broker::session::Expiry;
use std::path::{Path, PathBuf};

/// 2026-01-01 in milliseconds since the Unix epoch: the wall clock of the first run.
const WALL: u64 = 1_767_225_600_000;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rmqtt-expiry-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn store(d: &Path, now: Instant) -> Store {
    let cfg = crate::config::Config {
        persistence: true,
        persistence_location: Some(d.to_path_buf()),
        ..crate::config::Config::default()
    };
    Store::from_config(&cfg, now).unwrap()
}

/// A fresh broker loaded from `d` at wall-clock `wall`.
fn restart(d: &Path, wall: u64) -> (Harness, Store) {
    let mut h = Harness::new();
    h.b.set_wall(wall);
    let mut st = store(d, h.now);
    st.load(&mut h.b, h.now);
    (h, st)
}

fn has(h: &Harness, id: &str) -> bool {
    h.b.session_id(id).is_some()
}

/// Connects `id` with a persistent session expiring `secs` after it goes offline.
fn persistent(h: &mut Harness, id: &str, secs: u32) -> usize {
    let c = h.client(id, false);
    let sid = h.b.session_id(id).unwrap();
    h.b.table.get_mut(sid).unwrap().expiry = Expiry::After(secs);
    c
}

/// Runs the broker's timers at `now + after`.
fn at(h: &mut Harness, after: Duration) {
    h.b.poll(h.now + after);
}

#[test]
fn what_is_left_of_an_expiry() {
    use crate::broker::sessions::expiry_left;
    let s = Duration::from_secs;
    assert_eq!(
        expiry_left(Some(s(3)), WALL, WALL + 1000),
        (Some(s(2)), s(1))
    );
    assert_eq!(
        expiry_left(Some(s(3)), WALL, WALL + 5000),
        (Some(s(0)), s(5))
    );
    // Not known: all of it; never: never; a clock that went back: no time away.
    assert_eq!(expiry_left(Some(s(3)), 0, WALL), (Some(s(3)), s(0)));
    assert_eq!(expiry_left(None, WALL, WALL + 5000), (None, s(5)));
    assert_eq!(
        expiry_left(Some(s(3)), WALL, WALL - 9000),
        (Some(s(3)), s(0))
    );
}

#[test]
fn an_offline_session_keeps_the_expiry_it_had_left_and_an_expired_one_is_gone() {
    for via_snapshot in [false, true] {
        let d = dir(if via_snapshot { "snap" } else { "journal" });
        let (mut h, mut st) = restart(&d, WALL);
        let short = persistent(&mut h, "short", 3);
        let long = persistent(&mut h, "long", 10);
        let stays = persistent(&mut h, "stays", 10);
        let _ = stays;
        h.drop_conn(short);
        h.drop_conn(long);
        // "stays" is connected when the broker stops: its offline time is not known.
        st.maybe_save(&mut h.b, h.now, via_snapshot);
        if via_snapshot {
            let data = std::fs::read(d.join("rmqtt.db")).unwrap();
            let (img, damage) = persist::decode(&data, h.now);
            assert_eq!(damage, None);
            let mut at: Vec<(String, u64)> = img
                .sessions
                .iter()
                .map(|s| (s.client_id.to_string(), s.offline_at()))
                .collect();
            at.sort();
            assert_eq!(
                at,
                [
                    ("long".to_owned(), WALL),
                    ("short".to_owned(), WALL),
                    ("stays".to_owned(), 0)
                ]
            );
        }
        drop(st);

        // Back 4 s later: "short" expired meanwhile, "long" has 6 s left, "stays" 10 s.
        let (mut h, st) = restart(&d, WALL + 4000);
        assert!(!has(&h, "short"), "expired while down ({via_snapshot})");
        assert!(has(&h, "long") && has(&h, "stays"));
        at(&mut h, Duration::from_millis(5900));
        assert!(has(&h, "long"), "6 s left, not gone at 5.9 s");
        at(&mut h, Duration::from_millis(6100));
        assert!(!has(&h, "long"), "6 s left, gone at 6.1 s");
        assert!(has(&h, "stays"));
        at(&mut h, Duration::from_millis(10_100));
        assert!(!has(&h, "stays"), "a whole expiry from the restart");
        drop(st);

        // The start removed "short" from the files too, and "stays" now counts from the
        // first restart: at 4 s + 11 s it is gone at once, "long" too.
        let data = std::fs::read(d.join("rmqtt.db")).unwrap();
        let (img, _) = persist::decode(&data, Instant::now());
        let ids: Vec<&str> = img.sessions.iter().map(|s| &*s.client_id).collect();
        assert!(!ids.contains(&"short"), "{ids:?}");
        let stays_at = img.sessions.iter().find(|s| &*s.client_id == "stays");
        assert_eq!(stays_at.map(|s| s.offline_at()), Some(WALL + 4000));
        let (h, _st) = restart(&d, WALL + 15_000);
        assert!(!has(&h, "long") && !has(&h, "stays"));
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn a_session_that_comes_back_is_stamped_again_when_it_leaves() {
    let d = dir("again");
    let (mut h, mut st) = restart(&d, WALL);
    let c = persistent(&mut h, "s", 5);
    h.drop_conn(c);
    st.maybe_save(&mut h.b, h.now, false);
    h.b.set_wall(WALL + 3000);
    let c = h.client("s", false);
    st.maybe_save(&mut h.b, h.now, false);
    // Connected when the broker stops: a whole expiry from the restart.
    let (h2, _st) = restart(&d, WALL + 9000);
    assert!(has(&h2, "s"));
    drop(h2);
    h.b.set_wall(WALL + 4000);
    h.drop_conn(c);
    st.maybe_save(&mut h.b, h.now, false);
    let (h3, _st) = restart(&d, WALL + 8000);
    assert!(has(&h3, "s"), "offline since 4 s, 1 s left");
    let _ = std::fs::remove_dir_all(&d);
}

/// A session record as snapshot version 2 and journal version 1 wrote it: no offline time.
fn old_head(id: &str, expiry: u32) -> BytesMut {
    let mut b = BytesMut::new();
    crate::protocol::codec::put_string(&mut b, id);
    crate::protocol::codec::put_string(&mut b, "");
    b.extend_from_slice(&[0, 1]);
    b.extend_from_slice(&expiry.to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes());
    crate::protocol::codec::put_string(&mut b, "t/#");
    b.extend_from_slice(&[1]);
    b.extend_from_slice(&0u32.to_be_bytes());
    b
}

#[test]
fn older_snapshots_and_journals_are_read_with_the_whole_expiry_left() {
    let d = dir("old");
    // Snapshot version 2, generation 5, with session "snap".
    let mut snap = BytesMut::new();
    snap.extend_from_slice(b"RMQTTDB\x02");
    persist::put_record(&mut snap, 4, &5u64.to_be_bytes());
    let mut body = old_head("snap", 10);
    body.extend_from_slice(&[0u8; 12]);
    persist::put_record(&mut snap, 3, &body);
    persist::put_record(&mut snap, 0xff, &2u32.to_be_bytes());
    std::fs::write(d.join("rmqtt.db"), &snap).unwrap();
    // Journal version 1 of generation 5, with session "jn".
    let mut jn = BytesMut::new();
    jn.extend_from_slice(b"RMQTTJN\x01");
    jn.extend_from_slice(&5u64.to_be_bytes());
    let crc = persist::crc32(&jn);
    jn.extend_from_slice(&crc.to_be_bytes());
    let mut body = old_head("jn", 10);
    body.extend_from_slice(&0u32.to_be_bytes());
    persist::put_record(&mut jn, 2, &body);
    std::fs::write(d.join("rmqtt.db.journal"), &jn).unwrap();

    let (mut h, st) = restart(&d, WALL);
    assert!(has(&h, "snap") && has(&h, "jn"));
    let subs = h.b.sessions_iter().map(|s| s.subs().len()).sum::<usize>();
    assert_eq!(subs, 2);
    at(&mut h, Duration::from_millis(9900));
    assert!(
        has(&h, "snap") && has(&h, "jn"),
        "the whole expiry from the restart"
    );
    drop(st);
    // The old journal is not appended to: a fresh snapshot and journal in today's format.
    let snap = std::fs::read(d.join("rmqtt.db")).unwrap();
    assert!(snap.starts_with(b"RMQTTDB\x03"));
    let jn = std::fs::read(d.join("rmqtt.db.journal")).unwrap();
    assert!(jn.starts_with(b"RMQTTJN\x02"));
    let (h, _st) = restart(&d, WALL + 9000);
    assert!(
        has(&h, "snap") && has(&h, "jn"),
        "offline since the restart"
    );
    let (h, _st) = restart(&d, WALL + 10_500);
    assert!(!has(&h, "snap") && !has(&h, "jn"));
    let _ = std::fs::remove_dir_all(&d);
}
