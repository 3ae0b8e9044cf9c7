//! Process-level chores around the event loop: daemonizing (`-d`), the pid file, and dropping
//! root privileges after the listeners are bound (`user`). Thin, checked wrappers over libc.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

/// Forks into the background: the parent exits 0, the child starts a new session and points
/// its standard streams at /dev/null. Call before any thread exists.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: the process is single-threaded here, so fork is sound; the child only continues
    // ordinary Rust code.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        _ => std::process::exit(0),
    }
    // SAFETY: plain syscalls with no pointers, or with a valid NUL-terminated path.
    unsafe {
        if libc::setsid() == -1 {
            return Err(io::Error::last_os_error());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
    }
    Ok(())
}

/// A pid file that is removed again when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(path: &Path) -> io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// If running as root, switches to `user` (its primary group and supplementary groups).
/// Does nothing for other users. Errors name what failed.
pub fn drop_privileges(user: &str) -> Result<bool, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(false);
    }
    let name = CString::new(user).map_err(|_| format!("invalid user name {user:?}"))?;
    // SAFETY: getpwnam returns NULL or a pointer to a static struct valid until the next
    // getpw* call; we copy what we need at once. Single-threaded here.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(format!("user {user} does not exist"));
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    // SAFETY: plain syscalls with valid arguments; order matters (groups before uid).
    unsafe {
        if libc::initgroups(name.as_ptr(), gid) != 0 {
            return Err(format!(
                "initgroups for {user}: {}",
                io::Error::last_os_error()
            ));
        }
        if libc::setgid(gid) != 0 {
            return Err(format!("setgid for {user}: {}", io::Error::last_os_error()));
        }
        if libc::setuid(uid) != 0 {
            return Err(format!("setuid for {user}: {}", io::Error::last_os_error()));
        }
    }
    Ok(true)
}
