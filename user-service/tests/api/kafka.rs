//! Publishing to a real Kafka broker on 127.0.0.1:9092.
