//! One trace across the event: the spans a user's request makes in
//! user-service (the request, the relay's publish) and the span of its
//! event in audit-service (the store) share one trace id, as exported over
//! OTLP to a receiver this test runs.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use e2e::Stack;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as the receiver got it: which service, its name, its trace.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
}

/// A local OTLP/HTTP receiver (`POST /v1/traces`, protobuf), keeping every
/// span it is sent.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut spans = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    Vec::new()
}

#[tokio::test]
async fn one_create_makes_spans_in_both_services_with_one_trace_id() {
    let (endpoint, spans) = otlp_receiver().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Export at once rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let stack = Stack::new().unwrap();
    let audit = stack.audit(&otel).await.unwrap();
    let user = stack.user(&audit.base_url, &otel).await.unwrap();

    // No traceparent: the request starts the trace.
    let id = stack
        .create_user(&user, "Ozzy Osbourne", "12345")
        .await
        .unwrap();
    let items = stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(20),
            |i| !i.is_empty(),
        )
        .await
        .unwrap();
    let traceparent = items[0]["event"]["traceparent"]
        .as_str()
        .expect("the stored event carries a traceparent")
        .to_owned();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();

    let wanted = [
        ("user-service", "request"),
        ("user-service", "publish"),
        ("audit-service", "audit.store"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = spans.lock().unwrap().clone();
        let in_trace: Vec<&Received> = got.iter().filter(|s| s.trace_id == trace_id).collect();
        let all = wanted.iter().all(|(service, name)| {
            in_trace
                .iter()
                .any(|s| s.service == *service && s.name == *name)
        });
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id}: wanted {wanted:?}, got {in_trace:?}\nall spans: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
