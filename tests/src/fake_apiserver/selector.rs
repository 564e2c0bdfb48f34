//! Kubernetes label selectors as they appear in a `labelSelector` query
//! parameter: `key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)` and `key notin (a,b)`, joined by commas (a logical AND).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses a selector; the error names the requirement it could not read.
    pub fn parse(text: &str) -> Result<Self, String> {
        split_top_level(text)
            .into_iter()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_requirement)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::NotExists(key) => label(key).is_none(),
            Requirement::Equals(key, value) => label(key) == Some(value),
            Requirement::NotEquals(key, value) => label(key) != Some(value),
            Requirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            Requirement::NotIn(key, values) => {
                !label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
        })
    }
}

/// Splits on commas outside parentheses (`a in (x,y),b` is two parts).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (index, byte) in text.bytes().enumerate() {
        match byte {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let bad = || format!("unsupported label selector requirement {part:?}");
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(
            valid_key(key.trim()).ok_or_else(bad)?,
        ));
    }
    for (op, make) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            let key = valid_key(key.trim()).ok_or_else(bad)?;
            return Ok(make(key, value.trim().to_owned()));
        }
    }
    for (op, make) in [
        (
            " notin ",
            Requirement::NotIn as fn(String, Vec<String>) -> Requirement,
        ),
        (" in ", Requirement::In),
    ] {
        if let Some((key, set)) = part.split_once(op) {
            let key = valid_key(key.trim()).ok_or_else(bad)?;
            let set = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'));
            let values = set.ok_or_else(bad)?.split(',').map(|v| v.trim().to_owned());
            return Ok(make(key, values.collect()));
        }
    }
    Ok(Requirement::Exists(valid_key(part).ok_or_else(bad)?))
}

/// A label key: `[prefix/]name` of letters, digits, `-`, `_`, `.`.
fn valid_key(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::Selector;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn each_form_matches_as_kubernetes_does() {
        let fork = pod(json!({"detour.dev/fork": "true", "app": "reviews"}));
        let plain = pod(json!({"app": "ratings"}));
        let cases = [
            ("", true, true),
            ("detour.dev/fork", true, false),
            ("!detour.dev/fork", false, true),
            ("app=reviews", true, false),
            ("app==reviews", true, false),
            ("app!=reviews", false, true),
            ("app in (reviews, details)", true, false),
            ("app notin (reviews)", false, true),
            ("detour.dev/fork,app in (ratings,x)", false, false),
        ];
        for (text, on_fork, on_plain) in cases {
            let selector = Selector::parse(text).expect(text);
            assert_eq!(selector.matches(&fork), on_fork, "{text} on the fork pod");
            assert_eq!(
                selector.matches(&plain),
                on_plain,
                "{text} on the plain pod"
            );
        }
    }

    #[test]
    fn nonsense_is_an_error() {
        for text in ["app in reviews", "a b", "=x"] {
            assert!(Selector::parse(text).is_err(), "{text}");
        }
    }
}
