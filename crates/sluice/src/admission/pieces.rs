//! Token counts of ASCII text without the tokenizer's regular expression.
//!
//! Why: every request's prompt is counted on the gateway's hot path, and for the short messages
//! most requests carry, nine tenths of tiktoken's cost is its pre-tokenizer — a backtracking
//! regular expression (its `\s+(?!\S)` lookahead keeps it off a plain automaton) run over Unicode
//! classes. For ASCII text the same split is a few comparisons a byte, written out below from
//! the two patterns' alternatives, and the pieces it yields are mostly words seen before: each
//! piece's token count is remembered per thread, and a piece not seen yet is counted by tiktoken
//! itself (a piece on its own splits into itself, so its count is the same). The result is
//! exactly tiktoken's count, which the tests check against it on random text.
//!
//! Text with any non-ASCII byte is left to tiktoken, whose Unicode classes this does not repeat.

use std::cell::RefCell;

use rustc_hash::FxHashMap;

/// The two pre-tokenizer patterns this module writes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Split {
    /// o200k_base (GPT-4o, GPT-4.1, GPT-5, o-series).
    O200k,
    /// cl100k_base (GPT-4, GPT-3.5, embeddings v3).
    Cl100k,
}

fn upper(c: u8) -> bool {
    c.is_ascii_uppercase()
}
fn lower(c: u8) -> bool {
    c.is_ascii_lowercase()
}
fn letter(c: u8) -> bool {
    c.is_ascii_alphabetic()
}
fn digit(c: u8) -> bool {
    c.is_ascii_digit()
}
/// `\s` as the patterns mean it (Unicode White_Space), within ASCII: tab to carriage return
/// and space (not the 0x1C–0x1F separators).
fn space(c: u8) -> bool {
    matches!(c, b'\t'..=b'\r' | b' ')
}
fn newline(c: u8) -> bool {
    matches!(c, b'\r' | b'\n')
}
/// `[^\r\n\p{L}\p{N}]`: what may stand before a word.
fn before_word(c: u8) -> bool {
    !letter(c) && !digit(c) && !newline(c)
}
/// `[^\s\p{L}\p{N}]`: punctuation, symbols, control characters.
fn symbol(c: u8) -> bool {
    !space(c) && !letter(c) && !digit(c)
}

/// How many bytes from `i` satisfy `f`.
fn run(t: &[u8], i: usize, f: impl Fn(u8) -> bool) -> usize {
    t.get(i..)
        .map_or(0, |rest| rest.iter().take_while(|&&c| f(c)).count())
}

