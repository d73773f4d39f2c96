//! Loopback ports for the servers a test starts.

/// A loopback port nothing listens on right now (bound, then released), for
/// a server the test starts there, or one that stays down on purpose.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
