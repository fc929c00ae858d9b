//! A chat completion stream for callers: typed chunks with backpressure, an accumulator that
//! knows the completion so far, and an orderly end.
//!
//! - Chunks are decoded only as the caller polls; nothing is read ahead of the caller beyond
//!   one socket read.
//! - Dropping the stream early drops the connection, so the upstream sees the caller leave and
//!   stops generating (and billing).
//! - A failure after the first chunk is never retried (the caller has seen content that a retry
//!   would repeat); the error carries everything received ([`Error::partial`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};

use crate::accumulate::ChatAccumulator;
use crate::call::{Meta, StreamReply};
use crate::error::{Error, ErrorKind};
use crate::event_stream::EventStream;
use crate::text::{Boundary, TextChunker};
use crate::wire::{ChatChunk, ChatCompletion};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Done,
    Failed,
}

/// The stream returned by [`crate::Chat::stream`].
#[derive(Debug)]
pub struct ChatStream {
    events: Pin<Box<EventStream>>,
    acc: ChatAccumulator,
    meta: Meta,
    state: State,
}

impl ChatStream {
    pub(crate) fn new(reply: StreamReply) -> Self {
        ChatStream {
            events: Box::pin(reply.events),
            acc: ChatAccumulator::new(),
            meta: reply.meta,
            state: State::Open,
        }
    }

    /// Request id, rate-limit headers, attempts and time to first token.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The completion as received so far.
    pub fn accumulated(&self) -> ChatCompletion {
        self.acc.snapshot()
    }

    /// Bytes read from the connection so far (to observe backpressure).
    pub fn received_bytes(&self) -> u64 {
        self.events.received_bytes()
    }

    /// Read the stream to its end and return the whole completion.
    pub async fn collect_completion(mut self) -> Result<ChatCompletion, Error> {
        while let Some(item) = self.next().await {
            item?;
        }
        Ok(self.acc.snapshot())
    }

    /// Re-chunk the first choice's text into whole words or whole sentences.
    pub fn text(self, boundary: Boundary) -> TextStream {
        TextStream {
            inner: self,
            chunker: TextChunker::new(boundary),
            ready: VecDeque::new(),
            ended: false,
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.state = State::Failed;
        let e = if self.acc.chunks() > 0 {
            e.with_partial(self.acc.snapshot())
        } else {
            e
        };
        let e = e.with_request_id(self.meta.request_id.clone());
        // The stream's end records the failure (metrics, alerts, log) and settles its cost.
        self.events.as_mut().get_mut().fail(&e);
        e
    }

    fn complete(&mut self) {
        self.state = State::Done;
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.state != State::Open {
            return Poll::Ready(None);
        }
        match self.events.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.complete();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let e = self.fail(e);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(data))) => match serde_json::from_str::<ChatChunk>(&data) {
                Ok(chunk) => {
                    self.acc.push(&chunk);
                    Poll::Ready(Some(Ok(chunk)))
                }
                Err(err) => {
                    let e = Error::new(
                        ErrorKind::Decode,
                        format!("stream chunk is not a chat.completion.chunk: {err}"),
                    );
                    let e = self.fail(e);
                    Poll::Ready(Some(Err(e)))
                }
            },
        }
    }
}

/// Whole words or sentences of the first choice's text. See [`ChatStream::text`].
#[derive(Debug)]
pub struct TextStream {
    inner: ChatStream,
    chunker: TextChunker,
    ready: VecDeque<String>,
    ended: bool,
}

impl TextStream {
    /// The underlying chat stream (meta, accumulated completion).
    pub fn chat(&self) -> &ChatStream {
        &self.inner
    }
}

impl Stream for TextStream {
    type Item = Result<String, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(piece)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(t) = chunk.content(0) {
                        let t = t.to_string();
                        let pieces = self.chunker.push(&t);
                        self.ready.extend(pieces);
                    }
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    if let Some(rest) = self.chunker.finish() {
                        self.ready.push_back(rest);
                    }
                }
            }
        }
    }
}
