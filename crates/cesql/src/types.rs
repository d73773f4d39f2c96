//! CESQL's three primitive types (§3.1), apart from their values so that
//! errors can name them without depending on evaluation.

use std::fmt;

/// The primitive types of CESQL. URIs, URI references and timestamps are
/// represented as [`Type::String`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    Boolean,
    Integer,
    String,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Boolean => "Boolean",
            Type::Integer => "Integer",
            Type::String => "String",
        })
    }
}
