//! String normalisation for search: the default and `:contains` string matches ignore case
//! and accents (<https://hl7.org/fhir/R4/search.html#string>), so both the indexed value and
//! the searched value are folded the same way: Unicode NFD, combining marks removed, lower case.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Folds case and accents: `Ébène` and `ebene` both become `ebene`.
pub fn fold(value: &str) -> String {
    value
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The smallest string greater than every string starting with `prefix`, for prefix matching
/// as a range (`value >= prefix AND value < upper`), which every index can serve.
pub fn prefix_upper_bound(prefix: &str) -> String {
    let mut upper = prefix.to_string();
    upper.push(char::MAX);
    upper
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
pub fn like_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_accents() {
        assert_eq!(fold("Ébène"), "ebene");
        assert_eq!(fold("MÜLLER"), "muller");
        assert_eq!(fold("Zoë Ångström"), "zoe angstrom");
        assert_eq!(fold("鈴木"), "鈴木");
    }

    #[test]
    fn escapes_like_metacharacters() {
        assert_eq!(like_escape("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
