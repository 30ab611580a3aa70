//! The scenario format as a JSON Schema, generated from the scenario types
//! (their doc comments are the descriptions), and the lookups `connsim
//! explain` makes in it: a field by its path (`world.instances`,
//! `expect.window.between`) or by its last name, a timeline event by its
//! first words.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use crate::scenario::{Scenario, SimDuration, Skew, TimelineEvent, EVENT_FORMS};

impl JsonSchema for SimDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^\\s*([0-9]+(ms|s|m|h|d))+\\s*$",
            "description": "A duration of simulated time: \"250ms\", \"90s\", \"30m\", \"1h\", \"2d\" or \"1h30m\".",
        })
    }
}

impl JsonSchema for Skew {
    fn schema_name() -> Cow<'static, str> {
        "ClockSkew".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^\\s*[+-]?([0-9]+(ms|s|m|h|d))+\\s*$",
            "description": "A clock offset: \"+2d\" (ahead), \"-1h\" (behind).",
        })
    }
}

impl JsonSchema for TimelineEvent {
    fn schema_name() -> Cow<'static, str> {
        "TimelineEvent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let forms: Vec<String> = EVENT_FORMS.iter().map(|(form, what)| format!("\"{form}\": {what}")).collect();
        let description = format!("What happens, in words. One of:\n{}", forms.join("\n"));
        json_schema!({ "type": "string", "description": description })
    }
}

/// The JSON Schema of a scenario file.
pub fn scenario_schema() -> Schema {
    schemars::schema_for!(Scenario)
}

/// One field of the format, as `connsim explain` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDoc {
    /// Dotted path from the file's top (`world.connectors.region`).
    pub path: String,
    /// The JSON type, or the named type's title.
    pub kind: String,
    /// The field's text, then its type's.
    pub description: String,
    /// The field's own doc comment (empty when only its type has one).
    pub own: String,
    /// Its own fields, for a table or section.
    pub fields: Vec<String>,
    /// The values it may take, each with what it means (enums).
    pub choices: Vec<(String, String)>,
}

/// Every field of the format, depth first, in the schema's order.
pub fn fields() -> Vec<FieldDoc> {
    let schema = scenario_schema();
    let root = schema.as_value();
    let defs = root.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut out = Vec::new();
    walk(root, "", &defs, &mut out, 0);
    out
}

/// The fields named by `query`: its exact path, else every field whose
/// path ends with it (`instances`, `window.between`).
pub fn lookup(query: &str) -> Vec<FieldDoc> {
    let q = query.trim().trim_start_matches("[[").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let all = fields();
    if let Some(exact) = all.iter().find(|f| f.path == q) {
        return vec![exact.clone()];
    }
    let tail = format!(".{q}");
    all.into_iter().filter(|f| f.path.ends_with(&tail)).collect()
}

/// The timeline event forms that start with `query`'s words.
pub fn events(query: &str) -> Vec<(&'static str, &'static str)> {
    let words: Vec<String> = query.split_whitespace().map(str::to_ascii_lowercase).collect();
    if words.is_empty() {
        return Vec::new();
    }
    EVENT_FORMS
        .iter()
        .filter(|(form, _)| {
            let f: Vec<&str> = form.split_whitespace().collect();
            words.iter().zip(&f).all(|(w, f)| w == f || f.chars().all(|c| c.is_ascii_uppercase()))
        })
        .copied()
        .collect()
}

/// The schema `s` stands for: references followed, `Option`'s null and
/// a single-element `allOf` seen through.
fn resolve<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    let mut s = s;
    for _ in 0..8 {
        if let Some(name) = s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
            match defs.get(name) {
                Some(d) => s = d,
                None => break,
            }
        } else if let Some(one) = s.get("anyOf").and_then(Value::as_array).and_then(|v| non_null(v)) {
            s = one;
        } else if let Some(items) = s.get("items") {
            s = items;
        } else if let Some(Value::Object(_)) = s.get("additionalProperties").filter(|_| s.get("properties").is_none()) {
            s = &s["additionalProperties"];
        } else {
            break;
        }
    }
    s
}

