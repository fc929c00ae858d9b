//! What a request costs, in exact integer nano-dollars (1e-9 USD): prices per million tokens are
//! held as micro-dollars, so `tokens × micro$/Mtok ÷ 1000` is exact, and totals over millions of
//! requests never drift the way summed floats do.
//!
//! Prices come from the registry shipped in `data/models.toml` (sources and dates in its
//! header). A dated snapshot (`gpt-4o-mini-2024-07-18`) and a fine-tune
//! (`ft:gpt-4o-mini:org::id`) are priced as their base model when not listed themselves.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::wire::Usage;

/// Nano-dollars (1e-9 USD).
pub type Nanos = u64;

/// Format nano-dollars as dollars with six decimals: `$0.001234`.
pub fn dollars(n: Nanos) -> String {
    format!("${}.{:06}", n / 1_000_000_000, (n % 1_000_000_000) / 1000)
}

/// Parse a dollar amount (`12.5`, `0.25`) into nano-dollars.
pub fn parse_dollars(s: &str) -> Option<Nanos> {
    let v: f64 = s.trim().trim_start_matches('$').parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some((v * 1e9).round() as Nanos)
}

/// Prices of one model, micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

impl Price {
    /// Cost of a finished request from its usage: uncached prompt, cached prompt, and
    /// completion (reasoning tokens are part of the completion count).
    pub fn cost(&self, u: &Usage) -> Nanos {
        let cached = u.cached_tokens().min(u.prompt_tokens);
        let fresh = u.prompt_tokens - cached;
        (fresh * self.input + cached * self.cached_input + u.completion_tokens * self.output) / 1000
    }

    /// Worst case before sending: every prompt token uncached, every output token used.
    pub fn worst_case(&self, prompt: u64, output: u64) -> Nanos {
        (prompt * self.input + output * self.output).div_ceil(1000)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default, rename = "model")]
    models: Vec<RawModel>,
}

/// One registry entry as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub encoding: Option<String>,
    pub context_window: Option<u64>,
    pub max_output: Option<u64>,
    pub input_per_mtok: Option<f64>,
    pub cached_input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
    pub batch_discount: Option<f64>,
    pub deprecated: Option<String>,
    pub shutdown: Option<String>,
    pub replacement: Option<String>,
}

/// The price table.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    by_id: HashMap<String, Price>,
}

fn micro(field: &str, id: &str, v: Option<f64>) -> Result<Option<u64>, Error> {
    match v {
        None => Ok(None),
        Some(p) if p.is_finite() && p >= 0.0 => Ok(Some((p * 1e6).round() as u64)),
        Some(p) => Err(Error::new(
            ErrorKind::Config,
            format!("model {id}: {field} must be a non-negative number, got {p}"),
        )),
    }
}

impl Prices {
    /// The registry shipped with sluice.
    pub fn builtin() -> Self {
        // The shipped file is checked by a test; an error here would be a build defect, and
        // an empty table (no costs) is the safe fallback.
        Self::from_toml(include_str!("../data/models.toml")).unwrap_or_default()
    }

    /// Parse a registry file; a bad entry is reported with its model id and field.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let raw: RawRegistry = toml::from_str(text)
            .map_err(|e| Error::new(ErrorKind::Config, format!("model registry: {e}")))?;
        let mut p = Prices::default();
        p.extend(raw.models)?;
        Ok(p)
    }

    /// Add or override entries.
    pub fn extend(&mut self, models: Vec<RawModel>) -> Result<(), Error> {
        for m in models {
            let input = micro("input_per_mtok", &m.id, m.input_per_mtok)?;
            let output = micro("output_per_mtok", &m.id, m.output_per_mtok)?;
            let cached = micro("cached_input_per_mtok", &m.id, m.cached_input_per_mtok)?;
            let (Some(input), Some(output)) = (input, output) else {
                continue;
            };
            let price = Price {
                input,
                cached_input: cached.unwrap_or(input),
                output,
            };
            for name in std::iter::once(&m.id).chain(m.aliases.iter()) {
                self.by_id.insert(name.clone(), price);
            }
        }
        Ok(())
    }

    /// The price of `model`, matching exact ids and aliases, then fine-tunes and dated
    /// snapshots by their base model.
    pub fn get(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.by_id.get(model) {
            return Some(*p);
        }
        let base = model
            .strip_prefix("ft:")
            .map_or(model, |m| m.split(':').next().unwrap_or(m));
        if let Some(p) = self.by_id.get(base) {
            return Some(*p);
        }
        // "gpt-4o-mini-2024-07-18" → "gpt-4o-mini": strip a trailing date.
        let mut parts: Vec<&str> = base.split('-').collect();
        while parts.len() > 1 {
            let last = parts[parts.len() - 1];
            if last.chars().all(|c| c.is_ascii_digit()) {
                parts.pop();
                if let Some(p) = self.by_id.get(&parts.join("-")) {
                    return Some(*p);
                }
            } else {
                break;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
        serde_json::from_value(serde_json::json!({
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}
        }))
        .unwrap()
    }

    #[test]
    fn shipped_registry_parses() {
        let text = include_str!("../data/models.toml");
        let p = Prices::from_toml(text).unwrap();
        assert!(p.get("gpt-4o-mini").is_some());
    }

    #[test]
    fn cost_by_hand() {
        let p = Prices::builtin();
        let mini = p.get("gpt-4o-mini").unwrap();
        // 1,000 prompt tokens of which 400 cached, 500 completion:
        // 600 × $0.15/M + 400 × $0.075/M + 500 × $0.60/M = $0.00009 + $0.00003 + $0.0003
        assert_eq!(mini.cost(&usage(1000, 400, 500)), 420_000);
        assert_eq!(dollars(420_000), "$0.000420");
        // Snapshots and fine-tunes price as their base.
        assert_eq!(p.get("gpt-4o-mini-2024-07-18"), Some(mini));
        assert_eq!(p.get("ft:gpt-4o-mini:acme::abc123"), Some(mini));
        assert_eq!(p.get("no-such-model"), None);
        // Models without a cached price charge cached tokens at the input price.
        let g4 = p.get("gpt-4").unwrap();
        assert_eq!(g4.cost(&usage(1000, 1000, 0)), 30_000_000);
        // Worst case: all output used.
        assert_eq!(mini.worst_case(1000, 1000), 150_000 + 600_000);
    }

    #[test]
    fn million_requests_sum_exactly() {
        let mini = Prices::builtin().get("gpt-4o-mini").unwrap();
        let one = mini.cost(&usage(13, 0, 7));
        let total: Nanos = (0..1_000_000).map(|_| one).sum();
        assert_eq!(total, one * 1_000_000);
        assert_eq!(one, 13 * 150 + 7 * 600);
    }

    #[test]
    fn bad_entries_are_named() {
        let e =
            Prices::from_toml("[[model]]\nid = \"x\"\ninput_per_mtok = -1\noutput_per_mtok = 1\n")
                .unwrap_err();
        assert!(e.to_string().contains("model x: input_per_mtok"), "{e}");
        let e = Prices::from_toml("[[model]]\nid = \"x\"\ncolour = 1\n").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        assert_eq!(parse_dollars("12.5"), Some(12_500_000_000));
        assert_eq!(parse_dollars("-1"), None);
    }
}
