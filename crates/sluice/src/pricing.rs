//! What a request costs, in exact integer nano-dollars (1e-9 USD): prices per million tokens are
//! held as micro-dollars, so `tokens × micro$/Mtok ÷ 1000` is exact, and totals over millions of
//! requests never drift the way summed floats do.
//!
//! Prices come from the model registry ([`crate::models::Registry::price`]).

use crate::wire::Usage;

/// Nano-dollars (1e-9 USD).
pub type Nanos = u64;

/// Format nano-dollars as dollars with six decimals: `$0.001234`.
pub fn dollars(n: Nanos) -> String {
    format!("${}.{:06}", n / 1_000_000_000, (n % 1_000_000_000) / 1000)
}

/// Format nano-dollars exactly, with nine decimals: `0.000001950` (headers, machine output).
pub fn dollars_exact(n: Nanos) -> String {
    // Written digit by digit: the gateway writes one on every answer, where `format!`'s
    // machinery costs several times the digits.
    let mut out = String::with_capacity(32);
    crate::hex::push_decimal(&mut out, n / 1_000_000_000, 1);
    out.push('.');
    crate::hex::push_decimal(&mut out, n % 1_000_000_000, 9);
    out
}

/// Parse a dollar amount (`12.5`, `0.25`) into nano-dollars.
pub fn parse_dollars(s: &str) -> Option<Nanos> {
    let v: f64 = s.trim().trim_start_matches('$').parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some((v * 1e9).round() as Nanos)
}

/// Dollars per million tokens, as files write a price, in micro-dollars per million tokens;
/// `field` names it in the error. Shared by the model registry and upstreams' own `prices`.
pub fn micro_per_mtok(field: &str, p: f64) -> Result<u64, String> {
    if p.is_finite() && (0.0..=1e9).contains(&p) {
        Ok((p * 1e6).round() as u64)
    } else {
        Err(format!(
            "{field}: must be a non-negative number of dollars per million tokens, got {p}"
        ))
    }
}

/// Prices of one model, micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

impl Price {
    /// A price from dollars per million tokens, as configuration files write it (`cached`
    /// absent: cached prompt tokens cost the input price). Errors name the field.
    pub fn per_mtok(input: f64, output: f64, cached: Option<f64>) -> Result<Price, String> {
        let micro = micro_per_mtok;
        let input = micro("input_per_mtok", input)?;
        Ok(Price {
            input,
            output: micro("output_per_mtok", output)?,
            cached_input: match cached {
                Some(c) => micro("cached_input_per_mtok", c)?,
                None => input,
            },
        })
    }

    /// Each component the higher of the two: what a request may cost when either could answer.
    pub fn max(self, other: Price) -> Price {
        Price {
            input: self.input.max(other.input),
            cached_input: self.cached_input.max(other.cached_input),
            output: self.output.max(other.output),
        }
    }

    /// Cost of a finished request from its usage: uncached prompt, cached prompt, and
    /// completion (reasoning tokens are part of the completion count).
    /// Saturating: counts an upstream (or a caller) made up cannot wrap into a small cost.
    pub fn cost(&self, u: &Usage) -> Nanos {
        let cached = u.cached_tokens().min(u.prompt_tokens);
        let fresh = u.prompt_tokens - cached;
        fresh
            .saturating_mul(self.input)
            .saturating_add(cached.saturating_mul(self.cached_input))
            .saturating_add(u.completion_tokens.saturating_mul(self.output))
            / 1000
    }

    /// Worst case before sending: every prompt token uncached, every output token used.
    /// Saturating: a `max_tokens` of `u64::MAX` costs the most there is, never a wrapped small
    /// amount that a budget would let through.
    pub fn worst_case(&self, prompt: u64, output: u64) -> Nanos {
        prompt
            .saturating_mul(self.input)
            .saturating_add(output.saturating_mul(self.output))
            .div_ceil(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_counts_saturate_instead_of_wrapping() {
        let p = Price {
            input: 150_000,
            cached_input: 75_000,
            output: 600_000,
        };
        assert_eq!(p.worst_case(10, u64::MAX), u64::MAX.div_ceil(1000));
        let u = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: u64::MAX,
            ..Usage::default()
        };
        assert_eq!(p.cost(&u), u64::MAX / 1000);
    }
    use crate::models::Registry;

    fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
        serde_json::from_value(serde_json::json!({
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}
        }))
        .unwrap()
    }

    #[test]
    fn cost_by_hand() {
        let p = Registry::builtin();
        let mini = p.price("gpt-4o-mini").unwrap();
        // 1,000 prompt tokens of which 400 cached, 500 completion:
        // 600 × $0.15/M + 400 × $0.075/M + 500 × $0.60/M = $0.00009 + $0.00003 + $0.0003
        assert_eq!(mini.cost(&usage(1000, 400, 500)), 420_000);
        assert_eq!(dollars(420_000), "$0.000420");
        assert_eq!(dollars_exact(420_000), "0.000420000");
        assert_eq!(dollars_exact(0), "0.000000000");
        assert_eq!(dollars_exact(12_000_000_001), "12.000000001");
        assert_eq!(dollars_exact(u64::MAX), "18446744073.709551615");
        // Snapshots and fine-tunes price as their base.
        assert_eq!(p.price("gpt-4o-mini-2024-07-18"), Some(mini));
        assert_eq!(p.price("ft:gpt-4o-mini:acme::abc123"), Some(mini));
        assert_eq!(p.price("no-such-model"), None);
        // Models without a cached price charge cached tokens at the input price.
        let g4 = p.price("gpt-4").unwrap();
        assert_eq!(g4.cost(&usage(1000, 1000, 0)), 30_000_000);
        // Worst case: all output used.
        assert_eq!(mini.worst_case(1000, 1000), 150_000 + 600_000);
    }

    #[test]
    fn reasoning_tokens_are_billed_once_as_output() {
        // o4-mini: $1.10/M input, $4.40/M output. 200 prompt, 500 completion of which 300
        // reasoning: 200 × 1,100 + 500 × 4,400 nanos = 220,000 + 2,200,000.
        let o4 = Registry::builtin().price("o4-mini").unwrap();
        let u: Usage = serde_json::from_value(serde_json::json!({
            "prompt_tokens": 200, "completion_tokens": 500,
            "completion_tokens_details": {"reasoning_tokens": 300}
        }))
        .unwrap();
        assert_eq!(u.reasoning_tokens(), 300);
        assert_eq!(o4.cost(&u), 2_420_000);
        // The Responses API names the same counts differently.
        let r: Usage = serde_json::from_value(serde_json::json!({
            "input_tokens": 200, "output_tokens": 500,
            "input_tokens_details": {"cached_tokens": 100}
        }))
        .unwrap();
        assert_eq!((r.prompt_tokens, r.cached_tokens()), (200, 100));
    }

    #[test]
    fn million_requests_sum_exactly() {
        let mini = Registry::builtin().price("gpt-4o-mini").unwrap();
        let one = mini.cost(&usage(13, 0, 7));
        let total: Nanos = (0..1_000_000).map(|_| one).sum();
        assert_eq!(total, one * 1_000_000);
        assert_eq!(one, 13 * 150 + 7 * 600);
    }

    #[test]
    fn dollar_amounts_parse() {
        assert_eq!(parse_dollars("12.5"), Some(12_500_000_000));
        assert_eq!(parse_dollars("$0.25"), Some(250_000_000));
        assert_eq!(parse_dollars("-1"), None);
        assert_eq!(parse_dollars("lots"), None);
    }
}
