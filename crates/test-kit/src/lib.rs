//! What every test suite of the workspace runs the services and their
//! neighbours with: free ports ([`free_port`]), polling with a deadline
//! ([`eventually`], [`within`]), the real binaries as processes
//! ([`process::Service`]), fresh databases ([`database`]), the brokers and
//! database servers the project's scripts run ([`servers`]) and a test CA
//! ([`ca`]).

pub mod ca;
pub mod database;
pub mod poll;
mod ports;
pub mod process;
pub mod servers;

pub use nix::sys::signal::Signal;
pub use poll::{eventually, within};
pub use ports::free_port;
