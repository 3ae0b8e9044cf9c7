//! The router, end to end: the `.ipk` installed into a router root the way opkg installs it,
//! started through the init script by a procd stand-in, configured with `uci commit` as libuci
//! writes, reloaded as LuCI's "Save & Apply" does, and checked from real clients — on the
//! router itself and on a LAN host in another network namespace.
//!
//! The router is a directory with busybox (OpenWrt's shell and tools), the package's files, and
//! stand-ins for `/etc/rc.common`, `/lib/functions.sh` and `/lib/functions/procd.sh`
//! (`tests/router/`). Processes run chrooted there, inside a network namespace "router" joined
//! to a namespace "lan" by a veth pair (192.0.2.1 and 192.0.2.2, addresses that exist only in
//! those namespaces). procd itself is [`Procd`]: it starts instances as procd's
//! `instance_run` does (chroot aside: setgid/setuid for `user`/`group`, stdin from /dev/null,
//! stdout/stderr to its log), compares a new instance definition with the running one as
//! `instance_config_changed` does (command, env, files by content, user, group, respawn),
//! sends `reload_signal` instead of restarting when it is set, respawns by procd's rules
//! (threshold, timeout, retry), and runs `config.change` triggers for `reload_config`.
//!
//! Needs root (CI runs as root), `ip`, busybox-static, openssl, mosquitto and its clients
//! (scripts/install-deps.sh installs them). `RMQTT_ROUTER_BINARY` and `RMQTT_ROUTER_ARCH`
//! (e.g. `dist/cross/mips/ssl/rmqtt` and `mips_24kc`) run the same test on a router build under
//! qemu-user (binfmt_misc, registered here when missing).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const ROUTER_IP: &str = "192.0.2.1";
const LAN_IP: &str = "192.0.2.2";
const SERVICE_UID: u32 = 200;

fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the test can run here; without root (or a tool) it is skipped, unless the run
/// requires it (`make test` sets RMQTT_REQUIRE_INTEROP), when it fails.
fn can_run(test: &str) -> bool {
    let required = std::env::var_os("RMQTT_REQUIRE_INTEROP").is_some();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut missing: Vec<&str> = Vec::new();
    if !root {
        missing.push("root");
    }
    for tool in ["ip", "openssl", "mosquitto_sub", "mosquitto_pub"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            missing.push(tool);
        }
    }
    if !Path::new("/bin/busybox").exists() {
        missing.push("busybox-static");
    }
    if mosquitto_bin().is_none() {
        missing.push("mosquitto");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !required,
        "{test}: missing {missing:?} (scripts/install-deps.sh installs them; run as root)"
    );
    eprintln!("SKIP {test}: missing {missing:?}");
    false
}

fn mosquitto_bin() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn sh(cmd: &str) -> Output {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

fn tempdir(tag: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("rmqtt-router-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------------------------------------
// Network: two namespaces joined by a veth pair.

struct Netns {
    name: String,
    file: std::fs::File,
}

impl Netns {
    fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn network(tag: &str) -> (Netns, Netns) {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    let id = format!("{}{n}", std::process::id() % 100_000);
    let (r, l) = (format!("rmqtt-r{id}-{tag}"), format!("rmqtt-l{id}-{tag}"));
    let (vr, vl) = (format!("vr{id}"), format!("vl{id}"));
    sh(&format!(
        "ip netns add {r} && ip netns add {l} && ip link add {vr} type veth peer name {vl} && \
         ip link set {vr} netns {r} && ip link set {vl} netns {l} && \
         ip -n {r} addr add {ROUTER_IP}/24 dev {vr} && ip -n {l} addr add {LAN_IP}/24 dev {vl} && \
         ip -n {r} link set {vr} up && ip -n {l} link set {vl} up && \
         ip -n {r} link set lo up && ip -n {l} link set lo up"
    ));
    let open = |name: &str| Netns {
        name: name.to_owned(),
        file: std::fs::File::open(format!("/var/run/netns/{name}")).unwrap(),
    };
    (open(&r), open(&l))
}

/// `cmd` run inside the network namespace open as `fd`, and chrooted into `root` if given.
fn in_ns(mut cmd: Command, fd: i32, root: Option<&Path>) -> Command {
    let root = root.map(|r| std::ffi::CString::new(r.as_os_str().as_encoded_bytes()).unwrap());
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(r) = &root {
                if libc::chroot(r.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

// ---------------------------------------------------------------------------------------------
// The router's root filesystem, and the package installed into it as opkg does.

const ARCH_ENV: &str = "RMQTT_ROUTER_ARCH";
const BINARY_ENV: &str = "RMQTT_ROUTER_BINARY";

fn router_binary() -> (String, PathBuf) {
    let arch = std::env::var(ARCH_ENV).unwrap_or_else(|_| "x86_64".to_owned());
    let bin = std::env::var_os(BINARY_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rmqtt")));
    (arch, bin)
}

/// A 32-bit MIPS big-endian ELF runs through qemu-mips-static; registered with the F flag
/// (the interpreter is opened at registration), so it also works inside the chroot.
fn ensure_binfmt(binary: &Path) {
    let head = std::fs::read(binary).unwrap();
    let mips_be = head.get(..6) == Some(&[0x7f, b'E', b'L', b'F', 1, 2][..])
        && head.get(18..20) == Some(&[0, 8][..]);
    if !mips_be {
        return;
    }
    let _ = Command::new("mount")
        .args([
            "-t",
            "binfmt_misc",
            "binfmt_misc",
            "/proc/sys/fs/binfmt_misc",
        ])
        .stderr(Stdio::null())
        .status();
    if Path::new("/proc/sys/fs/binfmt_misc/rmqtt-mips").exists() {
        return;
    }
    let qemu = "/usr/bin/qemu-mips-static";
    assert!(
        Path::new(qemu).exists(),
        "{qemu} missing (qemu-user-static)"
    );
    let magic = r"\x7f\x45\x4c\x46\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08";
    let mask = r"\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff";
    let rule = format!(":rmqtt-mips:M::{magic}:{mask}:{qemu}:F");
    std::fs::write("/proc/sys/fs/binfmt_misc/register", rule).unwrap();
}

/// A minimal OpenWrt-like root: busybox as /bin/sh and its tools, the users of a fresh
/// OpenWrt image, /var on the RAM disk, and the rc.common / functions.sh / procd.sh stand-ins.
fn make_root(dir: &Path, binary: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "lib/functions",
        "etc/config",
        "etc/rc.d",
        "etc/init.d",
        "tmp/run",
        "tmp/lock",
        "usr/lib/opkg/info",
        "dev",
        "proc",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("tmp", root.join("var")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet == "busybox" {
            continue;
        }
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    // /dev/null for the shell; /proc for the broker and pidof.
    sh(&format!(
        "mknod -m 666 {0}/dev/null c 1 3 && mknod -m 666 {0}/dev/urandom c 1 9",
        root.display()
    ));
    let files: [(&str, &str); 6] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/ash\ndaemon:*:1:1:daemon:/var:/bin/false\n\
             network:*:101:101:network:/var:/bin/false\nnobody:*:65534:65534:nobody:/var:/bin/false\n",
        ),
        (
            "etc/group",
            "root:x:0:\ndaemon:x:1:\nnetwork:x:101:\nnogroup:x:65534:\n",
        ),
        ("etc/shadow", "root:::0:99999:7:::\n"),
        ("etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"),
        (
            "etc/config/system",
            "\nconfig system\n\toption hostname 'OpenWrt'\n",
        ),
        ("etc/rc.common", include_str!("router/rc.common")),
    ];
    for (path, body) in files {
        std::fs::write(root.join(path), body).unwrap();
    }
    std::fs::write(
        root.join("lib/functions.sh"),
        include_str!("router/functions.sh"),
    )
    .unwrap();
    std::fs::write(
        root.join("lib/functions/procd.sh"),
        include_str!("router/procd.sh"),
    )
    .unwrap();
    std::fs::write(root.join("lib/functions/service.sh"), "").unwrap();
    sh(&format!("chmod 0755 {}/etc/rc.common", root.display()));
    // A dynamically linked (host) build gets its libraries; a router build is static.
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = path {
            let dest = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &dest).unwrap();
        }
    }
    root
}

/// Builds the package with scripts/ipk.sh and installs it as `opkg install` does: data
/// unpacked with its modes and numeric owners, the control files under
/// /usr/lib/opkg/info, then postinst run on the router (PKG_ROOT=/, no IPKG_INSTROOT).
fn opkg_install(dir: &Path, root: &Path, arch: &str, binary: &Path, router: &Netns) -> String {
    let out = Command::new("bash")
        .arg(top().join("scripts/ipk.sh"))
        .args([
            arch,
            binary.to_str().unwrap(),
            dir.join("out").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "ipk.sh: {}", text(&out));
    let ipk = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(pkg.join("control")).unwrap();
    sh(&format!(
        "tar -xzf {ipk} -C {pkg} && tar -xzf {pkg}/control.tar.gz -C {pkg}/control && \
         tar -xzpf {pkg}/data.tar.gz --numeric-owner -C {root}",
        ipk = ipk.display(),
        pkg = pkg.display(),
        root = root.display()
    ));
    let info = root.join("usr/lib/opkg/info");
    let list = Command::new("tar")
        .args(["-tzf", pkg.join("data.tar.gz").to_str().unwrap()])
        .output()
        .unwrap();
    let files: String = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix('.'))
        .filter(|l| !l.is_empty() && !l.ends_with('/'))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(info.join("rmqtt.list"), files).unwrap();
    for f in ["control", "conffiles", "postinst", "prerm"] {
        let src = pkg.join("control").join(f);
        if src.exists() {
            std::fs::copy(&src, info.join(format!("rmqtt.{f}"))).unwrap();
        }
    }
    let out = in_ns(Command::new("/bin/sh"), router.fd(), Some(root))
        .arg("/usr/lib/opkg/info/rmqtt.postinst")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("PKG_ROOT", "/")
        .env("QEMU_CPU", "24Kc")
        .output()
        .unwrap();
    assert!(out.status.success(), "postinst: {}", text(&out));
    text(&out)
}

// ---------------------------------------------------------------------------------------------
// UCI: files as libuci reads and writes them.

#[derive(Clone, Debug)]
enum UciValue {
    One(String),
    List(Vec<String>),
}

#[derive(Clone, Debug)]
struct UciSection {
    ty: String,
    name: Option<String>,
    options: Vec<(String, UciValue)>,
}

#[derive(Clone, Debug, Default)]
struct Uci {
    sections: Vec<UciSection>,
}

fn uci_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => return out,
            _ => {}
        }
        let mut w = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\'' => w.extend(chars.by_ref().take_while(|&c| c != '\'')),
                '"' => {
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => w.extend(chars.next()),
                            c => w.push(c),
                        }
                    }
                }
                c => w.push(c),
            }
        }
        out.push(w);
    }
}

