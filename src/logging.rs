//! Logging: to stderr through a background writer, as text for a person or
//! as one JSON object a line for a log pipeline.
//!
//! The JSON lines keep each field's type: numbers are JSON numbers,
//! booleans booleans, and a list recorded with `?` (the audit's selectors)
//! a JSON array, where `tracing-subscriber`'s own JSON format would turn
//! every `%` and `?` field into a string. A line is
//! `{"timestamp": RFC 3339, "level", "fields": {"message", …}, "target"}`,
//! the shape that format has, plus `spans` (their names) inside any span.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::LogFormat;

/// Logs go to stderr through a background writer thread, so a request never
/// waits for a write system call. The queue is lossless: when it is full,
/// logging waits rather than dropping lines.
pub fn init(format: LogFormat, filter: EnvFilter) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    // Colour only for a person at a terminal, never in files and journals.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.event_format(JsonLines).init(),
    }
    guard
}

/// The JSON line format (see the module documentation).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = TypedFields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        // Written by hand, not as one map, to keep the keys in this order
        // (a map would sort them) for whoever reads the raw lines.
        let text = |value: &str| Value::String(value.to_owned()).to_string();
        write!(
            writer,
            "{{\"timestamp\":{},\"level\":{},\"fields\":{},\"target\":{}",
            text(&timestamp),
            text(metadata.level().as_str()),
            Value::Object(fields.0),
            text(metadata.target()),
        )?;
        if let Some(scope) = context.event_scope() {
            let names: Vec<Value> = scope
                .from_root()
                .map(|span| Value::String(span.name().to_owned()))
                .collect();
            if !names.is_empty() {
                write!(writer, ",\"spans\":{}", Value::Array(names))?;
            }
        }
        writeln!(writer, "}}")
    }
}

/// An event's fields, each as the JSON value of its type.
#[derive(Default)]
struct TypedFields(Map<String, Value>);

impl TypedFields {
    fn insert(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for TypedFields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value = i64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.insert(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = u64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.insert(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and the infinities have no JSON number: null.
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let value = match field.name() {
            "message" => Value::String(text),
            _ => list_or_text(text),
        };
        self.insert(field, value);
    }
}

/// A list of strings recorded with `?` (`selectors = ?selectors`) reads
/// `["a", "b"]`, which is also a JSON array of strings: it stays an array.
/// Anything else, including a list whose Debug form is not JSON (a string
/// with a control character in it), stays the text it reads as.
fn list_or_text(text: String) -> Value {
    if text.starts_with('[')
        && text.ends_with(']')
        && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text)
        && items.iter().all(Value::is_string)
    {
        return Value::Array(items);
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(debug: &str, expected: Value) {
        assert_eq!(list_or_text(debug.to_owned()), expected, "{debug}");
    }

    /// Lists of strings become arrays; everything else stays text.
    #[test]
    fn lists_of_strings_are_arrays() {
        let selectors = vec!["token:billing".to_owned(), "unix:uid:0".to_owned()];
        check(
            &format!("{selectors:?}"),
            serde_json::json!(["token:billing", "unix:uid:0"]),
        );
        check("[]", serde_json::json!([]));
        check("[1, 2]", serde_json::json!("[1, 2]"));
        check("[not json]", serde_json::json!("[not json]"));
        check("Some(\"ab\")", serde_json::json!("Some(\"ab\")"));
        check("plain", serde_json::json!("plain"));
        let odd = vec!["a\u{1}b".to_owned()];
        check(&format!("{odd:?}"), serde_json::json!(format!("{odd:?}")));
    }
}
