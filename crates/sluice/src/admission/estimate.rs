//! What a request will cost in tokens, before it is sent: the prompt counted with the model's
//! tokenizer (OpenAI's per-message overhead included) plus the output the upstream reserves
//! (`max_tokens` / `max_completion_tokens`, or the default, × `n`). This is the amount the
//! upstream charges against its tokens-per-minute budget at admission, so it is the amount we
//! reserve.
//!
//! Unknown models are counted with cl100k_base (which yields more tokens than o200k_base for
//! most text) plus 20%: a safe upper bound, never a panic.

use std::collections::HashMap;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use crate::wire::JsonView;

/// A tokenizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k,
    Cl100k,
    /// Not known: cl100k with a 20% margin.
    Unknown,
}

/// The tokenizer of a model id (dated snapshots and fine-tunes included).
pub fn encoding_for(model: &str) -> Encoding {
    // Fine-tunes look like "ft:gpt-4o-mini-2024-07-18:org::id".
    let m = model.strip_prefix("ft:").unwrap_or(model);
    let o200k = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "o1",
        "o3",
        "o4",
        "chatgpt-4o",
        "gpt-oss",
    ];
    let cl100k = [
        "gpt-4",
        "gpt-3.5",
        "text-embedding-3",
        "text-embedding-ada-002",
        "davinci-002",
        "babbage-002",
    ];
    if o200k.iter().any(|p| m.starts_with(p)) {
        Encoding::O200k
    } else if cl100k.iter().any(|p| m.starts_with(p)) {
        Encoding::Cl100k
    } else {
        Encoding::Unknown
    }
}

fn bpe(enc: Encoding) -> &'static CoreBPE {
    match enc {
        Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100k | Encoding::Unknown => tiktoken_rs::cl100k_base_singleton(),
    }
}

/// Tokens in `text` for `enc`.
pub fn count(enc: Encoding, text: &str) -> u64 {
    let n = if text.len() >= CACHED_FROM_BYTES {
        counts().get_or_count(enc, text)
    } else {
        tokenize(enc, text)
    };
    match enc {
        Encoding::Unknown => n + n.div_ceil(5),
        _ => n,
    }
}

fn tokenize(enc: Encoding, text: &str) -> u64 {
    let bpe = bpe(enc);
    if text.is_ascii() {
        let split = match enc {
            Encoding::O200k => super::pieces::Split::O200k,
            Encoding::Cl100k | Encoding::Unknown => super::pieces::Split::Cl100k,
        };
        return super::pieces::count(split, text, |p| bpe.encode_ordinary(p).len() as u64);
    }
    bpe.encode_ordinary(text).len() as u64
}

/// Texts at least this long have their counts remembered.
const CACHED_FROM_BYTES: usize = 256;
/// Counts remembered: the newest half of this is kept whole when the cache turns over.
const CACHED_TEXTS: usize = 4096;

/// Token counts of long texts seen lately, by a 64-bit hash of the encoding and the text.
///
/// Why: counting costs ~0.2 µs per token (measured here: 0.47 ms for a 2,500-token prompt),
/// on the request path of every request, and production prompts repeat — the same system prompt,
/// instructions or tool list of thousands of tokens goes with every request while only the last
/// message changes. Looking a text up costs a hash of its bytes. A hash collision (2^-64) would
/// only misplace an estimate, which admission reconciles with the answer's usage anyway.
///
/// Two generations: when the current map is full it becomes the old one (the previous old one is
/// dropped), and a hit in the old map moves back to the current one — an LRU's effect for the
/// texts in use, without a list to maintain.
#[derive(Debug, Default)]
struct CountCache {
    maps: std::sync::Mutex<(HashMap<u64, u64>, HashMap<u64, u64>)>,
}

