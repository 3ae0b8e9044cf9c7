//! The `rmqtt_passwd` applet: manages password files the way `mosquitto_passwd` 2.0 does, with
//! the same options, messages and exit codes (`-c`, `-b`, `-D`, `-U`, `-H`, `-I`).
//!
//! Guarantees: a password file is only ever replaced whole (written to a temporary file in the
//! same directory, synced, then renamed over it), so a failure leaves the old file intact; new
//! files are created with mode 0600, existing files keep their owner, group and mode; passwords and hashes are
//! never printed.

use crate::auth::password::{hash_password, is_hash, HashKind, DEFAULT_ITERATIONS};
use std::fs;
use std::io::{self, BufRead, IsTerminal, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const MAX_LEN: usize = 65535;

fn print_usage() {
    print!(
        "rmqtt_passwd is a tool for managing password files for rmqtt and mosquitto.\n\n\
Usage: rmqtt_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c | -D] passwordfile username\n\
\x20      rmqtt_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c] -b passwordfile username password\n\
\x20      rmqtt_passwd -U passwordfile\n\
\x20-b : run in batch mode to allow passing passwords on the command line.\n\
\x20-c : create a new password file. This will overwrite existing files.\n\
\x20-D : delete the username rather than adding/updating its password.\n\
\x20-H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.\n\
\x20     Mosquitto 1.6 and earlier defaulted to sha512.\n\
\x20-I : PBKDF2 iterations (default {DEFAULT_ITERATIONS}).\n\
\x20-U : update a plain text password file to use hashed passwords.\n\n\
See https://mosquitto.org/man/mosquitto_passwd-1.html for the file format.\n\n"
    );
}

/// What to do, once the command line is understood.
enum Mode {
    Create {
        user: String,
        password: Option<String>,
    },
    Update {
        user: String,
        password: Option<String>,
    },
    Delete {
        user: String,
    },
    HashPlainFile,
}

/// Failure: message for stderr (may be empty when already printed) and exit code.
struct Fail(String, i32);

impl Fail {
    fn new(msg: impl Into<String>) -> Fail {
        Fail(msg.into(), 1)
    }
}

pub fn main(args: Vec<String>) -> i32 {
    match run(&args) {
        Ok(()) => 0,
        Err(Fail(msg, code)) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            code
        }
    }
}

