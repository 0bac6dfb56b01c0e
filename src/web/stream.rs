//! `GET /v1/stream`: the decisions and run changes the caller may see, live, as
//! Server-Sent Events.
//!
//! Each event is one position of the log, and its SSE `id` is that position:
//! `decision` (a start decided: any of the four outcomes) or `run` (a run's
//! state after it was claimed, released, asked to cancel, or ended). A client
//! that reconnects with `Last-Event-ID` gets every event after that position
//! once: nothing lost, nothing repeated. The stream follows the views the read
//! API reads (a hot standby's with `--read-database-url`) and is scoped like
//! it: the admin token sees every tenant, a user the tenants where it holds
//! `operations.view` — checked again for every batch, so a removed member sees
//! nothing more. The credential is checked again too each time the views move:
//! a stream opened with a token that is then revoked or rotated (or a console
//! session that is signed out or expires) ends before its next event.
//!
//! Each connection buffers at most [`STREAM_BUFFER`] events; a consumer that
//! falls that far behind is disconnected (it resumes with `Last-Event-ID`)
//! rather than allowed to grow the server's memory.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::future::BoxFuture;
use futures_util::Stream;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{DecisionJson, RunListItem};
use super::error::{ApiError, ErrorBody};
use super::extract::Caller;
use crate::app::{Dispatcher, TokenDigest};
use crate::read::queries::{self, Visibility};
use crate::web::state::AppState;

/// Events buffered per connection before a slow consumer is dropped.
pub const STREAM_BUFFER: usize = 256;

/// Log positions read per query while catching a stream up.
const WINDOW: i64 = 1000;

/// How often a stream on a hot standby looks for new positions.
const STANDBY_POLL: Duration = Duration::from_millis(200);

/// `GET /v1/stream`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// The caller's decisions and run changes, live (Server-Sent Events).
///
/// Events: `decision` (data: a decision, as in `/v1/tenants/{id}/decisions`)
/// and `run` (data: a run, as in `/v1/operations`); each event's `id` is its
/// log position. Without `Last-Event-ID` the stream starts at the views'
/// current position; with it, right after that position.
#[utoipa::path(get, path = "/v1/stream", tag = "monitoring",
    params(("Last-Event-ID" = Option<i64>, Header,
        description = "Resume after this log position (the `id` of the last event received).")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "`event: decision` or `event: run`, `id:` the log position, `data:` JSON."),
        (status = 400, body = ErrorBody, description = "a `Last-Event-ID` that is not a log position"),
        (status = 401, body = ErrorBody)))]
async fn stream(
    State(app): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // `Caller` accepted this header, so it holds a bearer token.
    let digest = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(super::extract::bearer_token)
        .map(TokenDigest::of)
        .ok_or_else(ApiError::unauthorized)?;
    let dispatcher = app.dispatcher.clone();
    let still_valid: StillValid = Box::new(move || {
        let dispatcher = dispatcher.clone();
        let digest = digest.clone();
        Box::pin(
            async move { matches!(dispatcher.authenticate_digest(&digest).await, Ok(Some(_))) },
        )
    });
    open(app, &principal, still_valid, &headers).await
}

/// Whether the credential a stream was opened with is still valid (checked
/// each time the views move, before anything more is sent). A failed check
/// counts as not valid: the client reconnects and is authenticated afresh.
pub(crate) type StillValid = Box<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// The stream for `principal` (the API's caller, or a console session),
/// resuming after the request's `Last-Event-ID` when it has one.
pub(crate) async fn open(
    app: AppState,
    principal: &crate::app::Principal,
    still_valid: StillValid,
    headers: &HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(value) => {
            let position = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "`Last-Event-ID` must be a log position (a non-negative integer)",
                    )
                })?;
            let head = crate::write::store::log::head(app.dispatcher.database()).await?;
            if position > head {
                return Err(ApiError::invalid(format!(
                    "`Last-Event-ID` {position} is ahead of the log (at {head})"
                )));
            }
            position
        }
        None => reached(&app.dispatcher).await?,
    };
    let (events, receiver) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(follow(
        app,
        principal.visibility(),
        still_valid,
        after,
        events,
    ));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The position the read side's views show now.
async fn reached(dispatcher: &Dispatcher) -> anyhow::Result<i64> {
    match dispatcher.standby() {
        Some(standby) => standby.position().await,
        None => Ok(dispatcher.catchup().positions().slowest()),
    }
}

/// Sends the stream's events after `after` as the views advance, until the
/// client goes away, falls [`STREAM_BUFFER`] events behind, its credential is
/// no longer valid, or the database fails (the client resumes with
/// `Last-Event-ID`).
async fn follow(
    app: AppState,
    visibility: Visibility,
    still_valid: StillValid,
    mut after: i64,
    events: mpsc::Sender<Event>,
) {
    let mut positions = app.dispatcher.catchup().subscribe();
    loop {
        let reached = tokio::select! {
            () = events.closed() => return,
            reached = advanced(&app.dispatcher, after, &mut positions) => reached,
        };
        let reached = match reached {
            Ok(reached) => reached,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "stream ended: the views cannot be read"
                );
                return;
            }
        };
        if !still_valid().await {
            tracing::info!(after, "stream ended: its credential is no longer valid");
            return;
        }
        while after < reached {
            let up_to = reached.min(after.saturating_add(WINDOW));
            let batch = match batch(&app.dispatcher, &visibility, after, up_to).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "stream ended: the views cannot be read"
                    );
                    return;
                }
            };
            for event in batch {
                match events.try_send(event) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::info!(after, "stream consumer too slow; disconnected");
                        return;
                    }
                }
            }
            after = up_to;
        }
    }
}

/// Waits until the read side's views show a position after `after`.
async fn advanced(
    dispatcher: &Dispatcher,
    after: i64,
    positions: &mut tokio::sync::watch::Receiver<crate::read::catchup::Positions>,
) -> anyhow::Result<i64> {
    loop {
        match dispatcher.standby() {
            Some(standby) => {
                let reached = standby.position().await?;
                if reached > after {
                    return Ok(reached);
                }
                tokio::time::sleep(STANDBY_POLL).await;
            }
            None => {
                let reached = positions.borrow_and_update().slowest();
                if reached > after {
                    return Ok(reached);
                }
                // The sender lives as long as the gate; if it ever went away,
                // nothing would advance again.
                if positions.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// The events at positions in `(after, up_to]` the caller may see, in log order.
async fn batch(
    dispatcher: &Dispatcher,
    visibility: &Visibility,
    after: i64,
    up_to: i64,
) -> anyhow::Result<Vec<Event>> {
    let views = dispatcher.reads();
    let decisions = queries::decisions_between(views, visibility, after, up_to).await?;
    let changes = queries::run_changes(views, after, up_to).await?;
    let ids: Vec<_> = changes.iter().map(|(_, id)| *id).collect();
    let runs = queries::visible_runs(views, visibility, &ids).await?;
    let mut events: Vec<(i64, Event)> = decisions
        .iter()
        .map(|decision| {
            let event = Event::default()
                .id(decision.position.to_string())
                .event("decision")
                .json_data(DecisionJson::from(decision))?;
            Ok((decision.position, event))
        })
        .collect::<Result<_, axum::Error>>()?;
    for (position, run_id) in changes {
        if let Some(run) = runs.iter().find(|run| run.run_id == run_id) {
            let event = Event::default()
                .id(position.to_string())
                .event("run")
                .json_data(RunListItem::from(run))?;
            events.push((position, event));
        }
    }
    events.sort_by_key(|(position, _)| *position);
    Ok(events.into_iter().map(|(_, event)| event).collect())
}
