//! A VADER-style sentiment scorer for comments (Hutto & Gilbert 2014): a valence lexicon
//! plus the rules that matter most in short feedback — negation, boosters and dampeners,
//! contrast with "but", ALL-CAPS emphasis and exclamation marks — normalised to a compound
//! score in [−1, 1]. Deterministic and offline. The lexicon is a compact one written for
//! customer feedback (valences on VADER's −4…4 scale), with the commonest words of Spanish,
//! French, German, Portuguese and Italian feedback; text in other languages scores neutral.

use rustc_hash::FxHashMap;
use std::sync::OnceLock;

/// Compound scores at or below this are negative, at or above its negation positive (VADER).
pub const NEGATIVE_THRESHOLD: f64 = -0.05;

const BOOST: f64 = 0.293;
const CAPS_BOOST: f64 = 0.733;
const NEGATION: f64 = -0.74;
const NORM_ALPHA: f64 = 15.0;

#[rustfmt::skip]
const LEXICON: &[(&str, f64)] = &[
    // positive
    ("amazing", 2.8), ("appreciate", 2.0), ("appreciated", 2.0), ("attentive", 1.8), ("awesome", 3.1),
    ("best", 3.2), ("better", 1.9), ("brilliant", 2.8), ("calm", 1.3), ("caring", 2.2), ("clean", 1.7),
    ("clear", 1.6), ("comfortable", 1.8), ("convenient", 1.6), ("courteous", 1.9), ("delight", 2.9),
    ("delighted", 3.1), ("delightful", 2.9), ("easy", 1.9), ("effective", 2.0), ("efficient", 1.8),
    ("effortless", 1.9), ("enjoy", 2.2), ("enjoyed", 2.3), ("excellent", 2.7), ("exceptional", 2.6),
    ("fabulous", 2.9), ("fair", 1.3), ("fantastic", 2.6), ("fast", 1.2), ("favorite", 2.0),
    ("favourite", 2.0), ("fine", 0.8), ("fixed", 1.0), ("flawless", 2.5), ("friendly", 2.2), ("glad", 2.0),
    ("good", 1.9), ("grateful", 2.0), ("great", 3.1), ("happy", 2.7), ("helpful", 1.8), ("honest", 2.3),
    ("impressed", 2.1), ("impressive", 2.3), ("incredible", 2.5), ("joy", 2.8), ("kind", 2.4),
    ("knowledgeable", 1.5), ("love", 3.2), ("loved", 2.9), ("lovely", 2.8), ("loves", 2.7), ("loyal", 2.1),
    ("nice", 1.8), ("ok", 0.9), ("okay", 0.9), ("outstanding", 3.0), ("patient", 1.5), ("perfect", 2.7),
    ("perfectly", 2.6), ("pleasant", 2.3), ("pleased", 1.9), ("polite", 1.5), ("positive", 2.3),
    ("professional", 1.5), ("prompt", 1.3), ("quick", 1.0), ("quickly", 1.0), ("recommend", 1.5),
    ("recommended", 1.6), ("reliable", 1.9), ("resolved", 1.2), ("respectful", 1.9), ("responsive", 1.6),
    ("satisfied", 1.8), ("seamless", 1.6), ("simple", 1.0), ("smooth", 1.3), ("solved", 1.3),
    ("super", 2.9), ("superb", 3.1), ("support", 0.5), ("supportive", 1.8), ("thank", 1.5),
    ("thanks", 1.9), ("thorough", 1.5), ("top", 0.8), ("trust", 2.3), ("useful", 1.9), ("valuable", 2.1),
    ("welcoming", 2.0), ("well", 1.1), ("wonderful", 2.7), ("worth", 0.9), ("wow", 2.8),
    // negative
    ("abandon", -1.9), ("abandoned", -2.0), ("absurd", -1.8), ("angry", -2.3), ("annoyed", -1.6),
    ("annoying", -1.7), ("appalling", -2.9), ("arrogant", -2.2), ("awful", -2.0), ("bad", -2.5),
    ("badly", -2.1), ("blame", -1.4), ("bored", -1.1), ("boring", -1.3), ("broke", -1.8), ("broken", -2.0),
    ("bug", -1.0), ("buggy", -1.5), ("cancel", -0.9), ("cancelled", -1.0), ("careless", -1.7),
    ("chaos", -2.0), ("cheated", -2.7), ("clueless", -1.9), ("complain", -1.5), ("complaint", -1.5),
    ("complicated", -1.3), ("confused", -1.3), ("confusing", -1.3), ("crap", -2.1), ("crash", -1.7),
    ("crashed", -1.7), ("crashes", -1.7), ("damaged", -1.9), ("dead", -2.6), ("delay", -1.3),
    ("delayed", -1.2), ("delays", -1.3), ("difficult", -1.5), ("dirty", -1.9), ("disappointed", -1.9),
    ("disappointing", -2.2), ("disappointment", -2.3), ("disaster", -3.1), ("disgusting", -2.8),
    ("dishonest", -2.7), ("dreadful", -2.6), ("error", -1.7), ("errors", -1.6), ("expensive", -0.9),
    ("fail", -2.5), ("failed", -2.3), ("fails", -2.2), ("failure", -2.3), ("fake", -2.1), ("fault", -1.7),
    ("faulty", -1.8), ("frustrated", -2.0), ("frustrating", -1.9), ("frustration", -2.1),
    ("furious", -2.8), ("garbage", -2.1), ("hard", -0.4), ("hate", -2.7), ("hated", -3.2), ("hassle", -1.6),
    ("hopeless", -2.4), ("horrible", -2.5), ("ignored", -1.4), ("incompetent", -2.3), ("inconvenient", -1.4),
    ("issue", -0.8), ("issues", -0.8), ("lie", -1.9), ("lied", -2.2), ("lies", -1.8), ("lost", -1.3),
    ("mess", -1.5), ("messy", -1.4), ("mistake", -1.6), ("misleading", -1.9), ("missing", -1.2),
    ("nightmare", -2.9), ("overcharged", -2.1), ("overpriced", -1.5), ("pathetic", -2.5), ("poor", -2.1),
    ("poorly", -2.1), ("problem", -1.7), ("problems", -1.7), ("refund", -0.5), ("ridiculous", -2.1),
    ("rude", -2.0), ("sad", -2.1), ("scam", -2.8), ("shame", -2.1), ("shocking", -1.7), ("slow", -1.2),
    ("slowly", -0.8), ("sorry", -0.3), ("stuck", -1.2), ("stupid", -2.4), ("terrible", -2.1),
    ("unacceptable", -2.0), ("unclear", -1.0), ("unfair", -2.1), ("unfriendly", -2.0), ("unhappy", -1.8),
    ("unhelpful", -1.8), ("unprofessional", -2.1), ("unreliable", -1.8), ("unresolved", -1.3),
    ("upset", -1.6), ("useless", -1.8), ("waste", -1.8), ("wasted", -2.2), ("wasting", -1.7),
    ("worse", -2.1), ("worst", -3.1), ("wrong", -2.1),
    // other languages
    ("bon", 1.9), ("bonne", 1.9), ("buena", 1.9), ("bueno", 1.9), ("danke", 1.9), ("excelente", 2.7),
    ("génial", 2.8), ("gracias", 1.9), ("grazie", 1.9), ("gut", 1.9), ("langsam", -1.2), ("lento", -1.2),
    ("mala", -2.5), ("malo", -2.5), ("mauvais", -2.5), ("mauvaise", -2.5), ("merci", 1.9), ("nul", -2.0),
    ("obrigado", 1.9), ("ottimo", 2.8), ("pessimo", -3.0), ("pésimo", -3.0), ("ruim", -2.5),
    ("schlecht", -2.5), ("schrecklich", -2.5), ("toll", 2.5), ("ótimo", 2.8),
    // emoticons and emoji
    (":(", -1.9), (":)", 2.0), (":-(", -1.9), (":-)", 1.3), (":d", 2.3), ("😀", 2.2), ("😊", 2.2),
    ("😍", 2.9), ("😞", -2.0), ("😠", -2.6), ("😡", -2.9), ("👍", 1.9), ("👎", -1.9),
];

