//! Health, readiness and metrics: the log head and each projection's position.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::web::error::ApiError;
use crate::web::extract::Admin;
use crate::web::state::AppState;

/// `/healthz` (no token), `/readyz` (the detail with the admin token only),
/// `/metrics` (admin token), outside `/v1`. Positions and lag are kept from
/// anyone else: the log head moves with every tenant's activity.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
}

/// Ready when the database answers. Without the admin token only
/// `{"ready": bool}`; with it, also the log head, each projection's position,
/// and with a read replica how far its views are behind. A standby that does
/// not answer leaves the instance ready: writes go on, reads answer 503.
async fn ready(State(app): State<AppState>, admin: Result<Admin, ApiError>) -> Response {
    let head = crate::write::store::log::head(app.dispatcher.database()).await;
    if admin.is_err() {
        let ready = head.is_ok();
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return (status, axum::Json(json!({ "ready": ready }))).into_response();
    }
    match head {
        Ok(head) => {
            let positions = app.dispatcher.catchup().positions();
            let mut body = json!({
                "ready": true,
                "status": "ready",
                "log_head": head,
                "projections": positions.projections,
                "lag": head - positions.slowest(),
            });
            if let Some(standby) = app.dispatcher.standby() {
                body["read_replica"] = match standby.status().await {
                    Ok(status) => json!({
                        "status": "ready",
                        "position": status.position,
                        "lag": (head - status.position).max(0),
                        "in_recovery": status.in_recovery,
                    }),
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "read replica unavailable");
                        json!({"status": "unavailable", "reason": "the read replica does not answer"})
                    }
                };
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "not ready");
            let body = json!({"ready": false, "status": "unavailable", "reason": "the database does not answer"});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

/// Prometheus text format; the admin token only.
async fn metrics(State(app): State<AppState>, _: Admin) -> Response {
    let positions = app.dispatcher.catchup().positions();
    let head = crate::write::store::log::head(app.dispatcher.database())
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
    if let Some(standby) = app.dispatcher.standby() {
        if let Ok(status) = standby.status().await {
            text.push_str(
                "# HELP dispatch_gate_read_replica_lag Events the read replica's views are behind the log head.\n\
                 # TYPE dispatch_gate_read_replica_lag gauge\n",
            );
            text.push_str(&format!(
                "dispatch_gate_read_replica_lag {}\n",
                (head - status.position).max(0)
            ));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
