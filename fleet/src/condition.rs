//! Deployment target conditions over a device's id and tags:
//!
//! ```text
//! tags.site = 'plant1' AND (tags.line IN ['a', 'b'] OR NOT deviceId != 'gw-07')
//! ```
//!
//! Operators: `=`, `!=`, `IN [...]`, `AND`, `OR`, `NOT` (keywords in any case) and
//! parentheses; strings in single or double quotes. A tag the device lacks equals nothing
//! (so `tags.x != 'v'` holds for a device without tag `x`). A parse error names the column
//! and what was expected there. At most [`MAX_NESTING`] parentheses and `NOT`s are open at
//! once, so no text makes the parser recurse without bound.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    DeviceId,
    Tag(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Eq(Field, String),
    Ne(Field, String),
    In(Field, Vec<String>),
    Not(Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("target condition, column {column}: expected {expected}, found {found}")]
pub struct ConditionError {
    pub column: usize,
    pub expected: &'static str,
    pub found: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    Eq,
    Ne,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    End,
}

fn describe(t: &Token) -> String {
    match t {
        Token::Ident(s) => format!("'{s}'"),
        Token::Str(s) => format!("string '{s}'"),
        Token::Eq => "'='".into(),
        Token::Ne => "'!='".into(),
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::LBracket => "'['".into(),
        Token::RBracket => "']'".into(),
        Token::Comma => "','".into(),
        Token::End => "the end of the condition".into(),
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ConditionError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        match c {
            _ if c.is_whitespace() => i += 1,
            '(' | ')' | '[' | ']' | ',' | '=' => {
                out.push((
                    column,
                    match c {
                        '(' => Token::LParen,
                        ')' => Token::RParen,
                        '[' => Token::LBracket,
                        ']' => Token::RBracket,
                        ',' => Token::Comma,
                        _ => Token::Eq,
                    },
                ));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push((column, Token::Ne));
                i += 2;
            }
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .ok_or(ConditionError {
                        column,
                        expected: "a closing quote",
                        found: "the end of the condition".into(),
                    })?;
                out.push((
                    column,
                    Token::Str(chars[i + 1..i + 1 + end].iter().collect()),
                ));
                i += end + 2;
            }
            _ if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
                {
                    i += 1;
                }
                out.push((column, Token::Ident(chars[start..i].iter().collect())));
            }
            other => {
                return Err(ConditionError {
                    column,
                    expected: "a field, a string, an operator or a parenthesis",
                    found: format!("'{other}'"),
                });
            }
        }
    }
    out.push((chars.len() + 1, Token::End));
    Ok(out)
}

