//! What can go wrong parsing or running a query.

/// Renders `at` for "bad selector at ...": the path in quotes, or nothing at
/// the top level.
fn located(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at {path:?}")
    }
}

/// An error from parsing or running a query. Messages are lowercase, name the
/// operator, key or path involved, and are meant to be shown to the user as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request, selector or sub-selector that must be a JSON object is not.
    #[error("{what} must be a json object, got {got}")]
    NotAnObject {
        /// What was expected to be an object ("selector", "find request").
        what: &'static str,
        /// The type actually found ("an array").
        got: &'static str,
    },

    /// An operator the selector language does not have.
    #[error("bad selector{}: unknown operator {op}", located(.at))]
    UnknownOperator {
        /// The operator as written.
        op: String,
        /// The field path it was applied to.
        at: String,
    },

    /// A CouchDB operator that Hearth deliberately does not implement.
    #[error("bad selector{}: {op} is not supported", located(.at))]
    UnsupportedOperator {
        /// The operator as written.
        op: String,
        /// The field path it was applied to.
        at: String,
    },

    /// An operator got an argument of the wrong shape.
    #[error("bad selector{}: {op} expects {expected}, got {got}", located(.at))]
    BadArgument {
        /// The operator.
        op: String,
        /// The field path it was applied to.
        at: String,
        /// What the operator accepts ("an array").
        expected: &'static str,
        /// What it got ("a string", "-1").
        got: String,
    },

    /// A field operator such as `$gt` used at the top level, without a field.
    #[error(
        "bad selector: {op} must be applied to a field, as in {{\"field\": {{\"{op}\": ...}}}}"
    )]
    OperatorWithoutField {
        /// The operator.
        op: String,
    },

    /// A `$regex` pattern that does not compile or exceeds the size limit.
    #[error("bad selector{}: $regex pattern does not compile: {reason}", located(.at))]
    BadRegex {
        /// The field path it was applied to.
        at: String,
        /// The regex crate's explanation.
        reason: regex::Error,
    },

    /// `$mod` with a zero divisor.
    #[error("bad selector{}: $mod divisor must not be zero", located(.at))]
    ModByZero {
        /// The field path it was applied to.
        at: String,
    },

    /// `$type` with a type name that does not exist.
    #[error(
        "bad selector{}: $type expects one of \"null\", \"boolean\", \"number\", \"string\", \"array\", \"object\", got {name:?}",
        located(.at)
    )]
    UnknownType {
        /// The field path it was applied to.
        at: String,
        /// The name given.
        name: String,
    },

    /// The selector nests deeper than the limit.
    #[error("selector nests deeper than {limit} levels")]
    SelectorTooDeep {
        /// The limit, [`super::MAX_SELECTOR_DEPTH`].
        limit: usize,
    },

    /// The selector holds more JSON values than the limit.
    #[error("selector has more than {limit} json values")]
    SelectorTooLarge {
        /// The limit, [`super::MAX_SELECTOR_VALUES`].
        limit: usize,
    },

    /// A field path that cannot be parsed.
    #[error("bad field path {path:?}: {reason}")]
    BadFieldPath {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A request key that is not part of the request format.
    #[error("unknown key {key:?} in {context}; expected one of: {expected}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The request kind ("find request").
        context: &'static str,
        /// The keys that are accepted.
        expected: &'static str,
    },

    /// A required request key is absent.
    #[error("{context} is missing the {key:?} key")]
    MissingKey {
        /// The key.
        key: &'static str,
        /// The request kind ("find request").
        context: &'static str,
    },

    /// A request key whose value has the wrong shape.
    #[error("bad {context}: {key:?} expects {expected}, got {got}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The request kind ("find request").
        context: &'static str,
        /// What is accepted.
        expected: &'static str,
        /// What was found.
        got: String,
    },

    /// A `scope` other than `"local"`: queries over other devices or contacts
    /// (federated queries) do not exist yet.
    #[error(
        "bad {context}: scope {scope:?} is not supported yet; federated scopes (\"devices\", \"contacts\") do not exist yet, so leave the \"scope\" key out (or set it to \"local\") to query this replica"
    )]
    UnsupportedScope {
        /// The request kind ("aggregate request").
        context: &'static str,
        /// The scope as written.
        scope: String,
    },

    /// A list in a request has more entries than allowed.
    #[error("bad {context}: {key:?} has more than {limit} entries")]
    TooManyEntries {
        /// The key.
        key: &'static str,
        /// The request kind ("find request").
        context: &'static str,
        /// The limit.
        limit: usize,
    },

    /// `use_index` names an index that does not exist, and fallback is off.
    #[error("no index named {name:?}; define it first, or drop \"use_index\"")]
    UnknownIndex {
        /// The name given in `use_index`.
        name: String,
    },

    /// `use_index` names an index that cannot answer this selector, and
    /// fallback is off.
    #[error(
        "index {name:?} cannot serve this selector: the selector must constrain its first field {field:?} (an index leaves out records that lack it)"
    )]
    IndexNotUsable {
        /// The index.
        name: String,
        /// Its first field.
        field: String,
    },

    /// An index definition that is not valid.
    #[error("bad index {name:?}: {reason}")]
    BadIndex {
        /// The index name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A bookmark that this engine did not produce.
    #[error("bad bookmark {bookmark:?}: pass the bookmark of a previous answer unchanged")]
    BadBookmark {
        /// The bookmark given.
        bookmark: String,
    },

    /// An aggregate whose definition has the wrong shape.
    #[error("bad aggregate {name:?}: {op} expects {expected}, got {got}")]
    BadAggregate {
        /// The aggregate's output name.
        name: String,
        /// The operator (`$avg`).
        op: String,
        /// What the operator accepts.
        expected: &'static str,
        /// What it got.
        got: String,
    },

    /// An aggregate operator that does not exist.
    #[error(
        "bad aggregate {name:?}: unknown operator {op}; expected one of $count, $sum, $avg, $min, $max, $variance, $stddev, $histogram"
    )]
    UnknownAggregate {
        /// The aggregate's output name.
        name: String,
        /// The operator as written.
        op: String,
    },

    /// Grouping produced more groups than allowed.
    #[error("aggregate produced more than {limit} groups; group by fewer or coarser fields")]
    TooManyGroups {
        /// The limit, [`super::MAX_GROUPS`].
        limit: usize,
    },

    /// A value too large for an exact sum reached `$sum`, `$avg`,
    /// `$variance` or `$stddev`.
    #[error(
        "aggregate {name:?} has no exact answer: a value is beyond ±1e20, the range of exact sums; narrow the selector or aggregate another field"
    )]
    OutOfRange {
        /// The aggregate's output name.
        name: String,
    },

    /// Partial aggregates that do not come from the same request.
    #[error("cannot merge partial aggregates: {reason}")]
    MergeMismatch {
        /// Which part differs.
        reason: &'static str,
    },
}
