//! The subset of Go's `text/template` (with Helm's functions) that the chart
//! in `deploy/helm/detour` uses, so the chart can be rendered and checked on
//! machines without a `helm` binary.
//!
//! Supported: `{{ pipeline }}`; trim markers `{{-` and `-}}`; `{{/* comments
//! */}}`; `if`, `range` (over a list) and `end`; terms `.`, `.a.b`, `$`,
//! `$.a.b`, string and integer literals; pipes into `quote`, `toYaml`,
//! `nindent`, `indent` and `join`. Anything else panics, so a template that
//! grows beyond this fails the test instead of rendering wrongly. A missing
//! key panics too (Helm would print nothing), which catches typos.

use yaml_serde::{Mapping, Value};

/// Renders `template` with `root` as `.` (and `$`).
pub fn render(name: &str, template: &str, root: &Value) -> String {
    let mut tokens = lex(name, template).into_iter();
    let nodes = parse(name, &mut tokens, false);
    let mut out = String::new();
    eval(name, &nodes, root, root, &mut out);
    out
}

/// Helm's top-level object: `.Values`, `.Release`, `.Chart`.
pub fn context(values: Value, release_name: &str, namespace: &str, chart: &Value) -> Value {
    let field = |key: &str| chart.get(key).cloned().unwrap_or(Value::Null);
    let mut chart_object = Mapping::new();
    for (key, helm_key) in [
        ("name", "Name"),
        ("version", "Version"),
        ("appVersion", "AppVersion"),
        ("description", "Description"),
    ] {
        chart_object.insert(helm_key.into(), field(key));
    }
    let mut release = Mapping::new();
    release.insert("Name".into(), release_name.into());
    release.insert("Namespace".into(), namespace.into());
    release.insert("Service".into(), "Helm".into());
    let mut root = Mapping::new();
    root.insert("Values".into(), values);
    root.insert("Release".into(), Value::Mapping(release));
    root.insert("Chart".into(), Value::Mapping(chart_object));
    Value::Mapping(root)
}

/// Helm's value merging (`-f`/`--set`): maps merge key by key, anything else
/// is replaced.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

enum Token {
    Text(String),
    Action(String),
}

fn lex(name: &str, template: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .unwrap_or_else(|| panic!("{name}: unclosed {{{{"));
        let mut inner = &after[..end];
        let trim_left = inner.starts_with('-') && inner[1..].starts_with(char::is_whitespace);
        if trim_left {
            text = text.trim_end();
            inner = &inner[1..];
        }
        trim_next = inner.ends_with('-') && inner[..inner.len() - 1].ends_with(char::is_whitespace);
        if trim_next {
            inner = &inner[..inner.len() - 1];
        }
        tokens.push(Token::Text(text.to_owned()));
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            tokens.push(Token::Action(inner.to_owned()));
        }
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    tokens.push(Token::Text(text.to_owned()));
    tokens
}

enum Node {
    Text(String),
    Print(Vec<Command>),
    If(Vec<Command>, Vec<Node>),
    Range(Vec<Command>, Vec<Node>),
}

/// One command of a pipeline: a function or a term, then its arguments.
type Command = Vec<Term>;

enum Term {
    /// `.a.b`: a path from the current `.` (empty: `.` itself).
    Dot(Vec<String>),
    /// `$.a.b`: a path from the top-level object.
    Root(Vec<String>),
    Str(String),
    Int(i64),
    Function(String),
}

fn parse(name: &str, tokens: &mut std::vec::IntoIter<Token>, in_block: bool) -> Vec<Node> {
    let mut nodes = Vec::new();
    while let Some(token) = tokens.next() {
        let action = match token {
            Token::Text(text) => {
                nodes.push(Node::Text(text));
                continue;
            }
            Token::Action(action) => action,
        };
        let (keyword, rest) = action.split_once(' ').unwrap_or((&action, ""));
        match keyword {
            "end" if in_block => return nodes,
            "if" => nodes.push(Node::If(pipeline(name, rest), parse(name, tokens, true))),
            "range" => nodes.push(Node::Range(pipeline(name, rest), parse(name, tokens, true))),
            "end" | "else" | "with" | "define" | "template" | "block" | "include" => {
                panic!("{name}: `{{{{ {action} }}}}` is not supported by this renderer")
            }
            _ => nodes.push(Node::Print(pipeline(name, &action))),
        }
    }
    assert!(!in_block, "{name}: missing {{{{ end }}}}");
    nodes
}

fn pipeline(name: &str, source: &str) -> Vec<Command> {
    let mut commands = vec![Vec::new()];
    let mut chars = source.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            commands.push(Vec::new());
        } else if c == '"' {
            chars.next();
            let mut literal = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => literal.extend(chars.next()),
                    Some(other) => literal.push(other),
                    None => panic!("{name}: unterminated string in `{source}`"),
                }
            }
            push_term(&mut commands, Term::Str(literal));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '|' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            push_term(&mut commands, term(name, &word));
        }
    }
    assert!(
        commands.iter().all(|command| !command.is_empty()),
        "{name}: empty command in `{source}`"
    );
    commands
}

fn push_term(commands: &mut [Command], term: Term) {
    if let Some(command) = commands.last_mut() {
        command.push(term);
    }
}

fn term(name: &str, word: &str) -> Term {
    let path = |rest: &str| -> Vec<String> {
        rest.split('.')
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect()
    };
    if word == "$" {
        Term::Root(Vec::new())
    } else if let Some(rest) = word.strip_prefix("$.") {
        Term::Root(path(rest))
    } else if let Some(rest) = word.strip_prefix('.') {
        Term::Dot(path(rest))
    } else if let Ok(number) = word.parse() {
        Term::Int(number)
    } else if word.chars().all(|c| c.is_ascii_alphanumeric()) {
        Term::Function(word.to_owned())
    } else {
        panic!("{name}: cannot read `{word}`")
    }
}

