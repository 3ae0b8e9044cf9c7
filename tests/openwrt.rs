//! The OpenWrt packaging, checked without a router: the UCI defaults and the LuCI view against
//! the broker's UCI loader and its documentation, the procd init script against a procd /
//! rc.common stand-in, and `scripts/ipk.sh` output unpacked and installed into a temporary
//! root the way opkg does it.

use rmqtt::config::{mosquitto, uci};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(top().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rmqtt-openwrt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `(section type, option)` for every option the LuCI view writes, from its JavaScript:
/// `m.section(form.TypedSection, 'TYPE'` / `form.NamedSection, 'NAME', 'TYPE'` opens a
/// section, `form.Flag|Value|ListValue|DynamicList, 'OPTION'` adds an option to it.
fn luci_options(js: &str) -> Vec<(String, String)> {
    let quoted = |s: &str| -> Option<String> {
        let s = s.trim_start().strip_prefix('\'')?;
        Some(s.get(..s.find('\'')?)?.to_owned())
    };
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    for line in js.lines() {
        if let Some(i) = line.find("form.TypedSection,") {
            section = quoted(&line[i + "form.TypedSection,".len()..]);
        } else if let Some(i) = line.find("form.NamedSection,") {
            let rest = &line[i + "form.NamedSection,".len()..];
            let after_name = rest.split_once(',').map(|(_, r)| r).unwrap_or("");
            section = quoted(after_name);
        }
        for kind in ["Flag", "Value", "ListValue", "DynamicList"] {
            let pat = format!("form.{kind},");
            let mut rest = line;
            while let Some(i) = rest.find(&pat) {
                rest = &rest[i + pat.len()..];
                let name = quoted(rest).expect("option name in quotes");
                let sec = section.clone().expect("option outside a section");
                out.push((sec, name));
            }
        }
    }
    out
}

#[test]
fn luci_view_options_are_understood_and_documented() {
    let js = read("openwrt/luci-app-rmqtt/htdocs/luci-static/resources/view/rmqtt/rmqtt.js");
    assert!(js.contains("new form.Map('rmqtt'"));
    let written = luci_options(&js);
    assert!(written.len() > 30, "parsed too few options: {written:?}");
    let known: BTreeSet<(String, String)> = uci::known_options()
        .map(|(s, o, _)| (s.to_owned(), o.to_owned()))
        .collect();
    for w in &written {
        assert!(
            known.contains(w),
            "LuCI writes {w:?}, which the UCI loader does not know"
        );
    }
    // The listener and general sections, at least, are fully editable in LuCI.
    for (s, o) in [
        ("listener", "port"),
        ("mosquitto", "allow_anonymous"),
        ("persistence", "location"),
    ] {
        assert!(
            written.contains(&(s.to_owned(), o.to_owned())),
            "{s}.{o} missing in LuCI"
        );
    }

    // Every option the loader knows has a row in the documentation table, and every row is an
    // option the loader knows.
    let doc = read("openwrt/README.md");
    let mut documented = BTreeSet::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, s, o, _, ..] = cells.as_slice() {
            if let (Some(s), Some(o)) = (
                s.strip_prefix('`').and_then(|s| s.strip_suffix('`')),
                o.strip_prefix('`').and_then(|o| o.strip_suffix('`')),
            ) {
                // Only option rows: other tables (files, paths) have backticked cells too.
                let ident = |x: &str| x.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if ident(s) && ident(o) {
                    documented.insert((s.to_owned(), o.to_owned()));
                }
            }
        }
    }
    for k in &known {
        assert!(
            documented.contains(k),
            "{k:?} is not documented in openwrt/README.md"
        );
    }
    for d in &documented {
        assert!(
            known.contains(d),
            "openwrt/README.md documents {d:?}, unknown to the loader"
        );
    }
}

#[test]
fn shipped_config_files_load_cleanly() {
    let text = read("files/etc/config/rmqtt");
    assert!(uci::looks_like_uci(&text));
    let (cfg, warnings) = uci::parse_str("files/etc/config/rmqtt", &text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cfg.listeners.len(), 1);
    assert_eq!(cfg.listeners[0].port, 1883);
    assert_eq!(cfg.allow_anonymous, Some(rmqtt::config::Anonymous::Local));
    assert!(cfg.persistence);
    // The journal in RAM (a crash loses nothing, no flash writes for it), the snapshot on
    // flash (written every autosave_interval and at shutdown).
    assert!(cfg.persistence_journal);
    let jloc = cfg.journal_location.unwrap();
    assert!(
        jloc.starts_with("/tmp"),
        "the journal must default to RAM: {jloc:?}"
    );
    let loc = cfg.persistence_location.unwrap();
    assert!(
        loc.starts_with("/etc"),
        "the snapshot goes to flash: {loc:?}"
    );

    // The commented-out examples are valid too, once uncommented.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with("config") || rest.starts_with('\t') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (cfg, warnings) = uci::parse_str("uncommented", &uncommented).unwrap();
    assert_eq!(cfg.listeners.len(), 2);
    assert!(
        warnings.iter().all(|w| w.0.contains("bridge")),
        "{warnings:?}"
    );

    let conf = read("files/etc/rmqtt/rmqtt.conf");
    assert!(!uci::looks_like_uci(&conf));
    let (cfg, warnings) = mosquitto::parse_str("rmqtt.conf", &conf).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cfg.listeners.len(), 1);
}

