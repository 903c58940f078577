//! A YAML loader that gives the values Python's `yaml.safe_load` (PyYAML 6, YAML 1.1) gives.
//!
//! yaml-rust2 parses the text into events; this module does what PyYAML's composer, resolver
//! and `SafeConstructor` do on top: implicit typing of plain scalars with the YAML 1.1 rules
//! (`yes/no/on/off` booleans, `0b`/`0x`/leading-zero octal/`1:30` sexagesimal integers,
//! floats that need a `.`, `~`/`null`, dates and timestamps), the explicit `!!` tags of the
//! safe schema, merge keys (`<<`), duplicate keys (last value wins), unhashable keys (error),
//! and "a single document". Anything PyYAML rejects is an error here too, with a message for
//! logs; the caller maps every error to `invalid_yaml`.
//!
//! Known differences: recursive aliases (an alias inside its own anchor) are rejected (PyYAML
//! builds a cyclic object that JSON cannot encode anyway); integers beyond `i128` are kept as
//! floats; nesting deeper than [`MAX_DEPTH`] is rejected (PyYAML fails near 495 levels with a
//! `RecursionError`), also when aliases make it deeper (PyYAML builds such a value, which
//! `json.dumps` then cannot write), and yaml-rust2 itself stops flow-style (`[[[…]]]`) nesting
//! at 255 levels; the text is parsed by a YAML 1.2 parser, so rare 1.1-only syntax may differ.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

use crate::python::{float_of_str, is_py_space};

/// Deepest collection nesting accepted.
pub(crate) const MAX_DEPTH: usize = 490;

const TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// Key/value pairs of a Python dict, in insertion order.
pub(crate) type PyPairs = Vec<(Rc<Py>, Rc<Py>)>;

/// Key/value node pairs of a mapping node, in document order.
type NodePairs = Vec<(Rc<Node>, Rc<Node>)>;

