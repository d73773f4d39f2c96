//! The users API: create, read, list, update and delete. Every change is
//! committed together with its CloudEvent (see `store`), and none of these
//! handlers waits for the event to be delivered.

use super::AppState;
use crate::domain::{Password, PasswordHash, RawPassword, UserName};
use crate::error::ApiError;
use crate::hasher::HashError;
use crate::store::User;
use anyhow::Context;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/user", post(create_user))
        .route("/v1/users", get(list_users))
        .route(
            "/v1/users/{id}",
            get(get_user).put(update_user).delete(delete_user),
        )
}

#[derive(Deserialize)]
struct CreateUser {
    name: String,
    password: RawPassword,
}

/// The seed's response shape for a new user.
#[derive(Serialize)]
struct Created {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

#[tracing::instrument(skip_all)]
async fn create_user(
    State(state): State<AppState>,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    let name = UserName::parse(&body.name).map_err(ApiError::Invalid)?;
    let password = Password::parse(body.password).map_err(ApiError::Invalid)?;
    let hash = hash_password(&state, password).await?;
    let user = state
        .store
        .create_user(name, hash)
        .await
        .context("Failed to create the user")?;
    tracing::info!(user_id = %user.id, "user created");
    let location = format!("/v1/users/{}", user.id);
    let created = Created {
        id: user.id,
        name: user.name,
        created_at: user.created_at,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    ))
}

#[tracing::instrument(skip_all)]
async fn get_user(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<User>, ApiError> {
    let id = user_id(id)?;
    let user = state
        .store
        .get_user(id)
        .await
        .context("Failed to read the user")?;
    user.map(Json).ok_or(ApiError::UserNotFound(id))
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<String>,
    after: Option<String>,
}

#[derive(Serialize)]
struct UserPage {
    users: Vec<User>,
    /// Pass as `after` to get the next page; null on the last one.
    next_after: Option<Uuid>,
}

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[tracing::instrument(skip_all)]
async fn list_users(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<UserPage>, ApiError> {
    let Query(params) = params?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad_query(format!(
                    "limit must be an integer from 1 to {MAX_LIMIT}"
                )))
            }
        },
    };
    let after = params
        .after
        .as_deref()
        .map(|a| Uuid::parse_str(a.trim()))
        .transpose()
        .map_err(|_| bad_query("after must be a user id (a UUID)".to_owned()))?;
    // One more than asked tells whether there is a next page.
    let mut users = state
        .store
        .list_users(limit + 1, after)
        .await
        .context("Failed to list users")?;
    let next_after = if users.len() > limit as usize {
        users.truncate(limit as usize);
        users.last().map(|u| u.id)
    } else {
        None
    };
    Ok(Json(UserPage { users, next_after }))
}

#[derive(Deserialize)]
struct UpdateUser {
    name: String,
    password: Option<RawPassword>,
}

#[tracing::instrument(skip_all)]
async fn update_user(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<UpdateUser>, JsonRejection>,
) -> Result<Json<User>, ApiError> {
    let id = user_id(id)?;
    let Json(body) = body?;
    let name = UserName::parse(&body.name).map_err(ApiError::Invalid)?;
    let hash = match body.password {
        Some(raw) => {
            let password = Password::parse(raw).map_err(ApiError::Invalid)?;
            Some(hash_password(&state, password).await?)
        }
        None => None,
    };
    let user = state
        .store
        .update_user(id, name, hash)
        .await
        .context("Failed to update the user")?;
    let user = user.ok_or(ApiError::UserNotFound(id))?;
    tracing::info!(user_id = %user.id, "user updated");
    Ok(Json(user))
}

#[tracing::instrument(skip_all)]
async fn delete_user(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = user_id(id)?;
    if !state
        .store
        .delete_user(id)
        .await
        .context("Failed to delete the user")?
    {
        return Err(ApiError::UserNotFound(id));
    }
    tracing::info!(user_id = %id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn user_id(id: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    match id {
        Ok(Path(id)) => Ok(id),
        Err(_) => Err(bad_query(
            "the user id in the path must be a UUID".to_owned(),
        )),
    }
}

fn bad_query(detail: String) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::BAD_REQUEST,
        detail,
    }
}

/// argon2 takes tens of milliseconds of CPU and 19 MiB: it runs on the
/// hashing pool, inside the request's span. A full pool answers 503.
async fn hash_password(state: &AppState, password: Password) -> Result<PasswordHash, ApiError> {
    match state.hasher.hash(password).await {
        Ok(hash) => Ok(hash),
        Err(HashError::Busy) => Err(ApiError::Overloaded),
        Err(e) => Err(ApiError::Internal(anyhow::Error::new(e))),
    }
}
