//! rmqtt: one multicall binary. The name it is started under picks the applet: `rmqtt` (the
//! broker), `rmqtt_pub`, `rmqtt_sub`, `rmqtt_rr`, `rmqtt_passwd`; `rmqtt pub ...` and the like work too.
#![deny(unsafe_code)]

use rmqtt::{broker, client, passwd};

use std::ffi::OsString;
use std::path::Path;

fn applet_name(arg0: &OsString) -> String {
    Path::new(arg0)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn run(name: &str, args: Vec<String>) -> i32 {
    match name {
        "rmqtt" | "mosquitto" => match args.get(1).map(String::as_str) {
            Some("pub") => run("rmqtt_pub", args.into_iter().skip(1).collect()),
            Some("sub") => run("rmqtt_sub", args.into_iter().skip(1).collect()),
            Some("rr") => run("rmqtt_rr", args.into_iter().skip(1).collect()),
            Some("passwd") => run("rmqtt_passwd", args.into_iter().skip(1).collect()),
            Some("broker") => broker::main(args.into_iter().skip(1).collect()),
            _ => broker::main(args),
        },
        "rmqtt_pub" | "mosquitto_pub" => client::pub_main(args),
        "rmqtt_sub" | "mosquitto_sub" => client::sub_main(args),
        "rmqtt_rr" | "mosquitto_rr" => client::rr_main(args),
        "rmqtt_passwd" | "mosquitto_passwd" => passwd::main(args),
        other => {
            eprintln!(
                "rmqtt: unknown applet name '{other}' (expected rmqtt, rmqtt_pub, rmqtt_sub, rmqtt_rr or rmqtt_passwd)"
            );
            1
        }
    }
}

fn main() {
    let raw: Vec<OsString> = std::env::args_os().collect();
    let name = raw.first().map(applet_name).unwrap_or_default();
    let args: Vec<String> = raw
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    std::process::exit(run(&name, args));
}
