//! Reading an ACL user's key rules, for servers without
//! `RM_ACLCheckKeyPrefixPermissions` (Valkey 8, Redis before 8.0): whether the
//! user's key patterns cover *every* key under a prefix. Pure text logic, no Redis
//! types. Patterns follow Redis's glob rules (`*`, `?`, `[...]` with `^` and
//! ranges, `\` escapes), matched case-sensitively as Redis does for keys.

/// What a caller wants to do with keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read values (`%R`).
    Read,
    /// Write or delete (`%W`).
    Write,
}

/// Whether the root selector of the ACL description `acl` (as `ACL LIST` or
/// `RM_GetModuleUserACLString` print it) has a key pattern that grants `access` to
/// every key starting with `prefix`. Selectors (the parenthesised parts) are not
/// read: they may grant other commands than the caller's, so counting them could
/// let a user through that Redis would stop; leaving them out can only refuse.
pub fn root_covers_prefix(acl: &str, prefix: &[u8], access: Access) -> bool {
    root_key_patterns(acl, access).iter().any(|pattern| covers_prefix(pattern.as_bytes(), prefix))
}

/// The root selector's key patterns that grant `access`, in order.
fn root_key_patterns(acl: &str, access: Access) -> Vec<&str> {
    let mut patterns = Vec::new();
    for token in acl.split(' ').take_while(|t| !t.starts_with('(')) {
        if token == "resetkeys" {
            patterns.clear();
        } else if token == "allkeys" {
            patterns.push("*");
        } else if let Some(pattern) = token.strip_prefix('~') {
            patterns.push(pattern);
        } else if let Some((perms, pattern)) = token.strip_prefix('%').and_then(|t| t.split_once('~')) {
            let wanted = match access {
                Access::Read => 'R',
                Access::Write => 'W',
            };
            if perms.contains(wanted) {
                patterns.push(pattern);
            }
        }
    }
    patterns
}

/// Whether `pattern` matches every key that starts with `prefix`: it matches the
/// prefix itself and ends with an unescaped `*` (Redis's `prefixmatch` rule).
pub fn covers_prefix(pattern: &[u8], prefix: &[u8]) -> bool {
    let Some((b'*', before)) = pattern.split_last() else {
        return false;
    };
    let backslashes = before.iter().rev().take_while(|c| **c == b'\\').count();
    backslashes % 2 == 0 && glob_match(pattern, prefix)
}

/// Redis's glob match (`stringmatchlen`, case-sensitive).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', _)) => {
            // Consecutive stars match what one does.
            let rest = &pattern[pattern.iter().take_while(|c| **c == b'*').count()..];
            (0..=text.len()).any(|skip| glob_match(rest, &text[skip..]))
        }
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', class)) => match text.split_first() {
            Some((c, text_rest)) => {
                let (matched, used) = match_class(class, *c);
                matched && glob_match(&class[used..], text_rest)
            }
            None => false,
        },
        Some((b'\\', rest)) if !rest.is_empty() => text.first() == Some(&rest[0]) && glob_match(&rest[1..], &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

/// Matches `c` against a `[...]` class whose text (after `[`) starts `class`;
/// returns whether it matched and how many bytes of `class` the class used. An
/// unterminated class ends with the pattern, as in Redis.
fn match_class(class: &[u8], c: u8) -> (bool, usize) {
    let negate = class.first() == Some(&b'^');
    let mut i = usize::from(negate);
    let mut matched = false;
    while i < class.len() {
        match class[i] {
            b']' => return (matched != negate, i + 1),
            b'\\' if i + 1 < class.len() => {
                matched |= class[i + 1] == c;
                i += 2;
            }
            start if i + 2 < class.len() && class[i + 1] == b'-' => {
                let (low, high) = if start <= class[i + 2] { (start, class[i + 2]) } else { (class[i + 2], start) };
                matched |= (low..=high).contains(&c);
                i += 3;
            }
            literal => {
                matched |= literal == c;
                i += 1;
            }
        }
    }
    (matched != negate, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_follows_redis_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("users:*", "users:42", true),
            ("users:*", "user:42", false),
            ("u?ers:*", "users:", true),
            ("*:42", "users:42", true),
            ("*:42", "users:43", false),
            ("[a-c]x", "bx", true),
            ("[c-a]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            ("[\\]]x", "]x", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("**a", "bba", true),
            ("", "", true),
            ("?", "", false),
            ("[ab", "a", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_match(pattern.as_bytes(), text.as_bytes()), *expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn a_pattern_covers_a_prefix_only_when_it_matches_every_key_under_it() {
        assert!(covers_prefix(b"users:*", b"users:"));
        assert!(covers_prefix(b"*", b"users:"));
        assert!(covers_prefix(b"us*", b"users:"));
        assert!(covers_prefix(b"*", b""));
        assert!(covers_prefix(b"a\\\\*", b"a\\"), "an escaped backslash leaves the star free");
        assert!(!covers_prefix(b"users:1*", b"users:"), "covers only some ids");
        assert!(!covers_prefix(b"users:?", b"users:"), "one character only");
        assert!(!covers_prefix(b"users:\\*", b"users:"), "a literal star");
        assert!(!covers_prefix(b"app:*", b"users:"));
        assert!(!covers_prefix(b"users:*", b""), "not every key");
    }

    #[test]
    fn only_the_root_selector_and_the_right_permission_count() {
        let acl = "user app on #ab ~app:* %R~ro:* %W~wo:* %RW~both:* resetchannels +@all (~users:* +get)";
        assert!(root_covers_prefix(acl, b"app:", Access::Write));
        assert!(root_covers_prefix(acl, b"app:x:", Access::Read));
        assert!(root_covers_prefix(acl, b"ro:", Access::Read));
        assert!(!root_covers_prefix(acl, b"ro:", Access::Write));
        assert!(root_covers_prefix(acl, b"wo:", Access::Write));
        assert!(!root_covers_prefix(acl, b"wo:", Access::Read));
        assert!(root_covers_prefix(acl, b"both:", Access::Read) && root_covers_prefix(acl, b"both:", Access::Write));
        assert!(!root_covers_prefix(acl, b"users:", Access::Write), "a selector's keys are not counted");
        assert!(root_covers_prefix("user default on nopass ~* &* +@all", b"users:", Access::Write));
        assert!(root_covers_prefix("user a on allkeys +@all", b"users:", Access::Write));
        assert!(!root_covers_prefix("user a on ~* resetkeys ~app:* +@all", b"users:", Access::Write));
        assert!(!root_covers_prefix("user a on resetchannels +@all", b"users:", Access::Read));
    }
}
