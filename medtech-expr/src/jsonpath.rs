//! JSONPath in the dialect of Newtonsoft.Json's `SelectToken`/`SelectTokens`, which is what
//! MedTech and iomt-fhir use (not RFC 9535).
//!
//! Supported, with Newtonsoft's semantics: `$`, `.name`, `['name']`, `['a','b']`, `[n]`,
//! `[n,m]`, `[start:end:step]`, `[*]`, `.*`, `..name`, `..*`, `..['a','b']`, and filters
//! `[?(...)]` / `..[?(...)]` with `==`, `===`, `!=`, `!==`, `<>`, `<`, `<=`, `>`, `>=`, `=~`
//! (regular expressions `/pattern/flags` with flags `i`, `m`, `s`, `x`), existence tests
//! (`[?(@.name)]`, and `@name` as shorthand for `@.name`), `&&` and `||` (combined the way
//! Newtonsoft combines them: each new operator nests the rest of the expression).
//!
//! Differences that come from the data model (Rust `serde_json::Value` has no property tokens
//! and no date tokens) are listed in `docs/medtech-compatibility.md`.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

use crate::json::{JsonNode, Scalar, View};
use crate::netvalue;

/// A compiled JSONPath expression.
///
/// ```
/// use carebridge_medtech_expr::JsonPath;
/// let path = JsonPath::parse("$..[?(@heartRate)]")?;
/// let body = serde_json::json!({"Body": {"heartRate": "78"}});
/// assert_eq!(path.select_tokens(&body)?.len(), 1);
/// # Ok::<(), carebridge_medtech_expr::JsonPathError>(())
/// ```
#[derive(Clone)]
pub struct JsonPath {
    text: String,
    filters: Vec<Filter>,
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonPath").field(&self.text).finish()
    }
}

/// Why a JSONPath expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct JsonPathError {
    /// What is wrong (Newtonsoft's wording where it has one).
    pub reason: String,
}

fn err<T>(reason: impl Into<String>) -> Result<T, JsonPathError> {
    Err(JsonPathError {
        reason: reason.into(),
    })
}

#[derive(Clone, Debug)]
enum Filter {
    Root,
    Field(Option<String>),
    FieldMultiple(Vec<String>),
    Scan(Option<String>),
    ScanMultiple(Vec<String>),
    /// `[n]`; `None` is `[*]`.
    Index(Option<i64>),
    IndexMultiple(Vec<i64>),
    Slice {
        start: Option<i64>,
        end: Option<i64>,
        step: Option<i64>,
    },
    Query(Box<QueryExpr>),
    QueryScan(Box<QueryExpr>),
}

#[derive(Clone, Debug, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    Exists,
    LessThan,
    LessThanOrEquals,
    GreaterThan,
    GreaterThanOrEquals,
    RegexEquals,
    StrictEquals,
    StrictNotEquals,
}

#[derive(Clone, Debug)]
enum QueryExpr {
    And(Vec<QueryExpr>),
    Or(Vec<QueryExpr>),
    Boolean {
        op: Op,
        left: Side,
        right: Option<Side>,
    },
}

#[derive(Clone, Debug)]
enum Side {
    Path(Vec<Filter>),
    Value(Value),
}

// ---------------------------------------------------------------------------------------------
// Parser (a port of the state machine of Newtonsoft's JPath, written for carebridge)
// ---------------------------------------------------------------------------------------------

struct Parser {
    chars: Vec<char>,
    i: usize,
}

/// Arena node used while building `&&`/`||` trees the way Newtonsoft does.
enum Node {
    Composite { and: bool, children: Vec<usize> },
    Leaf(QueryExpr),
}

impl Parser {
    fn at(&self, i: usize) -> Result<char, JsonPathError> {
        match self.chars.get(i) {
            Some(c) => Ok(*c),
            None => err("Path ended unexpectedly."),
        }
    }

    fn cur(&self) -> Result<char, JsonPathError> {
        self.at(self.i)
    }

    fn len(&self) -> usize {
        self.chars.len()
    }

    fn substring(&self, start: usize, end: usize) -> String {
        self.chars
            .get(start..end)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }

    fn parse_main(&mut self) -> Result<Vec<Filter>, JsonPathError> {
        let mut filters = Vec::new();
        let mut part_start = self.i;
        self.eat_whitespace();
        if self.len() == self.i {
            return Ok(filters);
        }
        if self.cur()? == '$' {
            if self.len() == 1 {
                return Ok(filters);
            }
            let c = self.at(self.i + 1)?;
            if c == '.' || c == '[' {
                self.i += 1;
                part_start = self.i;
            }
        }
        if !self.parse_path(&mut filters, part_start, false)? {
            let last = self.i;
            self.eat_whitespace();
            if self.i < self.len() {
                return err(format!(
                    "Unexpected character while parsing path: {}",
                    self.at(last)?
                ));
            }
        }
        Ok(filters)
    }

    fn member_filter(member: String, scan: bool) -> Filter {
        let member = if member == "*" { None } else { Some(member) };
        if scan {
            Filter::Scan(member)
        } else {
            Filter::Field(member)
        }
    }

    fn parse_path(
        &mut self,
        filters: &mut Vec<Filter>,
        mut part_start: usize,
        query: bool,
    ) -> Result<bool, JsonPathError> {
        let mut scan = false;
        let mut following_indexer = false;
        let mut following_dot = false;
        let mut ended = false;
        while self.i < self.len() && !ended {
            let c = self.cur()?;
            match c {
                '[' | '(' => {
                    if self.i > part_start {
                        filters.push(Self::member_filter(
                            self.substring(part_start, self.i),
                            scan,
                        ));
                        scan = false;
                    }
                    filters.push(self.parse_indexer(c, scan)?);
                    scan = false;
                    self.i += 1;
                    part_start = self.i;
                    following_indexer = true;
                    following_dot = false;
                }
                ']' | ')' | ' ' => ended = true,
                '.' => {
                    if self.i > part_start {
                        filters.push(Self::member_filter(
                            self.substring(part_start, self.i),
                            scan,
                        ));
                        scan = false;
                    }
                    if self.chars.get(self.i + 1) == Some(&'.') {
                        scan = true;
                        self.i += 1;
                    }
                    self.i += 1;
                    part_start = self.i;
                    following_indexer = false;
                    following_dot = true;
                }
                _ => {
                    if query && matches!(c, '=' | '<' | '!' | '>' | '|' | '&') {
                        ended = true;
                    } else {
                        if following_indexer {
                            return err(format!("Unexpected character following indexer: {c}"));
                        }
                        self.i += 1;
                    }
                }
            }
        }
        let at_end = self.i == self.len();
        if self.i > part_start {
            let member = self.substring(part_start, self.i).trim_end().to_owned();
            filters.push(Self::member_filter(member, scan));
        } else if following_dot && (at_end || query) {
            return err("Unexpected end while parsing path.");
        }
        Ok(at_end)
    }