#[rustfmt::skip]
const BOOSTERS: &[(&str, f64)] = &[
    ("absolutely", BOOST), ("completely", BOOST), ("deeply", BOOST), ("enormously", BOOST),
    ("entirely", BOOST), ("especially", BOOST), ("exceptionally", BOOST), ("extremely", BOOST),
    ("greatly", BOOST), ("highly", BOOST), ("hugely", BOOST), ("incredibly", BOOST), ("most", BOOST),
    ("particularly", BOOST), ("quite", BOOST), ("really", BOOST), ("remarkably", BOOST), ("so", BOOST),
    ("thoroughly", BOOST), ("totally", BOOST), ("truly", BOOST), ("unbelievably", BOOST),
    ("utterly", BOOST), ("very", BOOST), ("muy", BOOST), ("très", BOOST), ("sehr", BOOST), ("molto", BOOST),
    ("almost", -BOOST), ("barely", -BOOST), ("hardly", -BOOST), ("less", -BOOST), ("marginally", -BOOST),
    ("occasionally", -BOOST), ("partly", -BOOST), ("rather", -BOOST), ("scarcely", -BOOST),
    ("slightly", -BOOST), ("somewhat", -BOOST),
];

const NEGATORS: &[&str] = &[
    "aint", "cannot", "cant", "didnt", "doesnt", "dont", "hadnt", "hasnt", "havent", "isnt", "neither", "never", "no",
    "nobody", "none", "nope", "nor", "not", "nothing", "nowhere", "wasnt", "werent", "without", "wont", "wouldnt",
    "kein", "keine", "nicht", "nie", "nunca", "jamais", "non", "não", "pas",
];

