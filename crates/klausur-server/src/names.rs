//! The text rules for what people type in: usernames, display names and meeting titles. Pure
//! functions; the HTTP handlers, the command line and the CA service all check by these.

/// A username: 2 to 40 characters of a-z, 0-9, '.', '_' or '-' (lowercased, trimmed); the
/// cleaned name, or a message that says what is wrong.
pub fn validate_username(u: &str) -> Result<String, String> {
    let u = u.trim().to_lowercase();
    let ok = (2..=40).contains(&u.len())
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(u)
    } else {
        Err("username must be 2 to 40 characters of a-z, 0-9, '.', '_' or '-'".into())
    }
}

/// A display name by the one rule of [`klausur_proto::text`] (at most
/// [`klausur_proto::MAX_NAME_CHARS`]
/// characters): the cleaned name, or a message that says what is wrong.
pub fn validate_display_name(n: &str) -> Result<String, String> {
    klausur_proto::text::check_name(n).map_err(|e| format!("the name {e}"))
}

/// A meeting title by the same rule.
pub fn validate_title(t: &str) -> Result<String, String> {
    klausur_proto::text::check_title(t).map_err(|e| format!("the title {e}"))
}
