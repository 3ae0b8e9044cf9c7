//! SIGINT and SIGTERM for the client applets: the handler only sets a flag, which the
//! connection's read loop checks; the applet then sends DISCONNECT and exits 0, as
//! mosquitto_sub does. The handlers are installed with `sigaction` unconditionally, so a client
//! started in the background of a script (where the shell ignores SIGINT) still stops on
//! `kill -INT`. No `SA_RESTART`: a blocking read returns `EINTR` and the flag is seen at once.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM. A failure leaves the default action, which
/// only loses the clean DISCONNECT.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; the
        // handler only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps for `d`, waking early when a stop is requested. `true`: stop requested.
pub fn sleep(d: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + d;
    loop {
        if stop_requested() {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(std::time::Duration::from_millis(50)));
    }
}
