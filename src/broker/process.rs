//! Process-level chores around the event loop: daemonizing (`-d`), the pid file, and dropping
//! root privileges after the listeners are bound (`user`). Thin, checked wrappers over libc.
//!
//! Dropping privileges keeps one capability, CAP_NET_BIND_SERVICE, so that a reload (SIGHUP)
//! can still open listeners on ports below 1024 as the unprivileged user.
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

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets as two 32-bit words.
const CAP_VERSION_3: u32 = 0x2008_0522;
const CAP_NET_BIND_SERVICE: u32 = 10;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Limits this process's permitted and effective capabilities to CAP_NET_BIND_SERVICE.
fn keep_only_net_bind() -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let bit = 1u32 << CAP_NET_BIND_SERVICE;
    let data = [
        CapData {
            effective: bit,
            permitted: bit,
            inheritable: 0,
        },
        CapData::default(),
    ];
    // SAFETY: capset reads a header and two data words that live for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// If running as root, switches to `user` (its primary group and supplementary groups),
/// keeping only CAP_NET_BIND_SERVICE (a warning, and a plain drop, where the kernel refuses).
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
    }
    // Keep the permitted set across setuid, so that one capability can be kept.
    // SAFETY: prctl with integer arguments only.
    let keepcaps = match unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong, 0, 0, 0) }
    {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    };
    // SAFETY: a plain syscall with a valid uid.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(format!("setuid for {user}: {}", io::Error::last_os_error()));
    }
    let kept = keepcaps.and_then(|()| keep_only_net_bind());
    if let Err(e) = kept {
        log::warn!(
            "Warning: unable to keep CAP_NET_BIND_SERVICE ({e}); a reload cannot open ports below 1024."
        );
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 0 as libc::c_ulong, 0, 0, 0);
    }
    Ok(true)
}
