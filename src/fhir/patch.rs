//! PATCH bodies: JSON Patch (RFC 6902) and FHIRPath Patch (a Parameters resource, for the
//! simple paths most clients send). <https://hl7.org/fhir/R4/http.html#patch>
//! <https://hl7.org/fhir/R4/fhirpatch.html>

use serde_json::Value;

/// Applies a JSON Patch document to `target`. Any failing operation (including `test`) fails
/// the whole patch, and `target` is then unspecified: patch a copy.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON Patch document is an array of operations")?;
    for (n, op) in ops.iter().enumerate() {
        apply(target, op).map_err(|e| format!("operation {n}: {e}"))?;
    }
    Ok(())
}

fn field<'a>(op: &'a Value, name: &str) -> Result<&'a str, String> {
    op.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("'{name}' is missing"))
}

fn apply(target: &mut Value, op: &Value) -> Result<(), String> {
    let path = field(op, "path")?;
    match field(op, "op")? {
        "add" => add(target, path, value(op)?.clone()),
        "remove" => remove(target, path).map(|_| ()),
        "replace" => {
            let slot = target
                .pointer_mut(path)
                .ok_or_else(|| format!("nothing at '{path}'"))?;
            *slot = value(op)?.clone();
            Ok(())
        }
        "move" => {
            let from = field(op, "from")?;
            if path.starts_with(&format!("{from}/")) {
                return Err("cannot move a value into itself".into());
            }
            let v = remove(target, from)?;
            add(target, path, v)
        }
        "copy" => {
            let v = target
                .pointer(field(op, "from")?)
                .ok_or("nothing at 'from'")?
                .clone();
            add(target, path, v)
        }
        "test" => {
            let actual = target
                .pointer(path)
                .ok_or_else(|| format!("nothing at '{path}'"))?;
            if actual == value(op)? {
                Ok(())
            } else {
                Err(format!("test failed at '{path}'"))
            }
        }
        other => Err(format!("unknown op '{other}'")),
    }
}

fn value(op: &Value) -> Result<&Value, String> {
    op.get("value")
        .ok_or_else(|| "'value' is missing".to_string())
}

/// Splits a JSON pointer into its parent pointer and last token (unescaped).
fn split(path: &str) -> Result<(&str, String), String> {
    let at = path
        .rfind('/')
        .ok_or_else(|| format!("'{path}' is not a JSON pointer"))?;
    Ok((
        &path[..at],
        path[at + 1..].replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, v: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = v;
        return Ok(());
    }
    let (parent, last) = split(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, v);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let at = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| format!("bad array index '{last}'"))?
            };
            items.insert(at, v);
            Ok(())
        }
        _ => Err(format!("nothing to add to at '{parent}'")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => map
            .shift_remove(&last)
            .ok_or_else(|| format!("nothing at '{path}'")),
        Some(Value::Array(items)) => {
            let at = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(|| format!("bad array index '{last}'"))?;
            Ok(items.remove(at))
        }
        _ => Err(format!("nothing at '{path}'")),
    }
}

