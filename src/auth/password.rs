//! Mosquitto password files: one `user:HASH` line per user, where HASH is
//! `$7$ITERATIONS$SALT$KEY` (PBKDF2-HMAC-SHA512, 64-byte key) or the older `$6$SALT$DIGEST`
//! (SHA-512 over the password followed by the salt); salt and key in standard base64 with padding.
//!
//! Parsing never panics on input and reports problems with file and line. `check` compares in
//! constant time and does the same work for an unknown user as for a known one, so response time
//! does not reveal which users exist. Hashes are never logged, printed or exposed by `Debug`.

use crate::config::ConfigError;
use crate::names::Names;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};
use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::path::Path;

/// Salt length `mosquitto_passwd` uses for both formats.
pub const SALT_LEN: usize = 12;
/// SHA-512 output, and the PBKDF2 key length Mosquitto derives.
pub const HASH_LEN: usize = 64;
/// PBKDF2 iterations `mosquitto_passwd` 2.0 uses unless `-I` says otherwise.
pub const DEFAULT_ITERATIONS: u32 = 101;
/// Most PBKDF2 iterations a password file may ask for. Every CONNECT with a username runs
/// the hash on the broker's one thread: 10,000 rounds of HMAC-SHA512 are tens of
/// milliseconds on a router's core, a million would be seconds per wrong password. Mosquitto
/// 2.0 writes 101 and 2.1 writes 1,000.
pub const MAX_ITERATIONS: u32 = 10_000;

/// Which hash `hash_password` writes (`mosquitto_passwd -H`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    /// `$7$`: PBKDF2-HMAC-SHA512, the default since Mosquitto 2.0.
    Sha512Pbkdf2,
    /// `$6$`: one round of SHA-512, Mosquitto 1.6 and earlier.
    Sha512,
}

#[derive(Clone)]
enum Hash {
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        key: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        digest: Vec<u8>,
    },
}

impl Hash {
    fn parse(s: &str) -> Result<Hash, &'static str> {
        if let Some(rest) = s.strip_prefix("$7$") {
            let mut parts = rest.split('$');
            let (Some(iter), Some(salt), Some(key), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err("malformed $7$ hash (expected $7$ITERATIONS$SALT$HASH)");
            };
            let iterations = iter
                .parse::<u32>()
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or("bad iteration count in $7$ hash")?;
            if iterations.get() > MAX_ITERATIONS {
                return Err(
                    "PBKDF2 iteration count above 10000 refused (each login would \
                            stall the broker); re-hash with mosquitto_passwd -I 1000",
                );
            }
            let salt = base64_decode(salt).ok_or("bad base64 salt")?;
            let key = base64_decode(key).ok_or("bad base64 hash")?;
            if salt.is_empty() || key.len() != HASH_LEN {
                return Err("wrong salt or hash length");
            }
            Ok(Hash::Pbkdf2 {
                iterations,
                salt,
                key,
            })
        } else if let Some(rest) = s.strip_prefix("$6$") {
            let mut parts = rest.split('$');
            let (Some(salt), Some(digest), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err("malformed $6$ hash (expected $6$SALT$HASH)");
            };
            let salt = base64_decode(salt).ok_or("bad base64 salt")?;
            let digest = base64_decode(digest).ok_or("bad base64 hash")?;
            if salt.is_empty() || digest.len() != HASH_LEN {
                return Err("wrong salt or hash length");
            }
            Ok(Hash::Sha512 { salt, digest })
        } else {
            Err("not a $6$ or $7$ password hash (plain-text file? hash it with rmqtt_passwd -U)")
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Pbkdf2 {
                iterations,
                salt,
                key,
            } => {
                pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA512, *iterations, salt, password, key).is_ok()
            }
            Hash::Sha512 { salt, digest } => {
                constant_time_eq(sha512_salted(password, salt).as_ref(), digest)
            }
        }
    }
}

fn sha512_salted(password: &[u8], salt: &[u8]) -> digest::Digest {
    let mut ctx = digest::Context::new(&digest::SHA512);
    ctx.update(password);
    ctx.update(salt);
    ctx.finish()
}

/// Equal-length slices are compared without an early exit; only the length may leak, and every
/// stored digest has the same length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A loaded password file.
#[derive(Clone)]
pub struct PasswordFile {
    users: Names<Hash>,
    /// Verified against when the user is unknown, so that case costs what a real check costs.
    dummy: Hash,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .finish()
    }
}

