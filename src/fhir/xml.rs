//! The XML format, through fhirbolt, without losing narrative whitespace.
//! <https://hl7.org/fhir/R4/xml.html>
//!
//! fhirbolt's XML writer (and reader) normalise whitespace inside narrative XHTML, which would
//! change what a clinician sees. Hearth therefore lifts every narrative `div` out before
//! handing a resource to fhirbolt, puts a numbered placeholder in its place, and puts the
//! original markup back into fhirbolt's output, byte for byte.

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::Value;

use super::xhtml::XHTML_NS;
use crate::error::{Error, Result};

/// XML nested deeper than this is refused before any parser recurses into it.
const MAX_XML_DEPTH: usize = 256;

fn placeholder(n: usize) -> String {
    format!("<div xmlns=\"{XHTML_NS}\">hearth-narrative-{n}</div>")
}

/// Writes a resource (JSON representation) as FHIR XML.
pub fn to_xml(resource: &Value) -> Result<String> {
    let mut resource = resource.clone();
    let mut divs = Vec::new();
    lift_divs(&mut resource, &mut divs);
    let mut xml = hearth_fhirbolt::json_to_xml(&resource)
        .map_err(|e| Error::internal(format!("cannot write the resource as XML: {e}")))?;
    for (n, div) in divs.iter().enumerate() {
        xml = xml.replacen(&placeholder(n), div, 1);
    }
    Ok(xml)
}

/// Reads a FHIR XML resource into its JSON representation.
pub fn from_xml(text: &str) -> Result<Value> {
    let (text, divs) = lift_xml_divs(text)?;
    let mut resource = hearth_fhirbolt::xml_to_json(&text)
        .map_err(|e| Error::bad_request(format!("the XML body is not a valid R4 resource: {e}")))?;
    restore_divs(&mut resource, &divs);
    Ok(resource)
}

/// Replaces every narrative div string in `value` by a placeholder, collecting the originals.
fn lift_divs(value: &mut Value, divs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "div" {
                    if let Value::String(s) = v {
                        let original = std::mem::replace(s, placeholder(divs.len()));
                        divs.push(original);
                        continue;
                    }
                }
                lift_divs(v, divs);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| lift_divs(v, divs)),
        _ => {}
    }
}

/// Puts the original narrative back where fhirbolt returned a placeholder.
fn restore_divs(value: &mut Value, divs: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "div" {
                    if let Value::String(s) = v {
                        if let Some(original) = divs.iter().enumerate().find_map(|(n, d)| {
                            s.contains(&format!(">hearth-narrative-{n}<")).then_some(d)
                        }) {
                            *s = original.clone();
                        }
                        continue;
                    }
                }
                restore_divs(v, divs);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| restore_divs(v, divs)),
        _ => {}
    }
}

/// Scans an XML document once: refuses DTDs and excessive depth, and cuts out every
/// `<div xmlns="http://www.w3.org/1999/xhtml">` element, returning the text with placeholders
/// and the original elements in order.
fn lift_xml_divs(text: &str) -> Result<(String, Vec<String>)> {
    let mut reader = Reader::from_str(text);
    reader.check_end_names(true);
    let mut depth = 0usize;
    let mut out = String::with_capacity(text.len());
    let mut divs = Vec::new();
    let mut copied = 0usize;
    // (start offset, depth) of the narrative div being read, if any.
    let mut open_div: Option<(usize, usize)> = None;
    loop {
        let before = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| Error::bad_request(format!("the XML body is not well-formed: {e}")))?;
        let after = reader.buffer_position();
        match &event {
            Event::DocType(_) => {
                return Err(Error::bad_request("XML with a DOCTYPE is not accepted"));
            }
            Event::Start(e) | Event::Empty(e) => {
                let is_div = open_div.is_none()
                    && e.name().as_ref() == b"div"
                    && e.attributes().flatten().any(|a| {
                        a.key.as_ref() == b"xmlns" && a.value.as_ref() == XHTML_NS.as_bytes()
                    });
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                    if depth > MAX_XML_DEPTH {
                        return Err(Error::bad_request("the XML body is nested too deeply"));
                    }
                    if is_div {
                        open_div = Some((before, depth));
                    }
                } else if is_div {
                    out.push_str(&text[copied..before]);
                    out.push_str(&placeholder(divs.len()));
                    divs.push(text[before..after].to_string());
                    copied = after;
                }
            }
            Event::End(_) => {
                if let Some((start, d)) = open_div {
                    if d == depth {
                        out.push_str(&text[copied..start]);
                        out.push_str(&placeholder(divs.len()));
                        divs.push(text[start..after].to_string());
                        copied = after;
                        open_div = None;
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out.push_str(&text[copied..]);
    Ok((out, divs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn narrative_whitespace_survives_both_ways() {
        let div =
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">\n  <p>Peter   <b> James </b></p>\n</div>";
        let patient = json!({"resourceType": "Patient", "id": "x",
            "text": {"status": "generated", "div": div}, "active": true});
        let xml = to_xml(&patient).unwrap();
        assert!(xml.contains(div), "{xml}");
        let back = from_xml(&xml).unwrap();
        assert_eq!(back["text"]["div"], div);
        assert_eq!(back["active"], true);
    }

    #[test]
    fn refuses_dtds_and_deep_nesting() {
        let dtd = "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><Patient xmlns=\"http://hl7.org/fhir\"/>";
        assert!(from_xml(dtd).is_err());
        let deep = "<a>".repeat(1000) + &"</a>".repeat(1000);
        assert!(from_xml(&deep).is_err());
        assert!(from_xml(
            "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"true\"></Patient>"
        )
        .is_err());
    }
}
