//! One test binary for all of user-service's integration tests, to keep
//! link time low.

mod binary;
mod delivery;
mod events;
mod helpers;
mod kafka;
mod users;
