//! Password files against Mosquitto's own tools, both ways: files written by `mosquitto_passwd`
//! are accepted by `rmqtt::auth::password::PasswordFile`; files written by `rmqtt_passwd` (the
//! built binary, through a symlink of that name) let users log in to a real `mosquitto` broker.
//! Also `-D`/`-U`, file modes, prompts, and the error messages and exit codes of both tools.
//!
//! Without the tools the tests are skipped unless `RMQTT_REQUIRE_INTEROP` is set.

mod common_interop;

use common_interop::{run, start_mosquitto, tools_or_skip, Output, TempDir, STEP};
use rmqtt::auth::password::{base64_encode, PasswordFile};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A directory holding an `rmqtt_passwd` symlink to the built binary.
fn applet_dir(tag: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let link = dir.path().join("rmqtt_passwd");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), &link).unwrap();
    (dir, link)
}

fn passwd(tool: &Path, cwd: &Path, args: &[&str], input: Option<&str>) -> Output {
    run(Command::new(tool).args(args).current_dir(cwd), input, STEP)
}

fn ok(tool: &Path, cwd: &Path, args: &[&str]) {
    passwd(tool, cwd, args, None).assert_success(&format!("{} {args:?}", tool.display()));
}

/// `$6$`: SHA-512 over the password followed by the salt, built here independently of rmqtt.
fn sha512_line(user: &str, password: &str, salt: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    ctx.update(password.as_bytes());
    ctx.update(salt);
    let digest = ctx.finish();
    format!(
        "{user}:$6${}${}",
        base64_encode(salt),
        base64_encode(digest.as_ref())
    )
}

#[test]
fn mosquitto_passwd_files_are_accepted() {
    let test = "mosquitto_passwd_files_are_accepted";
    let Some(tools) = tools_or_skip(test, &["mosquitto_passwd"]) else {
        return;
    };
    let mp = &tools[0];
    let dir = TempDir::new("mp-accept");
    let d = dir.path();
    ok(mp, d, &["-c", "-b", "pw", "alice", "s3cret"]);
    ok(mp, d, &["-b", "pw", "bob", "hunter2"]);
    ok(mp, d, &["-H", "sha512", "-b", "pw", "carol", "old-style"]);
    ok(mp, d, &["-I", "1000", "-b", "pw", "dave", "many rounds"]);
    let mut text = std::fs::read_to_string(d.join("pw")).unwrap();
    text.push_str(&sha512_line("erin", "built by hand", b"0123456789ab"));
    text.push('\n');
    std::fs::write(d.join("pw"), &text).unwrap();

    let pw = PasswordFile::load(d.join("pw")).unwrap();
    assert_eq!(pw.len(), 5);
    for (user, good) in [
        ("alice", "s3cret"),
        ("bob", "hunter2"),
        ("carol", "old-style"),
        ("dave", "many rounds"),
        ("erin", "built by hand"),
    ] {
        assert!(
            pw.check(user, good.as_bytes()),
            "{user} with the right password"
        );
        assert!(!pw.check(user, b"wrong"), "{user} with a wrong password");
        assert!(!pw.check(user, format!("{good} ").as_bytes()));
    }
    assert!(!pw.check("mallory", b"s3cret"), "unknown user");
    assert!(!pw.check("alice", b"hunter2"), "another user's password");
}

/// Starts Mosquitto on `pwfile` (readable although 0600: see `start_mosquitto`'s `user root`).
fn mosquitto_with(mosquitto: &Path, pwfile: &Path) -> common_interop::Broker {
    let broker = start_mosquitto(
        mosquitto,
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            pwfile.display()
        ),
    );
    // Mosquitto logs "Opening ... listen socket" before it binds, and loads the password file
    // after that; "running" comes once both are done (or the log shows why it stopped).
    let deadline = Instant::now() + STEP;
    while !broker.log().contains(" running") {
        assert!(
            Instant::now() < deadline,
            "mosquitto not running:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    broker
}

fn login(pub_tool: &Path, port: u16, user: &str, password: &str) -> Output {
    let port = port.to_string();
    run(
        Command::new(pub_tool).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            user,
            "-P",
            password,
            "-t",
            "t",
            "-m",
            "x",
        ]),
        None,
        STEP,
    )
}

fn assert_refused(out: &Output, what: &str) {
    assert_eq!(out.code(), Some(5), "{what}: {out:?}");
    assert!(
        out.stderr.contains("not authorised"),
        "{what}: {}",
        out.stderr
    );
}

