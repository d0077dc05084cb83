//! The one check for every URL path segment built from data: logical ids, version ids and
//! operation names.
//!
//! A segment the URL layer would rewrite retargets a request: `.` and `..` are removed by URL
//! normalisation (so `DELETE [base]/Patient/..` becomes `DELETE [base]/Patient`), `%2e` is read as
//! a dot by many servers, `/`, `\`, `?` and `#` end the segment, and control characters and
//! spaces are rewritten or refused by proxies. A segment therefore passes only when it is a FHIR
//! `id` (`[A-Za-z0-9\-\.]{1,64}`, which already excludes `%`, `/`, `\`, `?`, `#`, spaces and
//! control characters) and is not made of dots only.

use crate::error::Interaction;
use crate::{Error, Result};

/// The longest FHIR `id`.
const MAX_ID_LEN: usize = 64;

/// Whether `id` is safe as a logical or version id in a request path: 1-64 of `A-Z a-z 0-9 - .`
/// (the FHIR `id` type), and not only dots (`.`, `..`, `...`, which URL normalisation removes or
/// servers read as parent directories).
///
/// ```
/// use carebridge_fhir_client::is_valid_id;
///
/// assert!(is_valid_id("a-1.2"));
/// assert!(!is_valid_id(".."));
/// assert!(!is_valid_id("%2e%2e"));
/// assert!(!is_valid_id("a/b"));
/// ```
pub fn is_valid_id(id: &str) -> bool {
    carebridge_fhir_model::is_valid_id(id)
}

/// Checks a logical or version id ([`is_valid_id`]) before it becomes a path segment.
pub(crate) fn check_id(id: &str, what: &str, interaction: Interaction) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            interaction,
            reason: format!(
                "{what} is not a valid FHIR id (1-64 of A-Z a-z 0-9 - ., not only dots)"
            ),
        })
    }
}

/// Whether `name` is safe as an operation name after the `$`: letters, digits, `-` and `_`.
pub(crate) fn is_valid_operation_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ID_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks an operation name (without the `$`) before it becomes a path segment.
pub(crate) fn check_operation_name(name: &str) -> Result<()> {
    if is_valid_operation_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            interaction: Interaction::Operation,
            reason: "an operation name is 1-64 letters, digits, - and _ after the $".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids the URL layer or a server would rewrite, or that leave the segment.
    const HOSTILE: &[&str] = &[
        "",
        ".",
        "..",
        "...",
        "%2e",
        "%2E%2e",
        ".%2e",
        "%2e.",
        "..;",
        ".;",
        "%252e%252e",
        "/",
        "a/b",
        "../Patient",
        "\\",
        "a\\b",
        "..\\..",
        "?",
        "a?b",
        "#",
        "a#b",
        "a%2fb",
        " ",
        "a b",
        "a\tb",
        "\0",
        "a\nb",
        "a\r",
        "\u{7f}",
        "\u{85}",
        "é",
        "\u{ff0e}\u{ff0e}",
        "a;b",
        "a,b",
        "a|b",
        "a$b",
        "$everything",
        "_history",
    ];

    #[test]
    fn hostile_ids_are_refused() {
        for id in HOSTILE {
            assert!(!is_valid_id(id), "{id:?} was accepted");
            let error = check_id(id, "the id", Interaction::Read).unwrap_err();
            assert!(
                matches!(error, Error::InvalidInput { .. }),
                "{id:?}: {error:?}"
            );
        }
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(&".".repeat(64)));
    }

    #[test]
    fn fhir_ids_with_dots_are_accepted() {
        for id in [
            "a", "1", "a.b", ".a", "a.", "..a", "a..", "-", "-.", "A-z.0",
        ] {
            assert!(is_valid_id(id), "{id:?} was refused");
            assert!(check_id(id, "the id", Interaction::Read).is_ok());
        }
        assert!(is_valid_id(&"a".repeat(64)));
    }

    #[test]
    fn operation_names() {
        assert!(check_operation_name("everything").is_ok());
        assert!(check_operation_name("validate-code").is_ok());
        for name in ["", ".", "..", "a/b", "a.b", "%2e", "a b", "a?b", "$x"] {
            assert!(check_operation_name(name).is_err(), "{name:?} was accepted");
        }
        assert!(check_operation_name(&"a".repeat(65)).is_err());
    }
}
