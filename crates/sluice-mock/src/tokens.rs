//! Exact token counts with the model's own tokenizer (tiktoken's BPE tables, embedded in
//! tiktoken-rs, so nothing is downloaded).
//!
//! Chat prompts follow OpenAI's published counting recipe: every message costs 3 tokens of
//! framing plus its role and content (a `name` costs 1 more), and every reply is primed with 3.
//! The prompt is kept as a token sequence, not just a count, so the prefix cache can hash it.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use crate::config::Encoding;

/// Stand-in ids for framing tokens; they only need to be stable for prefix hashing.
const FRAME: u32 = u32::MAX - 1;
const IMAGE: u32 = u32::MAX - 2;
/// What OpenAI charges for one low-detail image part.
const IMAGE_TOKENS: usize = 85;

fn bpe(enc: Encoding) -> &'static CoreBPE {
    match enc {
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    }
}

/// Tokens of plain text (special-token text is treated as ordinary text, as the API does).
/// Long texts are remembered (see [`Memo`]): real applications send the same long system
/// prompt or examples with every request, and encoding 2,000 tokens each time would make the
/// simulator, not the engine under test, the bottleneck of a benchmark.
pub fn encode(enc: Encoding, text: &str) -> Vec<u32> {
    if text.len() < MEMO_MIN_BYTES {
        return bpe(enc).encode_ordinary(text);
    }
    let memo = MEMO.get_or_init(Default::default);
    if let Some(t) = memo.get(enc, text) {
        return t.to_vec();
    }
    let toks = bpe(enc).encode_ordinary(text);
    memo.put(enc, text, &toks);
    toks
}

/// Texts shorter than this are encoded each time (faster than a lookup is worth).
const MEMO_MIN_BYTES: usize = 512;
/// Text and tokens remembered at most; past it the memo starts over.
const MEMO_MAX_BYTES: usize = 64 << 20;

static MEMO: std::sync::OnceLock<Memo> = std::sync::OnceLock::new();

/// Long texts and their tokens, per encoding, keyed by the whole text (a hit is exact, never a
/// hash that could collide), bounded by [`MEMO_MAX_BYTES`].
#[derive(Default)]
struct Memo {
    inner: std::sync::Mutex<MemoInner>,
}

#[derive(Default)]
struct MemoInner {
    o200k: std::collections::HashMap<Box<str>, std::sync::Arc<[u32]>>,
    cl100k: std::collections::HashMap<Box<str>, std::sync::Arc<[u32]>>,
    bytes: usize,
}

impl MemoInner {
    fn map(
        &mut self,
        enc: Encoding,
    ) -> &mut std::collections::HashMap<Box<str>, std::sync::Arc<[u32]>> {
        match enc {
            Encoding::O200kBase => &mut self.o200k,
            Encoding::Cl100kBase => &mut self.cl100k,
        }
    }
}

impl Memo {
    fn get(&self, enc: Encoding, text: &str) -> Option<std::sync::Arc<[u32]>> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.map(enc).get(text).cloned()
    }

    fn put(&self, enc: Encoding, text: &str, toks: &[u32]) {
        let size = text.len() + toks.len() * 4;
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if m.bytes + size > MEMO_MAX_BYTES {
            m.o200k.clear();
            m.cl100k.clear();
            m.bytes = 0;
        }
        if m.map(enc).insert(text.into(), toks.into()).is_none() {
            m.bytes += size;
        }
    }
}

/// Text of a token sequence (lossy for a cut inside a multi-byte character).
pub fn decode(enc: Encoding, toks: &[u32]) -> String {
    match bpe(enc).decode_bytes(toks) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    }
}

/// Number of tokens in `text`.
pub fn count(enc: Encoding, text: &str) -> u64 {
    encode(enc, text).len() as u64
}

/// Load both tokenizers now rather than on the first request (they take a moment to build).
pub fn warm_up() {
    let _ = bpe(Encoding::O200kBase);
    let _ = bpe(Encoding::Cl100kBase);
}

