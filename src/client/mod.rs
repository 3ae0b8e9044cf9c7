//! What the client applets share: options, the connection and the MQTT client state machine.

pub fn pub_main(_args: Vec<String>) -> i32 {
    eprintln!("rmqtt_pub: not implemented yet");
    1
}

pub fn sub_main(_args: Vec<String>) -> i32 {
    eprintln!("rmqtt_sub: not implemented yet");
    1
}