    fn ensure_length(&self, message: &str) -> Result<(), JsonPathError> {
        if self.i >= self.len() {
            return err(message);
        }
        Ok(())
    }

    fn eat_whitespace(&mut self) {
        while self.chars.get(self.i) == Some(&' ') {
            self.i += 1;
        }
    }

    fn parse_indexer(&mut self, open: char, scan: bool) -> Result<Filter, JsonPathError> {
        self.i += 1;
        let close = if open == '[' { ']' } else { ')' };
        self.ensure_length("Path ended with open indexer.")?;
        self.eat_whitespace();
        self.ensure_length("Path ended with open indexer.")?;
        match self.cur()? {
            '\'' => self.parse_quoted_field(close, scan),
            '?' => self.parse_query(close, scan),
            _ => self.parse_array_indexer(close),
        }
    }

    fn to_int(text: &str) -> Result<i64, JsonPathError> {
        // Newtonsoft uses Convert.ToInt32.
        match text.trim().parse::<i32>() {
            Ok(v) => Ok(i64::from(v)),
            Err(_) => err(format!("Invalid array index: {text}")),
        }
    }

    fn parse_array_indexer(&mut self, close: char) -> Result<Filter, JsonPathError> {
        let mut start = self.i;
        let mut end: Option<usize> = None;
        let mut indexes: Option<Vec<i64>> = None;
        let mut colons = 0;
        let (mut s_start, mut s_end, mut s_step) = (None, None, None);
        while self.i < self.len() {
            let c = self.cur()?;
            if c == ' ' {
                end = Some(self.i);
                self.eat_whitespace();
                continue;
            }
            if c == close {
                let stop = end.unwrap_or(self.i);
                let text = self.substring(start, stop);
                if let Some(mut idx) = indexes {
                    if text.is_empty() {
                        return err("Array index expected.");
                    }
                    idx.push(Self::to_int(&text)?);
                    return Ok(Filter::IndexMultiple(idx));
                } else if colons > 0 {
                    if !text.is_empty() {
                        let v = Self::to_int(&text)?;
                        if colons == 1 {
                            s_end = Some(v);
                        } else {
                            s_step = Some(v);
                        }
                    }
                    return Ok(Filter::Slice {
                        start: s_start,
                        end: s_end,
                        step: s_step,
                    });
                } else {
                    if text.is_empty() {
                        return err("Array index expected.");
                    }
                    return Ok(Filter::Index(Some(Self::to_int(&text)?)));
                }
            } else if c == ',' {
                let stop = end.unwrap_or(self.i);
                let text = self.substring(start, stop);
                if text.is_empty() {
                    return err("Array index expected.");
                }
                indexes
                    .get_or_insert_with(Vec::new)
                    .push(Self::to_int(&text)?);
                self.i += 1;
                self.eat_whitespace();
                start = self.i;
                end = None;
            } else if c == '*' {
                self.i += 1;
                self.ensure_length("Path ended with open indexer.")?;
                self.eat_whitespace();
                self.ensure_length("Path ended with open indexer.")?;
                if self.cur()? != close {
                    return err(format!(
                        "Unexpected character while parsing path indexer: {c}"
                    ));
                }
                return Ok(Filter::Index(None));
            } else if c == ':' {
                let stop = end.unwrap_or(self.i);
                let text = self.substring(start, stop);
                if !text.is_empty() {
                    let v = Self::to_int(&text)?;
                    match colons {
                        0 => s_start = Some(v),
                        1 => s_end = Some(v),
                        _ => s_step = Some(v),
                    }
                }
                colons += 1;
                self.i += 1;
                self.eat_whitespace();
                start = self.i;
                end = None;
            } else if !c.is_ascii_digit() && c != '-' {
                return err(format!(
                    "Unexpected character while parsing path indexer: {c}"
                ));
            } else {
                if end.is_some() {
                    return err(format!(
                        "Unexpected character while parsing path indexer: {c}"
                    ));
                }
                self.i += 1;
            }
        }
        err("Path ended with open indexer.")
    }

    fn parse_query(&mut self, close: char, scan: bool) -> Result<Filter, JsonPathError> {
        self.i += 1;
        self.ensure_length("Path ended with open indexer.")?;
        if self.cur()? != '(' {
            return err(format!(
                "Unexpected character while parsing path indexer: {}",
                self.cur()?
            ));
        }
        self.i += 1;
        let expr = self.parse_expression()?;
        self.i += 1;
        self.ensure_length("Path ended with open indexer.")?;
        self.eat_whitespace();
        self.ensure_length("Path ended with open indexer.")?;
        if self.cur()? != close {
            return err(format!(
                "Unexpected character while parsing path indexer: {}",
                self.cur()?
            ));
        }
        Ok(if scan {
            Filter::QueryScan(Box::new(expr))
        } else {
            Filter::Query(Box::new(expr))
        })
    }

    fn try_parse_expression(&mut self) -> Result<Option<Vec<Filter>>, JsonPathError> {
        let mut path = match self.cur()? {
            '$' => vec![Filter::Root],
            '@' => Vec::new(),
            _ => return Ok(None),
        };
        self.i += 1;
        if self.parse_path(&mut path, self.i, true)? {
            return err("Path ended with open query.");
        }
        Ok(Some(path))
    }

    fn parse_side(&mut self) -> Result<Side, JsonPathError> {
        self.eat_whitespace();
        self.ensure_length("Path ended with open query.")?;
        if let Some(path) = self.try_parse_expression()? {
            self.eat_whitespace();
            self.ensure_length("Path ended with open query.")?;
            return Ok(Side::Path(path));
        }
        if let Some(value) = self.try_parse_value()? {
            self.eat_whitespace();
            self.ensure_length("Path ended with open query.")?;
            return Ok(Side::Value(value));
        }
        err(format!(
            "Unexpected character while parsing path query: {}",
            self.cur()?
        ))
    }

