//! A normal start logs no error: both services on each transport, their
//! `/readyz` probed from the moment they answer until they are ready, as
//! an orchestrator does, then one user's event delivered.

use e2e::{Service, Stack};
use std::time::{Duration, Instant};

/// Polls `/readyz` every 20 ms until it answers 200; returns how many
/// probes were answered 503 on the way.
async fn probe_until_ready(stack: &Stack, service: &Service) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut unready = 0;
    loop {
        let status = stack
            .http
            .get(format!("{}/readyz", service.base_url))
            .send()
            .await
            .map(|r| r.status().as_u16());
        match status {
            Ok(200) => return unready,
            Ok(503) => unready += 1,
            other => panic!("/readyz answered {other:?}\n{}", service.log_tail(20)),
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 60 s:\n{}",
            service.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn errors(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect()
}

async fn start_probe_and_deliver(transport: &str, env: &[(String, String)]) {
    let stack = Stack::new().unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut audit = stack.audit(&env).await.unwrap();
    let audit_unready = probe_until_ready(&stack, &audit).await;
    let mut user = stack.user(&audit.base_url, &env).await.unwrap();
    let user_unready = probe_until_ready(&stack, &user).await;
    stack
        .create_user_and_wait(&user, &audit, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(user.terminate().await.unwrap().success());
    assert!(audit.terminate().await.unwrap().success());
    for (name, service, unready) in [
        ("audit-service", &audit, audit_unready),
        ("user-service", &user, user_unready),
    ] {
        let logs = service.logs();
        assert!(
            errors(&logs).is_empty(),
            "{name} on {transport} ({unready} probes answered 503) logged errors:\n{}",
            errors(&logs).join("\n")
        );
    }
}

#[tokio::test]
async fn a_normal_start_over_http_logs_no_error_while_probed() {
    start_probe_and_deliver("http", &[]).await;
}

#[tokio::test]
async fn a_normal_start_on_kafka_logs_no_error_while_probed() {
    test_kit::servers::require_shared(test_kit::servers::Kind::Kafka);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let env = crate::kafka::kafka_env(crate::kafka::SHARED_BROKER, &tag);
    start_probe_and_deliver("kafka", &env).await;
}

#[tokio::test]
async fn a_normal_start_on_nats_logs_no_error_while_probed() {
    test_kit::servers::require_shared(test_kit::servers::Kind::Nats);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let env = crate::nats::nats_env(crate::nats::SHARED_SERVER, &tag);
    start_probe_and_deliver("nats", &env).await;
}