#[test]
fn rmqtt_passwd_files_log_in_to_mosquitto() {
    let test = "rmqtt_passwd_files_log_in_to_mosquitto";
    let Some(tools) = tools_or_skip(test, &["mosquitto", "mosquitto_pub"]) else {
        return;
    };
    let (mosquitto, mpub) = (&tools[0], &tools[1]);
    let (dir, rp) = applet_dir("rp-login");
    let d = dir.path();
    ok(&rp, d, &["-c", "-b", "pw", "alice", "s3cret"]);
    ok(&rp, d, &["-b", "pw", "bob", "hunter2"]);
    ok(&rp, d, &["-H", "sha512", "-b", "pw", "carol", "old-style"]);
    ok(&rp, d, &["-I", "1000", "-b", "pw", "dave", "many rounds"]);
    // Prompted, as `mosquitto_passwd -c FILE USER` users do it.
    passwd(&rp, d, &["pw", "erin"], Some("typed in\ntyped in\n")).assert_success("prompted");
    ok(&rp, d, &["-b", "pw", "bob", "changed"]);
    let pwfile = d.join("pw");
    assert_eq!(
        std::fs::metadata(&pwfile).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let broker = mosquitto_with(mosquitto, &pwfile);
    for (user, good) in [
        ("alice", "s3cret"),
        ("bob", "changed"),
        ("carol", "old-style"),
        ("dave", "many rounds"),
        ("erin", "typed in"),
    ] {
        login(mpub, broker.port, user, good).assert_success(&format!("{user} logs in"));
        assert_refused(&login(mpub, broker.port, user, "wrong"), user);
    }
    assert_refused(
        &login(mpub, broker.port, "bob", "hunter2"),
        "bob's old password",
    );
    assert_refused(
        &login(mpub, broker.port, "nobody", "s3cret"),
        "unknown user",
    );
    drop(broker);

    // -D removes exactly that user; the rest still work.
    ok(&rp, d, &["-D", "pw", "alice"]);
    let broker = mosquitto_with(mosquitto, &pwfile);
    assert_refused(
        &login(mpub, broker.port, "alice", "s3cret"),
        "deleted alice",
    );
    login(mpub, broker.port, "carol", "old-style").assert_success("carol after -D alice");
    drop(broker);

    // -U hashes a plain-text file in place; Mosquitto takes the result.
    std::fs::write(&pwfile, "# plain\nfrank:plain pass\ngina:other\n").unwrap();
    ok(&rp, d, &["-U", "pw"]);
    let hashed = std::fs::read_to_string(&pwfile).unwrap();
    assert!(!hashed.contains("plain pass") && hashed.contains("frank:$7$101$"));
    let broker = mosquitto_with(mosquitto, &pwfile);
    login(mpub, broker.port, "frank", "plain pass").assert_success("frank after -U");
    login(mpub, broker.port, "gina", "other").assert_success("gina after -U");
    assert_refused(
        &login(mpub, broker.port, "gina", "plain pass"),
        "gina wrong",
    );
}

#[test]
fn delete_update_and_modes() {
    let (dir, rp) = applet_dir("rp-files");
    let d = dir.path();
    ok(&rp, d, &["-c", "-b", "pw", "a", "1"]);
    ok(&rp, d, &["-b", "pw", "b", "2"]);
    ok(&rp, d, &["-b", "pw", "c", "3"]);
    let path = d.join("pw");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // An existing file keeps its mode and its other lines byte for byte.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    ok(&rp, d, &["-D", "pw", "b"]);
    let after = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = before.lines().filter(|l| !l.starts_with("b:")).collect();
    assert_eq!(after.lines().collect::<Vec<_>>(), kept);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );

    let missing = passwd(&rp, d, &["-D", "pw", "b"], None);
    assert_eq!(missing.code(), Some(1));
    assert_eq!(
        missing.stderr,
        "Warning: User b not found in password file.\n"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "unchanged");

    // Updating replaces the line in place.
    ok(&rp, d, &["-b", "pw", "a", "new"]);
    let pw = PasswordFile::load(&path).unwrap();
    assert!(pw.check("a", b"new") && !pw.check("a", b"1") && pw.check("c", b"3"));
    assert!(!pw.check("b", b"2"));
    assert!(std::fs::read_to_string(&path).unwrap().starts_with("a:"));

    // -U twice does not hash the hashes.
    std::fs::write(&path, "x:plain\n").unwrap();
    ok(&rp, d, &["-U", "pw"]);
    let once = std::fs::read_to_string(&path).unwrap();
    ok(&rp, d, &["-U", "pw"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), once);
    assert!(PasswordFile::load(&path).unwrap().check("x", b"plain"));

    // A symlinked password file stays a symlink; its target is updated.
    std::fs::rename(&path, d.join("real")).unwrap();
    std::os::unix::fs::symlink("real", &path).unwrap();
    ok(&rp, d, &["-b", "pw", "y", "why"]);
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(PasswordFile::load(d.join("real"))
        .unwrap()
        .check("y", b"why"));
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".rmqtt_passwd.")),
        "{names:?}"
    );
}

