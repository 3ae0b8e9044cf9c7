//! Journal tests without sockets: traffic through the router, the journal written after each
//! step (as the loop does once per pass), then recovered from the file and compared with
//! the live state; and a power loss at every byte of the last records.

use super::*;
use crate::broker::journal::{self, Journal};
use crate::broker::persist::{self, Image};

/// A state, independent of entry ids and of the order sessions were made in.
fn describe(img: &Image) -> String {
    let mut out = Vec::new();
    let mut r: Vec<String> = img
        .retained
        .iter()
        .map(|m| format!("R {} {:?}", m.topic, m.payload))
        .collect();
    r.sort();
    out.extend(r);
    let mut ss: Vec<String> = img
        .sessions
        .iter()
        .map(|s| {
            let mut subs: Vec<String> = s
                .subs()
                .iter()
                .map(|(f, o, _)| format!("{f}:{}", o.qos.as_u8()))
                .collect();
            subs.sort();
            let fl = s.flow();
            let flight: Vec<String> = fl
                .inflight
                .iter()
                .map(|f| format!("{}/{:?}/{:?}", f.pid, f.state, f.d.msg.payload))
                .collect();
            let queue: Vec<String> = fl
                .queue
                .iter()
                .map(|p| format!("{:?}", p.msg.payload))
                .collect();
            let q2: Vec<u16> = fl.inbound_qos2.iter().collect();
            format!(
                "S {} {:?} subs={subs:?} flight={flight:?} queue={queue:?} qos2={q2:?}",
                s.client_id, s.expiry
            )
        })
        .collect();
    ss.sort();
    out.extend(ss);
    out.join("\n")
}

fn live(b: &Broker, now: Instant) -> String {
    describe(&persist::decode(&persist::encode(b, now, 0), now).0)
}

fn recovered(path: &std::path::Path, now: Instant) -> (String, Option<String>) {
    let data = std::fs::read(path).unwrap();
    let rd = journal::read(&data).unwrap();
    let (img, _, bad) = journal::replay(Image::default(), &rd.records, now);
    (describe(&img), rd.damage.or(bad))
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rmqtt-journal-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("rmqtt.db.journal")
}

#[test]
fn every_pass_recovers_to_the_live_state_and_a_torn_tail_to_a_pass() {
    let path = temp("passes");
    let mut h = Harness::new();
    h.b.enable_journal(0);
    let mut j = Journal::new(path.clone());
    j.start(&mut h.b, 1, 0, None).unwrap();
    // (file size, state) after each pass.
    let mut passes: Vec<(u64, String)> = vec![(j.size, live(&h.b, h.now))];
    macro_rules! pass {
        () => {
            j.flush(&mut h.b, h.now).unwrap();
            let want = live(&h.b, h.now);
            let (got, damage) = recovered(&path, h.now);
            assert_eq!(damage, None);
            assert_eq!(got, want, "after pass {}", passes.len());
            passes.push((j.size, want));
        };
    }
    let s = h.client("keep", false);
    pass!();
    h.sub(s, &[("t/#", QoS::ExactlyOnce), ("u", QoS::AtLeastOnce)]);
    pass!();
    let p = h.client("pub", false);
    h.send(p, &publish("t/a", "one", QoS::AtLeastOnce, 1, false));
    h.send(p, &publish("t/r", "kept", QoS::AtLeastOnce, 2, true));
    pass!();
    let got = h.recv(s);
    assert_eq!(publishes(&got).len(), 2);
    h.send(s, &Packet::PubAck(Ack::new(1)));
    pass!();
    h.drop_conn(s);
    pass!();
    for i in 0..20u16 {
        h.send(
            p,
            &publish("t/q", &format!("q{i}"), QoS::AtLeastOnce, 10 + i, false),
        );
    }
    h.send(p, &publish("t/x", "two", QoS::ExactlyOnce, 40, false));
    h.send(p, &publish("t/r", "", QoS::AtMostOnce, 0, true));
    pass!();
    // A QoS 2 message in from "pub": its id waits for PUBREL in pub's session.
    h.recv(p);
    pass!();
    h.send(p, &Packet::PubRel(Ack::new(40)));
    pass!();
    let (s, present, after) = h.client_v("keep", false, Version::V311);
    assert!(present);
    pass!();
    for pk in &after {
        match pk {
            Packet::Publish(x) if x.qos == QoS::AtLeastOnce => {
                h.send(s, &Packet::PubAck(Ack::new(x.pid)));
            }
            Packet::Publish(x) => {
                h.send(s, &Packet::PubRec(Ack::new(x.pid)));
            }
            _ => {}
        }
    }
    pass!();
    let more = h.recv(s);
    for pk in &more {
        if let Packet::Publish(x) = pk {
            h.send(s, &Packet::PubAck(Ack::new(x.pid)));
        }
    }
    pass!();
    h.send(
        s,
        &Packet::Unsubscribe(Unsubscribe {
            pid: 9,
            filters: vec!["u".into()],
            properties: Properties::default(),
        }),
    );
    pass!();
    h.drop_conn(p);
    let c = h.client("pub", true);
    pass!();
    h.drop_conn(c);
    pass!();

    // Power loss: the file cut at every byte of the last passes comes back as the state
    // after the last whole pass, or a prefix of the records of the pass that was cut.
    let data = std::fs::read(&path).unwrap();
    let from = passes[passes.len().saturating_sub(6)].0 as usize;
    for cut in from..=data.len() {
        std::fs::write(&path, &data[..cut]).unwrap();
        let (got, damage) = recovered(&path, h.now);
        if let Some((_, want)) = passes.iter().find(|(n, _)| *n as usize == cut) {
            assert_eq!(&got, want, "cut at pass boundary {cut}");
            assert_eq!(damage, None);
        } else {
            // Cut inside a pass: never acknowledged (the sync had not returned), so any
            // whole-record prefix of it will do; the torn record is reported.
            let _ = damage;
        }
    }
}

