//! Full-text search as people type it (issue 14): accents and case do not matter, words
//! match by prefix, and the matched words of a result are highlighted.
//!
//! Every database indexes the same *folded* words, made here: NFKD, combining marks
//! dropped, lower case, a few letters that do not decompose spelt out (`œ` → `oe`), and
//! everything that is not a letter or digit a space. So "Réunion à l'Œuvre" is indexed as
//! `reunion a l oeuvre`, and each engine (SQLite FTS5, PostgreSQL `tsvector` with the
//! `simple` configuration, MariaDB `FULLTEXT`) only splits on spaces. One definition for
//! the three engines and for the highlighting, which re-reads the original text with it.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Most words a search may hold; more are refused (each is one index look-up).
pub const MAX_TERMS: usize = 8;

/// Most characters a search's text may have.
pub const MAX_QUERY_CHARS: usize = 200;

/// Most characters of a term that are matched; a longer word is cut to this prefix (an
/// index key this long is as selective as a whole word).
const MAX_TERM_CHARS: usize = 48;

/// About how many characters a snippet shows.
const SNIPPET_CHARS: usize = 180;

/// How many characters of context a snippet keeps before the first matched word.
const SNIPPET_LEAD: usize = 50;

/// Appends the folded form of `c` to `out`: letters and digits lower-cased without their
/// accents, anything else nothing (the caller puts the word breaks).
fn fold_char(c: char, out: &mut String) {
    if c.is_ascii() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        }
        return;
    }
    // Letters that carry no separate mark, so that NFKD leaves them as they are.
    let spelt = match c {
        'œ' | 'Œ' => Some("oe"),
        'æ' | 'Æ' => Some("ae"),
        'ß' | 'ẞ' => Some("ss"),
        'ø' | 'Ø' => Some("o"),
        'ł' | 'Ł' => Some("l"),
        'đ' | 'Đ' => Some("d"),
        'ħ' | 'Ħ' => Some("h"),
        'ı' => Some("i"),
        'þ' | 'Þ' => Some("th"),
        _ => None,
    };
    if let Some(s) = spelt {
        out.push_str(s);
        return;
    }
    for d in std::iter::once(c).nfkd() {
        if is_combining_mark(d) || !d.is_alphanumeric() {
            continue;
        }
        out.extend(d.to_lowercase());
    }
}

/// Whether `c` belongs to a word. A combining mark does: an accent typed or pasted as
/// a character of its own ("e" then U+0301, as macOS writes file names), or a vowel
/// sign or virama of an Indic script, is part of the word it follows, not a break.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || (!c.is_ascii() && is_combining_mark(c))
}

/// Whether `text` holds a combining mark: the only texts whose words changed when marks
/// came to belong to the word they follow (what migration 0012 indexes again).
pub fn has_combining_mark(text: &str) -> bool {
    !text.is_ascii() && text.chars().any(|c| !c.is_ascii() && is_combining_mark(c))
}

/// Most bytes of folded words indexed for one message. A few characters fold to many
/// (U+FDFA to 15 letters), so a message within its size limit could otherwise fold past
/// what an index column holds (MariaDB's `TEXT`: 65,535 bytes); the words past this are
/// not indexed.
const MAX_INDEX_BYTES: usize = 32 * 1024;

/// The words of `text` as the index holds them: folded, separated by single spaces, at
/// most [`MAX_INDEX_BYTES`] of them (cut after a whole word).
pub fn index_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_INDEX_BYTES));
    let mut in_word = false;
    let mut word_start = 0;
    for c in text.chars() {
        if is_word_char(c) {
            if !in_word {
                if out.len() > MAX_INDEX_BYTES {
                    break;
                }
                if !out.is_empty() {
                    out.push(' ');
                }
                word_start = out.len();
            }
            in_word = true;
            fold_char(c, &mut out);
        } else {
            in_word = false;
        }
    }
    if out.len() > MAX_INDEX_BYTES {
        // The last word went past the bound: it is left out, with the space before it.
        out.truncate(word_start.saturating_sub(1));
    }
    out
}

