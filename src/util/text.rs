//! Free text that comes from a user (who changed a threshold and why, an officer's note): shown
//! with control characters escaped, and checked to be printable and of bounded length before it
//! is accepted into a message or a log.

use anyhow::{Result, bail};

/// Text with control characters escaped and cut to `max` characters (an ellipsis marks a cut), so
/// a value can neither forge an output line nor flood it.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks that `value` (named `what` in the error) is `min..=max` characters of printable text:
/// no control characters (no newline, no escape sequence), no leading or trailing blanks.
pub fn check_label(what: &str, value: &str, min: usize, max: usize) -> Result<()> {
    let n = value.chars().count();
    if n < min || n > max {
        bail!("{what} must be {min} to {max} characters (got {n}: {:?})", printable(value, 40));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        bail!("{what} has a control character {:?}; only printable text is accepted", c);
    }
    if value.trim() != value {
        bail!("{what} starts or ends with blanks");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        assert_eq!(printable("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert!(check_label("by", "张三 (officer 31)", 1, 64).is_ok());
        let e = check_label("by", "mallory\n2026-01-01T00:00:00Z  INFO fake", 1, 64).unwrap_err().to_string();
        assert!(e.contains("control character"), "{e}");
        assert!(check_label("by", "", 1, 64).unwrap_err().to_string().contains("1 to 64"));
        assert!(check_label("reason", &"x".repeat(2000), 0, 1024).unwrap_err().to_string().contains("got 2000"));
    }
}
