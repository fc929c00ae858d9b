//! Server-sent events from a response body, as the data payloads of OpenAI streams.
//!
//! Parsing is [`crate::sse_wire`]'s, which keeps comment lines: a face that passes the stream
//! on gets them with [`EventReader::poll_frame`] (keep-alives reach its caller), and every
//! frame, comments included, counts as a sign of life for the idle timeout. Each event's name,
//! id and retry are kept beside its data ([`EventReader::last_meta`]) so a face that passes the
//! stream on can write them again. How a stream ends depends on its framing
//! ([`crate::routes::Stream`]): chat streams end at `data: [DONE]`; Responses API streams at
//! their terminal event (`response.completed`, `response.failed`, `response.incomplete`),
//! with no `[DONE]`; named-event streams at the end of the body. On top of that: an error
//! event (`event: error`, or a payload whose top-level
//! key is `error`) is an error; a body that ends without `[DONE]` is
//! [`ErrorKind::StreamInterrupted`]; silence longer than the idle timeout is
//! [`ErrorKind::TimeoutIdle`]. Bytes are pulled from the socket only when the consumer polls, so
//! a slow consumer holds the connection's flow control instead of a growing buffer.
//!
//! This module only reads: what the events mean for the request (usage, settlement, metrics)
//! is [`crate::EventStream`]'s, which wraps an [`EventReader`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::sse_wire::{Frame, WireError, WireParser};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::error::{ApiError, Error, ErrorKind};

pub(crate) type ByteStream = BoxStream<'static, Result<Bytes, crate::transport::BoxError>>;

/// What an event carries besides its data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// `event:` (empty when the event had none).
    pub event: String,
    /// `id:` (empty when none).
    pub id: String,
    pub retry: Option<Duration>,
}

/// Responses API events after which the stream is over.
const RESPONSES_TERMINAL: [&str; 3] = [
    "response.completed",
    "response.failed",
    "response.incomplete",
];

/// A stream of SSE `data` payloads, ending where its framing says.
pub struct EventReader {
    bytes: ByteStream,
    wire: WireParser,
    /// The body has ended; what the parser still holds is all there is.
    eof: bool,
    /// Comments read while only data was asked for (the engine waits for the first event
    /// that way): handed to [`EventReader::poll_frame`] first, in order. Bounded.
    skipped_comments: std::collections::VecDeque<String>,
    idle_timer: Pin<Box<Sleep>>,
    idle: Duration,
    deadline: Instant,
    done: bool,
    received: Arc<AtomicU64>,
    framing: crate::routes::Stream,
    last: EventMeta,
    /// A terminal event was yielded: the next poll ends the stream.
    finish_next: bool,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("done", &self.done)
            .field("received_bytes", &self.received.load(Ordering::Relaxed))
            .finish()
    }
}

