//! Checks for the short free-text fields people type (names, reasons).

/// Trims `raw` and checks it: `min` to `max` characters, no control characters. The error is
/// the message to show, naming the field as `what`.
pub(crate) fn clean_text(raw: &str, what: &str, min: usize, max: usize) -> Result<String, String> {
    let text = raw.trim();
    let n = text.chars().count();
    if n < min || n > max || text.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be {min} to {max} characters, without control characters"
        ));
    }
    Ok(text.to_owned())
}
