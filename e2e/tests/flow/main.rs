//! Both real service binaries, started as processes, talking as they do in
//! production. One test binary, so cargo links it once.

mod http;
mod kafka;
