//! Keepalive enforcement by the real broker: a silent client is dropped after one and a half
//! keepalive periods, and any packet (PINGREQ included) keeps it alive. The bounds are generous
//! on purpose: at least one period, at most a few seconds.

mod common;

use common::*;
use rmqtt::protocol::Packet;
use std::time::{Duration, Instant};

#[test]
fn silent_client_is_disconnected_after_one_and_a_half_periods() {
    let b = Broker::start();
    let started = Instant::now();
    let mut c = b.client_with(&ConnectOpts::new("quiet").keepalive(1));
    let rest = c.expect_closed_within(Duration::from_secs(4));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "closed after only {waited:?}"
    );
    assert!(
        rest.is_empty(),
        "a 3.1.1 client gets no packet: {rest:02x?}"
    );
    b.wait_log("Client quiet has exceeded timeout, disconnecting.");
}

#[test]
fn pingreq_keeps_the_connection_alive() {
    let b = Broker::start();
    let mut c = b.client_with(&ConnectOpts::new("pinger").keepalive(1));
    let started = Instant::now();
    // Three seconds is two full timeouts: without the pings the broker would have closed.
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(400));
        c.send(&PINGREQ);
        assert!(matches!(c.expect_packet(), Packet::PingResp));
    }
    c.subscribe(1, &[("alive/t", 0)]);
    assert!(!b.logs().iter().any(|l| l.contains("pinger has exceeded")));
}

#[test]
fn any_packet_counts_as_activity() {
    let b = Broker::start();
    let mut c = b.client_with(&ConnectOpts::new("busy").keepalive(1));
    let started = Instant::now();
    let mut pid = 1;
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(400));
        c.publish_q1(pid, "busy/t", b"x");
        pid += 1;
    }
    c.sync();
}

#[test]
fn keepalive_zero_is_never_timed_out() {
    let b = Broker::start();
    let mut c = b.client_with(&ConnectOpts::new("forever").keepalive(0));
    c.expect_nothing(2000);
    c.sync();
}

#[test]
fn connection_without_connect_is_not_kept_forever() {
    let b = Broker::with_config("allow_anonymous true\n");
    let mut c = b.raw();
    // Mosquitto allows a connection a limited time to send CONNECT; no CONNECT, no broker
    // resources. The broker may wait a while, so give it generous room.
    let rest = c.expect_closed_within(Duration::from_secs(30));
    assert!(rest.is_empty());
}
