//! The CloudEvents wire code both services and the fuzzer share, with no
//! broker client among its dependencies: messages as plain headers and
//! payloads, whatever client carried them.
//!
//! - [`binding`]: the parts of the HTTP, Kafka, NATS and MQTT protocol
//!   bindings that cloudevents-sdk 0.9 leaves out (percent-encoded binary
//!   headers, NATS binary mode, the MQTT binding);
//! - [`decode`]: bytes and headers to a valid event, or an error naming
//!   the attribute, for every transport, within [`limits`];
//! - [`validate`]: the spec's rules the SDK does not enforce;
//! - [`tracecontext`]: the W3C trace context as it travels in an event;
//! - [`Transport`]: the transports, named once.

pub mod binding;
pub mod decode;
pub mod limits;
pub mod tracecontext;
mod transport;
pub mod validate;

pub use cloudevents;
pub use transport::Transport;
