//! rmqtt_rr: publish one request and print the response, behaving like mosquitto_rr 2.0: it
//! subscribes to the response topic (`-e`), publishes the message to `-t` once the SUBACK is in
//! (MQTT 5 by default, with the Response Topic property and any `-D publish` properties such as
//! correlation data), prints the first message that comes back in sub's formats (`-v`, `-F`,
//! `-N`, `-R`) and exits 0 without a DISCONNECT, as mosquitto_rr does. `-W` ends the wait
//! with `Timed out` and exit code 27.
//!
//! Options are the common ones plus pub's message options and sub's output options, from those
//! applets' tables. On SIGINT / SIGTERM it sends DISCONNECT and exits 0 like rmqtt_sub
//! (mosquitto_rr has no handler for them and dies).

use super::options::{self, Applet, Config, Opt, PubMode};
use super::output::{self, Style};
use super::session::{report_connect_error, ClientError, Session};
use super::signals;
use crate::protocol::{reason, Packet, Properties, Publish, QoS, SubOptions, Subscribe, Version};
use std::time::{Duration, Instant};

/// Exit code when `-W` expires: mosquitto's `MOSQ_ERR_TIMEOUT`.
const EXIT_TIMEOUT: i32 = 27;

/// The options of pub and sub that mosquitto_rr takes too.
const FROM_PUB: &[&str] = &["-f", "-m", "-n", "-s", "-r"];
const FROM_SUB: &[&str] = &["-F", "-N", "-R", "--pretty", "-v", "-W"];

static RR_OWN: &[Opt] = &[Opt {
    names: &["-e"],
    arg_missing: Some("Error: -e argument given but no response topic specified.\n\n"),
    apply: |c, v| {
        c.response_topic = Some(v.to_owned());
        Ok(())
    },
}];

fn rr_opts() -> Vec<Opt> {
    let wanted = |table: &'static [Opt], names: &[&str]| {
        table
            .iter()
            .filter(|o| o.names.iter().any(|n| names.contains(n)))
            .copied()
            .collect::<Vec<_>>()
    };
    let mut v = wanted(super::pub_app::PUB_OPTS, FROM_PUB);
    v.extend(wanted(super::sub_app::SUB_OPTS, FROM_SUB));
    v.extend(RR_OWN.iter().copied());
    v
}

fn print_version() {
    println!(
        "rmqtt_rr version {} running on rmqtt {}.",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION")
    );
}

fn print_usage() {
    super::usage::print(super::usage::RR, "rmqtt_rr");
}

pub fn main(args: Vec<String>) -> i32 {
    let own = rr_opts();
    let cfg = match options::load_or_exit(Applet::Rr, &own, &args, print_usage, print_version) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let message = match super::pub_app::read_input(&cfg) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let (Some(topic), Some(response), Some(message)) = (
        cfg.topics.first().cloned(),
        cfg.response_topic.clone(),
        message.filter(|_| cfg.pub_mode != PubMode::None),
    ) else {
        eprintln!("Error: All of topic, message, and response topic must be supplied.");
        eprintln!("\nUse 'rmqtt_rr --help' to see usage.");
        return 1;
    };
    if let Some(code) = super::unsupported(&cfg) {
        return code;
    }
    let deadline =
        (cfg.timeout > 0).then(|| Instant::now() + Duration::from_secs(u64::from(cfg.timeout)));
    signals::install();
    let mut s = match Session::connect(&cfg) {
        Ok((s, _)) => s,
        Err(e) => return report_connect_error(&e, cfg.version, cfg.quiet, false),
    };
    let request = Publish {
        dup: false,
        qos: QoS::from_u8(cfg.qos).unwrap_or_default(),
        retain: cfg.retain,
        topic: topic.as_str().into(),
        pid: 0,
        payload: message,
        properties: if s.version == Version::V5 {
            let mut p = cfg.props.publish.clone();
            p.response_topic = Some(response.clone());
            p
        } else {
            Properties::default()
        },
    };
    match exchange(&cfg, &mut s, response, request, deadline) {
        Ok(code) => code,
        Err(ClientError::Stopped) => {
            let _ = s.disconnect(&cfg.props.disconnect);
            0
        }
        Err(e) => report_connect_error(&e, cfg.version, cfg.quiet, false),
    }
}

/// Subscribe, publish on SUBACK, print the first response (a QoS 2 one once its flow is
/// complete).
fn exchange(
    cfg: &Config,
    s: &mut Session,
    response: String,
    mut request: Publish,
    deadline: Option<Instant>,
) -> Result<i32, ClientError> {
    let opts = SubOptions {
        qos: request.qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    };
    let pid = s.next_mid();
    s.send(&Packet::Subscribe(Subscribe {
        pid,
        filters: vec![(response, opts)],
        properties: cfg.props.subscribe.clone(),
    }))?;
    // A QoS 2 response whose PUBREL has not come yet.
    let mut held: Option<Publish> = None;
    loop {
        let Some(p) = s.recv(deadline)? else {
            if !cfg.quiet {
                eprintln!("Timed out");
            }
            s.disconnect_with(reason::DISCONNECT_WITH_WILL, &cfg.props.disconnect)?;
            return Ok(EXIT_TIMEOUT);
        };
        match p {
            Packet::SubAck(a) => match a.codes.first() {
                Some(&c) if c >= 0x80 => {
                    if !cfg.quiet {
                        eprintln!("{}", reason::reason_string(c));
                    }
                    s.disconnect(&cfg.props.disconnect)?;
                    return Ok(0);
                }
                _ => {
                    let mid = s.next_mid();
                    if request.qos != QoS::AtMostOnce {
                        request.pid = mid;
                    }
                    s.send_publish(request.clone(), mid)?;
                }
            },
            Packet::Publish(m) => {
                s.ack_incoming(&m)?;
                if m.retain && cfg.no_retain {
                    continue;
                }
                if m.qos == QoS::ExactlyOnce {
                    // As libmosquitto does: a QoS 2 message is passed on (printed) once its
                    // PUBREL has come and PUBCOMP has been sent; a PUBLISH sent again with
                    // the same id replaces it.
                    held = Some(m);
                    continue;
                }
                print_response(cfg, &m);
                return Ok(0);
            }
            Packet::PubRel(a) => {
                s.send(&Packet::PubComp(crate::protocol::Ack::new(a.pid)))?;
                if let Some(m) = held.take_if(|m| m.pid == a.pid) {
                    print_response(cfg, &m);
                    return Ok(0);
                }
            }
            Packet::PubRec(a) => s.send(&Packet::PubRel(crate::protocol::Ack::new(a.pid)))?,
            Packet::Disconnect(_) => return Err(ClientError::BrokerDisconnect),
            _ => {}
        }
    }
}

fn print_response(cfg: &Config, m: &Publish) {
    let style = Style {
        format: cfg.format.as_deref(),
        verbose: cfg.verbose,
        eol: cfg.eol,
        pretty: cfg.pretty,
    };
    output::print_message(&style, m, cfg.quiet);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_pub_message_and_sub_output_options() {
        let opts = rr_opts();
        for name in FROM_PUB.iter().chain(FROM_SUB).chain(["-e"].iter()) {
            assert!(
                opts.iter().any(|o| o.names.contains(name)),
                "{name} missing"
            );
        }
    }
}
