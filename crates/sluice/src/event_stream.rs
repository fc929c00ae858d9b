//! A streamed answer as the engine hands it to a face: the events of an [`EventReader`], and
//! the request's end ([`RequestEnd`]) riding along with them.
//!
//! The reader parses; this type reads what the events mean for the request — the usage event
//! (which settles the admission ticket and the budget charge), the finish reasons, the count of
//! content events (the output bound when no usage arrives) — and ends the request once: at the
//! last event, at an error, or when the stream is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::time::Instant;

use crate::error::Error;
use crate::pricing::Nanos;
use crate::request_end::{Ended, RequestEnd};
use crate::sse::{EventMeta, EventReader, Item};
use crate::wire::Usage;

/// SSE `data` payloads of one upstream answer, with the request's end.
#[derive(Debug)]
pub struct EventStream {
    reader: EventReader,
    /// An event already read (and accounted) that is yielded again first.
    peeked: Option<String>,
    end: RequestEnd,
    /// `(sent, asked)`: events' `model` members naming `sent` (the deployment the request
    /// went to) are given back as `asked`.
    rename: Option<(String, String)>,
}

impl EventStream {
    pub(crate) fn new(
        resp: crate::transport::Response,
        idle: Duration,
        deadline: Instant,
        framing: crate::routes::Stream,
        end: RequestEnd,
    ) -> Self {
        let mut reader = EventReader::new(resp, idle, deadline);
        reader.set_framing(framing);
        EventStream {
            reader,
            peeked: None,
            end,
            rename: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn from_reader(reader: EventReader) -> Self {
        EventStream {
            reader,
            peeked: None,
            end: RequestEnd::default(),
            rename: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_framing(&mut self, framing: crate::routes::Stream) {
        self.reader.set_framing(framing);
    }

    /// How this stream ends (chat at `[DONE]`, Responses at the terminal event, …).
    pub fn framing(&self) -> crate::routes::Stream {
        self.reader.framing()
    }

    /// The name, id and retry of the event whose data was yielded last.
    pub fn last_meta(&self) -> &EventMeta {
        self.reader.last_meta()
    }

    /// Bytes read from the connection so far.
    pub fn received_bytes(&self) -> u64 {
        self.reader.received_bytes()
    }

    /// The usage event's counts, once it has arrived.
    pub fn usage(&self) -> Option<&Usage> {
        self.end.usage_seen()
    }

    /// What the stream cost, once settled (usage event, end or drop) and priced.
    pub fn cost_nanos(&self) -> Option<Nanos> {
        self.end.cost()
    }

    /// Settle another limiter's admission ticket (a gateway caller's virtual key) from this
    /// stream's usage, and release it when the stream ends.
    pub fn settle_with(&mut self, ticket: crate::admission::Ticket) {
        self.end.also_settle(ticket);
    }

    /// The consumer found the stream broken (a chunk it cannot decode): end it with `e`.
    pub fn fail(&mut self, e: &Error) {
        self.end.end(Ended::Failed(e));
    }

    /// The consumer is leaving before the end: settle the cost from what was seen (the
    /// connection closes, and the request is recorded as cancelled, when the stream is dropped).
    pub fn abandon(&mut self) {
        self.end.settle_charge();
    }

    pub(crate) fn request_end(&mut self) -> &mut RequestEnd {
        &mut self.end
    }

    /// Give back events' `model` members naming `sent` as `asked`.
    pub(crate) fn rename(&mut self, sent: String, asked: String) {
        self.rename = Some((sent, asked));
    }

    /// Put an event back to be yielded first (used after peeking at the first event).
    pub(crate) fn unread(&mut self, data: String) {
        self.peeked = Some(data);
    }

    /// The next event's data or comment line, for a face that passes the stream on as it came.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, Error>>> {
        self.poll_item(cx, true)
    }

    /// [`EventStream::poll_frame`] as a future.
    pub async fn next_frame(&mut self) -> Option<Result<Item, Error>> {
        futures_util::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
        comments: bool,
    ) -> Poll<Option<Result<Item, Error>>> {
        // Comments passed while the engine waited for the first event come before it.
        if comments {
            if let Some(c) = self.reader.pop_skipped_comment() {
                return Poll::Ready(Some(Ok(Item::Comment(c))));
            }
        }
        if let Some(p) = self.peeked.take() {
            return Poll::Ready(Some(Ok(Item::Data(p))));
        }
        let mut polled = self.reader.poll_item(cx, comments);
        if let (Some((sent, asked)), Poll::Ready(Some(Ok(Item::Data(d))))) =
            (&self.rename, &mut polled)
        {
            if let Some(renamed) = crate::model_policy::rename_model(d, sent, asked) {
                *d = renamed;
            }
        }
        match &polled {
            Poll::Ready(Some(Ok(Item::Data(d)))) => self.read(d),
            Poll::Ready(Some(Err(e))) => self.end.end(Ended::Failed(e)),
            Poll::Ready(None) => self.end.end(Ended::Ok),
            Poll::Ready(Some(Ok(Item::Comment(_)))) | Poll::Pending => {}
        }
        polled
    }

    /// What a content event says about the request.
    fn read(&mut self, data: &str) {
        if self.end.is_ended() {
            return;
        }
        self.end.event_seen();
        if let Some(r) = finish_reason(data) {
            self.end.finish_reason(crate::wire::FinishReason::text(r));
        }
        if crate::wire::has_usage_object(data) {
            if let Some(u) = usage_of(data) {
                self.end.usage(u);
            }
        }
    }
}

impl Stream for EventStream {
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

/// A usage event's counts: chat streams carry `usage` at the top, Responses API events inside
/// `response`.
fn usage_of(data: &str) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(default, deserialize_with = "crate::wire::usage_counts")]
        usage: Option<Usage>,
    }
    #[derive(serde::Deserialize)]
    struct Env {
        #[serde(default, deserialize_with = "crate::wire::usage_counts")]
        usage: Option<Usage>,
        response: Option<Inner>,
    }
    serde_json::from_str::<Env>(data)
        .ok()
        .and_then(|e| e.usage.or(e.response.and_then(|r| r.usage)))
}

/// A chunk's first non-null `finish_reason`.
fn finish_reason(data: &str) -> Option<&str> {
    crate::wire::finish_reasons(data.as_bytes()).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_are_found_whatever_the_whitespace() {
        assert_eq!(
            finish_reason(r#"{"choices":[{"finish_reason":"stop"}]}"#),
            Some("stop")
        );
        assert_eq!(
            finish_reason(r#"{"choices": [{"index": 0, "finish_reason": "length"}]}"#),
            Some("length")
        );
        assert_eq!(
            finish_reason(r#"{"choices":[{"finish_reason":null}]}"#),
            None
        );
        assert_eq!(
            finish_reason(r#"{"a":{"finish_reason" : null},"b":{"finish_reason" :"tool_calls"}}"#),
            Some("tool_calls")
        );
    }
}
