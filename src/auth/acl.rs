//! Mosquitto ACL files (`acl_file`): `topic [read|write|readwrite|deny] FILTER`, `user NAME`,
//! `pattern [access] FILTER` with `%c` / `%u`, `#` comments; decisions follow Mosquitto 2.0.
//!
//! Evaluation, as Mosquitto's default ACL check does it: first the rules of the client's own block
//! (the `user NAME` block for its username, or the lines before any `user` line for an anonymous
//! client), then the patterns; within each, a matching `deny` wins over a grant, and the first
//! grant that covers the access allows it. Nothing matching means denied, so an ACL file with no
//! rules denies everything. Parsing never panics and reports errors with file and line.
//!
//! Pattern safety: a client id or username containing `+` or `#` gets no access through patterns
//! at all (Mosquitto, CVE-2017-7650). One containing `/` (or empty) could otherwise climb into
//! another client's subtree (`clients/%c/#` with id `a/b` lands inside `a`'s), so grant patterns
//! that would substitute such a value are skipped; deny patterns still apply with the substitution.

use crate::config::ConfigError;
use crate::names::Names;
use crate::protocol::topic::{matches, valid_topic_filter};
use std::path::Path;

/// What a client wants to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Receive a message on this topic name (checked for every delivery, retained ones included).
    Read,
    /// Publish to this topic name.
    Write,
    /// Subscribe to this filter (without any `$share/group/` prefix). Granted when some readable
    /// rule overlaps the filter, i.e. the subscription could ever deliver something, and no `deny`
    /// rule covers the whole filter. Mosquitto 2.0 grants every SUBSCRIBE and only filters the
    /// deliveries; this keeps exactly the same messages flowing and refuses (0x80) only
    /// subscriptions that could never receive anything. Deliveries are still checked with `Read`.
    Subscribe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (
                Grant::Read | Grant::ReadWrite,
                Access::Read | Access::Subscribe
            ) | (Grant::Write | Grant::ReadWrite, Access::Write)
        )
    }
}

#[derive(Clone, Debug)]
struct Rule {
    grant: Grant,
    filter: String,
}

/// A loaded ACL file.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    /// `topic` lines before the first `user` line: the anonymous clients' block.
    anonymous: Vec<Rule>,
    users: Names<Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl Acl {
    /// Reads and parses `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Acl, ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: 0,
            message: format!("unable to read ACL file: {e}"),
        })?;
        Acl::parse(&text, &name)
    }

    /// Parses the text of an ACL file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Acl, ConfigError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        // Each user's rules, in file order, made a table in one sort at the end.
        let mut user_rules: Vec<(String, Rule)> = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let err = |message: String| ConfigError {
                file: file.to_string(),
                line: idx + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("missing username after 'user'".into()));
                    }
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    if rest.is_empty() {
                        return Err(err(format!("empty topic after '{keyword}'")));
                    }
                    // The access word is optional, so a one-word rest is the filter itself;
                    // several words: the first is the access and the remainder (spaces
                    // allowed) the filter, as in Mosquitto.
                    let (first, filter) = split_word(rest);
                    let (grant, filter) = if filter.is_empty() {
                        (Grant::ReadWrite, first)
                    } else {
                        let grant = match first {
                            "read" => Grant::Read,
                            "write" => Grant::Write,
                            "readwrite" => Grant::ReadWrite,
                            "deny" => Grant::Deny,
                            other => {
                                return Err(err(format!(
                                    "invalid topic access type '{other}' (expected read, write, readwrite or deny)"
                                )))
                            }
                        };
                        (grant, filter)
                    };
                    if !valid_topic_filter(filter) {
                        return Err(err(format!("invalid ACL topic '{filter}'")));
                    }
                    let rule = Rule {
                        grant,
                        filter: filter.to_string(),
                    };
                    match (keyword, &user) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(u)) => user_rules.push((u.clone(), rule)),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                other => return Err(err(format!("invalid line (unknown keyword '{other}')"))),
            }
        }
        acl.users = Names::grouped(user_rules);
        Ok(acl)
    }

    /// May this client do `access` on `topic` (a topic name for Read/Write, a filter for
    /// Subscribe)? `username` is `None` for an anonymous client.
    pub fn allowed(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        let own = match username {
            Some(u) => self.users.get(u),
            None => Some(&self.anonymous),
        };
        if let Some(rules) = own {
            if let Some(decision) = decide(
                rules.iter().map(|r| (r.grant, r.filter.as_str())),
                topic,
                access,
            ) {
                return decision;
            }
        }
        if self.patterns.is_empty() {
            return false;
        }
        let dangerous = |s: &str| s.contains(['+', '#']);
        if dangerous(client_id) || username.is_some_and(dangerous) {
            return false;
        }
        let expanded = self.patterns.iter().filter_map(|r| {
            let uses_user = r.filter.contains("%u");
            if uses_user && username.is_none() {
                return None;
            }
            if r.grant != Grant::Deny {
                let unsafe_value = |s: &str| s.is_empty() || s.contains('/');
                if (r.filter.contains("%c") && unsafe_value(client_id))
                    || (uses_user && username.is_some_and(unsafe_value))
                {
                    return None;
                }
            }
            Some((r.grant, substitute(&r.filter, client_id, username)))
        });
        let rules: Vec<(Grant, String)> = expanded.collect();
        decide(rules.iter().map(|(g, f)| (*g, f.as_str())), topic, access).unwrap_or(false)
    }

    /// No rules at all (every check is denied).
    pub fn is_empty(&self) -> bool {
        self.anonymous.is_empty() && self.users.is_empty() && self.patterns.is_empty()
    }
}

