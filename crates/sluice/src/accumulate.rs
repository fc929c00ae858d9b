//! Turning a stream of chunks back into the completion it describes: content concatenated per
//! choice, tool-call fragments merged by their `index`, the finish reason of each choice, and the
//! usage from the final usage chunk.

use std::collections::BTreeMap;

use crate::wire::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, FinishReason, FunctionCall, ToolCall,
    Usage,
};

#[derive(Debug, Default, Clone)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tools: BTreeMap<u32, ToolCall>,
    finish: Option<FinishReason>,
}

/// Accumulates chunks; [`ChatAccumulator::snapshot`] gives the completion so far.
#[derive(Debug, Default, Clone)]
pub struct ChatAccumulator {
    id: String,
    model: String,
    created: u64,
    fingerprint: Option<String>,
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<Usage>,
    chunks: u64,
}

impl ChatAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &ChatChunk) {
        self.chunks += 1;
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.model.clone_from(&chunk.model);
            self.created = chunk.created;
        }
        if chunk.system_fingerprint.is_some() {
            self.fingerprint.clone_from(&chunk.system_fingerprint);
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        for c in &chunk.choices {
            let acc = self.choices.entry(c.index).or_default();
            let d = &c.delta;
            if let Some(r) = &d.role {
                acc.role = Some(r.clone());
            }
            if let Some(t) = &d.content {
                acc.content.get_or_insert_with(String::new).push_str(t);
            }
            if let Some(t) = &d.refusal {
                acc.refusal.get_or_insert_with(String::new).push_str(t);
            }
            for tc in d.tool_calls.iter().flatten() {
                let call = acc.tools.entry(tc.index).or_insert_with(|| ToolCall {
                    kind: "function".into(),
                    ..Default::default()
                });
                if let Some(id) = &tc.id {
                    call.id.clone_from(id);
                }
                if let Some(k) = &tc.kind {
                    call.kind.clone_from(k);
                }
                if let Some(f) = &tc.function {
                    if let Some(n) = &f.name {
                        call.function.name.push_str(n);
                    }
                    if let Some(a) = &f.arguments {
                        call.function.arguments.push_str(a);
                    }
                }
            }
            if let Some(f) = &c.finish_reason {
                acc.finish = Some(f.clone());
            }
        }
    }

    /// Chunks seen so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The completion as received so far.
    pub fn snapshot(&self) -> ChatCompletion {
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            usage: self.usage.clone(),
            choices: self
                .choices
                .iter()
                .map(|(i, c)| ChatChoice {
                    index: *i,
                    message: AssistantMessage {
                        role: c.role.clone().unwrap_or_else(|| "assistant".into()),
                        content: c.content.clone(),
                        refusal: c.refusal.clone(),
                        tool_calls: (!c.tools.is_empty()).then(|| {
                            c.tools
                                .values()
                                .map(|t| ToolCall {
                                    function: FunctionCall {
                                        name: t.function.name.clone(),
                                        arguments: t.function.arguments.clone(),
                                        ..Default::default()
                                    },
                                    ..t.clone()
                                })
                                .collect()
                        }),
                        ..Default::default()
                    },
                    finish_reason: c.finish.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(v: serde_json::Value) -> ChatChunk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn merges_content_tool_fragments_and_usage() {
        let mut acc = ChatAccumulator::new();
        let chunks = [
            json!({"id":"c1","model":"m","created":1,"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get","arguments":""}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"put","arguments":"{\"x\""}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":":1}"}}]}}]}),
            json!({"choices":[{"index":1,"delta":{"content":"Hel"}}]}),
            json!({"choices":[{"index":1,"delta":{"content":"lo"}}]}),
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}),
            json!({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}),
        ];
        for c in chunks {
            acc.push(&chunk(c));
        }
        let done = acc.snapshot();
        assert_eq!(done.id, "c1");
        let calls = done.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_a");
        assert_eq!(calls[0].function.name, "get");
        assert_eq!(calls[0].function.arguments, "{\"city\":\"Paris\"}");
        assert_eq!(calls[1].function.arguments, "{\"x\":1}");
        assert_eq!(done.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(done.choices[1].message.content.as_deref(), Some("Hello"));
        assert_eq!(done.choices[1].finish_reason, Some(FinishReason::Length));
        assert_eq!(done.usage.unwrap().total_tokens, 12);
    }
}
