//! Request and response types for the OpenAI API. Every struct keeps the fields it does not
//! name in a flattened `extra` map, so a field the API adds tomorrow passes through sluice
//! untouched instead of being dropped.

mod chat;
mod completions;
mod embeddings;
mod json_view;
mod models;
mod usage_scan;

pub use chat::*;
pub use completions::*;
pub use embeddings::*;
pub use json_view::JsonView;
pub use models::*;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields a struct does not name.
pub type Extra = Map<String, Value>;

/// Token counts of one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// `input_tokens` in the Responses API.
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u64,
    /// `output_tokens` in the Responses API.
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "input_tokens_details"
    )]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "output_tokens_details"
    )]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// Tokens the request used in all: `total_tokens`, or prompt plus completion when an
    /// upstream leaves the total out (what rate limits and admission count).
    pub fn tokens_used(&self) -> u64 {
        if self.total_tokens > 0 {
            self.total_tokens
        } else {
            self.prompt_tokens.saturating_add(self.completion_tokens)
        }
    }

    /// Prompt tokens served from the prompt cache (billed at the cached rate).
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }

    /// Reasoning tokens (billed as output, not shown).
    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
    }
}

/// A `usage` object read for its counts only, every other field skipped: the engine reads
/// usage on every answer, and gathering the fields a struct does not name (`extra`, a flattened
/// map) costs several times what the counts do. The answer's body keeps everything for callers
/// who parse it.
pub(crate) fn usage_counts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Usage>, D::Error> {
    #[derive(Deserialize)]
    struct Counts {
        #[serde(default, alias = "input_tokens")]
        prompt_tokens: u64,
        #[serde(default, alias = "output_tokens")]
        completion_tokens: u64,
        #[serde(default)]
        total_tokens: u64,
        #[serde(default, alias = "input_tokens_details")]
        prompt_tokens_details: Option<Cached>,
        #[serde(default, alias = "output_tokens_details")]
        completion_tokens_details: Option<Reasoning>,
    }
    #[derive(Deserialize)]
    struct Cached {
        #[serde(default)]
        cached_tokens: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Reasoning {
        #[serde(default)]
        reasoning_tokens: Option<u64>,
    }
    Ok(Option::<Counts>::deserialize(d)?.map(|c| Usage {
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.completion_tokens,
        total_tokens: c.total_tokens,
        prompt_tokens_details: c.prompt_tokens_details.map(|d| PromptTokensDetails {
            cached_tokens: d.cached_tokens,
            extra: Extra::new(),
        }),
        completion_tokens_details: c
            .completion_tokens_details
            .map(|d| CompletionTokensDetails {
                reasoning_tokens: d.reasoning_tokens,
                extra: Extra::new(),
            }),
        extra: Extra::new(),
    }))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Why a choice stopped. Unknown reasons are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    FunctionCall,
    Other(String),
}

impl FinishReason {
    /// One of the documented reasons, read without building a string; `None` for any other.
    pub(crate) fn known(s: &str) -> Option<FinishReason> {
        Some(match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            "function_call" => FinishReason::FunctionCall,
            _ => return None,
        })
    }

    /// A reason's text as kept: a documented one as its static name (no copy), any other
    /// copied.
    pub(crate) fn text(s: &str) -> std::borrow::Cow<'static, str> {
        match FinishReason::known(s) {
            Some(known) => std::borrow::Cow::Borrowed(known.label()),
            None => std::borrow::Cow::Owned(s.to_string()),
        }
    }

    /// The reason's name as a metric label: the documented ones, `other` for the rest.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::FunctionCall => "function_call",
            FinishReason::Other(_) => "other",
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Other(s) => s,
            known => known.label(),
        }
    }

    /// How many labels [`FinishReason::label`] gives (the documented reasons and `other`).
    pub(crate) const LABELS: usize = 6;

    /// The reason's place among the labels, `0..LABELS`: for a table kept by label.
    pub(crate) fn ordinal(&self) -> usize {
        match self {
            FinishReason::Stop => 0,
            FinishReason::Length => 1,
            FinishReason::ToolCalls => 2,
            FinishReason::ContentFilter => 3,
            FinishReason::FunctionCall => 4,
            FinishReason::Other(_) => 5,
        }
    }

    /// `length` and `content_filter`: the answer is not what was asked for.
    pub fn is_truncated(&self) -> bool {
        matches!(self, FinishReason::Length | FinishReason::ContentFilter)
    }
}

impl From<String> for FinishReason {
    fn from(s: String) -> Self {
        FinishReason::known(&s).unwrap_or(FinishReason::Other(s))
    }
}

impl From<FinishReason> for String {
    fn from(f: FinishReason) -> Self {
        f.as_str().to_string()
    }
}

/// Where the value of a `"key":` whose closing quote is at byte `quote` starts: past the colon
/// and the JSON whitespace around it.
fn value_start(b: &[u8], quote: usize) -> Option<usize> {
    let ws = |mut i: usize| {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    };
    let colon = ws(quote + 1);
    (b.get(colon) == Some(&b':')).then(|| ws(colon + 1))
}

/// A key looked for in answers and stream chunks, with its substring finder built once: memchr
/// builds a finder's tables on each call otherwise, which for a short answer costs more than the
/// search itself.
pub(crate) type JsonKey = std::sync::LazyLock<memchr::memmem::Finder<'static>>;

pub(crate) static FINISH_REASON: JsonKey =
    JsonKey::new(|| memchr::memmem::Finder::new("finish_reason"));
