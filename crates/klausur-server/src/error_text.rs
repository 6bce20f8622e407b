//! How an error reads for the operator: its causes in one line, each once.

/// The text of a command's error for the operator: each cause once. An error's message often
/// repeats its source's (sqlx and the store both do), so a cause already contained in the text
/// so far is left out instead of being printed two or three times.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
