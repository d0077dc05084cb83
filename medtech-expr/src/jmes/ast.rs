//! The lowered JMESPath expression: the `jmespath` crate's AST rewritten once into [`Node`],
//! with the rewrites the interpreter relies on.

use jmespath::ast::{Ast, Comparator};
use serde_json::Value;

use super::functions::Func;
use super::variable_to_json;

/// A lowered JMESPath expression.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Identity,
    Field(String),
    Index(i32),
    Literal(Value),
    Subexpr(Box<Node>, Box<Node>),
    Projection(Box<Node>, Box<Node>),
    ObjectValues(Box<Node>),
    Flatten(Box<Node>),
    Condition(Box<Node>, Box<Node>),
    Comparison(Comparator, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    MultiList(Vec<Node>),
    MultiHash(Vec<(String, Node)>),
    Function {
        func: Option<Func>,
        name: String,
        args: Vec<Node>,
        offset: usize,
    },
    Expref(Box<Node>),
    /// `a.b.c`: a chain of fields, walked in a loop (the same as nested `Subexpr`s of `Field`s).
    Path(Vec<String>),
    /// `[item] | rhs-projection | @[0]`, i.e. `Subexpr(Projection(MultiList([item]), rhs),
    /// Index(0))`, the shape of the documented type match
    /// ``[Body][?contains(keys(@), `heartRate`)] | @[0]``: `null` for `null` data, else `rhs`
    /// evaluated over `item` (no one-element list is built).
    FirstOfSingleton {
        item: Box<Node>,
        rhs: Box<Node>,
    },
    /// `contains(keys(object), 'key')`, the usual type match: answered by a key lookup when
    /// `object` is an object, else by `general` (the same call, evaluated as written).
    HasKey {
        object: Box<Node>,
        key: String,
        general: Box<Node>,
    },
    Slice {
        start: Option<i32>,
        stop: Option<i32>,
        step: i32,
        offset: usize,
    },
}

impl Node {
    /// Lowers the `jmespath` crate's AST (function names resolved, literals converted to JSON),
    /// with the rewrites that make common shapes cheap ([`Node::Path`],
    /// [`Node::FirstOfSingleton`], [`Node::HasKey`]).
    pub(crate) fn lower(ast: &Ast) -> Self {
        Self::lower_with(ast, true)
    }

    /// Lowers without rewrites when `rewrite` is false (the reference the rewrites are tested
    /// against).
    pub(crate) fn lower_with(ast: &Ast, rewrite: bool) -> Self {
        let b = |a: &Ast| Box::new(Self::lower_with(a, rewrite));
        match ast {
            Ast::Identity { .. } => Self::Identity,
            Ast::Field { name, .. } => Self::Field(name.clone()),
            Ast::Index { idx, .. } => Self::Index(*idx),
            Ast::Literal { value, .. } => Self::Literal(variable_to_json(value)),
            Ast::Subexpr { lhs, rhs, .. } if rewrite => {
                Self::subexpr(Self::lower_with(lhs, true), Self::lower_with(rhs, true))
            }
            Ast::Subexpr { lhs, rhs, .. } => Self::Subexpr(b(lhs), b(rhs)),
            Ast::Projection { lhs, rhs, .. } => Self::Projection(b(lhs), b(rhs)),
            Ast::ObjectValues { node, .. } => Self::ObjectValues(b(node)),
            Ast::Flatten { node, .. } => Self::Flatten(b(node)),
            Ast::Condition {
                predicate, then, ..
            } => Self::Condition(b(predicate), b(then)),
            Ast::Comparison {
                comparator,
                lhs,
                rhs,
                ..
            } => Self::Comparison(comparator.clone(), b(lhs), b(rhs)),
            Ast::And { lhs, rhs, .. } => Self::And(b(lhs), b(rhs)),
            Ast::Or { lhs, rhs, .. } => Self::Or(b(lhs), b(rhs)),
            Ast::Not { node, .. } => Self::Not(b(node)),
            Ast::MultiList { elements, .. } => Self::MultiList(
                elements
                    .iter()
                    .map(|e| Self::lower_with(e, rewrite))
                    .collect(),
            ),
            Ast::MultiHash { elements, .. } => Self::MultiHash(
                elements
                    .iter()
                    .map(|kv| (kv.key.clone(), Self::lower_with(&kv.value, rewrite)))
                    .collect(),
            ),
            Ast::Function { name, args, offset } => {
                let call = Self::Function {
                    func: Func::by_name(name),
                    name: name.clone(),
                    args: args.iter().map(|a| Self::lower_with(a, rewrite)).collect(),
                    offset: *offset,
                };
                if rewrite {
                    Self::has_key(call)
                } else {
                    call
                }
            }
            Ast::Expref { ast, .. } => Self::Expref(b(ast)),
            Ast::Slice {
                start,
                stop,
                step,
                offset,
            } => Self::Slice {
                start: *start,
                stop: *stop,
                step: *step,
                offset: *offset,
            },
        }
    }
}

impl Node {
    /// `lhs | rhs` or `lhs.rhs`, as [`Node::Path`] or [`Node::FirstOfSingleton`] when it has
    /// their shape.
    pub(super) fn subexpr(lhs: Self, rhs: Self) -> Self {
        // `@.x` and `x | @` are `x` (`@[0]` is `Subexpr(Identity, Index(0))`).
        let (lhs, rhs) = match (lhs, rhs) {
            (Self::Identity, other) | (other, Self::Identity) => return other,
            pair => pair,
        };
        let names = |n: Self| -> Result<Vec<String>, Self> {
            match n {
                Self::Field(f) => Ok(vec![f]),
                Self::Path(p) => Ok(p),
                other => Err(other),
            }
        };
        match (names(lhs), names(rhs)) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                Self::Path(a)
            }
            (Ok(a), Err(r)) => Self::Subexpr(Box::new(Self::from_names(a)), Box::new(r)),
            (Err(l), Ok(b)) => Self::Subexpr(Box::new(l), Box::new(Self::from_names(b))),
            (Err(Self::Projection(plhs, prhs)), Err(Self::Index(0))) => match *plhs {
                Self::MultiList(mut items) if items.len() == 1 => match items.pop() {
                    Some(item) => Self::FirstOfSingleton {
                        item: Box::new(item),
                        rhs: prhs,
                    },
                    None => Self::Subexpr(
                        Box::new(Self::Projection(Box::new(Self::MultiList(items)), prhs)),
                        Box::new(Self::Index(0)),
                    ),
                },
                other => Self::Subexpr(
                    Box::new(Self::Projection(Box::new(other), prhs)),
                    Box::new(Self::Index(0)),
                ),
            },
            (Err(l), Err(r)) => Self::Subexpr(Box::new(l), Box::new(r)),
        }
    }

    pub(super) fn from_names(mut names: Vec<String>) -> Self {
        if names.len() == 1 {
            if let Some(n) = names.pop() {
                return Self::Field(n);
            }
        }
        Self::Path(names)
    }

    /// `call` as [`Node::HasKey`] when it is `contains(keys(x), <string literal>)`.
    pub(super) fn has_key(call: Self) -> Self {
        let Self::Function {
            func: Some(Func::Contains),
            args,
            ..
        } = &call
        else {
            return call;
        };
        let [Self::Function {
            func: Some(Func::Keys),
            args: inner,
            ..
        }, Self::Literal(Value::String(key))] = args.as_slice()
        else {
            return call;
        };
        let [object] = inner.as_slice() else {
            return call;
        };
        Self::HasKey {
            object: Box::new(object.clone()),
            key: key.clone(),
            general: Box::new(call.clone()),
        }
    }
}