impl Uci {
    fn parse(text: &str) -> Uci {
        let mut uci = Uci::default();
        for line in text.lines() {
            let w = uci_words(line);
            match w.first().map(String::as_str) {
                Some("config") => uci.sections.push(UciSection {
                    ty: w[1].clone(),
                    name: w.get(2).cloned(),
                    options: Vec::new(),
                }),
                Some("option") => {
                    let s = uci.sections.last_mut().unwrap();
                    s.options.push((w[1].clone(), UciValue::One(w[2].clone())));
                }
                Some("list") => {
                    let s = uci.sections.last_mut().unwrap();
                    match s.options.iter_mut().find(|(n, _)| *n == w[1]) {
                        Some((_, UciValue::List(l))) => l.push(w[2].clone()),
                        _ => s
                            .options
                            .push((w[1].clone(), UciValue::List(vec![w[2].clone()]))),
                    }
                }
                _ => {}
            }
        }
        uci
    }

    /// The file `uci commit` writes: no comments, values in single quotes.
    fn export(&self) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
        let mut out = String::new();
        for s in &self.sections {
            out.push_str(&format!("\nconfig {}", s.ty));
            if let Some(n) = &s.name {
                out.push_str(&format!(" {}", q(n)));
            }
            out.push('\n');
            for (k, v) in &s.options {
                match v {
                    UciValue::One(v) => out.push_str(&format!("\toption {k} {}\n", q(v))),
                    UciValue::List(l) => {
                        for v in l {
                            out.push_str(&format!("\tlist {k} {}\n", q(v)));
                        }
                    }
                }
            }
        }
        out.push('\n');
        out
    }

    /// `NAME` or `@TYPE[i]` (negative i counts from the end), as `uci set` takes them.
    fn section(&mut self, sel: &str) -> &mut UciSection {
        if let Some(rest) = sel.strip_prefix('@') {
            let (ty, idx) = rest.trim_end_matches(']').split_once('[').unwrap();
            let idx: i64 = idx.parse().unwrap();
            let mut of: Vec<&mut UciSection> =
                self.sections.iter_mut().filter(|s| s.ty == ty).collect();
            let i = if idx < 0 { of.len() as i64 + idx } else { idx } as usize;
            of.swap_remove(i)
        } else {
            self.sections
                .iter_mut()
                .find(|s| s.name.as_deref() == Some(sel))
                .unwrap_or_else(|| panic!("no section {sel}"))
        }
    }

    /// `uci set SECTION.OPTION=VALUE`.
    fn set(&mut self, sel: &str, opt: &str, value: &str) -> &mut Uci {
        let s = self.section(sel);
        match s.options.iter_mut().find(|(n, _)| n == opt) {
            Some((_, v)) => *v = UciValue::One(value.to_owned()),
            None => s
                .options
                .push((opt.to_owned(), UciValue::One(value.to_owned()))),
        }
        self
    }

    /// `uci delete SECTION.OPTION`.
    fn delete(&mut self, sel: &str, opt: &str) -> &mut Uci {
        self.section(sel).options.retain(|(n, _)| n != opt);
        self
    }

    /// `uci add TYPE` plus its options; a name with a leading `+` is a list (`uci add_list`).
    fn add(&mut self, ty: &str, options: &[(&str, &str)]) -> &mut Uci {
        let mut s = UciSection {
            ty: ty.to_owned(),
            name: None,
            options: Vec::new(),
        };
        for (k, v) in options {
            if let Some(k) = k.strip_prefix('+') {
                match s.options.iter_mut().find(|(n, _)| n == k) {
                    Some((_, UciValue::List(l))) => l.push((*v).to_owned()),
                    _ => s
                        .options
                        .push((k.to_owned(), UciValue::List(vec![(*v).to_owned()]))),
                }
                continue;
            }
            match s.options.iter_mut().find(|(n, _)| n == k) {
                Some((_, UciValue::List(l))) => l.push((*v).to_owned()),
                Some((_, UciValue::One(old))) => {
                    let old = old.clone();
                    s.options.retain(|(n, _)| n != k);
                    s.options
                        .push(((*k).to_owned(), UciValue::List(vec![old, (*v).to_owned()])));
                }
                None => s
                    .options
                    .push(((*k).to_owned(), UciValue::One((*v).to_owned()))),
            }
        }
        self.sections.push(s);
        self
    }

    fn remove_section(&mut self, sel: &str) -> &mut Uci {
        let target: *const UciSection = self.section(sel);
        self.sections.retain(|s| !std::ptr::eq(s, target));
        self
    }
}

