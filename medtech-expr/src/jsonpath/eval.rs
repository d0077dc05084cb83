//! Evaluation of a parsed path: steps, deep scans, slices and the filter steps.

use super::filter::is_match;
use super::{err, Filter, JsonPathError, QueryExpr, Side};
use crate::json::{JsonNode, View};

/// Walks a path made only of `.name` and non-negative `[n]` steps without allocating; `None`
/// when the path has other steps (the caller falls back to [`evaluate`]).
pub(super) fn walk_simple<'a, N: JsonNode>(
    filters: &[Filter],
    start: &'a N,
) -> Option<Option<&'a N>> {
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

pub(super) fn evaluate<'a, N: JsonNode>(
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
pub(super) fn uses_root(f: &Filter) -> bool {
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
pub(super) fn false_on_scalar(q: &QueryExpr) -> bool {
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
pub(super) fn query_scan<'a, N: JsonNode>(
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