/// A Python value as `yaml.safe_load` builds it.
#[derive(Debug)]
pub(crate) enum Py {
    None,
    Bool(bool),
    Int(i128),
    /// An integer beyond `i128`, approximated.
    HugeInt(f64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Date(Date),
    DateTime(DateTime),
    List(Vec<Rc<Py>>),
    /// `!!omap` / `!!pairs` items.
    Tuple(Vec<Rc<Py>>),
    Dict(PyPairs),
    Set(Vec<Rc<Py>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Date {
    pub year: u32,
    pub month: u32,
    pub day: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    pub date: Date,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    /// UTC offset in minutes; `None` for a naive datetime.
    pub offset_minutes: Option<i32>,
}

impl Date {
    /// Python `date.isoformat()`.
    pub(crate) fn isoformat(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl DateTime {
    /// Python `datetime.isoformat()`.
    pub(crate) fn isoformat(&self) -> String {
        let mut s = format!(
            "{}T{:02}:{:02}:{:02}",
            self.date.isoformat(),
            self.hour,
            self.minute,
            self.second
        );
        if self.micros != 0 {
            s.push_str(&format!(".{:06}", self.micros));
        }
        if let Some(off) = self.offset_minutes {
            let sign = if off < 0 { '-' } else { '+' };
            let abs = off.unsigned_abs();
            s.push_str(&format!("{sign}{:02}:{:02}", abs / 60, abs % 60));
        }
        s
    }
}

impl Py {
    /// Python `repr()` (used for key names in reasons).
    pub(crate) fn repr(&self) -> String {
        match self {
            Py::None => "None".into(),
            Py::Bool(true) => "True".into(),
            Py::Bool(false) => "False".into(),
            Py::Int(i) => i.to_string(),
            Py::HugeInt(f) => format!("{f:.0}"),
            Py::Float(f) => crate::python::float_repr(*f),
            Py::Str(s) => crate::python::repr_str(s),
            Py::Bytes(b) => format!("b{}", crate::python::repr_str(&String::from_utf8_lossy(b))),
            Py::Date(d) => format!("datetime.date({}, {}, {})", d.year, d.month, d.day),
            Py::DateTime(dt) => format!(
                "datetime.datetime({}, {}, {}, {}, {})",
                dt.date.year, dt.date.month, dt.date.day, dt.hour, dt.minute
            ),
            Py::List(items) => format!("[{}]", join_repr(items)),
            Py::Tuple(items) => format!("({})", join_repr(items)),
            Py::Set(items) => format!("{{{}}}", join_repr(items)),
            Py::Dict(pairs) => {
                let inner: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}: {}", k.repr(), v.repr()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
    }

    /// Python truthiness.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Py::None => false,
            Py::Bool(b) => *b,
            Py::Int(i) => *i != 0,
            Py::HugeInt(_) | Py::Date(_) | Py::DateTime(_) => true,
            Py::Float(f) => *f != 0.0,
            Py::Str(s) => !s.is_empty(),
            Py::Bytes(b) => !b.is_empty(),
            Py::List(v) | Py::Tuple(v) | Py::Set(v) => !v.is_empty(),
            Py::Dict(p) => !p.is_empty(),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Py::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_dict(&self) -> Option<&[(Rc<Py>, Rc<Py>)]> {
        match self {
            Py::Dict(p) => Some(p),
            _ => None,
        }
    }

    /// `d.get(key)` for a string key.
    pub(crate) fn get(&self, key: &str) -> Option<&Rc<Py>> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    fn numeric(&self) -> Option<f64> {
        match self {
            Py::Bool(b) => Some(f64::from(u8::from(*b))),
            Py::Int(i) => Some(*i as f64),
            Py::HugeInt(f) | Py::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn is_hashable(&self) -> bool {
        match self {
            Py::List(_) | Py::Dict(_) | Py::Set(_) => false,
            Py::Tuple(items) => items.iter().all(|i| i.is_hashable()),
            _ => true,
        }
    }

    /// Python `==` for hashable values (dict key identity).
    fn key_eq(&self, other: &Py) -> bool {
        match (self, other) {
            (Py::Int(a), Py::Int(b)) => a == b,
            (Py::Int(a), Py::Bool(b)) | (Py::Bool(b), Py::Int(a)) => *a == i128::from(*b),
            (Py::Bool(a), Py::Bool(b)) => a == b,
            (a, b) if a.numeric().is_some() && b.numeric().is_some() => a.numeric() == b.numeric(),
            (Py::None, Py::None) => true,
            (Py::Str(a), Py::Str(b)) => a == b,
            (Py::Bytes(a), Py::Bytes(b)) => a == b,
            (Py::Date(a), Py::Date(b)) => a == b,
            (Py::DateTime(a), Py::DateTime(b)) => a == b,
            (Py::Tuple(a), Py::Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.key_eq(y))
            }
            _ => false,
        }
    }
}

fn join_repr(items: &[Rc<Py>]) -> String {
    items
        .iter()
        .map(|i| i.repr())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A composed node (PyYAML's `Node`), with its resolved tag.
#[derive(Debug)]
enum Node {
    Scalar {
        tag: String,
        value: String,
    },
    Seq {
        tag: String,
        items: Vec<Rc<Node>>,
    },
    Map {
        tag: String,
        pairs: RefCell<Vec<(Rc<Node>, Rc<Node>)>>,
    },
}

impl Node {
    fn tag(&self) -> &str {
        match self {
            Node::Scalar { tag, .. } | Node::Seq { tag, .. } | Node::Map { tag, .. } => tag,
        }
    }
}

/// Most key/value pairs merge keys (`<<`) may copy into mappings, over the whole document:
/// the same budget as the values after alias expansion, so a kilobyte of nested merges cannot
/// take gigabytes (a merge of the same mapping twice copies it once).
pub(crate) const MAX_MERGED_PAIRS: usize = 1_000_000;

/// Longest implicit mapping key PyYAML's scanner accepts (a "simple key": one line, at most
/// 1024 characters from its start to the `:`).
pub(crate) const MAX_SIMPLE_KEY_CHARS: usize = 1024;

/// Why `safe_load` failed.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// PyYAML would refuse the document too.
    Invalid(String),
    /// A budget of ours ran out (merge expansion).
    TooLarge(String),
}

/// `yaml.safe_load(text)`: `Ok(None)` for an empty stream.
pub(crate) fn safe_load(text: &str) -> Result<Option<Rc<Py>>, LoadError> {
    check_printable(text).map_err(LoadError::Invalid)?;
    // PyYAML skips a byte-order mark at the start of the stream; yaml-rust2 does not.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(root) = compose(text)? else {
        return Ok(None);
    };
    let mut ctor = Constructor::default();
    ctor.construct(&root).map(Some).map_err(|message| {
        if ctor.too_large {
            LoadError::TooLarge(message)
        } else {
            LoadError::Invalid(message)
        }
    })
}

/// PyYAML's `Reader` refuses these characters anywhere in the stream.
fn check_printable(text: &str) -> Result<(), String> {
    for (i, c) in text.char_indices() {
        let n = c as u32;
        let ok = matches!(n, 0x09 | 0x0a | 0x0d | 0x85)
            || (0x20..=0x7e).contains(&n)
            || (0xa0..=0xd7ff).contains(&n)
            || (0xe000..=0xfffd).contains(&n)
            || n >= 0x10000;
        if !ok {
            return Err(format!(
                "unacceptable character #x{n:04x}: special characters are not allowed (byte offset {i})"
            ));
        }
    }
    Ok(())
}

/// A collection being composed; `height` is the greatest height of its children so far.
enum Frame {
    Seq {
        tag: String,
        anchor: usize,
        items: Vec<Rc<Node>>,
        height: usize,
    },
    Map {
        tag: String,
        anchor: usize,
        pairs: Vec<(Rc<Node>, Rc<Node>)>,
        key: Option<Rc<Node>>,
        height: usize,
    },
}

fn full_tag(tag: &Option<Tag>) -> Option<String> {
    tag.as_ref().map(|t| format!("{}{}", t.handle, t.suffix))
}

/// Events → one node tree (PyYAML `Composer.get_single_node`).
///
/// Every node's height (collections nested in it, counted through aliases) is kept at most
/// [`MAX_DEPTH`]: a chain of aliases, each one nested a few hundred levels inside the next
/// anchor, is a tree a few kilobytes of text make hundreds of thousands of levels deep, which
/// no recursive walk (not even dropping it) survives. The nesting written out in the text is
/// refused by the same rule as PyYAML refuses it (`Invalid`); deeper through aliases is ours
/// (`TooLarge`).
fn compose(text: &str) -> Result<Option<Rc<Node>>, LoadError> {
    let invalid = LoadError::Invalid;
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Rc<Node>, usize)> = HashMap::new();
    let mut root: Option<Rc<Node>> = None;
    let mut documents = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| invalid(e.to_string()))?;
        let done: Option<(Rc<Node>, usize, usize)> = match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(invalid(format!(
                        "expected a single document in the stream, but found another document (line {})",
                        mark.line()
                    )));
                }
                anchors.clear();
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some((node, height)) => Some((Rc::clone(node), 0, *height)),
                None => {
                    return Err(invalid(format!(
                        "found a recursive or undefined alias (line {})",
                        mark.line()
                    )))
                }
            },
            Event::Scalar(value, style, anchor, tag) => {
                let explicit = full_tag(&tag);
                let tag = match explicit.as_deref() {
                    None if style == TScalarStyle::Plain => resolve_plain(&value).to_string(),
                    None => format!("{TAG_PREFIX}str"),
                    Some("!") => resolve_plain(&value).to_string(),
                    Some(t) => t.to_string(),
                };
                Some((Rc::new(Node::Scalar { tag, value }), anchor, 0))
            }
            Event::SequenceStart(anchor, tag) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(invalid(format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                let tag = match full_tag(&tag).as_deref() {
                    None | Some("!") => format!("{TAG_PREFIX}seq"),
                    Some(t) => t.to_string(),
                };
                stack.push(Frame::Seq {
                    tag,
                    anchor,
                    items: Vec::new(),
                    height: 0,
                });
                None
            }
            Event::MappingStart(anchor, tag) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(invalid(format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                let tag = match full_tag(&tag).as_deref() {
                    None | Some("!") => format!("{TAG_PREFIX}map"),
                    Some(t) => t.to_string(),
                };
                stack.push(Frame::Map {
                    tag,
                    anchor,
                    pairs: Vec::new(),
                    key: None,
                    height: 0,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    tag,
                    anchor,
                    items,
                    height,
                }) => Some((Rc::new(Node::Seq { tag, items }), anchor, height + 1)),
                _ => return Err(invalid("unbalanced sequence end".into())),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    tag,
                    anchor,
                    pairs,
                    height,
                    ..
                }) => Some((
                    Rc::new(Node::Map {
                        tag,
                        pairs: RefCell::new(pairs),
                    }),
                    anchor,
                    height + 1,
                )),
                _ => return Err(invalid("unbalanced mapping end".into())),
            },
        };
        let Some((node, anchor, height)) = done else {
            continue;
        };
        if height > MAX_DEPTH {
            return Err(LoadError::TooLarge(format!(
                "aliases nest collections deeper than {MAX_DEPTH} levels (line {})",
                mark.line()
            )));
        }
        if anchor != 0 {
            anchors.insert(anchor, (Rc::clone(&node), height));
        }
        if let Some(Frame::Seq { height: most, .. } | Frame::Map { height: most, .. }) =
            stack.last_mut()
        {
            *most = (*most).max(height);
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { pairs, key, .. }) => match key.take() {
                None => {
                    if let Node::Scalar { value, .. } = node.as_ref() {
                        // PyYAML's scanner gives up on a longer implicit key; an explicit
                        // `? key` (rare) is held to the same length here.
                        if value.chars().count() > MAX_SIMPLE_KEY_CHARS {
                            return Err(invalid(format!(
                                "while scanning a simple key (line {}): a mapping key longer \
                                 than {MAX_SIMPLE_KEY_CHARS} characters; could not find expected ':'",
                                mark.line()
                            )));
                        }
                    }
                    *key = Some(node)
                }
                Some(k) => pairs.push((k, node)),
            },
        }
    }
    Ok(root)
}