impl CountCache {
    fn get_or_count(&self, enc: Encoding, text: &str) -> u64 {
        let key = xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), seed(enc));
        {
            let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(&n) = m.0.get(&key) {
                return n;
            }
            if let Some(n) = m.1.remove(&key) {
                Self::insert(&mut m, key, n);
                return n;
            }
        }
        // Counted outside the lock: two threads may count the same new text once each.
        let n = tokenize(enc, text);
        Self::insert(
            &mut self.maps.lock().unwrap_or_else(|p| p.into_inner()),
            key,
            n,
        );
        n
    }

    fn insert(m: &mut (HashMap<u64, u64>, HashMap<u64, u64>), key: u64, n: u64) {
        if m.0.len() >= CACHED_TEXTS / 2 {
            m.1 = std::mem::take(&mut m.0);
        }
        m.0.insert(key, n);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        m.0.len() + m.1.len()
    }
}

/// The cache's hash seed: one per tokenizer table (Unknown counts with cl100k's).
fn seed(enc: Encoding) -> u64 {
    match enc {
        Encoding::O200k => 1,
        Encoding::Cl100k | Encoding::Unknown => 2,
    }
}

fn counts() -> &'static CountCache {
    static CACHE: std::sync::OnceLock<CountCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(CountCache::default)
}

/// Tokens in a message's role. The roles the API defines are one token in both encodings
/// (checked by a test); skipping the tokenizer for them saves a call per message, which on a
/// short message is half the estimate's cost.
fn role_tokens(enc: Encoding, role: &str) -> u64 {
    match role {
        "system" | "user" | "assistant" | "developer" | "tool" | "function" => match enc {
            Encoding::Unknown => 2, // one token plus the 20% margin, rounded up
            _ => 1,
        },
        other => count(enc, other),
    }
}

/// Build the tokenizer tables now (they take a moment) rather than on the first request.
pub fn warm_up() {
    let _ = bpe(Encoding::O200k);
    let _ = bpe(Encoding::Cl100k);
}

/// How the upstream's rate limiter counts a prompt, when it is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromptCount {
    /// Not known: reserve the larger of the two counts below, which neither kind of limiter
    /// can exceed. The default.
    #[default]
    Larger,
    /// About a token per four characters of the request's text, as OpenAI's limiter estimates
    /// by its users' reports and Azure OpenAI documents.
    Characters,
    /// With the model's tokenizer (what a self-hosted server that counts exactly does).
    Tokenizer,
}

impl PromptCount {
    /// Parse a setting's value: `larger`, `characters` or `tokenizer`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "larger" => Ok(PromptCount::Larger),
            "characters" => Ok(PromptCount::Characters),
            "tokenizer" => Ok(PromptCount::Tokenizer),
            other => Err(format!(
                "expected \"larger\", \"characters\" or \"tokenizer\", got {other:?}"
            )),
        }
    }
}

/// A request's token estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Prompt tokens, by the model's tokenizer (what `usage` will say; budgets price it).
    pub prompt: u64,
    /// Output tokens reserved (limit × choices).
    pub output: u64,
    /// Characters of the request's text (messages, tools, input, prompt, instructions).
    pub characters: u64,
}

impl Estimate {
    /// Prompt and output tokens as the tokenizer counts them.
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.output)
    }

    /// The prompt as an upstream's rate limiter counts it: the larger of the tokenizer's count
    /// and about a token per four characters. OpenAI's limiter estimates from characters, not
    /// with a tokenizer (its users' reports; Azure OpenAI documents the same), so reserving the
    /// tokenizer's count alone would fall short of what the upstream takes whenever the
    /// character estimate is the higher one.
    pub fn limiter_prompt(&self) -> u64 {
        self.prompt.max(self.characters.div_ceil(4))
    }

    /// What admission reserves against a tokens-per-minute budget: the limiter's prompt plus
    /// the whole output reservation.
    pub fn charged(&self) -> u64 {
        self.charged_as(PromptCount::Larger)
    }

    /// What an upstream that counts prompts `how` charges: its prompt count plus the whole
    /// output reservation. Reserving exactly what it takes leaves none of its budget unused;
    /// [`PromptCount::Larger`] is safe against either kind.
    pub fn charged_as(&self, how: PromptCount) -> u64 {
        let prompt = match how {
            PromptCount::Larger => self.limiter_prompt(),
            PromptCount::Characters => self.characters.div_ceil(4),
            PromptCount::Tokenizer => self.prompt,
        };
        prompt.saturating_add(self.output)
    }
}

