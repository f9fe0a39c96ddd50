//! Server-managed parts of a resource: `id`, `meta.versionId`, `meta.lastUpdated`.
//! <https://hl7.org/fhir/R4/resource.html#Meta>

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::datetime::format_instant;

/// Sets the logical id and the server-managed meta elements, keeping the client's other meta
/// (profile, tag, security, source) and putting `resourceType`, `id`, `meta` first.
pub fn stamp(resource: &mut Value, id: &str, version: i64, last_updated: DateTime<Utc>) {
    let Value::Object(map) = resource else { return };
    let mut meta = match map.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.shift_remove("versionId");
    meta.shift_remove("lastUpdated");
    meta.shift_remove("_versionId");
    meta.shift_remove("_lastUpdated");
    let mut stamped = Map::with_capacity(2 + meta.len());
    stamped.insert("versionId".into(), Value::String(version.to_string()));
    stamped.insert(
        "lastUpdated".into(),
        Value::String(format_instant(last_updated)),
    );
    stamped.extend(meta);
    map.shift_remove("id");
    map.shift_insert(0, "id".into(), Value::String(id.to_string()));
    map.shift_insert(1, "meta".into(), Value::Object(stamped));
    if let Some(rt) = map.shift_remove("resourceType") {
        map.shift_insert(0, "resourceType".into(), rt);
    }
}

/// Puts `resourceType`, `id` and `meta` first, as people expect to read them. JSON key order
/// carries no meaning in FHIR, but PostgreSQL `jsonb` sorts keys by length.
pub fn order_for_display(resource: &mut Value) {
    let Value::Object(map) = resource else { return };
    let mut position = 0;
    for key in ["resourceType", "id", "meta"] {
        if let Some(value) = map.shift_remove(key) {
            map.shift_insert(position, key.to_string(), value);
            position += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamps_and_keeps_client_meta() {
        let mut p = json!({"name": [{"family": "X"}], "resourceType": "Patient", "id": "old",
            "meta": {"versionId": "99", "profile": ["http://p"], "lastUpdated": "2000-01-01T00:00:00Z"}});
        let t = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        stamp(&mut p, "new", 3, t);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"resourceType":"Patient","id":"new","meta":{"versionId":"3","lastUpdated":"2024-01-02T03:04:05.123456Z","profile":["http://p"]},"name":[{"family":"X"}]}"#
        );
    }

    #[test]
    fn orders_for_display() {
        let mut p = json!({"gender": "male", "meta": {}, "id": "a", "resourceType": "Patient"});
        order_for_display(&mut p);
        let keys: Vec<_> = p.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["resourceType", "id", "meta", "gender"]);
    }
}
