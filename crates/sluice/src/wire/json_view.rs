//! A JSON request body read in place: strings without escapes borrow from the body, objects are
//! short lists instead of trees. The gateway reads a handful of a request's fields (the model,
//! `stream`, the messages' text for the estimate) and sends the body's own bytes on; building a
//! `serde_json::Value` for that — a tree node and an owned key for every member, a string for
//! every text, all dropped a moment later — cost more than anything else it did per request.
//!
//! The tree answers exactly as `Value` would: the last of two members with one name wins (so a
//! duplicate is replaced where it stands), numbers are read into the same three kinds
//! (`u64`, `i64`, `f64`), and [`JsonView::to_value`] gives the `Value` serde_json would have
//! built (tested against it on random documents).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// One JSON value borrowed from the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonView<'a> {
    Null,
    Bool(bool),
    /// A number as serde_json reads it (without `arbitrary_precision`).
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<JsonView<'a>>),
    /// Members in the order of their first appearance, each name once.
    Object(Vec<(Cow<'a, str>, JsonView<'a>)>),
}

/// Objects longer than this find a repeated name through an index instead of a walk, so a
/// body with many members is not quadratic.
const WALK_LIMIT: usize = 16;

impl<'a> JsonView<'a> {
    /// Reads a JSON document; the errors are serde_json's own.
    ///
    /// The text is checked as UTF-8 once, whole, and then read as a `str`: read from bytes,
    /// serde_json checks each string on its own, and for the short strings of a request
    /// (names, roles, a model) the calls cost ten times the one pass over the whole body.
    /// Text that is not UTF-8 is read from its bytes, so that the error is the one serde_json
    /// gives (with its line and column).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    /// An object's member (`None` for anything else), as `Value::get` with a name.
    pub fn get(&self, name: &str) -> Option<&JsonView<'a>> {
        match self {
            JsonView::Object(m) => m.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsonView::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            JsonView::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            JsonView::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[JsonView<'a>]> {
        match self {
            JsonView::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The `Value` serde_json would have read from the same text.
    pub fn to_value(&self) -> Value {
        match self {
            JsonView::Null => Value::Null,
            JsonView::Bool(b) => Value::Bool(*b),
            JsonView::Number(n) => Value::Number(n.clone()),
            JsonView::String(s) => Value::String(s.to_string()),
            JsonView::Array(a) => Value::Array(a.iter().map(JsonView::to_value).collect()),
            JsonView::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for JsonView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ViewVisitor)
    }
}

struct ViewVisitor;

impl<'de> Visitor<'de> for ViewVisitor {
    type Value = JsonView<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(JsonView::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(JsonView::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(JsonView::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        // serde_json never hands a visitor a non-finite float; `Null` is what `Value` makes
        // of one all the same.
        Ok(Number::from_f64(n).map_or(JsonView::Null, JsonView::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(JsonView::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(JsonView::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(JsonView::String(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(JsonView::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(JsonView::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Deserialize::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(JsonView::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, JsonView<'de>)> = Vec::new();
        // Built only for a long object: where each name stands in `members`. (std's hasher:
        // the names are the caller's, and a fast unkeyed hash could be made to collide.)
        let mut index: Option<std::collections::HashMap<Cow<'de, str>, usize>> = None;
        while let Some(Key(k)) = map.next_key()? {
            let v: JsonView<'de> = map.next_value()?;
            let at = match &mut index {
                Some(ix) => ix.get(&k).copied(),
                None => members.iter().position(|(n, _)| *n == k),
            };
            match at {
                Some(i) => {
                    if let Some(slot) = members.get_mut(i) {
                        slot.1 = v;
                    }
                }
                None => {
                    if let Some(ix) = &mut index {
                        ix.insert(k.clone(), members.len());
                    }
                    members.push((k, v));
                    if index.is_none() && members.len() > WALK_LIMIT {
                        index = Some(
                            members
                                .iter()
                                .enumerate()
                                .map(|(i, (n, _))| (n.clone(), i))
                                .collect(),
                        );
                    }
                }
            }
        }
        Ok(JsonView::Object(members))
    }
}

/// A member's name, borrowed when it has no escapes (serde's own `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random JSON text: nested values, escapes, repeated names, numbers of every kind,
    /// whitespace, and some text that is not JSON at all.
    fn json_text() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("model".to_string()),
            Just("a".to_string()),
            Just("a\\u0062".to_string()),
            Just("ab".to_string()),
            "[a-z\\\\\"]{0,3}".prop_map(|s| s.replace('\\', "\\\\").replace('"', "\\\"")),
        ];
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            Just("1e400".to_string()),
            Just("-0".to_string()),
            Just("18446744073709551616".to_string()),
            "\\PC{0,8}".prop_map(|s| Value::String(s).to_string()),
            Just("\"\\ud83d\\ude00 \\n\\\"\"".to_string()),
        ];
        leaf.prop_recursive(4, 48, 24, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[ {} ]", v.join(" ,"))),
                proptest::collection::vec((name.clone(), inner), 0..24).prop_map(|kv| {
                    let members: Vec<String> =
                        kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn reads_what_serde_json_reads(text in json_text(), cut in any::<prop::sample::Index>()) {
            let want = serde_json::from_str::<Value>(&text);
            let got = JsonView::parse(text.as_bytes());
            match (&want, &got) {
                (Ok(w), Ok(g)) => prop_assert_eq!(w, &g.to_value()),
                (Err(w), Err(g)) => prop_assert_eq!(w.to_string(), g.to_string()),
                _ => prop_assert!(false, "{want:?} vs {got:?}"),
            }
            // A document cut short fails the same way for both.
            let short = &text.as_bytes()[..cut.index(text.len() + 1)];
            let want = serde_json::from_slice::<Value>(short).map_err(|e| e.to_string());
            let got = JsonView::parse(short).map(|v| v.to_value()).map_err(|e| e.to_string());
            prop_assert_eq!(want, got);
        }
    }

    #[test]
    fn the_last_of_a_repeated_name_wins_where_the_first_stood() {
        let v = JsonView::parse(br#"{"a":1,"b":2,"a":"x"}"#).unwrap();
        assert_eq!(v.get("a").and_then(JsonView::as_str), Some("x"));
        let JsonView::Object(m) = &v else { panic!() };
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, "a");
        // Past the walk limit the index finds repeats too.
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k3\":\"last\"}");
        let v = JsonView::parse(text.as_bytes()).unwrap();
        assert_eq!(v.get("k3").and_then(JsonView::as_str), Some("last"));
        assert_eq!(v.to_value(), serde_json::from_str::<Value>(&text).unwrap());
    }

    #[test]
    fn text_that_is_not_utf8_fails_as_serde_json_says() {
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":1,\xc3}",
            b"\xef\xbb\xbf{}",
        ] {
            let want = serde_json::from_slice::<Value>(bad).map_err(|e| e.to_string());
            let got = JsonView::parse(bad)
                .map(|v| v.to_value())
                .map_err(|e| e.to_string());
            assert_eq!(want, got);
            assert!(got.is_err());
        }
    }

    #[test]
    fn plain_strings_are_borrowed() {
        let body = br#"{"model":"gpt-4o","m":"a\nb"}"#;
        let v = JsonView::parse(body).unwrap();
        assert!(matches!(
            v.get("model"),
            Some(JsonView::String(Cow::Borrowed("gpt-4o")))
        ));
        assert!(matches!(v.get("m"), Some(JsonView::String(Cow::Owned(_)))));
    }
}