/// The end of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`, any case) at `i`, if one
/// starts there.
fn contraction(t: &[u8], i: usize) -> Option<usize> {
    if t.get(i) != Some(&b'\'') {
        return None;
    }
    let a = t.get(i + 1).map(u8::to_ascii_lowercase);
    let b = t.get(i + 2).map(u8::to_ascii_lowercase);
    match (a, b) {
        (Some(b's' | b't' | b'm' | b'd'), _) => Some(i + 2),
        (Some(b'r' | b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => Some(i + 3),
        _ => None,
    }
}

/// The end of the whitespace alternatives at `i` (a whitespace byte), in the order both
/// patterns share but for one thing: where the run reaches the end of the text, cl100k's
/// `\s++$` takes it whole before anything else (`end_first`), while o200k's `\s*[\r\n]+`
/// still stops at the run's last line break. Otherwise: up to the run's last line break if it
/// has one; else all but the run's last byte, which goes with what follows (`\s+(?!\S)`); a
/// lone byte on its own.
fn whitespace(t: &[u8], i: usize, end_first: bool) -> usize {
    let end = i + run(t, i, space);
    let at_end = end == t.len();
    if at_end && end_first {
        return end;
    }
    if let Some(nl) = t[i..end].iter().rposition(|&c| newline(c)) {
        return i + nl + 1;
    }
    if at_end {
        end
    } else if end - i >= 2 {
        end - 1
    } else {
        i + 1
    }
}

/// The end of a run of symbols at `i` (` ?[^\s\p{L}\p{N}]+`, a space before them taken along)
/// and the bytes after it that `trailing` accepts; `None` when no symbol starts there.
fn symbols(t: &[u8], i: usize, trailing: impl Fn(u8) -> bool) -> Option<usize> {
    let s = if t[i] == b' ' && t.get(i + 1).is_some_and(|&n| symbol(n)) {
        i + 1
    } else {
        i
    };
    let q = run(t, s, symbol);
    (q > 0).then(|| s + q + run(t, s + q, trailing))
}

/// The end of the o200k piece that starts at `i`.
fn o200k_piece(t: &[u8], i: usize) -> usize {
    let c = t[i];
    // [^\r\n\p{L}\p{N}]?[upper]*[lower]+'s? | [^\r\n\p{L}\p{N}]?[upper]+[lower]*'s?
    let s = if before_word(c) { i + 1 } else { i };
    let u = run(t, s, upper);
    let l = run(t, s + u, lower);
    if u + l > 0 {
        let e = s + u + l;
        return contraction(t, e).unwrap_or(e);
    }
    // \p{N}{1,3}
    if digit(c) {
        return i + run(t, i, digit).min(3);
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n/]*'
    if let Some(e) = symbols(t, i, |c| newline(c) || c == b'/') {
        return e;
    }
    // \s*[\r\n]+ | \s+(?!\S) | \s+
    whitespace(t, i, false)
}

/// The end of the cl100k piece that starts at `i`.
fn cl100k_piece(t: &[u8], i: usize) -> usize {
    let c = t[i];
    // '(?i:[sdmt]|ll|ve|re)
    if let Some(e) = contraction(t, i) {
        return e;
    }
    // [^\r\n\p{L}\p{N}]?+\p{L}++ (possessive: a leading non-letter must be followed by letters)
    if letter(c) {
        return i + run(t, i, letter);
    }
    if before_word(c) && t.get(i + 1).is_some_and(|&n| letter(n)) {
        return i + 1 + run(t, i + 1, letter);
    }
    // \p{N}{1,3}+
    if digit(c) {
        return i + run(t, i, digit).min(3);
    }
    // ' ?[^\s\p{L}\p{N}]++[\r\n]*+'
    if let Some(e) = symbols(t, i, newline) {
        return e;
    }
    // \s++$ | \s*[\r\n] | \s+(?!\S) | \s
    whitespace(t, i, true)
}

/// Call `f` with each piece of the ASCII text `t`, as the pattern of `split` cuts it, and where
/// in `t` it starts.
pub(super) fn split(split: Split, t: &[u8], mut f: impl FnMut(usize, &[u8])) {
    let mut i = 0;
    while i < t.len() {
        let e = match split {
            Split::O200k => o200k_piece(t, i),
            Split::Cl100k => cl100k_piece(t, i),
        };
        // Every branch above moves at least one byte; this keeps it so whatever the input.
        let e = e.clamp(i + 1, t.len());
        f(i, &t[i..e]);
        i = e;
    }
}

/// Pieces of at most this many bytes have their counts remembered (they fit one `u128` key with
/// their length and table); longer ones — rare outside long words and runs of symbols — are
/// counted each time.
const REMEMBERED_UP_TO: usize = 15;
/// Pieces remembered per thread; the map starts over when it is full (a few hundred kilobytes).
const REMEMBERED_PIECES: usize = 16_384;

thread_local! {
    static COUNTS: RefCell<FxHashMap<u128, u32>> = RefCell::new(FxHashMap::default());
}

/// The key of the piece `t[at..at + len]` (`len` at most 15): its bytes, then zeros, and in
/// the last byte its length and table.
fn key(split: Split, t: &[u8], at: usize, len: usize) -> u128 {
    let table: u128 = match split {
        Split::O200k => 0x10,
        Split::Cl100k => 0x20,
    };
    let tag = (table | len as u128) << 120;
    // Sixteen bytes read at once where the text has them, the ones past the piece masked off:
    // a copy of a piece's own length is a call per piece.
    if let Some(w) = t
        .get(at..at + 16)
        .and_then(|w| <[u8; 16]>::try_from(w).ok())
    {
        let mask = (1u128 << (8 * len)) - 1;
        return (u128::from_le_bytes(w) & mask) | tag;
    }
    let mut k = [0u8; 16];
    k[..len].copy_from_slice(&t[at..at + len]);
    u128::from_le_bytes(k) | tag
}

/// Tokens in the ASCII text `text`, with `count_piece` (the tokenizer) for pieces not seen yet.
pub(super) fn count(split_by: Split, text: &str, count_piece: impl Fn(&str) -> u64) -> u64 {
    debug_assert!(text.is_ascii());
    let piece_count = |p: &[u8]| -> u64 {
        // ASCII, so any cut is valid UTF-8.
        let s = std::str::from_utf8(p).unwrap_or_default();
        count_piece(s)
    };
    COUNTS.with(|m| {
        let mut m = m.borrow_mut();
        let mut n = 0u64;
        split(split_by, text.as_bytes(), |at, p| {
            // Numbers are cut in pieces of one to three digits, and both tables hold every
            // such piece as one token (checked by a test): request ids and counters in
            // prompts would otherwise fill the map with pieces seen once.
            let c = if p.first().is_some_and(u8::is_ascii_digit) {
                1
            } else if p.len() <= REMEMBERED_UP_TO {
                let k = key(split_by, text.as_bytes(), at, p.len());
                match m.get(&k) {
                    Some(&c) => u64::from(c),
                    None => {
                        let c = piece_count(p);
                        if m.len() >= REMEMBERED_PIECES {
                            m.clear();
                        }
                        m.insert(k, u32::try_from(c).unwrap_or(u32::MAX));
                        c
                    }
                }
            } else {
                piece_count(p)
            };
            n = n.saturating_add(c);
        });
        n
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pieces(s: Split, t: &str) -> Vec<String> {
        let mut out = Vec::new();
        split(s, t.as_bytes(), |_, p| {
            out.push(String::from_utf8_lossy(p).into_owned())
        });
        out
    }

    fn tiktoken_count(s: Split, t: &str) -> u64 {
        let bpe = match s {
            Split::O200k => tiktoken_rs::o200k_base_singleton(),
            Split::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        };
        bpe.encode_ordinary(t).len() as u64
    }

    fn fast_count(s: Split, t: &str) -> u64 {
        let bpe = match s {
            Split::O200k => tiktoken_rs::o200k_base_singleton(),
            Split::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        };
        count(s, t, |p| bpe.encode_ordinary(p).len() as u64)
    }

    #[test]
    fn a_key_is_the_same_read_whole_or_copied() {
        // Near the end of a text the piece is copied; elsewhere sixteen bytes are read and
        // masked: one piece gives one key either way, and the table and length tell apart.
        let tail = b"xx hello";
        let long = b"xx hello, and a good deal more text";
        for len in 1..=6 {
            assert_eq!(
                key(Split::O200k, tail, 2, len),
                key(Split::O200k, long, 2, len)
            );
        }
        assert_ne!(key(Split::O200k, long, 2, 3), key(Split::O200k, long, 2, 4));
        assert_ne!(
            key(Split::O200k, long, 2, 3),
            key(Split::Cl100k, long, 2, 3)
        );
        assert_ne!(
            key(Split::O200k, b"a\0", 0, 1),
            key(Split::O200k, b"a\0", 0, 2)
        );
    }

    #[test]
    fn pieces_are_cut_as_the_patterns_cut_them() {
        use Split::*;
        assert_eq!(
            pieces(O200k, "Hello, world! It's 12345 apples."),
            ["Hello", ",", " world", "!", " It's", " ", "123", "45", " apples", "."]
        );
        assert_eq!(
            pieces(Cl100k, "Hello, world! It's 12345 apples."),
            ["Hello", ",", " world", "!", " It", "'s", " ", "123", "45", " apples", "."]
        );
        // A run of spaces gives its last one to the word after it; a line break ends a run.
        assert_eq!(pieces(O200k, "a   b"), ["a", "  ", " b"]);
        assert_eq!(
            pieces(O200k, "a \n\n  b  "),
            ["a", " \n\n", " ", " b", "  "]
        );
        assert_eq!(
            pieces(Cl100k, "a \n\n  b  "),
            ["a", " \n\n", " ", " b", "  "]
        );
        assert_eq!(pieces(O200k, "HTTPServer JSONs"), ["HTTPServer", " JSONs"]);
        assert_eq!(pieces(O200k, "x.\n\n/y"), ["x", ".\n\n/", "y"]);
        assert_eq!(pieces(Cl100k, "x.\n\n/y"), ["x", ".\n\n", "/y"]);
        assert_eq!(pieces(O200k, "end \n "), ["end", " \n", " "]);
        assert_eq!(pieces(Cl100k, "end \n "), ["end", " \n "]);
    }

    #[test]
    fn counts_match_the_tokenizer_on_known_texts() {
        let texts = [
            "You are a helpful assistant.",
            "Summarise the benefits of client-side rate limiting in two sentences.",
            "  leading and trailing  ",
            "CamelCase and SHOUTING and mIxEd CaSe, don't WE'LL they'RE",
            "def f(x):\n    return x ** 2  # squares\n\n\tdone\r\n",
            "{\"a\": [1, 2, 3], \"b\": null}",
            "1234567890 3.14159 -42 1e10 0x1F",
            "a\x0bb\x0cc\x1cd\x1fe\x7f",
            "",
            " ",
            "\n",
            "''''s 's 'S 're 'LL",
        ];
        for s in [Split::O200k, Split::Cl100k] {
            for t in texts {
                assert_eq!(fast_count(s, t), tiktoken_count(s, t), "{s:?} {t:?}");
                // Again, from the remembered counts.
                assert_eq!(fast_count(s, t), tiktoken_count(s, t), "{s:?} {t:?}");
            }
        }
    }

    /// ASCII text weighted toward what moves the cuts: spaces and line breaks in runs,
    /// apostrophes, capitals, digits, slashes and symbols.
    fn ascii_text() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            3 => "[a-z]{1,8}",
            2 => "[A-Z][a-z]{0,6}",
            1 => "[A-Z]{1,5}",
            2 => "[ ]{1,4}",
            1 => "[\\t\\n\\r\\x0b\\x0c ]{1,4}",
            1 => "'(s|t|re|ve|m|ll|d|S|T|RE|Ll|x)",
            1 => "[0-9]{1,5}",
            1 => "[!-/:-@\\[-`{-~]{1,3}",
            1 => "[\\x00-\\x7f]{1,3}",
        ];
        proptest::collection::vec(atom, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn counts_match_the_tokenizer_on_random_ascii(t in ascii_text()) {
            for s in [Split::O200k, Split::Cl100k] {
                prop_assert_eq!(fast_count(s, &t), tiktoken_count(s, &t), "{:?} {:?}", s, t);
            }
        }
    }

    #[test]
    fn every_number_of_one_to_three_digits_is_one_token_in_both_tables() {
        for bpe in [
            tiktoken_rs::o200k_base_singleton(),
            tiktoken_rs::cl100k_base_singleton(),
        ] {
            for n in 0..1000 {
                for t in [format!("{n}"), format!("{n:02}"), format!("{n:03}")] {
                    assert_eq!(bpe.encode_ordinary(&t).len(), 1, "{t}");
                }
            }
        }
    }

    #[test]
    fn the_remembered_pieces_stay_bounded() {
        let bpe = tiktoken_rs::o200k_base_singleton();
        for i in 0..(REMEMBERED_PIECES + 100) {
            // A distinct word for each i: its digits in base 26, as letters.
            let mut t = String::from("w");
            let mut k = i;
            loop {
                t.push(char::from(b'a' + (k % 26) as u8));
                k /= 26;
                if k == 0 {
                    break;
                }
            }
            count(Split::O200k, &t, |p| bpe.encode_ordinary(p).len() as u64);
        }
        COUNTS.with(|m| assert!(m.borrow().len() <= REMEMBERED_PIECES));
    }
}
