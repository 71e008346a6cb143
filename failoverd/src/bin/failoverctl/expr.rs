//! `--where` expressions and `--fields` paths: parsed from untrusted text, bounded, never
//! panicking.
//!
//! ```text
//! or   := and ('||' and)*
//! and  := not ('&&' not)*
//! not  := '!' not | '(' or ')' | cmp
//! cmp  := FIELD (==|!=|<|<=|>|>=) LITERAL | FIELD
//! ```
//!
//! A FIELD is a dotted path into an item (`drops.replay`; a numeric segment indexes an array:
//! `allowed_ips.0`); a missing field is `null`. A LITERAL is a number, a `"string"` (escapes
//! `\"` and `\\`), `true`, `false` or `null`. A bare field is true unless it is null, false, 0
//! or "". Values of different types are never equal (`!=` is true) and never ordered; numbers
//! compare numerically, strings by bytes, booleans and null only with `==` and `!=`.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of `(` and `!` accepted.
pub const MAX_DEPTH: usize = 64;

/// A dotted path into a JSON item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    segments: Vec<String>,
}

impl Path {
    /// Parses `a.b.0`: segments of letters, digits and `_`, the first starting with a letter
    /// or `_`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_LEN {
            return Err(format!("a field name is longer than {MAX_LEN} bytes"));
        }
        let mut segments = Vec::new();
        for (i, segment) in text.split('.').enumerate() {
            let valid_start = segment.chars().next().is_some_and(|c| {
                c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())
            });
            if !valid_start
                || !segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "'{}' is not a field name (letters, digits and '_', dotted for nested fields, e.g. drops.replay)",
                    text.escape_debug()
                ));
            }
            segments.push(segment.to_owned());
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path in `item`, if there is one.
    pub fn lookup<'a>(&self, item: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(item, |value, segment| match value {
                Value::Object(map) => map.get(segment),
                Value::Array(list) => segment.parse::<usize>().ok().and_then(|i| list.get(i)),
                _ => None,
            })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    String(String),
    Bool(bool),
    Null,
}

/// A parsed `--where` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        field: Path,
        op: Op,
        literal: Literal,
    },
    Truthy(Path),
}

/// Why an expression was refused, and where (1-based character column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(Path),
    Number(f64),
    Str(String),
    True,
    False,
    Null,
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Field(p) => format!("'{p}'"),
            Token::Number(n) => format!("the number {n}"),
            Token::Str(s) => format!("the string \"{}\"", s.escape_debug()),
            Token::True => "'true'".into(),
            Token::False => "'false'".into(),
            Token::Null => "'null'".into(),
            Token::Op(op) => format!("'{}'", op_text(*op)),
            Token::And => "'&&'".into(),
            Token::Or => "'||'".into(),
            Token::Not => "'!'".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::End => "the end of the expression".into(),
        }
    }
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Eq => "==",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

fn err(column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        column,
        message: message.into(),
    }
}

