//! The events the user service emits, as Rust types, and their one mapping to
//! and from `cloudevents::Event`.

use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Emitted when a user is created. The name is the seed article's, so that
/// consumers written against it keep working.
pub const USER_STORED: &str = "user.storeUser";
/// Emitted when a user's name changes.
pub const USER_UPDATED: &str = "user.updateUser";
/// Emitted when a user is deleted.
pub const USER_DELETED: &str = "user.deleteUser";

/// The media type of every user event's data.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// The data of every user event. It deliberately has no password field: a
/// secret can't leak into an event that has no place for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserData {
    pub id: Uuid,
    pub name: String,
}

/// A change to a user, as the rest of the system sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    Stored(UserData),
    Updated(UserData),
    Deleted(UserData),
}

#[derive(Debug, thiserror::Error)]
pub enum UserEventError {
    #[error("unknown user event type {0:?}")]
    UnknownType(String),
    #[error("the event has no data")]
    MissingData,
    #[error("the event data is not a user: {0}")]
    InvalidData(#[from] serde_json::Error),
    #[error("failed to build the CloudEvent: {0}")]
    Build(#[from] cloudevents::event::EventBuilderError),
}

impl UserEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            UserEvent::Stored(_) => USER_STORED,
            UserEvent::Updated(_) => USER_UPDATED,
            UserEvent::Deleted(_) => USER_DELETED,
        }
    }

    pub fn data(&self) -> &UserData {
        match self {
            UserEvent::Stored(d) | UserEvent::Updated(d) | UserEvent::Deleted(d) => d,
        }
    }

    /// Builds the CloudEvent for this change. `id` must be unique per
    /// `source`: receivers deduplicate on the pair.
    pub fn to_cloudevent(
        &self,
        id: Uuid,
        source: &str,
        time: DateTime<Utc>,
    ) -> Result<Event, UserEventError> {
        let data = self.data();
        let event = EventBuilderV10::new()
            .id(id.to_string())
            .source(source)
            .ty(self.event_type())
            .subject(data.id.to_string())
            .time(time)
            .data(DATA_CONTENT_TYPE, serde_json::to_value(data)?)
            .build()?;
        Ok(event)
    }
}

impl TryFrom<&Event> for UserEvent {
    type Error = UserEventError;

    fn try_from(event: &Event) -> Result<Self, Self::Error> {
        let data: UserData = match event.data() {
            Some(Data::Json(v)) => serde_json::from_value(v.clone())?,
            Some(Data::String(s)) => serde_json::from_str(s)?,
            Some(Data::Binary(b)) => serde_json::from_slice(b)?,
            None => return Err(UserEventError::MissingData),
        };
        match event.ty() {
            USER_STORED => Ok(UserEvent::Stored(data)),
            USER_UPDATED => Ok(UserEvent::Updated(data)),
            USER_DELETED => Ok(UserEvent::Deleted(data)),
            other => Err(UserEventError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserData {
        UserData {
            id: Uuid::new_v4(),
            name: "alice".into(),
        }
    }

    #[test]
    fn stored_user_maps_to_the_seed_event_type_with_subject_and_json_data() {
        let data = alice();
        let id = Uuid::new_v4();
        let event = UserEvent::Stored(data.clone())
            .to_cloudevent(id, "/user-service", Utc::now())
            .unwrap();
        assert_eq!(event.ty(), "user.storeUser");
        assert_eq!(event.id(), id.to_string());
        assert_eq!(event.subject(), Some(data.id.to_string().as_str()));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(
            event.data(),
            Some(&Data::Json(
                serde_json::json!({"id": data.id, "name": "alice"})
            ))
        );
    }

    #[test]
    fn every_user_event_round_trips_through_a_cloudevent() {
        for change in [
            UserEvent::Stored(alice()),
            UserEvent::Updated(alice()),
            UserEvent::Deleted(alice()),
        ] {
            let event = change
                .to_cloudevent(Uuid::new_v4(), "/user-service", Utc::now())
                .unwrap();
            assert_eq!(UserEvent::try_from(&event).unwrap(), change);
        }
    }

    #[test]
    fn an_unknown_type_is_rejected() {
        let mut event = UserEvent::Stored(alice())
            .to_cloudevent(Uuid::new_v4(), "/s", Utc::now())
            .unwrap();
        cloudevents::AttributesWriter::set_type(&mut event, "user.other");
        assert!(matches!(
            UserEvent::try_from(&event),
            Err(UserEventError::UnknownType(t)) if t == "user.other"
        ));
    }
}
