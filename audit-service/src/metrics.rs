//! The audit service's metrics in one place: their HELP text, and the
//! series that exist from the start (at zero) so dashboards and alerts see
//! them before the first event.

use cloudevents_wire::Transport;

/// Describes every metric and registers the counters of the transports in
/// use: `POST /` always, plus `transport` when it is a broker.
pub fn describe(transport: Transport) {
    // The recorder first: HELP texts go to the recorder installed when they
    // are described.
    service_kit::telemetry::metrics_handle();
    metrics::describe_counter!(
        "audit_events_stored_total",
        "Events stored (new rows), by the transport that brought them"
    );
    metrics::describe_counter!(
        "audit_events_duplicate_total",
        "Events acknowledged that were already stored (same source and id), by transport"
    );
    metrics::describe_counter!(
        "audit_events_rejected_total",
        "Requests (http) or messages (kafka, nats) refused as not valid CloudEvents, by transport"
    );
    metrics::describe_counter!(
        "audit_dead_letters_failed_total",
        "Attempts to publish a dead letter (Kafka topic or NATS subject) that failed (retried)"
    );
    metrics::describe_histogram!(
        "audit_commit_batch_events",
        "Events written by one store transaction (one fsync)"
    );
    metrics::describe_histogram!(
        "audit_commit_duration_seconds",
        metrics::Unit::Seconds,
        "Time to insert and commit one store transaction"
    );
    metrics::describe_counter!(
        "audit_stream_catch_ups_total",
        "Live-tail clients that fell behind the live feed and were served from the store until caught up"
    );
    metrics::describe_gauge!(
        "audit_kafka_consumer_lag",
        "Records of a partition this member consumes that are not yet stored (end offset minus committed offset)"
    );
    metrics::describe_gauge!(
        "audit_log_size",
        "Entries in the transparency log's latest signed checkpoint (this replica's sequencer)"
    );
    metrics::describe_histogram!(
        "audit_log_checkpoint_lag_seconds",
        metrics::Unit::Seconds,
        "Time from a commit to the signed checkpoint that first holds its events, one sample per commit"
    );
    let mut transports = vec![Transport::Http];
    if transport != Transport::Http {
        transports.push(transport);
    }
    for transport in transports {
        let transport = transport.as_str();
        for name in [
            "audit_events_stored_total",
            "audit_events_duplicate_total",
            "audit_events_rejected_total",
        ] {
            metrics::counter!(name, "transport" => transport).increment(0);
        }
    }
}