fn run(args: &[String]) -> Result<(), Fail> {
    if args.len() <= 1 {
        print_usage();
        return Err(Fail(String::new(), 1));
    }
    let mut kind = HashKind::Sha512Pbkdf2;
    let mut iterations = NonZeroU32::new(DEFAULT_ITERATIONS).unwrap_or(NonZeroU32::MIN);
    let (mut batch, mut create, mut delete, mut update_file) = (false, false, false, false);
    // Like mosquitto_passwd: options first, the first non-option starts the positionals.
    let mut idx = 1;
    while let Some(arg) = args.get(idx) {
        match arg.as_str() {
            "-H" => {
                let v = args.get(idx + 1).ok_or_else(|| {
                    Fail::new("Error: -H argument given but not enough other arguments.")
                })?;
                kind = match v.as_str() {
                    "sha512" => HashKind::Sha512,
                    "sha512-pbkdf2" => HashKind::Sha512Pbkdf2,
                    other => return Err(Fail::new(format!("Error: Unknown hash type '{other}'"))),
                };
                idx += 1;
            }
            "-I" => {
                let v = args.get(idx + 1).ok_or_else(|| {
                    Fail::new("Error: -I argument given but not enough other arguments.")
                })?;
                iterations = v
                    .parse::<u32>()
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| Fail::new("Error: Number of iterations must be > 0."))?;
                idx += 1;
            }
            "-b" => batch = true,
            "-c" => create = true,
            "-D" => delete = true,
            "-U" => update_file = true,
            _ => break,
        }
        idx += 1;
    }
    for (a, b, msg) in [
        (create, delete, "-c and -D"),
        (create, update_file, "-c and -U"),
        (delete, update_file, "-D and -U"),
        (delete, batch, "-b and -D"),
    ] {
        if a && b {
            return Err(Fail::new(format!("Error: {msg} cannot be used together.")));
        }
    }
    let pos = args.get(idx..).unwrap_or(&[]);
    let (file, mode) = match (create, delete, update_file, batch, pos) {
        (true, _, _, true, [f, u, p, ..]) => (
            f,
            Mode::Create {
                user: u.clone(),
                password: Some(p.clone()),
            },
        ),
        (true, _, _, true, _) => {
            return Err(Fail::new(
                "Error: -c argument given but password file, username, or password missing.",
            ))
        }
        (true, _, _, false, [f, u, ..]) => (
            f,
            Mode::Create {
                user: u.clone(),
                password: None,
            },
        ),
        (true, _, _, false, _) => {
            return Err(Fail::new(
                "Error: -c argument given but password file or username missing.",
            ))
        }
        (_, true, _, _, [f, u, ..]) => (f, Mode::Delete { user: u.clone() }),
        (_, true, _, _, _) => {
            return Err(Fail::new(
                "Error: -D argument given but password file or username missing.",
            ))
        }
        (_, _, true, _, [f]) => (f, Mode::HashPlainFile),
        (_, _, true, _, _) => {
            return Err(Fail::new(
                "Error: -U argument given but password file missing.",
            ))
        }
        (_, _, _, true, [f, u, p]) => (
            f,
            Mode::Update {
                user: u.clone(),
                password: Some(p.clone()),
            },
        ),
        (_, _, _, false, [f, u]) => (
            f,
            Mode::Update {
                user: u.clone(),
                password: None,
            },
        ),
        _ => {
            print_usage();
            return Err(Fail(String::new(), 1));
        }
    };
    match &mode {
        Mode::Create { user, password } | Mode::Update { user, password } => {
            check_username(user)?;
            if password.as_ref().is_some_and(|p| p.len() > MAX_LEN) {
                return Err(Fail::new(
                    "Error: Password must be less than 65536 characters long.",
                ));
            }
        }
        Mode::Delete { user } => check_username(user)?,
        Mode::HashPlainFile => {}
    }
    let path = resolve(file)?;
    let hasher = |password: &str| {
        hash_password(kind, iterations, password.as_bytes())
            .map_err(|e| Fail::new(format!("Error: Unable to hash password. {e}.")))
    };

    match mode {
        Mode::Create { user, password } => {
            let password = match password {
                Some(p) => p,
                None => prompt_twice()?,
            };
            let line = format!("{user}:{}\n", hasher(&password)?);
            write_atomically(&path, line.as_bytes())
        }
        Mode::Update { user, password } => {
            let text = read_existing(&path)?;
            let password = match password {
                Some(p) => p,
                None => prompt_twice()?,
            };
            let hash = hasher(&password)?;
            let mut out = String::with_capacity(text.len() + 200);
            let mut found = false;
            for (n, line) in text.lines().enumerate() {
                match entry_user(line, n + 1)? {
                    Some(u) if u == user => {
                        found = true;
                        out.push_str(&format!("{user}:{hash}\n"));
                    }
                    _ => push_line(&mut out, line),
                }
            }
            if !found {
                out.push_str(&format!("{user}:{hash}\n"));
            }
            write_atomically(&path, out.as_bytes())
        }
        Mode::Delete { user } => {
            let text = read_existing(&path)?;
            let mut out = String::with_capacity(text.len());
            let mut found = false;
            for (n, line) in text.lines().enumerate() {
                match entry_user(line, n + 1)? {
                    Some(u) if u == user => found = true,
                    _ => push_line(&mut out, line),
                }
            }
            if !found {
                return Err(Fail::new(format!(
                    "Warning: User {user} not found in password file."
                )));
            }
            write_atomically(&path, out.as_bytes())
        }
        Mode::HashPlainFile => {
            let text = read_existing(&path)?;
            let mut out = String::with_capacity(text.len() * 4);
            for (n, line) in text.lines().enumerate() {
                let Some(u) = entry_user(line, n + 1)? else {
                    push_line(&mut out, line);
                    continue;
                };
                let secret = line.split_once(':').map(|(_, p)| p.trim()).unwrap_or("");
                // Unlike mosquitto_passwd 2.0, an entry that is already hashed is kept as it
                // is, so running -U twice does not turn hashes into passwords.
                if is_hash(secret) {
                    push_line(&mut out, line);
                } else {
                    out.push_str(&format!("{u}:{}\n", hasher(secret)?));
                }
            }
            write_atomically(&path, out.as_bytes())
        }
    }
}

fn check_username(user: &str) -> Result<(), Fail> {
    if user.len() > MAX_LEN {
        return Err(Fail::new(
            "Error: Username must be less than 65536 characters long.",
        ));
    }
    if user.chars().any(char::is_control) {
        return Err(Fail::new(
            "Error: Username must not contain control characters.",
        ));
    }
    if user.contains(':') {
        return Err(Fail::new(
            "Error: Username must not contain the ':' character.",
        ));
    }
    if user.is_empty() {
        return Err(Fail::new("Error: Username must not be empty."));
    }
    Ok(())
}

/// The user named on a line of an existing file; None for blank and comment lines, which are
/// kept as they are. Anything else without `user:` is a corrupt file, as mosquitto_passwd says.
fn entry_user(line: &str, n: usize) -> Result<Option<&str>, Fail> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    match t.split_once(':') {
        Some((u, p)) if !u.trim().is_empty() && !p.trim().is_empty() => Ok(Some(u.trim())),
        _ => Err(Fail::new(format!(
            "Error: Corrupt password file at line {n}."
        ))),
    }
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

