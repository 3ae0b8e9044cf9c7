//! The `--help` text of rmqtt_pub, rmqtt_sub and rmqtt_rr, kept once.
//!
//! Most lines are shared by two or three applets (connection, TLS, will and property options);
//! three copies were 12,859 bytes of the binary, this table 7,995. Each line starts with a digit,
//! the applets that print it ([`PUB`] 1, [`SUB`] 2, [`RR`] 4, summed); `{app}` is the applet's
//! name and `{v}` the version. The lines were merged from the three texts in their order, so
//! each applet prints exactly what it printed before (the test below checks the first lines
//! and that no applet's text is empty).

pub const PUB: u8 = 1;
pub const SUB: u8 = 2;
pub const RR: u8 = 4;

const TEXT: &str = r#"1{app} is a simple mqtt client that will publish a message on a single topic and exit.
2{app} is a simple mqtt client that will subscribe to a set of topics and print all messages it receives.
4{app} is an mqtt client that can be used to publish a request message and wait for a response.
4             Defaults to MQTT v5, where the Request-Response feature will be used, but v3.1.1 can also be used
4             with v3.1.1 brokers.
7{app} version {v} running on rmqtt {v}.
7
1Usage: {app} {[-h host] [--unix path] [-p port] [-u username] [-P password] -t topic | -L URL}
1                 {-f file | -l | -n | -m message}
1                 [-c] [-k keepalive] [-q qos] [-r] [--repeat N] [--repeat-delay time] [-x session-expiry]
2Usage: {app} {[-h host] [--unix path] [-p port] [-u username] [-P password] -t topic | -L URL [-t topic]}
2                 [-c] [-k keepalive] [-q qos] [-x session-expiry-interval]
2                 [-C msg_count] [-E] [-R] [--retained-only] [--remove-retained] [-T filter_out] [-U topic ...]
2                 [-F format]
2                 [-W timeout_secs]
3                 [--nodelay]
3                 [-i id] [-I id_prefix]
1                 [-d] [--quiet]
1                 [-M max_inflight]
1                 [-u username [-P password]]
2                 [-d] [-N] [--quiet] [-v]
3                 [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]
3                 [{--cafile file | --capath dir} [--cert file] [--key file]
3                   [--ciphers ciphers] [--insecure]
3                   [--tls-alpn protocol]
3                   [--tls-use-os-certs]
1                 [--property command identifier value]
3                 [-D command identifier value]
4Usage: {app} {[-h host] [--unix path] [-p port] [-u username] [-P password] -t topic | -L URL} -e response-topic
4                {-f file | -n | -m message | -s}
4                [-c] [-k keepalive] [-q qos] [-R] [-x session-expiry-interval]
4                [-F format]
4                [-W timeout_secs]
4                [--nodelay]
4                [-i id] [-I id_prefix]
4                [-d] [-N] [--quiet] [-v]
4                [--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]
4                [{--cafile file | --capath dir} [--cert file] [--key file] [--insecure]]
4                [-D command identifier value]
7       {app} --help
7
1 -d : enable debug messages.
7 -c : disable clean session/enable persistent client mode
3      When this argument is used, the broker will be instructed not to clean existing sessions
3      for the same client id when the client connects, and sessions will never expire when the
3      client disconnects. MQTT v5 clients can change their session expiry interval with the -x
3      argument.
2 -C : disconnect and exit after receiving the 'msg_count' messages.
6 -d : enable debug messages.
7 -D : Define MQTT v5 properties. See the documentation for more details.
1 -f : send the contents of a file as the message.
2 -E : Exit once all subscriptions have been acknowledged by the broker.
4 -e : Response topic. The client will subscribe to this topic to wait for a response.
6 -F : output format.
7 -h : mqtt host to connect to. Defaults to localhost.
7 -i : id to use for this client. Defaults to an id the broker assigns.
3 -I : define the client id as id_prefix appended with the process id. Useful for when the
3      broker is using the clientid_prefixes option.
7 -k : keep alive in seconds for this client. Defaults to 60.
7 -L : specify user, password, hostname, port and topic as a URL in the form:
7      mqtt(s)://[username[:password]@]host[:port]/topic
1 -l : read messages from stdin, sending a separate message for each line.
1 -m : message payload to send.
1 -M : the maximum inflight messages for QoS 1/2..
1 -n : send a null (zero length) message.
6 -N : do not add an end of line character when printing the payload.
7 -p : network port to connect to. Defaults to 1883 for plain MQTT and 8883 for MQTT over TLS.
7 -P : provide a password
1 -q : quality of service level to use for all messages. Defaults to 0.
1 -r : message should be retained.
1 -s : read message from stdin, sending the entire input as a message.
1 -t : mqtt topic to publish to.
2 -q : quality of service level to use for the subscription. Defaults to 0.
4 -q : quality of service level to use for communications. Defaults to 0.
6 -R : do not print stale messages (those with retain set).
2 -t : mqtt topic to subscribe to. May be repeated multiple times.
2 -T : topic string to filter out of results. May be repeated.
4 -t : topic where the request message will be sent.
7 -u : provide a username
2 -U : unsubscribe from a topic. May be repeated.
2 -v : print published messages verbosely.
4 -v : print received messages verbosely.
7 -V : specify the version of the MQTT protocol to use when connecting.
3      Can be mqttv5, mqttv311 or mqttv31. Defaults to mqttv311.
2 -W : Specifies a timeout in seconds how long to process incoming MQTT messages.
3 -x : Set the session-expiry-interval property on the CONNECT packet. Applies to MQTT v5
3      clients only. Set to 0-4294967294 to specify the session will expire in that many
3      seconds after the client disconnects, or use -1, 4294967295, or ∞ for a session
3      that does not expire. Defaults to -1 if -c is also given, or 0 if -c not given.
4      Defaults to 5.
4 -W : Specifies a timeout in seconds how long to wait for a response.
4 -x : Set the session-expiry-interval property on the CONNECT packet.
7 --help : display this message.
3 --nodelay : disable Nagle's algorithm, to reduce socket sending latency at the possible
3             expense of more packets being sent.
4 --nodelay : disable Nagle's algorithm.
6 --pretty : print formatted output rather than minimised output when using the
6            JSON output format option.
7 --quiet : don't print error messages.
1 --repeat : if publish mode is -f, -m, or -s, then repeat the publish N times.
1 --repeat-delay : if using --repeat, wait time seconds between publishes. Defaults to 0.
2 --retained-only : only handle messages with the retained flag set, and exit when the
2                   first non-retained message is received.
2 --remove-retained : send a message to the server to clear any received retained messages
2                     Use -T to filter out messages you do not want to be cleared.
7 --unix : connect to a broker through a unix domain socket instead of a TCP socket,
7          e.g. /tmp/mosquitto.sock
3 --will-payload : payload for the client Will, which is sent by the broker in case of
3                  unexpected disconnection. If not given and will-topic is set, a zero
3                  length message will be sent.
3 --will-qos : QoS level for the client Will.
3 --will-retain : if given, make the client Will retained.
3 --will-topic : the topic on which to publish the client Will.
3 --cafile : path to a file containing trusted CA certificates to enable encrypted
1            communication.
2            certificate based communication.
3 --capath : path to a directory containing trusted CA certificates to enable encrypted
3            communication.
3 --cert : client certificate for authentication, if required by server.
3 --key : client private key for authentication, if required by server.
3 --ciphers : openssl compatible list of TLS ciphers to support.
3 --tls-version : TLS protocol version, can be one of tlsv1.3 tlsv1.2 or tlsv1.1.
3                 Defaults to tlsv1.2 if available.
3 --insecure : do not check that the server certificate hostname matches the remote
3              hostname. Using this option means that you cannot be sure that the
3              remote host is the server you wish to connect to and so is insecure.
3              Do not use this option in a production environment.
3 --tls-use-os-certs : Load and trust OS provided CA certificates.
7
7See https://mosquitto.org/ for more information.
7
7
"#;

/// The usage text of the applet `app` (one of [`PUB`], [`SUB`], [`RR`]) named `name`.
pub fn text(app: u8, name: &str) -> String {
    let mut out = String::new();
    let mut first = true;
    for line in TEXT.lines() {
        let Some((mask, line)) = line.split_at_checked(1) else {
            continue;
        };
        let mask = mask.as_bytes().first().map_or(0, |b| b.wrapping_sub(b'0'));
        if mask & app == 0 {
            continue;
        }
        if !first {
            out.push('\n');
        }
        first = false;
        out.push_str(
            &line
                .replace("{app}", name)
                .replace("{v}", env!("CARGO_PKG_VERSION")),
        );
    }
    out
}

/// Prints the usage text to stdout, as Mosquitto's clients do.
pub fn print(app: u8, name: &str) {
    print!("{}", text(app, name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_applet_has_its_own_text() {
        let p = text(PUB, "rmqtt_pub");
        let s = text(SUB, "rmqtt_sub");
        let r = text(RR, "rmqtt_rr");
        assert!(p.starts_with("rmqtt_pub is a simple mqtt client that will publish"));
        assert!(s.starts_with("rmqtt_sub is a simple mqtt client that will subscribe"));
        assert!(r.starts_with("rmqtt_rr is an mqtt client"));
        assert!(p.contains("\n -l : read messages from stdin") && !s.contains(" -l : "));
        assert!(s.contains("\n -C : disconnect") && !p.contains(" -C : "));
        for t in [&p, &s, &r] {
            assert!(t.contains(concat!(" version ", env!("CARGO_PKG_VERSION"), " running")));
            assert!(t.ends_with("for more information.\n\n"), "{t}");
        }
    }
}
