//! Starting and stopping the programs under test (a broker or the raw relay) on a loopback port,
//! and reading their CPU time and memory from /proc. Every run gets a fresh process, so CPU,
//! peak RSS and retained state never carry over from one scenario to the next.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start one side of the comparison. `cmd` is split on whitespace; `{conf}` and `{port}`
/// are replaced by the generated config file and the chosen port.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub cmd: Vec<String>,
    /// The raw relay speaks no MQTT: the scenarios pair sockets with a hello header instead.
    pub relay: bool,
    pub style: Style,
    /// Config lines for this program only, after the shared ones (mosquitto.conf syntax).
    pub conf: Vec<String>,
}

/// The config file format a program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// mosquitto.conf: Mosquitto and rmqtt.
    Mosquitto,
    /// rumqttd's TOML.
    Rumqttd,
}

/// In parity mode every broker gets this in-flight window (the largest MQTT allows, what rmqtt
/// uses when `max_inflight_messages` is 0) and no queue limit of its own: the load generator's
/// windows are then the only limits, the same for all.
pub const PARITY_INFLIGHT: u32 = 65535;

/// The mosquitto.conf lines of parity mode (they override the shared defaults).
pub fn parity_lines() -> Vec<String> {
    vec![
        format!("max_inflight_messages {PARITY_INFLIGHT}"),
        "max_queued_messages 0".to_string(),
    ]
}

/// Settings shared by both brokers, in mosquitto.conf syntax (rmqtt reads the same files).
/// Mosquitto keeps its default Nagle setting (what its users run, and its best throughput)
/// unless the program's own lines say `set_tcp_nodelay true`; rmqtt disables Nagle by default.
/// A shared line whose key an extra line sets too is left out, so the file says each once.
pub fn config_text(port: u16, extra: &[String]) -> String {
    let key = |l: &str| l.split_whitespace().next().map(str::to_owned);
    let overridden = |l: &str| {
        let k = key(l);
        k.as_deref() != Some("listener") && extra.iter().any(|e| key(e).is_some() && key(e) == k)
    };
    let mut s = String::new();
    for line in [
        format!("listener {port} 127.0.0.1"),
        "allow_anonymous true".to_string(),
        "persistence false".to_string(),
        "max_inflight_messages 20".to_string(),
        "max_queued_messages 1000".to_string(),
    ] {
        if !overridden(&line) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    for line in extra {
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// rumqttd 0.20's config for one MQTT 3.1.1 listener on `port`: its sample config's limits,
/// with payloads up to 1 MiB (the large-q1 scenario) and room for the connections scenario;
/// in parity mode the in-flight window of [`PARITY_INFLIGHT`].
pub fn rumqttd_config(port: u16, parity: bool) -> String {
    let inflight = if parity { PARITY_INFLIGHT } else { 100 };
    format!(
        "id = 0\n\n[router]\nid = 0\nmax_connections = 20010\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\nmax_segment_count = 10\n\n\
         [v4.1]\nname = \"v4-1\"\nlisten = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 0\n\
         [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 1048576\n\
         max_inflight_count = {inflight}\ndynamic_filters = true\n"
    )
}

/// The config a program gets on `port`: the shared lines, then its own.
pub fn config_for(spec: &Spec, port: u16, extra: &[String], parity: bool) -> String {
    match spec.style {
        Style::Mosquitto => {
            let lines: Vec<String> = extra.iter().chain(&spec.conf).cloned().collect();
            config_text(port, &lines)
        }
        Style::Rumqttd => rumqttd_config(port, parity),
    }
}

pub struct Running {
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
    cpu_at_start: f64,
}

/// Snapshot of a process from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub fn free_port() -> io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub fn start(
    spec: &Spec,
    workdir: &Path,
    extra_conf: &[String],
    parity: bool,
) -> io::Result<Running> {
    let port = free_port()?;
    let ext = if spec.style == Style::Rumqttd {
        "toml"
    } else {
        "conf"
    };
    let conf = workdir.join(format!("{}-{port}.{ext}", spec.name));
    fs::write(&conf, config_for(spec, port, extra_conf, parity))?;
    let log = workdir.join(format!("{}.log", spec.name));
    let logf = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let args: Vec<String> = spec
        .cmd
        .iter()
        .map(|a| {
            a.replace("{conf}", &conf.to_string_lossy())
                .replace("{port}", &port.to_string())
        })
        .collect();
    let Some((prog, rest)) = args.split_first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty broker command",
        ));
    };
    let mut child = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {prog}: {e}")))?;
    let pid = child.id();
    let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{} exited at startup ({status}); see {}",
                spec.name,
                log.display()
            )));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not listen on {addr} within 5 s; see {}",
                    spec.name,
                    log.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the broker finish handling the probe connection before the baseline is taken.
    std::thread::sleep(Duration::from_millis(50));
    let cpu_at_start = cpu_seconds_of(pid).unwrap_or(0.0);
    Ok(Running {
        child,
        pid,
        addr,
        log,
        cpu_at_start,
    })
}