#[test]
fn recovery_stops_at_a_bad_record_and_sets_the_journal_aside() {
    let path = temp("bad");
    let mut h = Harness::new();
    h.b.enable_journal(0);
    let mut j = Journal::new(path.clone());
    j.start(&mut h.b, 5, 0, None).unwrap();
    let p = h.client("pub", true);
    h.send(p, &publish("r/1", "a", QoS::AtMostOnce, 0, true));
    j.flush(&mut h.b, h.now).unwrap();
    let good = j.size as usize;
    h.send(p, &publish("r/2", "b", QoS::AtMostOnce, 0, true));
    j.flush(&mut h.b, h.now).unwrap();
    let mut data = std::fs::read(&path).unwrap();
    data[good + 7] ^= 0x40;
    std::fs::write(&path, &data).unwrap();
    let img = Image {
        gen: 5,
        ..Image::default()
    };
    let (img, _, _) = Journal::new(path.clone()).recover(img, h.now);
    assert_eq!(
        img.retained.len(),
        1,
        "the record before the damage is kept"
    );
    assert!(!path.exists(), "moved aside");
    assert!(path.with_file_name("rmqtt.db.journal.bad-1").exists());
    // Another generation (the snapshot is newer than the journal): not replayed.
    std::fs::write(&path, &data[..good]).unwrap();
    let (img, _, _) = Journal::new(path.clone()).recover(Image::default(), h.now);
    assert!(img.retained.is_empty());
}

/// What a fresh broker recovers from the persistence files in `dir` (copied first: the
/// recovery writes a fresh snapshot). `files` overrides a file's contents (`None`: absent).
fn recover_dir(dir: &std::path::Path, files: &[(&str, Option<&[u8]>)], now: Instant) -> String {
    use crate::broker::persist::Store;
    let scratch = dir.with_extension("recover");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), scratch.join(e.file_name())).unwrap();
    }
    for (name, data) in files {
        let p = scratch.join(name);
        match data {
            Some(d) => std::fs::write(&p, d).unwrap(),
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    let cfg = crate::config::Config {
        persistence: true,
        persistence_location: Some(scratch.clone()),
        ..crate::config::Config::default()
    };
    let mut b = Broker::new(Limits::default(), 7);
    let mut st = Store::from_config(&cfg, now).unwrap();
    st.load(&mut b, now);
    let bad: Vec<String> = std::fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".bad-") || n.contains(".corrupt-"))
        .collect();
    assert!(bad.is_empty(), "nothing damaged: {bad:?}");
    live(&b, now)
}

