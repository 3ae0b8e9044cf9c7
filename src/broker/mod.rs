//! The broker: one thread, one mio event loop, and the state it owns.

pub fn main(_args: Vec<String>) -> i32 {
    eprintln!("rmqtt: broker not implemented yet");
    1
}
