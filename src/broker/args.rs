//! The broker's command line, read as the `getopts` crate read it before (same error texts,
//! `-cFILE` and `-c FILE`, grouped flags `-dv`, `--name=value`, `--`, free arguments anywhere),
//! in the few lines one fixed table needs: the crate was 5 KB of the mips binary.

/// One option: its short letter, its long name, and whether it takes a value.
struct Spec {
    short: Option<char>,
    long: &'static str,
    value: bool,
    multi: bool,
}

const fn spec(short: Option<char>, long: &'static str, value: bool, multi: bool) -> Spec {
    Spec {
        short,
        long,
        value,
        multi,
    }
}

/// Indexes into [`SPECS`] (and [`Matches`]), in the order getopts checked repetitions.
pub const CONFIG: usize = 0;
pub const UCI: usize = 1;
pub const DAEMON: usize = 2;
pub const HELP: usize = 3;
pub const PORT: usize = 4;
pub const VERBOSE: usize = 5;
pub const VERSION: usize = 6;
pub const TEST_CONFIG: usize = 7;
pub const USER: usize = 8;

static SPECS: [Spec; 9] = [
    spec(Some('c'), "config-file", true, false),
    spec(Some('u'), "uci", true, false),
    spec(Some('d'), "daemon", false, false),
    spec(Some('h'), "help", false, false),
    spec(Some('p'), "port", true, true),
    spec(Some('v'), "verbose", false, false),
    spec(None, "version", false, false),
    spec(None, "test-config", false, false),
    spec(None, "user", true, false),
];

/// What was given: per option of [`SPECS`] its values (an empty one for a flag), and the
/// arguments that are not options.
#[derive(Debug, Default)]
pub struct Matches {
    vals: [Vec<String>; 9],
    pub free: Vec<String>,
}

impl Matches {
    pub fn present(&self, i: usize) -> bool {
        self.vals.get(i).is_some_and(|v| !v.is_empty())
    }

    pub fn value(&self, i: usize) -> Option<String> {
        self.vals.get(i).and_then(|v| v.first()).cloned()
    }

    pub fn values(&self, i: usize) -> &[String] {
        self.vals.get(i).map_or(&[], |v| v.as_slice())
    }

    fn push(&mut self, i: usize, v: String) {
        if let Some(vals) = self.vals.get_mut(i) {
            vals.push(v);
        }
    }
}

/// A name as typed: one byte is a short option (`--c` too, as getopts had it), more a long
/// one.
fn find(name: &str) -> Option<usize> {
    SPECS.iter().position(|s| {
        if name.len() == 1 {
            s.short.is_some_and(|c| name.starts_with(c))
        } else {
            s.long == name
        }
    })
}

fn find_short(c: char) -> Option<usize> {
    SPECS.iter().position(|s| s.short == Some(c))
}

/// Parses the arguments after the program name; the error is the text getopts gave.
pub fn parse(args: &[String]) -> Result<Matches, String> {
    let mut m = Matches::default();
    let mut it = args.iter();
    while let Some(cur) = it.next() {
        if cur.len() < 2 || !cur.starts_with('-') {
            m.free.push(cur.clone());
            continue;
        }
        if cur == "--" {
            m.free.extend(it.cloned());
            break;
        }
        // The option that takes a value, its name as typed, and the value if attached.
        let (id, name, attached) = if let Some(tail) = cur.strip_prefix("--") {
            let (name, attached) = match tail.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (tail, None),
            };
            let id = find(name).ok_or_else(|| format!("Unrecognized option: '{name}'"))?;
            (id, name.to_string(), attached.map(str::to_string))
        } else {
            let mut found = None;
            for (j, ch) in cur.char_indices().skip(1) {
                let id = find_short(ch).ok_or_else(|| format!("Unrecognized option: '{ch}'"))?;
                if SPECS.get(id).is_some_and(|s| s.value) {
                    let rest = cur.get(j + ch.len_utf8()..).filter(|r| !r.is_empty());
                    found = Some((id, ch.to_string(), rest.map(str::to_string)));
                    if rest.is_some() {
                        break;
                    }
                } else {
                    m.push(id, String::new());
                }
            }
            match found {
                Some(f) => f,
                None => continue,
            }
        };
        if SPECS.get(id).is_some_and(|s| s.value) {
            match attached.or_else(|| it.next().cloned()) {
                Some(v) => m.push(id, v),
                None => return Err(format!("Argument to option '{name}' missing")),
            }
        } else if attached.is_some() {
            return Err(format!("Option '{name}' does not take an argument"));
        } else {
            m.push(id, String::new());
        }
    }
    for (i, s) in SPECS.iter().enumerate() {
        if !s.multi && m.vals.get(i).is_some_and(|v| v.len() > 1) {
            // By its long name, as getopts named it.
            return Err(format!("Option '{}' given more than once", s.long));
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Matches, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn forms_as_getopts_read_them() {
        let m = p(&[
            "-dv", "-cFILE", "-p", "1", "--port=2", "x", "--user", "u", "--", "-h",
        ])
        .unwrap();
        assert!(m.present(DAEMON) && m.present(VERBOSE) && !m.present(HELP));
        assert_eq!(m.value(CONFIG).as_deref(), Some("FILE"));
        assert_eq!(m.values(PORT), ["1", "2"]);
        assert_eq!(m.value(USER).as_deref(), Some("u"));
        assert_eq!(m.free, ["x", "-h"]);
        // A flag before a value-taking letter in one group; the value is the next argument,
        // whatever it looks like; `--c` is `-c`; `-` alone is a free argument.
        let m = p(&["-dc", "-v", "--u=f", "-"]).unwrap();
        assert!(m.present(DAEMON) && !m.present(VERBOSE));
        assert_eq!(m.value(CONFIG).as_deref(), Some("-v"));
        assert_eq!(m.value(UCI).as_deref(), Some("f"));
        assert_eq!(m.free, ["-"]);
        assert!(p(&["--test-config", "--version"])
            .unwrap()
            .present(TEST_CONFIG));
    }

    #[test]
    fn errors_as_getopts_worded_them() {
        let e = |a: &[&str]| p(a).unwrap_err();
        assert_eq!(e(&["-x"]), "Unrecognized option: 'x'");
        assert_eq!(e(&["-dx"]), "Unrecognized option: 'x'");
        assert_eq!(e(&["--nope"]), "Unrecognized option: 'nope'");
        assert_eq!(e(&["-c"]), "Argument to option 'c' missing");
        assert_eq!(
            e(&["--config-file"]),
            "Argument to option 'config-file' missing"
        );
        assert_eq!(
            e(&["--daemon=1"]),
            "Option 'daemon' does not take an argument"
        );
        assert_eq!(
            e(&["-c", "a", "--config-file", "b"]),
            "Option 'config-file' given more than once"
        );
        assert_eq!(e(&["-d", "-d"]), "Option 'daemon' given more than once");
        assert_eq!(
            e(&["--user=a", "--user=b"]),
            "Option 'user' given more than once"
        );
        // Errors of the scan come before repetitions.
        assert_eq!(e(&["-d", "-d", "-x"]), "Unrecognized option: 'x'");
    }
}
