//! Mango selectors: parsing JSON into a tree of field tests, and matching.
//!
//! Parsing normalizes the selector the way CouchDB does. Nested field objects
//! become dotted paths (`{"a": {"b": 1}}` tests `a.b`), operators inside a
//! field (`{"a": {"$or": [...]}}`) distribute over that field, and negations
//! (`$not`, `$nor`, `$ne`, `$nin`) are pushed down to the leaves by De Morgan's
//! laws. A negated leaf still requires its field to exist, so
//! `{"$not": {"a": {"$gt": 1}}}` matches `{"a": 0}` but not `{}`; only
//! `$exists` flips without that requirement.

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::collate::{self, JsonType, describe};
use super::path::FieldPath;
use super::{Error, MAX_REGEX_BYTES, MAX_SELECTOR_DEPTH, MAX_SELECTOR_VALUES, REGEX_SIZE_LIMIT};

/// A parsed Mango selector: `{"year": 2026, "kwh": {"$gt": 3}}`.
///
/// Parse it once with [`Selector::parse`], then call [`Selector::matches`] on
/// as many records as needed; regexes are compiled at parse time.
#[derive(Debug, Clone)]
pub struct Selector {
    root: Node,
}

/// A node of the normalized selector tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Every child matches (an empty list matches everything).
    And(Vec<Node>),
    /// Some child matches (an empty list matches nothing).
    Or(Vec<Node>),
    /// One test on one field.
    Leaf(Leaf),
}

/// A test on the value at `path`, possibly negated.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) path: FieldPath,
    pub(crate) test: Test,
    /// The leaf matches when the field exists and the test fails. Never set
    /// for `Exists`, whose negation flips its argument instead.
    pub(crate) negated: bool,
}

/// The operators, after normalization (`$ne` is a negated `Eq`, `$nin` a
/// negated `In`).
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Eq(Value),
    Lt(Value),
    Lte(Value),
    Gt(Value),
    Gte(Value),
    /// Sorted by collation and deduplicated, for binary search.
    In(Vec<Value>),
    Exists(bool),
    Type(JsonType),
    Size(u64),
    Mod {
        divisor: i128,
        remainder: i128,
    },
    Regex(Regex),
    BeginsWith(String),
    All(Vec<Value>),
    ElemMatch(Box<Node>),
    AllMatch(Box<Node>),
    KeyMapMatch(Box<Node>),
}

impl Selector {
    /// Parses a selector from its JSON form.
    ///
    /// The top level must be an object; `{}` matches every record. Errors name
    /// the operator and the field path at fault, and the selector is bounded
    /// by [`MAX_SELECTOR_DEPTH`] and [`MAX_SELECTOR_VALUES`].
    pub fn parse(selector: &Value) -> Result<Selector, Error> {
        let Value::Object(map) = selector else {
            return Err(Error::NotAnObject {
                what: "selector",
                got: describe(selector),
            });
        };
        let mut parser = Parser { values: 0 };
        let ctx = Ctx {
            at_prefix: String::new(),
            in_element: false,
            depth: 0,
        };
        let root = parser.object(map, &FieldPath::root(), &ctx)?;
        Ok(Selector { root })
    }

    /// The selector `{}`, which matches every record.
    pub fn all() -> Selector {
        Selector {
            root: Node::And(Vec::new()),
        }
    }

    /// Whether `record` satisfies the selector.
    pub fn matches(&self, record: &Value) -> bool {
        self.root.eval(record)
    }

