//! The one rule for text a user, a tenant or a guest names things with (tenant names,
//! connection names, connector versions, guest state keys, and every lookup key the store is
//! asked for): no control characters (NUL included), no bidirectional overrides or isolates,
//! no zero-width or otherwise invisible format characters.
//!
//! Why: such characters make two different names look alike in a listing or a log line (a
//! U+202E reverses what follows), break terminals and log parsers, and a NUL is refused by
//! PostgreSQL's text type, which used to turn a bad name into a failing statement and a 503.

/// Why a name was refused. The message names the character by code point, never echoes the
/// value (which may itself be what breaks a terminal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "contains U+{code:04X} at character {position}; control, bidirectional and invisible characters are not allowed"
)]
pub struct NameError {
    /// The refused character's code point.
    pub code: u32,
    /// 0-based index in characters.
    pub position: usize,
}

/// Checks `value` against the rule.
pub fn check(value: &str) -> Result<(), NameError> {
    match value.chars().enumerate().find(|(_, c)| forbidden(*c)) {
        Some((position, character)) => Err(NameError {
            code: u32::from(character),
            position,
        }),
        None => Ok(()),
    }
}

/// Whether `value` passes the rule.
pub fn is_clean(value: &str) -> bool {
    check(value).is_ok()
}

/// The refused characters as inclusive ranges, in order: the one table [`check`] reads and
/// [`regex_class`] spells, so a document's `pattern` cannot drift from the rule.
///
/// The control (Cc) category: C0 (NUL, tab, newline...), DEL and C1. Then the format (Cf) and
/// separator characters that render as nothing or reorder text, plus the Hangul fillers,
/// which render as blanks.
pub const FORBIDDEN: &[(char, char)] = &[
    ('\u{0000}', '\u{001F}'),   // C0 controls
    ('\u{007F}', '\u{009F}'),   // DEL and C1 controls
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{034F}', '\u{034F}'),   // combining grapheme joiner
    ('\u{061C}', '\u{061C}'),   // Arabic letter mark
    ('\u{115F}', '\u{1160}'),   // Hangul fillers
    ('\u{180E}', '\u{180E}'),   // Mongolian vowel separator
    ('\u{200B}', '\u{200F}'),   // zero-width space, (non-)joiner, LRM, RLM
    ('\u{2028}', '\u{202E}'),   // line/paragraph separators, bidi embeddings and overrides
    ('\u{2060}', '\u{206F}'),   // word joiner, invisible operators, bidi isolates
    ('\u{3164}', '\u{3164}'),   // Hangul filler
    ('\u{FE00}', '\u{FE0F}'),   // variation selectors
    ('\u{FEFF}', '\u{FEFF}'),   // zero-width no-break space (BOM)
    ('\u{FFA0}', '\u{FFA0}'),   // halfwidth Hangul filler
    ('\u{FFF9}', '\u{FFFB}'),   // interlinear annotation
    ('\u{FFFE}', '\u{FFFF}'),   // noncharacters
    ('\u{E0000}', '\u{E0FFF}'), // tags and variation selectors supplement
];

fn forbidden(c: char) -> bool {
    FORBIDDEN
        .iter()
        .any(|(low, high)| (*low..=*high).contains(&c))
}

/// The body of a regular-expression character class (no brackets) naming every character
/// in `ranges`: `\uXXXX` escapes for the Basic Multilingual Plane, the character itself above
/// it (a Unicode-aware reading, as JSON Schema's and Python's, takes it as one character).
/// For JSON Schema `pattern`s such as `^[^...]*$`.
pub fn regex_class(ranges: &[(char, char)]) -> String {
    let spell = |c: char| match u16::try_from(u32::from(c)) {
        Ok(unit) => format!("\\u{unit:04X}"),
        Err(_) => c.to_string(),
    };
    let mut class = String::new();
    for (low, high) in ranges {
        class.push_str(&spell(*low));
        if high != low {
            class.push('-');
            class.push_str(&spell(*high));
        }
    }
    class
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn refuses_control_bidi_and_invisible_characters() {
        for bad in [
            "a\u{0}b",
            "a\nb",
            "tab\there",
            "\u{7f}",
            "\u{85}",
            "abc\u{202E}gpj.exe",
            "\u{202A}x",
            "x\u{2066}y\u{2069}",
            "zero\u{200B}width",
            "\u{200C}",
            "\u{200D}",
            "\u{FEFF}bom",
            "soft\u{AD}hyphen",
            "\u{E0041}tag",
        ] {
            assert!(check(bad).is_err(), "{bad:?} passed");
        }
        let error = check("ab\u{202E}c").unwrap_err();
        assert_eq!(error.position, 2);
        assert!(error.to_string().contains("U+202E"), "{error}");
    }

    #[test]
    fn accepts_ordinary_names_in_any_script() {
        for good in [
            "Acme Corp",
            "connexion d'été",
            "Überweisung – März",
            "数据同步",
            "مرحبا",
            "emoji 🚀",
            "a-b_c.d",
        ] {
            assert_eq!(check(good), Ok(()), "{good:?}");
        }
    }

    /// The table is exactly the rule as first written (Cc plus the listed Cf and blanks).
    #[test]
    fn the_table_is_the_rule() {
        let written = |c: char| {
            c.is_control()
                || matches!(
                    c,
                    '\u{00AD}'
                        | '\u{034F}'
                        | '\u{061C}'
                        | '\u{115F}'
                        | '\u{1160}'
                        | '\u{3164}'
                        | '\u{FFA0}'
                        | '\u{180E}'
                        | '\u{200B}'..='\u{200F}'
                        | '\u{2028}'..='\u{202E}'
                        | '\u{2060}'..='\u{206F}'
                        | '\u{FE00}'..='\u{FE0F}'
                        | '\u{FEFF}'
                        | '\u{FFF9}'..='\u{FFFB}'
                        | '\u{FFFE}'
                        | '\u{FFFF}'
                        | '\u{E0000}'..='\u{E0FFF}'
                )
        };
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(forbidden(c), written(c), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn the_regex_class_spells_each_range() {
        assert_eq!(
            regex_class(&[
                ('\u{0}', '\u{1F}'),
                ('\u{AD}', '\u{AD}'),
                ('\u{E0000}', '\u{E0FFF}')
            ]),
            "\\u0000-\\u001F\\u00AD\u{E0000}-\u{E0FFF}"
        );
    }
}