/// The most output tokens one request may reserve (limit × choices). No model writes more than
/// a few hundred thousand tokens in an answer, so a reservation past this is a mistake — a
/// `max_tokens` of 2^64 − 1, a wrapped counter — and is refused as a bad request before
/// admission, instead of being held against (or hiding behind) the token budget.
pub const MAX_OUTPUT_RESERVATION: u64 = 100_000_000;

impl Estimate {
    /// Why this request cannot be sent at all (a clear 400), if it cannot.
    pub fn refusal(&self) -> Option<String> {
        (self.output > MAX_OUTPUT_RESERVATION).then(|| {
            format!(
                "the request reserves {} output tokens (max_tokens or max_completion_tokens × n); no model writes more than {MAX_OUTPUT_RESERVATION} in one request",
                self.output
            )
        })
    }
}

/// Tokens only (characters are filled in by [`estimate`]).
fn tokens(prompt: u64, output: u64) -> Estimate {
    Estimate {
        prompt,
        output,
        characters: 0,
    }
}

/// What the estimate reads of a request body. Two readers implement it: `serde_json::Value`
/// (the client and the batch runner hold one already) and [`JsonView`] (the gateway reads the
/// body in place, without building a `Value` it would drop a moment later). One estimate serves
/// both, so they count alike by construction.
pub trait JsonBody: Sized {
    /// What kind of value this is, with its text or items where it has them.
    fn shape(&self) -> Shape<'_, Self>;
    /// An object's members (nothing for anything else).
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)>;
    /// The value as compact JSON text, as `Value`'s `to_string` writes it.
    fn json_text(&self) -> String;

    fn get(&self, name: &str) -> Option<&Self> {
        self.entries().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
    fn as_str(&self) -> Option<&str> {
        match self.shape() {
            Shape::String(s) => Some(s),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&[Self]> {
        match self.shape() {
            Shape::Array(a) => Some(a),
            _ => None,
        }
    }
    fn as_u64(&self) -> Option<u64> {
        match self.shape() {
            Shape::Number(n) => n.as_u64(),
            _ => None,
        }
    }
}

/// A JSON value's kind, for [`JsonBody`].
#[derive(Debug)]
pub enum Shape<'v, J> {
    Null,
    Bool,
    Number(&'v serde_json::Number),
    String(&'v str),
    Array(&'v [J]),
    Object,
}

impl JsonBody for Value {
    fn shape(&self) -> Shape<'_, Self> {
        match self {
            Value::Null => Shape::Null,
            Value::Bool(_) => Shape::Bool,
            Value::Number(n) => Shape::Number(n),
            Value::String(s) => Shape::String(s),
            Value::Array(a) => Shape::Array(a),
            Value::Object(_) => Shape::Object,
        }
    }
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)> {
        self.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
    }
    fn json_text(&self) -> String {
        self.to_string()
    }
    fn get(&self, name: &str) -> Option<&Self> {
        Value::get(self, name)
    }
}

impl JsonBody for JsonView<'_> {
    fn shape(&self) -> Shape<'_, Self> {
        match self {
            JsonView::Null => Shape::Null,
            JsonView::Bool(_) => Shape::Bool,
            JsonView::Number(n) => Shape::Number(n),
            JsonView::String(s) => Shape::String(s),
            JsonView::Array(a) => Shape::Array(a),
            JsonView::Object(_) => Shape::Object,
        }
    }
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)> {
        let members = match self {
            JsonView::Object(m) => m.as_slice(),
            _ => &[],
        };
        members.iter().map(|(k, v)| (k.as_ref(), v))
    }
    fn json_text(&self) -> String {
        self.to_value().to_string()
    }
}

