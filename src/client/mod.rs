//! What the client applets share: options, the connection and the MQTT client state machine.
//!
//! `options` parses the flags both applets take (each applet adds its own table), `props` the
//! `-D` MQTT 5 properties, `session` is the blocking connection with keepalive and the `-d`
//! debug lines, `output` prints received messages. `pub_app` and `sub_app` are the applets.

mod options;
mod output;
mod props;
mod pub_app;
mod rr_app;
mod session;
mod signals;
mod sub_app;
mod usage;

/// rmqtt_pub: a drop-in replacement for mosquitto_pub.
pub fn pub_main(args: Vec<String>) -> i32 {
    pub_app::main(args)
}

/// rmqtt_rr: a drop-in replacement for mosquitto_rr (MQTT 5 request / response).
pub fn rr_main(args: Vec<String>) -> i32 {
    rr_app::main(args)
}

/// rmqtt_sub: a drop-in replacement for mosquitto_sub.
pub fn sub_main(args: Vec<String>) -> i32 {
    sub_app::main(args)
}

/// Options parsed for compatibility but not served yet: a clear error rather than a connection
/// that silently differs from what was asked (TLS especially).
fn unsupported(cfg: &options::Config) -> Option<i32> {
    let what = if cfg.bind_address.is_some() {
        "-A (bind address)"
    } else {
        return None;
    };
    if !cfg.quiet {
        eprintln!("Error: {what} not supported by this build of rmqtt yet.");
    }
    Some(1)
}