/// PyYAML's implicit resolvers, in registration order.
fn resolve_plain(value: &str) -> &'static str {
    if is_yaml11_bool(value) {
        "tag:yaml.org,2002:bool"
    } else if is_yaml11_float(value) {
        "tag:yaml.org,2002:float"
    } else if is_yaml11_int(value) {
        "tag:yaml.org,2002:int"
    } else if value == "<<" {
        "tag:yaml.org,2002:merge"
    } else if matches!(value, "" | "~" | "null" | "Null" | "NULL") {
        "tag:yaml.org,2002:null"
    } else if parse_timestamp(value).is_some_and(|t| t.resolvable) {
        "tag:yaml.org,2002:timestamp"
    } else if value == "=" {
        "tag:yaml.org,2002:value"
    } else {
        "tag:yaml.org,2002:str"
    }
}

fn is_yaml11_bool(v: &str) -> bool {
    matches!(
        v,
        "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// A tiny cursor for hand-written versions of PyYAML's regular expressions.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Self {
        Cur {
            b: s.as_bytes(),
            i: 0,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_if(&mut self, f: impl Fn(u8) -> bool) -> bool {
        match self.peek() {
            Some(c) if f(c) => {
                self.i += 1;
                true
            }
            _ => false,
        }
    }
    /// Consume `f*`; returns how many.
    fn eat_while(&mut self, f: impl Fn(u8) -> bool) -> usize {
        let start = self.i;
        while self.eat_if(&f) {}
        self.i - start
    }
    fn sign(&mut self) {
        let _ = self.eat(b'+') || self.eat(b'-');
    }
    fn at_end(&self) -> bool {
        self.i == self.b.len()
    }
    fn rest_is(&self, s: &str) -> bool {
        &self.b[self.i..] == s.as_bytes()
    }
    /// `(?::[0-5]?[0-9])+` — at least one group.
    fn sexagesimal_groups(&mut self) -> bool {
        let mut n = 0;
        loop {
            let save = self.i;
            if !self.eat(b':') {
                break;
            }
            let d1 = self.eat_if(|c| c.is_ascii_digit());
            if !d1 {
                self.i = save;
                break;
            }
            // `[0-5]?[0-9]`: one digit, or two with the first in 0-5.
            let first = self.b[self.i - 1];
            if first <= b'5' {
                let _ = self.eat_if(|c| c.is_ascii_digit());
            }
            n += 1;
        }
        n > 0
    }
}

fn is_digit_or_us(c: u8) -> bool {
    c.is_ascii_digit() || c == b'_'
}

/// `(?:[eE][-+][0-9]+)?` then end.
fn exponent_then_end(c: &mut Cur) -> bool {
    if c.eat(b'e') || c.eat(b'E') {
        if !(c.eat(b'-') || c.eat(b'+')) {
            return false;
        }
        if c.eat_while(|d| d.is_ascii_digit()) == 0 {
            return false;
        }
    }
    c.at_end()
}

fn is_yaml11_float(v: &str) -> bool {
    // 1: [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    let alt1 = || {
        let mut c = Cur::new(v);
        c.sign();
        if !c.eat_if(|d| d.is_ascii_digit()) {
            return false;
        }
        c.eat_while(is_digit_or_us);
        if !c.eat(b'.') {
            return false;
        }
        c.eat_while(is_digit_or_us);
        exponent_then_end(&mut c)
    };
    // 2: \.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    let alt2 = || {
        let mut c = Cur::new(v);
        if !c.eat(b'.') || !c.eat_if(|d| d.is_ascii_digit()) {
            return false;
        }
        c.eat_while(is_digit_or_us);
        exponent_then_end(&mut c)
    };
    // 3: [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    let alt3 = || {
        let mut c = Cur::new(v);
        c.sign();
        if !c.eat_if(|d| d.is_ascii_digit()) {
            return false;
        }
        c.eat_while(is_digit_or_us);
        if !c.sexagesimal_groups() || !c.eat(b'.') {
            return false;
        }
        c.eat_while(is_digit_or_us);
        c.at_end()
    };
    // 4: [-+]?\.(?:inf|Inf|INF)   5: \.(?:nan|NaN|NAN)
    let alt4 = || {
        let mut c = Cur::new(v);
        c.sign();
        c.eat(b'.') && (c.rest_is("inf") || c.rest_is("Inf") || c.rest_is("INF"))
    };
    let alt5 = || matches!(v, ".nan" | ".NaN" | ".NAN");
    alt1() || alt2() || alt3() || alt4() || alt5()
}

fn is_yaml11_int(v: &str) -> bool {
    let prefixed = |p: u8, digit: fn(u8) -> bool| {
        let mut c = Cur::new(v);
        c.sign();
        c.eat(b'0') && c.eat(p) && c.eat_while(digit) > 0 && c.at_end()
    };
    // [-+]?0b[0-1_]+
    let bin = prefixed(b'b', |d| matches!(d, b'0' | b'1' | b'_'));
    // [-+]?0x[0-9a-fA-F_]+
    let hex = prefixed(b'x', |d| d.is_ascii_hexdigit() || d == b'_');
    // [-+]?0[0-7_]+
    let oct = {
        let mut c = Cur::new(v);
        c.sign();
        c.eat(b'0') && c.eat_while(|d| matches!(d, b'0'..=b'7' | b'_')) > 0 && c.at_end()
    };
    // [-+]?(?:0|[1-9][0-9_]*)
    let dec = {
        let mut c = Cur::new(v);
        c.sign();
        if c.eat(b'0') {
            c.at_end()
        } else if c.eat_if(|d| matches!(d, b'1'..=b'9')) {
            c.eat_while(is_digit_or_us);
            c.at_end()
        } else {
            false
        }
    };
    // [-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
    let sexa = {
        let mut c = Cur::new(v);
        c.sign();
        c.eat_if(|d| matches!(d, b'1'..=b'9')) && {
            c.eat_while(is_digit_or_us);
            c.sexagesimal_groups() && c.at_end()
        }
    };
    bin || hex || oct || dec || sexa
}

struct Timestamp {
    date: Date,
    time: Option<(u32, u32, u32, u32, Option<i32>)>,
    /// Matches the resolver (date-only needs `YYYY-MM-DD` exactly).
    resolvable: bool,
}