/// Characters of every string in a JSON value (keys excluded).
fn chars_of<J: JsonBody>(v: &J) -> u64 {
    match v.shape() {
        Shape::String(s) => s.chars().count() as u64,
        Shape::Array(a) => a.iter().map(chars_of).fold(0, u64::saturating_add),
        Shape::Object => v
            .entries()
            .map(|(_, v)| chars_of(v))
            .fold(0, u64::saturating_add),
        _ => 0,
    }
}

/// The request text a rate limiter's character estimate covers.
fn characters<J: JsonBody>(path: &str, body: &J) -> u64 {
    let fields: &[&str] = if path.ends_with("/chat/completions") {
        &["messages", "tools"]
    } else if path.ends_with("/embeddings") || path.ends_with("/moderations") {
        &["input"]
    } else if path.ends_with("/completions") {
        &["prompt"]
    } else if path.ends_with("/responses") {
        &["input", "instructions", "tools"]
    } else {
        return chars_of(body);
    };
    fields
        .iter()
        .filter_map(|f| body.get(f))
        .map(chars_of)
        .fold(0, u64::saturating_add)
}

/// Output limit the upstream assumes when a chat request names none (sluice's client sets a
/// default before this is reached; raw gateway/batch requests may not have one).
pub const CHAT_OUTPUT_WHEN_UNSET: u64 = 4096;
/// The legacy completions endpoint's own default.
pub const COMPLETION_OUTPUT_WHEN_UNSET: u64 = 16;

fn u64_field<J: JsonBody>(body: &J, name: &str) -> Option<u64> {
    body.get(name).and_then(J::as_u64)
}

fn text_of<J: JsonBody>(content: &J, enc: Encoding) -> u64 {
    match content.shape() {
        Shape::String(s) => count(enc, s),
        Shape::Array(parts) => parts
            .iter()
            .map(|p| match p.get("text").and_then(J::as_str) {
                Some(t) => count(enc, t),
                // Images and audio: OpenAI bills 85 tokens for a low-detail image; a high-detail
                // one can cost more, which the server headers will correct.
                None => 85,
            })
            .sum(),
        Shape::Null => 0,
        _ => count(enc, &content.json_text()),
    }
}

/// Estimate a request to `path` (`/chat/completions`, `/embeddings`, `/completions`,
/// `/responses`, …) from its JSON body.
pub fn estimate<J: JsonBody>(path: &str, body: &J) -> Estimate {
    let mut e = estimate_tokens(path, body);
    e.characters = characters(path, body);
    e
}

/// The members `names` of a JSON object, found in one walk over its members rather than one
/// lookup each (every lookup walks the object comparing keys; a chat request asks for a
/// dozen).
fn members<'v, J: JsonBody, const N: usize>(v: &'v J, names: [&str; N]) -> [Option<&'v J>; N] {
    let mut out = [None; N];
    for (k, v) in v.entries() {
        if let Some(i) = names.iter().position(|n| *n == k) {
            out[i] = Some(v);
        }
    }
    out
}

