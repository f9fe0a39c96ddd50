//! A small FHIRPath evaluator (<http://hl7.org/fhirpath/N1/>), just large enough for the
//! `expression`s of the official R4 SearchParameters
//! (<http://hl7.org/fhir/R4/searchparameter.html>), which Hearth evaluates on every write to
//! extract index values.
//!
//! Supported: paths with array flattening (§4, §5.1), the resource type as the first
//! segment (§4.1; `Resource`/`DomainResource` match any resource), choice elements
//! (`Observation.value` is any `value[x]`, <http://hl7.org/fhir/R4/formats.html#choice>),
//! indexers `[n]` (§6.6.2), `|` (§6.5.1), `=`/`!=` (§6.1), `and`/`or` (§6.5), `is`/`as`
//! (§6.3), string/number/boolean literals (§4.1), `%resource` (§9; FHIR §2.1.9.1.3), `$this`,
//! and the functions `where`, `exists`, `empty`, `not`, `first` (§5), `ofType`, `as`, `is`
//! (§5.2.4, §6.3) and FHIR's `resolve()` and `extension(url)`
//! (<http://hl7.org/fhir/R4/fhirpath.html#functions>). Anything else is a parse error.
//!
//! Evaluation never fails: wrong JSON shapes and FHIRPath run-time errors (e.g. a
//! multi-item collection where a singleton is expected) just select fewer nodes.

use serde_json::Value;

use super::model;
use crate::fhir::resource_type::RESOURCE_TYPES;

/// A parsed FHIRPath expression.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    root: Expr,
}

/// One node selected from a resource, with its FHIR type from the model (`"CodeableConcept"`,
/// `"date"`, `"Reference"`, `"Patient"`...; `""` when unknown).
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub value: &'a Value,
    pub type_name: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// `$this`: the focus (the root resource at the top level, the item inside `where`).
    This,
    /// `%resource`, `%rootResource`, `%context`: the resource being indexed.
    Resource,
    Bool(bool),
    Str(String),
    Num(f64),
    /// An identifier starting a path: the focus itself if it is of that type (§4.1,
    /// `Patient` in `Patient.name`), else a child of the focus.
    Ident(String),
    Child(Box<Expr>, String),
    Call(Box<Expr>, Function),
    Index(Box<Expr>, usize),
    Union(Box<Expr>, Box<Expr>),
    /// `=`, or `!=` when the flag is set.
    Equals(Box<Expr>, Box<Expr>, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Function {
    Where(Box<Expr>),
    Exists(Option<Box<Expr>>),
    Empty,
    Not,
    First,
    Resolve,
    /// `ofType(T)` and `as(T)`: the items of type T.
    OfType(String),
    Is(String),
    Extension(String),
}

/// Parses a FHIRPath expression of the supported subset; the error says what is unsupported.
pub fn parse(src: &str) -> Result<Expression, String> {
    let tokens = lex(src)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let root = parser.expression(0)?;
    match parser.peek() {
        Tok::End => Ok(Expression {
            source: src.to_string(),
            root,
        }),
        t => Err(format!("unexpected {} in `{src}`", t.describe())),
    }
}

// ---------------------------------------------------------------------------------------
// Lexer (§ Grammar: identifiers, delimited identifiers, string and number literals).

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A `backtick-delimited` identifier: never a keyword.
    Quoted(String),
    Str(String),
    Num(f64),
    /// `%name`
    Env(String),
    /// `$name`
    Dollar(String),
    Sym(&'static str),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Quoted(s) => format!("`{s}`"),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Num(n) => format!("{n}"),
            Tok::Env(s) => format!("%{s}"),
            Tok::Dollar(s) => format!("${s}"),
            Tok::Sym(s) => format!("`{s}`"),
            Tok::End => "end of expression".to_string(),
        }
    }
}

const SYMBOLS: [&str; 20] = [
    "!=", "!~", "<=", ">=", ".", "(", ")", "[", "]", ",", "|", "=", "~", "<", ">", "+", "-", "*",
    "/", "&",
];

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut tokens = Vec::new();
    let mut chars = src.char_indices().peekable();
    let word = |start: usize, chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if !(c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        src[start..end].to_string()
    };
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_alphabetic() || c == '_' {
            tokens.push(Tok::Ident(word(i, &mut chars)));
        } else if c == '%' || c == '$' {
            chars.next();
            let name = word(i + 1, &mut chars);
            if name.is_empty() {
                return Err(format!("expected a name after `{c}` in `{src}`"));
            }
            tokens.push(if c == '%' {
                Tok::Env(name)
            } else {
                Tok::Dollar(name)
            });
        } else if c.is_ascii_digit() {
            let mut end = i;
            while let Some(&(j, d)) = chars.peek() {
                let digit_after_dot = d == '.'
                    && src[j + 1..].starts_with(|n: char| n.is_ascii_digit())
                    && !src[i..j].contains('.');
                if !(d.is_ascii_digit() || digit_after_dot) {
                    break;
                }
                end = j + 1;
                chars.next();
            }
            let n = src[i..end]
                .parse()
                .map_err(|_| format!("bad number in `{src}`"))?;
            tokens.push(Tok::Num(n));
        } else if c == '\'' || c == '`' {
            chars.next();
            let text =
                quoted(c, &mut chars).ok_or_else(|| format!("unterminated {c} in `{src}`"))?;
            tokens.push(if c == '\'' {
                Tok::Str(text)
            } else {
                Tok::Quoted(text)
            });
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            for _ in 0..sym.len() {
                chars.next();
            }
            tokens.push(Tok::Sym(sym));
        } else {
            return Err(format!("unexpected character `{c}` in `{src}`"));
        }
    }
    tokens.push(Tok::End);
    Ok(tokens)
}