    fn parse_expression(&mut self) -> Result<QueryExpr, JsonPathError> {
        let mut arena: Vec<Node> = Vec::new();
        let mut root: Option<usize> = None;
        let mut parent: Option<usize> = None;
        while self.i < self.len() {
            let left = self.parse_side()?;
            let c = self.cur()?;
            let (op, right) = if matches!(c, ')' | '|' | '&') {
                (Op::Exists, None)
            } else {
                let op = self.parse_operator()?;
                (op, Some(self.parse_side()?))
            };
            arena.push(Node::Leaf(QueryExpr::Boolean { op, left, right }));
            let leaf = arena.len() - 1;
            let c = self.cur()?;
            if c == ')' {
                return match parent {
                    Some(p) => {
                        push_child(&mut arena, p, leaf);
                        build(&mut arena, root.unwrap_or(p))
                    }
                    None => build(&mut arena, leaf),
                };
            }
            if c == '&' {
                if !self.matches("&&") {
                    return err(format!(
                        "Unexpected character while parsing path query: {}",
                        self.cur()?
                    ));
                }
                parent = Some(self.open_composite(&mut arena, parent, &mut root, true));
                if let Some(p) = parent {
                    push_child(&mut arena, p, leaf);
                }
            }
            if self.chars.get(self.i) == Some(&'|') {
                if !self.matches("||") {
                    return err(format!(
                        "Unexpected character while parsing path query: {}",
                        self.cur()?
                    ));
                }
                parent = Some(self.open_composite(&mut arena, parent, &mut root, false));
                if let Some(p) = parent {
                    push_child(&mut arena, p, leaf);
                }
            }
        }
        err("Path ended with open query.")
    }

    fn open_composite(
        &self,
        arena: &mut Vec<Node>,
        parent: Option<usize>,
        root: &mut Option<usize>,
        and: bool,
    ) -> usize {
        if let Some(p) = parent {
            if let Some(Node::Composite { and: pa, .. }) = arena.get(p) {
                if *pa == and {
                    return p;
                }
            }
        }
        arena.push(Node::Composite {
            and,
            children: Vec::new(),
        });
        let id = arena.len() - 1;
        if let Some(p) = parent {
            push_child(arena, p, id);
        }
        if root.is_none() {
            *root = Some(id);
        }
        id
    }

    fn matches(&mut self, s: &str) -> bool {
        let mut pos = self.i;
        for ch in s.chars() {
            if self.chars.get(pos) == Some(&ch) {
                pos += 1;
            } else {
                return false;
            }
        }
        self.i = pos;
        true
    }

    fn parse_operator(&mut self) -> Result<Op, JsonPathError> {
        if self.i + 1 >= self.len() {
            return err("Path ended with open query.");
        }
        let table: [(&str, Op); 11] = [
            ("===", Op::StrictEquals),
            ("==", Op::Equals),
            ("=~", Op::RegexEquals),
            ("!==", Op::StrictNotEquals),
            ("!=", Op::NotEquals),
            ("<>", Op::NotEquals),
            ("<=", Op::LessThanOrEquals),
            ("<", Op::LessThan),
            (">=", Op::GreaterThanOrEquals),
            (">", Op::GreaterThan),
            ("", Op::Exists),
        ];
        for (text, op) in table {
            if !text.is_empty() && self.matches(text) {
                return Ok(op);
            }
        }
        err("Could not read query operator.")
    }

    fn try_parse_value(&mut self) -> Result<Option<Value>, JsonPathError> {
        let c = self.cur()?;
        if c == '\'' {
            return Ok(Some(Value::String(self.read_quoted_string()?)));
        }
        if c.is_ascii_digit() || c == '-' {
            let mut text = String::new();
            text.push(c);
            self.i += 1;
            while self.i < self.len() {
                let c = self.cur()?;
                if c == ' ' || c == ')' {
                    if text.contains(['.', 'E', 'e']) {
                        return Ok(text
                            .parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                            .map(Value::Number));
                    }
                    return Ok(text.parse::<i64>().ok().map(|v| Value::Number(v.into())));
                }
                text.push(c);
                self.i += 1;
            }
            return Ok(None);
        }
        if c == 't' && self.matches("true") {
            return Ok(Some(Value::Bool(true)));
        }
        if c == 'f' && self.matches("false") {
            return Ok(Some(Value::Bool(false)));
        }
        if c == 'n' && self.matches("null") {
            return Ok(Some(Value::Null));
        }
        if c == '/' {
            return Ok(Some(Value::String(self.read_regex_string()?)));
        }
        Ok(None)
    }

    fn read_quoted_string(&mut self) -> Result<String, JsonPathError> {
        let mut out = String::new();
        self.i += 1;
        while self.i < self.len() {
            let c = self.cur()?;
            if c == '\\' && self.i + 1 < self.len() {
                self.i += 1;
                let e = self.cur()?;
                out.push(match e {
                    'b' => '\u{8}',
                    't' => '\t',
                    'n' => '\n',
                    'f' => '\u{c}',
                    'r' => '\r',
                    '\\' | '"' | '\'' | '/' => e,
                    _ => return err(format!("Unknown escape character: \\{e}")),
                });
                self.i += 1;
            } else if c == '\'' {
                self.i += 1;
                return Ok(out);
            } else {
                self.i += 1;
                out.push(c);
            }
        }
        err("Path ended with an open string.")
    }

    fn read_regex_string(&mut self) -> Result<String, JsonPathError> {
        let start = self.i;
        self.i += 1;
        while self.i < self.len() {
            let c = self.cur()?;
            if c == '\\' && self.i + 1 < self.len() {
                self.i += 2;
            } else if c == '/' {
                self.i += 1;
                while self.i < self.len() && self.cur()?.is_alphabetic() {
                    self.i += 1;
                }
                return Ok(self.substring(start, self.i));
            } else {
                self.i += 1;
            }
        }
        err("Path ended with an open regex.")
    }

    fn parse_quoted_field(&mut self, close: char, scan: bool) -> Result<Filter, JsonPathError> {
        let mut fields: Option<Vec<String>> = None;
        while self.i < self.len() {
            let field = self.read_quoted_string()?;
            self.eat_whitespace();
            self.ensure_length("Path ended with open indexer.")?;
            let c = self.cur()?;
            if c == close {
                return Ok(match fields {
                    Some(mut f) => {
                        f.push(field);
                        if scan {
                            Filter::ScanMultiple(f)
                        } else {
                            Filter::FieldMultiple(f)
                        }
                    }
                    // A quoted '*' is a property literally named "*".
                    None if scan => Filter::Scan(Some(field)),
                    None => Filter::Field(Some(field)),
                });
            } else if c == ',' {
                self.i += 1;
                self.eat_whitespace();
                fields.get_or_insert_with(Vec::new).push(field);
            } else {
                return err(format!(
                    "Unexpected character while parsing path indexer: {c}"
                ));
            }
        }
        err("Path ended with open indexer.")
    }
}

