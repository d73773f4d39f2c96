//! What every test suite of the workspace runs the services and their
//! neighbours with.

pub mod ca;
pub mod database;
pub mod process;
