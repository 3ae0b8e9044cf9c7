//! Topic names and topic filters: validation and matching (MQTT section 4.7).
//!
//! Pure functions on `&str`; never panic.

/// The deepest topic the broker accepts, in levels. The specification sets no limit, but the
/// broker's structures walk topics level by level, so a 65,535-level topic must not reach them;
/// 1,000 levels keeps the deepest walk well under a megabyte of stack.
pub const MAX_LEVELS: usize = 1000;

/// More than [`MAX_LEVELS`] levels: refused by the broker (a policy, not a protocol rule).
pub fn too_deep(topic: &str) -> bool {
    topic.bytes().filter(|&b| b == b'/').count() >= MAX_LEVELS
}

/// A topic name a client may publish to: non-empty, no `+` or `#`. [MQTT-3.3.2-2] [MQTT-4.7.3-1]
pub fn valid_topic_name(topic: &str) -> bool {
    // Bytes, not chars: both are ASCII, which never occurs inside a multi-byte sequence.
    !topic.is_empty() && !topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// A topic filter: non-empty; `#` only as the whole last level; `+` only as a whole level.
/// [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.3-1]
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// A shared subscription `$share/{group}/{filter}`, split into group and filter.
/// `None` when `filter` is not a shared subscription; `Some(Err)` when it is malformed.
pub fn parse_shared(filter: &str) -> Option<Result<(&str, &str), ()>> {
    let rest = filter.strip_prefix("$share/")?;
    Some(match rest.split_once('/') {
        Some((group, f))
            if !group.is_empty() && !group.contains(['+', '#']) && valid_topic_filter(f) =>
        {
            Ok((group, f))
        }
        _ => Err(()),
    })
}

/// Does `filter` match `topic`? Wildcards at the first level never match `$` topics.
/// [MQTT-4.7.2-1]. Both arguments are assumed valid; invalid input gives a plain `false`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in [
            "a", "#", "+", "a/#", "a/+/b", "+/+", "/", "a//b", "$SYS/#", "+/#",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "#/a", "##", "++"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn depth_limit() {
        let ok = "a/".repeat(MAX_LEVELS - 1) + "a";
        let deep = "a/".repeat(MAX_LEVELS) + "a";
        assert!(!too_deep(&ok));
        assert!(too_deep(&deep));
        assert!(too_deep(&"/".repeat(65_000)));
    }

    #[test]
    fn names() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("/"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
    }

    #[test]
    fn matching() {
        let cases = [
            ("#", "a", true),
            ("#", "a/b/c", true),
            ("a/#", "a", true),
            ("a/#", "a/b", true),
            ("a/#", "ab", false),
            ("+", "a", true),
            ("+", "a/b", false),
            ("+/b", "a/b", true),
            ("a/+", "a/", true),
            ("a/+", "a", false),
            ("+/+", "/", true),
            ("/+", "/a", true),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a/b/d", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} vs {t}");
        }
    }

    #[test]
    fn shared() {
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share/g/a/+"), Some(Ok(("g", "a/+"))));
        assert_eq!(parse_shared("$share/g"), Some(Err(())));
        assert_eq!(parse_shared("$share//a"), Some(Err(())));
        assert_eq!(parse_shared("$share/g+/a"), Some(Err(())));
    }
}