/// Most parentheses and `NOT`s open at once. The parser descends once per level, so a
/// condition from an API request must not choose how deep it goes: 50,000 parentheses
/// overflowed the stack of the thread parsing it.
pub const MAX_NESTING: usize = 64;

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    /// Parentheses and `NOT`s open at `at`.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &(usize, Token) {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> (usize, Token) {
        let t = self.peek().clone();
        self.at += 1;
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(&self.peek().1, Token::Ident(s) if s.eq_ignore_ascii_case(word))
    }

    fn error<T>(&self, expected: &'static str) -> Result<T, ConditionError> {
        let (column, token) = self.peek();
        Err(ConditionError {
            column: *column,
            expected,
            found: describe(token),
        })
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            self.next();
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.not()?;
        while self.keyword("AND") {
            self.next();
            left = Condition::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    /// Enters one more level of nesting at the current token, or refuses to.
    fn nest(&mut self) -> Result<(), ConditionError> {
        if self.depth == MAX_NESTING {
            return self.error("at most 64 nested parentheses and NOTs (simplify the condition)");
        }
        self.depth += 1;
        Ok(())
    }

    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.keyword("NOT") {
            self.nest()?;
            self.next();
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ConditionError> {
        if self.peek().1 == Token::LParen {
            self.nest()?;
            self.next();
            let inner = self.or()?;
            if self.peek().1 != Token::RParen {
                return self.error("')'");
            }
            self.next();
            self.depth -= 1;
            return Ok(inner);
        }
        let field = match &self.peek().1 {
            Token::Ident(s) if s == "deviceId" => Field::DeviceId,
            Token::Ident(s) if s.starts_with("tags.") && s.len() > 5 => {
                Field::Tag(s[5..].to_owned())
            }
            _ => return self.error("deviceId or tags.<name>"),
        };
        self.next();
        match self.peek().1.clone() {
            Token::Eq | Token::Ne => {
                let op = self.next().1;
                let value = self.string()?;
                Ok(if op == Token::Eq {
                    Condition::Eq(field, value)
                } else {
                    Condition::Ne(field, value)
                })
            }
            Token::Ident(s) if s.eq_ignore_ascii_case("IN") => {
                self.next();
                if self.peek().1 != Token::LBracket {
                    return self.error("'[' after IN");
                }
                self.next();
                let mut values = vec![self.string()?];
                while self.peek().1 == Token::Comma {
                    self.next();
                    values.push(self.string()?);
                }
                if self.peek().1 != Token::RBracket {
                    return self.error("',' or ']'");
                }
                self.next();
                Ok(Condition::In(field, values))
            }
            _ => self.error("'=', '!=' or IN"),
        }
    }

    fn string(&mut self) -> Result<String, ConditionError> {
        match self.peek().1.clone() {
            Token::Str(s) => {
                self.next();
                Ok(s)
            }
            _ => self.error("a quoted string"),
        }
    }
}

impl std::str::FromStr for Condition {
    type Err = ConditionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parser = Parser {
            tokens: tokenize(text)?,
            at: 0,
            depth: 0,
        };
        let condition = parser.or()?;
        if parser.peek().1 != Token::End {
            return parser.error("AND, OR or the end of the condition");
        }
        Ok(condition)
    }
}

impl Condition {
    /// Whether a device with `device_id` and `tags` is targeted.
    pub fn matches(&self, device_id: &str, tags: &BTreeMap<String, String>) -> bool {
        let value = |field: &Field| match field {
            Field::DeviceId => Some(device_id),
            Field::Tag(name) => tags.get(name).map(String::as_str),
        };
        match self {
            Self::Eq(f, v) => value(f) == Some(v.as_str()),
            Self::Ne(f, v) => value(f) != Some(v.as_str()),
            Self::In(f, vs) => value(f).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::Not(c) => !c.matches(device_id, tags),
            Self::And(a, b) => a.matches(device_id, tags) && b.matches(device_id, tags),
            Self::Or(a, b) => a.matches(device_id, tags) || b.matches(device_id, tags),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn eval(condition: &str, id: &str, t: &[(&str, &str)]) -> bool {
        condition
            .parse::<Condition>()
            .expect("valid")
            .matches(id, &tags(t))
    }

    #[test]
    fn comparisons_and_boolean_operators_select_devices() {
        let plant1 = [("site", "plant1"), ("line", "a")];
        assert!(eval("tags.site = 'plant1'", "gw-01", &plant1));
        assert!(!eval("tags.site = 'plant2'", "gw-01", &plant1));
        assert!(eval("tags.site != 'plant2'", "gw-01", &plant1));
        assert!(eval("tags.missing != 'x'", "gw-01", &plant1));
        assert!(eval("tags.line IN ['b', \"a\"]", "gw-01", &plant1));
        assert!(eval(
            "deviceId = 'gw-01' and not tags.line = 'b'",
            "gw-01",
            &plant1
        ));
        assert!(eval(
            "tags.site = 'x' OR (tags.line = 'a' AND deviceId IN ['gw-01'])",
            "gw-01",
            &plant1
        ));
        assert!(!eval("NOT (tags.site = 'plant1')", "gw-01", &plant1));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // a OR (b AND c), not (a OR b) AND c
        assert!(eval(
            "deviceId = 'gw-01' OR tags.x = '1' AND tags.y = '2'",
            "gw-01",
            &[]
        ));
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let err = "tags.site == 'a'".parse::<Condition>().expect_err("bad");
        assert_eq!(
            err.to_string(),
            "target condition, column 12: expected a quoted string, found '='"
        );
        let err = "tags.site = 'a' AND".parse::<Condition>().expect_err("bad");
        assert_eq!(err.column, 20);
        assert_eq!(err.expected, "deviceId or tags.<name>");
        let err = "site = 'a'".parse::<Condition>().expect_err("bad");
        assert!(err.to_string().contains("deviceId or tags.<name>"), "{err}");
        let err = "tags.a IN ['x' 'y']".parse::<Condition>().expect_err("bad");
        assert!(err.to_string().contains("',' or ']'"), "{err}");
        let err = "(tags.a = 'x'".parse::<Condition>().expect_err("bad");
        assert!(err.to_string().contains("')'"), "{err}");
        let err = "tags.a = 'x".parse::<Condition>().expect_err("bad");
        assert!(err.to_string().contains("closing quote"), "{err}");
    }

    /// A condition nested 50,000 deep overflowed the stack of the thread parsing it, which in
    /// the fleet service is a request handler (fuzz/regressions/condition/ keeps such inputs).
    #[test]
    fn nesting_deeper_than_the_limit_is_refused_with_its_column_instead_of_overflowing() {
        let nested = |n: usize| format!("{}deviceId = 'a'{}", "(".repeat(n), ")".repeat(n));
        assert!(eval(&nested(MAX_NESTING), "a", &[]));
        let err = nested(MAX_NESTING + 1)
            .parse::<Condition>()
            .expect_err("too deep");
        assert_eq!(err.column, MAX_NESTING + 1);
        assert!(
            err.to_string().contains(&format!(
                "at most {MAX_NESTING} nested parentheses and NOTs"
            )),
            "{err}"
        );
        let err = nested(50_000).parse::<Condition>().expect_err("too deep");
        assert_eq!(err.column, MAX_NESTING + 1);
        let nots = |n: usize| format!("{}deviceId = 'a'", "NOT ".repeat(n));
        assert!(eval(&nots(MAX_NESTING), "a", &[]));
        let err = nots(20_000).parse::<Condition>().expect_err("too deep");
        assert!(
            err.to_string().contains("nested parentheses and NOTs"),
            "{err}"
        );
    }
}
