//! Dotted field paths: `"address.city"`, `"tags.0"`, `"a\.b"`.

use std::fmt;

use serde_json::Value;

use super::Error;

/// The longest field path accepted, in bytes.
pub const MAX_FIELD_PATH_BYTES: usize = 1024;

/// A field path inside a record, written with dots: `"address.city"`.
///
/// A segment walks into an object by key, or into an array by a decimal index
/// (`"tags.0"` is the first tag), as in CouchDB. There is no implicit fan-out
/// over array elements: use `$elemMatch` for that. A literal dot in a key is
/// escaped with a backslash: `"a\.b"` is the single key `a.b`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses a dotted path. Empty paths and empty segments (`"a..b"`, `"a."`)
    /// are errors, as are paths longer than [`MAX_FIELD_PATH_BYTES`].
    pub fn parse(text: &str) -> Result<FieldPath, Error> {
        let bad = |reason| Error::BadFieldPath {
            path: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(bad("a field name cannot be empty"));
        }
        if text.len() > MAX_FIELD_PATH_BYTES {
            return Err(bad("a field path is limited to 1024 bytes"));
        }
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'.') => {
                    chars.next();
                    current.push('.');
                }
                '.' => segments.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        segments.push(current);
        if segments.iter().any(String::is_empty) {
            return Err(bad(
                "a path segment is empty (two dots in a row, or a leading or trailing dot)",
            ));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The empty path: the value itself (used inside `$elemMatch`).
    pub(crate) fn root() -> FieldPath {
        FieldPath {
            text: String::new(),
            segments: Vec::new(),
        }
    }

    /// `self` followed by `child`.
    pub(crate) fn join(&self, child: &FieldPath) -> FieldPath {
        if self.segments.is_empty() {
            return child.clone();
        }
        let mut segments = self.segments.clone();
        segments.extend(child.segments.iter().cloned());
        FieldPath {
            text: format!("{}.{}", self.text, child.text),
            segments,
        }
    }

    /// Whether this is the empty path.
    pub(crate) fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether `prefix` names this field or one of its ancestors.
    pub(crate) fn starts_with(&self, prefix: &FieldPath) -> bool {
        self.segments.starts_with(&prefix.segments)
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The unescaped segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The value at this path, or `None` when any step is missing, indexes
    /// past the end of an array, or walks into a scalar.
    pub fn lookup<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        let mut current = value;
        for segment in &self.segments {
            current = match current {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(array_index(segment)?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

/// A segment read as an array index: ASCII digits only.
pub(crate) fn array_index(segment: &str) -> Option<usize> {
    if segment.bytes().all(|b| b.is_ascii_digit()) {
        segment.parse().ok()
    } else {
        None
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_walk_objects_and_array_indexes() {
        let doc = json!({"a": {"b": [10, {"c": "deep"}]}, "x.y": 1});
        let get = |p: &str| FieldPath::parse(p).unwrap().lookup(&doc).cloned();
        assert_eq!(get("a.b.0"), Some(json!(10)));
        assert_eq!(get("a.b.1.c"), Some(json!("deep")));
        assert_eq!(get("a.b.2"), None);
        assert_eq!(get("a.b.c"), None);
        assert_eq!(get("a.b.0.z"), None);
        assert_eq!(get("a.b.-1"), None);
        assert_eq!(get("x\\.y"), Some(json!(1)));
        assert_eq!(get("x.y"), None);
    }

    #[test]
    fn escaped_dot_is_one_segment() {
        let p = FieldPath::parse("a\\.b.c").unwrap();
        assert_eq!(p.segments(), ["a.b", "c"]);
        assert_eq!(p.as_str(), "a\\.b.c");
    }

    #[test]
    fn empty_segments_are_rejected_with_the_path_named() {
        for bad in ["", "a..b", ".a", "a."] {
            let err = FieldPath::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let long = "a".repeat(MAX_FIELD_PATH_BYTES + 1);
        assert!(FieldPath::parse(&long).is_err());
        assert!(FieldPath::parse(&long[1..]).is_ok());
    }

    #[test]
    fn join_and_prefix() {
        let a = FieldPath::parse("a").unwrap();
        let bc = FieldPath::parse("b.c").unwrap();
        let abc = a.join(&bc);
        assert_eq!(abc.segments(), ["a", "b", "c"]);
        assert_eq!(abc.as_str(), "a.b.c");
        assert!(abc.starts_with(&a));
        assert!(!a.starts_with(&abc));
        assert!(FieldPath::root().join(&a) == a);
    }
}
