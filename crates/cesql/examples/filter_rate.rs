//! Measures how fast filters parse and evaluate: `cargo run --release -p cesql --example filter_rate`.
//!
//! Prints, for a few filters of the kind audit-service will get, the time to
//! parse one and the events per second one thread can test with `matches`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cesql::Expression;
use cloudevents::{Event, EventBuilder, EventBuilderV10};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let event: Event = EventBuilderV10::new()
        .id("0193b6f0-0000-7000-8000-000000000001")
        .source("/user-service")
        .ty("user.storeUser")
        .subject("0193b6f0-0000-7000-8000-0000000000aa")
        .time("2024-05-01T10:00:00Z")
        .extension(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .build()?;
    let filters = [
        "type = 'user.storeUser'",
        "type LIKE 'user.%' AND subject IN ('a', 'b', '0193b6f0-0000-7000-8000-0000000000aa')",
        "(type = 'user.deleteUser' OR source LIKE '%/user-service') AND EXISTS traceparent",
        "time LIKE '2024-05-%' AND LENGTH(id) = 36",
    ];
    for source in filters {
        let parse = per_call(|| {
            black_box(Expression::parse(black_box(source)).ok());
        });
        let filter = Expression::parse(source)?;
        let evaluate = per_call(|| {
            black_box(filter.matches(black_box(&event)));
        });
        println!(
            "{source}\n  parse {:>7.0} ns   matches {:>5.0} ns  ({:.1} M events/s)",
            parse.as_nanos(),
            evaluate.as_nanos(),
            1e3 / evaluate.as_nanos() as f64,
        );
    }
    Ok(())
}

/// The mean time of one call over about half a second.
fn per_call(mut f: impl FnMut()) -> Duration {
    let mut calls = 0u32;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        for _ in 0..1000 {
            f();
        }
        calls += 1000;
    }
    start.elapsed() / calls
}
