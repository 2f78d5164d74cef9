//! Untrusted text as it may appear in a log line or an error message: bounded and escaped, so a
//! caller can neither write megabytes into the logs nor forge a log line with a newline.

use std::fmt;

/// Characters of an untrusted string kept in a log line; the rest is summarised.
pub const MAX_PRINTED_CHARS: usize = 96;

/// Displays at most [`MAX_PRINTED_CHARS`] characters of the text, control and other
/// non-printing characters escaped (`\n`, `\u{1b}`), and the length of a longer text.
#[derive(Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (count, c) in self.0.chars().enumerate() {
            if count == MAX_PRINTED_CHARS {
                return write!(f, "…({} bytes in all)", self.0.len());
            }
            if c == '\'' || c == '"' {
                // Quotes are safe in our log formats; escape_debug would add backslashes.
                write!(f, "{c}")?;
            } else {
                write!(f, "{}", c.escape_debug())?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_printable_text_is_unchanged() {
        assert_eq!(Printable("req-1_ok'\"").to_string(), "req-1_ok'\"");
        assert_eq!(Printable("clé").to_string(), "clé");
    }

    #[test]
    fn control_characters_are_escaped_and_long_text_is_cut() {
        assert_eq!(
            Printable("a\nINFO forged line\u{1b}[31m").to_string(),
            "a\\nINFO forged line\\u{1b}[31m"
        );
        let long = "x".repeat(200_000);
        let printed = Printable(&long).to_string();
        assert!(printed.len() < MAX_PRINTED_CHARS + 40, "{}", printed.len());
        assert!(printed.ends_with("…(200000 bytes in all)"), "{printed}");
    }
}
