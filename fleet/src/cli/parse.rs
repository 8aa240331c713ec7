//! Value parsers shared by several commands' flags: `key=value` pairs (`--tag` of models and
//! devices, `--model` of a deployment import).

/// `key=value`, key and value trimmed; the key may not be empty.
pub(super) fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}
