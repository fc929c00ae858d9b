//! The server-sent events wire format, parsed line by line as the WHATWG specification
//! describes it — keeping what a pass-through needs and a browser's parser throws away: comment
//! lines (keep-alives), and the `id:` an event itself carried (not the last one seen).
//!
//! Lines end at `\n`, `\r\n` or `\r` (a `\r` at the end of what has arrived waits for the next
//! bytes); a leading byte-order mark is skipped; `field: value` loses one space after the
//! colon; an empty line dispatches the event when it has data; an event cut off by the end of
//! the body is dropped, as the specification says. A line that is not UTF-8, or longer than
//! [`MAX_LINE`], is an error rather than an unbounded buffer.

use std::time::Duration;

/// The longest line accepted (a chunk carrying a large tool-call argument stays far below).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// One event as it came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `event:` (empty when none was sent: a `message`).
    pub event: String,
    pub data: String,
    /// `id:` of this event (empty when it had none).
    pub id: String,
    pub retry: Option<Duration>,
}

/// What the parser yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Event(RawEvent),
    /// A comment line, without its leading `:`.
    Comment(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    NotUtf8,
    LineTooLong,
}

/// Incremental parser: [`WireParser::push`] bytes as they arrive, take frames with
/// [`WireParser::next_frame`].
#[derive(Debug, Default)]
pub struct WireParser {
    buf: Vec<u8>,
    /// Where the unparsed part of `buf` starts.
    at: usize,
    started: bool,
    event: String,
    data: String,
    has_data: bool,
    id: String,
    retry: Option<Duration>,
}

impl WireParser {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 64 * 1024 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The body has ended: a `\r` it ended with is a whole line end (it waited for a `\n`).
    pub fn finish(&mut self) {
        if self.at < self.buf.len() && self.buf.last() == Some(&b'\r') {
            self.buf.push(b'\n');
        }
    }

    /// The next complete frame in what has been pushed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, WireError>> {
        loop {
            let rest = &self.buf[self.at..];
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if rest.len() > MAX_LINE {
                    return Some(Err(WireError::LineTooLong));
                }
                return None;
            };
            let skip = match rest[end] {
                b'\r' if end + 1 == rest.len() => return None,
                b'\r' if rest[end + 1] == b'\n' => 2,
                _ => 1,
            };
            let mut line = &rest[..end];
            if !self.started {
                self.started = true;
                line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
            }
            let Ok(line) = std::str::from_utf8(line) else {
                self.at += end + skip;
                return Some(Err(WireError::NotUtf8));
            };
            let line = line.to_string();
            self.at += end + skip;
            if let Some(frame) = self.line(&line) {
                return Some(Ok(frame));
            }
        }
    }

    fn line(&mut self, line: &str) -> Option<Frame> {
        if line.is_empty() {
            let event = RawEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data),
                id: std::mem::take(&mut self.id),
                retry: self.retry.take(),
            };
            let dispatch = std::mem::take(&mut self.has_data);
            return dispatch.then_some(Frame::Event(event));
        }
        if let Some(comment) = line.strip_prefix(':') {
            return Some(Frame::Comment(comment.to_string()));
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().map(Duration::from_millis);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<Result<Frame, WireError>> {
        let mut p = WireParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            while let Some(f) = p.next_frame() {
                out.push(f);
            }
        }
        out
    }

    fn ev(event: &str, data: &str, id: &str) -> Result<Frame, WireError> {
        Ok(Frame::Event(RawEvent {
            event: event.into(),
            data: data.into(),
            id: id.into(),
            retry: None,
        }))
    }

    #[test]
    fn events_comments_ids_and_every_line_ending() {
        let body = b"\xef\xbb\xbf: hello\n\nevent: a\nid: 1\ndata: x\ndata:  y\n\ndata: z\r\n\r\nretry: 250\ndata: w\r\rdata: cut";
        let got = frames(&[body]);
        assert_eq!(got[0], Ok(Frame::Comment(" hello".into())));
        assert_eq!(got[1], ev("a", "x\n y", "1"));
        assert_eq!(got[2], ev("", "z", ""));
        assert_eq!(
            got[3],
            Ok(Frame::Event(RawEvent {
                data: "w".into(),
                retry: Some(Duration::from_millis(250)),
                ..RawEvent::default()
            }))
        );
        assert_eq!(
            got.len(),
            4,
            "the event cut by the end is not dispatched: {got:?}"
        );
        // Split anywhere, the same frames.
        for cut in 0..body.len() {
            assert_eq!(frames(&[&body[..cut], &body[cut..]]), got, "cut at {cut}");
        }
    }

    proptest::proptest! {
        /// However the bytes are cut into chunks, the frames are the same; nothing panics.
        #[test]
        fn chunking_never_changes_the_frames(
            text in "(data: [a-z{}\":]{0,12}(\r\n|\n|\r)|: [a-z]{0,5}\n|event: [a-z.]{0,8}\n|id: [0-9]{0,3}\n|retry: [0-9x]{0,4}\n|\n|\r\n){0,16}",
            cut in 0usize..400,
        ) {
            let b = text.as_bytes();
            let cut = cut.min(b.len());
            proptest::prop_assert_eq!(frames(&[&b[..cut], &b[cut..]]), frames(&[b]));
        }

        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..8)) {
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let _ = frames(&refs);
        }
    }

    #[test]
    fn no_data_no_event_and_bad_bytes_are_named() {
        assert!(frames(&[b"event: x\n\n"]).is_empty());
        // A body that ends in `\r\r` ends its last event.
        let mut p = WireParser::default();
        p.push(b"data: last\r\r");
        assert!(matches!(p.next_frame(), None | Some(Ok(Frame::Event(_)))));
        p.finish();
        let mut got = Vec::new();
        while let Some(f) = p.next_frame() {
            got.push(f);
        }
        assert_eq!(got, vec![ev("", "last", "")]);
        assert_eq!(
            frames(&[b"data: \xff\n\ndata: ok\n\n"]),
            vec![Err(WireError::NotUtf8), ev("", "ok", "")]
        );
    }
}
