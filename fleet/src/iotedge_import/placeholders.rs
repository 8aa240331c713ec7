//! Template placeholders (`${NAME}`, `$NAME`, `<NAME>`, `{{NAME}}`, `__AML_NAME`) found in a
//! file's values and filled from the `--set` variables; those no variable fills are
//! remembered for the report.

use serde_json::Value;

use super::Importer;

impl Importer<'_> {
    /// Fills the placeholders of `text` used at `at`, remembering those no variable fills.
    pub(super) fn fill(&mut self, text: &str, at: &str) -> String {
        self.fill_with(text, at, true)
    }

    pub(super) fn fill_with(&mut self, text: &str, at: &str, required: bool) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some((before, placeholder, after)) = next_placeholder(rest) {
            out.push_str(before);
            match self.settings.vars.get(placeholder.name) {
                Some(value) => {
                    out.push_str(value);
                    self.used_vars.insert(placeholder.name.to_owned());
                }
                None if !required => out.push_str(placeholder.text),
                None => {
                    out.push_str(placeholder.text);
                    self.unresolved
                        .entry(placeholder.name.to_owned())
                        .or_default()
                        .insert(at.to_owned());
                }
            }
            rest = after;
        }
        out.push_str(rest);
        out
    }

    /// [`Self::fill`] over every string of a JSON value.
    pub(super) fn fill_value(&mut self, value: &Value, at: &str) -> Value {
        match value {
            Value::String(s) => Value::String(self.fill(s, at)),
            Value::Array(items) => items.iter().map(|v| self.fill_value(v, at)).collect(),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), self.fill_value(v, at)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// IoT Edge's own `$` names (`$edgeAgent` as a module id, `$upstream`): not placeholders.
const IOT_EDGE_NAMES: &[&str] = &["edgeAgent", "edgeHub", "upstream"];

/// A placeholder in a template: `${NAME}`, `$NAME`, `<NAME>`, `{{NAME}}` or `__AML_NAME`.
pub(super) struct Placeholder<'t> {
    /// As written.
    pub(super) text: &'t str,
    /// What `--set` names it by.
    pub(super) name: &'t str,
}

/// The text before the first placeholder of `text`, the placeholder, and the text after it.
pub(super) fn next_placeholder(text: &str) -> Option<(&str, Placeholder<'_>, &str)> {
    // Every placeholder syntax starts with an ASCII character, so only character starts are
    // tried: slicing inside a multi-byte character would panic.
    for (start, _) in text.char_indices() {
        let rest = &text[start..];
        let found = if let Some(inner) = rest.strip_prefix("${") {
            inner.find('}').map(|end| (2 + end + 1, &inner[..end]))
        } else if let Some(inner) = rest.strip_prefix("{{") {
            inner
                .find("}}")
                .map(|end| (2 + end + 2, inner[..end].trim()))
        } else if let Some(inner) = rest.strip_prefix('$') {
            let len = inner
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let starts_well = inner
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            (len > 0 && starts_well && !IOT_EDGE_NAMES.contains(&&inner[..len]))
                .then(|| (1 + len, &inner[..len]))
        } else if let Some(inner) = rest.strip_prefix('<') {
            inner
                .find(['>', '<', '"', '\n'])
                .filter(|end| *end > 0 && *end <= 100 && inner[*end..].starts_with('>'))
                .map(|end| (1 + end + 1, &inner[..end]))
        } else if rest.starts_with("__AML_") {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            Some((len, &rest[..len]))
        } else {
            None
        };
        if let Some((len, name)) = found
            && !name.is_empty()
        {
            return Some((
                &text[..start],
                Placeholder {
                    text: &rest[..len],
                    name,
                },
                &rest[len..],
            ));
        }
    }
    None
}