fn eval(name: &str, nodes: &[Node], dot: &Value, root: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Print(commands) => out.push_str(&print(name, &run(name, commands, dot, root))),
            Node::If(commands, body) => {
                if truthy(&run(name, commands, dot, root)) {
                    eval(name, body, dot, root, out);
                }
            }
            Node::Range(commands, body) => match run(name, commands, dot, root) {
                Value::Sequence(items) => {
                    for item in &items {
                        eval(name, body, item, root, out);
                    }
                }
                Value::Null => {}
                other => panic!("{name}: range over a non-list: {other:?}"),
            },
        }
    }
}

fn run(name: &str, commands: &[Command], dot: &Value, root: &Value) -> Value {
    let mut piped: Option<Value> = None;
    for command in commands {
        let (head, rest) = command
            .split_first()
            .unwrap_or_else(|| panic!("{name}: empty command"));
        let mut args: Vec<Value> = rest.iter().map(|t| value(name, t, dot, root)).collect();
        args.extend(piped.take());
        piped = Some(match head {
            Term::Function(function) => call(name, function, args),
            term if args.is_empty() => value(name, term, dot, root),
            _ => panic!("{name}: arguments given to a value"),
        });
    }
    piped.unwrap_or(Value::Null)
}

fn value(name: &str, term: &Term, dot: &Value, root: &Value) -> Value {
    let lookup = |start: &Value, path: &[String]| {
        path.iter().fold(start.clone(), |current, key| {
            current
                .get(key.as_str())
                .cloned()
                .unwrap_or_else(|| panic!("{name}: no key `{key}` (in {})", path.join(".")))
        })
    };
    match term {
        Term::Dot(path) => lookup(dot, path),
        Term::Root(path) => lookup(root, path),
        Term::Str(text) => Value::String(text.clone()),
        Term::Int(number) => Value::Number((*number).into()),
        Term::Function(function) => call(name, function, Vec::new()),
    }
}

fn call(name: &str, function: &str, args: Vec<Value>) -> Value {
    let text = |value: &Value| print(name, value);
    let count = |value: &Value| {
        value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(|| panic!("{name}: {function} wants a count, got {value:?}"))
    };
    match (function, args.as_slice()) {
        ("quote", [value]) => Value::String(
            serde_json::to_string(&text(value)).unwrap_or_else(|e| panic!("{name}: quote: {e}")),
        ),
        ("toYaml", [value]) => Value::String(
            yaml_serde::to_string(value)
                .unwrap_or_else(|e| panic!("{name}: toYaml: {e}"))
                .trim_end_matches('\n')
                .to_owned(),
        ),
        ("indent", [width, value]) => Value::String(indent(count(width), &text(value))),
        ("nindent", [width, value]) => {
            Value::String(format!("\n{}", indent(count(width), &text(value))))
        }
        ("join", [separator, Value::Sequence(items)]) => Value::String(
            items
                .iter()
                .map(text)
                .collect::<Vec<_>>()
                .join(&text(separator)),
        ),
        _ => panic!(
            "{name}: function `{function}` with {} argument(s) is not supported",
            args.len()
        ),
    }
}

fn indent(width: usize, text: &str) -> String {
    let pad = " ".repeat(width);
    format!("{pad}{}", text.replace('\n', &format!("\n{pad}")))
}

fn print(name: &str, value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("{name}: cannot print {other:?}; pipe it into toYaml"),
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Sequence(items) => !items.is_empty(),
        Value::Mapping(map) => !map.is_empty(),
        Value::Tagged(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_with(template: &str, values: &str) -> String {
        let values: Value = yaml_serde::from_str(values).expect("values");
        let root = context(values, "rel", "ns", &Value::Null);
        render("test", template, &root)
    }

    #[test]
    fn substitutes_paths_and_trims_around_markers() {
        let out = render_with(
            "a: {{ .Values.x.y }}\nb: {{ $.Release.Namespace }}\n  {{- /* gone */}}\nc: 1",
            "x: {y: 7}",
        );
        assert_eq!(out, "a: 7\nb: ns\nc: 1");
    }

    #[test]
    fn range_if_and_functions() {
        let template = "l:\n{{- range .Values.items }}\n  - {{ . | quote }}\n{{- end }}\n\
                        {{- if .Values.empty }}\nnever: true\n{{- end }}\n\
                        r:\n  {{- toYaml .Values.map | nindent 2 }}\n\
                        j: {{ join \",\" .Values.items }}";
        let out = render_with(template, "items: [a, b]\nempty: []\nmap: {k: v}");
        assert_eq!(out, "l:\n  - \"a\"\n  - \"b\"\nr:\n  k: v\nj: a,b");
    }

    #[test]
    #[should_panic(expected = "no key `missing`")]
    fn a_missing_key_is_an_error() {
        render_with("{{ .Values.missing }}", "{}");
    }

    #[test]
    fn merge_replaces_lists_and_merges_maps() {
        let mut base: Value = yaml_serde::from_str("a: {b: 1, c: 2}\nl: [1, 2]").expect("yaml");
        let overlay: Value = yaml_serde::from_str("a: {c: 3}\nl: [9]").expect("yaml");
        merge(&mut base, &overlay);
        let want: Value = yaml_serde::from_str("a: {b: 1, c: 3}\nl: [9]").expect("yaml");
        assert_eq!(base, want);
    }
}
