//! The one way a problem's detail may quote client input: the start of it,
//! escaped, cut to a fixed length once escaped.
//!
//! Quoting input as it came would let a client grow an answer at will (a
//! 1 MB member name would come back as a 1 MB detail) and put control or
//! text-direction characters in a log or a terminal.

/// Longest excerpt of client input an answer quotes, in characters, once
/// escaped (the quotes around it and the `…` that marks a cut aside).
pub const EXCERPT_CHARS: usize = 40;

/// The start of `text`, quoted and escaped as Rust's `Debug` escapes a
/// `str`, at most [`EXCERPT_CHARS`] characters long once escaped, with `…`
/// before the closing quote when it was cut.
///
/// Cut after escaping: a character can escape to ten (`\u{10ffff}`), and
/// forty of those would make a detail ten times the length the excerpt is
/// meant to have. Written in a JSON string, an excerpt takes at most
/// `4 * EXCERPT_CHARS + 7` bytes whatever `text` is: every character it
/// shows is either printable and at most 4 bytes of UTF-8, which JSON
/// writes as they are, or one ASCII character of an escape, which JSON
/// writes in at most 2; the quotes take 2 each and the `…` 3.
pub fn excerpt(text: &str) -> String {
    let mut out = String::with_capacity(4 * EXCERPT_CHARS + 8);
    out.push('"');
    let mut shown = 0;
    for c in text.chars() {
        // As `str`'s `Debug` does: a single quote needs no escape there.
        let escaped: String = match c {
            '\'' => "'".to_owned(),
            c => c.escape_debug().collect(),
        };
        shown += escaped.chars().count();
        if shown > EXCERPT_CHARS {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The excerpt's bytes once written inside a JSON string.
    fn json_bytes(excerpt: &str) -> usize {
        serde_json::to_string(excerpt).unwrap().len() - 2
    }

    #[test]
    fn short_input_is_quoted_whole_as_debug_quotes_it() {
        for text in [
            "",
            "price",
            "pri\nce",
            "it's",
            "tab\there",
            "é😀",
            "\u{202e}",
        ] {
            assert_eq!(excerpt(text), format!("{text:?}"), "{text:?}");
        }
    }

    #[test]
    fn input_is_cut_at_forty_characters_counted_once_escaped() {
        let exact = "k".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), format!("\"{exact}\""));
        let over = "k".repeat(EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&over), format!("\"{exact}…\""));
        // Each escapes to 10, 5, 2 and 1 character(s): only whole escapes
        // are shown.
        for (one, escaped) in [
            ('\u{10ffff}', r"\u{10ffff}"),
            ('\u{1}', r"\u{1}"),
            ('"', r#"\""#),
            ('😀', "😀"),
        ] {
            let shown = excerpt(&one.to_string().repeat(100));
            let fits = EXCERPT_CHARS / escaped.chars().count();
            assert_eq!(shown, format!("\"{}…\"", escaped.repeat(fits)), "{one:?}");
        }
    }

    #[test]
    fn every_character_shown_takes_at_most_four_bytes_in_json() {
        // An excerpt is the escapes of its first characters, whole: so the
        // bound holds for any input if it holds for each character alone.
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let quoted = excerpt(c.encode_utf8(&mut [0; 4]));
            let shown = &quoted[1..quoted.len() - 1];
            let bytes = json_bytes(shown);
            assert!(bytes <= 4 * shown.chars().count(), "{c:?}: {shown}");
        }
    }

    #[test]
    fn the_longest_excerpts_stay_within_their_json_bound() {
        let bound = 4 * EXCERPT_CHARS + 7;
        for worst in ['😀', '"', '\\', '\u{10ffff}', '\u{1}'] {
            let text: String = std::iter::repeat_n(worst, 1_000).collect();
            let bytes = json_bytes(&excerpt(&text));
            assert!(bytes <= bound, "{worst:?}: {bytes} bytes, over {bound}");
        }
        // Forty 4-byte characters reach it exactly.
        let emoji: String = std::iter::repeat_n('😀', 1_000).collect();
        assert_eq!(json_bytes(&excerpt(&emoji)), bound);
    }
}