impl Running {
    /// CPU seconds used since `start` returned.
    pub fn cpu_seconds(&self) -> f64 {
        let now = cpu_seconds_of(self.pid).unwrap_or(self.cpu_at_start);
        (now - self.cpu_at_start).max(0.0)
    }

    pub fn stats(&self) -> ProcStats {
        proc_stats(self.pid).unwrap_or_default()
    }

    /// Still running? A broker that crashed during a scenario is reported as such.
    pub fn exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within two seconds.
    pub fn stop(mut self) {
        send_signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, sig: libc::c_int) {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(p, sig);
        }
    }
}

/// CPU time of a process (all threads), in seconds: from its POSIX CPU clock, which has
/// nanosecond resolution, else from /proc/PID/stat in clock ticks (usually 10 ms).
#[allow(unsafe_code)]
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        let mut clock: libc::clockid_t = 0;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointers; both calls only fail with an error code.
        let ok = unsafe {
            libc::clock_getcpuclockid(p, &mut clock) == 0
                && libc::clock_gettime(clock, &mut ts) == 0
        };
        if ok {
            return Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9);
        }
    }
    proc_stats(pid).map(|s| s.cpu_ticks as f64 / clock_ticks_per_second())
}

#[allow(unsafe_code)]
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcStats {
        cpu_ticks: utime + stime,
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
    })
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit. Brokers we
/// spawn inherit it.
#[allow(unsafe_code)]
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    let cur = lim.rlim_cur as u64;
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_stats_are_readable() {
        let s = proc_stats(std::process::id()).unwrap();
        assert!(s.rss_kb > 0);
        assert!(s.hwm_kb >= s.rss_kb);
    }

    #[test]
    fn cpu_clock_of_a_child_is_readable() {
        let mut child = Command::new("sleep").arg("2").spawn().unwrap();
        let t = cpu_seconds_of(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        let t = t.unwrap();
        assert!((0.0..1.0).contains(&t), "{t}");
    }

    #[test]
    fn each_program_gets_its_own_lines_and_format() {
        let spec = |style, conf: &[&str]| Spec {
            name: "x".into(),
            cmd: vec!["x".into()],
            relay: false,
            style,
            conf: conf.iter().map(|s| s.to_string()).collect(),
        };
        let shared = vec!["log_type error".to_string()];
        let nodelay = config_for(
            &spec(Style::Mosquitto, &["set_tcp_nodelay true"]),
            7,
            &shared,
            false,
        );
        assert!(
            nodelay.ends_with("log_type error\nset_tcp_nodelay true\n"),
            "{nodelay}"
        );
        let parity: Vec<String> = parity_lines();
        let c = config_for(&spec(Style::Mosquitto, &[]), 7, &parity, true);
        assert!(
            c.ends_with("max_inflight_messages 65535\nmax_queued_messages 0\n"),
            "{c}"
        );
        assert_eq!(c.matches("max_inflight_messages").count(), 1, "{c}");
        assert_eq!(c.matches("max_queued_messages").count(), 1, "{c}");
        let r = config_for(&spec(Style::Rumqttd, &[]), 7, &shared, false);
        assert!(r.contains("listen = \"127.0.0.1:7\""), "{r}");
        assert!(r.contains("max_inflight_count = 100\n"), "{r}");
        let r = config_for(&spec(Style::Rumqttd, &[]), 7, &parity, true);
        assert!(r.contains("max_inflight_count = 65535\n"), "{r}");
    }

    #[test]
    fn config_names_port_and_extra_lines() {
        let c = config_text(1234, &["log_type error".to_string()]);
        assert!(c.starts_with("listener 1234 127.0.0.1\n"));
        assert!(c.contains("allow_anonymous true\n"));
        assert!(c.ends_with("log_type error\n"));
    }
}
