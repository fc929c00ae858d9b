//! Re-chunking streamed text at word or sentence boundaries, for consumers that must never see
//! half a word (speech synthesis, moderation, typing indicators). What is left at the end of the
//! stream is flushed as the last piece.

/// Where pieces may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// After whitespace: each piece is one or more whole words with their trailing space.
    Word,
    /// After `.`, `!`, `?` or `…` followed by whitespace, or after a newline.
    Sentence,
}

/// Buffers text deltas and releases whole pieces.
#[derive(Debug, Clone)]
pub struct TextChunker {
    boundary: Boundary,
    buf: String,
}

impl TextChunker {
    pub fn new(boundary: Boundary) -> Self {
        TextChunker {
            boundary,
            buf: String::new(),
        }
    }

    /// Add a delta; returns the whole pieces it completed (possibly none).
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        while let Some(end) = self.split_point() {
            let rest = self.buf.split_off(end);
            out.push(std::mem::replace(&mut self.buf, rest));
        }
        out
    }

    /// The remainder at the end of the stream.
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }

    /// Byte index just after the first boundary, if one is complete.
    fn split_point(&self) -> Option<usize> {
        let mut prev: Option<char> = None;
        let mut seen_text = false;
        for (i, c) in self.buf.char_indices() {
            match self.boundary {
                Boundary::Word => {
                    if c.is_whitespace() {
                        if seen_text {
                            // End after the whitespace run that follows a word; if the run
                            // reaches the end of the buffer, more may follow: wait.
                            let after = i + c.len_utf8();
                            return self.buf[after..]
                                .char_indices()
                                .find(|(_, d)| !d.is_whitespace())
                                .map(|(j, _)| after + j);
                        }
                    } else {
                        seen_text = true;
                    }
                }
                Boundary::Sentence => {
                    if c == '\n' && seen_text {
                        return Some(i + 1);
                    }
                    if c.is_whitespace() && matches!(prev, Some('.' | '!' | '?' | '…')) {
                        return Some(i + c.len_utf8());
                    }
                    if !c.is_whitespace() {
                        seen_text = true;
                    }
                }
            }
            prev = Some(c);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(boundary: Boundary, deltas: &[&str]) -> Vec<String> {
        let mut c = TextChunker::new(boundary);
        let mut out: Vec<String> = deltas.iter().flat_map(|d| c.push(d)).collect();
        out.extend(c.finish());
        out
    }

    #[test]
    fn words_are_never_split() {
        let got = run(
            Boundary::Word,
            &["Hel", "lo wo", "rld, ", "how", " are", " you"],
        );
        assert_eq!(got, vec!["Hello ", "world, ", "how ", "are ", "you"]);
        assert_eq!(got.concat(), "Hello world, how are you");
    }

    #[test]
    fn sentences() {
        let got = run(
            Boundary::Sentence,
            &[
                "It wor",
                "ks. Does ",
                "it? Yes",
                "!\nNext line\nand the e",
                "nd",
            ],
        );
        assert_eq!(
            got,
            vec![
                "It works. ",
                "Does it? ",
                "Yes!\n",
                "Next line\n",
                "and the end"
            ]
        );
    }

    #[test]
    fn token_by_token_matches_whole_text() {
        let text = "The quick brown fox. Jumps over the lazy dog! Really? Yes… indeed.";
        for boundary in [Boundary::Word, Boundary::Sentence] {
            let chars: Vec<String> = text.chars().map(String::from).collect();
            let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
            let pieces = run(boundary, &refs);
            assert_eq!(pieces.concat(), text);
            assert_eq!(pieces, run(boundary, &[text]), "{boundary:?}");
        }
    }
}
