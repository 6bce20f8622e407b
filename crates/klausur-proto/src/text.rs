//! The one rule for text people type that others read as a name or a title: display names
//! (accounts, invitations, lobby guests, guest credentials) and meeting titles. Every place a
//! name or title enters the system (HTTP, signaling, the command line, the identity CA) applies
//! it, so what the participant list shows is what was checked.
//!
//! # The rule
//!
//! - Runs of whitespace (any Unicode white space, e.g. a no-break space) become one space, and
//!   the ends are trimmed: "Olga  Ordner" and "Olga Ordner" cannot be told apart on screen, so
//!   they are the same name.
//! - Refused: control characters (C0, DEL, C1), line and paragraph separators, the bidirectional
//!   formatting characters (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069: they reorder what
//!   follows: "Olga" then U+202E then "resdrO" reads as someone else), invisible characters (zero-width space,
//!   joiners, word joiner and invisible operators, U+FEFF, the soft hyphen, the Mongolian vowel
//!   separator, the Hangul fillers, tag characters): a name that looks like another's must not
//!   pass as a different one.
//! - A name may not end in what the web client appends to the viewer's own entry ("(Sie)",
//!   "(you)", "(du)", in any case): nobody can appear to be the viewer.
//! - Lengths in characters: names 1 to [`crate::MAX_NAME_CHARS`], titles 1 to
//!   [`MAX_TITLE_CHARS`], after the whitespace rule.
//!
//! Written here rather than taken from a crate: the rule is a short list of code points chosen
//! for what a participant list can show; a general confusables library (UTS #39 skeletons) would
//! compare names with each other, which is a different question.

use std::fmt;

/// Longest meeting title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// Why a name or title is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// Nothing but white space.
    Empty,
    /// Longer than allowed (characters, after the whitespace rule).
    TooLong { max: usize },
    /// A character that changes how the text reads without being seen.
    Forbidden { code_point: u32 },
    /// The name ends in the web client's own-entry marker, such as "(Sie)".
    SelfMarker,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty => f.write_str("must not be empty"),
            TextError::TooLong { max } => write!(f, "must be at most {max} characters"),
            TextError::Forbidden { code_point } => write!(
                f,
                "must not contain U+{code_point:04X} (control, direction-changing or invisible \
                 characters)"
            ),
            TextError::SelfMarker => {
                f.write_str("must not end in \"(Sie)\" or \"(you)\": the list marks the viewer so")
            }
        }
    }
}

impl std::error::Error for TextError {}

/// Whether `c` is refused in names and titles (see the module docs).
pub fn forbidden(c: char) -> bool {
    let u = u32::from(c);
    c.is_control()
        || matches!(
            u,
            0x00AD              // soft hyphen
            | 0x034F            // combining grapheme joiner
            | 0x061C            // Arabic letter mark
            | 0x115F | 0x1160   // Hangul fillers
            | 0x17B4 | 0x17B5   // Khmer invisible vowels
            | 0x180B..=0x180F   // Mongolian free variation selectors and vowel separator
            | 0x200B..=0x200F   // zero-width space, joiners, LRM, RLM
            | 0x2028 | 0x2029   // line and paragraph separators
            | 0x202A..=0x202E   // bidi embeddings and overrides
            | 0x2060..=0x206F   // word joiner, invisible operators, bidi isolates, deprecated
            | 0x3164            // Hangul filler
            | 0xFEFF            // zero-width no-break space
            | 0xFFA0            // halfwidth Hangul filler
            | 0xFFF9..=0xFFFB   // interlinear annotation
            | 0x1D173..=0x1D17A // musical invisible formatting
            | 0xE0000..=0xE007F // tags
        )
}

