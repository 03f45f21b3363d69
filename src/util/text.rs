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

/// Whether `c` is invisible: a Unicode default-ignorable code point (zero-width spaces and
/// joiners, bidi controls, variation selectors, soft hyphen, ...) or a format character.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF
        | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// An identifier as people mean it, for comparing two of them: Unicode NFKC (full-width and
/// compatibility forms folded), lower case, with invisible and control characters and blanks
/// removed. `JS-2026-0001`, `js-2026-0001`, `ＪＳ－２０２６－０００１` and `JS-2026-0001` followed by a
/// zero-width space are one id.
pub fn normalize_id(s: &str) -> String {
    let nfkc = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc().normalize(s);
    nfkc.chars()
        .filter(|c| !c.is_control() && !is_invisible(*c) && !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_look_alike_normalise_to_one() {
        let a = normalize_id("JS-2026-0001");
        for v in [
            "js-2026-0001",
            "JS-2026-0001\u{200b}",
            "ＪＳ－２０２６－０００１",
            " JS-2026-0001 ",
            "JS\u{2060}-2026-0001",
        ] {
            assert_eq!(normalize_id(v), a, "{v:?}");
        }
        assert_ne!(normalize_id("JS-2026-0002"), a);
        assert!(is_invisible('\u{200b}') && is_invisible('\u{feff}') && !is_invisible('J'));
    }

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
