//! The command executor: load, decide, commit, return what was committed
//! (and, through [`Executor::decide`], what the decision decided).
//!
//! cqrs-es's `CqrsFramework::execute` returns neither the events nor the new
//! state, and does not retry a conflict; a gate must answer "which run", so this
//! small executor is built from the framework's public pieces instead.
//!
//! It also seals every commit into the stream's tamper-evidence chain
//! ([`crate::chain`]): it loads the events (not just the state) so it knows the
//! stream head's hash, and adds the chain keys to the commit's metadata.
//!
//! Why one file of about 500 lines: load, decide, commit and the bounded
//! retry on a conflict are one concurrency argument (the warm cache is kept
//! honest by the optimistic append); split up, that argument would be scattered.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope};
use rand::Rng;
use tokio::sync::Mutex;

use crate::chain;
use crate::write::snapshot::{self, SnapshotPolicy, StoredSnapshot};
use crate::write::store::append::{append, AppendError, Guard, NewEvent};
use crate::write::store::{Database, EventStoreOf};

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
    /// A stream guarding the commit ([`Guard`]) had moved on: nothing was
    /// written, and the caller decides again on fresh state.
    #[error("a stream the decision read has moved on")]
    Stale,
    /// The store failed.
    #[error("event store failure")]
    Store(#[source] anyhow::Error),
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
    /// The log position of the last event (`None` when nothing was committed).
    pub position: Option<i64>,
}

/// A stream's state as this process last committed or loaded it.
#[derive(Clone)]
struct Warm<A> {
    state: A,
    sequence: usize,
    /// The chain hash of the event at `sequence`.
    head: String,
    /// The sequence of the latest snapshot written or read.
    snapshot_at: usize,
}

/// Streams kept warm per executor; beyond this an arbitrary one is dropped.
const WARM_CAPACITY: usize = 8192;

/// Runs commands against one aggregate type.
pub struct Executor<A: Aggregate> {
    store: EventStoreOf<A>,
    database: Database,
    /// Serialises commands per aggregate inside this process, so a hot
    /// connection queues here instead of becoming a storm of conflicting
    /// appends. Other processes are kept honest by the optimistic append.
    stripes: Arc<Vec<Mutex<()>>>,
    /// The state of recently used streams, so a command reads nothing before
    /// it decides. Kept honest by the optimistic append: a stream another
    /// process appended to conflicts, and is re-loaded and re-decided. A
    /// command takes and puts back its stream's entry under the stream's
    /// stripe lock; [`Executor::load`] only reads it, and adds a loaded
    /// stream only when no newer state is there.
    warm: std::sync::Mutex<HashMap<String, Warm<A>>>,
    /// Our own snapshots, for aggregates with long histories.
    snapshots: Option<SnapshotPolicy>,
}