/// Some(false) if a deny rule hits, Some(true) if a grant allows, None if nothing applies.
fn decide<'a>(
    rules: impl Iterator<Item = (Grant, &'a str)> + Clone,
    topic: &str,
    access: Access,
) -> Option<bool> {
    let denied = rules.clone().any(|(g, f)| {
        g == Grant::Deny
            && match access {
                Access::Subscribe => covers(f, topic),
                Access::Read | Access::Write => matches(f, topic),
            }
    });
    if denied {
        return Some(false);
    }
    let granted = rules.into_iter().any(|(g, f)| {
        g.allows(access)
            && match access {
                Access::Subscribe => overlaps(f, topic),
                Access::Read | Access::Write => matches(f, topic),
            }
    });
    granted.then_some(true)
}

fn split_word(s: &str) -> (&str, &str) {
    match s.split_once([' ', '\t']) {
        Some((w, rest)) => (w, rest.trim()),
        None => (s, ""),
    }
}

/// Mosquitto 2.0 substitutes `%c` / `%u` wherever they appear in the filter.
fn substitute(filter: &str, client_id: &str, username: Option<&str>) -> String {
    let mut out = String::with_capacity(filter.len() + client_id.len());
    let mut rest = filter;
    while let Some(pos) = rest.find('%') {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        match (after.get(1..2), username) {
            (Some("c"), _) => {
                out.push_str(client_id);
                rest = after.get(2..).unwrap_or("");
            }
            (Some("u"), Some(u)) => {
                out.push_str(u);
                rest = after.get(2..).unwrap_or("");
            }
            _ => {
                out.push('%');
                rest = after.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

fn first_level_dollar_mismatch(a: &str, b: &str) -> bool {
    let wild = |s: &str| s.starts_with(['+', '#']);
    (a.starts_with('$') && wild(b)) || (b.starts_with('$') && wild(a))
}

/// Does every topic that `sub` matches also match `acl`? (Mosquitto's `mosquitto_sub_matches_acl`.)
fn covers(acl: &str, sub: &str) -> bool {
    if first_level_dollar_mismatch(acl, sub) {
        return false;
    }
    let mut a = acl.split('/');
    let mut s = sub.split('/');
    loop {
        match (a.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(x), Some(y)) if x == y && x != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Is there a topic that both filters match?
fn overlaps(acl: &str, sub: &str) -> bool {
    if first_level_dollar_mismatch(acl, sub) {
        return false;
    }
    let mut a = acl.split('/');
    let mut s = sub.split('/');
    loop {
        match (a.next(), s.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Access::{Read, Subscribe, Write};
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(text, "acl").unwrap()
    }

    const FILE: &str = "\
# anonymous clients
topic read public/#
topic   anon/rw

user alice
topic readwrite alice/#
topic read shared/#
topic deny shared/secret
topic write logs/alice
topic read with space/x y

user bob
topic #
topic deny bob/private/#

pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern deny clients/%c/locked
pattern write dev-%c/status
";

    #[test]
    fn access_kinds() {
        let a = acl(FILE);
        let alice = |t, acc| a.allowed("c1", Some("alice"), t, acc);
        assert!(alice("alice/x", Read) && alice("alice/x", Write));
        assert!(alice("shared/x", Read) && !alice("shared/x", Write));
        assert!(!alice("logs/alice", Read) && alice("logs/alice", Write));
        assert!(!alice("shared/secret", Read));
        assert!(alice("with space/x y", Read));
        assert!(!alice("public/x", Read), "anonymous block is not alice's");
        assert!(!alice("other", Read) && !alice("other", Write));
        // Default access of a bare `topic FILTER` is readwrite.
        assert!(a.allowed("c", Some("bob"), "any/thing", Write));
        assert!(a.allowed("c", Some("bob"), "any/thing", Read));
    }

    #[test]
    fn deny_overrides_a_broader_grant_in_any_order() {
        let a = acl(FILE);
        assert!(a.allowed("c", Some("bob"), "bob/public", Write));
        assert!(!a.allowed("c", Some("bob"), "bob/private", Write));
        assert!(!a.allowed("c", Some("bob"), "bob/private/x", Read));
        let b = acl("user u\ntopic deny a/b\ntopic read a/#\n");
        assert!(!b.allowed("c", Some("u"), "a/b", Read));
        assert!(b.allowed("c", Some("u"), "a/c", Read));
    }

    #[test]
    fn anonymous_block_applies_only_to_anonymous() {
        let a = acl(FILE);
        assert!(a.allowed("c", None, "public/news", Read));
        assert!(!a.allowed("c", None, "public/news", Write));
        assert!(a.allowed("c", None, "anon/rw", Write));
        assert!(!a.allowed("c", Some("carol"), "public/news", Read));
        assert!(!a.allowed("c", None, "alice/x", Read));
    }

    #[test]
    fn user_without_block_gets_patterns_only() {
        let a = acl(FILE);
        assert!(a.allowed("dev1", Some("carol"), "clients/dev1/t", Write));
        assert!(a.allowed("dev1", Some("carol"), "users/carol/inbox", Read));
        assert!(!a.allowed("dev1", Some("carol"), "users/carol/inbox", Write));
        assert!(!a.allowed("dev1", Some("carol"), "users/dave/inbox", Read));
        assert!(!a.allowed("dev1", Some("carol"), "clients/dev2/t", Read));
    }

    #[test]
    fn pattern_substitution() {
        let a = acl(FILE);
        assert!(a.allowed("abc", Some("alice"), "clients/abc/x/y", Read));
        assert!(!a.allowed("abc", Some("alice"), "clients/abc/locked", Write));
        assert!(a.allowed("abc", None, "clients/abc/x", Write));
        // Substitution inside a level, as Mosquitto 2.0 does.
        assert!(a.allowed("abc", None, "dev-abc/status", Write));
        assert!(!a.allowed("abc", None, "dev-abd/status", Write));
        // A literal `%` that is not %c/%u stays.
        let b = acl("pattern read a/%x/%c\n");
        assert!(b.allowed("id", Some("u"), "a/%x/id", Read));
    }

    #[test]
    fn anonymous_skips_username_patterns() {
        let a = acl("pattern read %u/#\npattern read all/#\n");
        assert!(!a.allowed("c", None, "c/x", Read));
        assert!(!a.allowed("c", None, "%u/x", Read));
        assert!(a.allowed("c", None, "all/x", Read));
        assert!(a.allowed("c", Some("u"), "u/x", Read));
    }

    #[test]
    fn wildcards_in_ids_get_no_pattern_access() {
        let a = acl(FILE);
        assert!(!a.allowed("x/+", None, "clients/x/a/b", Read));
        assert!(!a.allowed("#", None, "clients/anything", Read));
        assert!(!a.allowed("ok", Some("ev+l"), "clients/ok/t", Read));
        // Their own block still applies (Mosquitto checks it before the patterns).
        assert!(a.allowed("#", Some("alice"), "alice/x", Read));
    }

    #[test]
    fn slash_in_id_does_not_reach_another_clients_subtree() {
        let a = acl("pattern readwrite clients/%c/#\npattern read pub/#\n");
        assert!(a.allowed("a", None, "clients/a/b/x", Write));
        assert!(!a.allowed("a/b", None, "clients/a/b/x", Write));
        assert!(!a.allowed("", None, "clients//x", Write));
        assert!(a.allowed("a/b", None, "pub/x", Read));
        let d = acl("pattern deny clients/%c/#\npattern readwrite clients/#\n");
        assert!(
            !d.allowed("a/b", None, "clients/a/b/x", Write),
            "deny still applies"
        );
        assert!(d.allowed("a/b", None, "clients/z", Write));
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let a = acl("topic read #\ntopic read +/x\ntopic read $SYS/broker/#\n");
        assert!(a.allowed("c", None, "a/x", Read));
        assert!(!a.allowed("c", None, "$other/x", Read));
        assert!(a.allowed("c", None, "$SYS/broker/uptime", Read));
        assert!(!a.allowed("c", None, "$other/#", Subscribe));
        assert!(a.allowed("c", None, "$SYS/#", Subscribe));
    }

    #[test]
    fn subscribe_checks_the_filter() {
        let a = acl("topic read a/#\ntopic read b/+/c\ntopic write w/#\ntopic deny a/secret/#\n");
        let sub = |f| a.allowed("c", None, f, Subscribe);
        assert!(sub("a/#") && sub("a/x") && sub("a/+/y") && sub("a"));
        assert!(sub("#"), "overlaps a/#: same deliveries as Mosquitto");
        assert!(sub("+/x/c") && sub("b/x/c") && sub("b/#"));
        assert!(!sub("b/x/d") && !sub("c/#") && !sub("w/#"));
        assert!(!sub("a/secret/#") && !sub("a/secret/x"));
        assert!(sub("a/+/x"), "partly denied filter still overlaps a grant");
    }

    #[test]
    fn filter_relations() {
        for (acl, sub) in [
            ("a/#", "a"),
            ("a/#", "a/b/#"),
            ("+/b", "x/b"),
            ("+/+", "+/b"),
            ("#", "x/#"),
        ] {
            assert!(covers(acl, sub), "{acl} covers {sub}");
        }
        for (acl, sub) in [
            ("a/+", "a/#"),
            ("a/b", "a/+"),
            ("a/b", "a"),
            ("+", "$SYS"),
            ("a/+", "a/b/c"),
        ] {
            assert!(!covers(acl, sub), "{acl} does not cover {sub}");
        }
        for (acl, sub) in [("a/b", "+/#"), ("a/+/c", "+/b/+"), ("a", "a/#"), ("#", "x")] {
            assert!(overlaps(acl, sub), "{acl} overlaps {sub}");
        }
        for (acl, sub) in [
            ("a/b", "a/c"),
            ("a/+", "a/b/c"),
            ("#", "$SYS/x"),
            ("a/b/c", "a/+"),
        ] {
            assert!(!overlaps(acl, sub), "{acl} does not overlap {sub}");
        }
    }

    #[test]
    fn empty_file_denies_everything() {
        let a = acl("# nothing\n");
        assert!(a.is_empty());
        assert!(!a.allowed("c", None, "t", Read));
        assert!(!a.allowed("c", Some("u"), "t", Write));
    }

    #[test]
    fn repeated_user_blocks_merge() {
        let a = acl("user u\ntopic read a\nuser v\ntopic read b\nuser u\ntopic read c\n");
        assert!(a.allowed("c", Some("u"), "a", Read) && a.allowed("c", Some("u"), "c", Read));
        assert!(!a.allowed("c", Some("u"), "b", Read));
    }

    #[test]
    fn errors_carry_file_and_line() {
        for (text, line, needle) in [
            ("topic read a\ntopic\n", 2, "empty topic"),
            ("\n\nuser\n", 3, "missing username"),
            ("topic reed a/b\n", 1, "access type 'reed'"),
            ("topic read a/#/b\n", 1, "invalid ACL topic"),
            ("pattern read a+\n", 1, "invalid ACL topic"),
            ("# c\nbogus line\n", 2, "unknown keyword 'bogus'"),
        ] {
            let e = Acl::parse(text, "f.acl").unwrap_err();
            assert_eq!((e.file.as_str(), e.line), ("f.acl", line), "{text:?}");
            assert!(e.message.contains(needle), "{}", e.message);
        }
        assert_eq!(Acl::load("/nonexistent/acl").unwrap_err().line, 0);
    }
}