/// PyYAML's `timestamp_regexp` (constructor), plus whether the implicit resolver matches.
/// Range checks (month 1..12, …) are done by [`make_timestamp`].
fn parse_timestamp(v: &str) -> Option<Timestamp> {
    let mut c = Cur::new(v);
    let digits = |c: &mut Cur, min: usize, max: usize| -> Option<u32> {
        let start = c.i;
        while c.i - start < max && c.eat_if(|d| d.is_ascii_digit()) {}
        let n = c.i - start;
        if n < min {
            return None;
        }
        std::str::from_utf8(&c.b[start..c.i]).ok()?.parse().ok()
    };
    let year = digits(&mut c, 4, 4)?;
    if !c.eat(b'-') {
        return None;
    }
    let m_start = c.i;
    let month = digits(&mut c, 1, 2)?;
    let m_len = c.i - m_start;
    if !c.eat(b'-') {
        return None;
    }
    let d_start = c.i;
    let day = digits(&mut c, 1, 2)?;
    let d_len = c.i - d_start;
    let date = Date { year, month, day };
    if c.at_end() {
        return Some(Timestamp {
            date,
            time: None,
            resolvable: m_len == 2 && d_len == 2,
        });
    }
    // (?:[Tt]|[ \t]+)
    if !(c.eat(b'T') || c.eat(b't')) && c.eat_while(|d| d == b' ' || d == b'\t') == 0 {
        return None;
    }
    let hour = digits(&mut c, 1, 2)?;
    if !c.eat(b':') {
        return None;
    }
    let minute = digits(&mut c, 2, 2)?;
    if !c.eat(b':') {
        return None;
    }
    let second = digits(&mut c, 2, 2)?;
    let mut micros = 0;
    if c.eat(b'.') {
        let start = c.i;
        c.eat_while(|d| d.is_ascii_digit());
        let frac = std::str::from_utf8(&c.b[start..c.i]).ok()?;
        if !frac.is_empty() {
            let mut f: String = frac.chars().take(6).collect();
            while f.len() < 6 {
                f.push('0');
            }
            micros = f.parse().ok()?;
        }
    }
    c.eat_while(|d| d == b' ' || d == b'\t');
    let mut offset = None;
    if c.eat(b'Z') {
        offset = Some(0);
    } else if matches!(c.peek(), Some(b'+' | b'-')) {
        let negative = c.peek() == Some(b'-');
        c.i += 1;
        let h = digits(&mut c, 1, 2)? as i32;
        let m = if c.eat(b':') {
            digits(&mut c, 2, 2)? as i32
        } else {
            0
        };
        let total = h * 60 + m;
        offset = Some(if negative { -total } else { total });
    }
    if !c.at_end() {
        return None;
    }
    Some(Timestamp {
        date,
        time: Some((hour, minute, second, micros, offset)),
        resolvable: true,
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        _ => 28,
    }
}

/// `datetime.date(...)` / `datetime.datetime(...)` with Python's range checks.
fn make_timestamp(value: &str) -> Result<Py, String> {
    let ts = parse_timestamp(value)
        .ok_or_else(|| format!("invalid timestamp {}", crate::python::repr_str(value)))?;
    let d = ts.date;
    if d.year < 1 {
        return Err(format!("year {} is out of range", d.year));
    }
    if !(1..=12).contains(&d.month) {
        return Err("month must be in 1..12".into());
    }
    if d.day < 1 || d.day > days_in_month(d.year, d.month) {
        return Err("day is out of range for month".into());
    }
    let Some((hour, minute, second, micros, offset)) = ts.time else {
        return Ok(Py::Date(d));
    };
    if hour > 23 {
        return Err("hour must be in 0..23".into());
    }
    if minute > 59 {
        return Err("minute must be in 0..59".into());
    }
    if second > 59 {
        return Err("second must be in 0..59".into());
    }
    if let Some(off) = offset {
        if off.abs() >= 24 * 60 {
            return Err("offset must be a timedelta strictly between -timedelta(hours=24) and timedelta(hours=24)".into());
        }
    }
    Ok(Py::DateTime(DateTime {
        date: d,
        hour,
        minute,
        second,
        micros,
        offset_minutes: offset,
    }))
}

/// Python `int(s, base)` (whitespace, sign, `0b`/`0o`/`0x` prefix matching the base,
/// `_` between digits). Overflow beyond `i128` gives an approximated [`Py::HugeInt`].
fn py_int(s: &str, base: u32) -> Result<Py, String> {
    let err = || {
        format!(
            "invalid literal for int() with base {base}: {}",
            crate::python::repr_str(s)
        )
    };
    let t = s.trim_matches(is_py_space);
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let prefix = match base {
        2 => Some("0b"),
        8 => Some("0o"),
        16 => Some("0x"),
        _ => None,
    };
    let (body, had_prefix) = match prefix.and_then(|p| lower.strip_prefix(p)) {
        Some(rest) => (rest.to_string(), true),
        None => (lower.clone(), false),
    };
    let body = if had_prefix {
        body.strip_prefix('_').map(str::to_string).unwrap_or(body)
    } else {
        body
    };
    let digits = crate::python::strip_digit_underscores(&body)
        .filter(|d| !d.is_empty())
        .ok_or_else(err)?;
    if base == 10
        && digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().any(|b| b != b'0')
    {
        return Err(err());
    }
    let mut exact: Option<i128> = Some(0);
    let mut approx = 0f64;
    for ch in digits.chars() {
        let d = ch.to_digit(base).ok_or_else(err)?;
        exact = exact
            .and_then(|v| v.checked_mul(i128::from(base)))
            .and_then(|v| v.checked_add(i128::from(d)));
        approx = approx * f64::from(base) + f64::from(d);
    }
    Ok(match exact {
        Some(v) => Py::Int(if negative { -v } else { v }),
        None => Py::HugeInt(if negative { -approx } else { approx }),
    })
}

fn negate(p: Py, negative: bool) -> Py {
    if !negative {
        return p;
    }
    match p {
        Py::Int(i) => Py::Int(-i),
        Py::HugeInt(f) => Py::HugeInt(-f),
        other => other,
    }
}

/// `SafeConstructor.construct_yaml_int`.
fn construct_int(value: &str) -> Result<Py, String> {
    let v: String = value.replace('_', "");
    let negative = v.starts_with('-');
    let v = v.strip_prefix(['+', '-']).unwrap_or(&v);
    if v.is_empty() {
        return Err("string index out of range".into());
    }
    if v == "0" {
        return Ok(Py::Int(0));
    }
    if let Some(rest) = v.strip_prefix("0b") {
        return py_int(rest, 2).map(|p| negate(p, negative));
    }
    if let Some(rest) = v.strip_prefix("0x") {
        return py_int(rest, 16).map(|p| negate(p, negative));
    }
    if v.starts_with('0') {
        return py_int(v, 8).map(|p| negate(p, negative));
    }
    if v.contains(':') {
        let mut total: i128 = 0;
        for part in v.split(':') {
            let Py::Int(d) = py_int(part, 10)? else {
                return Err("sexagesimal part too large".into());
            };
            total = total
                .checked_mul(60)
                .and_then(|t| t.checked_add(d))
                .ok_or("sexagesimal value too large")?;
        }
        return Ok(Py::Int(if negative { -total } else { total }));
    }
    py_int(v, 10).map(|p| negate(p, negative))
}

/// `SafeConstructor.construct_yaml_float`.
fn construct_float(value: &str) -> Result<Py, String> {
    let v = value.replace('_', "").to_lowercase();
    let negative = v.starts_with('-');
    let sign = if negative { -1.0 } else { 1.0 };
    let v = v.strip_prefix(['+', '-']).unwrap_or(&v);
    if v.is_empty() {
        return Err("string index out of range".into());
    }
    if v == ".inf" {
        return Ok(Py::Float(sign * f64::INFINITY));
    }
    if v == ".nan" {
        return Ok(Py::Float(f64::NAN));
    }
    if v.contains(':') {
        let mut total = 0.0;
        for part in v.split(':') {
            total = total * 60.0 + float_of_str(part)?;
        }
        return Ok(Py::Float(sign * total));
    }
    Ok(Py::Float(sign * float_of_str(v)?))
}

fn construct_binary(value: &str) -> Result<Py, String> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let cleaned: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/'))
        .collect();
    LENIENT
        .decode(cleaned)
        .map(Py::Bytes)
        .map_err(|e| format!("failed to decode base64 data: {e}"))
}

