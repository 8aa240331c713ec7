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

/// The condition as text, or `None` when a string holds both quote characters (the grammar
/// has no escapes, so such a string cannot be written).
fn write(condition: &Condition) -> Option<String> {
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
    Some(match condition {
        Condition::Eq(f, v) => format!("{} = {}", field(f), string(v)?),
        Condition::Ne(f, v) => format!("{} != {}", field(f), string(v)?),
        Condition::In(f, vs) => {
            let vs = vs.iter().map(|v| string(v)).collect::<Option<Vec<_>>>()?;
            format!("{} IN [{}]", field(f), vs.join(", "))
        }
        Condition::Not(c) => format!("NOT ({})", write(c)?),
        Condition::And(a, b) => format!("({}) AND ({})", write(a)?, write(b)?),
        Condition::Or(a, b) => format!("({}) OR ({})", write(a)?, write(b)?),
    })
}
