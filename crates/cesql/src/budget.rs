//! How much work one evaluation may do, so a hostile filter cannot hold a CPU.
//!
//! CESQL is cheap per event for the filters people write, but the language
//! lets a 4 KB filter build long strings (`CONCAT` of hundreds of
//! attributes) and match them with long LIKE patterns. Two bounds keep any
//! filter's cost per event in proportion to its text and the event's:
//!
//! - a string built by a function is at most [`MAX_STRING_BYTES`]; a longer
//!   result is a FunctionEvaluation error (the spec's error for a function
//!   that cannot do what is asked), so the filter does not match;
//! - a [`Budget`] of work units, charged as the evaluation goes: a unit is
//!   about one byte of text examined or produced (LIKE charges the steps of
//!   its matcher), plus a few per operator. An evaluation that runs out
//!   stops at once, and [`crate::Expression::matches_within`] says so
//!   rather than guessing a result.

/// The longest string a function may build (CONCAT, CONCAT_WS, LOWER,
/// UPPER): 64 KiB, sixteen attributes of the 4 KiB a service is likely to
/// allow each.
pub const MAX_STRING_BYTES: usize = 64 * 1024;

/// Work units an evaluation may still spend. Share one budget between the
/// events of a page to bound the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    remaining: u64,
}

impl Budget {
    /// No bound on the work (the string bound still holds).
    pub const UNLIMITED: Budget = Budget {
        remaining: u64::MAX,
    };

    pub fn new(units: u64) -> Self {
        Budget { remaining: units }
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Spends `units` on work done outside an evaluation that the same
    /// budget bounds (reading the event, say); `OverBudget`, with nothing
    /// left, when there were not enough.
    pub fn spend(&mut self, units: u64) -> Result<(), OverBudget> {
        if self.charge(units) {
            Ok(())
        } else {
            Err(OverBudget)
        }
    }

    /// Spends `units`; false, with nothing left, when there were not enough.
    pub(crate) fn charge(&mut self, units: u64) -> bool {
        match self.remaining.checked_sub(units) {
            Some(left) => {
                self.remaining = left;
                true
            }
            None => {
                self.remaining = 0;
                false
            }
        }
    }
}

/// The evaluation ran out of its [`Budget`] before it had a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the filter needed more work than its budget allows")]
pub struct OverBudget;