impl PasswordFile {
    /// Reads and parses `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: 0,
            message: format!("unable to read password file: {e}"),
        })?;
        PasswordFile::parse(&text, &name)
    }

    /// Parses the text of a password file; `file` names it in errors. Blank lines and lines
    /// starting with `#` are ignored. A repeated user keeps its first entry, as Mosquitto does.
    pub fn parse(text: &str, file: &str) -> Result<PasswordFile, ConfigError> {
        // Collected, then made a table in one sort (O(n log n) for any file).
        let mut entries: Vec<(String, (usize, Hash))> = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| ConfigError {
                file: file.to_string(),
                line: idx + 1,
                message,
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(err("expected user:hash".into()));
            };
            let (user, hash) = (user.trim(), hash.trim());
            if user.is_empty() {
                return Err(err("empty username".into()));
            }
            let hash = Hash::parse(hash).map_err(|m| err(format!("user '{user}': {m}")))?;
            entries.push((user.to_string(), (idx + 1, hash)));
        }
        // The first entry's kind of hash answers for unknown users.
        let dummy = entries.first().map(|(_, (_, hash))| hash.clone());
        let users = Names::from_entries(entries, |user, (line, _)| {
            log::warn!("{file}:{line}: duplicate user '{user}' ignored");
        })
        .map_values(|(_, hash)| hash);
        let dummy = dummy.unwrap_or(Hash::Pbkdf2 {
            iterations: NonZeroU32::new(DEFAULT_ITERATIONS).unwrap_or(NonZeroU32::MIN),
            salt: vec![0; SALT_LEN],
            key: vec![0; HASH_LEN],
        });
        Ok(PasswordFile { users, dummy })
    }

    /// Is `password` right for `user`? False for an unknown user, after the same amount of work.
    pub fn check(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                std::hint::black_box(self.dummy.verify(password));
                false
            }
        }
    }

    /// Does the file have an entry for `user`? (Not for login decisions: use `check`.)
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Is `s` (the part after `user:`) a well-formed `$6$` or `$7$` hash?
pub fn is_hash(s: &str) -> bool {
    Hash::parse(s.trim()).is_ok()
}

