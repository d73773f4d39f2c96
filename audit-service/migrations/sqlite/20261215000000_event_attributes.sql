-- Every attribute name a stored event has had, so that a filter naming one
-- no event has (`subjekt` for `subject`) gets a warning: CESQL itself only
-- says "missing attribute" per event, and the filter matches nothing. The
-- writer adds an event's extension names before storing it; the existing
-- events' names are read here once.
CREATE TABLE event_attributes (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
INSERT OR IGNORE INTO event_attributes (name)
    SELECT DISTINCT key FROM events, json_each(events.event_json)
    WHERE key NOT IN ('data', 'data_base64');
