//! Values that are valid by construction: past the HTTP edge, the service
//! holds only these.

mod password;
mod user_name;

pub use password::{Password, PasswordHash, RawPassword};
pub use user_name::UserName;
