//! JSON paths: decides how a place inside a message is written in reasons and findings
//! (`$.properties.a[1]["odd key"]`). Shared by the plan validator and the PII walker, so
//! neither depends on the other.

use alloc::string::{String, ToString};

/// JSON path of `key` under `parent`: `$.a` for plain names, `$["a b"]` otherwise.
pub fn child_path(parent: &str, key: &str) -> String {
    let mut p = parent.to_string();
    push_child(&mut p, key);
    p
}

/// Appends `.key` to a path, or `["key"]` when the key is not a plain identifier.
pub fn push_child(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str("[\"");
        for c in key.chars() {
            match c {
                '"' => path.push_str("\\\""),
                '\\' => path.push_str("\\\\"),
                c if (c as u32) < 0x20 => path.push('?'),
                c => path.push(c),
            }
        }
        path.push_str("\"]");
    }
}

/// Whether `path` is `root` or a place inside it (`$.context.page`, `$.context["a b"]`;
/// not `$.contextual`).
pub fn is_within(path: &str, root: &str) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Appends `[i]`.
pub fn push_index(path: &mut String, i: usize) {
    path.push('[');
    let mut digits = [0u8; 20];
    let mut n = i;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in digits[..len].iter().rev() {
        path.push(char::from(*d));
    }
    path.push(']');
}

/// A path segment, rendered into a string only when something is reported.
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `root` followed by `segs`.
pub fn render(root: &str, segs: &[Seg<'_>]) -> String {
    let mut p = root.to_string();
    for s in segs {
        match s {
            Seg::Key(k) => push_child(&mut p, k),
            Seg::Index(i) => push_index(&mut p, *i),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(child_path("$", "a"), "$.a");
        assert_eq!(child_path("$", "a b"), "$[\"a b\"]");
        assert_eq!(child_path("$", "q\"x"), "$[\"q\\\"x\"]");
        assert_eq!(
            render("$.p", &[Seg::Key("x"), Seg::Index(12), Seg::Key("1")]),
            "$.p.x[12][\"1\"]"
        );
        for (path, within) in [
            ("$.context", true),
            ("$.context.page.url", true),
            ("$.context[\"a b\"]", true),
            ("$.contextual", false),
            ("$.properties.context", false),
        ] {
            assert_eq!(is_within(path, "$.context"), within, "{path}");
        }
    }
}
