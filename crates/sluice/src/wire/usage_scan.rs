//! A `usage` object's counts read by a small scanner instead of serde.
//!
//! Why: the engine reads usage from every answer, and serde's derived reader (field names with
//! aliases, every other field skipped value by value) costs several times what the dozen
//! numbers do — a measurable share of the gateway's work per request. The scanner handles the
//! shape every upstream writes (keys without escapes, counts as plain integers, anything else
//! skipped); whatever it does not recognise for certain, it hands back to serde
//! ([`super::usage_counts`]), so the result is always serde's.

use super::{CompletionTokensDetails, Extra, PromptTokensDetails, Usage};

/// What a scan found: the counts, or "not sure" (`None`): read it with serde instead.
pub(super) fn scan<T: AsRef<[u8]> + ?Sized>(v: &T) -> Option<Usage> {
    let mut s = Scanner {
        b: v.as_ref(),
        i: 0,
    };
    let mut u = Usage::default();
    let mut seen = 0u8;
    s.object(|s, key| {
        let (bit, field) = match key {
            b"prompt_tokens" | b"input_tokens" => (1, 0),
            b"completion_tokens" | b"output_tokens" => (2, 1),
            b"total_tokens" => (4, 2),
            b"prompt_tokens_details" | b"input_tokens_details" => (8, 3),
            b"completion_tokens_details" | b"output_tokens_details" => (16, 4),
            _ => return s.skip_value(),
        };
        // A field given twice (or under both its names) is serde's to judge.
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        match field {
            0 => u.prompt_tokens = s.integer()?,
            1 => u.completion_tokens = s.integer()?,
            2 => u.total_tokens = s.integer()?,
            3 => {
                u.prompt_tokens_details =
                    s.details(b"cached_tokens")?.map(|c| PromptTokensDetails {
                        cached_tokens: c,
                        extra: Extra::new(),
                    })
            }
            _ => {
                u.completion_tokens_details =
                    s.details(b"reasoning_tokens")?
                        .map(|r| CompletionTokensDetails {
                            reasoning_tokens: r,
                            extra: Extra::new(),
                        })
            }
        }
        Some(())
    })?;
    Some(u)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// `{ "key": value, ... }`, with `field` reading each value after its key.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.plain_string()?;
            self.eat(b':')?;
            self.ws();
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes (keys as every upstream writes them); one with escapes is
    /// serde's to read.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        let len = memchr::memchr2(b'"', b'\\', &self.b[start..])?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        Some(&self.b[start..start + len])
    }

    /// A count: a plain non-negative integer that fits a u64.
    fn integer(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d) = self.b.get(self.i).filter(|c| c.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        // Nothing, a leading zero, or a fraction or exponent next: serde's to judge.
        let next = self.b.get(self.i).copied();
        if len == 0
            || (len > 1 && self.b[start] == b'0')
            || matches!(next, Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        Some(n)
    }

    /// A details object (or `null`): the one count it is read for, `null` or absent as none.
    fn details(&mut self, name: &[u8]) -> Option<Option<Option<u64>>> {
        if self.b[self.i..].starts_with(b"null") {
            self.i += 4;
            return Some(None);
        }
        let mut count = None;
        let mut seen = false;
        self.object(|s, key| {
            if key != name {
                return s.skip_value();
            }
            if seen {
                return None;
            }
            seen = true;
            if s.b[s.i..].starts_with(b"null") {
                s.i += 4;
            } else {
                count = Some(s.integer()?);
            }
            Some(())
        })?;
        Some(Some(count))
    }

    /// Past one JSON value of any kind (the fields the counts do not use).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                loop {
                    let at = memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
                    self.i += at + 1;
                    if self.b[self.i - 1] == b'"' {
                        return Some(());
                    }
                    // An escape: skip the escaped character too.
                    self.i += 1;
                }
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        b'"' => {
                            self.skip_value()?;
                            continue;
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                // A number or a literal: up to what ends a value.
                let rest = &self.b[self.i..];
                let len = rest
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))?;
                if len == 0 {
                    return None;
                }
                self.i += len;
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_serde(v: &str) -> Option<Usage> {
        let mut de = serde_json::Deserializer::from_str(v);
        super::super::usage_counts(&mut de).ok().flatten()
    }

    #[test]
    fn the_usual_shapes_are_read_and_the_unusual_left_to_serde() {
        let chat = r#"{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,
            "prompt_tokens_details":{"cached_tokens":100,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":12,"accepted_prediction_tokens":0},
            "new_field":{"a":[1,"x\"}",{"b":null}],"c":-1.5e3}}"#;
        let u = scan(chat).expect("read");
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (120, 30, 150)
        );
        assert_eq!((u.cached_tokens(), u.reasoning_tokens()), (100, 12));
        assert_eq!(Some(u), by_serde(chat));
        let responses = r#"{ "input_tokens" : 7 , "output_tokens":3,"total_tokens":10,
            "input_tokens_details":null,"output_tokens_details":{"reasoning_tokens":null}}"#;
        assert_eq!(scan(responses), by_serde(responses));
        assert_eq!(scan(responses).map(|u| u.prompt_tokens), Some(7));
        assert_eq!(scan("{}"), Some(Usage::default()));
        // Left to serde: a fraction, a repeated field, an escaped key, a leading zero, a
        // negative count, a cut text.
        for unsure in [
            r#"{"prompt_tokens":1.5}"#,
            r#"{"prompt_tokens":1,"input_tokens":2}"#,
            r#"{"prompt\u005ftokens":1}"#,
            r#"{"prompt_tokens":01}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":1"#,
            r#"{"prompt_tokens":99999999999999999999999}"#,
        ] {
            assert_eq!(scan(unsure), None, "{unsure}");
        }
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            (0u64..1_000_000).prop_map(|n| n.to_string()),
            Just("-2.5e-3".to_string()),
            "[a-z\"\\\\{}\\[\\], ]{0,6}".prop_map(|s| serde_json::Value::String(s).to_string()),
        ];
        leaf.prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-z_]{1,6}", inner), 0..4).prop_map(|v| {
                    let f: Vec<String> =
                        v.into_iter().map(|(k, x)| format!("\"{k}\":{x}")).collect();
                    format!("{{{}}}", f.join(","))
                }),
            ]
        })
    }

    fn usage_object() -> impl Strategy<Value = String> {
        let names = prop_oneof![
            Just("prompt_tokens"),
            Just("input_tokens"),
            Just("completion_tokens"),
            Just("output_tokens"),
            Just("total_tokens"),
            Just("prompt_tokens_details"),
            Just("input_tokens_details"),
            Just("completion_tokens_details"),
            Just("output_tokens_details"),
            Just("cached_tokens"),
            Just("reasoning_tokens"),
            Just("other"),
        ];
        let field_value = prop_oneof![
            3 => (0u64..100_000).prop_map(|n| n.to_string()),
            1 => value(),
            1 => proptest::collection::vec(
                (prop_oneof![Just("cached_tokens"), Just("reasoning_tokens"), Just("audio_tokens")],
                 prop_oneof![(0u64..100).prop_map(|n| n.to_string()), Just("null".to_string())]),
                0..3,
            ).prop_map(|v| {
                let f: Vec<String> = v.into_iter().map(|(k, x)| format!("\"{k}\" : {x}")).collect();
                format!("{{ {} }}", f.join(" , "))
            }),
        ];
        proptest::collection::vec((names, field_value), 0..7).prop_map(|v| {
            let f: Vec<String> = v.into_iter().map(|(k, x)| format!("\"{k}\":{x}")).collect();
            format!("{{{}}}", f.join(",\n "))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Whenever the scanner gives an answer, it is serde's.
        #[test]
        fn a_scan_agrees_with_serde(v in usage_object(), tail in "[,}\\]]{0,2}") {
            let text = format!("{v}{tail}");
            if let Some(u) = scan(&text) {
                prop_assert_eq!(Some(u), by_serde(&text), "{}", text);
            }
        }
    }
}