/// Puts a stream's state in the warm cache, evicting one entry when full.
fn insert_warm<A>(cache: &mut HashMap<String, Warm<A>>, id: &str, warm: Warm<A>) {
    if cache.len() >= WARM_CAPACITY && !cache.contains_key(id) {
        if let Some(victim) = cache.keys().next().cloned() {
            cache.remove(&victim);
        }
    }
    cache.insert(id.to_owned(), warm);
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
            database: database.clone(),
            stripes: Arc::new((0..STRIPES).map(|_| Mutex::new(())).collect()),
            warm: std::sync::Mutex::new(HashMap::new()),
            snapshots: None,
        }
    }

    /// Also writes a snapshot every `policy.every` events and loads from it.
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = Some(policy);
        self
    }

    /// Drops a stream's warm state, as a restart would: the next command on
    /// it loads it from the store (the bench's cold decisions).
    pub fn forget(&self, id: &str) {
        self.warm.lock().expect("warm lock").remove(id);
    }

    fn stripe(&self, id: &str) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        &self.stripes[(hasher.finish() as usize) % STRIPES]
    }

    fn take_warm(&self, id: &str) -> Option<Warm<A>> {
        self.warm.lock().expect("warm lock").remove(id)
    }

    /// Keeps a loaded state warm unless a command kept a newer one meanwhile.
    fn keep_warm_if_newer(&self, id: &str, warm: Warm<A>) {
        let mut cache = self.warm.lock().expect("warm lock");
        if cache.get(id).is_none_or(|w| w.sequence < warm.sequence) {
            insert_warm(&mut cache, id, warm);
        }
    }

    fn keep_warm(&self, id: &str, warm: Warm<A>) {
        insert_warm(&mut self.warm.lock().expect("warm lock"), id, warm);
    }

    /// The aggregate's current state; a fresh stream gives the default. The
    /// warm state serves when the store confirms the stream has not moved
    /// since (one index lookup, so reads see other processes' writes);
    /// otherwise the stream is loaded and kept warm.
    pub async fn load(&self, id: &str) -> Result<A, CommandError<A::Error>> {
        Ok(self.load_at(id).await?.0)
    }

    /// [`Executor::load`], with the stream's sequence (0: no events).
    pub async fn load_at(&self, id: &str) -> Result<(A, usize), CommandError<A::Error>> {
        if let Some((state, sequence)) = self.cached(id) {
            if !self.stream_moved(id, sequence).await? {
                return Ok((state, sequence));
            }
        }
        let loaded = self.load_cold(id).await?;
        let at = (loaded.state.clone(), loaded.sequence);
        // A stream that does not exist is not kept: anyone could fill the
        // cache with ids that name nothing.
        if loaded.sequence > 0 {
            self.keep_warm_if_newer(id, loaded);
        }
        Ok(at)
    }

    /// The state and sequence this process last committed or loaded for the
    /// stream, without asking the store: possibly stale. A caller deciding
    /// on it guards its commit with them (see [`Executor::decide_guarded`]).
    pub fn cached(&self, id: &str) -> Option<(A, usize)> {
        let cache = self.warm.lock().expect("warm lock");
        cache.get(id).map(|w| (w.state.clone(), w.sequence))
    }

    /// Decides `command` on the current state and appends its events. On a
    /// conflicting append the state is re-loaded and the command re-decided.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_guarded(id, command, metadata, &[]).await
    }

    /// [`Executor::execute`] on state read from other streams too: see
    /// [`Executor::decide_guarded`].
    pub async fn execute_guarded(
        &self,
        id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
        guards: &[Guard],
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let decide = |mut aggregate: A| {
            let command = command.clone();
            async move {
                let sink = EventSink::default();
                let decided = aggregate.handle(command, &(), &sink).await;
                let events = sink.collect().await;
                decided.map(|()| (aggregate, events, ()))
            }
        };
        let (committed, ()) = self.commit_decision(id, metadata, decide, guards).await?;
        Ok(committed)
    }

    /// [`Executor::execute`] for a decision that also says what it decided:
    /// `decide` is a pure function of the state (the domain's, e.g.
    /// `aggregates::connection::record_start`) giving the events and its
    /// output, and the output of the decision that committed comes back with
    /// the commit. `decide` runs again on each conflicting append, hence `Fn`.
    pub async fn decide<T>(
        &self,
        id: &str,
        decide: impl Fn(&A) -> Result<(Vec<A::Event>, T), A::Error>,
        metadata: HashMap<String, String>,
    ) -> Result<(Committed<A>, T), CommandError<A::Error>> {
        self.decide_guarded(id, decide, metadata, &[]).await
    }

    /// [`Executor::decide`] on state read from other streams too (`guards`):
    /// the commit is written only if none of them moved past the sequence the
    /// decision saw, else [`CommandError::Stale`] and nothing is written. A
    /// refusal or a no-op writes nothing, so it proves nothing: it comes back
    /// as decided, and the caller checks its reads before answering with it.
    pub async fn decide_guarded<T>(
        &self,
        id: &str,
        decide: impl Fn(&A) -> Result<(Vec<A::Event>, T), A::Error>,
        metadata: HashMap<String, String>,
        guards: &[Guard],
    ) -> Result<(Committed<A>, T), CommandError<A::Error>> {
        let decide = |mut aggregate: A| {
            std::future::ready(decide(&aggregate).map(|(events, output)| {
                for event in &events {
                    aggregate.apply(event.clone());
                }
                (aggregate, events, output)
            }))
        };
        self.commit_decision(id, metadata, decide, guards).await
    }

    /// Load, decide, commit: the one commit path of both entry points.
    /// `decide` runs once per attempt on a copy of the current state, and
    /// gives the state after its events, the events, and the decision's
    /// output. (It takes the copy by value: a future borrowing the state would
    /// make every caller's future fail to be `Send` for all lifetimes.)
    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, id = %id))]
    async fn commit_decision<T, F>(
        &self,
        id: &str,
        metadata: HashMap<String, String>,
        decide: impl Fn(A) -> F,
        guards: &[Guard],
    ) -> Result<(Committed<A>, T), CommandError<A::Error>>
    where
        F: std::future::Future<Output = Result<(A, Vec<A::Event>, T), A::Error>>,
    {
        let _serialised = self.stripe(id).lock().await;
        let mut warm = self.take_warm(id);
        for attempt in 1..=MAX_ATTEMPTS {
            let (current, from_cache) = match warm.take() {
                Some(current) => (current, true),
                None => (self.load_cold(id).await?, false),
            };
            let decided = decide(current.state.clone()).await;
            let nothing = decided
                .as_ref()
                .map_or(true, |(_, events, _)| events.is_empty());
            // A refusal or a no-op appends nothing, so no conflict would catch
            // a stale cached state: ask the store whether another process moved
            // the stream on, and if so decide again on the fresh state.
            if nothing && from_cache && self.stream_moved(id, current.sequence).await? {
                continue;
            }
            let (aggregate, events, output) = match decided {
                Ok(decided) => decided,
                Err(refusal) => {
                    self.keep_warm(id, current);
                    return Err(CommandError::Rejected(refusal));
                }
            };
            if events.is_empty() {
                let sequence = current.sequence;
                self.keep_warm(
                    id,
                    Warm {
                        state: aggregate.clone(),
                        ..current
                    },
                );
                let committed = Committed {
                    events: vec![],
                    state: aggregate,
                    sequence,
                    position: None,
                };
                return Ok((committed, output));
            }
            let (serialized, sealed) = seal::<A>(
                id,
                current.sequence,
                &events,
                metadata.clone(),
                &current.head,
            )?;
            let head = chain::sealed_head(&sealed).to_owned();
            let stored_metadata = serde_json::to_value(&sealed).expect("a map of strings");
            let appended = append(
                &self.database,
                A::TYPE,
                id,
                current.sequence,
                &serialized,
                &stored_metadata,
                guards,
            )
            .await;
            match appended {
                Ok(positions) => {
                    // What cqrs-es's commit would have handed back: the events
                    // as decided, each with the commit's metadata.
                    let events: Vec<EventEnvelope<A>> = events
                        .into_iter()
                        .enumerate()
                        .map(|(i, payload)| EventEnvelope {
                            aggregate_id: id.to_owned(),
                            sequence: current.sequence + 1 + i,
                            payload,
                            metadata: sealed.clone(),
                        })
                        .collect();
                    let sequence = current.sequence + events.len();
                    let committed = Warm {
                        state: aggregate.clone(),
                        sequence,
                        head,
                        snapshot_at: current.snapshot_at,
                    };
                    let committed = self.maybe_snapshot(id, committed).await;
                    self.keep_warm(id, committed);
                    let committed = Committed {
                        events,
                        state: aggregate,
                        sequence,
                        position: positions.last().copied(),
                    };
                    return Ok((committed, output));
                }
                Err(AppendError::Conflict) => {
                    tracing::debug!(attempt, "conflicting append; re-loading and re-deciding");
                    let jitter = rand::rng().random_range(0..=(1u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(AppendError::Stale) => {
                    // The stream itself did not move: keep its state warm.
                    self.keep_warm(id, current);
                    return Err(CommandError::Stale);
                }
                Err(AppendError::Store(error)) => return Err(CommandError::Store(error)),
            }
        }
        Err(CommandError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn stream_moved(
        &self,
        id: &str,
        sequence: usize,
    ) -> Result<bool, CommandError<A::Error>> {
        let last = snapshot::last_sequence(&self.database, A::TYPE, id)
            .await
            .map_err(CommandError::Store)?;
        Ok(last != sequence)
    }

    /// Writes a snapshot once `policy.every` events followed the last one (one
    /// upsert every `every` events). A failed write only costs a longer replay.
    async fn maybe_snapshot(&self, id: &str, mut warm: Warm<A>) -> Warm<A> {
        let Some(policy) = self.snapshots else {
            return warm;
        };
        if warm.sequence < warm.snapshot_at + policy.every {
            return warm;
        }
        match serde_json::to_string(&warm.state) {
            Ok(state) => {
                let snapshot = StoredSnapshot {
                    sequence: warm.sequence,
                    version: policy.version.to_owned(),
                    head: warm.head.clone(),
                    state,
                };
                match snapshot::write(&self.database, A::TYPE, id, &snapshot).await {
                    Ok(()) => warm.snapshot_at = warm.sequence,
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "snapshot not written")
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "state does not serialize; no snapshot"),
        }
        warm
    }
}

impl<A> Executor<A>
where
    A: Aggregate<Services = ()> + Clone,
{
    /// Loads a stream from the store: from its snapshot when one fits, else by
    /// folding every event. Also reads the stream head's chain hash, taken as
    /// stored: checking it is `audit verify`'s job, not the write path's.
    async fn load_cold(&self, id: &str) -> Result<Warm<A>, CommandError<A::Error>> {
        if let Some(policy) = self.snapshots {
            match self.load_from_snapshot(id, policy).await {
                Ok(Some(warm)) => return Ok(warm),
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(
                        stream = %id,
                        reason = format!("{reason:#}"),
                        "snapshot unusable; replaying the stream"
                    );
                    if let Err(error) = snapshot::delete(&self.database, A::TYPE, id).await {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "unusable snapshot not removed"
                        );
                    }
                }
            }
        }
        let events = self.store.load_events(id).await.map_err(store_error)?;
        let head = events
            .last()
            .map_or_else(|| chain::GENESIS.to_owned(), head_of);
        let sequence = events.last().map_or(0, |e| e.sequence);
        let mut state = A::default();
        for event in events {
            state.apply(event.payload);
        }
        Ok(Warm {
            state,
            sequence,
            head,
            snapshot_at: 0,
        })
    }

    /// The state from the stream's snapshot and the events after it. `Ok(None)`
    /// when there is no snapshot; `Err` says why one could not be used.
    async fn load_from_snapshot(
        &self,
        id: &str,
        policy: SnapshotPolicy,
    ) -> anyhow::Result<Option<Warm<A>>> {
        let stored = snapshot::read(&self.database, A::TYPE, id).await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        if stored.version != policy.version {
            anyhow::bail!("version `{}`, not `{}`", stored.version, policy.version);
        }
        let mut state: A = serde_json::from_str(&stored.state).context("state does not parse")?;
        let events = snapshot::events_from(&self.database, A::TYPE, id, stored.sequence).await?;
        let mut events = events.into_iter();
        match events.next() {
            Some(at) if at.sequence == stored.sequence => {
                if chain_head(at.sequence, &at.metadata) != stored.head {
                    anyhow::bail!(
                        "its head is not the chain hash of event {}",
                        stored.sequence
                    );
                }
            }
            _ => anyhow::bail!("ahead of its stream (no event {})", stored.sequence),
        }
        let mut warm_head = stored.head.clone();
        let mut sequence = stored.sequence;
        let after = events.len();
        for (i, serialized) in events.enumerate() {
            let serialized = aggregates::upcast::upcast(serialized);
            if serialized.sequence != sequence + 1 {
                anyhow::bail!("gap after sequence {sequence}");
            }
            sequence = serialized.sequence;
            if i + 1 == after {
                warm_head = chain_head(sequence, &serialized.metadata);
            }
            let envelope = EventEnvelope::<A>::try_from(serialized)
                .context("an event after it does not decode")?;
            state.apply(envelope.payload);
        }
        Ok(Some(Warm {
            state,
            sequence,
            head: warm_head,
            snapshot_at: stored.sequence,
        }))
    }
}

/// The chain hash of a stored event, from its metadata. A head without a
/// readable chain was written outside this executor; chain on from genesis and
/// let `audit verify` name it.
fn head_of<A: Aggregate>(event: &EventEnvelope<A>) -> String {
    let metadata = serde_json::to_value(&event.metadata).expect("a map of strings");
    chain_head(event.sequence, &metadata)
}

/// [`head_of`] from the stored metadata.
fn chain_head(sequence: usize, metadata: &serde_json::Value) -> String {
    match chain::link(sequence as u64, metadata) {
        Ok(link) => link.hash,
        Err(error) => {
            tracing::warn!(%error, sequence, "stream head has no readable chain hash");
            chain::GENESIS.to_owned()
        }
    }
}

/// A commit ready to append: its events serialized once, and the metadata
/// carrying their chain hashes.
type Sealed = (Vec<NewEvent>, HashMap<String, String>);

/// The commit's metadata with the chain keys added for `events`, which follow
/// the event at `loaded_at` whose hash is `head`.
///
/// cqrs-es copies one metadata map onto every event of a commit, so a commit
/// records the hash of each of its events as a list, and each event finds its
/// own by its sequence (see [`crate::chain`]): every event of a multi-event
/// commit is hashed and checked on its own, none shares another's hash.
///
/// Each event is serialized once, here: the chain hashes the payload and the
/// append stores it.
fn seal<A: Aggregate>(
    id: &str,
    loaded_at: usize,
    events: &[A::Event],
    metadata: HashMap<String, String>,
    head: &str,
) -> Result<Sealed, CommandError<A::Error>> {
    let serialized = events
        .iter()
        .map(|event| {
            let payload = serde_json::to_value(event).map_err(|e| {
                CommandError::Store(anyhow::Error::new(e).context("serializing an event"))
            })?;
            Ok((event.event_type(), event.event_version(), payload))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sealed = chain::seal(
        A::TYPE,
        id,
        loaded_at as u64 + 1,
        &serialized,
        metadata,
        head,
    );
    let serialized = serialized
        .into_iter()
        .map(|(event_type, event_version, payload)| NewEvent {
            event_type,
            event_version,
            payload,
        })
        .collect();
    Ok((serialized, sealed))
}

fn store_error<E: std::error::Error>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict { attempts: 1 },
        AggregateError::DatabaseConnectionError(cause)
        | AggregateError::DeserializationError(cause)
        | AggregateError::UnexpectedError(cause) => CommandError::Store(
            // Unboxed, so the cause chain shows the sqlx error itself (a boxed
            // error's own `source()` skips it).
            match cause.downcast::<sqlx::Error>() {
                Ok(error) => anyhow::Error::new(*error),
                Err(other) => anyhow::Error::from_boxed(other),
            },
        ),
    }
}
