//! The ingest service's error codes, mapped to gRPC status and HTTP status in this one
//! place so every transport answers the same thing for the same problem.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cxgap_domain::Violations;
use std::time::Duration;
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("invalid input: {violations}")]
    InvalidArgument { violations: Violations },
    #[error("{0}")]
    TooLarge(String),
    #[error("rate limit exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<cxgap_auth::AuthError> for IngestError {
    fn from(e: cxgap_auth::AuthError) -> Self {
        match e {
            cxgap_auth::AuthError::Unauthenticated(m) => IngestError::Unauthenticated(m),
            cxgap_auth::AuthError::Unavailable(m) => IngestError::Unavailable(m),
        }
    }
}

impl IngestError {
    pub fn invalid(violations: Violations) -> Self {
        IngestError::InvalidArgument { violations }
    }

    /// One bad field.
    pub fn bad_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut v = Violations::default();
        v.push(field, description);
        IngestError::InvalidArgument { violations: v }
    }

    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Unauthenticated(_) => "UNAUTHENTICATED",
            IngestError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            IngestError::TooLarge(_) | IngestError::RateLimited { .. } => "RESOURCE_EXHAUSTED",
            IngestError::Unavailable(_) => "UNAVAILABLE",
            IngestError::Internal(_) => "INTERNAL",
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            IngestError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            IngestError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// gRPC status with google.rpc details: BadRequest field violations, RetryInfo.
    pub fn to_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            IngestError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            IngestError::InvalidArgument { violations } => {
                let mut d = ErrorDetails::new();
                for v in violations.iter() {
                    d.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                tonic::Status::with_error_details(tonic::Code::InvalidArgument, message, d)
            }
            IngestError::TooLarge(_) => tonic::Status::resource_exhausted(message),
            IngestError::RateLimited { retry_after } => tonic::Status::with_error_details(
                tonic::Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(*retry_after)),
            ),
            IngestError::Unavailable(_) => tonic::Status::unavailable(message),
            IngestError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let violations: Vec<_> = match &self {
            IngestError::InvalidArgument { violations } => {
                violations.iter().map(|v| serde_json::json!({"field": v.field, "description": v.description})).collect()
            }
            _ => Vec::new(),
        };
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string(), "violations": violations }
        });
        let mut resp = (self.http_status(), Json(body)).into_response();
        if let IngestError::RateLimited { retry_after } = &self {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
        }
        resp
    }
}
