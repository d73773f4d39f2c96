//! The two ways events come in: `POST /` (http) and a Kafka topic (kafka).
//! Both decode with `decode` and write through the same group-commit store.

pub mod decode;
pub mod http;
pub mod kafka;
