//! Reading an OpenAI Batch-format input file: one request a line,
//! `{"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`.
//!
//! The file is streamed, never loaded whole. A bad line never stops the job: it becomes an error
//! record naming its line and the reason, and every other line goes on. Duplicate `custom_id`s
//! are the exception: they are found in a first pass and the job is refused before anything is
//! sent, because there would be no way to write each id exactly once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::Xxh3;

/// Endpoints a batch may call (the Batch API's list).
pub const URLS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
    "/v1/moderations",
];

/// A 64-bit hash of a custom_id: the index keeps 16 bytes per line (hash and line) instead of
/// the ids themselves, so a million-line job stays small. Hashes that collide are resolved
/// exactly (see [`Index::line_of`]), so a collision can never mark the wrong line done.
pub type IdHash = u64;

pub fn id_hash(custom_id: &str) -> IdHash {
    xxhash_rust::xxh3::xxh3_64(custom_id.as_bytes())
}

/// One input line, checked.
#[derive(Debug)]
pub enum Line {
    /// A request to send.
    Request {
        line: u32,
        custom_id: String,
        url: &'static str,
        body: Box<RawValue>,
    },
    /// A line that cannot be sent; `custom_id` when it could be read.
    Invalid {
        line: u32,
        custom_id: Option<String>,
        code: &'static str,
        message: String,
    },
}

impl Line {
    pub fn number(&self) -> u32 {
        match self {
            Line::Request { line, .. } | Line::Invalid { line, .. } => *line,
        }
    }
}

#[derive(Deserialize)]
struct RawLine {
    custom_id: Option<serde_json::Value>,
    method: Option<serde_json::Value>,
    url: Option<serde_json::Value>,
    body: Option<Box<RawValue>>,
}

/// The longest line sent (8 MiB): a request this large is far past any model's context window
/// (about two million tokens of text), so it is named for what it is instead of waiting for a
/// token budget it can never fit.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// Check one line's text (without its newline).
pub fn parse_line(line: u32, text: &[u8]) -> Line {
    let invalid = |custom_id: Option<String>, code, message: String| Line::Invalid {
        line,
        custom_id,
        code,
        message: format!("line {line}: {message}"),
    };
    if text.len() > MAX_LINE_BYTES {
        return invalid(
            None,
            "line_too_long",
            format!(
                "the line is {} bytes; the most a line may hold is {MAX_LINE_BYTES} (8 MiB)",
                text.len()
            ),
        );
    }
    if let Err(e) = std::str::from_utf8(text) {
        return invalid(
            None,
            "invalid_utf8",
            format!(
                "not UTF-8: byte {} of the line does not start a valid UTF-8 character (JSON Lines files are UTF-8)",
                e.valid_up_to() + 1
            ),
        );
    }
    let raw: RawLine = match serde_json::from_slice(text) {
        Ok(r) => r,
        Err(e) => return invalid(None, "invalid_json", format!("not a JSON object: {e}")),
    };
    let custom_id = match raw.custom_id {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(serde_json::Value::String(_)) => {
            return invalid(None, "missing_custom_id", "custom_id is empty".into())
        }
        Some(_) => {
            return invalid(
                None,
                "missing_custom_id",
                "custom_id must be a string".into(),
            )
        }
        None => return invalid(None, "missing_custom_id", "custom_id is missing".into()),
    };
    match raw.method.as_ref().and_then(|m| m.as_str()) {
        Some("POST") => {}
        Some(other) => {
            return invalid(
                Some(custom_id),
                "unsupported_method",
                format!("method {other:?} is not supported (only POST)"),
            )
        }
        None => {
            return invalid(
                Some(custom_id),
                "missing_method",
                "method is missing".into(),
            )
        }
    }
    let url = match raw.url.as_ref().and_then(|u| u.as_str()) {
        Some(u) => match URLS.iter().find(|k| **k == u) {
            Some(k) => *k,
            None => {
                return invalid(
                    Some(custom_id),
                    "unsupported_url",
                    format!("url {u:?} is not supported (one of {})", URLS.join(", ")),
                )
            }
        },
        None => return invalid(Some(custom_id), "missing_url", "url is missing".into()),
    };
    match raw.body {
        Some(b) if b.get().trim_start().starts_with('{') => Line::Request {
            line,
            custom_id,
            url,
            body: b,
        },
        Some(_) => invalid(
            Some(custom_id),
            "invalid_body",
            "body must be a JSON object".into(),
        ),
        None => invalid(Some(custom_id), "missing_body", "body is missing".into()),
    }
}

/// Streams the lines of a file, numbered from 1, without their line endings. Blank lines are
/// skipped (they are not requests).
#[derive(Debug)]
pub struct Lines<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
    number: u32,
    consumed: u64,
    bom: bool,
}

impl Lines<File> {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Lines::new(File::open(path)?))
    }
}

impl<R: Read> Lines<R> {
    pub fn new(r: R) -> Self {
        Lines {
            reader: BufReader::with_capacity(256 * 1024, r),
            buf: Vec::with_capacity(4096),
            number: 0,
            consumed: 0,
            bom: false,
        }
    }