/// Applies a FHIRPath Patch (a Parameters resource of `operation` parts) whose paths are
/// simple: `Type.element(.element)*` with optional `[n]` indexes. Supported types: add,
/// insert, delete, replace, move. Anything else is refused with a reason.
pub fn fhirpath_patch(target: &mut Value, parameters: &Value) -> Result<(), String> {
    if parameters["resourceType"] != "Parameters" {
        return Err("a FHIRPath Patch is a Parameters resource".into());
    }
    let rtype = target["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ops = parameters["parameter"].as_array().ok_or("no operations")?;
    for (n, op) in ops.iter().enumerate() {
        if op["name"] != "operation" {
            return Err(format!("parameter {n} is not an 'operation'"));
        }
        let part = |name: &str| -> Option<&Value> {
            op["part"].as_array()?.iter().find(|p| p["name"] == name)
        };
        let text = |name: &str| {
            part(name).and_then(|p| {
                p["valueString"]
                    .as_str()
                    .or(p["valueCode"].as_str())
                    .or(p["valueInteger"].as_str())
            })
        };
        let kind = text("type").ok_or_else(|| format!("operation {n} has no type"))?;
        let path = text("path").ok_or_else(|| format!("operation {n} has no path"))?;
        let pointer = pointer_of(&rtype, path).map_err(|e| format!("operation {n}: {e}"))?;
        let value = part("value").map(value_of);
        let result = match kind {
            "add" => {
                let name = text("name").ok_or("add needs a name")?;
                let v = value.ok_or("add needs a value")?;
                let target_el = target
                    .pointer_mut(&pointer)
                    .ok_or("the path selects nothing")?;
                let map = target_el.as_object_mut().ok_or("add needs an element")?;
                match map.get_mut(name) {
                    Some(Value::Array(items)) => items.push(v),
                    Some(_) => return Err(format!("operation {n}: '{name}' already has a value")),
                    None => {
                        // Repeating elements are arrays in JSON; the validator refuses a wrong shape.
                        map.insert(name.to_string(), v);
                    }
                }
                Ok(())
            }
            "insert" => {
                let index: usize = part("index")
                    .and_then(|p| p["valueInteger"].as_u64())
                    .ok_or("insert needs an index")? as usize;
                let v = value.ok_or("insert needs a value")?;
                match target.pointer_mut(&pointer) {
                    Some(Value::Array(items)) if index <= items.len() => {
                        items.insert(index, v);
                        Ok(())
                    }
                    _ => Err("insert needs a list and an index within it".to_string()),
                }
            }
            "delete" => remove(target, &pointer).map(|_| ()).or(Ok(())),
            "replace" => {
                let v = value.ok_or("replace needs a value")?;
                let slot = target
                    .pointer_mut(&pointer)
                    .ok_or("the path selects nothing")?;
                *slot = v;
                Ok(())
            }
            "move" => {
                let source: usize = part("source")
                    .and_then(|p| p["valueInteger"].as_u64())
                    .ok_or("move needs a source")? as usize;
                let dest: usize = part("destination")
                    .and_then(|p| p["valueInteger"].as_u64())
                    .ok_or("move needs a destination")? as usize;
                match target.pointer_mut(&pointer) {
                    Some(Value::Array(items)) if source < items.len() && dest < items.len() => {
                        let v = items.remove(source);
                        items.insert(dest, v);
                        Ok(())
                    }
                    _ => Err("move needs a list and indexes within it".to_string()),
                }
            }
            other => Err(format!("unknown operation type '{other}'")),
        };
        result.map_err(|e: String| {
            if e.starts_with("operation") {
                e
            } else {
                format!("operation {n}: {e}")
            }
        })?;
    }
    // A delete may leave an empty array behind: JSON FHIR has none.
    prune(target);
    Ok(())
}

/// The value of a FHIRPath Patch `value` part: its `value[x]`, or its parts as an element.
fn value_of(part: &Value) -> Value {
    if let Some(map) = part.as_object() {
        for (k, v) in map {
            if k.starts_with("value") {
                return v.clone();
            }
        }
        if let Some(parts) = map.get("part").and_then(Value::as_array) {
            let mut element = serde_json::Map::new();
            for p in parts {
                if let Some(name) = p["name"].as_str() {
                    element.insert(name.to_string(), value_of(p));
                }
            }
            return Value::Object(element);
        }
    }
    Value::Null
}

/// `Patient.name[0].given` → `/name/0/given`.
fn pointer_of(rtype: &str, path: &str) -> Result<String, String> {
    let rest = path
        .strip_prefix(rtype)
        .ok_or_else(|| format!("the path '{path}' must start with {rtype}"))?;
    let mut pointer = String::new();
    for segment in rest.split('.').skip(1) {
        let (name, index) = match segment.split_once('[') {
            Some((n, i)) => (n, Some(i.strip_suffix(']').ok_or("unclosed '['")?)),
            None => (segment, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("only simple paths are supported, not '{path}'"));
        }
        pointer.push('/');
        pointer.push_str(name);
        if let Some(i) = index {
            let i: usize = i.parse().map_err(|_| format!("bad index in '{path}'"))?;
            pointer.push_str(&format!("/{i}"));
        }
    }
    Ok(pointer)
}

fn prune(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for item in map.values_mut() {
                prune(item);
            }
            map.retain(|_, item| {
                !matches!(item, Value::Array(a) if a.is_empty())
                    && !matches!(item, Value::Object(o) if o.is_empty())
            });
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_operations() {
        let mut p = json!({"resourceType": "Patient", "name": [{"family": "A"}], "active": true});
        json_patch(
            &mut p,
            &json!([
                {"op": "test", "path": "/active", "value": true},
                {"op": "replace", "path": "/name/0/family", "value": "B"},
                {"op": "add", "path": "/name/-", "value": {"family": "C"}},
                {"op": "remove", "path": "/active"},
                {"op": "copy", "from": "/name/0", "path": "/name/0"},
            ]),
        )
        .unwrap();
        assert_eq!(
            p,
            json!({"resourceType": "Patient", "name": [{"family": "B"}, {"family": "B"}, {"family": "C"}]})
        );
        assert!(json_patch(
            &mut p,
            &json!([{"op": "test", "path": "/name/0/family", "value": "Z"}])
        )
        .is_err());
        assert!(json_patch(&mut p, &json!([{"op": "remove", "path": "/nothing"}])).is_err());
        assert!(json_patch(&mut p, &json!({"op": "remove"})).is_err());
    }

    #[test]
    fn fhirpath_patch_operations() {
        let mut p = json!({"resourceType": "Patient", "name": [{"family": "A", "given": ["x"]}]});
        let op = |kind: &str, path: &str, extra: Vec<Value>| {
            let mut parts = vec![
                json!({"name": "type", "valueCode": kind}),
                json!({"name": "path", "valueString": path}),
            ];
            parts.extend(extra);
            json!({"name": "operation", "part": parts})
        };
        let patch = json!({"resourceType": "Parameters", "parameter": [
            op("replace", "Patient.name[0].family", vec![json!({"name": "value", "valueString": "B"})]),
            op("add", "Patient", vec![json!({"name": "name", "valueString": "birthDate"}), json!({"name": "value", "valueDate": "2000-01-01"})]),
            op("insert", "Patient.name[0].given", vec![json!({"name": "index", "valueInteger": 0}), json!({"name": "value", "valueString": "w"})]),
            op("delete", "Patient.name[0].given[1]", vec![]),
        ]});
        fhirpath_patch(&mut p, &patch).unwrap();
        assert_eq!(
            p,
            json!({"resourceType": "Patient", "name": [{"family": "B", "given": ["w"]}], "birthDate": "2000-01-01"})
        );
        let bad = json!({"resourceType": "Parameters", "parameter": [op("delete", "Patient.name.where(use='x')", vec![])]});
        assert!(fhirpath_patch(&mut p, &bad).is_err());
    }
}