fn non_null(v: &[Value]) -> Option<&Value> {
    let mut rest = v.iter().filter(|s| s.get("type").and_then(Value::as_str) != Some("null"));
    match (rest.next(), rest.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

fn walk(s: &Value, path: &str, defs: &Map<String, Value>, out: &mut Vec<FieldDoc>, depth: usize) {
    if depth > 6 {
        return;
    }
    for (name, sub) in properties(resolve(s, defs), defs) {
        let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        let inner = resolve(sub, defs);
        let own = sub.get("description").and_then(Value::as_str).unwrap_or("").to_string();
        // A variant's tag (`kind = "slow"`): the parent says what each means.
        let own = match (own.is_empty(), inner.get("const")) {
            (true, Some(_)) => {
                let tags: Vec<String> = choices(resolve(s, defs), defs).into_iter().map(|(tag, _)| tag).collect();
                format!("Which kind it is: {} (see {path}).", tags.join(", "))
            }
            _ => own,
        };
        // The type's own text follows the field's, when it has one.
        let of_type = inner.get("description").and_then(Value::as_str).filter(|t| !own.contains(*t));
        let description = match of_type {
            Some(t) if !own.is_empty() => format!("{own}\n\n{t}"),
            _ => own.clone(),
        };
        let tag = inner.get("const").is_some();
        let kind = if tag { "string".to_string() } else { kind_of(sub, inner) };
        let fields = properties(inner, defs).into_iter().map(|(k, _)| k.clone()).collect();
        let choices = choices(inner, defs);
        out.push(FieldDoc { path: child.clone(), kind, description, own, fields, choices });
        walk(sub, &child, defs, out, depth + 1);
    }
}

/// The fields of an object schema; for a choice of objects (an enum with
/// a `kind` tag and fields per variant), the fields of every variant, each
/// once, first seen first.
fn properties<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> Vec<(&'a String, &'a Value)> {
    let mut out: Vec<(&String, &Value)> = Vec::new();
    let own = s.get("properties").and_then(Value::as_object).into_iter().flatten();
    let alternatives = ["oneOf", "anyOf"].into_iter().filter_map(|k| s.get(k).and_then(Value::as_array)).flatten();
    let variants =
        alternatives.map(|a| resolve(a, defs)).filter_map(|a| a.get("properties").and_then(Value::as_object)).flatten();
    for (k, v) in own.chain(variants) {
        if !out.iter().any(|(seen, _)| *seen == k) {
            out.push((k, v));
        }
    }
    out
}

/// A short type for people: "string", "list of table", "Duration", ...
fn kind_of(s: &Value, inner: &Value) -> String {
    let named =
        |v: &Value| v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")).map(str::to_string);
    let base = named(s)
        .or_else(|| s.get("anyOf").and_then(Value::as_array).and_then(|v| non_null(v)).and_then(named))
        .or_else(|| s.get("items").and_then(named))
        .or_else(|| inner.get("type").and_then(Value::as_str).map(str::to_string))
        .or_else(|| inner.get("enum").map(|_| "one of".to_string()))
        .unwrap_or_else(|| "value".into());
    let list = s.get("type").and_then(Value::as_str) == Some("array");
    let map = s.get("type").and_then(Value::as_str) == Some("object") && s.get("properties").is_none();
    let values = enum_values(inner);
    let base = if values.is_empty() { base } else { format!("{base} ({})", values.join(" | ")) };
    match (list, map) {
        (true, _) => format!("list of {base}"),
        (_, true) => format!("table of {base}"),
        _ => base,
    }
}

/// The values an enum takes with what each means: plain strings, or the
/// tag of each variant of a tagged enum.
fn choices(s: &Value, defs: &Map<String, Value>) -> Vec<(String, String)> {
    let alternatives = ["oneOf", "anyOf"].into_iter().filter_map(|k| s.get(k).and_then(Value::as_array)).flatten();
    let mut out = Vec::new();
    for alt in alternatives.map(|a| resolve(a, defs)) {
        let what = alt.get("description").and_then(Value::as_str).unwrap_or("").to_string();
        let tag = alt
            .get("properties")
            .and_then(Value::as_object)
            .and_then(|p| p.values().find_map(|v| v.get("const").and_then(Value::as_str).map(str::to_string)));
        let plain = enum_values(alt);
        match tag {
            Some(t) => out.push((t, what)),
            None => out.extend(plain.into_iter().map(|v| (v, what.clone()))),
        }
    }
    out
}

/// The strings an enum may be.
fn enum_values(s: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(v) = s.get("enum").and_then(Value::as_array) {
        out.extend(v.iter().filter_map(Value::as_str).map(str::to_string));
    }
    if let Some(c) = s.get("const").and_then(Value::as_str) {
        out.push(c.to_string());
    }
    for alt in s.get("oneOf").and_then(Value::as_array).into_iter().flatten() {
        out.extend(enum_values(alt));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_described() {
        let undocumented: Vec<String> =
            fields().into_iter().filter(|f| f.own.trim().is_empty()).map(|f| f.path).collect();
        assert!(undocumented.is_empty(), "fields without a doc comment: {undocumented:#?}");
    }

    #[test]
    fn fields_are_found_by_path_or_last_name() {
        let f = lookup("world.instances");
        assert_eq!(f.len(), 1);
        assert!(f[0].description.contains("Cloud instances"), "{f:?}");
        assert!(lookup("between").iter().any(|f| f.path == "expect.window.between"));
        assert!(lookup("[[world.connectors]]").iter().any(|f| f.fields.contains(&"region".to_string())));
        assert!(lookup("no-such-field").is_empty());
    }

    /// Every key of every scenario file is a field the schema knows (the
    /// loader refuses unknown keys; this checks the schema follows it).
    #[test]
    fn every_key_of_the_scenario_files_is_in_the_schema() {
        let known: std::collections::BTreeMap<String, FieldDoc> =
            fields().into_iter().map(|f| (f.path.clone(), f)).collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let files = crate::collect_scenarios(&[dir]).unwrap();
        assert!(files.len() > 100, "{} files", files.len());
        let mut missing = std::collections::BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let value: toml::Value = toml::from_str(&text).unwrap();
            keys(&value, "", &known, &mut missing);
        }
        assert!(missing.is_empty(), "keys the schema does not know: {missing:?}");
    }

    fn keys(
        v: &toml::Value,
        path: &str,
        known: &std::collections::BTreeMap<String, FieldDoc>,
        missing: &mut std::collections::BTreeSet<String>,
    ) {
        match v {
            toml::Value::Table(t) => {
                for (k, sub) in t {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    match known.get(&p) {
                        None => {
                            missing.insert(p);
                        }
                        // Free-form keys (groups, hosts, statuses) below.
                        Some(f) if f.kind.starts_with("table of") => {}
                        Some(_) => keys(sub, &p, known, missing),
                    }
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|i| keys(i, path, known, missing)),
            _ => {}
        }
    }

    /// Each form of the table, its words filled in, is an event the
    /// parser takes.
    #[test]
    fn every_event_form_parses() {
        fn fill(w: &str) -> &str {
            match w {
                "N" => "2",
                "SUFFIX" => "*.servicebus.windows.net",
                "NAME" => "c1",
                "PRODUCT" => "entra-connect",
                "VERSION" => "4.8",
                "SKEW" => "+1h",
                "V" => "1.5.4522.0",
                "GROUP" => "us",
                "REGION" => "eus",
                other => other,
            }
        }
        for (form, _) in EVENT_FORMS {
            let text: Vec<&str> = form.split_whitespace().map(fill).collect();
            let text = text.join(" ");
            let event: Result<TimelineEvent, String> = text.parse();
            assert!(event.is_ok(), "{form}: {event:?}");
        }
    }

    #[test]
    fn events_are_found_by_their_first_words() {
        let e = events("move tenant");
        assert_eq!(e.len(), 1);
        assert!(e[0].1.contains("GoAway"));
        assert!(events("crash relay 2").iter().any(|(form, _)| *form == "crash relay"), "a number fills no word");
        assert!(events("dance").is_empty());
    }
}
