//! Kafka with SASL/SCRAM: a private broker (scripts/kafka.sh on its own
//! port, never the shared one) whose only listener wants SCRAM-SHA-256.
//! Both services reach it through the KAFKA_* passthrough alone, and wrong
//! credentials make audit-service's /readyz say why.

use e2e::Stack;
use std::time::Duration;
use test_kit::servers::{Kind, PrivateServer};

const USER: &str = "audit";
const PASSWORD: &str = "scram-secret-0123456789";

/// A SCRAM broker on fresh ports, stopped and its files removed on drop.
fn scram_broker() -> PrivateServer {
    PrivateServer::start_with(
        Kind::Kafka,
        &[
            ("BROKER_SCRAM_USER", USER),
            ("BROKER_SCRAM_PASSWORD", PASSWORD),
        ],
    )
}

fn kafka_env(brokers: &str, tag: &str, password: &str) -> Vec<(String, String)> {
    vec![
        ("EVENT_TRANSPORT".into(), "kafka".into()),
        ("KAFKA_BROKERS".into(), brokers.into()),
        ("KAFKA_TOPIC".into(), format!("e2e-sasl-{tag}")),
        ("KAFKA_GROUP_ID".into(), format!("e2e-sasl-{tag}-group")),
        ("KAFKA_DLQ_TOPIC".into(), format!("e2e-sasl-{tag}.dlq")),
        ("KAFKA_SECURITY_PROTOCOL".into(), "SASL_PLAINTEXT".into()),
        ("KAFKA_SASL_MECHANISM".into(), "SCRAM-SHA-256".into()),
        ("KAFKA_SASL_USERNAME".into(), USER.into()),
        ("KAFKA_SASL_PASSWORD".into(), password.into()),
    ]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn both_services_work_over_sasl_scram_and_wrong_credentials_fail_readyz() {
    let broker = scram_broker();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let env = kafka_env(&broker.address(), &tag, PASSWORD);

    let stack = Stack::new().unwrap();
    let audit = stack.audit(&as_refs(&env)).await.unwrap();
    let user = stack
        .user("http://127.0.0.1:9", &as_refs(&env))
        .await
        .unwrap();
    let id = stack
        .create_user(&user, "Ozzy Osbourne", "12345")
        .await
        .unwrap();
    let items = stack
        .wait_for_events(
            &audit,
            &format!("subject={id}"),
            Duration::from_secs(30),
            |i| !i.is_empty(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; audit log:\n{}", audit.log_tail(30)));
    assert_eq!(items[0]["transport"], "kafka");
    let ready = stack
        .http
        .get(format!("{}/readyz", audit.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // The same broker with a wrong password: /readyz says authentication.
    let wrong = Stack::new().unwrap();
    let env = kafka_env(&broker.address(), &tag, "not-the-password-0123");
    let refused = wrong
        .audit_waiting(&as_refs(&env), e2e::Wait::Live)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let response = wrong
            .http
            .get(format!("{}/readyz", refused.base_url))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
        // The reason comes with librdkafka's first report of the failure.
        if status == 503 && detail.to_ascii_lowercase().contains("authentication") {
            break detail;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz answered {status} {detail:?} with a wrong password"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(detail.contains("SASL"), "{detail}");
    for logs in [audit.logs(), user.logs(), refused.logs()] {
        assert!(!logs.contains(PASSWORD) && !logs.contains("not-the-password-0123"));
    }
}