#[derive(Default)]
struct Constructor {
    memo: HashMap<*const Node, Rc<Py>>,
    /// Pairs copied by merge keys so far, counted as PyYAML copies them (with duplicates; see
    /// [`MAX_MERGED_PAIRS`]).
    merged: usize,
    /// Flattened mappings: how many pairs PyYAML's flattening leaves in each (merged ones
    /// with their duplicates), which is what a merge of it copies.
    expanded: HashMap<*const Node, usize>,
    /// The error being returned is a budget running out.
    too_large: bool,
}

impl Constructor {
    fn construct(&mut self, node: &Rc<Node>) -> Result<Rc<Py>, String> {
        let key = Rc::as_ptr(node);
        if let Some(done) = self.memo.get(&key) {
            return Ok(Rc::clone(done));
        }
        let value = Rc::new(self.construct_new(node)?);
        self.memo.insert(key, Rc::clone(&value));
        Ok(value)
    }

    fn construct_new(&mut self, node: &Rc<Node>) -> Result<Py, String> {
        let tag = node.tag();
        let short = tag.strip_prefix(TAG_PREFIX);
        match (node.as_ref(), short) {
            (Node::Scalar { value, .. }, Some(kind)) => match kind {
                "null" => Ok(Py::None),
                "bool" => match value.to_lowercase().as_str() {
                    "yes" | "true" | "on" => Ok(Py::Bool(true)),
                    "no" | "false" | "off" => Ok(Py::Bool(false)),
                    _ => Err(format!(
                        "invalid boolean {}",
                        crate::python::repr_str(value)
                    )),
                },
                "int" => construct_int(value),
                "float" => construct_float(value),
                "binary" => construct_binary(value),
                "timestamp" => make_timestamp(value),
                "str" => Ok(Py::Str(value.clone())),
                _ => Err(undefined(tag)),
            },
            (Node::Seq { items, .. }, Some("seq")) => Ok(Py::List(
                items
                    .iter()
                    .map(|n| self.construct(n))
                    .collect::<Result<_, _>>()?,
            )),
            (Node::Seq { items, .. }, Some("omap" | "pairs")) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let Node::Map { pairs, .. } = item.as_ref() else {
                        return Err(format!(
                            "while constructing {tag}: expected a mapping of length 1"
                        ));
                    };
                    let pairs = pairs.borrow().clone();
                    if pairs.len() != 1 {
                        return Err(format!(
                            "while constructing {tag}: expected a single mapping item, but found {} items",
                            pairs.len()
                        ));
                    }
                    let (k, v) = &pairs[0];
                    out.push(Rc::new(Py::Tuple(vec![
                        self.construct(k)?,
                        self.construct(v)?,
                    ])));
                }
                Ok(Py::List(out))
            }
            (Node::Map { .. }, Some("map")) => Ok(Py::Dict(self.construct_mapping(node)?)),
            (Node::Map { .. }, Some("set")) => {
                let pairs = self.construct_mapping(node)?;
                Ok(Py::Set(pairs.into_iter().map(|(k, _)| k).collect()))
            }
            (
                Node::Seq { .. } | Node::Map { .. },
                Some("null" | "bool" | "int" | "float" | "binary" | "timestamp" | "str"),
            ) => Err(format!(
                "expected a scalar node for {tag}, but found a collection"
            )),
            (Node::Seq { .. }, Some("map" | "set")) => Err(format!(
                "expected a mapping node for {tag}, but found a sequence"
            )),
            (Node::Map { .. }, Some("seq" | "omap" | "pairs")) => Err(format!(
                "expected a sequence node for {tag}, but found a mapping"
            )),
            _ => Err(undefined(tag)),
        }
    }

    /// `SafeConstructor.construct_mapping`: merge keys, hashable keys, last value wins (found
    /// through a hash of the key, so a mapping of n keys costs O(n), not O(n²)).
    fn construct_mapping(&mut self, node: &Rc<Node>) -> Result<PyPairs, String> {
        self.flatten_mapping(node, 0)?;
        let Node::Map { pairs, .. } = node.as_ref() else {
            return Err("expected a mapping node".into());
        };
        let pairs = pairs.borrow().clone();
        let mut out: PyPairs = Vec::with_capacity(pairs.len());
        let mut slots: HashMap<u64, Vec<usize>> = HashMap::with_capacity(pairs.len());
        for (k, v) in &pairs {
            let key = self.construct(k)?;
            if !key.is_hashable() {
                return Err("while constructing a mapping: found unhashable key".into());
            }
            let value = self.construct(v)?;
            let same_hash = slots.entry(key_hash(&key)).or_default();
            match same_hash.iter().find(|&&i| out[i].0.key_eq(&key)) {
                Some(&i) => out[i].1 = value,
                None => {
                    same_hash.push(out.len());
                    out.push((key, value));
                }
            }
        }
        Ok(out)
    }

    /// `SafeConstructor.flatten_mapping`: expand `<<` merge keys in place (merged pairs first, so
    /// explicit keys override them; earlier mappings of a merge list override later ones) and turn
    /// `=` keys into strings.
    ///
    /// Every pair PyYAML would copy (a merged mapping's pairs, duplicates included) counts
    /// against [`MAX_MERGED_PAIRS`], so a kilobyte of nested merges that would multiply into
    /// billions of pairs is refused as the billion-laughs of aliases is, and the Python runner
    /// never sees a document it would choke on. What stays is reduced to one pair per key (the
    /// first position, the last value: what the dict ends up with).
    fn flatten_mapping(&mut self, node: &Rc<Node>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("merge keys nest too deeply".into());
        }
        let Node::Map { pairs, .. } = node.as_ref() else {
            return Ok(());
        };
        let current = pairs.borrow().clone();
        let merge_tag = format!("{TAG_PREFIX}merge");
        let value_tag = format!("{TAG_PREFIX}value");
        let mut merge: Vec<(Rc<Node>, Rc<Node>)> = Vec::new();
        let mut kept: Vec<(Rc<Node>, Rc<Node>)> = Vec::with_capacity(current.len());
        // Pairs PyYAML copies into this mapping (it keeps the duplicates).
        let mut copies = 0usize;
        let had_merges = self.expanded.contains_key(&Rc::as_ptr(node));
        for (k, v) in current {
            if k.tag() == merge_tag {
                match v.as_ref() {
                    Node::Map { pairs: sub, .. } => {
                        self.flatten_mapping(&v, depth + 1)?;
                        copies += self.copy(&v)?;
                        merge.extend(sub.borrow().iter().cloned());
                    }
                    Node::Seq { items, .. } => {
                        let mut submerge = Vec::new();
                        for sub in items {
                            let Node::Map { pairs: subpairs, .. } = sub.as_ref() else {
                                return Err("while constructing a mapping: expected a mapping for merging".into());
                            };
                            self.flatten_mapping(sub, depth + 1)?;
                            copies += self.copy(sub)?;
                            submerge.push(subpairs.borrow().clone());
                        }
                        for group in submerge.into_iter().rev() {
                            merge.extend(group);
                        }
                    }
                    Node::Scalar { .. } => {
                        return Err("while constructing a mapping: expected a mapping or list of mappings for merging".into())
                    }
                }
            } else if k.tag() == value_tag {
                let Node::Scalar { value, .. } = k.as_ref() else {
                    unreachable!("only scalars resolve to the value tag")
                };
                let key = Rc::new(Node::Scalar {
                    tag: format!("{TAG_PREFIX}str"),
                    value: value.clone(),
                });
                kept.push((key, v));
            } else {
                kept.push((k, v));
            }
        }
        if !had_merges {
            self.expanded.insert(Rc::as_ptr(node), copies + kept.len());
        }
        if !merge.is_empty() {
            let mut merge = self.one_pair_per_key(merge)?;
            merge.extend(kept);
            kept = merge;
        }
        *pairs.borrow_mut() = kept;
        Ok(())
    }

    /// Count the pairs PyYAML would copy from the flattened mapping `sub` (its own pairs and,
    /// with duplicates, everything merged into it) against [`MAX_MERGED_PAIRS`].
    fn copy(&mut self, sub: &Rc<Node>) -> Result<usize, String> {
        let n = match self.expanded.get(&Rc::as_ptr(sub)) {
            Some(&n) => n,
            None => match sub.as_ref() {
                Node::Map { pairs, .. } => pairs.borrow().len(),
                _ => 0,
            },
        };
        self.merged = self.merged.saturating_add(n);
        if self.merged > MAX_MERGED_PAIRS {
            self.too_large = true;
            return Err(format!(
                "merge keys (<<) copy more than {MAX_MERGED_PAIRS} key/value pairs"
            ));
        }
        Ok(n)
    }

    /// `pairs` with one pair per key (Python dict equality of the constructed keys): at the
    /// position of the key's first pair, with its last pair's value.
    fn one_pair_per_key(&mut self, pairs: NodePairs) -> Result<NodePairs, String> {
        let mut out: NodePairs = Vec::with_capacity(pairs.len());
        let mut keys: Vec<Rc<Py>> = Vec::with_capacity(pairs.len());
        let mut slots: HashMap<u64, Vec<usize>> = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            let key = self.construct(&k)?;
            if !key.is_hashable() {
                return Err("while constructing a mapping: found unhashable key".into());
            }
            let same_hash = slots.entry(key_hash(&key)).or_default();
            match same_hash.iter().find(|&&i| keys[i].key_eq(&key)) {
                Some(&i) => out[i].1 = v,
                None => {
                    same_hash.push(out.len());
                    keys.push(key);
                    out.push((k, v));
                }
            }
        }
        Ok(out)
    }
}

