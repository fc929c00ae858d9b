//! Embeddings.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Extra, Usage};

/// `POST /embeddings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    /// A string, an array of strings, or token arrays.
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl EmbeddingRequest {
    pub fn new(model: impl Into<String>, input: impl Into<Value>) -> Self {
        EmbeddingRequest {
            model: model.into(),
            input: input.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub data: Vec<Embedding>,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    #[serde(default)]
    pub index: u32,
    /// A float array, or a base64 string of little-endian f32 when asked for.
    pub embedding: Value,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Embedding {
    /// The vector, decoding base64 if that is how it came. `None` if malformed.
    pub fn vector(&self) -> Option<Vec<f32>> {
        match &self.embedding {
            Value::Array(a) => a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect(),
            Value::String(s) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
                if bytes.len() % 4 != 0 {
                    return None;
                }
                Some(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            }
            _ => None,
        }
    }
}