/// Splits `text` into tokens, each with its 1-based column.
fn lex(text: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = at(i + 1);
        let (token, len) = match (c, two) {
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            ('!', Some('=')) => (Token::Op(Op::Ne), 2),
            ('!', _) => (Token::Not, 1),
            ('=', Some('=')) => (Token::Op(Op::Eq), 2),
            ('=', _) => {
                return Err(err(
                    column,
                    "expected '==' (a single '=' is not an operator)",
                ))
            }
            ('<', Some('=')) => (Token::Op(Op::Le), 2),
            ('<', _) => (Token::Op(Op::Lt), 1),
            ('>', Some('=')) => (Token::Op(Op::Ge), 2),
            ('>', _) => (Token::Op(Op::Gt), 1),
            ('&', Some('&')) => (Token::And, 2),
            ('&', _) => {
                return Err(err(
                    column,
                    "expected '&&' (a single '&' is not an operator)",
                ))
            }
            ('|', Some('|')) => (Token::Or, 2),
            ('|', _) => {
                return Err(err(
                    column,
                    "expected '||' (a single '|' is not an operator)",
                ))
            }
            ('"', _) => {
                let mut value = String::new();
                let mut j = i + 1;
                loop {
                    match at(j) {
                        None => return Err(err(column, "this string has no closing '\"'")),
                        Some('"') => break,
                        Some('\\') => match at(j + 1) {
                            Some(e @ ('"' | '\\')) => {
                                value.push(e);
                                j += 2;
                            }
                            Some(other) => {
                                return Err(err(
                                    j + 1,
                                    format!(
                                        "unknown escape '\\{}' in a string (only \\\" and \\\\ are escapes)",
                                        other.escape_debug()
                                    ),
                                ))
                            }
                            None => return Err(err(column, "this string has no closing '\"'")),
                        },
                        Some(other) => {
                            value.push(other);
                            j += 1;
                        }
                    }
                }
                (Token::Str(value), j + 1 - i)
            }
            (c, _) if c == '-' || c.is_ascii_digit() => {
                let mut j = i;
                if at(j) == Some('-') {
                    j += 1;
                }
                let digits = |mut k: usize| {
                    while at(k).is_some_and(|d| d.is_ascii_digit()) {
                        k += 1;
                    }
                    k
                };
                let int_end = digits(j);
                if int_end == j {
                    return Err(err(column, "expected a digit after '-'"));
                }
                j = int_end;
                if at(j) == Some('.') {
                    let frac_end = digits(j + 1);
                    if frac_end == j + 1 {
                        return Err(err(j + 2, "expected a digit after the decimal point"));
                    }
                    j = frac_end;
                }
                if matches!(at(j), Some('e' | 'E')) {
                    let mut k = j + 1;
                    if matches!(at(k), Some('+' | '-')) {
                        k += 1;
                    }
                    let exp_end = digits(k);
                    if exp_end == k {
                        return Err(err(k + 1, "expected a digit in the exponent"));
                    }
                    j = exp_end;
                }
                if at(j).is_some_and(|d| d.is_ascii_alphabetic() || d == '_' || d == '.') {
                    return Err(err(
                        j + 1,
                        "expected an operator or a space after the number",
                    ));
                }
                let text: String = chars.get(i..j).unwrap_or_default().iter().collect();
                let value = text
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err(column, format!("'{text}' is not a finite number")))?;
                (Token::Number(value), j - i)
            }
            (c, _) if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while at(j).is_some_and(|d| d.is_ascii_alphanumeric() || d == '_' || d == '.') {
                    j += 1;
                }
                let word: String = chars.get(i..j).unwrap_or_default().iter().collect();
                let token = match word.as_str() {
                    "true" => Token::True,
                    "false" => Token::False,
                    "null" => Token::Null,
                    _ => Token::Field(Path::parse(&word).map_err(|m| err(column, m))?),
                };
                (token, j - i)
            }
            (other, _) => {
                return Err(err(
                    column,
                    format!("unexpected character '{}'", other.escape_debug()),
                ))
            }
        };
        tokens.push((token, column));
        i += len;
    }
    tokens.push((Token::End, chars.len() + 1));
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> (&Token, usize) {
        self.tokens
            .get(self.next)
            .map_or((&Token::End, 0), |(t, c)| (t, *c))
    }

    fn bump(&mut self) -> (Token, usize) {
        let (token, column) = self.peek();
        let out = (token.clone(), column);
        if self.next < self.tokens.len() {
            self.next += 1;
        }
        out
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut terms = vec![self.and(depth)?];
        while self.peek().0 == &Token::Or {
            self.bump();
            terms.push(self.and(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Expr::Or(Vec::new()))
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut terms = vec![self.not(depth)?];
        while self.peek().0 == &Token::And {
            self.bump();
            terms.push(self.not(depth)?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Expr::And(Vec::new()))
        } else {
            Expr::And(terms)
        })
    }

    fn not(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let (token, column) = self.bump();
        let nested = || {
            if depth >= MAX_DEPTH {
                Err(err(
                    column,
                    format!("nested deeper than {MAX_DEPTH} levels"),
                ))
            } else {
                Ok(depth + 1)
            }
        };
        match token {
            Token::Not => Ok(Expr::Not(Box::new(self.not(nested()?)?))),
            Token::Open => {
                let inner = self.or(nested()?)?;
                match self.bump() {
                    (Token::Close, _) => Ok(inner),
                    (other, at) => Err(err(
                        at,
                        format!(
                            "expected ')' to close the '(' at column {column}, found {}",
                            other.describe()
                        ),
                    )),
                }
            }
            Token::Field(field) => {
                let Token::Op(op) = *self.peek().0 else {
                    return Ok(Expr::Truthy(field));
                };
                self.bump();
                let (token, at) = self.bump();
                let literal = match token {
                    Token::Number(n) => Literal::Number(n),
                    Token::Str(s) => Literal::String(s),
                    Token::True => Literal::Bool(true),
                    Token::False => Literal::Bool(false),
                    Token::Null => Literal::Null,
                    Token::Field(word) => {
                        return Err(err(
                            at,
                            format!(
                                "expected a literal after '{}' (a number, a \"string\", true, false or null), found {}; quote strings: \"{}\"",
                                op_text(op),
                                Token::Field(word.clone()).describe(),
                                word
                            ),
                        ))
                    }
                    other => {
                        return Err(err(
                            at,
                            format!(
                                "expected a literal after '{}' (a number, a \"string\", true, false or null), found {}",
                                op_text(op),
                                other.describe()
                            ),
                        ))
                    }
                };
                Ok(Expr::Cmp { field, op, literal })
            }
            other => Err(err(
                column,
                format!(
                    "expected a field name, '!' or '(', found {}",
                    other.describe()
                ),
            )),
        }
    }
}

