//! The JSONPath parser: a port of the state machine of Newtonsoft's JPath, written for
//! carebridge; `&&`/`||` are nested the way Newtonsoft nests them.

use serde_json::Value;

use super::{err, Filter, JsonPathError, Op, QueryExpr, Side};

pub(super) struct Parser {
    pub(super) chars: Vec<char>,
    pub(super) i: usize,
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

    pub(super) fn parse_main(&mut self) -> Result<Vec<Filter>, JsonPathError> {
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
