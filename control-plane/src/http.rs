//! The admin API as JSON over HTTP (`POST /v1/admin/<method>`), plus `/metrics` and
//! `/healthz`, on the same port as gRPC.

use crate::admin::{Admin, AdminError};
use crate::auth::{Credentials, bearer};
use crate::metrics::Metrics;
use crate::tls::PeerCertificate;
use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Largest accepted JSON body; policies are small documents.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Clone)]
struct HttpState {
    admin: Arc<Admin>,
    metrics: Arc<Metrics>,
}

/// The HTTP routes.
pub fn router(admin: Arc<Admin>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/v1/admin/{method}", post(admin_call))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(HttpState { admin, metrics })
}

async fn metrics_text(State(s): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode()).into_response()
}

fn error_response(status: StatusCode, message: String, errors: serde_json::Value) -> Response {
    (status, axum::Json(serde_json::json!({ "error": { "message": message, "errors": errors } }))).into_response()
}

fn admin_error(e: AdminError) -> Response {
    let msg = e.to_string();
    match e {
        AdminError::Unauthenticated => error_response(StatusCode::UNAUTHORIZED, msg, serde_json::json!([])),
        AdminError::Forbidden { .. } => error_response(StatusCode::FORBIDDEN, msg, serde_json::json!([])),
        AdminError::Invalid { errors, .. } => {
            error_response(StatusCode::UNPROCESSABLE_ENTITY, msg, serde_json::to_value(errors).unwrap_or_default())
        }
        AdminError::NotFound(_) => error_response(StatusCode::NOT_FOUND, msg, serde_json::json!([])),
        AdminError::Conflict(_) => error_response(StatusCode::CONFLICT, msg, serde_json::json!([])),
        AdminError::Internal(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, msg, serde_json::json!([])),
    }
}

// The error is the finished HTTP response; boxing it would only move the allocation.
#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        error_response(StatusCode::BAD_REQUEST, format!("request body is not valid JSON for this method: {e}"), serde_json::json!([]))
    })
}

fn reply<T: Serialize>(r: Result<T, AdminError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => admin_error(e),
    }
}

async fn admin_call(
    State(s): State<HttpState>,
    Path(method): Path<String>,
    cert: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).map(str::to_string);
    let t = Credentials { token: token.as_deref(), cert: cert.as_ref().map(|Extension(c)| c) };
    let a = &s.admin;
    macro_rules! dispatch {
        ($($name:literal => $m:ident),* $(,)?) => {
            match method.as_str() {
                $($name => match parse(&body) { Ok(req) => reply(a.$m(t, req).await), Err(resp) => resp },)*
                other => error_response(StatusCode::NOT_FOUND, format!("unknown admin method `{other}`"), serde_json::json!([])),
            }
        };
    }
    dispatch! {
        "apply" => apply,
        "validate" => validate,
        "diff" => diff,
        "history" => history,
        "rollback" => rollback,
        "status" => status,
        "create_key" => create_key,
        "revoke_key" => revoke_key,
        "list_keys" => list_keys,
        "admin_log" => admin_log,
        "register_node_key" => register_node_key,
        "revoke_node_key" => revoke_node_key,
        "list_node_keys" => list_node_keys,
        "audit_nodes" => audit_nodes,
        "audit_export" => audit_export,
        "audit_verify" => audit_verify,
        "audit_prove" => audit_prove,
        "audit_consistency" => audit_consistency,
        "audit_query" => audit_query,
        "usage" => usage,
        "audit_retain" => audit_retain,
    }
}