impl Expr {
    /// Parses an expression (at most [`MAX_LEN`] bytes, nesting at most [`MAX_DEPTH`]).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.len() > MAX_LEN {
            return Err(err(
                1,
                format!(
                    "the expression is {} bytes long; at most {MAX_LEN} are accepted",
                    text.len()
                ),
            ));
        }
        let mut parser = Parser {
            tokens: lex(text)?,
            next: 0,
        };
        let expr = parser.or(0)?;
        match parser.bump() {
            (Token::End, _) => Ok(expr),
            (Token::Close, at) => Err(err(at, "this ')' closes no '('")),
            (other, at) => Err(err(
                at,
                format!(
                    "expected '&&', '||' or the end of the expression, found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// Whether `item` satisfies the expression.
    pub fn matches(&self, item: &Value) -> bool {
        match self {
            Expr::Or(terms) => terms.iter().any(|t| t.matches(item)),
            Expr::And(terms) => terms.iter().all(|t| t.matches(item)),
            Expr::Not(inner) => !inner.matches(item),
            Expr::Truthy(field) => truthy(field.lookup(item)),
            Expr::Cmp { field, op, literal } => {
                compare(field.lookup(item).unwrap_or(&Value::Null), *op, literal)
            }
        }
    }

    /// Every field the expression reads.
    pub fn fields(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a Path>) {
        match self {
            Expr::Or(terms) | Expr::And(terms) => {
                terms.iter().for_each(|t| t.collect_fields(out));
            }
            Expr::Not(inner) => inner.collect_fields(out),
            Expr::Truthy(field) | Expr::Cmp { field, .. } => out.push(field),
        }
    }
}

fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

fn compare(value: &Value, op: Op, literal: &Literal) -> bool {
    let ordering = match (value, literal) {
        (Value::Number(n), Literal::Number(l)) => n.as_f64().and_then(|f| f.partial_cmp(l)),
        (Value::String(s), Literal::String(l)) => Some(s.as_str().cmp(l.as_str())),
        (Value::Bool(b), Literal::Bool(l)) => {
            return match op {
                Op::Eq => b == l,
                Op::Ne => b != l,
                _ => false,
            }
        }
        (Value::Null, Literal::Null) => {
            return op == Op::Eq;
        }
        _ => None,
    };
    match ordering {
        None => op == Op::Ne,
        Some(o) => match op {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
        },
    }
}

/// Parses `--fields a,b.c`: a comma-separated list of paths (at most 4 KiB, 256 fields).
pub fn parse_fields(text: &str) -> Result<Vec<Path>, String> {
    if text.len() > MAX_LEN {
        return Err(format!("--fields is longer than {MAX_LEN} bytes"));
    }
    let fields: Vec<Path> = text
        .split(',')
        .map(|f| Path::parse(f.trim()))
        .collect::<Result<_, _>>()?;
    if fields.len() > 256 {
        return Err("--fields names more than 256 fields".into());
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn tunnel() -> Value {
        json!({
            "name": "dc1", "health": "up", "rtt_ms": 61.5, "loss": 0.0, "active": true,
            "drained": false, "last_handshake_ms_ago": null, "tx_bytes": 1000,
            "drops": {"replay": 3, "invalid_mac": 0}, "allowed_ips": ["10.0.0.0/8"],
            "label": "", "quote\"d": 1
        })
    }

    fn eval(text: &str) -> bool {
        Expr::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .matches(&tunnel())
    }

    #[test]
    fn comparisons() {
        assert!(eval("rtt_ms > 50"));
        assert!(eval("rtt_ms > 50 && health == \"up\""));
        assert!(!eval("rtt_ms < 50"));
        assert!(eval("rtt_ms >= 61.5 && rtt_ms <= 61.5 && rtt_ms == 61.5"));
        assert!(eval("tx_bytes == 1e3"));
        assert!(eval("loss == 0 && loss == -0.0"));
        assert!(eval("name < \"dc2\" && name > \"dc\" && name != \"dc2\""));
        assert!(eval("drops.replay == 3"));
        assert!(eval("allowed_ips.0 == \"10.0.0.0/8\""));
        assert!(!eval("allowed_ips.1 == \"10.0.0.0/8\""));
        assert!(eval(
            "active == true && drained == false && drained != true"
        ));
        assert!(eval(
            "last_handshake_ms_ago == null && missing == null && name != null"
        ));
    }

    #[test]
    fn different_types_are_unequal_and_unordered() {
        assert!(!eval("rtt_ms == \"61.5\""));
        assert!(eval("rtt_ms != \"61.5\""));
        assert!(!eval("name > 1"));
        assert!(!eval("name < 1"));
        assert!(eval("name != 1"));
        assert!(!eval("last_handshake_ms_ago < 5"));
        assert!(!eval("last_handshake_ms_ago >= 0"));
        assert!(!eval("active > false"));
        assert!(!eval("drops == 3"));
        assert!(eval("drops != null"));
        assert!(!eval("missing < null"));
    }

    #[test]
    fn truthiness() {
        assert!(eval("active"));
        assert!(!eval("drained"));
        assert!(!eval("loss"));
        assert!(eval("rtt_ms"));
        assert!(!eval("label"));
        assert!(eval("name"));
        assert!(!eval("last_handshake_ms_ago"));
        assert!(!eval("missing"));
        assert!(!eval("drops.invalid_mac"));
        assert!(eval("drops && allowed_ips"));
    }

    #[test]
    fn boolean_structure_and_precedence() {
        // && binds tighter than ||
        assert!(eval("drained && missing || active"));
        assert!(!eval("drained && (missing || active)"));
        assert!(eval("!drained"));
        assert!(eval("!!active"));
        assert!(eval("!(rtt_ms < 50) && !(health == \"down\")"));
        assert!(eval("((((name == \"dc1\"))))"));
        assert!(eval(
            "health == \"down\" || health == \"suspect\" || name == \"dc1\""
        ));
    }

    #[test]
    fn strings_with_escapes() {
        let item = json!({"s": "a\"b\\c"});
        let e = Expr::parse(r#"s == "a\"b\\c""#).unwrap();
        assert!(e.matches(&item));
        let e = Expr::parse(r#"s != "a\"b\\c ""#).unwrap();
        assert!(e.matches(&item));
        let err = Expr::parse(r#"s == "a\n""#).unwrap_err();
        assert_eq!(err.column, 8, "{err}");
        assert!(err.message.contains("unknown escape"), "{err}");
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "expected a field name, '!' or '(', found the end"),
            ("rtt_ms >", 9, "expected a literal after '>'"),
            ("state == up", 10, "quote strings: \"up\""),
            ("rtt_ms = 5", 8, "expected '=='"),
            ("a & b", 3, "expected '&&'"),
            ("a | b", 3, "expected '||'"),
            ("(a", 3, "expected ')' to close the '(' at column 1"),
            ("a)", 2, "closes no '('"),
            ("a b", 3, "expected '&&', '||' or the end"),
            ("a == \"x", 6, "no closing"),
            ("a == -", 6, "digit after '-'"),
            ("a == 1.", 8, "after the decimal point"),
            ("a == 1e", 8, "exponent"),
            ("a == 12abc", 8, "after the number"),
            ("a.", 1, "is not a field name"),
            ("a..b", 1, "is not a field name"),
            ("a == @", 6, "unexpected character '@'"),
            ("&& a", 1, "found '&&'"),
            ("5 < rtt_ms", 1, "expected a field name"),
            ("true", 1, "found 'true'"),
            ("a == 1 == c", 8, "expected '&&', '||'"),
            ("a == b", 6, "quote strings: \"b\""),
        ];
        for (text, column, fragment) in cases {
            let e = Expr::parse(text).expect_err(text);
            assert_eq!(e.column, *column, "{text}: {e}");
            assert!(e.message.contains(fragment), "{text}: {e}");
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = Expr::parse("name == \"é\" &").unwrap_err();
        assert_eq!(e.column, 13, "{e}");
    }

    #[test]
    fn bounds() {
        let deep_ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Expr::parse(&deep_ok).is_ok());
        let too_deep = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let e = Expr::parse(&too_deep).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        assert!(Expr::parse(&format!("{}a", "!".repeat(MAX_DEPTH))).is_ok());
        assert!(Expr::parse(&format!("{}a", "!".repeat(MAX_DEPTH + 1))).is_err());
        let long = format!("a{}", " ".repeat(MAX_LEN));
        assert!(Expr::parse(&long)
            .unwrap_err()
            .message
            .contains("at most 4096"));
        // wide is fine: a long flat chain is iterative, not recursive
        let wide = vec!["a"; 800].join(" || ");
        assert!(Expr::parse(&wide).is_ok());
        // deep pathological input stays an error, never a stack overflow
        assert!(Expr::parse(&"(".repeat(4000)).is_err());
        assert!(Expr::parse(&"!".repeat(4096)).is_err());
    }

    #[test]
    fn fields_lists() {
        let f = parse_fields("name, rtt_ms,drops.replay").unwrap();
        let names: Vec<&str> = f.iter().map(Path::as_str).collect();
        assert_eq!(names, ["name", "rtt_ms", "drops.replay"]);
        assert_eq!(
            f[2].lookup(&tunnel()),
            Some(&json!(3)),
            "dotted paths reach into objects"
        );
        assert!(parse_fields("name,").is_err());
        assert!(parse_fields("na me").is_err());
        assert!(parse_fields("0abc").is_err());
        assert!(parse_fields(&vec!["a"; 300].join(",")).is_err());
        let e = Expr::parse("a && (b.c || !d == 1)").unwrap();
        let read: Vec<&str> = e.fields().iter().map(|p| p.as_str()).collect();
        assert_eq!(read, ["a", "b.c", "d"]);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            if let Ok(e) = Expr::parse(&text) {
                let _ = e.matches(&tunnel());
            }
            let _ = parse_fields(&text);
        }

        #[test]
        fn expression_shaped_text_never_panics(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("("), Just(")"), Just("!"), Just("&&"), Just("||"), Just("=="),
                    Just("!="), Just("<"), Just("<="), Just(">"), Just(">="), Just("rtt_ms"),
                    Just("drops.replay"), Just("name"), Just("\"up\""), Just("\"a\\\"b\""),
                    Just("1.5"), Just("-3"), Just("1e3"), Just("true"), Just("null"),
                    Just(" "), Just("\""), Just("\\"), Just("."), Just("="),
                ],
                0..200,
            )
        ) {
            let text: String = parts.concat();
            match Expr::parse(&text) {
                Ok(e) => { let _ = e.matches(&tunnel()); let _ = e.fields(); }
                Err(e) => prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{}: {}", text, e),
            }
        }
    }
}
