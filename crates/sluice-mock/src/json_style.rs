//! How the simulated service writes JSON: compact (`{"a":1,"b":[1,2]}`, as OpenAI does) or
//! spaced (`{"a": 1, "b": [1, 2]}`, as Python servers such as vLLM do). A client that reads
//! answers by looking for `"usage":{` instead of parsing them breaks on the second; this lets
//! the tests see it.

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};
use std::io;

use crate::config::JsonStyle;

/// Compact, with a space after each `:` and `,`.
struct Spaced;

impl Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// `v` written in `style`.
pub fn to_vec<T: Serialize>(v: &T, style: JsonStyle) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let written = match style {
        JsonStyle::Compact => v.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            CompactFormatter,
        )),
        JsonStyle::Spaced => v.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, Spaced,
        )),
    };
    // Serializing into a Vec cannot fail on I/O; a value that cannot be JSON is never built here.
    let _ = written;
    out
}

/// A JSON response in `style`.
pub fn response<T: Serialize>(v: &T, style: JsonStyle) -> axum::response::Response {
    let mut r = axum::response::Response::new(axum::body::Body::from(to_vec(v, style)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spaced_and_compact() {
        let v = json!({"a": 1, "b": [1, 2], "c": {"d": null}});
        assert_eq!(
            String::from_utf8(to_vec(&v, JsonStyle::Compact)).unwrap(),
            r#"{"a":1,"b":[1,2],"c":{"d":null}}"#
        );
        assert_eq!(
            String::from_utf8(to_vec(&v, JsonStyle::Spaced)).unwrap(),
            r#"{"a": 1, "b": [1, 2], "c": {"d": null}}"#
        );
    }
}