fn push_child(arena: &mut [Node], parent: usize, child: usize) {
    if let Some(Node::Composite { children, .. }) = arena.get_mut(parent) {
        children.push(child);
    }
}

fn build(arena: &mut Vec<Node>, id: usize) -> Result<QueryExpr, JsonPathError> {
    let node = match arena.get_mut(id) {
        Some(n) => std::mem::replace(
            n,
            Node::Composite {
                and: true,
                children: Vec::new(),
            },
        ),
        None => return err("internal: query node missing"),
    };
    match node {
        Node::Leaf(q) => Ok(q),
        Node::Composite { and, children } => {
            let mut built = Vec::with_capacity(children.len());
            for c in children {
                built.push(build(arena, c)?);
            }
            Ok(if and {
                QueryExpr::And(built)
            } else {
                QueryExpr::Or(built)
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

impl JsonPath {
    /// Parses `text` with Newtonsoft's grammar.
    ///
    /// # Errors
    /// [`JsonPathError`] with Newtonsoft's message when the text is not a valid path.
    pub fn parse(text: &str) -> Result<Self, JsonPathError> {
        let mut p = Parser {
            chars: text.chars().collect(),
            i: 0,
        };
        let filters = p.parse_main()?;
        Ok(Self {
            text: text.to_owned(),
            filters,
        })
    }

    /// The expression text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `SelectToken` over `root` as if `root` were an object with the extra property
    /// `name: value` appended (MedTech's `matchedToken`), without building that object.
    /// `None` when the path needs the whole root (the caller then materializes it).
    pub fn select_token_with_extra<'a, N: JsonNode>(
        &self,
        root: &'a N,
        name: &str,
        value: &'a N,
    ) -> Option<Result<Option<&'a N>, JsonPathError>> {
        let (first, rest) = self.filters.split_first()?;
        let Filter::Field(Some(first)) = first else {
            return None;
        };
        if rest.iter().any(uses_root) {
            return None;
        }
        let start = if first == name {
            value
        } else {
            match root.get(first.as_str()) {
                Some(v) => v,
                None => return Some(Ok(None)),
            }
        };
        if let Some(found) = walk_simple(rest, start) {
            return Some(Ok(found));
        }
        Some(evaluate(rest, root, vec![start]).and_then(|mut all| {
            if all.len() > 1 {
                err("Path returned multiple tokens.")
            } else {
                Ok(all.pop())
            }
        }))
    }

    /// Every token the path selects, in Newtonsoft's order (`SelectTokens`), over a
    /// `serde_json::Value` or a [`Doc`](crate::Doc).
    ///
    /// # Errors
    /// [`JsonPathError`] when evaluation fails the way Newtonsoft fails (negative index, zero
    /// slice step, a comparison between values that cannot be converted, an invalid regex).
    pub fn select_tokens<'a, N: JsonNode>(&self, root: &'a N) -> Result<Vec<&'a N>, JsonPathError> {
        evaluate(&self.filters, root, vec![root])
    }

    /// The single token the path selects, or `None` (`SelectToken`).
    ///
    /// # Errors
    /// As [`JsonPath::select_tokens`], and `Path returned multiple tokens.` when more than one
    /// token matches.
    pub fn select_token<'a, N: JsonNode>(
        &self,
        root: &'a N,
    ) -> Result<Option<&'a N>, JsonPathError> {
        if let Some(found) = walk_simple(&self.filters, root) {
            return Ok(found);
        }
        let mut all = self.select_tokens(root)?;
        if all.len() > 1 {
            return err("Path returned multiple tokens.");
        }
        Ok(all.pop())
    }
}

/// Walks a path made only of `.name` and non-negative `[n]` steps without allocating; `None`
/// when the path has other steps (the caller falls back to [`evaluate`]).
fn walk_simple<'a, N: JsonNode>(filters: &[Filter], start: &'a N) -> Option<Option<&'a N>> {
    let mut cur = start;
    for f in filters {
        let next = match f {
            Filter::Field(Some(name)) => cur.get(name),
            Filter::Index(Some(i)) if *i >= 0 => cur
                .as_array()
                .and_then(|a| usize::try_from(*i).ok().and_then(|i| a.get(i))),
            _ => return None,
        };
        match next {
            Some(v) => cur = v,
            None => {
                // The rest must still be simple for the answer "nothing" to be exact.
                return filters
                    .iter()
                    .all(|f| {
                        matches!(f, Filter::Field(Some(_)))
                            || matches!(f, Filter::Index(Some(i)) if *i >= 0)
                    })
                    .then_some(None);
            }
        }
    }
    Some(Some(cur))
}

fn evaluate<'a, N: JsonNode>(
    filters: &[Filter],
    root: &'a N,
    start: Vec<&'a N>,
) -> Result<Vec<&'a N>, JsonPathError> {
    let mut current = start;
    for f in filters {
        current = apply(f, root, &current)?;
    }
    Ok(current)
}

/// Whether a filter refers to the document root (`$` inside a query).
fn uses_root(f: &Filter) -> bool {
    match f {
        Filter::Root => true,
        Filter::Query(q) | Filter::QueryScan(q) => query_uses_root(q),
        _ => false,
    }
}

fn query_uses_root(q: &QueryExpr) -> bool {
    match q {
        QueryExpr::And(v) | QueryExpr::Or(v) => v.iter().any(query_uses_root),
        QueryExpr::Boolean { left, right, .. } => {
            let side = |s: &Side| match s {
                Side::Path(p) => p.iter().any(uses_root),
                Side::Value(_) => false,
            };
            side(left) || right.as_ref().is_some_and(side)
        }
    }
}

fn token_index<N: JsonNode>(t: &N, index: i64) -> Result<Option<&N>, JsonPathError> {
    match t.as_array() {
        Some(a) => {
            if index < 0 {
                return err(format!("Index {index} was out of range."));
            }
            Ok(usize::try_from(index).ok().and_then(|i| a.get(i)))
        }
        None => Ok(None),
    }
}

fn scan<'a, N: JsonNode>(
    v: &'a N,
    name: Option<&str>,
    names: Option<&[String]>,
    out: &mut Vec<&'a N>,
) {
    if let Some(entries) = v.entries() {
        for (k, child) in entries {
            match (name, names) {
                (_, Some(ns)) => {
                    for n in ns {
                        if n == k {
                            out.push(child);
                        }
                    }
                }
                (Some(n), None) => {
                    if n == k {
                        out.push(child);
                    }
                }
                (None, None) => out.push(child),
            }
            scan(child, name, names, out);
        }
    } else if let Some(a) = v.as_array() {
        for child in a {
            if name.is_none() && names.is_none() {
                out.push(child);
            }
            scan(child, name, names, out);
        }
    }
}

