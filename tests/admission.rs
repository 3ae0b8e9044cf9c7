//! The admission layer before login, against the real broker: the first byte must be
//! CONNECT, a CONNECT over `max_connect_size` is refused from its fixed header, pre-login
//! sockets are capped per address and overall (the oldest silent one makes room), failed
//! logins back off per address, `connect_timeout` is configurable, and an absurd PBKDF2
//! iteration count in the password file refuses to start.

mod common;

use common::*;
use rmqtt::auth::password::{hash_password, HashKind};
use std::num::NonZeroU32;
use std::time::Duration;

#[test]
fn first_byte_that_is_not_connect_closes_at_once() {
    let mut b = Broker::start();
    for first in [0x30u8, 0xc0, 0x82, b'G'] {
        let mut c = b.raw();
        // Only the first byte: no need to wait for a whole packet to know.
        c.send(&[first]);
        c.expect_closed();
    }
    b.wait_log("refused before CONNECT: first packet is not CONNECT (first byte 0x30)");
    b.assert_healthy();
}

#[test]
fn oversized_connect_is_refused_from_its_header_and_the_limit_is_configurable() {
    let mut b = Broker::with_config("allow_anonymous true\nmax_connect_size 2000\n");
    let mut c = b.raw();
    // 200,000,000 announced; nothing else sent.
    c.send(&[0x10, 0x80, 0x84, 0xaf, 0x5f]);
    c.expect_closed();
    b.wait_log("is larger than max_connect_size (2000)");
    // A will of 1,500 bytes fits.
    let mut ok = b.client_with(&ConnectOpts::new("will-1500").will("w", &[7; 1500], 0, false));
    ok.sync();
    let mut big = b.raw();
    big.send_lossy(
        &ConnectOpts::new("will-2500")
            .will("w", &[7; 2500], 0, false)
            .encode(),
    );
    big.expect_closed();
    b.assert_healthy();
}

#[test]
fn pre_login_cap_per_address_closes_the_oldest_silent_socket() {
    let mut b = Broker::with_config("allow_anonymous true\nmax_pending_per_address 4\n");
    let mut silent: Vec<Client> = (0..4).map(|_| b.raw()).collect();
    for s in &mut silent {
        // Each reached the broker (a half-sent CONNECT is still pre-login).
        s.send(&[0x10]);
    }
    std::thread::sleep(Duration::from_millis(200));
    // A newcomer gets in; the oldest silent one goes.
    let mut c = b.client("newcomer");
    c.sync();
    silent[0].expect_closed();
    b.wait_log("closed before CONNECT to make room");
    silent[1].expect_nothing(100);
    b.assert_healthy();
}

#[test]
fn pre_login_cap_overall_makes_room_too() {
    let mut b = Broker::with_config(
        "allow_anonymous true\nmax_pending_connections 3\nmax_pending_per_address 0\n",
    );
    let mut silent: Vec<Client> = (0..3).map(|_| b.raw()).collect();
    for s in &mut silent {
        s.send(&[0x10]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut c = b.client("newcomer");
    c.sync();
    silent[0].expect_closed();
    b.assert_healthy();
}

#[test]
fn connect_timeout_is_configurable() {
    let mut b = Broker::with_config("allow_anonymous true\nconnect_timeout 1\n");
    let mut silent = b.raw();
    silent.expect_closed_within(Duration::from_secs(4));
    b.wait_log("did not send CONNECT in time");
    b.assert_healthy();
}

#[test]
fn failed_logins_back_off_per_address_and_a_good_login_still_works_later() {
    let dir = std::env::temp_dir().join(format!("rmqtt-admission-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pwfile");
    let h = hash_password(HashKind::Sha512Pbkdf2, NonZeroU32::new(101).unwrap(), b"pw").unwrap();
    std::fs::write(&pw, format!("alice:{h}\n")).unwrap();
    let b = Broker::with_config(&format!(
        "allow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    let wrong = ConnectOpts::new("guess").username("alice").password("nope");
    // Five free failures, then the sixth starts a back-off.
    for _ in 0..6 {
        let mut c = b.raw();
        c.send(&wrong.encode());
        assert_eq!(c.expect_connack().code, 5);
        c.expect_closed();
    }
    b.wait_log("Backing off 127.0.0.1 for 1 s after repeated failed logins");
    // Refused at accept: closed without a CONNACK, no password hashed.
    let mut c = b.raw();
    c.send_lossy(
        &ConnectOpts::new("alice")
            .username("alice")
            .password("pw")
            .encode(),
    );
    assert!(c.expect_closed().is_empty());
    b.wait_log("denied: 6 failed logins, backed off");
    // After the back-off the right password gets in and clears the record.
    std::thread::sleep(Duration::from_millis(1100));
    let mut ok = b.client_with(&ConnectOpts::new("alice").username("alice").password("pw"));
    ok.sync();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn absurd_pbkdf2_iteration_count_refuses_to_start() {
    let dir = std::env::temp_dir().join(format!("rmqtt-admission-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pwfile");
    let h = hash_password(HashKind::Sha512Pbkdf2, NonZeroU32::new(101).unwrap(), b"pw").unwrap();
    let h = h.replacen("$7$101$", "$7$50000000$", 1);
    std::fs::write(&pw, format!("# users\nalice:{h}\n")).unwrap();
    let conf = dir.join("rmqtt.conf");
    std::fs::write(
        &conf,
        format!("listener 0 127.0.0.1\npassword_file {}\n", pw.display()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rmqtt"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {err}");
    assert!(
        err.contains(&format!("{}:2:", pw.display())) && err.contains("iteration count"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
