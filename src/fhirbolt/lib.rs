//! Hearth's one door to [fhirbolt](https://docs.rs/fhirbolt): the typed R4 model, its strict
//! parser and its XML reader and writer.
//!
//! fhirbolt is generic over every resource type and costs minutes of compile time wherever it
//! is monomorphised. This leaf crate instantiates it once, behind three non-generic functions
//! that speak `serde_json::Value`, so that a rebuild of Hearth never pays for it again.
//! Nothing else in Hearth may call fhirbolt.

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode, SerializationConfig};

/// Runs a fhirbolt call, turning a panic inside it (it unwraps on some malformed input) into
/// an error, so that no request can take a worker down.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("the resource cannot be read by the R4 model".to_string()))
}

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

/// Parses a FHIR R4 XML resource (strict mode) into its JSON representation.
pub fn xml_to_json(xml: &str) -> Result<serde_json::Value, String> {
    guarded(|| {
        let resource: Resource =
            fhirbolt::xml::from_str(xml, strict()).map_err(|e| e.to_string())?;
        fhirbolt::json::to_json_value(resource, Some(SerializationConfig { always_sort: false }))
            .map_err(|e| e.to_string())
    })
}

/// Writes a resource given in its JSON representation as FHIR R4 XML.
pub fn json_to_xml(json: &serde_json::Value) -> Result<String, String> {
    guarded(|| {
        let resource: Resource =
            fhirbolt::json::from_json_value(json.clone(), strict()).map_err(|e| e.to_string())?;
        fhirbolt::xml::to_string(&resource, None).map_err(|e| e.to_string())
    })
}

/// Checks a JSON resource against the typed R4 model in strict mode: unknown elements,
/// missing mandatory elements and two values of one choice element are rejected.
pub fn check_json(json: &serde_json::Value) -> Result<(), String> {
    guarded(|| {
        fhirbolt::json::from_json_value::<Resource>(json.clone(), strict())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}
