//! CloudEvents SQL Expression Language (CESQL) v1: parse an expression once,
//! evaluate it against CloudEvents, and find the part a store can run as SQL.
//!
//! ```
//! use cesql::{Expression, Value};
//! use cloudevents::{EventBuilder, EventBuilderV10};
//!
//! let filter = Expression::parse("type LIKE 'user.%' AND subject = 'u1'")?;
//! let event = EventBuilderV10::new()
//!     .id("1")
//!     .source("/user-service")
//!     .ty("user.storeUser")
//!     .subject("u1")
//!     .build()?;
//! assert!(filter.matches(&event));
//! assert_eq!(filter.evaluate(&event), (Value::Boolean(true), vec![]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate follows the v1.0.0 specification and passes every case of its
//! TCK (see the README). Events are read through [`Attributes`]: the SDK's
//! `Event`, or a CloudEvent in the JSON format read exactly as written.
//! [`Expression::matches_within`] bounds the work of one evaluation.

mod ast;
mod attributes;
mod budget;
mod error;
mod eval;
mod expression;
mod functions;
mod lexer;
mod like;
mod parser;
mod pushdown;
mod types;
mod validate;
mod value;

pub use attributes::{Attribute, Attributes};
pub use budget::{Budget, OverBudget, MAX_STRING_BYTES};
pub use error::{ErrorKind, EvalError, MathError, ParseError};
pub use expression::Expression;
pub use parser::MAX_DEPTH;
pub use pushdown::{Column, Condition, Pushdown};
pub use value::{Type, Value};