/// Whether `q` is false, without error, on every scalar (string, number, boolean, null): its
/// path starts below the token (`@.name`, `@[0]`) and cannot fail on an empty set, so the
/// `..` scan need not test the leaves of the document. `And` stops at its first false item.
fn false_on_scalar(q: &QueryExpr) -> bool {
    match q {
        QueryExpr::And(items) => items.first().is_some_and(false_on_scalar),
        QueryExpr::Or(items) => !items.is_empty() && items.iter().all(false_on_scalar),
        QueryExpr::Boolean {
            left: Side::Path(path),
            ..
        } => {
            matches!(
                path.first(),
                Some(
                    Filter::Field(_)
                        | Filter::FieldMultiple(_)
                        | Filter::Index(_)
                        | Filter::IndexMultiple(_)
                )
            ) && !path.iter().any(|f| {
                matches!(f, Filter::Root | Filter::Slice { step: Some(0), .. })
                    || matches!(f, Filter::Query(q) | Filter::QueryScan(q) if query_uses_root(q))
            })
        }
        QueryExpr::Boolean {
            left: Side::Value(_),
            ..
        } => false,
    }
}

fn is_container<N: JsonNode>(v: &N) -> bool {
    matches!(v.view(), View::Object | View::Array(_))
}

/// `DescendantsAndSelf` in document order, keeping the nodes that match `q` (scalars skipped
/// when `skip_scalars`, see [`false_on_scalar`]).
fn query_scan<'a, N: JsonNode>(
    q: &QueryExpr,
    skip_scalars: bool,
    root: &'a N,
    v: &'a N,
    out: &mut Vec<&'a N>,
) -> Result<(), JsonPathError> {
    let children = |c: &'a N, out: &mut Vec<&'a N>| {
        if !skip_scalars || is_container(c) {
            query_scan(q, skip_scalars, root, c, out)
        } else {
            Ok(())
        }
    };
    if let Some(entries) = v.entries() {
        if is_match(q, root, v)? {
            out.push(v);
        }
        for (_, c) in entries {
            children(c, out)?;
        }
    } else if let Some(a) = v.as_array() {
        if is_match(q, root, v)? {
            out.push(v);
        }
        for c in a {
            children(c, out)?;
        }
    } else if !skip_scalars && is_match(q, root, v)? {
        out.push(v);
    }
    Ok(())
}

fn apply<'a, N: JsonNode>(
    f: &Filter,
    root: &'a N,
    current: &[&'a N],
) -> Result<Vec<&'a N>, JsonPathError> {
    let mut out = Vec::new();
    match f {
        Filter::Root => out.push(root),
        Filter::Field(name) => {
            for t in current {
                match name {
                    Some(n) => out.extend(t.get(n)),
                    None => {
                        if let Some(entries) = t.entries() {
                            out.extend(entries.map(|(_, v)| v));
                        }
                    }
                }
            }
        }
        Filter::FieldMultiple(names) => {
            for t in current {
                for n in names {
                    out.extend(t.get(n));
                }
            }
        }
        Filter::Scan(name) => {
            for c in current {
                if name.is_none() {
                    out.push(*c);
                }
                scan(*c, name.as_deref(), None, &mut out);
            }
        }
        Filter::ScanMultiple(names) => {
            for c in current {
                scan(*c, None, Some(names), &mut out);
            }
        }
        Filter::Index(Some(i)) => {
            for t in current {
                out.extend(token_index(*t, *i)?);
            }
        }
        Filter::Index(None) => {
            for t in current {
                if let Some(a) = t.as_array() {
                    out.extend(a.iter());
                }
            }
        }
        Filter::IndexMultiple(indexes) => {
            for t in current {
                for i in indexes {
                    out.extend(token_index(*t, *i)?);
                }
            }
        }
        Filter::Slice { start, end, step } => {
            if *step == Some(0) {
                return err("Step cannot be zero.");
            }
            for t in current {
                if let Some(a) = t.as_array() {
                    slice(a, *start, *end, *step, &mut out);
                }
            }
        }
        Filter::Query(q) => {
            for t in current {
                // Newtonsoft iterates the children of the token; the children of an object are
                // property tokens, which path expressions never match.
                if let Some(a) = t.as_array() {
                    for v in a {
                        if is_match(q, root, v)? {
                            out.push(v);
                        }
                    }
                }
            }
        }
        Filter::QueryScan(q) => {
            let skip_scalars = false_on_scalar(q);
            for t in current {
                query_scan(q, skip_scalars, root, *t, &mut out)?;
            }
        }
    }
    Ok(out)
}

fn slice<'a, N>(
    a: &'a [N],
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    out: &mut Vec<&'a N>,
) {
    let count = i64::try_from(a.len()).unwrap_or(i64::MAX);
    let step = step.unwrap_or(1);
    let positive = step > 0;
    let mut s = start.unwrap_or(if positive { 0 } else { count - 1 });
    let mut e = end.unwrap_or(if positive { count } else { -1 });
    if start.is_some_and(|v| v < 0) {
        s += count;
    }
    if end.is_some_and(|v| v < 0) {
        e += count;
    }
    s = s.max(if positive { 0 } else { i64::MIN });
    s = s.min(if positive { count } else { count - 1 });
    e = e.max(-1).min(count);
    let valid = |i: i64| if positive { i < e } else { i > e };
    let mut i = s;
    while valid(i) {
        if let Some(v) = usize::try_from(i).ok().and_then(|u| a.get(u)) {
            out.push(v);
        }
        i = match i.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
}

/// The scalars one side of a comparison yields (a literal, or the tokens of a path; objects
/// and arrays as [`Scalar::Container`]).
fn side_results<'a, N: JsonNode>(
    side: &'a Side,
    root: &'a N,
    t: &'a N,
) -> Result<Vec<Scalar<'a>>, JsonPathError> {
    match side {
        Side::Value(v) => Ok(vec![Scalar::from(v.view())]),
        Side::Path(filters) => Ok(evaluate(filters, root, vec![t])?
            .into_iter()
            .map(|n| Scalar::from(n.view()))
            .collect()),
    }
}