/// What the rules need to know of a word, from all three lists, found with one lookup.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The lexicon's valence; 0 for words not in the lexicon (no lexicon word has 0).
    valence: f64,
    /// The booster's (positive) or dampener's (negative) increment; 0 for other words.
    boost: f64,
    negator: bool,
}

struct Tables {
    words: FxHashMap<&'static str, Entry>,
    /// The longest lexicon entry that punctuation trimming would change (emoticons,
    /// emoji): a longer raw word cannot be one, so its raw form need not be looked up.
    longest_symbol: usize,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut words: FxHashMap<&'static str, Entry> = FxHashMap::default();
        for &(w, v) in LEXICON {
            words.entry(w).or_default().valence = v;
        }
        for &(w, b) in BOOSTERS {
            words.entry(w).or_default().boost = b;
        }
        for &w in NEGATORS {
            words.entry(w).or_default().negator = true;
        }
        let longest_symbol = LEXICON.iter().filter(|(w, _)| trim_word(w) != *w).map(|(w, _)| w.len()).max();
        Tables { words, longest_symbol: longest_symbol.unwrap_or(0) }
    })
}

/// A word of the comment with everything the scoring rules ask of it, looked up once.
struct Token {
    /// The lexicon's valence of the word, 0 when it has none.
    valence: f64,
    /// The booster's (positive) or dampener's (negative) increment, 0 for other words.
    boost: f64,
    caps: bool,
    /// The raw word ended a clause (`.`, `!`, `?`, `;`, `,`): negation and boosters do not
    /// reach across it ("nobody answered. Awful!" is not "not awful").
    ends_clause: bool,
    negator: bool,
    /// "but" or "however": the contrast pivot.
    contrast: bool,
}

/// Whether a word of more than one letter is written in capitals only ("AWFUL").
fn all_caps(raw: &str) -> bool {
    let mut letters = 0;
    if raw.is_ascii() {
        for b in raw.bytes().filter(u8::is_ascii_alphabetic) {
            if !b.is_ascii_uppercase() {
                return false;
            }
            letters += 1;
        }
        return letters > 1;
    }
    for c in raw.chars().filter(|c| c.is_alphabetic()) {
        if !c.is_uppercase() {
            return false;
        }
        letters += 1;
    }
    letters > 1
}