    /// Bytes read so far, line endings included.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The first line began with a UTF-8 byte order mark (skipped: it is not part of the JSON).
    pub fn had_bom(&self) -> bool {
        self.bom
    }

    /// The next non-blank line and its number.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u32, &[u8])>> {
        loop {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.consumed = self.consumed.saturating_add(n as u64);
            self.number += 1;
            if self.number == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.bom = true;
                self.buf.drain(..3);
            }
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some((self.number, &self.buf)));
        }
    }
}

/// What the first pass learns about the input.
#[derive(Debug, Default)]
pub struct Index {
    /// (custom_id hash, line), sorted by hash, for every line with a readable custom_id: 16
    /// bytes a line, no hash-table slack.
    pub ids: Vec<(IdHash, u32)>,
    /// For the rare hashes shared by different ids: the ids themselves.
    pub exact: HashMap<String, u32>,
    /// Highest line number.
    pub lines: u32,
    /// Lines that will be sent (valid requests).
    pub requests: u32,
    /// Lines that are invalid.
    pub invalid: u32,
    /// Duplicate custom_ids: (id, every line it is on).
    pub duplicates: Vec<(String, Vec<u32>)>,
    /// A hash of the file's bytes: the job's identity.
    pub content_hash: u128,
    /// How many bytes of the file were read: the job is this prefix of the file (the snapshot);
    /// lines appended while it runs are left for the next run.
    pub bytes: u64,
    /// The file began with a UTF-8 byte order mark (skipped).
    pub bom: bool,
    /// The models the requests name (at most [`MAX_MODELS`]), to check against the upstream's
    /// model list before they are sent.
    pub models: std::collections::BTreeSet<String>,
}

impl Index {
    /// The input line of a custom_id, if it is in the input.
    pub fn line_of(&self, custom_id: &str) -> Option<u32> {
        if !self.exact.is_empty() {
            if let Some(l) = self.exact.get(custom_id) {
                return Some(*l);
            }
        }
        let h = id_hash(custom_id);
        let i = self.ids.binary_search_by_key(&h, |(k, _)| *k).ok()?;
        let line = self.ids[i].1;
        // A hash shared by several ids has line 0 in `ids`: only `exact` answers for it.
        (line != 0).then_some(line)
    }
}

/// Distinct models remembered by [`index`].
pub const MAX_MODELS: usize = 64;

/// The `model` of a request body, read without building the rest.
fn body_model(body: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct ModelOnly {
        model: Option<String>,
    }
    serde_json::from_str::<ModelOnly>(body.get())
        .ok()
        .and_then(|m| m.model)
}

