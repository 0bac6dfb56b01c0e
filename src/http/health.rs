//! Health, readiness and metrics: the log head and each projection's position.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::AppState;
use crate::catchup;

/// `/healthz`, `/readyz`, `/metrics` (outside `/v1`, no token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
}

/// Ready when the database answers; reports projection lag either way.
async fn ready(State(app): State<AppState>) -> Response {
    match catchup::head(app.gate.database()).await {
        Ok(head) => {
            let positions = app.gate.catchup().positions();
            let body = json!({
                "status": "ready",
                "log_head": head,
                "projections": positions.projections,
                "lag": head - positions.slowest(),
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "not ready");
            let body = json!({"status": "unavailable", "reason": "the database does not answer"});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

/// Prometheus text format.
async fn metrics(State(app): State<AppState>) -> Response {
    let positions = app.gate.catchup().positions();
    let head = catchup::head(app.gate.database())
        .await
        .unwrap_or(positions.head);
    let mut text = String::from(
        "# HELP dispatch_gate_log_head Highest numbered event in the log.\n\
         # TYPE dispatch_gate_log_head gauge\n",
    );
    text.push_str(&format!("dispatch_gate_log_head {head}\n"));
    text.push_str(
        "# HELP dispatch_gate_projection_position Last event applied by a projection.\n\
         # TYPE dispatch_gate_projection_position gauge\n",
    );
    for (name, position) in &positions.projections {
        text.push_str(&format!(
            "dispatch_gate_projection_position{{projection=\"{name}\"}} {position}\n"
        ));
    }
    text.push_str(
        "# HELP dispatch_gate_projection_lag Events not yet applied by the slowest projection.\n\
         # TYPE dispatch_gate_projection_lag gauge\n",
    );
    text.push_str(&format!(
        "dispatch_gate_projection_lag {}\n",
        head - positions.slowest()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