/// A hash consistent with [`Py::key_eq`]: equal keys (`1`, `1.0`, `true`) hash alike.
fn key_hash(key: &Py) -> u64 {
    use std::hash::{Hash, Hasher};
    fn feed(key: &Py, h: &mut std::collections::hash_map::DefaultHasher) {
        if let Some(number) = key.numeric() {
            0u8.hash(h);
            // -0.0 == 0.0. Every NaN is unequal to everything, so any hash will do, but one
            // for all would put a mapping's `.nan` keys in one slot, searched from end to end
            // for each new key (a 256 KiB document of them took seconds): its address.
            if number.is_nan() {
                std::ptr::from_ref(key).hash(h);
                return;
            }
            let number = if number == 0.0 { 0.0 } else { number };
            number.to_bits().hash(h);
            return;
        }
        match key {
            Py::None => 1u8.hash(h),
            Py::Str(s) => (2u8, s).hash(h),
            Py::Bytes(b) => (3u8, b).hash(h),
            Py::Date(d) => (4u8, d.year, d.month, d.day).hash(h),
            Py::DateTime(t) => (
                5u8,
                t.date.year,
                t.date.month,
                t.date.day,
                t.hour,
                t.minute,
                t.second,
                t.micros,
                t.offset_minutes,
            )
                .hash(h),
            Py::Tuple(items) => {
                (6u8, items.len()).hash(h);
                for item in items {
                    feed(item, h);
                }
            }
            _ => 7u8.hash(h),
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    feed(key, &mut h);
    h.finish()
}

fn undefined(tag: &str) -> String {
    format!(
        "could not determine a constructor for the tag {}",
        crate::python::repr_str(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Rc<Py>, String> {
        safe_load(text)
            .map(|v| v.expect("a document"))
            .map_err(|err| match err {
                LoadError::Invalid(m) | LoadError::TooLarge(m) => m,
            })
    }

    fn scalar(text: &str) -> String {
        match load(text) {
            Ok(v) => v.repr(),
            Err(_) => "ERR".into(),
        }
    }

    #[test]
    fn plain_scalars_resolve_like_pyyaml() {
        // Expected values from PyYAML 6.0.3 `yaml.safe_load`.
        let cases = [
            ("-.5", "'-.5'"),
            ("+.5", "'+.5'"),
            ("1.", "1.0"),
            ("1.e+3", "1000.0"),
            ("1e3", "'1e3'"),
            ("1.0e3", "'1.0e3'"),
            ("0b_", "ERR"),
            ("0o17", "'0o17'"),
            ("!!int 0o17", "15"),
            ("010", "8"),
            ("0x1F", "31"),
            ("1:30", "90"),
            ("1:30.5", "90.5"),
            ("190:20:30", "685230"),
            (".inf", "inf"),
            ("-.inf", "-inf"),
            (".NaN", "nan"),
            ("y", "'y'"),
            ("Yes", "True"),
            ("ON", "True"),
            ("off", "False"),
            ("~", "None"),
            ("null", "None"),
            ("2024-01-01", "datetime.date(2024, 1, 1)"),
            ("2024-1-1", "'2024-1-1'"),
            ("!!timestamp 2024-1-1", "datetime.date(2024, 1, 1)"),
            ("2024-02-30", "ERR"),
            ("=", "ERR"),
            ("! 123", "123"),
            ("! \"123\"", "123"),
            ("'123'", "'123'"),
            ("1_000", "1000"),
            ("+0", "0"),
            ("-0", "0"),
            ("00", "0"),
            ("0_", "0"),
            ("08", "'08'"),
            ("12e3", "'12e3'"),
            ("0.", "0.0"),
            ("!!float 1", "1.0"),
            ("!!int \" 12\"", "12"),
            ("!!int abc", "ERR"),
            ("!!bool maybe", "ERR"),
            ("!!python/tuple [1]", "ERR"),
            ("!custom x", "ERR"),
            ("\"\\/\"", "'/'"),
            ("-12", "-12"),
            ("123456789012345678901234567890123456789012", "1e41"),
        ];
        for (text, want) in cases {
            let got = scalar(text);
            if want == "1e41" {
                assert!(matches!(*load(text).unwrap(), Py::HugeInt(_)), "{text}");
                continue;
            }
            assert_eq!(got, want, "yaml {text:?}");
        }
    }

    #[test]
    fn timestamps_convert_to_python_isoformat() {
        let iso = |text: &str| match &*load(text).unwrap() {
            Py::DateTime(dt) => dt.isoformat(),
            Py::Date(d) => d.isoformat(),
            other => panic!("{other:?}"),
        };
        assert_eq!(iso("2024-01-01"), "2024-01-01");
        assert_eq!(iso("2024-01-01 12:00:00"), "2024-01-01T12:00:00");
        assert_eq!(
            iso("2024-01-01t12:00:00.5Z"),
            "2024-01-01T12:00:00.500000+00:00"
        );
        assert_eq!(
            iso("2001-12-14 21:59:43.10 -5"),
            "2001-12-14T21:59:43.100000-05:00"
        );
        assert_eq!(
            iso("2001-12-14T21:59:43+05:30"),
            "2001-12-14T21:59:43+05:30"
        );
        assert!(load("2024-01-01 24:00:00").is_err());
    }

    #[test]
    fn mappings_follow_python_dict_rules() {
        // Duplicate keys: last value wins, first position kept; 1 == 1.0 == True.
        assert_eq!(
            load("{a: 1, b: 2, a: 3}").unwrap().repr(),
            "{'a': 3, 'b': 2}"
        );
        assert_eq!(load("{1: a, 1.0: b, true: c}").unwrap().repr(), "{1: 'c'}");
        assert!(load("? [1, 2]\n: x\n").is_err(), "unhashable key");
        assert!(load("a: 1\n---\nb: 2\n").is_err(), "two documents");
        assert!(safe_load("").unwrap().is_none());
        assert!(safe_load("# only a comment\n").unwrap().is_none());
        assert_eq!(load("---\n").unwrap().repr(), "None");
        assert!(load("a: \"\u{7}\"").is_err(), "non-printable character");
        assert_eq!(load("\u{feff}a: 1").unwrap().repr(), "{'a': 1}");
    }

    #[test]
    fn merge_keys_expand_like_pyyaml() {
        let text = "base: &b {x: 1, y: 2}\nother: &o {y: 9, z: 3}\nm:\n  <<: [*b, *o]\n  y: 5\n";
        let v = load(text).unwrap();
        assert_eq!(v.get("m").unwrap().repr(), "{'y': 5, 'z': 3, 'x': 1}");
        let single = load("a: &a {k: 1}\nb:\n  <<: *a\n  j: 2\n").unwrap();
        assert_eq!(single.get("b").unwrap().repr(), "{'k': 1, 'j': 2}");
        assert!(load("a:\n  <<: 5\n").is_err());
        assert_eq!(load("\"<<\": 1").unwrap().repr(), "{'<<': 1}");
    }

    #[test]
    fn aliases_share_values_and_recursion_is_rejected() {
        let v = load("a: &x [1, 2]\nb: *x\n").unwrap();
        assert_eq!(v.repr(), "{'a': [1, 2], 'b': [1, 2]}");
        assert!(load("a: &x [1, *x]\n").is_err());
    }

    #[test]
    fn collections_tags_and_depth() {
        assert_eq!(
            load("!!omap [a: 1, b: 2]").unwrap().repr(),
            "[('a', 1), ('b', 2)]"
        );
        assert_eq!(load("!!set {a, b}").unwrap().repr(), "{'a', 'b'}");
        assert!(load("!!map [1]").is_err());
        assert_eq!(load("!!binary aGk=").unwrap().repr(), "b'hi'");
        let block = |levels: usize| -> String {
            (0..levels)
                .map(|i| format!("{}a:\n", "  ".repeat(i)))
                .collect()
        };
        assert!(load(&block(MAX_DEPTH)).is_ok());
        assert!(load(&block(MAX_DEPTH + 1)).is_err());
        // yaml-rust2 caps flow-style nesting at 255 levels.
        let flow = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(load(&flow(250)).is_ok());
        assert!(load(&flow(300)).is_err());
    }

    /// Inputs (written with the escapes `\n`, `\t`, `\\`) and the `repr()` of what
    /// PyYAML 6.0.3's `yaml.safe_load` returns for them (`ERR` = it raised).
    const PYYAML_PARITY: &[(&str, &str)] = &[
        (r#"%YAML 1.1\n---\na: yes\n"#, r#"{'a': True}"#),
        (r#"a: 1\n...\n"#, r#"{'a': 1}"#),
        (r#"a: &x 5\nb: *x\n"#, r#"{'a': 5, 'b': 5}"#),
        (r#"? a\n: b\n"#, r#"{'a': 'b'}"#),
        (
            r#"a:\n  - 1\n  - [2, {b: c}]\n"#,
            r#"{'a': [1, [2, {'b': 'c'}]]}"#,
        ),
        (r#"a: "x\\ty"\n"#, r#"{'a': 'x\ty'}"#),
        (r#"a: 'it''s'\n"#, r#"{'a': "it's"}"#),
        (r#"a: |\n  line1\n  line2\n"#, r#"{'a': 'line1\nline2\n'}"#),
        (r#"a: >\n  folded\n  text\n"#, r#"{'a': 'folded text\n'}"#),
        (r#"a: !!str 2024-01-01\n"#, r#"{'a': '2024-01-01'}"#),
        (
            r#"a: [yes, No, ON, off, y, n]\n"#,
            r#"{'a': [True, False, True, False, 'y', 'n']}"#,
        ),
        (
            r#"a: {0o10: 1, 0b101: 2, 0xff: 3, 1_000: 4}\n"#,
            r#"{'a': {'0o10': 1, 5: 2, 255: 3, 1000: 4}}"#,
        ),
        (r#"a: -0b11\n"#, r#"{'a': -3}"#),
        (r#"a: +0x_1\n"#, r#"{'a': 1}"#),
        (r#"a: 1:2:3\n"#, r#"{'a': 3723}"#),
        (r#"a: -1:30\n"#, r#"{'a': -90}"#),
        (r#"a: 1.5_0\n"#, r#"{'a': 1.5}"#),
        (r#"a: 6.8523015e+5\n"#, r#"{'a': 685230.15}"#),
        (r#"a: 685.230_15e+03\n"#, r#"{'a': 685230.15}"#),
        (r#"a: 190:20:30.15\n"#, r#"{'a': 685230.15}"#),
        (r#"a: .5\n"#, r#"{'a': 0.5}"#),
        (r#"a: 1__2\n"#, r#"{'a': 12}"#),
        (
            r#"a: 2002-12-14\n"#,
            r#"{'a': datetime.date(2002, 12, 14)}"#,
        ),
        (r#"a: !!null x\n"#, r#"{'a': None}"#),
        (r#"a: !!bool TRUE\n"#, r#"{'a': True}"#),
        (r#"a: !!float .INF\n"#, r#"{'a': inf}"#),
        (r#"a: !!int 0b1_0\n"#, r#"{'a': 2}"#),
        (r#"a: !!int -0x1F\n"#, r#"{'a': -31}"#),
        (r#"a: !!int 0:30\n"#, r#"ERR"#),
        (
            r#"a: ~\nb: null\nc: Null\nd: NULL\ne:\n"#,
            r#"{'a': None, 'b': None, 'c': None, 'd': None, 'e': None}"#,
        ),
        (r#"a: nul\n"#, r#"{'a': 'nul'}"#),
        (r#"a: !!omap [a: 1]\n"#, r#"{'a': [('a', 1)]}"#),
        (
            r#"a: !!pairs [a: 1, a: 2]\n"#,
            r#"{'a': [('a', 1), ('a', 2)]}"#,
        ),
        (r#"a: !!seq [1]\n"#, r#"{'a': [1]}"#),
        (r#"a: !!map {b: 1}\n"#, r#"{'a': {'b': 1}}"#),
        (r#"a: !binary x\n"#, r#"ERR"#),
        (r#"a: ! foo\n"#, r#"{'a': 'foo'}"#),
        (r#"a: !!str\n"#, r#"{'a': ''}"#),
        (r#"<<: {a: 1}\nb: 2\n"#, r#"{'a': 1, 'b': 2}"#),
        (
            r#"a: {<<: [{x: 1}, {x: 2, y: 3}], z: 4}\n"#,
            r#"{'a': {'x': 1, 'y': 3, 'z': 4}}"#,
        ),
        (r#"a: b: c\n"#, r#"ERR"#),
        (r#"- - a\n"#, r#"[['a']]"#),
        (r#"a: [1, 2\n"#, r#"ERR"#),
        (r#""\\u00e9": 1\n"#, r#"{'é': 1}"#),
        (r#"a: "\\x41"\n"#, r#"{'a': 'A'}"#),
        (r#"a:\tb\n"#, r#"ERR"#),
        (r#"a: b #comment\n"#, r#"{'a': 'b'}"#),
        (r#"a: 0.1e1\n"#, r#"{'a': '0.1e1'}"#),
        (r#"a: 1e+3\n"#, r#"{'a': '1e+3'}"#),
        (r#"a: 1.0E+3\n"#, r#"{'a': 1000.0}"#),
        (r#"a: -.inf\n"#, r#"{'a': -inf}"#),
        (r#"a: +.inf\n"#, r#"{'a': inf}"#),
        (r#"a: .Inf\n"#, r#"{'a': inf}"#),
        (r#"a: True\n"#, r#"{'a': True}"#),
        (r#"a: tRue\n"#, r#"{'a': 'tRue'}"#),
        (r#"a: 0\n"#, r#"{'a': 0}"#),
        (r#"a: -0.0\n"#, r#"{'a': -0.0}"#),
        (r#"a: 00:30\n"#, r#"{'a': '00:30'}"#),
        (r#"a: 1:60\n"#, r#"{'a': '1:60'}"#),
        (r#"a: 1:59\n"#, r#"{'a': 119}"#),
        (r#"a: 0x\n"#, r#"{'a': '0x'}"#),
        (r#"a: 09\n"#, r#"{'a': '09'}"#),
        (r#"a: 0_7\n"#, r#"{'a': 7}"#),
        (r#"a: 123_\n"#, r#"{'a': 123}"#),
        (r#"a: _123\n"#, r#"{'a': '_123'}"#),
        (r#"a: =\n"#, r#"ERR"#),
        (r#"=: 1\n"#, r#"{'=': 1}"#),
        (r#"a: 2024-02-29\n"#, r#"{'a': datetime.date(2024, 2, 29)}"#),
        (r#"a: 2023-02-29\n"#, r#"ERR"#),
        (r#"a: 0001-01-01\n"#, r#"{'a': datetime.date(1, 1, 1)}"#),
        (r#"a: 0000-01-01\n"#, r#"ERR"#),
        (r#"{a: 1, a: 2}\n"#, r#"{'a': 2}"#),
        (r#"[1, 2]: 3\n"#, r#"ERR"#),
        (r#"a: [&x 1, *x]\n"#, r#"{'a': [1, 1]}"#),
    ];

    #[test]
    fn agrees_with_pyyaml_on_a_corpus() {
        for (escaped, want) in PYYAML_PARITY {
            let text = escaped
                .replace("\\\\", "\u{0}")
                .replace("\\n", "\n")
                .replace("\\t", "\t")
                .replace('\u{0}', "\\");
            let got = match safe_load(&text) {
                Ok(Some(v)) => v.repr(),
                Ok(None) => "None".into(),
                Err(_) => "ERR".into(),
            };
            assert_eq!(&got, want, "yaml {escaped:?}");
        }
    }
}
