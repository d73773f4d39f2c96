-- Retention deletes the oldest delivered rows, a few hundred at a time.
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE status = 'delivered';