impl EventReader {
    pub fn new(resp: crate::transport::Response, idle: Duration, deadline: Instant) -> Self {
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let bytes: ByteStream = crate::transport::byte_stream(resp)
            .inspect(move |r| {
                if let Ok(b) = r {
                    counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            })
            .boxed();
        Self::from_bytes(bytes, idle, deadline, received)
    }

    pub(crate) fn from_bytes(
        bytes: ByteStream,
        idle: Duration,
        deadline: Instant,
        received: Arc<AtomicU64>,
    ) -> Self {
        let first = (Instant::now() + idle).min(deadline);
        EventReader {
            bytes,
            wire: WireParser::default(),
            eof: false,
            skipped_comments: std::collections::VecDeque::new(),
            idle_timer: Box::pin(tokio::time::sleep_until(first)),
            idle,
            deadline,
            done: false,
            received,
            framing: crate::routes::Stream::Chat,
            last: EventMeta::default(),
            finish_next: false,
        }
    }

    /// How this stream ends (default: chat, at `[DONE]`).
    pub fn set_framing(&mut self, framing: crate::routes::Stream) {
        self.framing = framing;
    }

    pub fn framing(&self) -> crate::routes::Stream {
        self.framing
    }

    /// The name, id and retry of the event whose data was yielded last.
    pub fn last_meta(&self) -> &EventMeta {
        &self.last
    }

    /// A comment that was read while only data was asked for, oldest first.
    pub(crate) fn pop_skipped_comment(&mut self) -> Option<String> {
        self.skipped_comments.pop_front()
    }

    /// Bytes read from the connection so far.
    pub fn received_bytes(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A Responses API payload whose `type` is a terminal event (for streams that send no
/// `event:` lines).
fn responses_terminal_type(data: &str) -> bool {
    crate::wire::values_of(data, &crate::wire::TYPE)
        .next()
        .is_some_and(|v| {
            RESPONSES_TERMINAL.iter().any(|t| {
                v.strip_prefix('"')
                    .is_some_and(|r| r.starts_with(t) && r[t.len()..].starts_with('"'))
            })
        })
}

/// The error an in-stream error event stands for.
fn error_event(data: &str) -> Option<Error> {
    #[derive(serde::Deserialize)]
    struct Env {
        error: ApiError,
    }
    let head = data.trim_start();
    let prefix = &head.as_bytes()[..head.len().min(24)];
    if !head.starts_with('{') || !prefix.windows(7).any(|w| w == b"\"error\"") {
        return None;
    }
    let api = serde_json::from_str::<Env>(data).ok()?.error;
    let msg = if api.message.is_empty() {
        "error event in stream".to_string()
    } else {
        format!("error event in stream: {}", api.message)
    };
    Some(Error::new(ErrorKind::StreamInterrupted, msg))
}

/// What [`EventReader::poll_frame`] yields: an event's data, or a comment line (without its
/// `:`) to pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Data(String),
    Comment(String),
}

impl Stream for EventReader {
    type Item = Result<String, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_item(cx, false) {
            Poll::Ready(Some(Ok(Item::Data(d)))) => Poll::Ready(Some(Ok(d))),
            // Not yielded without `comments`; wake to poll again rather than stall.
            Poll::Ready(Some(Ok(Item::Comment(_)))) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl EventReader {
    /// The next event's data or comment line, for a face that passes the stream on as it came.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, Error>>> {
        self.poll_item(cx, true)
    }

    /// [`EventReader::poll_frame`] as a future.
    pub async fn next_frame(&mut self) -> Option<Result<Item, Error>> {
        futures_util::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// The next frame of the body: bytes are read only when the parser has no whole frame.
    fn poll_wire(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        loop {
            if let Some(f) = self.wire.next_frame() {
                return Poll::Ready(Some(f.map_err(|e| {
                    Error::new(
                        ErrorKind::Decode,
                        match e {
                            WireError::NotUtf8 => "stream is not UTF-8".to_string(),
                            WireError::LineTooLong => format!(
                                "malformed event stream: a line longer than {} bytes",
                                crate::sse_wire::MAX_LINE
                            ),
                        },
                    )
                })));
            }
            if self.eof {
                return Poll::Ready(None);
            }
            match self.bytes.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) => self.wire.push(&b),
                Poll::Ready(Some(Err(t))) => {
                    return Poll::Ready(Some(Err(Error::new(
                        ErrorKind::StreamInterrupted,
                        format!("stream cut: {t}"),
                    )
                    .with_source(t))))
                }
                Poll::Ready(None) => {
                    self.eof = true;
                    self.wire.finish();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    pub(crate) fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
        comments: bool,
    ) -> Poll<Option<Result<Item, Error>>> {
        let this = self;
        if comments {
            if let Some(c) = this.skipped_comments.pop_front() {
                return Poll::Ready(Some(Ok(Item::Comment(c))));
            }
        }
        if this.finish_next && !this.done {
            this.done = true;
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.poll_wire(cx) {
                Poll::Ready(Some(Ok(Frame::Comment(c)))) => {
                    // A keep-alive is a sign of life: the idle timeout measures silence.
                    let next = (Instant::now() + this.idle).min(this.deadline);
                    this.idle_timer.as_mut().reset(next);
                    if comments {
                        return Poll::Ready(Some(Ok(Item::Comment(c))));
                    }
                    if this.skipped_comments.len() < 16 {
                        this.skipped_comments.push_back(c);
                    }
                    continue;
                }
                Poll::Ready(Some(Ok(Frame::Event(ev)))) => {
                    let next = (Instant::now() + this.idle).min(this.deadline);
                    this.idle_timer.as_mut().reset(next);
                    this.last = EventMeta {
                        event: ev.event.clone(),
                        id: ev.id.clone(),
                        retry: ev.retry,
                    };
                    if ev.data == "[DONE]" {
                        if this.framing == crate::routes::Stream::Events {
                            // Named-event streams (assistants) send `event: done` + `[DONE]`: it
                            // is theirs to pass on, and the body's end follows.
                            this.finish_next = true;
                            return Poll::Ready(Some(Ok(Item::Data(ev.data))));
                        }
                        this.done = true;
                        return Poll::Ready(None);
                    }
                    if ev.event == "error" {
                        let e = error_event(&ev.data).unwrap_or_else(|| {
                            Error::new(ErrorKind::StreamInterrupted, "error event in stream")
                        });
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    if let Some(e) = error_event(&ev.data) {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    if this.framing == crate::routes::Stream::Responses
                        && (RESPONSES_TERMINAL.contains(&ev.event.as_str())
                            || responses_terminal_type(&ev.data))
                    {
                        this.finish_next = true;
                    }
                    return Poll::Ready(Some(Ok(Item::Data(ev.data))));
                }
                Poll::Ready(Some(Err(err))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) if this.framing == crate::routes::Stream::Events => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => {
                    let what = match this.framing {
                        crate::routes::Stream::Responses => "its terminal event",
                        _ => "[DONE]",
                    };
                    let e = Error::new(
                        ErrorKind::StreamInterrupted,
                        format!("stream ended without {what}"),
                    );
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        let kind = if Instant::now() >= this.deadline {
                            ErrorKind::TimeoutTotal
                        } else {
                            ErrorKind::TimeoutIdle
                        };
                        let e = Error::new(
                            kind,
                            format!("no stream data for {:.3}s", this.idle.as_secs_f64()),
                        );
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use proptest::prelude::*;

    use crate::event_stream::EventStream;
    use crate::wire::Usage;

    /// The engine's stream over a reader of these chunks (usage is read there).
    fn from_chunks(chunks: Vec<Vec<u8>>) -> EventStream {
        let s: ByteStream = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))).boxed();
        EventStream::from_reader(EventReader::from_bytes(
            s,
            Duration::from_secs(30),
            Instant::now() + Duration::from_secs(600),
            Arc::new(AtomicU64::new(0)),
        ))
    }

    async fn collect(chunks: Vec<Vec<u8>>) -> Vec<Result<String, ErrorKind>> {
        from_chunks(chunks)
            .map(|r| r.map_err(|e| e.kind()))
            .collect()
            .await
    }

    async fn collect_framed(
        framing: crate::routes::Stream,
        body: &[u8],
    ) -> (Vec<Result<(String, String), ErrorKind>>, Option<Usage>) {
        let mut es = from_chunks(vec![body.to_vec()]);
        es.set_framing(framing);
        let mut out = Vec::new();
        while let Some(r) = es.next().await {
            out.push(
                r.map(|d| (es.last_meta().event.clone(), d))
                    .map_err(|e| e.kind()),
            );
        }
        (out, es.usage().cloned())
    }

    #[tokio::test]
    async fn responses_streams_end_at_their_terminal_event_and_keep_event_names() {
        use crate::routes::Stream as F;
        let body = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\"}\n\n",
            "event: response.output_text.delta\nid: 7\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
            "event: response.completed\ndata: {\"type\": \"response.completed\", \"response\": {\"usage\": {\"input_tokens\": 5, \"output_tokens\": 2, \"total_tokens\": 7}}}\n\n",
        );
        let (got, usage) = collect_framed(F::Responses, body.as_bytes()).await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got.iter().all(Result::is_ok),
            "no [DONE] is expected: {got:?}"
        );
        assert_eq!(got[1].as_ref().unwrap().0, "response.output_text.delta");
        let u = usage.expect("usage from response.completed");
        assert_eq!((u.prompt_tokens, u.completion_tokens), (5, 2));
        // Without `event:` lines the payload's type ends it too; anything after is not read.
        let body = "data: {\"type\":\"response.incomplete\"}\n\ndata: {\"late\":1}\n\n";
        let (got, _) = collect_framed(F::Responses, body.as_bytes()).await;
        assert_eq!(got.len(), 1, "{got:?}");
        // Cut before the terminal event: interrupted.
        let (got, _) = collect_framed(
            F::Responses,
            b"event: response.created\ndata: {\"type\":\"response.created\"}\n\n",
        )
        .await;
        assert_eq!(got.last(), Some(&Err(ErrorKind::StreamInterrupted)));
        // Named-event streams end with the body, and pass their own [DONE] on.
        let (got, _) = collect_framed(
            F::Events,
            b"event: thread.run.created\ndata: {}\n\nevent: done\ndata: [DONE]\n\n",
        )
        .await;
        assert_eq!(
            got,
            vec![
                Ok(("thread.run.created".to_string(), "{}".to_string())),
                Ok(("done".to_string(), "[DONE]".to_string()))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn comments_are_passed_on_request_and_keep_the_stream_alive() {
        // A comment every 20 s against a 30 s idle timeout: the stream is alive, and
        // `poll_frame` hands the comments over in order with the events.
        let s: ByteStream = futures_util::stream::unfold(0u32, |n| async move {
            if n > 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(20)).await;
            let b: &'static [u8] = match n {
                0 | 1 => b": keep-alive\n",
                2 => b"data: {\"a\":1}\n\n",
                _ => b"data: [DONE]\n\n",
            };
            Some((Ok(Bytes::from_static(b)), n + 1))
        })
        .boxed();
        let mut es = EventReader::from_bytes(
            s,
            Duration::from_secs(30),
            Instant::now() + Duration::from_secs(600),
            Arc::new(AtomicU64::new(0)),
        );
        let mut got = Vec::new();
        while let Some(f) = es.next_frame().await {
            got.push(f.map_err(|e| e.kind()));
        }
        assert_eq!(
            got,
            vec![
                Ok(Item::Comment(" keep-alive".into())),
                Ok(Item::Comment(" keep-alive".into())),
                Ok(Item::Data("{\"a\":1}".into())),
            ]
        );
    }

    #[tokio::test]
    async fn done_ends_comments_are_skipped_and_events_split_anywhere() {
        let body =
            b": keep-alive\n\ndata: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n".to_vec();
        // Split the body at every possible point: the result never changes.
        for cut in 0..body.len() {
            let got = collect(vec![body[..cut].to_vec(), body[cut..].to_vec()]).await;
            assert_eq!(
                got,
                vec![Ok("{\"a\":1}".to_string()), Ok("{\"b\":2}".to_string())],
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn missing_done_is_interrupted() {
        let got = collect(vec![b"data: {\"a\":1}\n\n".to_vec()]).await;
        assert_eq!(
            got,
            vec![Ok("{\"a\":1}".into()), Err(ErrorKind::StreamInterrupted)]
        );
    }

    #[tokio::test]
    async fn error_events() {
        let got = collect(vec![
            b"data: {\"a\":1}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n".to_vec(),
        ])
        .await;
        assert_eq!(
            got,
            vec![Ok("{\"a\":1}".into()), Err(ErrorKind::StreamInterrupted)]
        );
        let got = collect(vec![b"event: error\ndata: oops\n\n".to_vec()]).await;
        assert_eq!(got, vec![Err(ErrorKind::StreamInterrupted)]);
        // A payload that merely mentions "error" deep inside is content, not an error.
        let got = collect(vec![
            b"data: {\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\ndata: [DONE]\n\n"
                .to_vec(),
        ])
        .await;
        assert_eq!(got.len(), 1);
        assert!(got[0].is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_on_silence() {
        let s: ByteStream = stream::iter(vec![Ok(Bytes::from_static(b"data: {}\n\n"))])
            .chain(stream::pending())
            .boxed();
        let mut es = EventReader::from_bytes(
            s,
            Duration::from_secs(30),
            Instant::now() + Duration::from_secs(600),
            Arc::new(AtomicU64::new(0)),
        );
        assert!(es.next().await.unwrap().is_ok());
        let t0 = Instant::now();
        let e = es.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimeoutIdle);
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert!(es.next().await.is_none());
    }

    proptest! {
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let _ = collect(chunks).await;
            });
        }

        #[test]
        fn decoder_never_panics_on_sse_like_text(text in "(data: [^\n]{0,20}\n\n?|: [a-z]{0,5}\n|event: [a-z]{0,6}\n|\n){0,12}") {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let _ = collect(vec![text.into_bytes()]).await;
            });
        }
    }
}
