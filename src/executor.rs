//! The command executor: load, decide, commit, return what was committed.
//!
//! cqrs-es's `CqrsFramework::execute` returns neither the events nor the new
//! state, and does not retry a conflict; a gate must answer "which run", so this
//! small executor is built from the framework's public pieces instead.
//!
//! It also seals every commit into the stream's tamper-evidence chain
//! ([`crate::chain`]): it loads the events (not just the state) so it knows the
//! stream head's hash, and adds the chain keys to the commit's metadata.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope};
use rand::Rng;
use tokio::sync::Mutex;

use crate::chain;
use crate::store::{Database, EventStoreOf, Loaded};

/// How many times a conflicting append is re-decided before giving up.
const MAX_ATTEMPTS: u32 = 12;
/// Lock stripes: commands to aggregates hashing to one stripe run one at a time.
const STRIPES: usize = 256;

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate said no.
    #[error(transparent)]
    Rejected(E),
    /// Other processes kept appending to the stream; every attempt conflicted.
    #[error("gave up after {attempts} conflicting attempts")]
    Conflict {
        /// Attempts made.
        attempts: u32,
    },
    /// The store failed.
    #[error("event store failure: {0}")]
    Store(String),
}

/// What a successful command committed, and the state after it.
#[derive(Debug)]
pub struct Committed<A: Aggregate> {
    /// The committed events (empty when the command changed nothing).
    pub events: Vec<EventEnvelope<A>>,
    /// The aggregate after the events.
    pub state: A,
    /// The stream's sequence after the events.
    pub sequence: usize,
}

/// Runs commands against one aggregate type.
pub struct Executor<A: Aggregate> {
    store: EventStoreOf<A>,
    /// Serialises commands per aggregate inside this process, so a hot
    /// connection queues here instead of becoming a storm of conflicting
    /// appends. Other processes are kept honest by the optimistic append.
    stripes: Arc<Vec<Mutex<()>>>,
}

impl<A> Executor<A>
where
    A: Aggregate<Services = ()> + Clone,
    A::Command: Clone,
{
    /// An executor on the given database.
    pub fn new(database: &Database) -> Self {
        Self {
            store: database.event_store(),
            stripes: Arc::new((0..STRIPES).map(|_| Mutex::new(())).collect()),
        }
    }

    fn stripe(&self, id: &str) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        &self.stripes[(hasher.finish() as usize) % STRIPES]
    }

    /// Rebuilds the aggregate's current state; a fresh stream gives the default.
    pub async fn load(&self, id: &str) -> Result<A, CommandError<A::Error>> {
        Ok(self.store.load(id).await.map_err(store_error)?.aggregate)
    }

    /// Reads the stream's events.
    pub async fn events(&self, id: &str) -> Result<Vec<EventEnvelope<A>>, CommandError<A::Error>> {
        self.store.load_events(id).await.map_err(store_error)
    }

    /// Decides `command` on the current state and appends its events. On a
    /// conflicting append the state is re-loaded and the command re-decided.
    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, id = %id))]
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let _serialised = self.stripe(id).lock().await;
        for attempt in 1..=MAX_ATTEMPTS {
            let (mut context, head) = self.load_with_head(id).await?;
            let sink = EventSink::default();
            context
                .aggregate
                .handle(command.clone(), &(), &sink)
                .await
                .map_err(CommandError::Rejected)?;
            let events = sink.collect().await;
            let state = context.aggregate.clone();
            let loaded_at = context.current_sequence;
            if events.is_empty() {
                return Ok(Committed {
                    events: vec![],
                    state,
                    sequence: loaded_at,
                });
            }
            let sealed = seal::<A>(id, loaded_at, &events, metadata.clone(), &head)?;
            match self.store.commit(events, context, sealed).await {
                Ok(events) => {
                    let sequence = events.last().map_or(loaded_at, |e| e.sequence);
                    return Ok(Committed {
                        events,
                        state,
                        sequence,
                    });
                }
                Err(AggregateError::AggregateConflict) => {
                    tracing::debug!(attempt, "conflicting append; re-deciding");
                    let jitter = rand::rng().random_range(0..=(1u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(other) => return Err(store_error(other)),
            }
        }
        Err(CommandError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }
}

impl<A> Executor<A>
where
    A: Aggregate<Services = ()> + Clone,
{
    /// Folds the stream's events into the current state, and reads the stream
    /// head's chain hash from the last event's metadata. The hash is taken as
    /// stored: checking it is `audit verify`'s job, not the write path's.
    async fn load_with_head(
        &self,
        id: &str,
    ) -> Result<(Loaded<A>, String), CommandError<A::Error>> {
        let events = self.store.load_events(id).await.map_err(store_error)?;
        let head = match events.last() {
            None => chain::GENESIS.to_owned(),
            Some(last) => {
                let metadata = serde_json::to_value(&last.metadata).expect("a map of strings");
                match chain::link(last.sequence as u64, &metadata) {
                    Ok(link) => link.hash,
                    Err(error) => {
                        // A head without a readable chain was written outside this
                        // executor; chain on from genesis and let `audit verify` name it.
                        tracing::warn!(%error, sequence = last.sequence, "stream head has no readable chain hash");
                        chain::GENESIS.to_owned()
                    }
                }
            }
        };
        let current_sequence = events.last().map_or(0, |e| e.sequence);
        let mut aggregate = A::default();
        for event in events {
            aggregate.apply(event.payload);
        }
        let context = EventStoreAggregateContext {
            aggregate_id: id.to_owned(),
            aggregate,
            current_sequence,
            current_snapshot: None,
        };
        Ok((context, head))
    }
}

/// The commit's metadata with the chain keys added for `events`, which follow
/// the event at `loaded_at` whose hash is `head`.
///
/// cqrs-es copies one metadata map onto every event of a commit, so a commit
/// records the hash of each of its events as a list, and each event finds its
/// own by its sequence (see [`crate::chain`]): every event of a multi-event
/// commit is hashed and checked on its own, none shares another's hash.
fn seal<A: Aggregate>(
    id: &str,
    loaded_at: usize,
    events: &[A::Event],
    metadata: HashMap<String, String>,
    head: &str,
) -> Result<HashMap<String, String>, CommandError<A::Error>> {
    let serialized = events
        .iter()
        .map(|event| {
            let payload = serde_json::to_value(event)
                .map_err(|e| CommandError::Store(format!("serializing an event: {e}")))?;
            Ok((event.event_type(), event.event_version(), payload))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(chain::seal(
        A::TYPE,
        id,
        loaded_at as u64 + 1,
        &serialized,
        metadata,
        head,
    ))
}

fn store_error<E: std::error::Error>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict { attempts: 1 },
        other => CommandError::Store(other.to_string()),
    }
}