/// Applies the whitespace rule and refuses forbidden characters; `max` characters at most.
fn clean(s: &str, max: usize) -> Result<String, TextError> {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() && !c.is_control() && !matches!(u32::from(c), 0x2028 | 0x2029) {
            space = !out.is_empty();
            continue;
        }
        if forbidden(c) {
            return Err(TextError::Forbidden {
                code_point: u32::from(c),
            });
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    // Tabs and newlines are control characters: refused above, not folded.
    if out.is_empty() {
        return Err(TextError::Empty);
    }
    if out.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    Ok(out)
}

/// A display name by the rule: the cleaned name, or why not.
pub fn check_name(s: &str) -> Result<String, TextError> {
    let name = clean(s, crate::MAX_NAME_CHARS)?;
    let lower = name.to_lowercase();
    let marker = lower
        .strip_suffix(')')
        .and_then(|body| body.rsplit_once('('))
        .is_some_and(|(_, inner)| matches!(inner.trim(), "sie" | "you" | "du"));
    if marker {
        return Err(TextError::SelfMarker);
    }
    Ok(name)
}

/// A meeting title by the rule.
pub fn check_title(s: &str) -> Result<String, TextError> {
    clean(s, MAX_TITLE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass_with_their_spaces_folded() {
        assert_eq!(check_name("  Olga   Ordner ").as_deref(), Ok("Olga Ordner"));
        assert_eq!(
            check_name("Jürgen Weiß-Öztürk").as_deref(),
            Ok("Jürgen Weiß-Öztürk")
        );
        assert_eq!(
            check_name("Olga\u{00A0}Ordner").as_deref(),
            Ok("Olga Ordner")
        );
        assert_eq!(check_name("李小龍").as_deref(), Ok("李小龍"));
        assert_eq!(check_name("Team (Bauamt)").as_deref(), Ok("Team (Bauamt)"));
        assert_eq!(check_name("Sieglinde").as_deref(), Ok("Sieglinde"));
        assert_eq!(
            check_title("Hauptausschuss – 3. Sitzung").as_deref(),
            Ok("Hauptausschuss – 3. Sitzung")
        );
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_refused() {
        for bad in [
            "Olga\u{202E}rendrO",
            "Ol\u{200B}ga",
            "Olga\u{2066}x\u{2069}",
            "Olga\u{FEFF}",
            "\u{200F}Olga",
            "Ol\u{00AD}ga",
            "Olga\u{E0041}",
            "Olga\u{3164}",
            "Olga\nOrdner",
            "Olga\tOrdner",
            "Olga\u{0007}",
            "Olga\u{2028}Ordner",
            "Olga\u{0085}",
        ] {
            assert!(
                matches!(check_name(bad), Err(TextError::Forbidden { .. })),
                "{bad:?}: {:?}",
                check_name(bad)
            );
            assert!(
                matches!(check_title(bad), Err(TextError::Forbidden { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_viewers_own_marker_is_refused_at_the_end_of_a_name() {
        for bad in [
            "Olga Ordner (Sie)",
            "Olga Ordner (you)",
            "Olga (SIE) ",
            "Olga ( du )",
        ] {
            assert_eq!(check_name(bad), Err(TextError::SelfMarker), "{bad:?}");
        }
        // Elsewhere, or in a title, it is just text.
        assert!(check_name("(Sie) Olga").is_ok());
        assert!(check_title("Fragen an (Sie)").is_ok());
        assert!(check_name("Olga (Sieber)").is_ok());
    }

    #[test]
    fn lengths_count_characters_after_folding() {
        assert_eq!(check_name("   "), Err(TextError::Empty));
        assert_eq!(check_name(""), Err(TextError::Empty));
        let long = "ä".repeat(crate::MAX_NAME_CHARS);
        assert_eq!(
            check_name(&long).map(|n| n.chars().count()),
            Ok(crate::MAX_NAME_CHARS)
        );
        assert_eq!(
            check_name(&format!("{long}x")),
            Err(TextError::TooLong {
                max: crate::MAX_NAME_CHARS
            })
        );
        let spaced = format!("a{}b", " ".repeat(500));
        assert_eq!(check_name(&spaced).as_deref(), Ok("a b"));
        assert!(check_title(&"t".repeat(MAX_TITLE_CHARS)).is_ok());
        assert!(check_title(&"t".repeat(MAX_TITLE_CHARS + 1)).is_err());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = check_name("Ol\u{202E}ga").expect_err("refused");
        assert!(e.to_string().contains("U+202E"), "{e}");
    }
}