/// The token sequence of a chat prompt, or the name of the field that is malformed.
pub fn chat_prompt(
    enc: Encoding,
    messages: &[Value],
    tools: Option<&Value>,
) -> Result<Vec<u32>, (String, String)> {
    let mut toks: Vec<u32> = Vec::with_capacity(64);
    for (i, m) in messages.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| (format!("messages[{i}]"), "expected an object".to_string()))?;
        let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| {
            (
                format!("messages[{i}].role"),
                "Missing required parameter".to_string(),
            )
        })?;
        toks.extend([FRAME; 3]);
        toks.extend(encode(enc, role));
        match obj.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => toks.extend(encode(enc, s)),
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") | Some("input_text") => {
                            let text = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                                (
                                    format!("messages[{i}].content[{j}].text"),
                                    "expected a string".to_string(),
                                )
                            })?;
                            toks.extend(encode(enc, text));
                        }
                        Some(_) => toks.extend([IMAGE; IMAGE_TOKENS]),
                        None => {
                            return Err((
                                format!("messages[{i}].content[{j}].type"),
                                "Missing required parameter".to_string(),
                            ))
                        }
                    }
                }
            }
            Some(_) => {
                return Err((
                    format!("messages[{i}].content"),
                    "expected a string or an array of content parts".to_string(),
                ))
            }
        }
        if let Some(name) = obj.get("name").and_then(Value::as_str) {
            toks.push(FRAME);
            toks.extend(encode(enc, name));
        }
        if let Some(calls) = obj.get("tool_calls") {
            toks.extend(encode(enc, &calls.to_string()));
        }
    }
    if let Some(tools) = tools {
        // Tool definitions are rendered into the prompt; their JSON text is a close estimate.
        toks.extend(encode(enc, &tools.to_string()));
    }
    toks.extend([FRAME; 3]);
    Ok(toks)
}

/// The lower-cased text of every message, for trigger-word checks.
pub fn chat_text(messages: &[Value]) -> String {
    let mut out = String::new();
    for m in messages {
        match m.get("content") {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        out.push_str(t);
                        out.push(' ');
                    }
                }
            }
            _ => {}
        }
        out.push('\n');
    }
    out.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_known_strings() {
        // "hello world" is two tokens in both encodings.
        assert_eq!(count(Encoding::O200kBase, "hello world"), 2);
        assert_eq!(count(Encoding::Cl100kBase, "hello world"), 2);
        assert_eq!(count(Encoding::Cl100kBase, ""), 0);
    }

    #[test]
    fn long_texts_are_remembered_exactly_per_encoding() {
        let long = "refund policy within thirty days of purchase. ".repeat(40);
        let fresh = |e| bpe(e).encode_ordinary(&long);
        for e in [Encoding::O200kBase, Encoding::Cl100kBase] {
            assert_eq!(encode(e, &long), fresh(e), "first, encoded");
            assert_eq!(encode(e, &long), fresh(e), "then, remembered");
        }
        // A text differing in one character is its own entry, never the other's tokens.
        let other = long.replacen("refund", "Refund", 1);
        assert_eq!(
            encode(Encoding::O200kBase, &other),
            bpe(Encoding::O200kBase).encode_ordinary(&other)
        );
    }

    #[test]
    fn chat_overhead_matches_openai_recipe() {
        let msgs = vec![json!({"role":"user","content":"hello world"})];
        // 3 framing + 1 ("user") + 2 ("hello world") + 3 reply priming.
        let toks = chat_prompt(Encoding::O200kBase, &msgs, None).unwrap();
        assert_eq!(toks.len(), 9);
        let named = vec![json!({"role":"user","name":"bob","content":"hello world"})];
        let toks = chat_prompt(Encoding::O200kBase, &named, None).unwrap();
        assert_eq!(toks.len(), 11);
    }

    #[test]
    fn malformed_message_names_the_field() {
        let msgs = vec![json!({"role":"user","content":5})];
        let (field, _) = chat_prompt(Encoding::O200kBase, &msgs, None).unwrap_err();
        assert_eq!(field, "messages[0].content");
        let msgs = vec![json!({"content":"x"})];
        let (field, _) = chat_prompt(Encoding::O200kBase, &msgs, None).unwrap_err();
        assert_eq!(field, "messages[0].role");
    }
}
