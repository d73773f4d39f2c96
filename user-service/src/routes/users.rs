//! The users API: create, read, list, update and delete. Every change is
//! committed together with its CloudEvent (see `store`), and none of these
//! handlers waits for the event to be delivered.

use super::AppState;
use crate::domain::{Password, PasswordHash, RawPassword, UserName};
use crate::error::ApiError;
use crate::hasher::HashError;
use crate::store::User;
use anyhow::Context;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::json_body::{JsonBody, JsonRejection};
use service_kit::problem::Problem;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The routes, each documented in the OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(list_users))
        .routes(routes!(get_user, update_user, delete_user))
}

/// The seed's request body.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "a JSON object with `name` and `password`")]
struct CreateUser {
    /// 1 to 256 characters, no control characters; surrounding whitespace
    /// is removed.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "Ozzy Osbourne"
    )]
    name: String,
    /// 5 to 1024 characters. Hashed with argon2id; never stored, logged or
    /// sent in clear.
    #[schema(value_type = String, format = Password, write_only, min_length = 5, max_length = 1024, example = "12345")]
    password: RawPassword,
}

/// The seed's response shape for a new user.
#[derive(Serialize, ToSchema)]
struct Created {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

/// Creates a user. The `user.storeUser` event is committed with it and
/// delivered to the audit service in the background.
#[utoipa::path(
    post,
    path = "/v1/user",
    tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = Created,
            headers(("location" = String, description = "The new user's URL"))),
        (status = 400, description = "The body is not JSON, or a field is missing or invalid", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords are being hashed; retry after the Retry-After seconds", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = String, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_user(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
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

/// One user, without the password.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No user with that id", body = Problem, content_type = "application/problem+json"),
    )
)]
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

/// Read as text and checked by hand, so a bad value is a 400 naming it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Users per page, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `next_after` of the previous page.
    #[param(value_type = Option<Uuid>)]
    after: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct UserPage {
    users: Vec<User>,
    /// Pass as `after` to get the next page; null on the last one.
    next_after: Option<Uuid>,
}

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// Users in creation order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    params(ListParams),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "`limit` or `after` is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(expecting = "a JSON object with `name` and, optionally, `password`")]
struct UpdateUser {
    /// The new name (or the same one), as in `POST /v1/user`.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "Ozzy Osbourne"
    )]
    name: String,
    /// A new password (5 to 1024 characters); leave it out to keep the
    /// current one.
    #[schema(value_type = Option<String>, format = Password, write_only, min_length = 5, max_length = 1024)]
    password: Option<RawPassword>,
}

/// Renames a user and, with `password`, sets a new password. A change emits
/// `user.updateUser`; an update that changes nothing (the same name, no
/// password) emits no event and leaves `updated_at` as it was.
#[utoipa::path(
    put,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The user as it is now", body = User),
        (status = 400, description = "The id is not a UUID, or the body is not JSON or a field is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No user with that id", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords are being hashed; retry after the Retry-After seconds", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = String, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all)]
async fn update_user(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
    body: Result<JsonBody<UpdateUser>, JsonRejection>,
) -> Result<Json<User>, ApiError> {
    let id = user_id(id)?;
    let JsonBody(body) = body?;
    let name = UserName::parse(&body.name).map_err(ApiError::Invalid)?;
    let hash = match body.password {
        Some(raw) => {
            let password = Password::parse(raw).map_err(ApiError::Invalid)?;
            Some(hash_password(&state, password).await?)
        }
        None => None,
    };
    let updated = state
        .store
        .update_user(id, name, hash)
        .await
        .context("Failed to update the user")?
        .ok_or(ApiError::UserNotFound(id))?;
    if updated.changed {
        tracing::info!(user_id = %id, "user updated");
    } else {
        tracing::info!(user_id = %id, "user unchanged; no event emitted");
    }
    Ok(Json(updated.user))
}

/// Deletes a user; `user.deleteUser` is emitted.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No user with that id", body = Problem, content_type = "application/problem+json"),
    )
)]
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

/// argon2 takes tens of milliseconds of CPU and 12 MiB: it runs on the
/// hashing pool, inside the request's span. A full pool answers 503.
async fn hash_password(state: &AppState, password: Password) -> Result<PasswordHash, ApiError> {
    match state.hasher.hash(password).await {
        Ok(hash) => Ok(hash),
        Err(HashError::Busy) => Err(ApiError::Overloaded),
        Err(e) => Err(ApiError::Internal(anyhow::Error::new(e))),
    }
}
