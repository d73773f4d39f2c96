//! The services' real binaries as child processes, the way a user runs
//! them.

use std::path::Path;

/// Runs a service's binary with `args`, on a free port and a SQLite
/// database in `dir`, and waits up to 10 s for it to exit on its own, for
/// the tests of its command line. One that starts serving instead is
/// killed and fails the test, and so does one that opened the database.
pub fn run_to_exit(binary: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let database = dir.join("command-line.db");
    let mut child = std::process::Command::new(binary)
        .args(args)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", format!("sqlite://{}", database.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary} does not start: {e}"));
    let start = std::time::Instant::now();
    while matches!(child.try_wait(), Ok(None)) {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            let output = child.wait_with_output();
            panic!("{binary} {args:?} did not exit: it serves\n{output:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!database.exists(), "{binary} {args:?} opened the database");
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{binary}'s output: {e}"))
}