/// `uci commit PACKAGE`, as libuci does it: a new temporary file in the config directory,
/// given the old file's mode, renamed over the old one. The owner becomes the writer's (root).
fn uci_commit(root: &Path, package: &str, uci: &Uci) {
    let dir = root.join("etc/config");
    let path = dir.join(package);
    let mode = std::fs::metadata(&path).map(|m| m.mode() & 0o7777).ok();
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    let tmp = dir.join(format!(
        ".{package}.uci-{:06x}",
        std::process::id() as usize ^ n
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .unwrap();
    f.write_all(uci.export().as_bytes()).unwrap();
    if let Some(mode) = mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .unwrap();
    }
    f.sync_all().unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn uci_read(root: &Path, package: &str) -> Uci {
    Uci::parse(&std::fs::read_to_string(root.join("etc/config").join(package)).unwrap())
}

// ---------------------------------------------------------------------------------------------
// procd.

#[derive(Clone, Debug, Default, PartialEq)]
struct Spec {
    command: Vec<String>,
    env: Vec<String>,
    /// Watched files and their contents when the instance was defined (procd keeps an md5).
    files: Vec<(String, Vec<u8>)>,
    user: Option<String>,
    group: Option<String>,
    respawn: Option<(u64, u64, u32)>,
    reload_signal: Option<i32>,
    stdout: bool,
    stderr: bool,
    mdns: Vec<Vec<String>>,
}

impl Spec {
    /// procd's instance_config_changed, for the parameters the init script can set.
    fn changed(&self, new: &Spec) -> bool {
        self.command != new.command
            || self.env != new.env
            || self.files != new.files
            || self.user != new.user
            || self.group != new.group
            || self.respawn != new.respawn
    }
}

struct Inst {
    spec: Spec,
    child: Option<Child>,
    started: Instant,
    respawn_count: u32,
    start_at: Option<Instant>,
    kill_at: Option<Instant>,
    halt: bool,
    restart: bool,
    failed: bool,
}

#[derive(Default)]
struct Service {
    instances: BTreeMap<String, Inst>,
    triggers: Vec<Vec<String>>,
}

struct ProcdState {
    root: PathBuf,
    netns: i32,
    services: BTreeMap<String, Service>,
    log: Arc<Mutex<Vec<String>>>,
}

struct Procd {
    state: Arc<Mutex<ProcdState>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

const SPOOL: &str = "var/run/procd-standin";

/// uid and primary gid of `user` in the router's /etc/passwd (procd's getpwnam).
fn user_ids(root: &Path, user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&user) {
            return None;
        }
        Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
    })
}