/// Hashes `password` with a fresh random salt into the text that follows `user:` in the file,
/// exactly as `mosquitto_passwd` formats it. `iterations` only matters for PBKDF2.
pub fn hash_password(
    kind: HashKind,
    iterations: NonZeroU32,
    password: &[u8],
) -> io::Result<String> {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| io::Error::other("the system random number generator failed"))?;
    Ok(match kind {
        HashKind::Sha512Pbkdf2 => {
            let mut key = [0u8; HASH_LEN];
            pbkdf2::derive(
                pbkdf2::PBKDF2_HMAC_SHA512,
                iterations,
                &salt,
                password,
                &mut key,
            );
            format!(
                "$7${iterations}${}${}",
                base64_encode(&salt),
                base64_encode(&key)
            )
        }
        HashKind::Sha512 => format!(
            "$6${}${}",
            base64_encode(&salt),
            base64_encode(sha512_salted(password, &salt).as_ref())
        ),
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 section 4) with `=` padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes standard padded base64; `None` on a bad character, bad length or misplaced `=`.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (q, quad) in bytes.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in quad.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { b64_value(c)? };
            n = (n << 6) | v;
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(decoded.get(..3 - pad)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, enc) in cases {
            assert_eq!(base64_encode(raw), enc);
            assert_eq!(base64_decode(enc).as_deref(), Some(raw));
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)), Some(all));
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in [
            "Zg=", "Zg", "Z===", "====", "Zg==Zg==", "Zm9v!", "Zm 9", "Zm=v", "Zm9v\n",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    // Written by mosquitto_passwd 2.0.11: `mosquitto_passwd -b f u1 p1`.
    const MOSQ_LINE: &str = "u1:$7$101$Iib1I+0TNbMixnn0$fTEA45jyiEHbaHXzNJonaCVI+IYYZ6UpL1SbsEsr26IDwXT7PrCHDroKfDDRC5Ysw2GhA/keqR7XoqOPl4u+gg==";
    // `mosquitto_passwd -H sha512 -b f old pw`.
    const MOSQ_SHA512: &str = "old:$6$+VL4Ob0P/TiayW2T$8EaVM4Yg4ogduvgd5El+mhW4eEBPtoYPw7MJ1zdxYl3V3+5qsIFl7NvnwfyxIB/yNSTy4lMeM5XvQ96EC1lcfw==";

    #[test]
    fn checks_mosquitto_hashes() {
        let text = format!("# users\n\n{MOSQ_LINE}\r\n  {MOSQ_SHA512}  \n");
        let pw = PasswordFile::parse(&text, "pw").unwrap();
        assert_eq!(pw.len(), 2);
        assert!(pw.check("u1", b"p1"));
        assert!(!pw.check("u1", b"p2"));
        assert!(!pw.check("u1", b""));
        assert!(pw.check("old", b"pw"));
        assert!(!pw.check("old", b"pW"));
        assert!(!pw.check("nobody", b"p1"));
        assert!(!format!("{pw:?}").contains('$'));
    }

    /// A repeated user keeps its first entry (as Mosquitto's), whatever the order of the
    /// other users; a large file loads in one sort.
    #[test]
    fn a_repeated_user_keeps_its_first_entry() {
        let it = NonZeroU32::new(2).unwrap();
        let h = |p: &str| hash_password(HashKind::Sha512, it, p.as_bytes()).unwrap();
        let text = format!(
            "zed:{}\nme:{}\nabe:{}\nme:{}\n",
            h("z"),
            h("first"),
            h("a"),
            h("second")
        );
        let pw = PasswordFile::parse(&text, "x").unwrap();
        assert_eq!(pw.len(), 3);
        assert!(pw.check("me", b"first"));
        assert!(!pw.check("me", b"second"));
        assert!(pw.check("zed", b"z") && pw.check("abe", b"a"));
        let one = h("x");
        let big: String = (0..20_000).rev().map(|i| format!("u{i}:{one}\n")).collect();
        let pw = PasswordFile::parse(&big, "big").unwrap();
        assert_eq!(pw.len(), 20_000);
        assert!(pw.contains("u0") && pw.contains("u19999") && !pw.contains("u20000"));
    }

    #[test]
    fn round_trip_both_kinds() {
        let it = NonZeroU32::new(7).unwrap();
        for kind in [HashKind::Sha512Pbkdf2, HashKind::Sha512] {
            let h = hash_password(kind, it, "sécret".as_bytes()).unwrap();
            assert!(is_hash(&h));
            let pw = PasswordFile::parse(&format!("me:{h}\n"), "x").unwrap();
            assert!(pw.check("me", "sécret".as_bytes()));
            assert!(!pw.check("me", b"secret"));
        }
        let h = hash_password(HashKind::Sha512Pbkdf2, it, b"p").unwrap();
        assert!(h.starts_with("$7$7$"));
        let salt = h.split('$').nth(3).unwrap();
        assert_eq!(base64_decode(salt).unwrap().len(), SALT_LEN);
    }

    #[test]
    fn iteration_cap_is_inclusive_and_named_in_the_error() {
        let at_cap = NonZeroU32::new(MAX_ITERATIONS).unwrap();
        let line = format!(
            "a:{}",
            hash_password(HashKind::Sha512Pbkdf2, at_cap, b"pw").unwrap()
        );
        assert!(PasswordFile::parse(&line, "x").unwrap().check("a", b"pw"));
        let over = line.replace("$7$10000$", "$7$10001$");
        let e = PasswordFile::parse(&format!("# c\n{over}\n"), "pwfile").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("pwfile", 2));
        assert!(e.message.contains("iteration count"), "{}", e.message);
    }

    #[test]
    fn duplicate_user_keeps_first() {
        let a = format!(
            "a:{}",
            hash_password(HashKind::Sha512, NonZeroU32::MIN, b"one").unwrap()
        );
        let b = format!(
            "a:{}",
            hash_password(HashKind::Sha512, NonZeroU32::MIN, b"two").unwrap()
        );
        let pw = PasswordFile::parse(&format!("{a}\n{b}\n"), "x").unwrap();
        assert!(pw.check("a", b"one"));
        assert!(!pw.check("a", b"two"));
    }

    #[test]
    fn errors_name_file_and_line_without_hash() {
        let good = MOSQ_LINE;
        let cases = [
            ("plain:text", 2),
            ("nocolon", 2),
            (":$6$Zg==$Zg==", 2),
            ("u:$7$0$Zm9v$Zm9v", 2),
            ("u:$7$x$Zm9v$Zm9v", 2),
            ("u:$6$Zm9v$Zm9v", 2),
            ("u:$6$Zm9v", 2),
            ("u:$7$101$Zm9v!$Zm9v", 2),
            ("u:$7$101$Zm9v$Zm9v$", 2),
            ("u:$7$4294967295$Zm9v$Zm9v", 2),
            ("u:$7$10001$Zm9v$Zm9v", 2),
        ];
        for (bad, line) in cases {
            let e = PasswordFile::parse(&format!("{good}\n{bad}\n"), "pwfile").unwrap_err();
            assert_eq!((e.file.as_str(), e.line), ("pwfile", line), "{bad}");
            assert!(!e.message.contains("Zm9v"), "{}", e.message);
        }
    }

    #[test]
    fn load_reports_missing_file() {
        let e = PasswordFile::load("/nonexistent/rmqtt/pw").unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.file.contains("/nonexistent/rmqtt/pw"));
    }

    #[test]
    fn empty_file_checks_nobody() {
        let pw = PasswordFile::parse("\n# nothing\n", "x").unwrap();
        assert!(pw.is_empty());
        assert!(!pw.check("u", b""));
    }
}