/// The rest of a string literal or delimited identifier, with its escapes (§ Grammar,
/// `ESC`) decoded; `None` when unterminated.
fn quoted(delim: char, chars: &mut impl Iterator<Item = (usize, char)>) -> Option<String> {
    let mut text = String::new();
    loop {
        match chars.next()?.1 {
            c if c == delim => return Some(text),
            '\\' => match chars.next()?.1 {
                'n' => text.push('\n'),
                'r' => text.push('\r'),
                't' => text.push('\t'),
                'f' => text.push('\u{c}'),
                'u' => {
                    let hex: String = (0..4)
                        .filter_map(|_| chars.next().map(|(_, c)| c))
                        .collect();
                    text.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => text.push(other),
            },
            c => text.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parser: precedence climbing over the operator table of §6.7 (tighter binds first):
// `.` `[]`, then `is`/`as`, `|`, `=`/`!=`, `and`, `or`.

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).unwrap_or(&Tok::End)
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn expect(&mut self, sym: &str) -> Result<(), String> {
        match self.next() {
            Tok::Sym(s) if s == sym => Ok(()),
            t => Err(format!("expected `{sym}`, found {}", t.describe())),
        }
    }

    fn expression(&mut self, min_prec: u8) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("expression nested too deeply".to_string());
        }
        let mut lhs = self.postfix()?;
        loop {
            let prec = match self.peek() {
                Tok::Ident(w) if w == "is" || w == "as" => 5,
                Tok::Sym("|") => 4,
                Tok::Sym("=") | Tok::Sym("!=") => 3,
                Tok::Ident(w) if w == "and" => 2,
                Tok::Ident(w) if w == "or" => 1,
                Tok::Ident(w)
                    if matches!(
                        w.as_str(),
                        "xor" | "implies" | "in" | "contains" | "div" | "mod"
                    ) =>
                {
                    return Err(format!("operator `{w}` is not supported"))
                }
                Tok::Sym(s) if !matches!(*s, "." | "(" | ")" | "[" | "]" | ",") => {
                    return Err(format!("operator `{s}` is not supported"))
                }
                _ => break,
            };
            if prec < min_prec {
                break;
            }
            let op = self.next();
            lhs = match op {
                Tok::Ident(w) if w == "is" => Expr::Is(Box::new(lhs), self.type_specifier()?),
                Tok::Ident(w) if w == "as" => Expr::As(Box::new(lhs), self.type_specifier()?),
                _ => {
                    // Left-associative: the right operand binds tighter.
                    let rhs = Box::new(self.expression(prec + 1)?);
                    let lhs = Box::new(lhs);
                    match op {
                        Tok::Sym("|") => Expr::Union(lhs, rhs),
                        Tok::Sym("=") => Expr::Equals(lhs, rhs, false),
                        Tok::Sym("!=") => Expr::Equals(lhs, rhs, true),
                        Tok::Ident(w) if w == "and" => Expr::And(lhs, rhs),
                        _ => Expr::Or(lhs, rhs),
                    }
                }
            };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// A term followed by `.member`, `.function(...)` and `[index]` invocations.
    fn postfix(&mut self) -> Result<Expr, String> {
        let mut expr = self.term()?;
        loop {
            match self.peek() {
                Tok::Sym(".") => {
                    self.next();
                    let name = match self.next() {
                        Tok::Ident(n) | Tok::Quoted(n) => n,
                        t => {
                            return Err(format!(
                                "expected a name after `.`, found {}",
                                t.describe()
                            ))
                        }
                    };
                    expr = if self.peek() == &Tok::Sym("(") {
                        Expr::Call(Box::new(expr), self.function(&name)?)
                    } else {
                        Expr::Child(Box::new(expr), name)
                    };
                }
                Tok::Sym("[") => {
                    self.next();
                    let index = match self.next() {
                        Tok::Num(n) if n >= 0.0 && n.fract() == 0.0 => n as usize,
                        t => {
                            return Err(format!(
                                "only integer indexes are supported, found {}",
                                t.describe()
                            ))
                        }
                    };
                    self.expect("]")?;
                    expr = Expr::Index(Box::new(expr), index);
                }
                _ => return Ok(expr),
            }
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        match self.next() {
            Tok::Ident(w) if w == "true" || w == "false" => Ok(Expr::Bool(w == "true")),
            Tok::Ident(name) | Tok::Quoted(name) => {
                if self.peek() == &Tok::Sym("(") {
                    Ok(Expr::Call(Box::new(Expr::This), self.function(&name)?))
                } else {
                    Ok(Expr::Ident(name))
                }
            }
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Env(name) => match name.as_str() {
                "resource" | "rootResource" | "context" => Ok(Expr::Resource),
                _ => Err(format!("environment variable %{name} is not supported")),
            },
            Tok::Dollar(name) if name == "this" => Ok(Expr::This),
            Tok::Dollar(name) => Err(format!("${name} is not supported")),
            Tok::Sym("(") => {
                let e = self.expression(0)?;
                self.expect(")")?;
                Ok(e)
            }
            t => Err(format!("unexpected {}", t.describe())),
        }
    }

    /// `name(args)`, the `(` not yet consumed.
    fn function(&mut self, name: &str) -> Result<Function, String> {
        self.expect("(")?;
        let f = match name {
            "where" => Function::Where(Box::new(self.expression(0)?)),
            "exists" if self.peek() == &Tok::Sym(")") => Function::Exists(None),
            "exists" => Function::Exists(Some(Box::new(self.expression(0)?))),
            "empty" => Function::Empty,
            "not" => Function::Not,
            "first" => Function::First,
            "resolve" => Function::Resolve,
            "ofType" | "as" => Function::OfType(self.type_specifier()?),
            "is" => Function::Is(self.type_specifier()?),
            "extension" => match self.next() {
                Tok::Str(url) => Function::Extension(url),
                t => {
                    return Err(format!(
                        "extension() takes a string, found {}",
                        t.describe()
                    ))
                }
            },
            _ => return Err(format!("function {name}() is not supported")),
        };
        self.expect(")")?;
        Ok(f)
    }

    /// A type name, optionally qualified as `FHIR.Quantity` (§6.3).
    fn type_specifier(&mut self) -> Result<String, String> {
        let name = match self.next() {
            Tok::Ident(n) | Tok::Quoted(n) => n,
            t => return Err(format!("expected a type name, found {}", t.describe())),
        };
        if name == "System" {
            return Err("System types are not supported".to_string());
        }
        if name == "FHIR" && self.peek() == &Tok::Sym(".") {
            self.next();
            return self.type_specifier();
        }
        Ok(name)
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation (§3: every expression maps an input collection to an output collection).

/// An item of a collection during evaluation: a node of the document, a value computed by
/// the expression, or a `resolve()` target outside the document, of which only the type is
/// known.
#[derive(Debug, Clone, Copy)]
enum Item<'a, 'e> {
    Node(Node<'a>),
    Resolved(&'static str),
    Bool(bool),
    Str(&'e str),
    Num(f64),
}

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

impl Expression {
    /// Evaluates on a resource; returns the selected nodes in document order (for `a | b`,
    /// those of `a`, then those of `b` not already selected). A boolean result (such as
    /// `Patient.deceased.exists() and ...`) comes out as a `boolean` node; other computed
    /// values (literals) are not nodes of the resource and are left out.
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Vec<Node<'a>> {
        let root = Node {
            value: resource,
            type_name: resource
                .get("resourceType")
                .and_then(Value::as_str)
                .map_or("", intern),
        };
        self.evaluate_at(resource, root)
    }

    /// Evaluates with `focus` (a node of `resource`) as the input, as the components of a
    /// composite SearchParameter are (<https://hl7.org/fhir/R4/searchparameter.html>);
    /// `%resource` is still the whole resource.
    pub fn evaluate_at<'a>(&self, resource: &'a Value, focus: Node<'a>) -> Vec<Node<'a>> {
        let root = Node {
            value: resource,
            type_name: resource
                .get("resourceType")
                .and_then(Value::as_str)
                .map_or("", intern),
        };
        let items = eval(&self.root, &root, &[Item::Node(focus)]);
        items
            .into_iter()
            .filter_map(|item| match item {
                Item::Node(n) => Some(n),
                Item::Bool(b) => Some(Node {
                    value: if b { &TRUE } else { &FALSE },
                    type_name: "boolean",
                }),
                _ => None,
            })
            .collect()
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The static name of a resource type, `""` if `name` is none.
fn intern(name: &str) -> &'static str {
    RESOURCE_TYPES
        .binary_search(&name)
        .map_or("", |i| RESOURCE_TYPES[i])
}

fn eval<'a, 'e>(expr: &'e Expr, root: &Node<'a>, focus: &[Item<'a, 'e>]) -> Vec<Item<'a, 'e>> {
    match expr {
        Expr::This => focus.to_vec(),
        Expr::Resource => vec![Item::Node(*root)],
        Expr::Bool(b) => vec![Item::Bool(*b)],
        Expr::Str(s) => vec![Item::Str(s)],
        Expr::Num(n) => vec![Item::Num(*n)],
        Expr::Ident(name) => {
            let mut out = Vec::new();
            for item in focus {
                // §4.1: a type name selects the focus when it is of that type. Only
                // uppercase names: `code` is both a primitive type and an element name.
                if name.starts_with(|c: char| c.is_ascii_uppercase()) && is_type(item, name) {
                    out.push(*item);
                } else {
                    children(item, name, &mut out);
                }
            }
            out
        }
        Expr::Child(e, name) => {
            let mut out = Vec::new();
            for item in eval(e, root, focus) {
                children(&item, name, &mut out);
            }
            out
        }
        Expr::Call(e, f) => call(f, root, eval(e, root, focus)),
        Expr::Index(e, i) => eval(e, root, focus).get(*i).copied().into_iter().collect(),
        Expr::Union(a, b) => {
            let mut out: Vec<Item> = Vec::new();
            for item in eval(a, root, focus).into_iter().chain(eval(b, root, focus)) {
                if !out.iter().any(|o| equal(o, &item)) {
                    out.push(item);
                }
            }
            out
        }
        Expr::Equals(a, b, negated) => {
            let (a, b) = (eval(a, root, focus), eval(b, root, focus));
            if a.is_empty() || b.is_empty() {
                return Vec::new();
            }
            let eq = a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| equal(x, y));
            vec![Item::Bool(eq != *negated)]
        }
        Expr::And(a, b) => {
            let (a, b) = (truth(&eval(a, root, focus)), truth(&eval(b, root, focus)));
            match (a, b) {
                (Some(false), _) | (_, Some(false)) => vec![Item::Bool(false)],
                (Some(true), Some(true)) => vec![Item::Bool(true)],
                _ => Vec::new(),
            }
        }
        Expr::Or(a, b) => {
            let (a, b) = (truth(&eval(a, root, focus)), truth(&eval(b, root, focus)));
            match (a, b) {
                (Some(true), _) | (_, Some(true)) => vec![Item::Bool(true)],
                (Some(false), Some(false)) => vec![Item::Bool(false)],
                _ => Vec::new(),
            }
        }
        Expr::Is(e, t) => match eval(e, root, focus).as_slice() {
            [item] => vec![Item::Bool(is_type(item, t))],
            _ => Vec::new(),
        },
        // §6.3.2 defines `as` on a singleton; search parameters apply it to collections
        // (`Observation.component.value as Quantity`), where it filters like ofType().
        Expr::As(e, t) => {
            let mut items = eval(e, root, focus);
            items.retain(|i| is_type(i, t));
            items
        }
    }
}

fn call<'a, 'e>(f: &'e Function, root: &Node<'a>, input: Vec<Item<'a, 'e>>) -> Vec<Item<'a, 'e>> {
    match f {
        Function::Where(criteria) => input
            .into_iter()
            .filter(|item| truth(&eval(criteria, root, &[*item])) == Some(true))
            .collect(),
        Function::Exists(None) => vec![Item::Bool(!input.is_empty())],
        Function::Exists(Some(criteria)) => {
            let any = input
                .iter()
                .any(|i| truth(&eval(criteria, root, &[*i])) == Some(true));
            vec![Item::Bool(any)]
        }
        Function::Empty => vec![Item::Bool(input.is_empty())],
        Function::Not => truth(&input).map(|b| Item::Bool(!b)).into_iter().collect(),
        Function::First => input.into_iter().take(1).collect(),
        Function::Resolve => input.iter().filter_map(|i| resolve(i, root)).collect(),
        Function::OfType(t) => input.into_iter().filter(|i| is_type(i, t)).collect(),
        Function::Is(t) => match input.as_slice() {
            [item] => vec![Item::Bool(is_type(item, t))],
            _ => Vec::new(),
        },
        Function::Extension(url) => {
            let mut out = Vec::new();
            for item in &input {
                let Item::Node(node) = item else { continue };
                let Some(Value::Array(extensions)) = node.value.get("extension") else {
                    continue;
                };
                for ext in extensions {
                    if ext.get("url").and_then(Value::as_str) == Some(url) {
                        push_node(ext, "Extension", &mut out);
                    }
                }
            }
            out
        }
    }
}

/// The children `name` of an item, arrays flattened (§4.2 Paths and polymorphic items):
/// the element `name`, or the present variant of the choice `name[x]`. Primitive values
/// that only have an extension (`_birthDate` without `birthDate`) give no node.
fn children<'a, 'e>(item: &Item<'a, 'e>, name: &str, out: &mut Vec<Item<'a, 'e>>) {
    let Item::Node(node) = item else { return };
    let Value::Object(object) = node.value else {
        return;
    };
    let push_all =
        |value: &'a Value, type_name: &'static str, out: &mut Vec<Item<'a, 'e>>| match value {
            Value::Array(values) => values.iter().for_each(|v| push_node(v, type_name, out)),
            v => push_node(v, type_name, out),
        };
    if node.type_name.is_empty() {
        // Unknown type (e.g. an inline resource without a known resourceType): plain JSON.
        if let Some(v) = object.get(name) {
            push_all(v, "", out);
        }
    } else if let Some(element) = model::element(node.type_name, name) {
        if let Some(v) = object.get(name) {
            push_all(v, element.type_name, out);
        }
    } else {
        for (key, type_name) in model::choice_elements(node.type_name, name) {
            if let Some(v) = object.get(key) {
                push_all(v, type_name, out);
            }
        }
    }
}

/// Adds one JSON value as a node of `type_name`, unless its shape contradicts the type
/// (objects for complex types, strings/numbers/booleans for primitives; never null).
fn push_node<'a>(value: &'a Value, type_name: &'static str, out: &mut Vec<Item<'a, '_>>) {
    let type_name = match (type_name, value) {
        ("ResourceList", v) => resource_type_of(v),
        (t, _) => t,
    };
    let complex = type_name.starts_with(|c: char| c.is_ascii_uppercase());
    let fits = match value {
        Value::Null | Value::Array(_) => false,
        Value::Object(_) => complex || type_name.is_empty(),
        _ => !complex,
    };
    if fits {
        out.push(Item::Node(Node { value, type_name }));
    }
}

fn resource_type_of(value: &Value) -> &'static str {
    value
        .get("resourceType")
        .and_then(Value::as_str)
        .map_or("", intern)
}

/// Whether an item is of FHIR type `t` or a subtype (§6.3.1): any resource is a `Resource`
/// (and, but for Bundle, Binary and Parameters, a `DomainResource`); Age, Count, Distance,
/// Duration, MoneyQuantity and SimpleQuantity are Quantities. Primitive types match exactly.
fn is_type(item: &Item, t: &str) -> bool {
    let actual = match item {
        Item::Node(n) => n.type_name,
        Item::Resolved(t) => t,
        Item::Bool(_) => "boolean",
        Item::Str(_) => "string",
        Item::Num(_) => "decimal",
    };
    match t {
        _ if actual.is_empty() => false,
        "Resource" => RESOURCE_TYPES.binary_search(&actual).is_ok(),
        "DomainResource" => {
            RESOURCE_TYPES.binary_search(&actual).is_ok()
                && !matches!(actual, "Bundle" | "Binary" | "Parameters")
        }
        "Quantity" => matches!(
            actual,
            "Quantity"
                | "Age"
                | "Count"
                | "Distance"
                | "Duration"
                | "MoneyQuantity"
                | "SimpleQuantity"
        ),
        _ => actual == t,
    }
}

/// FHIR's `resolve()` (<http://hl7.org/fhir/R4/fhirpath.html#functions>) on a Reference,
/// without a database: `#id` is the contained resource with that id (`#` alone the
/// resource itself); `Type/id`, `http://base/Type/id` and `.../Type/id/_history/v` resolve
/// to a target known only by its type; `urn:uuid:`/`urn:oid:` and logical references
/// (identifier only) do not resolve.
fn resolve<'a, 'e>(item: &Item<'a, 'e>, root: &Node<'a>) -> Option<Item<'a, 'e>> {
    let Item::Node(node) = item else { return None };
    let reference = node.value.get("reference")?.as_str()?;
    if let Some(id) = reference.strip_prefix('#') {
        if id.is_empty() {
            return Some(Item::Node(*root));
        }
        let contained = root.value.get("contained")?.as_array()?;
        let target = contained
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))?;
        let type_name = resource_type_of(target);
        return (!type_name.is_empty()).then_some(Item::Node(Node {
            value: target,
            type_name,
        }));
    }
    let path = reference.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path.rsplit('/');
    let (mut id, mut type_name) = (segments.next()?, segments.next()?);
    if type_name == "_history" {
        (id, type_name) = (segments.next()?, segments.next()?);
    }
    let type_name = intern(type_name);
    (!id.is_empty() && !type_name.is_empty()).then_some(Item::Resolved(type_name))
}

/// §4.5 Singleton evaluation of collections, for a Boolean: empty is empty, a single
/// Boolean is itself, any other single item is true; several items would be an error and
/// count as empty here.
fn truth(items: &[Item]) -> Option<bool> {
    match items {
        [Item::Bool(b)] => Some(*b),
        [Item::Node(Node {
            value: Value::Bool(b),
            ..
        })] => Some(*b),
        [_] => Some(true),
        _ => None,
    }
}

/// Deep equality of JSON values, numbers by value (`1.0` = `1`), as §6.1.1 wants for
/// complex types (serde_json's `==` compares arbitrary-precision numbers as written).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        _ if std::ptr::eq(a, b) => true,
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// §6.1.1 Equals on two items: primitives by value (strings exactly, numbers numerically),
/// complex nodes by deep JSON equality; items of different kinds are not equal.
fn equal(a: &Item, b: &Item) -> bool {
    enum Prim<'x> {
        Str(&'x str),
        Bool(bool),
        Num(f64),
        Complex(&'x Value),
        /// A `resolve()` target outside the document: its identity is unknown.
        Unknown,
    }
    fn prim<'x>(item: &'x Item) -> Prim<'x> {
        match item {
            Item::Node(n) => match n.value {
                Value::String(s) => Prim::Str(s),
                Value::Bool(b) => Prim::Bool(*b),
                Value::Number(x) => Prim::Num(x.as_f64().unwrap_or(f64::NAN)),
                v => Prim::Complex(v),
            },
            Item::Resolved(_) => Prim::Unknown,
            Item::Bool(b) => Prim::Bool(*b),
            Item::Str(s) => Prim::Str(s),
            Item::Num(x) => Prim::Num(*x),
        }
    }
    match (prim(a), prim(b)) {
        (Prim::Str(x), Prim::Str(y)) => x == y,
        (Prim::Bool(x), Prim::Bool(y)) => x == y,
        (Prim::Num(x), Prim::Num(y)) => x == y,
        (Prim::Complex(x), Prim::Complex(y)) => json_equal(x, y),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn official() -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/conformance/search-parameters.json"
        );
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect()
    }

    /// The expression of the official SearchParameter with this id.
    fn sp(id: &str) -> Expression {
        let params = official();
        let p = params.iter().find(|p| p["id"] == id).unwrap();
        parse(p["expression"].as_str().unwrap()).unwrap()
    }

    fn eval<'a>(src: &str, resource: &'a Value) -> Vec<Node<'a>> {
        parse(src).unwrap().evaluate(resource)
    }

    /// (type, JSON) of each node, for compact assertions.
    fn typed(nodes: &[Node]) -> Vec<(&'static str, Value)> {
        nodes
            .iter()
            .map(|n| (n.type_name, n.value.clone()))
            .collect()
    }

    #[test]
    fn every_official_expression_parses() {
        let params = official();
        assert_eq!(params.len(), 1375);
        let expressions: Vec<&str> = params
            .iter()
            .filter_map(|p| p["expression"].as_str())
            .collect();
        let mut parsed = 0;
        for src in &expressions {
            match parse(src) {
                Ok(e) => {
                    assert_eq!(e.source(), *src);
                    parsed += 1;
                }
                Err(why) => panic!("{src}: {why}"),
            }
        }
        let without = params
            .iter()
            .filter(|p| p.get("expression").is_none())
            .count();
        assert_eq!(without, 3);
        assert_eq!(parsed, 1375 - without);
    }

    #[test]
    fn unsupported_syntax_is_reported() {
        for (src, why) in [
            (
                "Patient.name.select(given)",
                "function select() is not supported",
            ),
            (
                "Patient.a contains 'x'",
                "operator `contains` is not supported",
            ),
            ("Patient.a + 1", "operator `+` is not supported"),
            ("%ucum", "environment variable %ucum is not supported"),
            (
                "Patient.name[",
                "only integer indexes are supported, found end of expression",
            ),
            ("Patient.name)", "unexpected `)` in `Patient.name)`"),
            ("'abc", "unterminated ' in `'abc`"),
            ("Patient # x", "unexpected character `#` in `Patient # x`"),
        ] {
            assert_eq!(parse(src).unwrap_err(), why, "{src}");
        }
        // Keywords are names after a dot: `ValueSet.expansion.contains.code`, `Task.for`.
        assert!(parse("ValueSet.expansion.contains.code | Task.for").is_ok());
        assert!(parse(&"(".repeat(100)).is_err());
    }

    #[test]
    fn paths_flatten_arrays_and_type_nodes() {
        let patient = json!({"resourceType": "Patient", "birthDate": "1974-12-25",
            "name": [{"family": "Chalmers", "given": ["Peter", "James"]},
                     {"family": "Windsor", "given": [null, "Jim"], "_given": [{"id": "x"}, null]}]});
        let family = sp("individual-family").evaluate(&patient);
        assert_eq!(
            typed(&family),
            [("string", json!("Chalmers")), ("string", json!("Windsor"))]
        );
        let given = eval("Patient.name.given", &patient);
        assert_eq!(
            given
                .iter()
                .map(|n| n.value.as_str().unwrap())
                .collect::<Vec<_>>(),
            ["Peter", "James", "Jim"]
        );
        assert_eq!(eval("Patient.name", &patient)[0].type_name, "HumanName");
        assert_eq!(eval("Patient.name[1].given", &patient).len(), 1);
        assert_eq!(eval("Patient.name.given[2]", &patient)[0].value, "Jim");
        assert_eq!(
            eval("Patient.name.first().family", &patient)[0].value,
            "Chalmers"
        );
        assert!(eval("Patient.name[2]", &patient).is_empty());
        // The birthdate union across Patient, Person and RelatedPerson.
        let birthdate = sp("individual-birthdate");
        assert_eq!(
            typed(&birthdate.evaluate(&patient)),
            [("date", json!("1974-12-25"))]
        );
        let person = json!({"resourceType": "Person", "birthDate": "1980"});
        assert_eq!(
            typed(&birthdate.evaluate(&person)),
            [("date", json!("1980"))]
        );
        let only_extension = json!({"resourceType": "Patient", "_birthDate": {"extension": []}});
        assert!(birthdate.evaluate(&only_extension).is_empty());
        assert!(birthdate
            .evaluate(&json!({"resourceType": "Practitioner", "birthDate": "1980"}))
            .is_empty());
        // A path without the type name is relative to the resource (InsurancePlan-name).
        let plan = json!({"resourceType": "InsurancePlan", "name": "Gold", "alias": ["G", "Gold"]});
        assert_eq!(
            typed(&sp("InsurancePlan-name").evaluate(&plan)),
            [("string", json!("Gold")), ("string", json!("G"))]
        );
    }

    #[test]
    fn choice_elements_and_type_filters() {
        let quantity = json!({"resourceType": "Observation",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 72, "unit": "/min"},
            "component": [{"valueQuantity": {"value": 1}}, {"valueString": "x"},
                          {"valueCodeableConcept": {"text": "c"}}]});
        let code = eval("Observation.code", &quantity);
        assert_eq!(code[0].type_name, "CodeableConcept");
        assert_eq!(
            typed(&eval("Observation.value", &quantity))[0].0,
            "Quantity"
        );
        let value_quantity = sp("Observation-value-quantity");
        assert_eq!(
            typed(&value_quantity.evaluate(&quantity)),
            [("Quantity", json!({"value": 72, "unit": "/min"}))]
        );
        assert_eq!(
            eval("Observation.value.as(Quantity).unit", &quantity)[0].value,
            "/min"
        );
        assert_eq!(
            eval("Observation.value.ofType(Quantity)", &quantity).len(),
            1
        );
        assert_eq!(
            sp("Observation-combo-value-quantity")
                .evaluate(&quantity)
                .len(),
            2
        );
        assert_eq!(eval("Observation.component.value", &quantity).len(), 3);
        let text = json!({"resourceType": "Observation", "valueString": "high"});
        assert!(value_quantity.evaluate(&text).is_empty());
        assert_eq!(
            typed(&sp("Observation-value-string").evaluate(&text)),
            [("string", json!("high"))]
        );
        let concept =
            json!({"resourceType": "Observation", "valueCodeableConcept": {"text": "pos"}});
        assert_eq!(
            typed(&sp("Observation-value-string").evaluate(&concept)),
            [("string", json!("pos"))]
        );
        // `as` on a non-choice element filters by type.
        let library = json!({"resourceType": "Library", "useContext": [
            {"code": {"code": "age"}, "valueRange": {"low": {"value": 1}}},
            {"code": {"code": "focus"}, "valueCodeableConcept": {"text": "x"}}]});
        let cc = eval("(Library.useContext.value as CodeableConcept)", &library);
        assert_eq!(typed(&cc), [("CodeableConcept", json!({"text": "x"}))]);
        let related = json!({"resourceType": "Composition",
            "relatesTo": [{"code": "replaces", "targetIdentifier": {"value": "1"}},
                          {"code": "appends", "targetReference": {"reference": "Composition/2"}}]});
        assert_eq!(
            sp("Composition-related-id").evaluate(&related)[0].type_name,
            "Identifier"
        );
        // Condition.onset[x]: dateTime, Period, Age.
        let date = sp("Condition-onset-date");
        let age = sp("Condition-onset-age");
        let at = json!({"resourceType": "Condition", "onsetDateTime": "2020-01-02"});
        let period = json!({"resourceType": "Condition", "onsetPeriod": {"start": "2020"}});
        let aged = json!({"resourceType": "Condition", "onsetAge": {"value": 52, "code": "a"}});
        assert_eq!(
            typed(&date.evaluate(&at)),
            [("dateTime", json!("2020-01-02"))]
        );
        assert_eq!(
            typed(&date.evaluate(&period)),
            [("Period", json!({"start": "2020"}))]
        );
        assert!(date.evaluate(&aged).is_empty() && age.evaluate(&at).is_empty());
        assert_eq!(age.evaluate(&aged)[0].type_name, "Age");
        assert_eq!(eval("Condition.onset", &aged)[0].type_name, "Age");
        assert_eq!(
            eval("Condition.onset.ofType(Quantity)", &aged).len(),
            1,
            "Age is a Quantity"
        );
        // QuestionnaireResponse answers, nested backbone elements with a choice.
        let qr = json!({"resourceType": "QuestionnaireResponse", "item": [{"linkId": "1",
            "answer": [{"valueDate": "2020-02-03"}, {"valueCoding": {"code": "y"}}],
            "item": [{"linkId": "1.1", "answer": [{"valueBoolean": true}]}]}]});
        let answers = eval("QuestionnaireResponse.item.answer.value", &qr);
        assert_eq!(
            typed(&answers),
            [
                ("date", json!("2020-02-03")),
                ("Coding", json!({"code": "y"}))
            ]
        );
        let nested = eval("QuestionnaireResponse.item.item.answer.value", &qr);
        assert_eq!(typed(&nested), [("boolean", json!(true))]);
    }

    #[test]
    fn resolve_is_checks_the_reference_target() {
        let patient_subject = sp("clinical-patient");
        let expr = parse("Observation.subject.where(resolve() is Patient)").unwrap();
        for (reference, expected) in [
            ("Patient/123", true),
            ("http://x/fhir/Patient/123", true),
            ("Patient/123/_history/2", true),
            ("Group/1", false),
            ("Patient", false),
            ("urn:uuid:9d2e7a3e-8f0c-4d0f-9d1e-2b1f3c4d5e6f", false),
            ("#p1", true),
            ("#g1", false),
            ("#missing", false),
        ] {
            let obs = json!({"resourceType": "Observation",
                "contained": [{"resourceType": "Patient", "id": "p1"},
                              {"resourceType": "Group", "id": "g1"}],
                "subject": {"reference": reference}});
            let nodes = expr.evaluate(&obs);
            assert_eq!(nodes.len(), usize::from(expected), "{reference}");
            assert_eq!(patient_subject.evaluate(&obs).len(), usize::from(expected));
            if expected {
                assert_eq!(nodes[0].type_name, "Reference");
                assert_eq!(nodes[0].value["reference"], reference);
            }
        }
        let account = json!({"resourceType": "Account", "subject": [
            {"reference": "Device/d"}, {"reference": "Patient/a"}, {"display": "no reference"}]});
        assert_eq!(
            sp("Account-patient").evaluate(&account)[0].value["reference"],
            "Patient/a"
        );
        let logical = json!({"resourceType": "Observation", "subject": {"type": "Patient",
            "identifier": {"value": "1"}}});
        assert!(expr.evaluate(&logical).is_empty());
        // Outside where: the contained target is a node of its own type.
        let obs = json!({"resourceType": "Observation", "subject": {"reference": "#p"},
            "contained": [{"resourceType": "Patient", "id": "p", "gender": "male"}]});
        assert_eq!(
            typed(&eval("Observation.subject.resolve().gender", &obs)),
            [("code", json!("male"))]
        );
    }

    #[test]
    fn where_equality_logic_and_exists() {
        let patient = json!({"resourceType": "Patient", "telecom": [
            {"system": "phone", "value": "555"}, {"system": "email", "value": "a@b.c"},
            {"system": "email", "value": "d@e.f", "use": "work"}]});
        let email = sp("individual-email").evaluate(&patient);
        assert_eq!(email.len(), 2);
        assert_eq!(email[0].type_name, "ContactPoint");
        assert_eq!(email[1].value["value"], "d@e.f");
        assert_eq!(
            sp("individual-phone").evaluate(&patient)[0].value["value"],
            "555"
        );
        let work = eval(
            "Patient.telecom.where(system = 'email' and use = 'work').value",
            &patient,
        );
        assert_eq!(typed(&work), [("string", json!("d@e.f"))]);
        let not_phone = eval("Patient.telecom.where(system != 'phone')", &patient);
        assert_eq!(not_phone.len(), 2);
        assert_eq!(
            eval("Patient.telecom.where(use.exists())", &patient).len(),
            1
        );
        assert_eq!(
            eval("Patient.telecom.where(system = 'EMAIL')", &patient).len(),
            0
        );
        assert_eq!(
            eval(
                "Patient.telecom.where($this.system = 'phone' or use = 'work')",
                &patient
            )
            .len(),
            2
        );
        // Patient-deceased gives one boolean node.
        let deceased = sp("Patient-deceased");
        for (resource, expected) in [
            (
                json!({"resourceType": "Patient", "deceasedBoolean": true}),
                Some(true),
            ),
            (
                json!({"resourceType": "Patient", "deceasedBoolean": false}),
                Some(false),
            ),
            (
                json!({"resourceType": "Patient", "deceasedDateTime": "2020"}),
                Some(true),
            ),
            (json!({"resourceType": "Patient"}), Some(false)),
            (json!({"resourceType": "Person"}), Some(false)),
        ] {
            let nodes = deceased.evaluate(&resource);
            assert_eq!(
                nodes.iter().map(|n| n.value.as_bool().unwrap()).next(),
                expected,
                "{resource}"
            );
            assert!(nodes.iter().all(|n| n.type_name == "boolean"));
        }
        assert!(eval("Patient.telecom.empty()", &patient)[0].value == false);
        assert!(eval("Patient.name.exists().not()", &patient)[0].value == true);
    }

    #[test]
    fn resource_level_paths_extensions_and_indexes() {
        let tagged = json!({"resourceType": "Encounter", "meta": {"tag": [
            {"system": "s", "code": "a"}, {"system": "s", "code": "b"}], "lastUpdated": "2020-01-01T00:00:00Z"}});
        let tags = sp("Resource-tag").evaluate(&tagged);
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[1].type_name, "Coding");
        assert_eq!(
            eval("DomainResource.meta.lastUpdated", &tagged)[0].type_name,
            "instant"
        );
        assert!(eval(
            "DomainResource.meta",
            &json!({"resourceType": "Bundle", "meta": {}})
        )
        .is_empty());
        assert_eq!(eval("%resource.meta.tag.code", &tagged).len(), 2);
        assert_eq!(
            eval(
                "Encounter.meta.tag.where(code = %resource.meta.tag[1].code)",
                &tagged
            )
            .len(),
            1
        );
        // Union: duplicates are dropped, order is left then right.
        let u = eval(
            "Encounter.meta.tag[1] | Encounter.meta.tag | Resource.meta.tag[0]",
            &tagged,
        );
        assert_eq!(
            u.iter()
                .map(|n| n.value["code"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        let q = json!({"resourceType": "Observation", "component": [
            {"valueQuantity": {"value": 1}}, {"valueQuantity": {"value": 1.0}}]});
        assert_eq!(
            eval(
                "Observation.component[0].value | Observation.component[1].value",
                &q
            )
            .len(),
            1
        );
        // extension('url').value is a choice on Extension.
        let patient = json!({"resourceType": "Patient", "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
             "valueAddress": {"city": "Paris"}},
            {"url": "http://example.org/other", "valueString": "no"}]});
        let place = eval(
            "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-birthPlace').value",
            &patient,
        );
        assert_eq!(typed(&place), [("Address", json!({"city": "Paris"}))]);
        let city = eval("Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-birthPlace').value.city", &patient);
        assert_eq!(city[0].value, "Paris");
        // Bundle.entry[0].resource is typed by its own resourceType.
        let document = json!({"resourceType": "Bundle", "type": "document", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Composition", "title": "t"}},
            {"resource": {"resourceType": "Patient", "id": "p"}}]});
        let composition = sp("Bundle-composition").evaluate(&document);
        assert_eq!(composition.len(), 1);
        assert_eq!(composition[0].type_name, "Composition");
        assert_eq!(composition[0].value["title"], "t");
        assert_eq!(
            eval("Bundle.entry.resource.title", &document)[0].type_name,
            "string"
        );
        let odd = json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Nope", "x": 1}}]});
        assert_eq!(eval("Bundle.entry.resource.x", &odd)[0].type_name, "");
    }

    #[test]
    fn odd_shapes_never_panic() {
        let params = official();
        let expressions: Vec<(Expression, Vec<String>)> = params
            .iter()
            .filter_map(|p| {
                let e = parse(p["expression"].as_str()?).unwrap();
                let bases = p["base"]
                    .as_array()?
                    .iter()
                    .filter_map(|b| b.as_str().map(String::from));
                Some((e, bases.collect()))
            })
            .collect();
        // Every name any expression uses, set to wrong shapes in turn.
        let mut names: Vec<String> = params
            .iter()
            .filter_map(|p| p["expression"].as_str())
            .flat_map(|s| {
                s.split(|c: char| !c.is_ascii_alphanumeric())
                    .map(String::from)
            })
            .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()))
            .collect();
        names.sort();
        names.dedup();
        let weird = [
            json!(null),
            json!(7),
            json!("s"),
            json!([]),
            json!([null, 1, "x", [[]], {"reference": 5}, {"reference": "#"}, {"url": ["x"]}]),
            json!({"reference": "#c", "system": 1, "extension": {"url": 1}}),
            json!({"coding": "x", "value": {"value": []}, "resource": [1]}),
            json!(true),
        ];
        let mut evaluated = 0;
        for (e, bases) in &expressions {
            let mut shapes = vec![
                json!(null),
                json!(1),
                json!([{"resourceType": bases[0]}]),
                json!({"resourceType": 5}),
                json!({}),
            ];
            for (i, w) in weird.iter().enumerate() {
                let mut r = serde_json::Map::new();
                r.insert("resourceType".into(), json!(bases[0]));
                for (j, name) in names.iter().enumerate() {
                    r.insert(name.clone(), weird[(i + j) % weird.len()].clone());
                    r.insert(format!("{name}Quantity"), w.clone());
                }
                r.insert(
                    "contained".into(),
                    json!([{"resourceType": "Patient", "id": "c"}, 3]),
                );
                shapes.push(Value::Object(r));
            }
            for shape in &shapes {
                let _ = e.evaluate(shape);
                evaluated += 1;
            }
        }
        assert!(evaluated > 1372 * 10);
    }

    /// Every official expression on every official R4 example, when the examples package
    /// has been unpacked into /work/.cache (see the report for totals and timing).
    #[test]
    #[ignore]
    fn official_examples() {
        let dir = std::path::Path::new("/work/.cache/hl7.fhir.r4.examples-4.0.1/package");
        let Ok(files) = std::fs::read_dir(dir) else {
            eprintln!("{} not found, skipped", dir.display());
            return;
        };
        let params: Vec<(String, Vec<String>, Expression)> = official()
            .iter()
            .filter_map(|p| {
                let bases = p["base"]
                    .as_array()?
                    .iter()
                    .filter_map(|b| b.as_str().map(String::from));
                let e = parse(p["expression"].as_str()?).unwrap();
                Some((p["id"].as_str()?.to_string(), bases.collect(), e))
            })
            .collect();
        let mut resources = Vec::new();
        for f in files.flatten() {
            let path = f.path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".json") || name.starts_with('.') || name == "package.json" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if v.get("resourceType").is_some() {
                    resources.push(v);
                }
            }
        }
        let start = std::time::Instant::now();
        assert!(model::element("Patient", "name").is_some());
        println!("model built in {:?}", start.elapsed());
        let start = std::time::Instant::now();
        let (mut evaluations, mut nodes, mut untyped) = (0usize, 0usize, 0usize);
        let mut hits = vec![0usize; params.len()];
        for r in &resources {
            let rt = r["resourceType"].as_str().unwrap_or_default();
            for (i, (_, bases, e)) in params.iter().enumerate() {
                if !bases
                    .iter()
                    .any(|b| b == rt || b == "Resource" || b == "DomainResource")
                {
                    continue;
                }
                let out = e.evaluate(r);
                evaluations += 1;
                nodes += out.len();
                hits[i] += out.len();
                untyped += out.iter().filter(|n| n.type_name.is_empty()).count();
            }
        }
        let elapsed = start.elapsed();
        let never = hits.iter().filter(|h| **h == 0).count();
        println!(
            "{} resources, {} evaluations, {} nodes ({} untyped) in {:?}; {} of {} expressions \
             selected nothing in any example",
            resources.len(),
            evaluations,
            nodes,
            untyped,
            elapsed,
            never,
            params.len()
        );
        assert!(nodes > 0);
    }
}
