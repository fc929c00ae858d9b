//! Deterministic output: the same request always gets the same text, vectors and tool arguments,
//! so tests can compare what came back with what they expect.
//!
//! Text is made of words that are each exactly one token in both o200k_base and cl100k_base
//! (checked by a test), so the completion token count is the number of words generated, with no
//! tokenizer work on the output path, and a stream can send exactly one token per chunk.

use serde_json::{json, Map, Value};

/// Sentence starters: one token each, with no leading space.
const STARTERS: &[&str] = &["The", "This", "It", "We", "In", "A"];

/// Body words: one token each, with their leading space.
const WORDS: &[&str] = &[
    " the",
    " of",
    " and",
    " to",
    " in",
    " is",
    " that",
    " for",
    " it",
    " as",
    " with",
    " was",
    " on",
    " be",
    " by",
    " this",
    " are",
    " from",
    " at",
    " or",
    " an",
    " have",
    " not",
    " which",
    " but",
    " data",
    " system",
    " model",
    " time",
    " request",
    " value",
    " water",
    " river",
    " stream",
    " flow",
    " light",
    " stone",
    " field",
    " small",
    " large",
    " quick",
    " simple",
    " clear",
    " open",
    " first",
    " next",
    " last",
    " good",
    " new",
    " old",
    " long",
    " high",
    " low",
    " part",
    " work",
    " world",
    " place",
    " point",
    " line",
    " case",
    " level",
    " order",
    " rate",
    " limit",
    " answer",
    " question",
    " number",
    " state",
    " group",
    " result",
    " change",
    " process",
    " service",
    " server",
    " every",
    " after",
    " before",
    " under",
    " over",
    " between",
    " through",
    " slow",
    " fast",
    " safe",
    " ready",
    " start",
    " end",
];

/// Stable 64-bit FNV-1a: `DefaultHasher` is not promised to stay the same across releases.
pub fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator so that ["ab","c"] and ["a","bc"] differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64: a tiny, good-enough PRNG for reproducible output.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The tokens of one generated answer of `len` tokens (at least 1): a starter, words, a period.
pub fn words(seed: u64, len: u64) -> Vec<&'static str> {
    let mut rng = SplitMix::new(seed);
    let len = len.max(1) as usize;
    let mut out = Vec::with_capacity(len);
    out.push(STARTERS[(rng.next_u64() % STARTERS.len() as u64) as usize]);
    while out.len() + 1 < len {
        out.push(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
    }
    if len > 1 {
        out.push(".");
    }
    out
}

/// A deterministic unit-length embedding of `dims` dimensions.
pub fn embedding(seed: u64, dims: usize) -> Vec<f32> {
    let mut rng = SplitMix::new(seed);
    let mut v: Vec<f32> = (0..dims).map(|_| rng.unit()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

/// Arguments that fit a function's JSON-schema `parameters`, as a JSON object.
pub fn tool_arguments(seed: u64, parameters: Option<&Value>) -> Value {
    let mut rng = SplitMix::new(seed);
    match parameters {
        Some(schema) => value_for(schema, schema, &mut rng, 0),
        None => Value::Object(Map::new()),
    }
}

/// A value that validates against a JSON schema (the subset structured outputs use: objects,
/// arrays, scalars, `enum`, `const`, `anyOf` / `oneOf`, `$ref` into `$defs` / `definitions`),
/// deterministic from `seed`.
pub fn json_for_schema(seed: u64, schema: &Value) -> Value {
    value_for(schema, schema, &mut SplitMix::new(seed), 0)
}

fn value_for(schema: &Value, root: &Value, rng: &mut SplitMix, depth: usize) -> Value {
    if depth > 12 {
        return Value::Null;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .map(|path| {
                path.split('/')
                    .try_fold(root, |v, k| v.get(k))
                    .unwrap_or(&Value::Null)
            })
            .unwrap_or(&Value::Null);
        return if r == "#" {
            value_for(root, root, rng, depth + 1)
        } else {
            value_for(target, root, rng, depth + 1)
        };
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            // The first option that is not `null` (an Optional field answers with a value).
            let pick = options
                .iter()
                .find(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                .or(options.first());
            if let Some(o) = pick {
                return value_for(o, root, rng, depth + 1);
            }
        }
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().find_map(Value::as_str).unwrap_or("string"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut map = Map::new();
            if depth < 6 {
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (k, v) in props {
                        map.insert(k.clone(), value_for(v, root, rng, depth + 1));
                    }
                }
            }
            Value::Object(map)
        }
        "array" => {
            let item = schema
                .get("items")
                .cloned()
                .unwrap_or(json!({"type":"string"}));
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            if depth < 6 {
                Value::Array(
                    (0..min.clamp(1, 8))
                        .map(|_| value_for(&item, root, rng, depth + 1))
                        .collect(),
                )
            } else {
                json!([])
            }
        }
        "integer" => json!(rng.range(1, 100)),
        "number" => json!(rng.range(1, 1000) as f64 / 10.0),
        "boolean" => json!(rng.next_u64().is_multiple_of(2)),
        "null" => Value::Null,
        _ => {
            let w = words(rng.next_u64(), 3);
            json!(w.concat().trim_end_matches('.').to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Encoding;
    use crate::tokens;

    #[test]
    fn every_word_is_one_token_in_both_encodings() {
        for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
            for w in STARTERS.iter().chain(WORDS) {
                assert_eq!(tokens::count(enc, w), 1, "{w:?} in {enc:?}");
            }
        }
    }

    #[test]
    fn generated_text_tokenizes_to_its_length() {
        for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
            for seed in 0..300u64 {
                let len = 1 + seed % 97;
                let w = words(seed, len);
                assert_eq!(w.len() as u64, len);
                assert_eq!(tokens::count(enc, &w.concat()), len, "seed {seed} {enc:?}");
            }
        }
    }

    #[test]
    fn deterministic() {
        assert_eq!(words(7, 20), words(7, 20));
        assert_ne!(words(7, 20), words(8, 20));
        let a = embedding(3, 64);
        assert_eq!(a, embedding(3, 64));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn tool_arguments_follow_schema() {
        let schema = json!({"type":"object","properties":{
            "city":{"type":"string"},"days":{"type":"integer"},
            "unit":{"type":"string","enum":["celsius","fahrenheit"]}}});
        let args = tool_arguments(1, Some(&schema));
        assert!(args["city"].is_string());
        assert!(args["days"].is_u64());
        assert_eq!(args["unit"], "celsius");
    }
}