/// Follows symlinks so the rename replaces the real file, not the link.
fn resolve(file: &str) -> Result<PathBuf, Fail> {
    match fs::canonicalize(file) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PathBuf::from(file)),
        Err(e) => Err(Fail::new(format!(
            "Error reading password file: {}",
            os_msg(&e)
        ))),
    }
}

fn read_existing(path: &Path) -> Result<String, Fail> {
    fs::read_to_string(path).map_err(|e| {
        Fail::new(format!(
            "Error: Unable to open password file {}. {}.",
            path.display(),
            os_msg(&e)
        ))
    })
}

/// The bare strerror text, as the C tools print it.
fn os_msg(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s.get(..i).unwrap_or(&s).to_string(),
        None => s,
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), Fail> {
    let existing = fs::metadata(path).ok();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.rmqtt_passwd.{}", std::process::id()));
    let fail = |e: io::Error| {
        Fail::new(format!(
            "Error: Unable to open file {} for writing. {}.",
            path.display(),
            os_msg(&e)
        ))
    };
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        if let Some(meta) = &existing {
            // Keep the owner (matters when root edits the broker's file) and mode of the file
            // being replaced. Changing the owner fails for non-root, where it cannot differ.
            if meta.uid() != f.metadata()?.uid() || meta.gid() != f.metadata()?.gid() {
                std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
            }
            f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(e)
    })
}

/// Asks for the password twice without echo, with mosquitto_passwd's prompts and errors.
fn prompt_twice() -> Result<String, Fail> {
    let ask = |text: &str| {
        let answer = prompt(text)?;
        if answer.is_empty() {
            return Err(Fail::new("Error: Empty password."));
        }
        // Echo is off, so the Enter key left the cursor on the prompt line.
        println!();
        Ok(answer)
    };
    let first = ask("Password: ")?;
    let second = ask("Reenter password: ")?;
    if first != second {
        return Err(Fail("Error: Passwords do not match.".into(), 2));
    }
    Ok(first)
}

fn prompt(text: &str) -> Result<String, Fail> {
    let mut out = io::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    let stdin = io::stdin();
    let _echo = stdin.is_terminal().then(EchoOff::new).flatten();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Fail::new(format!("Error: Unable to read password. {}.", os_msg(&e))))?;
    while line.ends_with(['\n', '\r']) {
        line.pop();
    }
    if line.len() > MAX_LEN {
        return Err(Fail::new(
            "Error: Password must be less than 65536 characters long.",
        ));
    }
    Ok(line)
}

/// Terminal echo switched off on stdin while this lives.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> Option<EchoOff> {
        let saved = tty_attrs(libc::STDIN_FILENO, None).ok()?;
        let mut quiet = saved;
        // Without ECHONL too: `prompt` prints the newline itself, as mosquitto_passwd does.
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
        tty_attrs(libc::STDIN_FILENO, Some(&quiet)).ok()?;
        Some(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = tty_attrs(libc::STDIN_FILENO, Some(&self.saved));
    }
}

/// Reads the terminal attributes of `fd`, or sets them to `set` and returns what was set.
#[allow(unsafe_code)]
fn tty_attrs(fd: libc::c_int, set: Option<&libc::termios>) -> io::Result<libc::termios> {
    // SAFETY: `termios` is a plain C struct for which all-zero bytes are a valid value;
    // tcgetattr only writes into the struct we own, tcsetattr only reads it, and both get a
    // pointer that is valid for the whole call. A bad `fd` is reported through the return code.
    let (rc, attrs) = unsafe {
        match set {
            None => {
                let mut t: libc::termios = std::mem::zeroed();
                (libc::tcgetattr(fd, &mut t), t)
            }
            Some(t) => (libc::tcsetattr(fd, libc::TCSANOW, t), *t),
        }
    };
    if rc == 0 {
        Ok(attrs)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("a:b").is_err());
        assert!(check_username("a\tb").is_err());
        assert!(check_username("").is_err());
        assert!(check_username(&"x".repeat(65536)).is_err());
    }

    #[test]
    fn entry_lines() {
        assert_eq!(entry_user(" u : $7$x ", 1).ok().flatten(), Some("u"));
        assert!(entry_user("# c", 1).ok().flatten().is_none());
        assert!(entry_user("", 1).ok().flatten().is_none());
        assert!(entry_user("nocolon", 3).is_err());
        assert!(entry_user("u:", 3).is_err());
    }

    #[test]
    fn strerror_text() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(os_msg(&e), "No such file or directory");
    }
}