fn estimate_tokens<J: JsonBody>(path: &str, body: &J) -> Estimate {
    let model = body.get("model").and_then(J::as_str).unwrap_or("");
    let enc = encoding_for(model);
    let n = u64_field(body, "n").unwrap_or(1).max(1);
    if path.ends_with("/chat/completions") {
        let [messages, tools, max_completion, max] = members(
            body,
            ["messages", "tools", "max_completion_tokens", "max_tokens"],
        );
        let mut prompt = 3; // reply priming
        for m in messages.and_then(J::as_array).into_iter().flatten() {
            prompt += 3;
            let [role, content, name, calls] =
                members(m, ["role", "content", "name", "tool_calls"]);
            if let Some(r) = role.and_then(J::as_str) {
                prompt += role_tokens(enc, r);
            }
            if let Some(c) = content {
                prompt += text_of(c, enc);
            }
            if let Some(name) = name.and_then(J::as_str) {
                prompt += 1 + count(enc, name);
            }
            if let Some(calls) = calls {
                prompt += count(enc, &calls.json_text());
            }
        }
        if let Some(tools) = tools {
            prompt += count(enc, &tools.json_text());
        }
        let limit = max_completion
            .and_then(J::as_u64)
            .or_else(|| max.and_then(J::as_u64))
            .unwrap_or(CHAT_OUTPUT_WHEN_UNSET);
        return tokens(prompt, limit.saturating_mul(n));
    }
    if path.ends_with("/embeddings") {
        let prompt = body.get("input").map_or(0, |input| match input.shape() {
            Shape::String(s) => count(enc, s),
            Shape::Array(items) => items
                .iter()
                .map(|i| match i.shape() {
                    Shape::String(s) => count(enc, s),
                    Shape::Array(ids) => ids.len() as u64,
                    Shape::Number(_) => 1,
                    _ => count(enc, &i.json_text()),
                })
                .sum(),
            _ => count(enc, &input.json_text()),
        });
        return tokens(prompt, 0);
    }
    if path.ends_with("/completions") {
        let prompts: Vec<u64> = body
            .get("prompt")
            .map_or(vec![0], |prompt| match prompt.shape() {
                Shape::String(s) => vec![count(enc, s)],
                Shape::Array(a) if a.iter().all(|p| p.as_u64().is_some()) => vec![a.len() as u64],
                Shape::Array(a) => a
                    .iter()
                    .map(|p| match p.shape() {
                        Shape::String(s) => count(enc, s),
                        Shape::Array(ids) => ids.len() as u64,
                        _ => count(enc, &p.json_text()),
                    })
                    .collect(),
                _ => vec![count(enc, &prompt.json_text())],
            });
        let limit = u64_field(body, "max_tokens").unwrap_or(COMPLETION_OUTPUT_WHEN_UNSET);
        let k = prompts.len().max(1) as u64;
        return tokens(
            prompts.iter().fold(0, |a, p| a.saturating_add(*p)),
            limit.saturating_mul(n).saturating_mul(k),
        );
    }
    if path.ends_with("/responses") {
        let prompt = body.get("input").map_or(0, |i| text_of(i, enc))
            + body
                .get("instructions")
                .and_then(J::as_str)
                .map_or(0, |s| count(enc, s));
        let limit = u64_field(body, "max_output_tokens").unwrap_or(CHAT_OUTPUT_WHEN_UNSET);
        return tokens(prompt, limit);
    }
    if path.ends_with("/moderations") {
        let prompt = body.get("input").map_or(0, |i| text_of(i, enc));
        return tokens(prompt, 0);
    }
    // Other endpoints: count the body as text (an upper bound for anything token-billed).
    tokens(count(enc, &body.json_text()), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_texts_are_counted_once_and_remembered_exactly() {
        let cache = CountCache::default();
        let text = "A system prompt that goes with every request, long enough to be remembered. "
            .repeat(10);
        for enc in [Encoding::O200k, Encoding::Cl100k] {
            let exact = tokenize(enc, &text);
            assert_eq!(cache.get_or_count(enc, &text), exact);
            assert_eq!(cache.get_or_count(enc, &text), exact, "from the cache");
        }
        assert_eq!(cache.len(), 2, "one entry per encoding");
        // Through the public path, the Unknown margin still applies on top of the cached count.
        assert_eq!(count(Encoding::Unknown, &text), {
            let n = tokenize(Encoding::Unknown, &text);
            n + n.div_ceil(5)
        });
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_texts_in_use() {
        let cache = CountCache::default();
        let hot = "the hot system prompt ".repeat(20);
        let hot_n = cache.get_or_count(Encoding::O200k, &hot);
        for i in 0..(2 * CACHED_TEXTS) {
            let cold = format!("{i} {}", "word ".repeat(60));
            cache.get_or_count(Encoding::O200k, &cold);
            if i % 100 == 0 {
                assert_eq!(cache.get_or_count(Encoding::O200k, &hot), hot_n);
            }
            assert!(cache.len() <= CACHED_TEXTS);
        }
        let m = cache.maps.lock().unwrap();
        let key = xxhash_rust::xxh3::xxh3_64_with_seed(hot.as_bytes(), seed(Encoding::O200k));
        assert!(
            m.0.contains_key(&key) || m.1.contains_key(&key),
            "in use, kept"
        );
    }

    #[test]
    fn known_roles_are_counted_as_the_tokenizer_would() {
        for enc in [Encoding::O200k, Encoding::Cl100k, Encoding::Unknown] {
            for role in [
                "system",
                "user",
                "assistant",
                "developer",
                "tool",
                "function",
            ] {
                assert_eq!(role_tokens(enc, role), count(enc, role), "{enc:?} {role}");
            }
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(encoding_for("gpt-4o-mini-2024-07-18"), Encoding::O200k);
        assert_eq!(encoding_for("ft:gpt-4.1-mini:acme::abc"), Encoding::O200k);
        assert_eq!(encoding_for("o3-mini"), Encoding::O200k);
        assert_eq!(encoding_for("gpt-4-turbo"), Encoding::Cl100k);
        assert_eq!(encoding_for("gpt-3.5-turbo"), Encoding::Cl100k);
        assert_eq!(encoding_for("text-embedding-3-small"), Encoding::Cl100k);
        assert_eq!(encoding_for("llama-3-70b"), Encoding::Unknown);
    }

    #[test]
    fn chat_matches_openai_counting() {
        let body = json!({"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}],
                          "max_tokens":100,"n":2});
        let e = estimate("/chat/completions", &body);
        assert_eq!(e.prompt, 3 + 1 + 2 + 3);
        assert_eq!(e.output, 200);
        let body = json!({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]});
        assert_eq!(
            estimate("/v1/chat/completions", &body).output,
            CHAT_OUTPUT_WHEN_UNSET
        );
    }

    #[test]
    fn unknown_models_are_bounded_above() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let known = count(Encoding::Cl100k, &text);
        let unknown = count(Encoding::Unknown, &text);
        assert!(unknown >= known + known / 5);
    }

    #[test]
    fn embeddings_and_completions() {
        let e = estimate(
            "/embeddings",
            &json!({"model":"text-embedding-3-small","input":["hello world",[1,2,3]]}),
        );
        assert_eq!(
            e,
            Estimate {
                prompt: 5,
                output: 0,
                characters: 11,
            }
        );
        let e = estimate(
            "/completions",
            &json!({"model":"gpt-3.5-turbo-instruct","prompt":["a","b"],"n":2}),
        );
        assert_eq!(e.output, 16 * 2 * 2);
    }

    #[test]
    fn the_limiter_counts_the_larger_of_tokens_and_characters_over_four() {
        // English prose: about four characters a token either way.
        let body = json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}],"max_tokens":100});
        let e = estimate("/chat/completions", &body);
        assert_eq!(e.characters, 4 + 11);
        assert_eq!(e.limiter_prompt(), e.prompt.max(4));
        assert_eq!(e.charged(), e.limiter_prompt() + 100);
        assert_eq!(e.charged_as(PromptCount::Larger), e.charged());
        assert_eq!(e.charged_as(PromptCount::Tokenizer), e.prompt + 100);
        assert_eq!(
            e.charged_as(PromptCount::Characters),
            e.characters.div_ceil(4) + 100
        );
        assert_eq!(
            PromptCount::parse("characters"),
            Ok(PromptCount::Characters)
        );
        assert!(PromptCount::parse("chars")
            .unwrap_err()
            .contains("\"characters\""));
        // Digits and punctuation: fewer characters a token than four, the tokenizer is higher.
        // Long words: more characters a token, the character estimate is higher.
        let long = "antidisestablishmentarianism ".repeat(40);
        let body = json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":long}]});
        let e = estimate("/chat/completions", &body);
        assert!(e.characters.div_ceil(4) > e.prompt, "{e:?}");
        assert_eq!(e.limiter_prompt(), e.characters.div_ceil(4));
        // Output limits that would overflow saturate instead of wrapping.
        let body = json!({"model":"gpt-4o","messages":[],"max_tokens":u64::MAX,"n":2});
        let e = estimate("/chat/completions", &body);
        assert_eq!(e.output, u64::MAX);
        assert_eq!(e.charged(), u64::MAX);
        assert!(e
            .refusal()
            .is_some_and(|m| m.contains("18446744073709551615")));
        let fine = estimate(
            "/chat/completions",
            &json!({"model":"gpt-4o","messages":[],"max_tokens":128000,"n":128}),
        );
        assert_eq!(fine.refusal(), None);
    }

    #[test]
    fn garbage_never_panics() {
        for body in [
            json!(null),
            json!([]),
            json!({"messages": 5}),
            json!({"input": {"x": 1}}),
        ] {
            for path in [
                "/chat/completions",
                "/embeddings",
                "/completions",
                "/responses",
                "/x",
            ] {
                let _ = estimate(path, &body);
            }
        }
    }

    /// Any JSON, of the shapes request bodies take.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,30}".prop_map(Value::from),
            prop_oneof![
                Just("messages"),
                Just("content"),
                Just("role"),
                Just("user")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("messages".to_string()),
                            Just("content".to_string()),
                            Just("input".to_string()),
                            Just("prompt".to_string()),
                            Just("tools".to_string()),
                            Just("max_tokens".to_string()),
                            Just("n".to_string()),
                            Just("instructions".to_string()),
                            prop_oneof![
                                Just("role".to_string()),
                                Just("text".to_string()),
                                Just("name".to_string()),
                                Just("tool_calls".to_string()),
                                Just("model".to_string()),
                                Just("max_completion_tokens".to_string()),
                            ],
                            "[a-z_]{1,8}",
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    // Fuzz targets (`PROPTEST_CASES=200000 cargo test -p sluice --lib fuzz_` for a long run).
    proptest::proptest! {
        /// Any body on any path: an estimate, never a panic, and what admission charges is never
        /// less than the output it reserves.
        #[test]
        fn fuzz_estimate_any_body(body in json_value(), which in 0usize..6) {
            let path = ["/chat/completions", "/embeddings", "/completions", "/responses",
                "/moderations", "/images/generations"][which];
            let e = estimate(path, &body);
            proptest::prop_assert!(e.charged() >= e.output);
            proptest::prop_assert!(e.charged() >= e.limiter_prompt());
            // The gateway reads bodies in place: it must count exactly as the `Value` does.
            // (Compared with the `Value` read from the same text: a float's text need not read
            // back to the very same float.)
            let text = body.to_string();
            let view = JsonView::parse(text.as_bytes()).unwrap();
            let reread: Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(estimate(path, &view), estimate(path, &reread));
        }

        /// The output reservation is max_tokens × n, saturating: never less than the worst case.
        #[test]
        fn fuzz_output_is_the_worst_case(max in proptest::prelude::any::<u64>(), n in 0u64..1000,
                                         text in "\\PC{0,50}") {
            let body = json!({"model":"gpt-4o-mini","max_tokens":max,"n":n,
                "messages":[{"role":"user","content":text}]});
            let e = estimate("/chat/completions", &body);
            proptest::prop_assert_eq!(e.output, max.saturating_mul(n.max(1)));
            proptest::prop_assert_eq!(e.refusal().is_some(), e.output > MAX_OUTPUT_RESERVATION);
        }
    }
}