#[test]
fn broker_reads_uci_with_u_and_detects_it_with_c() {
    let bin = env!("CARGO_BIN_EXE_rmqtt");
    // --test-config also reads the password file: point it at an empty one.
    let dir = tempdir("badopt");
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "").unwrap();
    let file = dir.join("defaults");
    std::fs::write(
        &file,
        read("files/etc/config/rmqtt").replace("/etc/rmqtt/passwd", passwd.to_str().unwrap()),
    )
    .unwrap();
    for flag in ["-u", "-c"] {
        let out = Command::new(bin)
            .arg(flag)
            .arg(&file)
            .arg("--test-config")
            .output()
            .unwrap();
        let text = ok(out, "rmqtt --test-config");
        assert!(text.contains("- port: 1883\n"), "{flag}: {text}");
        assert!(text.contains("/tmp/rmqtt/"), "{flag}: {text}");
    }
    let bad = dir.join("rmqtt");
    std::fs::write(&bad, "config listener\n\toption port 'x'\n").unwrap();
    let out = Command::new(bin)
        .arg("-u")
        .arg(&bad)
        .arg("--test-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_script_shape() {
    // Behaviour under procd is tests/router.rs; here only what procd and rc.common key on.
    let script = read("files/etc/init.d/rmqtt");
    assert!(script.starts_with("#!/bin/sh /etc/rc.common\n"));
    for line in [
        "\nSTART=80\n",
        "\nUSE_PROCD=1\n",
        "\nstart_service() {",
        "\nreload_service() {",
    ] {
        assert!(script.contains(line), "{line:?} missing");
    }
    let out = Command::new("sh")
        .arg("-n")
        .arg(top().join("files/etc/init.d/rmqtt"))
        .output()
        .unwrap();
    ok(out, "sh -n init script");
}

fn tar_list(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tvzf")
        .arg(archive)
        .output()
        .unwrap();
    ok(out, "tar -tvzf").lines().map(str::to_owned).collect()
}

fn untar(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    ok(out, "tar -xzf");
}

/// `tar -tv` line for `path` (as `./path`).
fn entry<'a>(list: &'a [String], path: &str) -> &'a str {
    list.iter()
        .find(|l| l.split_whitespace().nth(5) == Some(path))
        .unwrap_or_else(|| panic!("{path} not in {list:#?}"))
}

#[test]
fn ipk_layout_and_opkg_style_install() {
    let dir = tempdir("ipk");
    let out = Command::new("bash")
        .arg(top().join("scripts/ipk.sh"))
        .arg("x86_64")
        .arg(env!("CARGO_BIN_EXE_rmqtt"))
        .arg(dir.join("out"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    let ipk = PathBuf::from(ok(out, "ipk.sh").trim());
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        ipk.file_name().unwrap().to_str().unwrap(),
        format!("rmqtt_{version}_x86_64.ipk")
    );

    // Outer: a gzip'd tar (not ar) of exactly these three members, owned by 0/0.
    let magic = std::fs::read(&ipk).unwrap();
    assert_eq!(&magic[..2], &[0x1f, 0x8b]);
    let outer = tar_list(&ipk);
    let names: Vec<&str> = outer
        .iter()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert_eq!(
        names,
        ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    );
    assert!(
        outer
            .iter()
            .all(|l| l.split_whitespace().nth(1) == Some("0/0")),
        "{outer:?}"
    );
    let pkg = dir.join("pkg");
    untar(&ipk, &pkg);
    assert_eq!(
        std::fs::read_to_string(pkg.join("debian-binary")).unwrap(),
        "2.0\n"
    );

    let ctl = tar_list(&pkg.join("control.tar.gz"));
    assert!(entry(&ctl, "./postinst").starts_with("-rwxr-xr-x"));
    assert!(entry(&ctl, "./prerm").starts_with("-rwxr-xr-x"));
    let ctrl = dir.join("ctrl");
    untar(&pkg.join("control.tar.gz"), &ctrl);
    let control = std::fs::read_to_string(ctrl.join("control")).unwrap();
    for field in [
        "Package: rmqtt\n".to_owned(),
        format!("Version: {version}\n"),
        "Architecture: x86_64\n".to_owned(),
        "Depends: ".to_owned(),
        "Description: ".to_owned(),
    ] {
        assert!(control.contains(&field), "{field:?} missing:\n{control}");
    }
    let size: u64 = control
        .lines()
        .find_map(|l| l.strip_prefix("Installed-Size: "))
        .and_then(|s| s.parse().ok())
        .expect("Installed-Size");
    let bin_size = std::fs::metadata(env!("CARGO_BIN_EXE_rmqtt"))
        .unwrap()
        .len();
    assert!(
        size >= bin_size,
        "Installed-Size {size} < binary {bin_size}"
    );
    assert_eq!(
        std::fs::read_to_string(ctrl.join("conffiles")).unwrap(),
        "/etc/config/rmqtt\n/etc/rmqtt/rmqtt.conf\n/etc/rmqtt/passwd\n/etc/rmqtt/acl\n"
    );

    let data = tar_list(&pkg.join("data.tar.gz"));
    assert!(entry(&data, "./usr/bin/rmqtt").starts_with("-rwxr-xr-x"));
    assert!(entry(&data, "./etc/init.d/rmqtt").starts_with("-rwxr-xr-x"));
    for conf in [
        "./etc/config/rmqtt",
        "./etc/rmqtt/passwd",
        "./etc/rmqtt/acl",
    ] {
        assert!(entry(&data, conf).starts_with("-rw-------"), "{conf}");
    }
    assert!(entry(&data, "./lib/upgrade/keep.d/rmqtt").starts_with("-rw-r--r--"));
    for applet in ["rmqtt_pub", "rmqtt_sub", "rmqtt_rr", "rmqtt_passwd"] {
        let l = entry(&data, &format!("./usr/bin/{applet}"));
        assert!(l.starts_with('l') && l.ends_with("-> rmqtt"), "{l}");
    }

    // Installing it on a router, starting and reloading it: tests/router.rs.
    std::fs::remove_dir_all(&dir).unwrap();
}
