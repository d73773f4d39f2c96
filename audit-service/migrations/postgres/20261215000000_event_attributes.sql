-- Every attribute name a stored event has had, so that a filter naming one
-- no event has (`subjekt` for `subject`) gets a warning: CESQL itself only
-- says "missing attribute" per event, and the filter matches nothing. The
-- writer adds an event's extension names before storing it; the existing
-- events' names are read here once (a pass over the table).
CREATE TABLE event_attributes (
    name TEXT PRIMARY KEY
);
INSERT INTO event_attributes (name)
    SELECT DISTINCT jsonb_object_keys(event_json::jsonb) FROM events
    ON CONFLICT DO NOTHING;
DELETE FROM event_attributes WHERE name IN ('data', 'data_base64');
