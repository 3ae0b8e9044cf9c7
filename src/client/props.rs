//! MQTT 5 properties given on the command line with `-D command identifier value [value]`,
//! checked against the packet they go in, with mosquitto's property names and error wording.
//!
//! Never panics on user input.

use super::options::{atoi, OptError};
use crate::protocol::Properties;
use bytes::Bytes;

/// Properties for each packet the clients send.
#[derive(Debug, Clone, Default)]
pub struct PropSet {
    pub connect: Properties,
    pub publish: Properties,
    pub subscribe: Properties,
    pub unsubscribe: Properties,
    pub disconnect: Properties,
    pub will: Properties,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Connect,
    Publish,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Will,
    Other,
}

fn command(name: &str) -> Option<Cmd> {
    Some(match name {
        "connect" => Cmd::Connect,
        "publish" => Cmd::Publish,
        "subscribe" => Cmd::Subscribe,
        "unsubscribe" => Cmd::Unsubscribe,
        "disconnect" => Cmd::Disconnect,
        "will" => Cmd::Will,
        "puback" | "pubrec" | "pubrel" | "pubcomp" | "auth" => Cmd::Other,
        _ => return None,
    })
}

/// Every property name mosquitto knows, with the commands a client may put it in.
fn allowed(name: &str) -> Option<&'static [Cmd]> {
    use Cmd::*;
    Some(match name {
        "payload-format-indicator"
        | "message-expiry-interval"
        | "content-type"
        | "response-topic"
        | "correlation-data" => &[Publish, Will],
        "subscription-identifier" => &[Subscribe],
        "session-expiry-interval" => &[Connect, Disconnect],
        "authentication-method" | "authentication-data" => &[Connect, Other],
        "request-problem-information" | "request-response-information" => &[Connect],
        "will-delay-interval" => &[Will],
        "reason-string" => &[Disconnect, Other],
        "receive-maximum" | "topic-alias-maximum" | "maximum-packet-size" => &[Connect],
        "topic-alias" => &[Publish],
        "user-property" => &[
            Connect,
            Publish,
            Subscribe,
            Unsubscribe,
            Disconnect,
            Will,
            Other,
        ],
        "assigned-client-identifier"
        | "server-keep-alive"
        | "response-information"
        | "server-reference"
        | "maximum-qos"
        | "retain-available"
        | "wildcard-subscription-available"
        | "subscription-identifier-available"
        | "shared-subscription-available" => &[],
        _ => return None,
    })
}

fn bad(msg: String) -> OptError {
    OptError::Bad(msg)
}

fn num<T: TryFrom<i64>>(v: &str, name: &str) -> Result<T, OptError> {
    T::try_from(atoi(v)).map_err(|_| bad(format!("Error: Invalid value for property {name}.\n\n")))
}

/// Parses the words after `-D`; answers how many it used.
pub fn parse_property(set: &mut PropSet, words: &[String]) -> Result<usize, OptError> {
    let not_enough =
        || bad("Error: --property argument given but not enough arguments specified.\n\n".into());
    let (Some(cmd), Some(name), Some(value)) = (words.first(), words.get(1), words.get(2)) else {
        return Err(not_enough());
    };
    let Some(c) = command(cmd) else {
        return Err(bad(
            "Error: Invalid command given in --property argument.\n\n".into(),
        ));
    };
    let Some(cmds) = allowed(name) else {
        return Err(bad(
            "Error: Invalid property name given in --property argument.\n\n".into(),
        ));
    };
    if !cmds.contains(&c) {
        return Err(bad(format!(
            "Error: {name} property not allowed for {cmd} in --property argument.\n\n"
        )));
    }
    let p = match c {
        Cmd::Connect => &mut set.connect,
        Cmd::Publish => &mut set.publish,
        Cmd::Subscribe => &mut set.subscribe,
        Cmd::Unsubscribe => &mut set.unsubscribe,
        Cmd::Disconnect => &mut set.disconnect,
        Cmd::Will => &mut set.will,
        // Accepted for compatibility; these clients never send those packets with properties.
        Cmd::Other => return Ok(if name == "user-property" { 4 } else { 3 }),
    };
    match name.as_str() {
        "payload-format-indicator" => p.payload_format_indicator = Some(num(value, name)?),
        "message-expiry-interval" => p.message_expiry_interval = Some(num(value, name)?),
        "content-type" => p.content_type = Some(value.clone()),
        "response-topic" => p.response_topic = Some(value.clone()),
        "correlation-data" => p.correlation_data = Some(Bytes::from(value.clone().into_bytes())),
        "subscription-identifier" => p.subscription_identifiers = vec![num(value, name)?],
        "session-expiry-interval" => p.session_expiry_interval = Some(num(value, name)?),
        "authentication-method" => p.authentication_method = Some(value.clone()),
        "authentication-data" => {
            p.authentication_data = Some(Bytes::from(value.clone().into_bytes()))
        }
        "request-problem-information" => p.request_problem_information = Some(num(value, name)?),
        "request-response-information" => p.request_response_information = Some(num(value, name)?),
        "will-delay-interval" => p.will_delay_interval = Some(num(value, name)?),
        "reason-string" => p.reason_string = Some(value.clone()),
        "receive-maximum" => p.receive_maximum = Some(num(value, name)?),
        "topic-alias-maximum" => p.topic_alias_maximum = Some(num(value, name)?),
        "maximum-packet-size" => p.maximum_packet_size = Some(num(value, name)?),
        "topic-alias" => p.topic_alias = Some(num(value, name)?),
        "user-property" => {
            let Some(v2) = words.get(3) else {
                return Err(not_enough());
            };
            p.user_properties.push((value.clone(), v2.clone()));
            return Ok(4);
        }
        _ => {}
    }
    Ok(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_and_checks() {
        let mut s = PropSet::default();
        assert_eq!(
            parse_property(&mut s, &w(&["publish", "content-type", "x"])),
            Ok(3)
        );
        assert_eq!(s.publish.content_type.as_deref(), Some("x"));
        assert_eq!(
            parse_property(&mut s, &w(&["connect", "user-property", "a", "b"])),
            Ok(4)
        );
        assert_eq!(s.connect.user_properties, vec![("a".into(), "b".into())]);
        assert!(matches!(
            parse_property(&mut s, &w(&["connect", "content-type", "x"])),
            Err(OptError::Bad(m)) if m == "Error: content-type property not allowed for connect in --property argument.\n\n"
        ));
        assert!(parse_property(&mut s, &w(&["foo", "content-type", "x"])).is_err());
        assert!(parse_property(&mut s, &w(&["publish"])).is_err());
    }
}
