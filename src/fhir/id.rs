//! Logical ids and version ids. <https://hl7.org/fhir/R4/datatypes.html#id>

/// `[A-Za-z0-9\-\.]{1,64}`: the R4 rule for `Resource.id`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A new server-assigned logical id: a random UUID, which fits the id rule.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new id that sorts by the time it was made: a version 7 UUID (RFC 9562 §5.7), 48 bits
/// of milliseconds then 74 random bits. For what is appended at a high rate and looked up
/// by id (AuditEvents, request ids), so that each new entry lands at the right edge of its
/// index instead of on a random page of it. Not for ids whose creation time is private.
pub fn new_time_ordered_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Parses a version id as Hearth assigns them: a positive integer.
pub fn parse_version(vid: &str) -> Option<i64> {
    if vid.is_empty() || vid.len() > 18 || !vid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    vid.parse().ok().filter(|v| *v > 0)
}

/// Parses an entity tag carrying a version, `W/"3"` or `"3"`, as sent in `If-Match` and
/// `If-None-Match`. <https://hl7.org/fhir/R4/http.html#versioning>
pub fn parse_etag(tag: &str) -> Option<i64> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    parse_version(inner)
}

/// The weak ETag of a version: `W/"3"`.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("example"));
        assert!(is_valid_id("a-b.C9"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("é"));
        assert!(is_valid_id(&new_id()));
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag(" W/\"1\" "), Some(1));
        assert_eq!(parse_etag("3"), None);
        assert_eq!(parse_etag("W/\"0\""), None);
        assert_eq!(parse_etag("W/\"-1\""), None);
        assert_eq!(parse_etag("W/\"x\""), None);
        assert_eq!(etag(7), "W/\"7\"");
    }
}