/// `s` lower-cased: `s` itself when it has no capitals, as most words of a comment have
/// none, else a copy lower-cased in `buf` (cleared first, its allocation reused).
fn lowercase<'a>(buf: &'a mut String, s: &'a str) -> &'a str {
    buf.clear();
    if s.is_ascii() {
        if !s.bytes().any(|b| b.is_ascii_uppercase()) {
            return s;
        }
        buf.push_str(s);
        buf.make_ascii_lowercase();
    } else {
        buf.push_str(&s.to_lowercase());
    }
    buf
}

/// [`lowercase`] of `s`, part of a word whose [`AsciiShape`] is `shape` when the text is
/// ASCII: without capitals in the word, `s` itself, with no scan.
fn lowercase_part<'a>(buf: &'a mut String, s: &'a str, shape: Option<AsciiShape>) -> &'a str {
    match shape {
        Some(shape) if shape.upper == 0 => s,
        _ => lowercase(buf, s),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\'' || c == '’'
}

/// The word inside `raw`: without the punctuation around it, then without the
/// apostrophes (quotes) around that.
fn trim_word(raw: &str) -> &str {
    // Most words begin and end with a letter or digit: nothing to trim.
    let b = raw.as_bytes();
    if b.first().is_some_and(u8::is_ascii_alphanumeric) && b.last().is_some_and(u8::is_ascii_alphanumeric) {
        return raw;
    }
    if raw.is_ascii() {
        let keep = |c: &u8| c.is_ascii_alphanumeric() || *c == b'\'';
        let Some(start) = b.iter().position(keep) else { return "" };
        let end = b.iter().rposition(keep).map_or(start, |e| e + 1);
        return raw[start..end].trim_matches('\'');
    }
    raw.trim_matches(|c: char| !is_word_char(c)).trim_matches(|c| c == '\'' || c == '’')
}

/// The whitespace-separated words of `text`, as `str::split_whitespace` gives them;
/// `ascii` says whether `text` is ASCII.
fn words(text: &str, ascii: bool) -> impl Iterator<Item = &str> {
    // Comments are mostly ASCII: split on bytes there, without decoding characters.
    let mut pos = 0;
    let bytes = text.as_bytes();
    let mut other = (!ascii).then(|| text.split_whitespace());
    std::iter::from_fn(move || {
        if let Some(other) = &mut other {
            return other.next();
        }
        // `char::is_whitespace` over ASCII: vertical tab included (unlike
        // `u8::is_ascii_whitespace`).
        let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
        let start = pos + bytes[pos..].iter().position(|b| !space(b))?;
        let end = bytes[start..].iter().position(space).map_or(bytes.len(), |n| start + n);
        pos = end;
        Some(&text[start..end])
    })
}

/// What the rules ask of an ASCII word's letters, found in one pass over its bytes
/// instead of one pass per question.
#[derive(Debug, Clone, Copy)]
struct AsciiShape {
    upper: u32,
    lower: u32,
    apostrophe: bool,
}

impl AsciiShape {
    fn of(word: &str) -> Self {
        let mut shape = AsciiShape { upper: 0, lower: 0, apostrophe: false };
        for &b in word.as_bytes() {
            shape.upper += u32::from(b.is_ascii_uppercase());
            shape.lower += u32::from(b.is_ascii_lowercase());
            shape.apostrophe |= b == b'\'';
        }
        shape
    }

    /// [`all_caps`] of the word.
    fn all_caps(self) -> bool {
        self.lower == 0 && self.upper > 1
    }
}

fn tokenize(text: &str) -> Vec<Token> {
    let t = tables();
    // Long enough for nearly every word, so it is allocated once per comment.
    let mut lower = String::with_capacity(32);
    let mut tokens = Vec::with_capacity(16);
    let ascii = text.is_ascii();
    for raw in words(text, ascii) {
        // In ASCII text one pass over the word answers what `lowercase`, `all_caps` and
        // `is_contracted_negator` would each scan it for; other text asks them.
        let shape = ascii.then(|| AsciiShape::of(raw));
        let word = trim_word(raw);
        // Emoticons keep their punctuation; words lose the punctuation around them.
        let (entry, lowered) = if word.len() == raw.len() {
            let lowered = lowercase_part(&mut lower, raw, shape);
            (t.words.get(lowered), lowered)
        } else {
            let symbol = (raw.len() <= t.longest_symbol)
                .then(|| t.words.get(lowercase_part(&mut lower, raw, shape)))
                .flatten()
                .filter(|e| e.valence != 0.0);
            match symbol {
                Some(e) => (Some(e), lowercase_part(&mut lower, raw, shape)),
                None if word.is_empty() => continue,
                None => {
                    let lowered = lowercase_part(&mut lower, word, shape);
                    (t.words.get(lowered), lowered)
                }
            }
        };
        let entry = entry.copied().unwrap_or_default();
        tokens.push(Token {
            valence: entry.valence,
            boost: entry.boost,
            caps: shape.map_or_else(|| all_caps(raw), AsciiShape::all_caps),
            ends_clause: raw.as_bytes().last().is_some_and(|b| matches!(b, b'.' | b'!' | b'?' | b';' | b',')),
            // A contraction needs an apostrophe, and ASCII text has only the straight one.
            negator: entry.negator || (shape.is_none_or(|s| s.apostrophe) && is_contracted_negator(t, lowered)),
            contrast: lowered == "but" || lowered == "however",
        });
    }
    tokens
}

/// "isn't", "dont’" and the like: a negation written with an apostrophe.
fn is_contracted_negator(t: &Tables, word: &str) -> bool {
    if word.ends_with("n't") || word.ends_with("n’t") {
        return true;
    }
    // One pass for both apostrophes: 0xE2 leads the UTF-8 of ’ (and of other characters,
    // which the lookup below then turns away).
    if !word.bytes().any(|b| b == b'\'' || b == 0xE2) {
        return false;
    }
    let squashed: String = word.chars().filter(|c| *c != '\'' && *c != '’').collect();
    t.words.get(squashed.as_str()).is_some_and(|e| e.negator)
}

/// VADER compound score of `text` in [−1, 1]; 0 for empty or unknown-language text.
pub fn compound(text: &str) -> f64 {
    let mut tokens = tokenize(text);
    let any_caps = tokens.iter().any(|w| w.caps);
    let caps_differential = any_caps && !tokens.iter().all(|w| w.caps);
    // Each word's valence after emphasis, boosters and negation, kept in `valence`; the
    // rules read only the earlier words' flags and boosts, which this pass leaves as is.
    for i in 0..tokens.len() {
        let tok = &tokens[i];
        if tok.valence == 0.0 {
            continue;
        }
        let mut v = tok.valence;
        if tok.caps && caps_differential {
            v += CAPS_BOOST.copysign(v);
        }
        let reach = (1..=3usize.min(i)).take_while(|&back| !tokens[i - back].ends_clause).count();
        for back in 1..=reach {
            let prev = &tokens[i - back];
            if prev.boost != 0.0 {
                // A booster adds magnitude in the word's direction; a dampener removes it.
                let mut b = if v < 0.0 { -prev.boost } else { prev.boost };
                if prev.caps && caps_differential {
                    b += CAPS_BOOST.copysign(v);
                }
                // Further-away boosters count less, as in VADER.
                v += b * [1.0, 0.95, 0.9][back - 1];
            }
        }
        if (1..=reach).any(|back| tokens[i - back].negator) {
            v *= NEGATION;
        }
        tokens[i].valence = v;
    }
    let but = tokens.iter().position(|w| w.contrast);
    let mut sum = 0.0;
    for (i, tok) in tokens.iter().enumerate() {
        let weight = match but {
            Some(b) if i < b => 0.5,
            Some(b) if i > b => 1.5,
            _ => 1.0,
        };
        sum += tok.valence * weight;
    }
    if sum != 0.0 {
        let bangs = text.bytes().filter(|b| *b == b'!').count().min(4) as f64;
        sum += (bangs * 0.292).copysign(sum);
    }
    let c = sum / (sum * sum + NORM_ALPHA).sqrt();
    c.clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vader_reference_sentences() {
        // VADER's formulas by hand: good = 1.9 → 1.9/√(1.9² + 15); "very" adds 0.293;
        // "not" multiplies by −0.74; each "!" (up to 4) adds 0.292.
        assert!((compound("The service was good") - 0.4404).abs() < 1e-3);
        assert!((compound("The service was very good") - 0.4927).abs() < 1e-3);
        assert!((compound("The service was not good") + 0.3412).abs() < 1e-3);
        assert!((compound("The service was good!!!") - 0.5826).abs() < 1e-3);
    }

    #[test]
    fn rules_move_the_score_the_right_way() {
        let good = compound("the agent was helpful");
        assert!(good > 0.05);
        assert!(compound("the agent was very helpful") > good);
        assert!(compound("the agent was not helpful") < -0.05);
        assert!(compound("the agent was HELPFUL and friendly") > compound("the agent was helpful and friendly"));
        assert!(compound("the app is nice but support is terrible") < 0.0);
        assert!(compound("Terrible wait, rude staff, worst helpline ever") < -0.8);
        assert!(compound("the wait was not terrible") > compound("the wait was terrible"));
    }

    #[test]
    fn any_language_any_bytes() {
        assert_eq!(compound(""), 0.0);
        assert_eq!(compound("   \n\t"), 0.0);
        assert_eq!(compound("配送が遅い"), 0.0);
        assert!(compound("Servicio pésimo, muy lento") < -0.5);
        assert!(compound("Sehr gut, danke!") > 0.5);
        assert!(compound("c'est nul") < 0.0);
        assert!(compound("👍👍 great") > 0.5);
        for s in ["!!!", "''''", "n't", "😡", "a\u{0}b"] {
            let c = compound(s);
            assert!((-1.0..=1.0).contains(&c));
        }
    }

    #[test]
    fn no_lexicon_word_is_neutral() {
        // The tokenizer tells lexicon words by a valence other than 0.
        assert!(LEXICON.iter().all(|(_, v)| *v != 0.0));
    }

    #[test]
    fn capitals_apostrophes_and_punctuation_score_as_before() {
        // Scores of the tokenizer before words without capitals were looked up in place
        // (2026-12-01); that change left 300,000 random texts of such words bit for bit
        // as they were, and so did one pass over each ASCII word instead of one per
        // question (2026-12-02, 400,000 random texts, ASCII and not).
        let expected = [
            ("The Agent was NOT helpful", -0.325224313573055),
            ("Isn’t GREAT, but the app is fine", -0.05625236745861664),
            ("DON'T buy: 'terrible' support!!", 0.41527269977002335),
            ("very GOOD (really) :)", 0.8167683356144062),
            ("ain't bad, HARDLY awful", -0.1505999062664052),
            ("Sehr gut, aber LANGSAM", 0.0669809505917561),
            ("won’t recommend... WORST", -0.7871533170607485),
            ("It's 'ok' I guess", 0.22634795467253557),
            ("\"Great\" service, said nobody", 0.6248933269389457),
            ("NOT bad at ALL, isn't it GREAT?!", -0.3134516340667081),
            ("nobody'd say it's GOOD", 0.5622182239284726),
            ("The 'Terrible' UI, said NOBODY", -0.4766576055745744),
            ("I CAN'T say THANKS enough", -0.44941330636494037),
            ("Worst. Support. Ever. :(", -0.7579367289598671),
        ];
        for (text, score) in expected {
            assert_eq!(compound(text), score, "{text}");
        }
    }

    #[test]
    fn deterministic() {
        let s = "Waited 40 minutes on the helpline, NOBODY answered. Awful!";
        assert_eq!(compound(s), compound(s));
        assert!(compound(s) < -0.3);
    }
}