/// What procd's init script relies on: root edits the broker's password file (owned by the
/// broker's user, group-readable) with every rewriting mode, and owner, group and mode stay.
#[test]
fn rewrites_keep_owner_group_and_mode() {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("rewrites_keep_owner_group_and_mode: skipped, needs root to chown");
        return;
    }
    let (dir, rp) = applet_dir("rp-owner");
    let d = dir.path();
    ok(&rp, d, &["-c", "-b", "pw", "a", "1"]);
    let path = d.join("pw");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600), "new file");
    std::os::unix::fs::chown(&path, Some(200), Some(201)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let steps: [&[&str]; 4] = [
        &["-b", "pw", "b", "2"],
        &["-b", "pw", "a", "changed"],
        &["-D", "pw", "b"],
        &["-U", "pw"],
    ];
    for args in steps {
        ok(&rp, d, args);
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (200, 201, 0o640),
            "after rmqtt_passwd {args:?}"
        );
    }
    assert!(PasswordFile::load(&path).unwrap().check("a", b"changed"));
}

/// Same arguments and input to both tools, in twin directories holding the same file: exit code,
/// stderr and (for prompts) stdout must agree.
#[test]
fn messages_and_exit_codes_match_mosquitto_passwd() {
    let test = "messages_and_exit_codes_match_mosquitto_passwd";
    let Some(tools) = tools_or_skip(test, &["mosquitto_passwd"]) else {
        return;
    };
    let mp = &tools[0];
    let cases: &[(&[&str], Option<&str>)] = &[
        (&[], None),
        (&["-c", "-D", "pw", "a"], None),
        (&["-c", "-U", "pw"], None),
        (&["-D", "-U", "pw"], None),
        (&["-b", "-D", "pw", "a"], None),
        (&["-c", "pw"], None),
        (&["-c", "-b", "pw", "u"], None),
        (&["-D", "pw"], None),
        (&["-U"], None),
        (&["-U", "pw", "extra"], None),
        (&["-b", "pw"], None),
        (&["-H"], None),
        (&["-I"], None),
        (&["-H", "md5", "-b", "pw", "u", "p"], None),
        (&["-I", "0", "-b", "pw", "u", "p"], None),
        (&["-I", "x", "-b", "pw", "u", "p"], None),
        (&["-b", "pw", "a:b", "p"], None),
        (&["-b", "pw", "a\u{1}b", "p"], None),
        (&["-D", "pw", "nobody"], None),
        (&["-D", "pw", "a"], None),
        (&["-b", "pw", "u", "p"], None),
        (&["-b", "missing", "u", "p"], None),
        (&["-D", "missing", "u"], None),
        (&["-U", "missing"], None),
        (&["-c", "new", "u"], Some("abc\nabc\n")),
        (&["-c", "new", "u"], Some("abc\nabd\n")),
        (&["-c", "new", "u"], Some("abc\n")),
        (&["-c", "new", "u"], Some("\n")),
        (&["pw", "u"], Some("abc\nabc\n")),
        (&["missing", "u"], Some("abc\nabc\n")),
    ];
    for (args, input) in cases {
        let theirs = TempDir::new("mp-twin");
        let (ours, rp) = applet_dir("rp-twin");
        for d in [theirs.path(), ours.path()] {
            std::fs::write(d.join("pw"), sha512_line("a", "p", b"saltsaltsalt") + "\n").unwrap();
        }
        let m = passwd(mp, theirs.path(), args, *input);
        let r = passwd(&rp, ours.path(), args, *input);
        assert_eq!(
            r.code(),
            m.code(),
            "exit code for {args:?}\nours: {r:?}\ntheirs: {m:?}"
        );
        assert_eq!(r.stderr, m.stderr, "stderr for {args:?} {input:?}");
        if input.is_some() {
            assert_eq!(r.stdout, m.stdout, "prompts for {args:?} {input:?}");
        }
        for f in ["pw", "new", "missing"] {
            let (a, b) = (theirs.path().join(f), ours.path().join(f));
            assert_eq!(a.exists(), b.exists(), "{f} after {args:?}");
            if let (Ok(a), Ok(b)) = (std::fs::read_to_string(a), std::fs::read_to_string(b)) {
                let users = |s: &str| -> Vec<String> {
                    s.lines()
                        .map(|l| l.split(':').next().unwrap_or("").to_string())
                        .collect()
                };
                assert_eq!(users(&b), users(&a), "users in {f} after {args:?}");
            }
        }
    }
}