#[test]
fn a_compaction_in_slices_recovers_to_the_live_state_at_every_pass_and_every_crash_point() {
    use crate::broker::persist::Store;
    let dir = temp("slices").parent().unwrap().to_path_buf();
    let cfg = crate::config::Config {
        persistence: true,
        persistence_location: Some(dir.clone()),
        ..crate::config::Config::default()
    };
    let mut h = Harness::new();
    let mut st = Store::from_config(&cfg, h.now).unwrap();
    st.load(&mut h.b, h.now);
    st.slice = 300;
    st.settle = std::time::Duration::ZERO;
    st.pace = std::time::Duration::ZERO;
    let read = |n: &str| std::fs::read(dir.join(n)).ok();
    // The state: retained topics, two persistent sessions with queued messages sharing
    // payloads, one in flight.
    let p = h.client("pub", true);
    let a = h.client("a", false);
    h.sub(a, &[("q/#", QoS::AtLeastOnce)]);
    let bc = h.client("b", false);
    h.sub(bc, &[("q/#", QoS::ExactlyOnce)]);
    h.drop_conn(bc);
    for i in 0..40u16 {
        h.send(
            p,
            &publish(
                &format!("r/{i}"),
                &format!("v{i}"),
                QoS::AtMostOnce,
                0,
                true,
            ),
        );
        h.send(
            p,
            &publish("q/x", &format!("m{i}"), QoS::AtLeastOnce, 1 + i, false),
        );
    }
    h.recv(a);
    st.maybe_save(&mut h.b, h.now, false);
    assert_eq!(recover_dir(&dir, &[], h.now), live(&h.b, h.now));

    st.save_now(&mut h.b, h.now);
    assert!(st.busy(), "a compaction runs");
    let (old_snap, old_journal) = (read("rmqtt.db"), read("rmqtt.db.journal").unwrap());
    assert!(dir.join("rmqtt.db.journal.next").exists());
    let mut passes = 0;
    let mut finished = false;
    while !finished {
        passes += 1;
        assert!(passes < 200, "the compaction ends");
        // Changes to items written already and items not written yet.
        let i = passes as u16;
        h.send(
            p,
            &publish(
                &format!("r/{}", i % 40),
                &format!("w{i}"),
                QoS::AtMostOnce,
                0,
                true,
            ),
        );
        h.send(
            p,
            &publish(&format!("r/{}", 39 - i % 40), "", QoS::AtMostOnce, 0, true),
        );
        h.send(
            p,
            &publish(&format!("n/{i}"), "new", QoS::AtMostOnce, 0, true),
        );
        h.send(
            p,
            &publish("q/y", &format!("p{i}"), QoS::AtLeastOnce, 100 + i, false),
        );
        for pk in h.recv(a) {
            if let Packet::Publish(x) = pk {
                h.send(a, &Packet::PubAck(Ack::new(x.pid)));
            }
        }
        if passes == 3 {
            h.drop_conn(a);
            let c = h.client("c", false);
            h.sub(c, &[("q/y", QoS::AtLeastOnce)]);
            h.drop_conn(c);
        }
        if passes == 5 {
            // "b" ends its session: it is gone after its slice or before it.
            let b2 = h.client("b", true);
            h.drop_conn(b2);
        }
        st.maybe_save(&mut h.b, h.now, false);
        let want = live(&h.b, h.now);
        finished = !st.compacting();
        // The crash points of the end of the compaction, whichever of its renames reached
        // the disk: the old or the new snapshot, with the old journal and the new one in
        // `.next`.
        let cur = read("rmqtt.db.journal.next").or_else(|| read("rmqtt.db.journal"));
        for snap in [old_snap.as_deref(), read("rmqtt.db").as_deref()] {
            let files = [
                ("rmqtt.db", snap),
                ("rmqtt.db.journal", Some(&old_journal[..])),
                ("rmqtt.db.journal.next", cur.as_deref()),
            ];
            assert_eq!(recover_dir(&dir, &files, h.now), want, "pass {passes}");
        }
        assert_eq!(recover_dir(&dir, &[], h.now), want, "after pass {passes}");
        st.step(&h.b, h.now, &std::time::Instant::now);
        assert_eq!(recover_dir(&dir, &[], h.now), want, "after slice {passes}");
    }
    assert!(passes > 5, "the snapshot took several slices: {passes}");
    assert!(!dir.join("rmqtt.db.journal.next").exists());
    // A journal started by the compaction is continued, and compacts again.
    h.send(p, &publish("r/last", "z", QoS::AtMostOnce, 0, true));
    st.maybe_save(&mut h.b, h.now, false);
    assert_eq!(recover_dir(&dir, &[], h.now), live(&h.b, h.now));
    st.save_now(&mut h.b, h.now);
    // Shutdown during a compaction: it is given up for a whole snapshot at once.
    st.step(&h.b, h.now, &std::time::Instant::now);
    h.send(p, &publish("r/0", "end", QoS::AtMostOnce, 0, true));
    st.maybe_save(&mut h.b, h.now, true);
    assert!(!st.compacting());
    assert!(!dir.join("rmqtt.db.journal.next").exists());
    assert_eq!(recover_dir(&dir, &[], h.now), live(&h.b, h.now));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(dir.with_extension("recover"));
}
