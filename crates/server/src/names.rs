//! Names compared as people see them (Unicode UTS #39, UAX #15): usernames, aliases and
//! room names are normalised (NFKC: fullwidth, mathematical and compatibility forms
//! become their plain letters), may not hide characters (default-ignorable code points,
//! Hangul fillers and anything else outside the identifier profile), may not mix scripts
//! (a Cyrillic `а` in a Latin word), and may not be confusable with an existing name: two
//! names with the same [`skeleton`] key are one name, and the database holds one row per
//! key (`name_skeletons`), so concurrent registrations cannot break that either.

use salon_proto::{ErrorBody, ErrorCode};
use unicode_normalization::UnicodeNormalization;
use unicode_security::{GeneralSecurityProfile, MixedScript};

/// Punctuation a name may contain besides letters and digits; it does not tell two names
/// apart (`admin.`, `ad-min` and `admin` are one name).
const SEPARATORS: [char; 5] = [' ', '.', '_', '-', '\''];

/// The form a name is stored and shown in: NFKC.
pub fn normalize(name: &str) -> String {
    name.nfkc().collect()
}

/// Refuses characters people cannot see or tell apart: anything outside UTS #39's
/// identifier profile (default-ignorable code points, fillers, symbols) other than the
/// allowed separators, and letters of more than one script.
pub fn check_visible(field: &str, name: &str) -> Result<(), ErrorBody> {
    if let Some(c) = name
        .chars()
        .find(|c| !SEPARATORS.contains(c) && !c.identifier_allowed())
    {
        return Err(ErrorBody::new(
            ErrorCode::InvalidCharacters,
            format!(
                "{field} may not contain U+{:04X}: only visible letters and digits, and \
                 ' ', '.', '_', '-', '\\''",
                c as u32
            ),
        )
        .with_field(field));
    }
    if !name.is_single_script() {
        return Err(ErrorBody::new(
            ErrorCode::InvalidCharacters,
            format!("{field} mixes letters of different scripts (say, Latin and Cyrillic)"),
        )
        .with_field(field));
    }
    Ok(())
}

/// The key under which names that look alike are one name: lower case, UTS #39 skeleton
/// (confusable characters mapped to one prototype), lower case again, separators removed.
/// Accents stay significant, as people see them (`Zoé` and `Zoe` are two names).
pub fn skeleton(name: &str) -> String {
    let lower = normalize(name).to_lowercase();
    unicode_security::skeleton(&lower)
        .collect::<String>()
        .to_lowercase()
        .chars()
        .filter(|c| !SEPARATORS.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_share_a_skeleton() {
        let admin = skeleton("admin");
        for other in [
            "аdmin",      // Cyrillic а
            "Ａｄｍｉｎ", // fullwidth
            "𝐀𝐝𝐦𝐢𝐧",      // mathematical bold
            "Admın",      // dotless ı
            "admin.",
            "admin_",
            "ad-min",
            "ADMIN",
        ] {
            assert_eq!(skeleton(other), admin, "{other:?}");
        }
        assert_eq!(skeleton("Administrator"), skeleton("Αdministrator")); // Greek Α
        assert_ne!(skeleton("Général"), skeleton("General"), "accents are seen");
        assert_eq!(skeleton("Général"), skeleton("GÉNÉRAL"));
        assert_ne!(skeleton("alice"), skeleton("alicia"));
    }

    #[test]
    fn hidden_and_mixed_script_characters_are_refused() {
        for bad in [
            "Administrator\u{3164}", // Hangul filler
            "\u{3164}\u{3164}",
            "Ad\u{200B}min", // zero-width space
            "Gеnéral",       // Cyrillic е among Latin
            "Infоrmatique",  // Cyrillic о
            "smile☺",
        ] {
            assert!(check_visible("alias", bad).is_err(), "{bad:?}");
        }
        for good in [
            "Administrator",
            "Général",
            "Jean-Luc O'Neil",
            "Zoé Martin",
            "Иван",
            "山田 太郎",
            "محمد",
            "b.o_b-2",
        ] {
            assert!(check_visible("alias", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn normalisation_is_nfkc() {
        assert_eq!(normalize("Ａｄｍｉｎ"), "Admin");
        assert_eq!(normalize("𝐀𝐝𝐦𝐢𝐧"), "Admin");
        assert_eq!(normalize("e\u{301}"), "é");
    }
}