pub(crate) static USAGE: JsonKey = JsonKey::new(|| memchr::memmem::Finder::new("usage"));
pub(crate) static TYPE: JsonKey = JsonKey::new(|| memchr::memmem::Finder::new("type"));
/// `"usage"`, searched from the end.
static LAST_USAGE: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new("\"usage\""));

/// Where the value after each `"key":` of a JSON text starts (whitespace around the colon
/// skipped), in order: a cheap look at one field of an answer or a stream chunk instead of
/// parsing it. A key cannot occur inside a JSON string (its quotes are escaped there), so a match
/// is a key — at any depth. memchr's SIMD substring search finds them: answers can be long, and
/// this runs on each. Bytes, not text: an answer's body is not checked as UTF-8 whole for it.
fn value_starts<'a>(b: &'a [u8], key: &'static JsonKey) -> impl Iterator<Item = usize> + 'a {
    let len = key.needle().len();
    key.find_iter(b).filter_map(move |at| {
        let end = at + len;
        let quoted = at > 0 && b[at - 1] == b'"' && b.get(end) == Some(&b'"');
        quoted.then(|| value_start(b, end)).flatten()
    })
}

/// The text after each `"key":` of a JSON text (see [`value_starts`]).
pub(crate) fn values_of<'a>(
    json: &'a str,
    key: &'static JsonKey,
) -> impl Iterator<Item = &'a str> + 'a {
    value_starts(json.as_bytes(), key).filter_map(move |i| json.get(i..))
}

/// Each non-null `finish_reason` string of a JSON text (an answer or a stream chunk), whatever
/// the whitespace around the colon (some compatible servers write `"finish_reason": "stop"`).
pub(crate) fn finish_reasons(json: &[u8]) -> impl Iterator<Item = &str> {
    value_starts(json, &FINISH_REASON).filter_map(move |i| {
        let v = json.get(i..)?.strip_prefix(b"\"")?;
        let end = memchr::memchr(b'"', v)?;
        std::str::from_utf8(&v[..end]).ok()
    })
}

/// The counts of the last `"usage"` object of a JSON text, read without parsing the rest (an
/// answer puts its usage at the end, after the content).
pub(crate) fn last_usage(json: &[u8]) -> Option<Usage> {
    // The last `"usage": {` found searching forward (vectorised, where a search from the end is
    // not), and read by the scanner: an answer's one usage object, at the cost of a glance. An
    // answer without one (a model list, a file) is done with after that one pass.
    let object = |i: &usize| json.get(*i) == Some(&b'{');
    let last = value_starts(json, &USAGE).filter(object).last()?;
    if let Some(u) = json.get(last..).and_then(usage_scan::scan) {
        return Some(u);
    }
    // The scanner was not sure: from the end, the last one serde can read.
    let len = LAST_USAGE.needle().len();
    LAST_USAGE.rfind_iter(json).find_map(|at| {
        let i = value_start(json, at + len - 1).filter(object)?;
        let mut de = serde_json::Deserializer::from_slice(json.get(i..)?);
        usage_counts(&mut de).ok().flatten()
    })
}

/// Whether a JSON text has a `"usage"` key whose value is an object, whatever the whitespace
/// around the colon (`"usage":{`, `"usage": {`, `"usage" :\n{`). A cheap test before parsing:
/// chat chunks carry `"usage": null` on every chunk but the last when usage is asked for.
pub fn has_usage_object(json: &str) -> bool {
    values_of(json, &USAGE).any(|v| v.starts_with('{'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Answer {
        #[serde(default, deserialize_with = "usage_counts")]
        usage: Option<Usage>,
    }

    fn counts(json: &str) -> Option<Usage> {
        serde_json::from_str::<Answer>(json).unwrap().usage
    }

    #[test]
    fn usage_objects_are_found_with_any_whitespace() {
        for yes in [
            r#"{"usage":{"prompt_tokens":1}}"#,
            r#"{"choices": [], "usage": {"prompt_tokens": 1}}"#,
            "{\"usage\" :\n  {\"prompt_tokens\":1}}",
            r#"{"usage":null,"x":{"usage":{}}}"#,
        ] {
            assert!(has_usage_object(yes), "{yes}");
        }
        for no in [
            r#"{"usage":null}"#,
            r#"{"usage": 3}"#,
            r#"{"text":"usage"}"#,
            "usage",
        ] {
            assert!(!has_usage_object(no), "{no}");
        }
    }

    #[test]
    fn usage_counts_reads_chat_and_responses_names_and_skips_the_rest() {
        let chat = counts(
            r#"{"id":"x","usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,
                "prompt_tokens_details":{"cached_tokens":100,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":12,"accepted_prediction_tokens":0},
                "new_field":{"a":[1,2]}}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                chat.prompt_tokens,
                chat.completion_tokens,
                chat.total_tokens
            ),
            (120, 30, 150)
        );
        assert_eq!((chat.cached_tokens(), chat.reasoning_tokens()), (100, 12));
        assert!(chat.extra.is_empty(), "counts only");

        let responses = counts(
            r#"{"usage":{"input_tokens":7,"output_tokens":3,"total_tokens":10,
                "input_tokens_details":{"cached_tokens":4},"output_tokens_details":{"reasoning_tokens":1}}}"#,
        )
        .unwrap();
        assert_eq!(
            (responses.prompt_tokens, responses.completion_tokens),
            (7, 3)
        );
        assert_eq!(
            (responses.cached_tokens(), responses.reasoning_tokens()),
            (4, 1)
        );

        assert_eq!(counts(r#"{"usage":null}"#), None);
        assert_eq!(counts(r#"{"id":"no usage"}"#), None);
    }
}
