//! Every API failure as a status and a JSON body: `{"error": kind, "message": text}`.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::registry::{service::RegistryError, store::StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable.
    pub error: String,
    /// For people: says what was wrong.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub retry_after_s: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after_s: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.kind.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as R;
        let message = e.to_string();
        let (status, kind) = match &e {
            R::Number(_) => (StatusCode::BAD_REQUEST, "bad_number"),
            R::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            R::Store(StoreError::NotFound(_)) => (StatusCode::NOT_FOUND, "unknown_number"),
            R::Store(StoreError::AlreadyRegistered { .. }) => {
                (StatusCode::CONFLICT, "already_registered")
            }
            R::Store(StoreError::InvalidTransition { .. }) => {
                (StatusCode::CONFLICT, "invalid_state")
            }
            R::Store(_) | R::Random(_) | R::Worker(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            R::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            R::NoChallenge(_) => (StatusCode::CONFLICT, "no_verification"),
            R::NotACodeMethod(..) => (StatusCode::CONFLICT, "wrong_method"),
            R::CodeExpired(_) => (StatusCode::GONE, "code_expired"),
            R::WrongCode { .. } => (StatusCode::FORBIDDEN, "wrong_code"),
            R::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            R::Revoked(_) => (StatusCode::CONFLICT, "revoked"),
            R::Delivery(_) => (StatusCode::BAD_GATEWAY, "delivery_failed"),
            R::NoMissedCallNumber => (StatusCode::SERVICE_UNAVAILABLE, "not_configured"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %message, "API request failed");
        }
        let mut error = ApiError::new(status, kind, message);
        if let R::RateLimited { retry_after_s, .. } = e {
            error.retry_after_s = Some(retry_after_s);
        }
        error
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // axum's own statuses: 400 syntax, 422 wrong fields, 415 not JSON, 413 too large.
        ApiError::new(r.status(), "bad_json", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())
    }
}
