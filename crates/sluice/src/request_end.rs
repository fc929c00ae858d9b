//! The end of a request, owned by one value.
//!
//! Everything that happens when a request is over — the admission ticket's and the budget
//! charge's settlement, the request-end metrics (`sluice_requests_total`, its duration, tokens,
//! finish reasons), the alerting stage's view, the span's closing fields and the failure log —
//! lives in [`RequestEnd`]. A unary answer's guard ends in [`crate::Engine::send`]; a
//! stream's guard travels inside its [`crate::EventStream`] and ends at the last event, at an
//! error, or when the stream is dropped. Either way it runs once: there is no second place that
//! could record a request twice or forget one (as gateway streams once were forgotten).

use std::borrow::Cow;
use std::sync::Arc;

use tokio::time::Instant;

use crate::admission::{self, AttemptOutcome, Ticket};
use crate::alerts::Alerter;
use crate::error::Error;
use crate::observe;
use crate::pricing::Nanos;
use crate::spend::Charge;
use crate::wire::Usage;

/// The logical request a guard reports for (set once its attempt has won). A stream's guard
/// holds an owned one ([`Request::into_owned`]); a unary answer's end borrows the texts from
/// the call and the answer it ends with ([`RequestEnd::end_reporting`]).
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) alerts: Arc<Alerter>,
    pub(crate) started: Instant,
    pub(crate) endpoint: &'static str,
    pub(crate) model: Cow<'a, str>,
    /// The upstream's `x-request-id`, for the log line of an answer cut short.
    pub(crate) request_id: Option<Cow<'a, str>>,
    pub(crate) span: tracing::Span,
}

impl Request<'_> {
    /// The same, owning its texts: for a guard that outlives the call (a stream's).
    pub(crate) fn into_owned(self) -> Request<'static> {
        Request {
            alerts: self.alerts,
            started: self.started,
            endpoint: self.endpoint,
            model: Cow::Owned(self.model.into_owned()),
            request_id: self.request_id.map(|r| Cow::Owned(r.into_owned())),
            span: self.span,
        }
    }
}

/// How a request ended, as the guard records it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended<'a> {
    Ok,
    Failed(&'a Error),
    /// The consumer dropped the stream before its end.
    Cancelled,
}

/// Holds what must be settled and recorded when a request ends; see the module docs.
#[derive(Debug)]
pub(crate) struct RequestEnd {
    /// The successful attempt's admission ticket (rate-limit reservation, concurrency slot).
    ticket: Option<Ticket>,
    /// Tickets of other limiters that count this request (a gateway caller's virtual key).
    others: Vec<Ticket>,
    /// The budget reservation and the prompt estimate to settle it with when no usage comes.
    charge: Option<(Charge, u64)>,
    request: Option<Request<'static>>,
    usage: Option<Usage>,
    /// The answer's finish reasons; the usual ones without a copy of their text.
    finish_reasons: Vec<std::borrow::Cow<'static, str>>,
    events_seen: u64,
    cost: Option<Nanos>,
    ended: bool,
}

impl RequestEnd {
    pub(crate) fn new(ticket: Option<Ticket>) -> Self {
        RequestEnd {
            ticket,
            others: Vec::new(),
            charge: None,
            request: None,
            usage: None,
            finish_reasons: Vec::new(),
            events_seen: 0,
            cost: None,
            ended: false,
        }
    }

    /// Hold the budget reservation; `prompt` is the estimate used if no usage report arrives.
    pub(crate) fn charge(&mut self, charge: Charge, prompt: u64) {
        self.charge = Some((charge, prompt));
        if self.usage.is_some() || self.ended {
            self.settle_charge();
        }
    }

    /// Hold another limiter's ticket, settled from the same usage.
    pub(crate) fn also_settle(&mut self, mut ticket: Ticket) {
        if let Some(u) = &self.usage {
            ticket.settle_usage(u);
        }
        self.others.push(ticket);
    }

    /// Report for this logical request when it ends.
    pub(crate) fn report(&mut self, request: Request<'_>) {
        self.request = Some(request.into_owned());
    }

    /// The usage report arrived: settle the reservations to it.
    pub(crate) fn usage(&mut self, u: Usage) {
        if let Some(t) = self.ticket.as_mut() {
            t.settle_usage(&u);
        }
        for t in &mut self.others {
            t.settle_usage(&u);
        }
        self.usage = Some(u);
        self.settle_charge();
    }

    /// One more content event (the upper bound of output tokens when no usage arrives).
    pub(crate) fn event_seen(&mut self) {
        self.events_seen += 1;
    }

