//! What every transport's dead letters share: the headers that say why and
//! where from, and the bound on the reason's size. Each broker transport
//! writes its dead letters in its own module (`kafka::dead_letter`, ...).

/// The header of a dead letter that says why the message was refused.
pub const DLQ_ERROR_HEADER: &str = "dlq-error";
/// Where a dead letter came from (`topic/partition/offset` on Kafka).
pub const DLQ_ORIGIN_HEADER: &str = "dlq-origin";
/// Present when the payload and original headers could not be kept.
pub const DLQ_DROPPED_HEADER: &str = "dlq-dropped";
/// The longest reason kept in `dlq-error`: a reason can quote the bad value
/// (a 600 KB specversion), which must not make the dead letter too large.
pub const MAX_REASON_BYTES: usize = 1024;

/// `reason` cut to `MAX_REASON_BYTES` at a character boundary, saying so.
pub fn bounded(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes, truncated)", &reason[..end], reason.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_REASON_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() < MAX_REASON_BYTES + 40, "{}", cut.len());
        assert!(cut.ends_with(&format!("({} bytes, truncated)", long.len())));
    }
}