impl ProcdState {
    fn start(&mut self, service: &str, name: &str) {
        let root = self.root.clone();
        let netns = self.netns;
        let log = self.log.clone();
        let Some(inst) = self
            .services
            .get_mut(service)
            .and_then(|s| s.instances.get_mut(name))
        else {
            return;
        };
        if inst.child.is_some() {
            if inst.halt {
                inst.restart = true;
            }
            return;
        }
        inst.halt = false;
        inst.restart = false;
        inst.start_at = None;
        let spec = &inst.spec;
        let Some((prog, args)) = spec.command.split_first() else {
            return;
        };
        let ids = spec.user.as_deref().and_then(|u| user_ids(&root, u));
        let gid = spec
            .group
            .as_deref()
            .and_then(|g| {
                let groups = std::fs::read_to_string(root.join("etc/group")).ok()?;
                groups.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.first() == Some(&g)).then(|| f.get(2)?.parse().ok())?
                })
            })
            .or(ids.map(|i| i.1));
        let mut cmd = in_ns(Command::new(prog), netns, Some(&root));
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("QEMU_CPU", "24Kc")
            .stdin(Stdio::null())
            .stdout(if spec.stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if spec.stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        for kv in &spec.env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        if let Some(gid) = gid {
            cmd.gid(gid);
        }
        if let Some((uid, _)) = ids {
            cmd.uid(uid);
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id();
                let sink = log.clone();
                each_line(&mut child, move |line| {
                    sink.lock().unwrap().push(format!("rmqtt[{pid}]: {line}"));
                    true
                });
                log.lock()
                    .unwrap()
                    .push(format!("procd: Started instance {service}::{name}[{pid}]"));
                inst.child = Some(child);
                inst.started = Instant::now();
            }
            Err(e) => log
                .lock()
                .unwrap()
                .push(format!("procd: cannot start {service}::{name}: {e}")),
        }
    }

    fn signal(inst: &Inst, sig: i32) {
        if let Some(c) = &inst.child {
            // SAFETY: kill with a pid we own.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// instance_stop(halt): SIGTERM now, SIGKILL after term_timeout (5 s).
    fn stop(inst: &mut Inst) {
        inst.halt = true;
        inst.restart = false;
        inst.start_at = None;
        if inst.child.is_some() {
            Self::signal(inst, libc::SIGTERM);
            inst.kill_at = Some(Instant::now() + Duration::from_secs(5));
        }
    }

    fn handle(&mut self, lines: &[Vec<String>]) {
        let Some(first) = lines.first() else { return };
        match first.first().map(String::as_str) {
            Some("service") => self.handle_set(&first[1], &lines[1..]),
            Some("delete") => {
                if let Some(s) = self.services.get_mut(&first[1]) {
                    for (name, inst) in s.instances.iter_mut() {
                        if first.get(2).is_none_or(|i| i.is_empty() || i == name) {
                            Self::stop(inst);
                        }
                    }
                }
            }
            Some("signal") => {
                let sig: i32 = first.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
                if let Some(s) = self.services.get(&first[1]) {
                    for (name, inst) in &s.instances {
                        if first.get(2).is_none_or(|i| i.is_empty() || i == name) {
                            Self::signal(inst, sig);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// `ubus call service set`: service_update / instance_update.
    fn handle_set(&mut self, service: &str, lines: &[Vec<String>]) {
        let mut new: Vec<(String, Spec)> = Vec::new();
        let mut triggers = Vec::new();
        for l in lines {
            let f = |i: usize| l.get(i).cloned().unwrap_or_default();
            match l.first().map(String::as_str) {
                Some("instance") => new.push((f(1), Spec::default())),
                Some(kind @ ("param" | "append")) => {
                    let Some((_, spec)) = new.last_mut() else {
                        continue;
                    };
                    let vals: Vec<String> = l.iter().skip(2).cloned().collect();
                    let append = kind == "append";
                    match f(1).as_str() {
                        "command" if append => spec.command.extend(vals),
                        "command" => spec.command = vals,
                        "env" => spec.env.extend(vals),
                        "file" => {
                            if !append {
                                spec.files.clear();
                            }
                            for v in vals {
                                let path = self.root.join(v.trim_start_matches('/'));
                                let body = std::fs::read(path).unwrap_or_default();
                                spec.files.push((v, body));
                            }
                        }
                        "user" => spec.user = vals.first().cloned(),
                        "group" => spec.group = vals.first().cloned(),
                        "respawn" => {
                            let n = |i: usize, d: u64| {
                                vals.get(i).and_then(|v| v.parse().ok()).unwrap_or(d)
                            };
                            spec.respawn = Some((n(0, 3600), n(1, 5), n(2, 5) as u32));
                        }
                        "reload_signal" => {
                            spec.reload_signal = vals.first().and_then(|v| v.parse().ok())
                        }
                        "stdout" => spec.stdout = vals.first().is_some_and(|v| v == "1"),
                        "stderr" => spec.stderr = vals.first().is_some_and(|v| v == "1"),
                        _ => {}
                    }
                }
                Some("mdns") => {
                    if let Some((_, spec)) = new.last_mut() {
                        spec.mdns.push(l[1..].to_vec());
                    }
                }
                Some("trigger") => triggers.push(l[1..].to_vec()),
                _ => {}
            }
        }
        let svc = self.services.entry(service.to_owned()).or_default();
        svc.triggers = triggers;
        let names: Vec<String> = new.iter().map(|(n, _)| n.clone()).collect();
        for (name, inst) in svc.instances.iter_mut() {
            if !names.contains(name) {
                Self::stop(inst);
            }
        }
        let mut to_start = Vec::new();
        for (name, spec) in new {
            match svc.instances.get_mut(&name) {
                Some(inst) => {
                    let running = inst.child.is_some();
                    if !running || inst.halt {
                        let keep = inst.spec.reload_signal;
                        inst.spec = Spec {
                            reload_signal: keep,
                            ..spec
                        };
                        inst.failed = false;
                        to_start.push(name);
                    } else {
                        if inst.spec.changed(&spec) {
                            match inst.spec.reload_signal {
                                Some(sig) => Self::signal(inst, sig),
                                None => {
                                    Self::stop(inst);
                                    inst.restart = true;
                                }
                            }
                        }
                        let keep = inst.spec.reload_signal;
                        inst.spec = Spec {
                            reload_signal: keep,
                            ..spec
                        };
                    }
                }
                None => {
                    svc.instances.insert(
                        name.clone(),
                        Inst {
                            spec,
                            child: None,
                            started: Instant::now(),
                            respawn_count: 0,
                            start_at: None,
                            kill_at: None,
                            halt: false,
                            restart: false,
                            failed: false,
                        },
                    );
                    to_start.push(name);
                }
            }
        }
        for name in to_start {
            self.start(service, &name);
        }
    }

    /// instance_exit and instance_timeout.
    fn supervise(&mut self) {
        let now = Instant::now();
        let mut starts = Vec::new();
        let log = self.log.clone();
        for (sname, svc) in self.services.iter_mut() {
            let mut gone = Vec::new();
            for (name, inst) in svc.instances.iter_mut() {
                if let Some(at) = inst.kill_at {
                    if now >= at && inst.child.is_some() {
                        Self::signal(inst, libc::SIGKILL);
                        inst.kill_at = None;
                    }
                }
                let exited = match inst.child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => Some(status),
                    _ => None,
                };
                if let Some(status) = exited {
                    inst.child = None;
                    inst.kill_at = None;
                    let runtime = inst.started.elapsed().as_secs();
                    log.lock().unwrap().push(format!(
                        "procd: Instance {sname}::{name} exit with {status} after {runtime} seconds"
                    ));
                    if inst.halt {
                        if inst.restart {
                            starts.push((sname.clone(), name.clone()));
                        } else {
                            gone.push(name.clone());
                        }
                    } else if inst.restart {
                        starts.push((sname.clone(), name.clone()));
                    } else if let Some((threshold, timeout, retry)) = inst.spec.respawn {
                        if runtime < threshold {
                            inst.respawn_count += 1;
                        } else {
                            inst.respawn_count = 0;
                        }
                        if inst.respawn_count > retry && retry > 0 {
                            log.lock().unwrap().push(format!(
                                "procd: Instance {sname}::{name} s in a crash loop {} crashes",
                                inst.respawn_count
                            ));
                            inst.failed = true;
                        } else {
                            inst.start_at = Some(now + Duration::from_secs(timeout));
                        }
                    }
                }
                if inst.start_at.is_some_and(|t| now >= t) {
                    inst.start_at = None;
                    starts.push((sname.clone(), name.clone()));
                }
            }
            for name in gone {
                svc.instances.remove(&name);
            }
        }
        for (s, n) in starts {
            if let Some(inst) = self
                .services
                .get_mut(&s)
                .and_then(|s| s.instances.get_mut(&n))
            {
                inst.halt = false;
            }
            self.start(&s, &n);
        }
    }
}

impl Procd {
    fn new(root: &Path, router: &Netns) -> Procd {
        let spool = root.join(SPOOL);
        std::fs::create_dir_all(&spool).unwrap();
        let state = Arc::new(Mutex::new(ProcdState {
            root: root.to_owned(),
            netns: router.fd(),
            services: BTreeMap::new(),
            log: Arc::new(Mutex::new(Vec::new())),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        // logd: /dev/log, where the broker's `log_dest syslog` lines go.
        let logd = std::os::unix::net::UnixDatagram::bind(root.join("dev/log")).unwrap();
        logd.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (log, stp) = (state.lock().unwrap().log.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stp.load(Ordering::SeqCst) {
                if let Ok(n) = logd.recv(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..n]);
                    let line = line.split_once('>').map_or(&*line, |(_, l)| l);
                    log.lock().unwrap().push(line.trim_end().to_owned());
                }
            }
        });
        let (st, stp) = (state.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !stp.load(Ordering::SeqCst) {
                let mut reqs: Vec<PathBuf> = std::fs::read_dir(&spool)
                    .map(|d| {
                        d.filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| {
                                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                                n.starts_with("req.") && !n.ends_with(".done")
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                reqs.sort();
                for req in reqs {
                    let body = std::fs::read_to_string(&req).unwrap_or_default();
                    let lines: Vec<Vec<String>> = body
                        .lines()
                        .map(|l| l.split('\u{1f}').map(str::to_owned).collect())
                        .collect();
                    st.lock().unwrap().handle(&lines);
                    let _ = std::fs::remove_file(&req);
                    let done = PathBuf::from(format!("{}.done", req.display()));
                    let _ = std::fs::write(done, "");
                }
                st.lock().unwrap().supervise();
                thread::sleep(Duration::from_millis(20));
            }
        });
        Procd {
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn log(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let log = st.log.lock().unwrap().clone();
        log
    }

    /// The broker's pid, once procd runs it.
    fn pid(&self) -> Option<u32> {
        let st = self.state.lock().unwrap();
        st.services
            .get("rmqtt")?
            .instances
            .values()
            .find_map(|i| i.child.as_ref().map(Child::id))
    }

    fn mdns(&self) -> Vec<Vec<String>> {
        let st = self.state.lock().unwrap();
        st.services
            .get("rmqtt")
            .map(|s| {
                s.instances
                    .values()
                    .flat_map(|i| i.spec.mdns.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn spec(&self) -> Option<Spec> {
        let st = self.state.lock().unwrap();
        st.services
            .get("rmqtt")?
            .instances
            .values()
            .next()
            .map(|i| i.spec.clone())
    }

    fn triggers(&self) -> Vec<Vec<String>> {
        let st = self.state.lock().unwrap();
        st.services
            .values()
            .flat_map(|s| s.triggers.clone())
            .collect()
    }

    fn shutdown(&mut self) {
        {
            let mut st = self.state.lock().unwrap();
            for svc in st.services.values_mut() {
                for inst in svc.instances.values_mut() {
                    if let Some(c) = &mut inst.child {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    inst.child = None;
                }
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Procd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// The router under test.

struct Router {
    dir: PathBuf,
    root: PathBuf,
    // Field order: procd (and its broker) goes before the namespaces.
    procd: Procd,
    cloud: Option<Child>,
    lan: Netns,
    net: Netns,
    configs: BTreeMap<String, Vec<u8>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.procd.log();
            let from = log.len().saturating_sub(400);
            eprintln!(
                "--- router log (procd, broker) ---\n{}",
                log[from..].join("\n")
            );
        }
        self.procd.shutdown();
        if let Some(c) = &mut self.cloud {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Router {
    /// A fresh router with the package installed (postinst enables and starts the service).
    fn install(tag: &str) -> Router {
        let (arch, binary) = router_binary();
        ensure_binfmt(&binary);
        let dir = tempdir(tag);
        let root = make_root(&dir, &binary);
        let (net, lan) = network(tag);
        let procd = Procd::new(&root, &net);
        let mut r = Router {
            dir: dir.clone(),
            root: root.clone(),
            procd,
            cloud: None,
            lan,
            net,
            configs: BTreeMap::new(),
        };
        let out = opkg_install(&dir, &root, &arch, &binary, &r.net);
        eprintln!("postinst: {out}");
        r.snapshot_configs();
        r
    }

    fn snapshot_configs(&mut self) {
        self.configs.clear();
        for e in std::fs::read_dir(self.root.join("etc/config"))
            .unwrap()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                self.configs
                    .insert(name, std::fs::read(e.path()).unwrap_or_default());
            }
        }
    }

    /// A shell command on the router, as root.
    fn sh(&self, cmd: &str) -> Output {
        in_ns(Command::new("/bin/sh"), self.net.fd(), Some(&self.root))
            .args(["-c", cmd])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("QEMU_CPU", "24Kc")
            .output()
            .unwrap()
    }

    fn init(&self, action: &str) -> Output {
        self.sh(&format!("/etc/init.d/rmqtt {action}"))
    }

    /// `reload_config`: a `config.change` event for every package whose file changed since
    /// the last call, which runs the triggers procd holds (here `/etc/init.d/rmqtt reload`).
    fn reload_config(&mut self) -> String {
        let before = self.configs.clone();
        self.snapshot_configs();
        let mut out = String::new();
        for (pkg, body) in &self.configs {
            if before.get(pkg) == Some(body) {
                continue;
            }
            for t in self.procd.triggers() {
                if t.first().map(String::as_str) == Some("config.change") && t.get(1) == Some(pkg) {
                    let o = self.sh(&t[2..].join(" "));
                    out.push_str(&text(&o));
                }
            }
        }
        out
    }

    fn uci(&self) -> Uci {
        uci_read(&self.root, "rmqtt")
    }

    /// `uci set/add/delete ...; uci commit rmqtt; reload_config`, as LuCI's Save & Apply.
    fn apply(&mut self, edit: impl FnOnce(&mut Uci)) -> String {
        let mut u = self.uci();
        edit(&mut u);
        uci_commit(&self.root, "rmqtt", &u);
        self.reload_config()
    }

    fn wait_pid(&self, within: Duration) -> Option<u32> {
        let end = Instant::now() + within;
        loop {
            if let Some(p) = self.procd.pid() {
                return Some(p);
            }
            if Instant::now() > end {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the broker log says it is running (after start or a restart).
    fn wait_running(&self, pid: u32) {
        let needle = format!("rmqtt[{pid}]:");
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if self
                .procd
                .log()
                .iter()
                .any(|l| l.starts_with(&needle) && l.contains("running"))
            {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("broker {pid} not running:\n{}", self.procd.log().join("\n"));
    }

    fn on_router(&self, prog: &str) -> Command {
        let mut c = in_ns(Command::new(prog), self.net.fd(), Some(&self.root));
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("QEMU_CPU", "24Kc");
        c
    }

    fn on_lan(&self, prog: &str) -> Command {
        in_ns(Command::new(prog), self.lan.fd(), None)
    }

    /// A LAN subscriber: mosquitto_sub, line-buffered so its -d lines arrive as printed.
    fn lan_sub(&self, args: &[&str]) -> Sub {
        let mut c = self.on_lan("stdbuf");
        c.args(["-oL", "mosquitto_sub"]).args(args);
        Sub::spawn(c)
    }
}

/// Hands every line the child prints, on stdout and on stderr, to `sink` from a reader thread
/// per stream; a stream's thread stops when `sink` returns false.
fn each_line(child: &mut Child, sink: impl Fn(String) -> bool + Clone + Send + 'static) {
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let sink = sink.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if !sink(line) {
                    break;
                }
            }
        });
    }
}

/// A subscriber whose output lines arrive on a channel.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Sub {
    fn spawn(mut cmd: Command) -> Sub {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        each_line(&mut child, move |l| tx.send(l).is_ok());
        Sub {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn wait(&mut self, needle: &str, within: Duration) -> bool {
        if self.seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn subscribed(&mut self) -> bool {
        self.wait("received SUBACK", Duration::from_secs(10))
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bounded(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > end {
            let _ = child.kill();
            return child.wait_with_output().unwrap();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Checks from real clients.

/// A LAN host (mosquitto_pub) publishes to the router: Ok, or what the client printed.
fn lan_publish(r: &Router, port: u16, extra: &[&str]) -> Result<(), String> {
    let mut c = r.on_lan("mosquitto_pub");
    c.args([
        "-h",
        ROUTER_IP,
        "-p",
        &port.to_string(),
        "-t",
        "probe",
        "-m",
        "x",
        "-q",
        "1",
    ])
    .args(extra);
    let out = bounded(c, 10);
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out).trim().to_owned())
    }
}

/// The card's flow on the router: rmqtt_sub receives what rmqtt_pub sends, no credentials.
fn card_flow(r: &Router, port: u16, payload: &str) -> Result<(), String> {
    let mut c = r.on_router("/usr/bin/rmqtt_sub");
    c.args([
        "-h",
        "localhost",
        "-p",
        &port.to_string(),
        "-t",
        "mqtt",
        "-C",
        "1",
        "-W",
        "10",
        "-d",
    ]);
    let mut sub = Sub::spawn(c);
    if !sub.subscribed() {
        return Err(format!("rmqtt_sub did not subscribe: {:?}", sub.seen));
    }
    let mut p = r.on_router("/usr/bin/rmqtt_pub");
    p.args([
        "-h",
        "localhost",
        "-p",
        &port.to_string(),
        "-t",
        "mqtt",
        "-m",
        payload,
    ]);
    let out = bounded(p, 10);
    if !out.status.success() {
        return Err(format!("rmqtt_pub: {}", text(&out)));
    }
    if sub.wait(payload, Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(format!(
            "rmqtt_sub did not receive {payload}: {:?}",
            sub.seen
        ))
    }
}

/// One row of the reload matrix.
struct Row {
    name: String,
    pass: bool,
    detail: String,
}

struct Matrix {
    rows: Vec<Row>,
}

impl Matrix {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        let (pass, detail) = match result {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e),
        };
        eprintln!("{} {name} {detail}", if pass { "PASS" } else { "FAIL" });
        self.rows.push(Row {
            name: name.to_owned(),
            pass,
            detail,
        });
    }

    fn finish(&self, title: &str) {
        let mut table = format!("\n{title}\n| row | result |\n| --- | --- |\n");
        for r in &self.rows {
            table.push_str(&format!(
                "| {} | {} |\n",
                r.name,
                if r.pass {
                    "pass".to_owned()
                } else {
                    format!("FAIL: {}", r.detail)
                }
            ));
        }
        eprintln!("{table}");
        assert!(self.rows.iter().all(|r| r.pass), "{table}");
    }
}

fn expect(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn same_pid(r: &Router, before: u32) -> Result<(), String> {
    thread::sleep(Duration::from_millis(300));
    match r.procd.pid() {
        Some(p) if p == before => Ok(()),
        other => Err(format!("broker restarted: pid {before} -> {other:?}")),
    }
}

/// Certificates made with the openssl CLI: CA `name` and a server certificate for the router.
fn make_ca(dir: &Path, name: &str) {
    let d = dir.display();
    sh(&format!(
        "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -keyout {name}-ca.key -out {name}-ca.crt -days 2 -subj '/CN=rmqtt {name} CA' \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
         2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -keyout {name}.key -out {name}.csr -subj /CN=router 2>/dev/null && \
         printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\n\
extendedKeyUsage=serverAuth\\nsubjectAltName=IP:{ROUTER_IP},IP:{LAN_IP},DNS:localhost\\n' \
         > {name}.ext && \
         openssl x509 -req -in {name}.csr -CA {name}-ca.crt -CAkey {name}-ca.key \
         -CAcreateserial -out {name}.crt -days 2 -extfile {name}.ext 2>/dev/null"
    ));
}

/// Replaces `dest` as a certificate tool would: a new root-owned 0600 file renamed over it.
fn replace_file(src: &Path, dest: &Path) {
    let tmp = dest.with_extension("new");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&tmp, Some(0), Some(0)).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

fn status_ids(pid: u32) -> (String, String, String) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (get("Uid:"), get("Gid:"), get("CapEff:"))
}

/// A second broker on the LAN host (the "cloud" end of bridges): Mosquitto 2.0.
fn start_cloud(r: &mut Router, tls_dir: Option<&Path>) {
    let conf = r.dir.join("cloud.conf");
    let mut body = format!("user root\nallow_anonymous true\nlistener 1883 {LAN_IP}\n");
    if let Some(d) = tls_dir {
        body.push_str(&format!(
            "listener 8883 {LAN_IP}\ncafile {0}/cloud-ca.crt\ncertfile {0}/cloud.crt\n\
             keyfile {0}/cloud.key\n",
            d.display()
        ));
    }
    std::fs::write(&conf, body).unwrap();
    let mut c = r.on_lan(mosquitto_bin().unwrap().to_str().unwrap());
    c.args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    r.cloud = Some(c.spawn().unwrap());
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let mut p = r.on_lan("mosquitto_pub");
        p.args(["-h", LAN_IP, "-p", "1883", "-t", "up", "-m", "1"]);
        if bounded(p, 5).status.success() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("mosquitto on the LAN host did not start");
}

/// Publishes on the router until the LAN broker's subscriber sees it (the bridge connects in
/// the background): proof that topic `t` is forwarded.
fn bridged(
    r: &Router,
    port: u16,
    topic: &str,
    cloud_args: &[&str],
    secs: u64,
) -> Result<(), String> {
    let mut args = vec!["-h", LAN_IP, "-t", topic, "-v", "-d"];
    args.extend_from_slice(cloud_args);
    let mut sub = r.lan_sub(&args);
    if !sub.subscribed() {
        return Err(format!("cloud subscriber: {:?}", sub.seen));
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0;
    while Instant::now() < end {
        n += 1;
        let payload = format!("bridged-{n}");
        let mut p = r.on_router("/usr/bin/rmqtt_pub");
        p.args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-m",
            &payload,
        ]);
        let _ = bounded(p, 5);
        if sub.wait(&payload, Duration::from_millis(500)) {
            return Ok(());
        }
    }
    Err(format!("nothing arrived at the LAN broker: {:?}", sub.seen))
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Install, first start, the card's flow, LAN access rules, the service user, mDNS, respawn,
/// and a reload matrix applied as LuCI applies changes.
#[test]
fn router_in_a_box() {
    if !can_run("router_in_a_box") {
        return;
    }
    let mut r = Router::install("box");
    let mut m = Matrix { rows: Vec::new() };

    // Installed files: modes and owners as opkg leaves them, after postinst.
    let meta = |p: &str| std::fs::metadata(r.root.join(p)).unwrap();
    let conf = meta("etc/config/rmqtt");
    m.check(
        "installed: /etc/config/rmqtt 0600 root",
        expect(conf.mode() & 0o777 == 0o600 && conf.uid() == 0, || {
            format!("{:o} uid {}", conf.mode() & 0o777, conf.uid())
        }),
    );
    let pw = meta("etc/rmqtt/passwd");
    m.check(
        "installed: /etc/rmqtt/passwd readable by rmqtt only",
        expect(
            pw.mode() & 0o007 == 0 && (pw.uid() == SERVICE_UID || pw.gid() == SERVICE_UID),
            || format!("{:o} {}:{}", pw.mode() & 0o777, pw.uid(), pw.gid()),
        ),
    );
    let conffiles =
        std::fs::read_to_string(r.root.join("usr/lib/opkg/info/rmqtt.conffiles")).unwrap();
    m.check(
        "conffiles: UCI, rmqtt.conf, passwd, acl",
        expect(
            [
                "/etc/config/rmqtt",
                "/etc/rmqtt/rmqtt.conf",
                "/etc/rmqtt/passwd",
                "/etc/rmqtt/acl",
            ]
            .iter()
            .all(|f| conffiles.lines().any(|l| l == *f)),
            || conffiles.clone(),
        ),
    );

    // postinst started it through procd.
    let pid = r.wait_pid(Duration::from_secs(10));
    m.check(
        "first start: procd runs the broker",
        expect(pid.is_some(), || r.procd.log().join("\n")),
    );
    let Some(pid) = pid else {
        return m.finish("router_in_a_box");
    };
    r.wait_running(pid);
    let (uid, gid, caps) = status_ids(pid);
    m.check(
        "runs as uid/gid 200 with only CAP_NET_BIND_SERVICE",
        expect(
            uid == "200 200 200 200" && gid == "200 200 200 200" && caps == "0000000000000400",
            || format!("Uid {uid}, Gid {gid}, CapEff {caps}"),
        ),
    );
    m.check(
        "card flow: rmqtt_sub/rmqtt_pub on localhost",
        card_flow(&r, 1883, "hello"),
    );
    m.check(
        "LAN anonymous client refused by default",
        match lan_publish(&r, 1883, &[]) {
            Ok(()) => Err("accepted".to_owned()),
            Err(e) if e.contains("not authorised") => Ok(()),
            Err(e) => Err(e),
        },
    );
    let mdns = r.procd.mdns();
    m.check(
        "mDNS: _mqtt._tcp on 1883",
        expect(
            mdns.iter().any(|s| {
                s.first().map(String::as_str) == Some("_mqtt._tcp.local")
                    && s.get(1).map(String::as_str) == Some("1883")
            }),
            || format!("{mdns:?}"),
        ),
    );
    let spec = r.procd.spec().unwrap_or_default();
    m.check(
        "procd: file watch and reload_signal",
        expect(
            spec.files.iter().any(|(f, _)| f == "/etc/config/rmqtt")
                && spec.reload_signal == Some(1),
            || format!("{spec:?}"),
        ),
    );

    // The LuCI status panel: $SYS on 127.0.0.1, no credentials.
    let mut s = r.on_router("/usr/bin/rmqtt_sub");
    s.args([
        "-h",
        "127.0.0.1",
        "-t",
        "$SYS/broker/uptime",
        "-C",
        "1",
        "-W",
        "15",
    ]);
    let out = bounded(s, 20);
    m.check(
        "LuCI status: $SYS/broker/uptime on 127.0.0.1",
        expect(
            out.status.success() && text(&out).contains("seconds"),
            || text(&out),
        ),
    );

    // Reload matrix. Every row: uci + commit + reload_config (or LuCI's own action), then a
    // real client checks the new behaviour; the pid stays where no restart is needed.
    let pid = r.procd.pid().unwrap_or(pid);
    r.apply(|u| {
        u.set("mosquitto", "allow_anonymous", "1");
    });
    m.check(
        "anonymous on (global): LAN client accepted",
        lan_publish(&r, 1883, &[]).and_then(|()| same_pid(&r, pid)),
    );
    r.apply(|u| {
        u.set("mosquitto", "allow_anonymous", "0");
    });
    m.check(
        "anonymous off (global): LAN and local anonymous refused",
        match (lan_publish(&r, 1883, &[]), card_flow(&r, 1883, "off")) {
            (Err(_), Err(_)) => same_pid(&r, pid),
            other => Err(format!("{other:?}")),
        },
    );
    r.apply(|u| {
        u.set("mosquitto", "allow_anonymous", "local");
        u.set("@listener[0]", "allow_anonymous", "1");
    });
    m.check(
        "anonymous on (per listener): LAN client accepted",
        lan_publish(&r, 1883, &[]).and_then(|()| same_pid(&r, pid)),
    );
    r.apply(|u| {
        u.delete("@listener[0]", "allow_anonymous");
    });
    m.check(
        "per-listener setting removed: LAN anonymous refused again",
        match lan_publish(&r, 1883, &[]) {
            Ok(()) => Err("accepted".to_owned()),
            Err(_) => same_pid(&r, pid),
        },
    );

    // Users, as LuCI adds them: rmqtt_passwd as root, then `rc init rmqtt reload`.
    let out = r.sh("rmqtt_passwd -b /etc/rmqtt/passwd alice secret && /etc/init.d/rmqtt reload");
    m.check(
        "user added (LuCI): alice logs in from the LAN",
        expect(out.status.success(), || text(&out))
            .and_then(|()| lan_publish(&r, 1883, &["-u", "alice", "-P", "secret"]))
            .and_then(|()| same_pid(&r, pid)),
    );
    std::fs::write(
        r.root.join("etc/rmqtt/acl"),
        "topic readwrite #\n\nuser alice\ntopic readwrite allowed/#\n",
    )
    .unwrap();
    r.apply(|u| {
        u.set("mosquitto", "acl_file", "/etc/rmqtt/acl");
    });
    let acl = (|| {
        let mut c = r.on_router("/usr/bin/rmqtt_sub");
        c.args(["-h", "localhost", "-t", "#", "-v", "-d"]);
        let mut sub = Sub::spawn(c);
        if !sub.subscribed() {
            return Err(format!("local subscriber: {:?}", sub.seen));
        }
        for t in ["denied/1", "allowed/1"] {
            lan_publish_to(&r, t, &["-u", "alice", "-P", "secret"])?;
        }
        expect(sub.wait("allowed/1 x", Duration::from_secs(5)), || {
            format!("{:?}", sub.seen)
        })?;
        expect(!sub.seen.iter().any(|l| l.contains("denied/1")), || {
            format!("denied/1 delivered: {:?}", sub.seen)
        })
    })();
    m.check(
        "ACL changed: alice may write allowed/# only",
        acl.and_then(|()| same_pid(&r, pid)),
    );
    let out = r.sh("rmqtt_passwd -D /etc/rmqtt/passwd alice && /etc/init.d/rmqtt reload");
    m.check(
        "user removed (LuCI): alice refused",
        expect(out.status.success(), || text(&out)).and_then(|()| {
            match lan_publish(&r, 1883, &["-u", "alice", "-P", "secret"]) {
                Ok(()) => Err("alice still accepted".to_owned()),
                Err(_) => same_pid(&r, pid),
            }
        }),
    );

    // Listeners: one added, then the first one's port changed while a client stays on the
    // second.
    r.apply(|u| {
        u.add("listener", &[("port", "1884"), ("allow_anonymous", "1")]);
    });
    m.check(
        "listener added: port 1884 accepts LAN clients",
        lan_publish(&r, 1884, &[]).and_then(|()| same_pid(&r, pid)),
    );
    let mut stay = r.lan_sub(&["-h", ROUTER_IP, "-p", "1884", "-t", "stay", "-v", "-d"]);
    let stay_ok = stay.subscribed();
    r.apply(|u| {
        u.set("@listener[0]", "port", "1885");
    });
    let port_row = (|| {
        card_flow(&r, 1885, "moved")?;
        if card_flow(&r, 1883, "old").is_ok() {
            return Err("port 1883 still served".to_owned());
        }
        expect(stay_ok, || {
            "subscriber on 1884 did not subscribe".to_owned()
        })?;
        let mut p = r.on_router("/usr/bin/rmqtt_pub");
        p.args([
            "-h",
            "localhost",
            "-p",
            "1885",
            "-t",
            "stay",
            "-m",
            "still-here",
        ]);
        let _ = bounded(p, 5);
        expect(stay.wait("stay still-here", Duration::from_secs(5)), || {
            format!("client on the unchanged listener lost: {:?}", stay.seen)
        })
    })();
    m.check(
        "listener port changed: 1885 served, 1883 closed, 1884 client kept",
        port_row.and_then(|()| same_pid(&r, pid)),
    );
    drop(stay);

    // TLS: a listener on 8883 with a certificate from CA one, then replaced by CA two's.
    let pki = r.dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "one");
    make_ca(&pki, "two");
    let etc = r.root.join("etc/rmqtt");
    replace_file(&pki.join("one.crt"), &etc.join("server.crt"));
    replace_file(&pki.join("one.key"), &etc.join("server.key"));
    r.apply(|u| {
        u.add(
            "listener",
            &[
                ("port", "8883"),
                ("certfile", "/etc/rmqtt/server.crt"),
                ("keyfile", "/etc/rmqtt/server.key"),
                ("allow_anonymous", "1"),
            ],
        );
    });
    let ca = |n: &str| pki.join(format!("{n}-ca.crt")).display().to_string();
    m.check(
        "TLS listener added: LAN client verifies CA one",
        lan_publish(&r, 8883, &["--cafile", &ca("one")]).and_then(|()| same_pid(&r, pid)),
    );
    replace_file(&pki.join("two.crt"), &etc.join("server.crt"));
    replace_file(&pki.join("two.key"), &etc.join("server.key"));
    let out = r.init("reload");
    m.check(
        "TLS certificate replaced: CA two verifies, CA one does not",
        expect(out.status.success(), || text(&out))
            .and_then(|()| lan_publish(&r, 8883, &["--cafile", &ca("two")]))
            .and_then(
                |()| match lan_publish(&r, 8883, &["--cafile", &ca("one")]) {
                    Ok(()) => Err("old certificate still served".to_owned()),
                    Err(_) => Ok(()),
                },
            )
            .and_then(|()| same_pid(&r, pid)),
    );
    let key = std::fs::metadata(etc.join("server.key")).unwrap();
    m.check(
        "TLS key not readable by other users",
        expect(key.mode() & 0o007 == 0, || {
            format!("{:o}", key.mode() & 0o777)
        }),
    );

    // A port below 1024, added while the broker runs unprivileged.
    r.apply(|u| {
        u.add("listener", &[("port", "443"), ("allow_anonymous", "1")]);
    });
    m.check(
        "listener on port 443 added by reload (broker runs as rmqtt)",
        lan_publish(&r, 443, &[]).and_then(|()| same_pid(&r, pid)),
    );

    // A bridge to a broker on the LAN host.
    start_cloud(&mut r, None);
    r.apply(|u| {
        u.add(
            "bridge",
            &[
                ("connection", "cloud"),
                ("address", &format!("{LAN_IP}:1883")),
                ("+topic", "sensors/# out 1"),
            ],
        );
    });
    m.check(
        "bridge added: sensors/# forwarded to the LAN broker",
        bridged(&r, 1885, "sensors/temp", &[], 20).and_then(|()| same_pid(&r, pid)),
    );

    // Bad configuration from LuCI: the running broker stays and the error names file and line.
    let out = r.apply(|u| {
        u.set("@listener[0]", "port", "not-a-port");
    });
    m.check(
        "bad value: broker kept, error names /etc/config/rmqtt and line",
        expect(out.contains("/etc/config/rmqtt:"), || out.clone())
            .and_then(|()| card_flow(&r, 1885, "still"))
            .and_then(|()| same_pid(&r, pid)),
    );
    r.apply(|u| {
        u.set("@listener[0]", "port", "1885");
    });

    // A change only a restart applies: the database location.
    let from = r.procd.log().len();
    r.apply(|u| {
        u.set("persistence", "location", "/tmp/rmqtt2/");
    });
    let new_pid = r.wait_pid(Duration::from_secs(15));
    m.check(
        "persistence location changed: broker restarted",
        expect(new_pid.is_some_and(|p| p != pid), || {
            format!(
                "pid {pid} -> {new_pid:?}\n{}",
                r.procd.log()[from..].join("\n")
            )
        }),
    );
    let pid = new_pid.unwrap_or(pid);
    r.wait_running(pid);

    // Respawn: a killed broker comes back after respawn_timeout (5 s).
    // SAFETY: kill with a pid procd started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let end = Instant::now() + Duration::from_secs(15);
    let mut respawned = None;
    while Instant::now() < end {
        match r.procd.pid() {
            Some(p) if p != pid => {
                respawned = Some(p);
                break;
            }
            _ => thread::sleep(Duration::from_millis(100)),
        }
    }
    m.check(
        "respawn: killed broker restarted by procd",
        match respawned {
            Some(p) => {
                r.wait_running(p);
                card_flow(&r, 1885, "respawned")
            }
            None => Err(r.procd.log().join("\n")),
        },
    );

    // A reboot: /tmp is empty again, the boot scripts run.
    let out = r.init("stop");
    let _ = out;
    thread::sleep(Duration::from_millis(500));
    let _ = std::fs::remove_dir_all(r.root.join("tmp/run/rmqtt"));
    let out = r.sh("/etc/rc.d/S80rmqtt boot");
    let booted = r.wait_pid(Duration::from_secs(10));
    m.check(
        "reboot: S80rmqtt boot starts it with an empty /var/run",
        expect(out.status.success() && booted.is_some(), || text(&out)).and_then(|()| {
            r.wait_running(booted.unwrap_or(0));
            card_flow(&r, 1885, "booted")
        }),
    );
    m.finish("router_in_a_box");
}

fn lan_publish_to(r: &Router, topic: &str, extra: &[&str]) -> Result<(), String> {
    let mut c = r.on_lan("mosquitto_pub");
    c.args([
        "-h", ROUTER_IP, "-p", "1883", "-t", topic, "-m", "x", "-q", "1",
    ])
    .args(extra);
    let out = bounded(c, 10);
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out).trim().to_owned())
    }
}

/// A Mosquitto user's /etc/config/mosquitto, as OpenWrt's mosquitto package and
/// luci-app-mosquitto write it, with a TLS bridge: `mv` to /etc/config/rmqtt carries it over.
#[test]
fn migrated_mosquitto_uci_keeps_tls_bridge() {
    if !can_run("migrated_mosquitto_uci_keeps_tls_bridge") {
        return;
    }
    let mut r = Router::install("mig");
    let mut m = Matrix { rows: Vec::new() };
    let pid = r.wait_pid(Duration::from_secs(10));
    m.check(
        "installed and started",
        expect(pid.is_some(), || r.procd.log().join("\n")),
    );
    let pki = r.dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "cloud");
    start_cloud(&mut r, Some(&pki));
    std::fs::create_dir_all(r.root.join("etc/ssl")).unwrap();
    replace_file(
        &pki.join("cloud-ca.crt"),
        &r.root.join("etc/ssl/cloud-ca.crt"),
    );
    let migrated = format!(
        "config owrt 'owrt'\n\toption use_uci '1'\n\n\
         config mosquitto 'mosquitto'\n\toption no_remote_access '0'\n\
         \toption allow_anonymous '1'\n\toption log_dest 'stderr'\n\
         \toption connection_messages '1'\n\toption max_inflight_messages '20'\n\
         \toption max_queued_messages '1000'\n\n\
         config persistence 'persistence'\n\toption persistence '0'\n\n\
         config listener\n\toption port '1883'\n\toption protocol 'mqtt'\n\n\
         config bridge\n\toption connection 'cloud'\n\toption address '{LAN_IP}:8883'\n\
         \tlist topic 'sensors/# out 1'\n\toption cafile '/etc/ssl/cloud-ca.crt'\n\
         \toption tls_version 'tlsv1.2'\n\toption protocol_version 'mqttv311'\n\
         \toption cleansession '1'\n\toption try_private '1'\n\
         \toption notifications '1'\n\toption notification_topic 'router/bridge/state'\n\
         \toption local_clientid 'router-local'\n\toption remote_clientid 'router'\n\
         \toption keepalive_interval '30'\n\toption restart_timeout '5'\n\
         \toption start_type 'automatic'\n"
    );
    // The owner moves the file into place (mode 0644 as the mosquitto package installed it)
    // and reloads.
    let cafile = pki.join("cloud-ca.crt").display().to_string();
    let tls_args = ["-p", "8883", "--cafile", cafile.as_str()];
    let cfg = r.root.join("etc/config/mosquitto");
    std::fs::write(&cfg, &migrated).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = r.sh("mv /etc/config/mosquitto /etc/config/rmqtt");
    let reload = r.reload_config();
    m.check(
        "migrated file accepted",
        expect(
            out.status.success() && !reload.contains("not applied"),
            || format!("{}{reload}", text(&out)),
        ),
    );
    m.check(
        "TLS bridge (cafile) forwards sensors/# over TLS",
        bridged(&r, 1883, "sensors/x", &tls_args, 20),
    );
    m.check("card flow after migration", card_flow(&r, 1883, "migrated"));
    m.check(
        "LAN anonymous accepted (allow_anonymous 1 migrated)",
        lan_publish(&r, 1883, &[]),
    );
    // The same reload rows on the migrated file.
    let pid = r.procd.pid().unwrap_or(0);
    r.apply(|u| {
        u.set("mosquitto", "allow_anonymous", "0");
    });
    m.check(
        "migrated: anonymous off applied in place",
        match lan_publish(&r, 1883, &[]) {
            Ok(()) => Err("accepted".to_owned()),
            Err(_) => same_pid(&r, pid),
        },
    );
    r.apply(|u| {
        u.set("@listener[0]", "port", "1886");
        u.set("mosquitto", "allow_anonymous", "1");
    });
    m.check(
        "migrated: listener port changed in place",
        lan_publish(&r, 1886, &[]).and_then(|()| same_pid(&r, pid)),
    );
    m.check(
        "migrated: bridge still TLS after reloads",
        bridged(&r, 1886, "sensors/y", &tls_args, 20),
    );
    r.apply(|u| {
        u.remove_section("@bridge[0]");
    });
    m.check(
        "migrated: bridge removed, nothing forwarded",
        match bridged(&r, 1886, "sensors/z", &tls_args, 5) {
            Ok(()) => Err("still forwarded".to_owned()),
            Err(_) => same_pid(&r, pid),
        },
    );
    m.finish("migrated_mosquitto_uci_keeps_tls_bridge");
}
