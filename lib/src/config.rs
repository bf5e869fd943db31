//! What the config files (worker, autoscaler) share: their TOML errors told as one line.

/// A TOML error of a config file as one line: `line N: message` (the parser's own message may
/// span lines; they are joined with `; `).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_name_their_line() {
        let text = "a = 1\nb = \n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        let line = toml_error(text, &e);
        assert!(
            line.starts_with("line 2: invalid string; expected"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
}