    /// One of the answer's finish reasons, as [`crate::wire::FinishReason::text`] keeps it (a
    /// unary answer's are kept so already; a borrowed one is passed on without a copy).
    pub(crate) fn finish_reason(&mut self, reason: std::borrow::Cow<'static, str>) {
        self.finish_reasons.push(reason);
    }

    /// The usage reported, taken back once the end has reported it.
    pub(crate) fn take_usage(&mut self) -> Option<Usage> {
        self.usage.take()
    }

    pub(crate) fn usage_seen(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// What the request cost, once settled and priced.
    pub(crate) fn cost(&self) -> Option<Nanos> {
        self.cost
    }

    /// Settle the budget from what was seen so far (the consumer is leaving).
    pub(crate) fn settle_charge(&mut self) {
        if let Some((charge, prompt)) = self.charge.take() {
            let priced = charge.price().is_some();
            // The answer's usage read where it is (a copy would be made and dropped with its
            // three maps of extra fields); without one, what the estimate and the events say.
            let counted;
            let u = match &self.usage {
                Some(u) => u,
                None => {
                    counted = Usage {
                        prompt_tokens: prompt,
                        completion_tokens: self.events_seen,
                        total_tokens: prompt.saturating_add(self.events_seen),
                        ..Usage::default()
                    };
                    &counted
                }
            };
            let cost = charge.settle(u);
            self.cost = priced.then_some(cost);
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// The request is over: settle, record, release. Runs once; later calls do nothing.
    pub(crate) fn end(&mut self, how: Ended<'_>) {
        if !self.ended {
            self.end_at(how, Instant::now());
        }
    }

    /// [`RequestEnd::end`] with the time already read by the caller (one clock read serves
    /// the answer's latency, the admission ticket's and the request's duration).
    pub(crate) fn end_at(&mut self, how: Ended<'_>, now: Instant) {
        if self.ended {
            return;
        }
        let request = self.request.take();
        self.close(how, now, request.as_ref());
    }

    /// [`RequestEnd::end_at`], reporting for `request` (borrowed: the call and its answer are
    /// at hand, and their texts need no copy).
    pub(crate) fn end_reporting(&mut self, how: Ended<'_>, now: Instant, request: &Request<'_>) {
        if !self.ended {
            self.close(how, now, Some(request));
        }
    }

    fn close(&mut self, how: Ended<'_>, now: Instant, request: Option<&Request<'_>>) {
        self.ended = true;
        self.settle_charge();
        if let Some(t) = self.ticket.take() {
            let o = match how {
                Ended::Ok => AttemptOutcome::Success(t.elapsed_at(now)),
                Ended::Failed(e) => admission::outcome_of(e),
                Ended::Cancelled => AttemptOutcome::Neutral,
            };
            t.finish(o);
        }
        self.others.clear();
        let Some(r) = request else {
            return;
        };
        let latency = now.saturating_duration_since(r.started);
        let outcome = match how {
            Ended::Ok => "ok",
            Ended::Failed(e) => e.kind().as_str(),
            Ended::Cancelled => "cancelled",
        };
        let metrics = observe::request_end(r.endpoint, observe::model_label(&r.model));
        metrics.request_done(outcome, latency);
        if let Some(u) = &self.usage {
            metrics.usage(u);
            r.span.record("prompt_tokens", u.prompt_tokens);
            r.span.record("completion_tokens", u.completion_tokens);
        }
        let reasons = &self.finish_reasons;
        if !matches!(how, Ended::Cancelled) {
            metrics.finish_reasons(&r.model, r.request_id.as_deref(), reasons);
            let kind = match how {
                Ended::Failed(e) => Some(e.kind().as_str()),
                _ => None,
            };
            r.alerts.request(kind, latency, reasons);
        }
        r.span.record("latency_ms", latency.as_millis() as u64);
        if let Ended::Cancelled = how {
            r.span
                .in_scope(|| tracing::debug!("the consumer left before the end of the answer"));
        }
        if let Ended::Failed(e) = how {
            r.span.record("attempts", e.attempts());
            r.span.record("error_kind", e.kind().as_str());
            if let Some(s) = e.status() {
                r.span.record("status", s);
            }
            if let Some(id) = e.request_id() {
                r.span.record("request_id", id);
            }
            r.span.in_scope(|| {
                tracing::warn!(kind = e.kind().as_str(), attempts = e.attempts(), error = %e, "request failed");
            });
        }
    }
}

impl Default for RequestEnd {
    fn default() -> Self {
        RequestEnd::new(None)
    }
}

impl Drop for RequestEnd {
    fn drop(&mut self) {
        self.end(Ended::Cancelled);
    }
}