    /// The leaves every match must satisfy: the top-level conjunction, seen
    /// through nested `$and`s. The planner narrows index scans with them.
    pub(crate) fn conjuncts(&self) -> Vec<&Leaf> {
        fn walk<'a>(node: &'a Node, out: &mut Vec<&'a Leaf>) {
            match node {
                Node::And(children) => children.iter().for_each(|c| walk(c, out)),
                Node::Leaf(leaf) => out.push(leaf),
                Node::Or(_) => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl Node {
    fn eval(&self, value: &Value) -> bool {
        match self {
            Node::And(children) => children.iter().all(|c| c.eval(value)),
            Node::Or(children) => children.iter().any(|c| c.eval(value)),
            Node::Leaf(leaf) => leaf.eval(value),
        }
    }

    /// The negation, pushed down to the leaves.
    fn negate(self) -> Node {
        match self {
            Node::And(children) => Node::Or(children.into_iter().map(Node::negate).collect()),
            Node::Or(children) => Node::And(children.into_iter().map(Node::negate).collect()),
            Node::Leaf(mut leaf) => {
                match &mut leaf.test {
                    Test::Exists(should) => *should = !*should,
                    _ => leaf.negated = !leaf.negated,
                }
                Node::Leaf(leaf)
            }
        }
    }
}

impl Leaf {
    fn eval(&self, value: &Value) -> bool {
        match self.path.lookup(value) {
            // A missing field fails every test but `$exists: false`, negated
            // or not, as in CouchDB.
            None => matches!(self.test, Test::Exists(false)),
            Some(found) => self.test.eval(found) != self.negated,
        }
    }
}

fn in_sorted(sorted: &[Value], value: &Value) -> bool {
    sorted
        .binary_search_by(|probe| collate::compare(probe, value))
        .is_ok()
}

impl Test {
    fn eval(&self, value: &Value) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Test::Eq(arg) => collate::compare(value, arg) == Equal,
            Test::Lt(arg) => collate::compare(value, arg) == Less,
            Test::Lte(arg) => collate::compare(value, arg) != Greater,
            Test::Gt(arg) => collate::compare(value, arg) == Greater,
            Test::Gte(arg) => collate::compare(value, arg) != Less,
            // CouchDB matches an array field when one of its elements is in
            // the list, and never compares the array as a whole.
            Test::In(args) => match value {
                Value::Array(items) => items.iter().any(|item| in_sorted(args, item)),
                _ => in_sorted(args, value),
            },
            Test::Exists(should) => *should,
            Test::Type(ty) => JsonType::of(value) == *ty,
            Test::Size(n) => matches!(value, Value::Array(items) if items.len() as u64 == *n),
            Test::Mod { divisor, remainder } => match value {
                Value::Number(n) => n.as_i128().is_some_and(|v| v % divisor == *remainder),
                _ => false,
            },
            Test::Regex(re) => matches!(value, Value::String(s) if re.is_match(s)),
            Test::BeginsWith(prefix) => {
                matches!(value, Value::String(s) if s.starts_with(prefix.as_str()))
            }
            Test::All(args) => match value {
                Value::Array(items) => {
                    args.iter()
                        .all(|arg| items.iter().any(|item| collate::equal(item, arg)))
                        || matches!(args.as_slice(), [only @ Value::Array(_)] if collate::equal(only, value))
                }
                _ => false,
            },
            Test::ElemMatch(node) => {
                matches!(value, Value::Array(items) if items.iter().any(|item| node.eval(item)))
            }
            Test::AllMatch(node) => {
                matches!(value, Value::Array(items) if !items.is_empty() && items.iter().all(|item| node.eval(item)))
            }
            Test::KeyMapMatch(node) => match value {
                Value::Object(map) => map.keys().any(|key| node.eval(&Value::String(key.clone()))),
                _ => false,
            },
        }
    }
}

/// Where the parser is: how deep, and how to name the current path in errors.
struct Ctx {
    /// The display path of the enclosing `$elemMatch` (empty at the top).
    at_prefix: String,
    /// Inside `$elemMatch`/`$allMatch`/`$keyMapMatch`, the element itself may
    /// be tested, so operators without a field are fine.
    in_element: bool,
    depth: usize,
}

impl Ctx {
    fn deeper(&self) -> Result<Ctx, Error> {
        let depth = self.depth + 1;
        if depth > MAX_SELECTOR_DEPTH {
            return Err(Error::SelectorTooDeep {
                limit: MAX_SELECTOR_DEPTH,
            });
        }
        Ok(Ctx {
            at_prefix: self.at_prefix.clone(),
            in_element: self.in_element,
            depth,
        })
    }

    fn at(&self, path: &FieldPath) -> String {
        match (self.at_prefix.is_empty(), path.is_root()) {
            (true, _) => path.as_str().to_owned(),
            (false, true) => self.at_prefix.clone(),
            (false, false) => format!("{}.{}", self.at_prefix, path),
        }
    }
}

struct Parser {
    /// JSON values seen so far, against [`MAX_SELECTOR_VALUES`].
    values: usize,
}

const UNSUPPORTED: &[&str] = &[
    "$text",
    "$where",
    "$geoWithin",
    "$geoIntersects",
    "$near",
    "$nearSphere",
];

impl Parser {
    fn count(&mut self) -> Result<(), Error> {
        self.values += 1;
        if self.values > MAX_SELECTOR_VALUES {
            return Err(Error::SelectorTooLarge {
                limit: MAX_SELECTOR_VALUES,
            });
        }
        Ok(())
    }

