//! The W3C trace context (`traceparent`, `tracestate`) where it travels: in
//! HTTP headers, and inside a CloudEvent as the distributed-tracing extension
//! (attributes of the same names), so that it crosses every transport with
//! the event and one trace id joins the user's request, the relay's publish
//! and the audit store.

use cloudevents::event::ExtensionValue;
use cloudevents::Event;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The remote context in `headers`; an empty context when there is none or
/// it is malformed (the W3C rule: start a new trace rather than fail).
pub fn from_headers(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderReader(headers))
}

/// Writes `cx` into `headers` as `traceparent`/`tracestate`, if it holds a
/// valid span context.
pub fn to_headers(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderWriter(headers));
}

/// The context carried by an event's distributed-tracing extension.
pub fn from_event(event: &Event) -> Context {
    TraceContextPropagator::new().extract(&EventReader(event))
}

/// The context of `traceparent` (and `tracestate`) values as they were
/// stored or received.
pub fn from_values(traceparent: &str, tracestate: Option<&str>) -> Context {
    TraceContextPropagator::new().extract(&Values {
        traceparent,
        tracestate,
    })
}

/// The context of the current span: what an event made here, or a request
/// sent from here, continues. Empty where no spans are made.
pub fn current() -> Context {
    Span::current().context()
}

/// Makes `cx` the parent of `span`, which must not have been entered yet.
/// Nothing happens where no spans are made, or for an empty `cx`.
pub fn set_parent(span: &Span, cx: Context) {
    if cx.span().span_context().is_valid() {
        // Fails only for a span no layer records or one already started;
        // it then stays in the trace it was made in.
        let _ = span.set_parent(cx);
    }
}

/// Sets the event's `traceparent` (and `tracestate`, when not empty) to
/// `cx`. An invalid or empty context leaves the event as it is.
pub fn set_on_event(event: &mut Event, cx: &Context) {
    if !cx.span().span_context().is_valid() {
        return;
    }
    let mut pair = Pair::default();
    TraceContextPropagator::new().inject_context(cx, &mut pair);
    if let Some(traceparent) = pair.traceparent {
        event.set_extension(TRACEPARENT, traceparent);
        if let Some(tracestate) = pair.tracestate.filter(|s| !s.is_empty()) {
            event.set_extension(TRACESTATE, tracestate);
        }
    }
}

/// The extension's two values in an event in the JSON format, read without
/// building the event (the relay holds events as stored JSON).
#[derive(Debug, Default, serde::Deserialize)]
pub struct JsonTraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl JsonTraceContext {
    /// The values in `event_json`; none when it has none or is not JSON.
    pub fn of(event_json: &str) -> Self {
        serde_json::from_str(event_json).unwrap_or_default()
    }

    pub fn context(&self) -> Context {
        match &self.traceparent {
            Some(traceparent) => from_values(traceparent, self.tracestate.as_deref()),
            None => Context::new(),
        }
    }

    /// The trace id, for a log line.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(trace_id_of)
    }
}

/// The trace id of a `traceparent` value (`00-<trace id>-<span id>-<flags>`),
/// as 32 lower-case hex digits, for log lines; `None` when it is malformed
/// or all zeros, as W3C defines an invalid one.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let hex = trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && trace_id.bytes().any(|b| b != b'0')).then_some(trace_id)
}

/// The trace id of `cx` as 32 hex digits, when it holds a valid span.
pub fn trace_id_hex(cx: &Context) -> Option<String> {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct EventReader<'a>(&'a Event);

impl Extractor for EventReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.extension(key) {
            Some(ExtensionValue::String(s)) => Some(s),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter_extensions().map(|(name, _)| name).collect()
    }
}

struct Values<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Values<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[derive(Default)]
struct Pair {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Pair {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn event() -> Event {
        EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .build()
            .unwrap()
    }

    #[test]
    fn a_context_from_headers_travels_in_the_event_and_back() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", PARENT.parse().unwrap());
        headers.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        let cx = from_headers(&headers);
        let mut event = event();
        set_on_event(&mut event, &cx);
        assert_eq!(
            event.extension(TRACEPARENT).map(ToString::to_string),
            Some(PARENT.to_owned())
        );
        assert_eq!(
            event.extension(TRACESTATE).map(ToString::to_string),
            Some("congo=t61rcWkgMzE".to_owned())
        );
        let back = from_event(&event);
        assert_eq!(
            trace_id_hex(&back).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        let json = serde_json::to_string(&event).unwrap();
        let stored = JsonTraceContext::of(&json);
        assert_eq!(stored.trace_id(), Some("0af7651916cd43dd8448eb211c80319c"));
        assert!(stored.context().span().span_context().is_remote());
    }

    #[test]
    fn no_or_a_malformed_traceparent_sets_nothing() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-zz-yy-01".parse().unwrap());
        let mut event = event();
        set_on_event(&mut event, &from_headers(&headers));
        set_on_event(&mut event, &Context::new());
        assert!(event.extension(TRACEPARENT).is_none());
        assert!(JsonTraceContext::of("not json").trace_id().is_none());
    }

    #[test]
    fn the_trace_id_of_a_traceparent_is_its_second_field_when_valid() {
        assert_eq!(
            trace_id_of(PARENT),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
            None
        );
        assert_eq!(trace_id_of("00-0AF7-b7ad6b7169203331-01"), None);
        assert_eq!(trace_id_of(""), None);
    }
}
