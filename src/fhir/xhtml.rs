//! Narrative XHTML (`Narrative.div`). <https://hl7.org/fhir/R4/narrative.html#xhtml>
//!
//! In JSON the div is a string; in XML it is embedded markup. Hearth checks that it is one
//! well-formed `<div>` in the XHTML namespace without active content (rules txt-1 and txt-2),
//! so that it can always be written back as XML and shown to a user safely.

use quick_xml::events::Event;
use quick_xml::Reader;

pub const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// Elements R4 forbids in narrative (txt-1): scripts, forms, frames, objects, document parts.
const FORBIDDEN: [&[u8]; 14] = [
    b"script",
    b"object",
    b"embed",
    b"applet",
    b"iframe",
    b"frame",
    b"frameset",
    b"form",
    b"input",
    b"base",
    b"link",
    b"meta",
    b"head",
    b"body",
];

/// Deeper markup than this is refused rather than parsed.
const MAX_DEPTH: usize = 64;

/// Checks one narrative div; the error says what is wrong with it.
pub fn check_div(div: &str) -> Result<(), String> {
    let mut reader = Reader::from_str(div);
    reader.check_end_names(true);
    let mut depth = 0usize;
    let mut seen_root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("narrative is not well-formed XHTML: {e}"))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if depth == 0 {
                    if seen_root {
                        return Err("narrative must be a single <div> element".into());
                    }
                    seen_root = true;
                    if name != b"div" || e.name().as_ref() != b"div" {
                        return Err("narrative must be a <div> element".into());
                    }
                    let ns_ok = e.attributes().flatten().any(|a| {
                        a.key.as_ref() == b"xmlns" && a.value.as_ref() == XHTML_NS.as_bytes()
                    });
                    if !ns_ok {
                        return Err(format!("narrative <div> must declare xmlns=\"{XHTML_NS}\""));
                    }
                }
                if FORBIDDEN.iter().any(|f| name.eq_ignore_ascii_case(f)) {
                    return Err(format!(
                        "narrative must not contain <{}> (txt-1)",
                        String::from_utf8_lossy(name)
                    ));
                }
                for attr in e.attributes() {
                    let attr =
                        attr.map_err(|e| format!("narrative has a broken attribute: {e}"))?;
                    let key = attr.key.as_ref();
                    if key.len() > 2 && key[..2].eq_ignore_ascii_case(b"on") {
                        return Err(
                            "narrative must not contain event handler attributes (txt-1)".into(),
                        );
                    }
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err("narrative is nested too deeply".into());
                    }
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(ref t) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err("narrative has text outside its <div>".into());
            }
            Event::DocType(_) | Event::PI(_) | Event::Decl(_) => {
                return Err(
                    "narrative must not contain a DOCTYPE, declaration or processing instruction"
                        .into(),
                );
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Err("narrative must be a <div> element".into());
    }
    if depth != 0 {
        return Err("narrative is not well-formed XHTML: unclosed element".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_narrative() {
        check_div(r#"<div xmlns="http://www.w3.org/1999/xhtml"><p>Hi <b>there</b></p>  </div>"#)
            .unwrap();
        check_div(r#"<div xmlns="http://www.w3.org/1999/xhtml"/>"#).unwrap();
    }

    #[test]
    fn rejects_broken_or_active_narrative() {
        for bad in [
            "<div>no namespace</div>",
            r#"<div xmlns="http://www.w3.org/1999/xhtml"><p>unclosed</div>"#,
            r#"<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>"#,
            r#"<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">a</p></div>"#,
            r#"<p xmlns="http://www.w3.org/1999/xhtml">a</p>"#,
            r#"<div xmlns="http://www.w3.org/1999/xhtml">a</div><div xmlns="http://www.w3.org/1999/xhtml">b</div>"#,
            "plain text",
            "",
        ] {
            assert!(check_div(bad).is_err(), "{bad}");
        }
    }
}