    /// Accounts for an operator argument: every nested value counts, and
    /// nesting counts against the depth limit.
    fn argument(&mut self, value: &Value, depth: usize) -> Result<(), Error> {
        if depth > MAX_SELECTOR_DEPTH {
            return Err(Error::SelectorTooDeep {
                limit: MAX_SELECTOR_DEPTH,
            });
        }
        self.count()?;
        match value {
            Value::Array(items) => items.iter().try_for_each(|v| self.argument(v, depth + 1)),
            Value::Object(map) => map.values().try_for_each(|v| self.argument(v, depth + 1)),
            _ => Ok(()),
        }
    }

    /// A condition on the value at `path`: an operator object, a nested field
    /// object, or a bare value meaning equality.
    fn condition(&mut self, value: &Value, path: &FieldPath, ctx: &Ctx) -> Result<Node, Error> {
        match value {
            // `{}` where a field is named means "equals {}" (CouchDB); with no
            // field it is the empty selector and matches everything.
            Value::Object(map) if map.is_empty() && path.is_root() => {
                self.count()?;
                Ok(Node::And(Vec::new()))
            }
            Value::Object(map) if !map.is_empty() => self.object(map, path, ctx),
            bare => {
                self.require_field("$eq", path, ctx)?;
                self.argument(bare, ctx.depth)?;
                Ok(Node::Leaf(leaf(path, Test::Eq(bare.clone()))))
            }
        }
    }

    fn object(
        &mut self,
        map: &Map<String, Value>,
        path: &FieldPath,
        ctx: &Ctx,
    ) -> Result<Node, Error> {
        self.count()?;
        let ctx = ctx.deeper()?;
        let mut nodes = Vec::with_capacity(map.len());
        for (key, value) in map {
            nodes.push(self.entry(key, value, path, &ctx)?);
        }
        Ok(if nodes.len() == 1 {
            nodes.swap_remove(0)
        } else {
            Node::And(nodes)
        })
    }

    fn require_field(&self, op: &str, path: &FieldPath, ctx: &Ctx) -> Result<(), Error> {
        if path.is_root() && !ctx.in_element {
            return Err(Error::OperatorWithoutField { op: op.to_owned() });
        }
        Ok(())
    }

