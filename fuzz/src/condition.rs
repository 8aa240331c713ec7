//! Deployment target conditions (`--target`, the dashboard, an imported `targetCondition`).

use std::collections::BTreeMap;

use edgefleet_fleet::condition::{Condition, Field};

/// The bytes as a condition; one that parses, written out again, parses to the same condition
/// and selects the same devices.
pub fn parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(condition) = text.parse::<Condition>() else {
        return;
    };
    let Some(written) = write(&condition) else {
        return;
    };
    match written.parse::<Condition>() {
        Ok(again) => assert_eq!(again, condition, "{text:?} written as {written:?}"),
        Err(e) => panic!("{text:?} written as {written:?} does not parse: {e}"),
    }
    let tags: BTreeMap<String, String> = [("site".to_owned(), "plant1".to_owned())].into();
    let _ = condition.matches("gw-07", &tags);
}

/// The condition as text, with parentheses only where precedence needs them (so a chain of
/// a hundred ORs stays flat, within the parser's nesting limit), or `None` when a string holds
/// both quote characters (the grammar has no escapes, so such a string cannot be written).
fn write(condition: &Condition) -> Option<String> {
    write_within(condition, OR)
}

/// Binding strength: OR < AND < NOT < a comparison.
const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const COMPARISON: u8 = 4;

/// `condition` as an operand where at least `strength` binds without parentheses.
fn write_within(condition: &Condition, strength: u8) -> Option<String> {
    let field = |f: &Field| match f {
        Field::DeviceId => "deviceId".to_owned(),
        Field::Tag(t) => format!("tags.{t}"),
    };
    let string = |s: &str| {
        if !s.contains('\'') {
            Some(format!("'{s}'"))
        } else if !s.contains('"') {
            Some(format!("\"{s}\""))
        } else {
            None
        }
    };
    // Both operators group to the left: a right operand of the same operator needs parentheses.
    let (own, text) = match condition {
        Condition::Eq(f, v) => (COMPARISON, format!("{} = {}", field(f), string(v)?)),
        Condition::Ne(f, v) => (COMPARISON, format!("{} != {}", field(f), string(v)?)),
        Condition::In(f, vs) => {
            let vs = vs.iter().map(|v| string(v)).collect::<Option<Vec<_>>>()?;
            (COMPARISON, format!("{} IN [{}]", field(f), vs.join(", ")))
        }
        Condition::Not(c) => (NOT, format!("NOT {}", write_within(c, NOT)?)),
        Condition::And(a, b) => (
            AND,
            format!("{} AND {}", write_within(a, AND)?, write_within(b, NOT)?),
        ),
        Condition::Or(a, b) => (
            OR,
            format!("{} OR {}", write_within(a, OR)?, write_within(b, AND)?),
        ),
    };
    Some(if own < strength {
        format!("({text})")
    } else {
        text
    })
}