/// First pass: hash the content, index custom_ids, find duplicates.
pub fn index(path: &Path) -> std::io::Result<Index> {
    let mut idx = Index::default();
    let mut hasher = Xxh3::new();
    // Room for the lines this file probably has (about 150 bytes each), so the vector does not
    // double its way up to a million entries.
    let guess = std::fs::metadata(path).map_or(0, |m| m.len() / 150) as usize;
    idx.ids.reserve(guess.min(50_000_000));
    let mut lines = Lines::open(path)?;
    while let Some((n, text)) = lines.next_line()? {
        hasher.update(text);
        hasher.update(b"\n");
        idx.lines = n;
        let custom_id = match parse_line(n, text) {
            Line::Request {
                custom_id, body, ..
            } => {
                idx.requests += 1;
                if idx.models.len() < MAX_MODELS {
                    if let Some(m) = body_model(&body) {
                        idx.models.insert(m);
                    }
                }
                Some(custom_id)
            }
            Line::Invalid { custom_id, .. } => {
                idx.invalid += 1;
                custom_id
            }
        };
        if let Some(id) = custom_id {
            idx.ids.push((id_hash(&id), n));
        }
    }
    idx.content_hash = hasher.digest128();
    idx.bytes = lines.consumed();
    idx.bom = lines.had_bom();
    idx.ids.sort_unstable();
    // Equal neighbours: duplicates or (rarely) hash collisions.
    let mut clashes: HashMap<IdHash, Vec<u32>> = HashMap::new();
    for w in idx.ids.windows(2) {
        if w[0].0 == w[1].0 {
            let e = clashes.entry(w[0].0).or_default();
            if e.last() != Some(&w[0].1) {
                e.push(w[0].1);
            }
            e.push(w[1].1);
        }
    }
    if clashes.is_empty() {
        return Ok(idx);
    }
    // Second look at the clashing lines: same id (a duplicate) or different ids (a collision).
    let wanted: HashMap<u32, IdHash> = clashes
        .iter()
        .flat_map(|(h, ls)| ls.iter().map(move |l| (*l, *h)))
        .collect();
    let mut by_id: HashMap<String, Vec<u32>> = HashMap::new();
    let mut lines = Lines::new(File::open(path)?.take(idx.bytes));
    while let Some((n, text)) = lines.next_line()? {
        if !wanted.contains_key(&n) {
            continue;
        }
        let id = match parse_line(n, text) {
            Line::Request { custom_id, .. } => Some(custom_id),
            Line::Invalid { custom_id, .. } => custom_id,
        };
        if let Some(id) = id {
            by_id.entry(id).or_default().push(n);
        }
    }
    // Clashing hashes answer through `exact` only: one entry, line 0.
    idx.ids.retain(|(h, _)| !clashes.contains_key(h));
    idx.ids.extend(clashes.keys().map(|h| (*h, 0)));
    idx.ids.sort_unstable();
    let mut dups = Vec::new();
    for (id, ls) in by_id {
        if ls.len() > 1 {
            dups.push((id.clone(), ls.clone()));
        }
        if let Some(first) = ls.first() {
            idx.exact.insert(id, *first);
        }
    }
    dups.sort_by_key(|(_, l)| l.first().copied().unwrap_or(0));
    idx.duplicates = dups;
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(l: &Line) -> &'static str {
        match l {
            Line::Request { .. } => "ok",
            Line::Invalid { code, .. } => code,
        }
    }

    #[test]
    fn checks_every_field() {
        let good = br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#;
        assert_eq!(kind(&parse_line(1, good)), "ok");
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "invalid_json"),
            (b"[1,2]", "invalid_json"),
            (
                br#"{"method":"POST","url":"/v1/embeddings","body":{}}"#,
                "missing_custom_id",
            ),
            (
                br#"{"custom_id":7,"method":"POST","url":"/v1/embeddings","body":{}}"#,
                "missing_custom_id",
            ),
            (
                br#"{"custom_id":"a","method":"GET","url":"/v1/embeddings","body":{}}"#,
                "unsupported_method",
            ),
            (
                br#"{"custom_id":"a","url":"/v1/embeddings","body":{}}"#,
                "missing_method",
            ),
            (
                br#"{"custom_id":"a","method":"POST","url":"/v1/images","body":{}}"#,
                "unsupported_url",
            ),
            (
                br#"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":[1]}"#,
                "invalid_body",
            ),
            (
                br#"{"custom_id":"a","method":"POST","url":"/v1/embeddings"}"#,
                "missing_body",
            ),
        ];
        for (text, want) in cases {
            let l = parse_line(9, text);
            assert_eq!(kind(&l), *want, "{}", String::from_utf8_lossy(text));
            if let Line::Invalid { message, .. } = l {
                assert!(message.starts_with("line 9: "), "{message}");
            }
        }
    }

    #[test]
    fn bom_invalid_utf8_and_long_lines_are_named() {
        let good = br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#;
        let mut data = b"\xEF\xBB\xBF".to_vec();
        data.extend_from_slice(good);
        data.push(b'\n');
        data.extend_from_slice(b"{\"custom_id\":\"b\xFF\"}\n");
        let mut l = Lines::new(&data[..]);
        let (n, t) = l.next_line().unwrap().unwrap();
        assert_eq!(kind(&parse_line(n, t)), "ok", "the BOM is skipped");
        assert!(l.had_bom());
        let (n, t) = l.next_line().unwrap().unwrap();
        let bad = parse_line(n, t);
        assert_eq!(kind(&bad), "invalid_utf8");
        if let Line::Invalid { message, .. } = bad {
            assert!(message.contains("byte 16 "), "{message}");
        }
        assert_eq!(l.consumed(), data.len() as u64);
        let long = vec![b' '; MAX_LINE_BYTES + 1];
        assert_eq!(kind(&parse_line(1, &long)), "line_too_long");
    }

    // Fuzz targets (bounded here; `PROPTEST_CASES=200000 cargo test -p sluice-batch fuzz_` for a
    // long run): any bytes, and near-valid lines, never panic, and the reader accounts for
    // every byte it was given.
    proptest::proptest! {
        #[test]
        fn fuzz_any_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let mut l = Lines::new(&data[..]);
            while let Some((n, t)) = l.next_line().unwrap() {
                let _ = parse_line(n, t);
            }
            proptest::prop_assert_eq!(l.consumed(), data.len() as u64);
        }

        #[test]
        fn fuzz_near_valid_lines(id in "\\PC{0,12}", url in "(/v1/[a-z/]{0,20}|\\PC{0,8})",
                                 body in "(\\{[^\\n]{0,40}\\}|\\PC{0,10})", cut in 0usize..120) {
            let line = format!(r#"{{"custom_id":{},"method":"POST","url":{},"body":{body}}}"#,
                serde_json::Value::from(id), serde_json::Value::from(url));
            let text = &line.as_bytes()[..cut.min(line.len())];
            let _ = parse_line(1, text);
            let _ = parse_line(1, line.as_bytes());
        }
    }

    #[test]
    fn lines_skip_blanks_and_strip_crlf() {
        let data = b"a\r\n\n  \nb\nc";
        let mut l = Lines::new(&data[..]);
        let mut got = Vec::new();
        while let Some((n, t)) = l.next_line().unwrap() {
            got.push((n, String::from_utf8_lossy(t).into_owned()));
        }
        assert_eq!(got, vec![(1, "a".into()), (4, "b".into()), (5, "c".into())]);
    }
}