    fn entry(
        &mut self,
        key: &str,
        value: &Value,
        path: &FieldPath,
        ctx: &Ctx,
    ) -> Result<Node, Error> {
        if !key.starts_with('$') {
            let field = FieldPath::parse(key)?;
            return self.condition(value, &path.join(&field), ctx);
        }
        let bad = |expected: &'static str, got: String| Error::BadArgument {
            op: key.to_owned(),
            at: ctx.at(path),
            expected,
            got,
        };
        let test = match key {
            "$and" | "$or" | "$nor" => {
                let Value::Array(items) = value else {
                    return Err(bad("an array of selectors", describe(value).to_owned()));
                };
                self.count()?;
                let inner = ctx.deeper()?;
                let children = items
                    .iter()
                    .map(|item| self.condition(item, path, &inner))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(match key {
                    "$and" => Node::And(children),
                    "$or" => Node::Or(children),
                    _ => Node::And(children.into_iter().map(Node::negate).collect()),
                });
            }
            "$not" => {
                if !value.is_object() {
                    return Err(bad("an object", describe(value).to_owned()));
                }
                return Ok(self.condition(value, path, ctx)?.negate());
            }
            "$elemMatch" | "$allMatch" | "$keyMapMatch" => {
                self.require_field(key, path, ctx)?;
                if !value.is_object() {
                    return Err(bad("an object", describe(value).to_owned()));
                }
                let element = Ctx {
                    at_prefix: format!("{}.{}", ctx.at(path), key)
                        .trim_start_matches('.')
                        .to_owned(),
                    in_element: true,
                    depth: ctx.depth,
                };
                let inner = Box::new(self.condition(value, &FieldPath::root(), &element)?);
                match key {
                    "$elemMatch" => Test::ElemMatch(inner),
                    "$allMatch" => Test::AllMatch(inner),
                    _ => Test::KeyMapMatch(inner),
                }
            }
            "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" => {
                self.require_field(key, path, ctx)?;
                if let Value::Object(map) = value
                    && map.keys().any(|k| k.starts_with('$'))
                {
                    return Err(bad(
                        "a value",
                        "an operator object (operators cannot nest here)".to_owned(),
                    ));
                }
                self.argument(value, ctx.depth)?;
                let arg = value.clone();
                match key {
                    "$eq" => Test::Eq(arg),
                    "$ne" => return Ok(Node::Leaf(leaf(path, Test::Eq(arg)).into_leaf_negated())),
                    "$gt" => Test::Gt(arg),
                    "$gte" => Test::Gte(arg),
                    "$lt" => Test::Lt(arg),
                    _ => Test::Lte(arg),
                }
            }
            "$in" | "$nin" | "$all" => {
                self.require_field(key, path, ctx)?;
                let Value::Array(items) = value else {
                    return Err(bad("an array", describe(value).to_owned()));
                };
                self.argument(value, ctx.depth)?;
                match key {
                    "$all" => Test::All(items.clone()),
                    _ => {
                        let mut sorted = items.clone();
                        sorted.sort_by(collate::compare);
                        sorted.dedup_by(|a, b| collate::equal(a, b));
                        if key == "$in" {
                            Test::In(sorted)
                        } else {
                            return Ok(Node::Leaf(
                                leaf(path, Test::In(sorted)).into_leaf_negated(),
                            ));
                        }
                    }
                }
            }
            "$exists" => {
                self.require_field(key, path, ctx)?;
                let Value::Bool(should) = value else {
                    return Err(bad("true or false", describe(value).to_owned()));
                };
                self.count()?;
                Test::Exists(*should)
            }
            "$type" => {
                self.require_field(key, path, ctx)?;
                let Value::String(name) = value else {
                    return Err(bad("a type name string", describe(value).to_owned()));
                };
                self.count()?;
                Test::Type(JsonType::from_name(name).ok_or_else(|| Error::UnknownType {
                    at: ctx.at(path),
                    name: name.clone(),
                })?)
            }
            "$size" => {
                self.require_field(key, path, ctx)?;
                self.count()?;
                match value.as_u64() {
                    Some(n) => Test::Size(n),
                    None => return Err(bad("a non-negative integer", value.to_string())),
                }
            }
            "$mod" => {
                self.require_field(key, path, ctx)?;
                self.argument(value, ctx.depth)?;
                let pair = match value {
                    Value::Array(items) => match items.as_slice() {
                        [Value::Number(d), Value::Number(r)] => d.as_i128().zip(r.as_i128()),
                        _ => None,
                    },
                    _ => None,
                };
                let Some((divisor, remainder)) = pair else {
                    return Err(bad(
                        "an array of two integers [divisor, remainder]",
                        value.to_string(),
                    ));
                };
                if divisor == 0 {
                    return Err(Error::ModByZero { at: ctx.at(path) });
                }
                Test::Mod { divisor, remainder }
            }
            "$regex" => {
                self.require_field(key, path, ctx)?;
                let Value::String(pattern) = value else {
                    return Err(bad(
                        "a regular expression string",
                        describe(value).to_owned(),
                    ));
                };
                self.count()?;
                if pattern.len() > MAX_REGEX_BYTES {
                    return Err(bad(
                        "a pattern of at most 4096 bytes",
                        format!("{} bytes", pattern.len()),
                    ));
                }
                let re = RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .nest_limit(MAX_SELECTOR_DEPTH as u32)
                    .build()
                    .map_err(|reason| Error::BadRegex {
                        at: ctx.at(path),
                        reason,
                    })?;
                Test::Regex(re)
            }
            "$beginsWith" => {
                self.require_field(key, path, ctx)?;
                let Value::String(prefix) = value else {
                    return Err(bad("a string", describe(value).to_owned()));
                };
                self.count()?;
                Test::BeginsWith(prefix.clone())
            }
            op if UNSUPPORTED.contains(&op) => {
                return Err(Error::UnsupportedOperator {
                    op: op.to_owned(),
                    at: ctx.at(path),
                });
            }
            op => {
                return Err(Error::UnknownOperator {
                    op: op.to_owned(),
                    at: ctx.at(path),
                });
            }
        };
        Ok(Node::Leaf(leaf(path, test)))
    }
}