fn is_match<N: JsonNode>(q: &QueryExpr, root: &N, t: &N) -> Result<bool, JsonPathError> {
    match q {
        QueryExpr::And(items) => {
            for e in items {
                if !is_match(e, root, t)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        QueryExpr::Or(items) => {
            for e in items {
                if is_match(e, root, t)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        QueryExpr::Boolean { op, left, right } => {
            if *op == Op::Exists {
                if let Side::Path(filters) = left {
                    if let Some(found) = walk_simple(filters, t) {
                        return Ok(found.is_some());
                    }
                }
            }
            let left = side_results(left, root, t)?;
            if *op == Op::Exists {
                return Ok(!left.is_empty());
            }
            if left.is_empty() {
                return Ok(false);
            }
            let right = match right {
                Some(r) => side_results(r, root, t)?,
                None => Vec::new(),
            };
            for l in &left {
                for r in &right {
                    if match_tokens(*op, *l, *r)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
    }
}

fn match_tokens(op: Op, l: Scalar<'_>, r: Scalar<'_>) -> Result<bool, JsonPathError> {
    if matches!(l, Scalar::Container(_)) || matches!(r, Scalar::Container(_)) {
        return Ok(matches!(op, Op::Exists | Op::NotEquals));
    }
    Ok(match op {
        Op::RegexEquals => regex_equals(l, r)?,
        Op::Equals => equals_with_coercion(l, r),
        Op::StrictEquals => strict_equals(l, r),
        Op::NotEquals => !equals_with_coercion(l, r),
        Op::StrictNotEquals => !strict_equals(l, r),
        Op::GreaterThan => compare(l, r)? == Ordering::Greater,
        Op::GreaterThanOrEquals => compare(l, r)? != Ordering::Less,
        Op::LessThan => compare(l, r)? == Ordering::Less,
        Op::LessThanOrEquals => compare(l, r)? != Ordering::Greater,
        Op::Exists => true,
    })
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Null,
    Bool,
    Integer,
    Float,
    String,
}

fn kind(v: Scalar<'_>) -> Kind {
    match v {
        Scalar::Null | Scalar::Container(_) => Kind::Null,
        Scalar::Bool(_) => Kind::Bool,
        Scalar::Number(n) if n.is_f64() => Kind::Float,
        Scalar::Number(_) => Kind::Integer,
        Scalar::String(_) => Kind::String,
    }
}

fn regex_equals(input: Scalar<'_>, pattern: Scalar<'_>) -> Result<bool, JsonPathError> {
    let (Scalar::String(input), Scalar::String(pattern)) = (input, pattern) else {
        return Ok(false);
    };
    let Some(last) = pattern.rfind('/') else {
        return err("Invalid regex: missing '/' delimiters.");
    };
    let body = pattern.get(1..last).unwrap_or_default();
    let options = pattern.get(last + 1..).unwrap_or_default();
    let mut flags = String::new();
    for c in options.chars() {
        match c {
            'i' | 'm' | 's' => flags.push(c),
            _ => {}
        }
    }
    let full = if flags.is_empty() {
        body.to_owned()
    } else {
        format!("(?{flags}){body}")
    };
    match regex::Regex::new(&full) {
        Ok(re) => Ok(re.is_match(input)),
        Err(e) => err(format!("Invalid regex /{body}/: {e}")),
    }
}

fn as_f64(v: Scalar<'_>) -> Option<f64> {
    match v {
        Scalar::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn numbers_equal(l: Scalar<'_>, r: Scalar<'_>) -> bool {
    match (l, r) {
        (Scalar::Number(a), Scalar::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => as_f64(l) == as_f64(r),
        },
        _ => false,
    }
}

fn values_equal(l: Scalar<'_>, r: Scalar<'_>) -> bool {
    let (kl, kr) = (kind(l), kind(r));
    if kl != kr {
        return false;
    }
    match (l, r) {
        (Scalar::Number(_), Scalar::Number(_)) => numbers_equal(l, r),
        _ => l == r,
    }
}

fn equals_with_coercion(l: Scalar<'_>, r: Scalar<'_>) -> bool {
    if values_equal(l, r) {
        return true;
    }
    let (kl, kr) = (kind(l), kind(r));
    if matches!(
        (kl, kr),
        (Kind::Integer, Kind::Float) | (Kind::Float, Kind::Integer)
    ) {
        return numbers_equal(l, r);
    }
    false
}

fn strict_equals(l: Scalar<'_>, r: Scalar<'_>) -> bool {
    let (kl, kr) = (kind(l), kind(r));
    if matches!(
        (kl, kr),
        (Kind::Integer, Kind::Float) | (Kind::Float, Kind::Integer)
    ) {
        return numbers_equal(l, r);
    }
    kl == kr && values_equal(l, r)
}

fn to_double(v: Scalar<'_>) -> Result<f64, JsonPathError> {
    match v {
        Scalar::Number(n) => n.as_f64().map_or_else(|| err("number out of range"), Ok),
        Scalar::Bool(b) => Ok(if b { 1.0 } else { 0.0 }),
        Scalar::String(s) => s
            .trim()
            .parse::<f64>()
            .or_else(|_| err("Input string was not in a correct format.")),
        _ => err("Object cannot be converted to a number."),
    }
}

fn to_i64(v: Scalar<'_>) -> Result<i64, JsonPathError> {
    match v {
        Scalar::Number(n) => n.as_i64().map_or_else(
            || err("Value was either too large or too small for an Int64."),
            Ok,
        ),
        Scalar::Bool(b) => Ok(i64::from(b)),
        Scalar::String(s) => s
            .trim()
            .parse::<i64>()
            .or_else(|_| err("Input string was not in a correct format.")),
        _ => err("Object cannot be converted to an integer."),
    }
}

fn to_bool(v: Scalar<'_>) -> Result<bool, JsonPathError> {
    match v {
        Scalar::Bool(b) => Ok(b),
        Scalar::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Scalar::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => err("String was not recognized as a valid Boolean."),
        },
        _ => err("Object cannot be converted to a Boolean."),
    }
}

/// `JValue.CompareTo`: the left value's type decides how the right value is converted.
fn compare(l: Scalar<'_>, r: Scalar<'_>) -> Result<Ordering, JsonPathError> {
    match (l == Scalar::Null, r == Scalar::Null) {
        (true, true) => return Ok(Ordering::Equal),
        (_, true) => return Ok(Ordering::Greater),
        (true, _) => return Ok(Ordering::Less),
        _ => {}
    }
    match kind(l) {
        Kind::Integer => {
            if kind(r) == Kind::Float {
                Ok(cmp_f64(to_double(l)?, to_double(r)?))
            } else {
                Ok(to_i64(l)?.cmp(&to_i64(r)?))
            }
        }
        Kind::Float => Ok(cmp_f64(to_double(l)?, to_double(r)?)),
        Kind::String => {
            let a = netvalue::to_dotnet_string(l).unwrap_or_default();
            let b = netvalue::to_dotnet_string(r).unwrap_or_default();
            Ok(a.encode_utf16().cmp(b.encode_utf16()))
        }
        Kind::Bool => Ok(to_bool(l)?.cmp(&to_bool(r)?)),
        Kind::Null => Ok(Ordering::Less),
    }
}

fn cmp_f64(a: f64, b: f64) -> Ordering {
    // .NET's double.CompareTo puts NaN first.
    a.partial_cmp(&b).unwrap_or_else(|| {
        if a.is_nan() && b.is_nan() {
            Ordering::Equal
        } else if a.is_nan() {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `..` scan that skips scalars finds the same tokens, and fails the same way, as the
    /// scan that tests every node.
    #[test]
    fn skipping_scalars_in_a_scan_changes_nothing() {
        let docs = [
            json!({"Body": {"hr": 70, "a": [1, "x", {"hr": 2}, [3, {"b": null}]], "m": {"hr": {"v": 1}}}}),
            json!([1, 2, {"hr": 3}, "hr", true, null, [[{"sys": 1, "dia": 2}]]]),
            json!({"c": 5, "d": {"c": "5"}, "e": [5, {"c": 6}]}),
            json!(7),
        ];
        let queries = [
            ("$..[?(@hr)]", true),
            ("$..[?(@.sys && @.dia)]", true),
            ("$..[?(@.c == 5)]", true),
            ("$..[?(@.c > 4 || @[0] == 5)]", true),
            ("$..[?(@[0])]", true),
            ("$..[?(@.*)]", true),
            ("$..[?(@ == 5)]", false),
            ("$..[?(@ > 4)]", false),
            ("$..[?(5 == @.c)]", false),
            ("$..[?($.c == 5)]", false),
            ("$..[?(@.c || @ == 5)]", false),
            ("$..[?(@.c && @ == 5)]", true),
            ("$..[?(@ == 5 && @.c)]", false),
            ("$..[?(@.a[0:1:0])]", false),
        ];
        for (text, skips) in queries {
            let path = JsonPath::parse(text).unwrap();
            let Some(Filter::QueryScan(q)) = path.filters.last() else {
                panic!("{text}: {:?}", path.filters);
            };
            assert_eq!(false_on_scalar(q), skips, "{text}");
            for doc in &docs {
                let scan = |skip: bool| {
                    let mut out = Vec::new();
                    query_scan(q, skip, doc, doc, &mut out).map(|()| out)
                };
                assert_eq!(scan(false_on_scalar(q)), scan(false), "{text} over {doc}");
            }
        }
    }

    /// The tokens `path` selects from `v`; the same path over the `Doc` parsed from `v`'s text
    /// must select the same tokens in the same order.
    fn sel(path: &str, v: &Value) -> Vec<Value> {
        let p = JsonPath::parse(path).unwrap();
        let out: Vec<Value> = p.select_tokens(v).unwrap().into_iter().cloned().collect();
        let text = v.to_string();
        let doc = crate::Doc::parse(&text).unwrap();
        let over_doc: Vec<Value> = p
            .select_tokens(&doc)
            .unwrap()
            .into_iter()
            .map(JsonNode::to_value)
            .collect();
        assert_eq!(over_doc, out, "{path} over Doc and Value");
        out
    }

    fn store() -> Value {
        // The "Store" document used throughout Newtonsoft's SelectToken documentation.
        json!({
          "Stores": ["Lambton Quay", "Willis Street"],
          "Manufacturers": [
            {"Name": "Acme Co", "Products": [{"Name": "Anvil", "Price": 50}]},
            {"Name": "Contoso", "Products": [
              {"Name": "Elbow Grease", "Price": 99.95},
              {"Name": "Headlight Fluid", "Price": 4}
            ]}
          ]
        })
    }

    #[test]
    fn newtonsoft_documented_queries() {
        let o = store();
        assert_eq!(sel("Manufacturers[0].Name", &o), vec![json!("Acme Co")]);
        assert_eq!(
            sel("Manufacturers[0].Products[0].Price", &o),
            vec![json!(50)]
        );
        assert_eq!(
            sel("Manufacturers[1].Products[0].Name", &o),
            vec![json!("Elbow Grease")]
        );
        assert_eq!(
            sel("$..Products[?(@.Price >= 50)].Name", &o),
            vec![json!("Anvil"), json!("Elbow Grease")]
        );
        assert_eq!(sel("$.Manufacturers[?(@.Name == 'Acme Co')]", &o).len(), 1);
        assert_eq!(sel("$.Stores[*]", &o).len(), 2);
        assert_eq!(sel("$.Manufacturers[*].Name", &o).len(), 2);
    }

    #[test]
    fn medtech_docs_forms() {
        let env = json!({"Body": {"heartRate": "78", "endDate": "2023-03-13T22:46:01.8750000", "deviceId": "device01"}});
        // `@heartRate` is shorthand for `@.heartRate`; the deep scan includes the root itself.
        let m = sel("$..[?(@heartRate)]", &env);
        assert_eq!(m, vec![env["Body"].clone()]);
        let iot = json!({"Body": {"HeartRate": "78"}, "SystemProperties": {}});
        assert_eq!(sel("$..[?(@Body.HeartRate)]", &iot), vec![iot.clone()]);
        assert_eq!(sel("$.Body.HeartRate", &iot), vec![json!("78")]);
        let arr = json!({"Body": [{"heartRate": 1}, {"steps": 2}, {"heartRate": 3}]});
        assert_eq!(sel("$..[?(@heartRate)]", &arr).len(), 2);
        assert_eq!(
            sel("$.Body[?(@.heartRate > 1)]", &arr),
            vec![json!({"heartRate": 3})]
        );
    }

    #[test]
    fn extra_property_matches_a_materialized_root() {
        let event = json!({"Body": {"a": [1, 2], "id": "x"}, "matchedToken": "old"});
        let token = json!({"v": [{"w": 5}]});
        let mut full = event.clone();
        full["matchedToken"] = token.clone();
        for p in [
            "$.matchedToken.v[0].w",
            "$.Body.id",
            "$.matchedToken",
            "$.nope.x",
            "$.Body.a[*]",
            "$.matchedToken.v[?(@.w == 5)]",
        ] {
            let path = JsonPath::parse(p).unwrap();
            let fast = path
                .select_token_with_extra(&event, "matchedToken", &token)
                .unwrap();
            let slow = path.select_token(&full);
            assert_eq!(fast.map(|o| o.cloned()), slow.map(|o| o.cloned()), "{p}");
        }
        let needs_root = JsonPath::parse("$..x").unwrap();
        assert!(needs_root
            .select_token_with_extra(&event, "matchedToken", &token)
            .is_none());
    }

    #[test]
    fn select_token_errors_on_several() {
        let v = json!({"a": [1, 2]});
        let p = JsonPath::parse("$.a[*]").unwrap();
        assert_eq!(
            p.select_token(&v).unwrap_err().reason,
            "Path returned multiple tokens."
        );
        assert_eq!(
            JsonPath::parse("$.b").unwrap().select_token(&v).unwrap(),
            None
        );
    }

    #[test]
    fn wildcards_follow_newtonsoft() {
        let v = json!({"o": {"x": 1, "y": 2}, "a": [1, 2]});
        assert_eq!(sel("$.o.*", &v), vec![json!(1), json!(2)]);
        // `[*]` only applies to arrays and `.*` only to objects.
        assert!(sel("$.o[*]", &v).is_empty());
        assert!(sel("$.a.*", &v).is_empty());
        assert_eq!(sel("$.a[*]", &v), vec![json!(1), json!(2)]);
        assert_eq!(sel("$['o']['x']", &v), vec![json!(1)]);
        assert_eq!(sel("$.o['x','y']", &v), vec![json!(1), json!(2)]);
        assert_eq!(sel("$..x", &v), vec![json!(1)]);
    }

    #[test]
    fn slices_and_indexes() {
        let v = json!([0, 1, 2, 3, 4]);
        assert_eq!(sel("$[1:3]", &v), vec![json!(1), json!(2)]);
        assert_eq!(sel("$[-2:]", &v), vec![json!(3), json!(4)]);
        assert_eq!(sel("$[::2]", &v), vec![json!(0), json!(2), json!(4)]);
        assert_eq!(sel("$[::-1]", &v).len(), 5);
        assert_eq!(sel("$[0,4]", &v), vec![json!(0), json!(4)]);
        assert!(sel("$[9]", &v).is_empty());
        assert!(JsonPath::parse("$[-1]").unwrap().select_tokens(&v).is_err());
        assert!(JsonPath::parse("$[::0]")
            .unwrap()
            .select_tokens(&v)
            .is_err());
    }

    #[test]
    fn filters_and_or_regex_and_coercion() {
        let v = json!([
            {"n": "a", "v": 1, "t": true},
            {"n": "b", "v": 2.0, "t": false},
            {"n": "c", "v": "3"}
        ]);
        assert_eq!(sel("$[?(@.v == 2)]", &v).len(), 1, "integer equals float");
        assert_eq!(sel("$[?(@.v === 2)]", &v).len(), 1);
        assert_eq!(sel("$[?(@.v == '3')]", &v).len(), 1);
        assert_eq!(
            sel("$[?(@.v == 3)]", &v).len(),
            0,
            "no string/number coercion"
        );
        assert_eq!(sel("$[?(@.n != 'a')]", &v).len(), 2);
        assert_eq!(sel("$[?(@.n =~ /^[AB]$/i)]", &v).len(), 2);
        assert_eq!(sel("$[?(@.v >= 1 && @.t == true)]", &v).len(), 1);
        assert_eq!(sel("$[?(@.n == 'a' || @.n == 'c')]", &v).len(), 2);
        assert_eq!(sel("$[?(@.t)]", &v).len(), 2, "exists");
        assert_eq!(sel("$[?(@.missing != 1)]", &v).len(), 0);
    }

    #[test]
    fn newtonsoft_and_or_nesting() {
        // `a && b || c` is `a && (b || c)` in Newtonsoft.
        let v = json!([{"a": 0, "b": 0, "c": 1}]);
        assert_eq!(sel("$[?(@.a == 1 && @.b == 1 || @.c == 1)]", &v).len(), 0);
        assert_eq!(sel("$[?(@.c == 1 || @.a == 1 && @.b == 1)]", &v).len(), 1);
    }

    #[test]
    fn parse_errors_use_newtonsoft_wording() {
        for (p, msg) in [
            ("$.a[", "Path ended with open indexer."),
            ("$.a.", "Unexpected end while parsing path."),
            ("$.a[?(@.b == 'x)]", "Path ended with an open string."),
            ("$.a]", "Unexpected character while parsing path: ]"),
            ("$.a[0]b", "Unexpected character following indexer: b"),
            ("$[?(@.a ~ 1)]", "Could not read query operator."),
        ] {
            assert_eq!(JsonPath::parse(p).unwrap_err().reason, msg, "{p}");
        }
    }

    #[test]
    fn comparison_conversion_failures_are_errors() {
        let v = json!([{"v": 5}]);
        assert!(JsonPath::parse("$[?(@.v > 'abc')]")
            .unwrap()
            .select_tokens(&v)
            .is_err());
        assert_eq!(sel("$[?(@.v > '4')]", &v).len(), 1);
    }

    #[test]
    fn no_panic_on_odd_input() {
        let v = json!({"a": [1, {"b": null}]});
        for p in [
            "",
            "$",
            "$$",
            "..",
            "$..",
            "[",
            "]",
            "$[?(",
            "$[?(@",
            "$[?(@.a",
            "$[?(@.a ==",
            "$[?(@.a == 1",
            "$[?(@.a == 1)",
            "$['a'",
            "$['a',",
            "$[1:2:3:4]",
            "$[-]",
            "@",
            "$[?(@.a == 1 &",
            "$[?(@.a == /x",
            "$[ ",
            "$[*",
            "$.a[?($.a)]",
            "$.a[?(@ == null)]",
            "$..*",
            "$..['a','b']",
            "$(a)",
            "a.b.c",
            "$[?(@.a =~ '(')]",
        ] {
            if let Ok(p) = JsonPath::parse(p) {
                let over_value = p
                    .select_tokens(&v)
                    .map(|t| t.into_iter().cloned().collect::<Vec<_>>());
                let doc = crate::Doc::borrowed(&v);
                let over_doc = p
                    .select_tokens(&doc)
                    .map(|t| t.into_iter().map(JsonNode::to_value).collect::<Vec<_>>());
                assert_eq!(over_doc, over_value);
            }
        }
    }
}
