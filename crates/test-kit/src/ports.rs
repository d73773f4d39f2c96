//! Loopback ports for the servers a test starts.

use std::net::TcpListener;
use std::ops::Range;

/// A loopback port nothing listens on right now (bound, then released), for
/// a server the test starts there, or one that stays down on purpose.
///
/// Taken below the kernel's ephemeral range: a port the kernel hands out
/// for `bind(0)` is one it may also give, before the server binds it, to
/// any outgoing connection of the suite's hundreds (a service once failed
/// to start with "Address already in use" that way). Ports below that
/// range are only ever bound on purpose.
pub fn free_port() -> u16 {
    let candidates = below_ephemeral_ports();
    if !candidates.is_empty() {
        for _ in 0..100 {
            let port = rand::random_range(candidates.clone());
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// From 10,000 (clear of the defaults the services and brokers use:
/// 1883, 3000, 4222, 8080, 9092) to where the kernel's ephemeral ports
/// start; empty where they start lower.
fn below_ephemeral_ports() -> Range<u16> {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    10_000..first_ephemeral
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_outside_the_ephemeral_range_and_can_be_bound() {
        let range = below_ephemeral_ports();
        for _ in 0..20 {
            let port = free_port();
            assert!(range.contains(&port), "{port} not in {range:?}");
            TcpListener::bind(("127.0.0.1", port)).expect("the port binds");
        }
    }
}