fn leaf(path: &FieldPath, test: Test) -> Leaf {
    Leaf {
        path: path.clone(),
        test,
        negated: false,
    }
}

impl Leaf {
    fn into_leaf_negated(mut self) -> Leaf {
        self.negated = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: Value) -> Selector {
        Selector::parse(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn m(selector: Value, doc: Value) -> bool {
        sel(selector).matches(&doc)
    }

    fn err(selector: Value) -> String {
        Selector::parse(&selector)
            .expect_err(&selector.to_string())
            .to_string()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(m(json!({}), json!({"a": 1})));
        assert!(m(json!({}), json!({})));
        assert!(Selector::all().matches(&json!({"x": null})));
    }

    #[test]
    fn bare_value_is_exact_equality_not_array_contains() {
        assert!(m(json!({"a": 1}), json!({"a": 1})));
        assert!(m(json!({"a": 1}), json!({"a": 1.0})));
        assert!(!m(json!({"a": 1}), json!({"a": [1]})));
        assert!(m(json!({"a": [1, 2]}), json!({"a": [1, 2]})));
        assert!(!m(json!({"a": [1, 2]}), json!({"a": [2, 1]})));
        assert!(!m(json!({"a": 1}), json!({"b": 1})));
        assert!(m(json!({"a": null}), json!({"a": null})));
        assert!(!m(json!({"a": null}), json!({})));
    }

    #[test]
    fn implicit_and_across_fields() {
        let s = sel(json!({"a": 1, "b": "x"}));
        assert!(s.matches(&json!({"a": 1, "b": "x"})));
        assert!(!s.matches(&json!({"a": 1, "b": "y"})));
        assert!(!s.matches(&json!({"a": 1})));
    }

    #[test]
    fn nested_object_form_is_a_dotted_path() {
        let doc = json!({"a": {"b": {"c": 5}}});
        assert!(m(json!({"a.b.c": 5}), doc.clone()));
        assert!(m(json!({"a": {"b": {"c": 5}}}), doc.clone()));
        assert!(m(json!({"a": {"b": {"c": {"$gt": 1}}}}), doc.clone()));
        assert!(m(json!({"a": {"b.c": {"$lt": 6}}}), doc.clone()));
        // An object value with no operators is a path, not object equality;
        // `$eq` compares objects whole.
        assert!(!m(json!({"a": {"$eq": {"b": {}}}}), doc.clone()));
        assert!(m(json!({"a": {"$eq": {"b": {"c": 5}}}}), doc.clone()));
        // Mixed operators and fields in one object.
        assert!(m(json!({"a": {"$exists": true, "b.c": 5}}), doc.clone()));
        // `{}` under a field is equality with the empty object.
        assert!(m(json!({"e": {}}), json!({"e": {}})));
        assert!(!m(json!({"e": {}}), json!({"e": {"x": 1}})));
    }

    #[test]
    fn array_index_paths() {
        let doc = json!({"tags": ["red", "blue"], "pts": [{"x": 1}, {"x": 2}]});
        assert!(m(json!({"tags.1": "blue"}), doc.clone()));
        assert!(m(json!({"pts.1.x": {"$gte": 2}}), doc.clone()));
        assert!(!m(json!({"tags.2": {"$exists": true}}), doc.clone()));
        assert!(m(json!({"tags.2": {"$exists": false}}), doc));
    }

    #[test]
    fn comparison_operators_use_collation_across_types() {
        let d = |v: Value| json!({ "v": v });
        assert!(m(json!({"v": {"$gt": 5}}), d(json!(6))));
        assert!(!m(json!({"v": {"$gt": 5}}), d(json!(5.0))));
        assert!(m(json!({"v": {"$gte": 5}}), d(json!(5.0))));
        assert!(m(json!({"v": {"$lt": 5}}), d(json!(4.99))));
        assert!(m(json!({"v": {"$lte": 5}}), d(json!(5))));
        assert!(!m(json!({"v": {"$lte": 5}}), d(json!(5.01))));
        // Strings sort after numbers, null before everything.
        assert!(m(json!({"v": {"$gt": 5}}), d(json!("abc"))));
        assert!(m(json!({"v": {"$lt": 0}}), d(json!(null))));
        assert!(m(json!({"v": {"$lt": false}}), d(json!(null))));
        assert!(m(json!({"v": {"$gt": "z"}}), d(json!([]))));
        assert!(m(json!({"v": {"$gt": [9]}}), d(json!({}))));
        assert!(m(json!({"v": {"$eq": 1}}), d(json!(1.0))));
        assert!(m(json!({"v": {"$ne": 1}}), d(json!(2))));
        assert!(!m(json!({"v": {"$ne": 1}}), d(json!(1.0))));
        // Missing fields fail comparisons, `$ne` included (CouchDB).
        assert!(!m(json!({"v": {"$ne": 1}}), json!({})));
        assert!(!m(json!({"v": {"$lt": 1}}), json!({})));
    }

    #[test]
    fn in_and_nin() {
        let s = sel(json!({"v": {"$in": [1, "a", [2]]}}));
        assert!(s.matches(&json!({"v": 1.0})));
        assert!(s.matches(&json!({"v": "a"})));
        assert!(!s.matches(&json!({"v": "b"})));
        assert!(!s.matches(&json!({})));
        // Array fields match when an element is listed (CouchDB), and the
        // array itself is never compared whole.
        assert!(s.matches(&json!({"v": ["z", "a"]})));
        assert!(!s.matches(&json!({"v": [2]})));
        assert!(s.matches(&json!({"v": [[2]]})));
        assert!(!m(json!({"v": {"$in": []}}), json!({"v": 1})));

        let n = sel(json!({"v": {"$nin": [1, 2]}}));
        assert!(n.matches(&json!({"v": 3})));
        assert!(!n.matches(&json!({"v": 2.0})));
        assert!(!n.matches(&json!({"v": [3, 2]})));
        assert!(n.matches(&json!({"v": [3, 4]})));
        assert!(!n.matches(&json!({})));
        assert!(m(json!({"v": {"$nin": []}}), json!({"v": 1})));
    }

    #[test]
    fn exists_and_type() {
        assert!(m(json!({"a": {"$exists": true}}), json!({"a": null})));
        assert!(!m(json!({"a": {"$exists": true}}), json!({})));
        assert!(m(json!({"a": {"$exists": false}}), json!({})));
        assert!(!m(json!({"a": {"$exists": false}}), json!({"a": 0})));
        for (name, value) in [
            ("null", json!(null)),
            ("boolean", json!(false)),
            ("number", json!(1.5)),
            ("string", json!("")),
            ("array", json!([])),
            ("object", json!({})),
        ] {
            assert!(
                m(json!({"a": {"$type": name}}), json!({ "a": value.clone() })),
                "{name}"
            );
            let other = if name == "null" {
                json!(0)
            } else {
                json!(null)
            };
            assert!(
                !m(json!({"a": {"$type": name}}), json!({ "a": other })),
                "{name}"
            );
        }
        assert!(!m(json!({"a": {"$type": "null"}}), json!({})));
    }

    #[test]
    fn size_mod_regex_begins_with() {
        assert!(m(json!({"a": {"$size": 2}}), json!({"a": [1, 2]})));
        assert!(!m(json!({"a": {"$size": 2}}), json!({"a": [1]})));
        assert!(!m(json!({"a": {"$size": 2}}), json!({"a": "ab"})));
        assert!(m(json!({"a": {"$size": 0}}), json!({"a": []})));

        assert!(m(json!({"n": {"$mod": [3, 1]}}), json!({"n": 7})));
        assert!(!m(json!({"n": {"$mod": [3, 1]}}), json!({"n": 8})));
        // Truncated remainder, like Erlang's `rem`.
        assert!(m(json!({"n": {"$mod": [3, -1]}}), json!({"n": -7})));
        assert!(m(json!({"n": {"$mod": [-1, 0]}}), json!({"n": i64::MIN})));
        assert!(m(json!({"n": {"$mod": [2, 1]}}), json!({"n": u64::MAX})));
        // Floats never match $mod, even integral ones.
        assert!(!m(json!({"n": {"$mod": [2, 0]}}), json!({"n": 4.0})));

        assert!(m(json!({"s": {"$regex": "^ab+c"}}), json!({"s": "abbbc!"})));
        assert!(m(json!({"s": {"$regex": "b"}}), json!({"s": "abc"})));
        assert!(!m(json!({"s": {"$regex": "^b"}}), json!({"s": "abc"})));
        assert!(!m(json!({"s": {"$regex": "1"}}), json!({"s": 1})));

        assert!(m(json!({"s": {"$beginsWith": "ab"}}), json!({"s": "abc"})));
        assert!(!m(json!({"s": {"$beginsWith": "b"}}), json!({"s": "abc"})));
        assert!(!m(
            json!({"s": {"$beginsWith": "a"}}),
            json!({"s": ["abc"]})
        ));
    }

    #[test]
    fn all_elem_match_all_match_key_map_match() {
        let doc = json!({"t": ["a", "b", "c"], "n": [1, 5, 9], "o": [{"k": 1}, {"k": 2}], "m": {"x1": 1, "y": 2}});
        assert!(m(json!({"t": {"$all": ["a", "c"]}}), doc.clone()));
        assert!(!m(json!({"t": {"$all": ["a", "z"]}}), doc.clone()));
        assert!(m(json!({"t": {"$all": []}}), doc.clone()));
        assert!(!m(json!({"x": {"$all": []}}), json!({"x": "a"})));
        // A single array argument also matches the field whole (CouchDB).
        assert!(m(json!({"t": {"$all": [["a", "b", "c"]]}}), doc.clone()));

        assert!(m(
            json!({"n": {"$elemMatch": {"$gt": 4, "$lt": 6}}}),
            doc.clone()
        ));
        assert!(!m(
            json!({"n": {"$elemMatch": {"$gt": 5, "$lt": 9}}}),
            doc.clone()
        ));
        assert!(m(json!({"o": {"$elemMatch": {"k": 2}}}), doc.clone()));
        assert!(m(
            json!({"o": {"$elemMatch": {"$or": [{"k": 7}, {"k": 1}]}}}),
            doc.clone()
        ));
        assert!(!m(json!({"o": {"$elemMatch": {"k": 3}}}), doc.clone()));
        assert!(!m(json!({"t": {"$elemMatch": {}}}), json!({"t": []})));

        assert!(m(json!({"n": {"$allMatch": {"$gt": 0}}}), doc.clone()));
        assert!(!m(json!({"n": {"$allMatch": {"$gt": 1}}}), doc.clone()));
        assert!(!m(
            json!({"n": {"$allMatch": {"$gt": 0}}}),
            json!({"n": []})
        ));

        assert!(m(
            json!({"m": {"$keyMapMatch": {"$regex": "^x"}}}),
            doc.clone()
        ));
        assert!(!m(json!({"m": {"$keyMapMatch": {"$eq": "z"}}}), doc));
    }

    #[test]
    fn combinators_and_negation() {
        let d = json!({"a": 5, "b": "x"});
        assert!(m(json!({"$and": [{"a": 5}, {"b": "x"}]}), d.clone()));
        assert!(!m(json!({"$and": [{"a": 5}, {"b": "y"}]}), d.clone()));
        assert!(m(json!({"$or": [{"a": 4}, {"b": "x"}]}), d.clone()));
        assert!(!m(json!({"$or": []}), d.clone()));
        assert!(m(json!({"$and": []}), d.clone()));
        assert!(m(json!({"$nor": [{"a": 4}, {"b": "y"}]}), d.clone()));
        assert!(!m(json!({"$nor": [{"a": 5}]}), d.clone()));
        assert!(m(json!({"$not": {"a": 4}}), d.clone()));
        assert!(!m(json!({"$not": {"a": 5}}), d.clone()));
        // Field-level combinators distribute over the field.
        assert!(m(
            json!({"a": {"$or": [{"$lt": 0}, {"$gt": 4}]}}),
            d.clone()
        ));
        assert!(m(json!({"a": {"$or": [1, 5]}}), d.clone()));
        assert!(m(json!({"a": {"$not": {"$gt": 6}}}), d.clone()));
        // Negation requires the field to exist, except through $exists.
        assert!(!m(json!({"$not": {"z": {"$gt": 1}}}), d.clone()));
        assert!(!m(json!({"z": {"$not": {"$regex": "q"}}}), d.clone()));
        assert!(m(json!({"$not": {"z": {"$exists": true}}}), d.clone()));
        assert!(!m(json!({"$not": {"a": {"$exists": true}}}), d.clone()));
        assert!(m(json!({"$not": {"$not": {"a": 5}}}), d.clone()));
        assert!(m(
            json!({"$nor": [{"$or": [{"a": 5}, {"b": "q"}]}], "b": "x"}),
            json!({"a": 6, "b": "x"})
        ));
    }

    #[test]
    fn errors_name_the_operator_and_path() {
        assert_eq!(
            err(json!({"a": {"b": {"$foo": 1}}})),
            r#"bad selector at "a.b": unknown operator $foo"#
        );
        assert_eq!(
            err(json!({"a": {"$in": "x"}})),
            r#"bad selector at "a": $in expects an array, got a string"#
        );
        assert_eq!(
            err(json!({"a": {"$nin": {}}})),
            r#"bad selector at "a": $nin expects an array, got an object"#
        );
        assert_eq!(
            err(json!({"year": {"$gt": {"$lt": 3}}})),
            r#"bad selector at "year": $gt expects a value, got an operator object (operators cannot nest here)"#
        );
        assert_eq!(
            err(json!({"n": {"$mod": [0, 1]}})),
            r#"bad selector at "n": $mod divisor must not be zero"#
        );
        assert!(
            err(json!({"n": {"$mod": [2.5, 1]}})).contains("$mod expects an array of two integers")
        );
        assert!(err(json!({"n": {"$mod": [2]}})).contains("$mod expects"));
        assert!(
            err(json!({"s": {"$regex": "a("}}))
                .starts_with(r#"bad selector at "s": $regex pattern does not compile"#)
        );
        // Look-around is not in the linear-time regex dialect.
        assert!(err(json!({"s": {"$regex": "(?=a)"}})).contains("$regex"));
        assert!(err(json!({"s": {"$regex": "a{1000}{1000}"}})).contains("$regex"));
        assert!(
            err(json!({"s": {"$regex": 5}})).contains("$regex expects a regular expression string")
        );
        assert!(err(json!({"t": {"$type": "int"}})).contains(r#"got "int""#));
        assert!(
            err(json!({"t": {"$size": -1}}))
                .contains("$size expects a non-negative integer, got -1")
        );
        assert!(err(json!({"t": {"$exists": 1}})).contains("$exists expects true or false"));
        assert!(
            err(json!({"$and": {}})).contains("$and expects an array of selectors, got an object")
        );
        assert!(err(json!({"$not": 3})).contains("$not expects an object"));
        assert!(err(json!({"t": {"$elemMatch": 3}})).contains("$elemMatch expects an object"));
        assert_eq!(
            err(json!({"t": {"$elemMatch": {"x": {"$bad": 1}}}})),
            r#"bad selector at "t.$elemMatch.x": unknown operator $bad"#
        );
        assert_eq!(
            err(json!({"$gt": 1})),
            r#"bad selector: $gt must be applied to a field, as in {"field": {"$gt": ...}}"#
        );
        assert!(err(json!({"$or": [1]})).contains("$eq must be applied to a field"));
        assert_eq!(
            err(json!({"t": {"$where": "1"}})),
            r#"bad selector at "t": $where is not supported"#
        );
        assert_eq!(
            err(json!([1])),
            "selector must be a json object, got an array"
        );
        assert!(err(json!({"a..b": 1})).contains("bad field path"));
    }

    #[test]
    fn hostile_selectors_error_instead_of_overflowing() {
        // Deep enough to overflow a naive recursive parser, shallow enough for
        // serde_json's own recursive drop.
        let mut deep = json!({"a": 1});
        for _ in 0..500 {
            deep = json!({ "$and": [deep] });
        }
        assert_eq!(
            Selector::parse(&deep).unwrap_err(),
            Error::SelectorTooDeep {
                limit: MAX_SELECTOR_DEPTH
            }
        );
        let mut deep_not = json!({"a": 1});
        for _ in 0..200 {
            deep_not = json!({ "$not": deep_not });
        }
        assert!(err(deep_not).contains("deeper"));
        let mut deep_value = json!(1);
        for _ in 0..200 {
            deep_value = json!([deep_value]);
        }
        assert!(err(json!({"a": {"$eq": deep_value}})).contains("deeper"));
        let big: Vec<u32> = (0..MAX_SELECTOR_VALUES as u32).collect();
        assert_eq!(
            err(json!({"a": {"$in": big}})),
            "selector has more than 10000 json values"
        );
        let long = "a".repeat(MAX_REGEX_BYTES + 1);
        assert!(err(json!({"s": {"$regex": long}})).contains("at most 4096 bytes"));
        // Matching a catastrophic-backtracking pattern is linear here.
        let s = sel(json!({"s": {"$regex": "^(a+)+$"}}));
        assert!(!s.matches(&json!({ "s": format!("{}!", "a".repeat(10_000)) })));
    }
}
