-- The relay reads one user's pending rows in order when that user's events
-- were held back (a retry, or more pending than it keeps in memory).
CREATE INDEX outbox_pending_user ON outbox (user_id, seq) WHERE status = 'pending';
