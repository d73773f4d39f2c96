//! `make fuzz`: runs every fuzz target for a bounded time and reports the
//! cases tried per target; exits non-zero with the shrunk input when a
//! target fails.
//!
//! Usage: `fuzz [SECONDS_PER_TARGET] [TARGET...]` (default 20 s, every
//! target); `FUZZ_SEED` fixes the seed to replay a run.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = match args.next().map(|s| s.parse()) {
        None => 20,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            eprintln!("usage: fuzz [SECONDS_PER_TARGET] [TARGET...]");
            return ExitCode::FAILURE;
        }
    };
    let only: Vec<String> = args.collect();
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    // proptest reports the failing input itself; the panic hook's own line
    // for every panicking case while shrinking would drown it.
    std::panic::set_hook(Box::new(|_| {}));
    println!("fuzzing {seconds} s per target, FUZZ_SEED={seed}");
    println!("{:<18} {:>10} {:>12}  result", "target", "cases", "cases/s");
    let mut failed = false;
    for target in fuzz::targets() {
        if !only.is_empty() && !only.iter().any(|name| name == target.name) {
            continue;
        }
        let started = Instant::now();
        let report = target.fuzz(Duration::from_secs(seconds), seed);
        let rate = report.cases as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let result = if report.failure.is_some() {
            "FAILED"
        } else {
            "ok"
        };
        println!(
            "{:<18} {:>10} {:>12.0}  {result}",
            report.name, report.cases, rate
        );
        if let Some(failure) = report.failure {
            println!("  {}", failure.replace('\n', "\n  "));
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