/// The terms of a search: its folded words, each matched as a prefix, without repeats.
/// Empty when the text has no letter or digit.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in index_words(query).split(' ').filter(|w| !w.is_empty()) {
        let word: String = word.chars().take(MAX_TERM_CHARS).collect();
        if !terms.contains(&word) {
            terms.push(word);
        }
    }
    // A term that is a prefix of another adds nothing to an AND of prefixes.
    let all = terms.clone();
    terms.retain(|t| !is_prefix(t) || !all.iter().any(|o| o != t && o.starts_with(t.as_str())));
    terms
}

/// Whether a term matches as the start of a word (two characters or more) or only as a
/// whole word (one character: as a prefix it would match a large part of any index,
/// and says nothing).
pub fn is_prefix(term: &str) -> bool {
    term.chars().nth(1).is_some()
}

/// A piece of a snippet: plain text or a matched word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    pub hit: bool,
}

/// The words of `text` (byte ranges), as [`index_words`] cuts them.
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (is_word_char(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// Whether `word` (original text) starts with one of the folded `terms`.
fn matches(word: &str, terms: &[String]) -> bool {
    let mut folded = String::with_capacity(word.len());
    for c in word.chars() {
        fold_char(c, &mut folded);
    }
    terms.iter().any(|t| {
        if is_prefix(t) {
            folded.starts_with(t.as_str())
        } else {
            folded == *t
        }
    })
}

/// About [`SNIPPET_CHARS`] characters of `text` around its first matched word, cut into
/// plain and matched pieces; "…" marks text left out at either end. Line breaks become
/// spaces (a snippet is one line).
pub fn snippet(text: &str, terms: &[String]) -> Vec<Piece> {
    let words = words(text);
    let hits: Vec<(usize, usize)> = words
        .into_iter()
        .filter(|(s, e)| matches(&text[*s..*e], terms))
        .collect();
    let first = hits.first().map_or(0, |(s, _)| *s);
    // Start a little before the first hit, at a character boundary.
    let lead_start = text[..first]
        .char_indices()
        .rev()
        .nth(SNIPPET_LEAD.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    // ... and at the start of a word when one begins soon after.
    let start = if lead_start == 0 {
        0
    } else {
        text[lead_start..first]
            .char_indices()
            .find(|(_, c)| c.is_whitespace())
            .map_or(lead_start, |(i, c)| lead_start + i + c.len_utf8())
    };
    let end = text[start..]
        .char_indices()
        .nth(SNIPPET_CHARS)
        .map_or(text.len(), |(i, _)| start + i);
    let mut pieces: Vec<Piece> = Vec::new();
    let mut push = |s: &str, hit: bool| {
        if s.is_empty() {
            return;
        }
        let s = s.replace(['\n', '\t'], " ");
        match pieces.last_mut() {
            Some(last) if last.hit == hit => last.text.push_str(&s),
            _ => pieces.push(Piece { text: s, hit }),
        }
    };
    if start > 0 {
        push("…", false);
    }
    let mut at = start;
    for (s, e) in hits
        .iter()
        .copied()
        .filter(|(s, _)| *s >= start && *s < end)
    {
        let e = e.min(end);
        push(&text[at..s], false);
        push(&text[s..e], true);
        at = e;
    }
    push(&text[at..end], false);
    if end < text.len() {
        push("…", false);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accents_case_and_punctuation_fold_away() {
        assert_eq!(index_words("Général"), "general");
        assert_eq!(
            index_words("Réunion à l'Œuvre, 14h30!"),
            "reunion a l oeuvre 14h30"
        );
        assert_eq!(index_words("STRASSE Straße"), "strasse strasse");
        assert_eq!(index_words("  "), "");
        assert_eq!(index_words("ﬁnal café"), "final cafe");
        assert_eq!(index_words("Ünïcödé ÇA"), "unicode ca");
        assert_eq!(index_words("emoji 🎉 here"), "emoji here");
        assert_eq!(
            index_words("https://intra.example.com/planning?q=1"),
            "https intra example com planning q 1"
        );
        assert_eq!(index_words("Привет мир"), "привет мир");
    }

    #[test]
    fn accents_typed_apart_fold_as_the_letters_that_carry_them() {
        // NFD, as macOS and some copies produce: the marks do not break the word.
        let nfd = "Ge\u{301}ne\u{301}ral re\u{301}union";
        assert_eq!(index_words(nfd), "general reunion");
        assert_eq!(query_terms(nfd), vec!["general", "reunion"]);
        let pieces = snippet(nfd, &query_terms("general"));
        assert_eq!(render(&pieces), "[Ge\u{301}ne\u{301}ral] re\u{301}union");
        // An Indic word stays one word (its vowel signs and virama are marks).
        assert_eq!(index_words("हिन्दी भाषा").split(' ').count(), 2);
        assert_eq!(query_terms("हिन्दी"), vec![index_words("हिन्दी")]);
    }

    #[test]
    fn the_folded_words_of_a_message_are_bounded_after_a_whole_word() {
        // U+FDFA folds to 15 letters (30 bytes).
        let text = "\u{FDFA} ".repeat(2_000);
        let words = index_words(&text);
        assert!(words.len() <= MAX_INDEX_BYTES, "{}", words.len());
        assert!(words.len() > MAX_INDEX_BYTES - 64, "{}", words.len());
        assert!(!words.ends_with(' '));
        assert_eq!(
            words.rsplit(' ').next(),
            Some(index_words("\u{FDFA}").as_str())
        );
        // One word longer than the bound is left out whole.
        assert_eq!(index_words(&"\u{FDFA}".repeat(2_200)), "");
        // Short messages are untouched by the bound.
        assert_eq!(index_words(&"mot ".repeat(1000)), ["mot"; 1000].join(" "));
    }

    #[test]
    fn query_terms_are_folded_unique_prefixes() {
        assert_eq!(query_terms("Réunion  réunion"), vec!["reunion"]);
        assert_eq!(query_terms("plan planning"), vec!["planning"]);
        assert_eq!(query_terms("!!! ..."), Vec::<String>::new());
        assert_eq!(query_terms("lien planning"), vec!["lien", "planning"]);
        assert_eq!(query_terms("p plan"), vec!["p", "plan"]);
        let long = "a".repeat(100);
        assert_eq!(query_terms(&long)[0].len(), MAX_TERM_CHARS);
    }

    fn render(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .map(|p| {
                if p.hit {
                    format!("[{}]", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    #[test]
    fn snippets_highlight_every_matched_word_in_the_original_text() {
        let terms = query_terms("reunion gen");
        assert_eq!(
            render(&snippet(
                "La Réunion du Général, réunions\ncomprises",
                &terms
            )),
            "La [Réunion] du [Général], [réunions] comprises"
        );
        // Only whole words that start with a term.
        assert_eq!(render(&snippet("agenda", &query_terms("gen"))), "agenda");
        // A one-letter term is a whole word.
        assert_eq!(
            render(&snippet("Plan A, plan avancé", &query_terms("plan a"))),
            "[Plan] [A], [plan] avancé"
        );
    }

    #[test]
    fn long_texts_are_cut_around_the_first_hit() {
        let text = format!("{} needle {}", "avant ".repeat(100), "après ".repeat(100));
        let pieces = snippet(&text, &query_terms("needle"));
        let shown = render(&pieces);
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert!(shown.contains("[needle]"));
        let chars = shown.chars().count();
        assert!(chars <= SNIPPET_CHARS + 4, "{chars}");
        // The lead is cut at a word start.
        assert!(shown.starts_with("…avant"), "{shown}");
    }

    #[test]
    fn a_snippet_of_a_short_text_is_the_whole_text() {
        let pieces = snippet("Le lien du planning", &query_terms("plan"));
        assert_eq!(render(&pieces), "Le lien du [planning]");
        assert_eq!(pieces.len(), 2);
    }
}
