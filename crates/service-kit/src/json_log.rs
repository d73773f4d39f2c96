//! The JSON log line: the line tracing-subscriber's JSON formatter writes
//! with the services' settings (the event's fields flattened beside
//! `timestamp` and `level`, then the list of spans, root first), written
//! straight into the line's buffer.
//!
//! Why not that formatter: it serializes through serde_json into an
//! `io::Write` adaptor that checks each chunk it is handed is UTF-8 again,
//! formats the time from scratch on every line and parses each span's
//! fields back from their JSON text. audit-service logs a line per stored
//! event, and under callgrind that line was about 18,000 instructions: a
//! fifth of batch ingest's instructions and a ninth of the single-event
//! sink's. Test `lines_are_those_of_tracing_subscribers_json_formatter`
//! holds the two formats equal (but for an event given an explicit parent
//! span, whose line lists that parent's spans rather than the current ones).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of `LOG_FORMAT=json`. Span fields are kept by
/// [`tracing_subscriber::fmt::format::JsonFields`], as JSON object text.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        write_now(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(event.metadata().level().as_str())?;
        writer.write_char('"')?;

        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;

        if let Some(scope) = ctx.event_scope() {
            writer.write_str(",\"spans\":[")?;
            for (i, span) in scope.from_root().enumerate() {
                if i > 0 {
                    writer.write_char(',')?;
                }
                writer.write_char('{')?;
                let extensions = span.extensions();
                let stored = extensions
                    .get::<FormattedFields<N>>()
                    .map(|formatted| formatted.fields.trim())
                    .and_then(|text| text.strip_prefix('{')?.strip_suffix('}'))
                    .map(str::trim)
                    .unwrap_or("");
                if !stored.is_empty() {
                    writer.write_str(stored)?;
                    writer.write_char(',')?;
                }
                writer.write_str("\"name\":\"")?;
                escape(&mut writer, span.name())?;
                writer.write_str("\"}")?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`: strings and anything formatted
/// (`%x`, `?x`, errors) as JSON strings, integers and booleans as
/// themselves, as serde_json would.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_str(",\"")?;
                escape(self.out, field.name())?;
                self.out.write_str("\":")?;
                value(self.out)
            })();
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| {
            out.write_char('"')?;
            escape(out, value)?;
            out.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaping(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json writes them as null.
        self.entry(field, |out| match value.is_finite() {
            true => write!(out, "{value}"),
            false => out.write_str("null"),
        });
    }
}

/// `s` as the inside of a JSON string, escaped as serde_json escapes it.
fn escape(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte escaped is ASCII, so these are char boundaries.
        out.write_str(&s[start..i])?;
        match escaped.is_empty() {
            true => write!(out, "\\u{byte:04x}")?,
            false => out.write_str(escaped)?,
        }
        start = i + 1;
    }
    out.write_str(&s[start..])
}

/// A writer that escapes what is written through it.
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s)
    }
}

thread_local! {
    /// The second last formatted on this thread, and its text up to the
    /// seconds (`2026-12-06T23:17:40`): lines come many to a second.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The time now, as tracing-subscriber writes it: RFC 3339 in UTC with
/// microseconds (`2026-12-06T23:17:40.123456Z`).
fn write_now(out: &mut Writer<'_>) -> fmt::Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != seconds {
            text.clear();
            let time = i64::try_from(seconds)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            write!(text, "{}", time.format("%Y-%m-%dT%H:%M:%S"))?;
            *second = seconds;
        }
        out.write_str(text)
    })?;
    write!(out, ".{:06}Z", now.subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect()
        }
    }

    /// Every kind of field, text that needs escaping, events in and out
    /// of nested spans, a span without fields and one recorded later.
    fn log_everything() {
        let odd = "quote \" backslash \\ newline \n tab \t bell \u{7} escape \u{1b} nul \0 \
                   delete \u{7f} é 漢字 😀";
        tracing::info!(
            r#type = "user.storeUser",
            seq = 42_i64,
            "audit event stored"
        );
        tracing::warn!(
            text = odd,
            shown = %odd,
            debugged = ?odd,
            unsigned = u64::MAX,
            negative = i64::MIN,
            yes = true,
            no = false,
            ratio = 0.25,
            huge = 1e300,
            nan = f64::NAN,
            big = u128::MAX,
            missing = Option::<&str>::None.map(tracing::field::display),
            present = Some(tracing::field::display("here")),
            "a {} message with {odd}",
            "formatted"
        );
        let error = std::io::Error::other(odd);
        tracing::error!(error = &error as &dyn std::error::Error, "failed");
        let outer = tracing::info_span!("request", method = "POST", request_id = %odd, late = tracing::field::Empty);
        let _outer = outer.enter();
        outer.record("late", 7);
        tracing::info!("inside one span");
        let inner = tracing::info_span!("bare");
        let _inner = inner.enter();
        tracing::debug!(n = 1, "inside two spans");
        let explicit = tracing::info_span!("elsewhere", x = 1);
        tracing::info!(parent: &explicit, "with an explicit parent");
    }

    fn capture(
        layer: impl FnOnce(
            Captured,
        ) -> Box<
            dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync,
        >,
    ) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(layer(captured.clone()));
        tracing::subscriber::with_default(subscriber, log_everything);
        captured.lines()
    }

    #[test]
    fn lines_are_those_of_tracing_subscribers_json_formatter() {
        use tracing_subscriber::Layer as _;
        let theirs = capture(|out| {
            tracing_subscriber::fmt::layer()
                .with_writer(out)
                .with_target(false)
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG)
                .boxed()
        });
        let ours = capture(|out| {
            tracing_subscriber::fmt::layer()
                .with_writer(out)
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG)
                .boxed()
        });
        assert_eq!(ours.len(), 6);
        assert_eq!(ours.len(), theirs.len());
        for (mut ours, mut theirs) in ours.into_iter().zip(theirs) {
            let our_time = ours["timestamp"].take();
            let their_time = theirs["timestamp"].take();
            // One difference: for an event with an explicit parent, the list
            // is that parent's spans; tracing-subscriber lists the current
            // ones whatever the parent.
            if ours["message"] == "with an explicit parent" {
                let spans = ours["spans"].as_array_mut().unwrap();
                assert_eq!(spans.pop().unwrap()["name"], "elsewhere");
            }
            assert_eq!(ours, theirs);
            for time in [&our_time, &their_time] {
                let text = time.as_str().unwrap();
                assert!(chrono::DateTime::parse_from_rfc3339(text).is_ok(), "{text}");
                assert_eq!(text.len(), "2026-12-06T23:17:40.123456Z".len(), "{text}");
            }
        }
    }

    #[test]
    fn escaping_matches_serde_json_for_every_ascii_byte() {
        for byte in 0u8..=0x7f {
            let s = format!("a{}b", byte as char);
            let mut ours = String::from("\"");
            escape(&mut ours, &s).unwrap();
            ours.push('"');
            assert_eq!(ours, serde_json::to_string(&s).unwrap(), "byte {byte:#04x}");
        }
    }
}
