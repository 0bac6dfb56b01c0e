//! Re-deriving recorded decisions: the pure half of the audit.
//!
//! [`Replay`] folds a stream's events in order and, at every decision event,
//! runs the aggregate's own decision on the state before it and compares the
//! result with what was recorded. Every other event is checked the same way:
//! the command that writes it, on the state before it, must write it. A
//! command that writes several events (a run's end and what it taught the
//! gate; a secret and the credentials it makes valid) writes them in one
//! commit, so the events after the first must follow it exactly. No IO: the
//! binary reads the rows, this says whether they add up.

use std::collections::VecDeque;

use cqrs_es::Aggregate;

use crate::actor::{Actor, Timestamp};
use crate::catalog::Action;
use crate::catalog::{OperationKind, ReasonCode, Scope};
use crate::connection::{
    admit_start, decide, decide_start, ConnectionChoice, ConnectionCommand, ConnectionError,
    ConnectionEvent, Evidence, FailureCause, ProviderConnection, Rejection, RunEnd, Verdict,
};
use crate::ids::{ConnectionId, DecisionId, TenantId, UserId};
use crate::registry::{Record, Registered};
use crate::tenant::{
    self, Membership, Tenant, TenantCommand, TenantError, TenantEvent, TenantEvidence,
};

/// One recorded start decision, whichever stream it was recorded on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The decision's id.
    pub decision_id: DecisionId,
    /// When the operator clicked.
    pub at: Timestamp,
    /// Who clicked.
    pub actor: Actor,
    /// The tenant; `None` only for a blocked start on a tenant stream that was never created.
    pub tenant_id: Option<TenantId>,
    /// The operation asked for.
    pub operation: OperationKind,
    /// Its dedupe scope, where known.
    pub scope: Option<Scope>,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// What was decided.
    pub verdict: Verdict,
    /// The connection decided on; `None` when no connection was resolved.
    pub connection_id: Option<ConnectionId>,
    /// How the connection was resolved.
    pub resolved_via: Option<ConnectionChoice>,
    /// What the gate saw on the connection, as recorded.
    pub evidence: Option<Evidence>,
    /// What the tenant looked like, for a start that found no connection.
    pub tenant_evidence: Option<TenantEvidence>,
}

/// Why a recorded decision does not follow from the history before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Divergence {
    /// The connection would have refused the start outright.
    #[error("the start could not have been recorded on this connection: {0}")]
    ConnectionRefused(ConnectionError),
    /// The tenant would have refused to record the blocked start.
    #[error("the blocked start could not have been recorded on this tenant: {0}")]
    TenantRefused(TenantError),
    /// The gate decides differently on the state before the decision.
    #[error("recorded {} but the gate re-derives {}", describe(.recorded), describe(.rederived))]
    Verdict {
        /// As recorded.
        recorded: Verdict,
        /// As re-derived.
        rederived: Verdict,
    },
    /// The recorded evidence is not the connection's state before the decision.
    #[error("the recorded evidence is not the connection's state before the decision")]
    Evidence {
        /// As recorded.
        recorded: Box<Evidence>,
        /// The state before the decision.
        actual: Box<Evidence>,
    },
    /// The recorded tenant evidence is not the tenant's state before the decision.
    #[error("the recorded evidence is not the tenant's state before the decision")]
    TenantEvidence {
        /// As recorded.
        recorded: TenantEvidence,
        /// The state before the decision.
        actual: TenantEvidence,
    },
}

fn describe(verdict: &Verdict) -> String {
    match (verdict.reason(), verdict.run_id()) {
        (Some(reason), Some(run)) => format!("{} ({reason}, run {run})", verdict.outcome()),
        (Some(reason), None) => format!("{} ({reason})", verdict.outcome()),
        (None, Some(run)) => format!("{} (run {run})", verdict.outcome()),
        (None, None) => verdict.outcome().to_string(),
    }
}

/// A recorded decision checked against the history before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The decision event's sequence in its stream.
    pub sequence: usize,
    /// The decision as recorded.
    pub decision: Decision,
    /// The verdict the aggregate's decision gives on the state before;
    /// `None` when the start would have been refused outright.
    pub rederived: Option<Verdict>,
    /// Why it differs, if it does.
    pub divergence: Option<Divergence>,
}

impl Check {
    /// Whether the re-derived decision is identical to the recorded one.
    pub fn is_identical(&self) -> bool {
        self.divergence.is_none()
    }
}

/// An aggregate whose decision events can be re-derived from their prefix.
pub trait Audited: Aggregate + Default {
    /// If `event` (at `sequence`) records a decision, re-derives it on `self`,
    /// the state before it.
    fn check(&self, sequence: usize, event: &Self::Event) -> Option<Check>;

    /// Whether the aggregate's own `decide`, on `self` (the state before it),
    /// could have written `event` first: `Ok` with the events the same
    /// decision writes after it (which must follow it), or why not. `Ok(vec![])`
    /// too when this aggregate's other events are not re-derived.
    fn legality(&self, _event: &Self::Event) -> Result<Vec<Self::Event>, Illegal> {
        Ok(vec![])
    }
}

/// Why a recorded event could not have been written by the domain's own decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Illegal {
    /// The aggregate refuses the command that would have written it.
    #[error("the connection could not have recorded it: {0}")]
    Refused(ConnectionError),
    /// The command that would have written it writes something else.
    #[error("the connection's decision on the state before it records something else")]
    Differs,
    /// What a run taught the gate, where no run's end taught it: such an event
    /// is recorded only right after the end of the run it cites, as part of
    /// that end's commit, and exactly as that end implies.
    #[error("it records what a run showed about the connection, but does not follow that run's end as its completion records it")]
    Unprompted,
}

/// The command whose decision records `event` (a decision event has none: it
/// is re-derived as a decision).
fn command_for(state: &ProviderConnection, event: &ConnectionEvent) -> Option<ConnectionCommand> {
    use ConnectionCommand as C;
    use ConnectionEvent as E;
    Some(match event.clone() {
        E::ProviderConnectionCreated {
            connection_id,
            tenant_id,
            display_name,
            provider,
            actor,
            at,
        } => C::Create {
            connection_id,
            tenant_id,
            display_name,
            provider,
            actor,
            at,
        },
        E::ConsentGranted { actor, at } => C::SetConsent {
            granted: true,
            actor,
            at,
        },
        E::ConsentRevoked { actor, at } => C::SetConsent {
            granted: false,
            actor,
            at,
        },
        E::CredentialsStatusChanged { status, actor, at } => {
            C::SetCredentials { status, actor, at }
        }
        E::SecretStored { secret, actor, at } => C::StoreSecret { secret, actor, at },
        E::SecretRemoved { actor, at, .. } => C::RemoveSecret { actor, at },
        // Only ever the follow-up of a run's end: see `legality`.
        E::ProviderStateObserved { .. } => return None,
        E::ConnectionEnabled { actor, at } => C::SetEnabled {
            enabled: true,
            actor,
            at,
        },
        E::ConnectionDisabled { actor, at } => C::SetEnabled {
            enabled: false,
            actor,
            at,
        },
        E::OperationAccepted { .. } | E::OperationRejected { .. } => return None,
        E::RunClaimed {
            run_id,
            worker_id,
            at,
            lease_expires_at,
        } => C::ClaimRun {
            run_id,
            worker_id,
            at,
            lease_expires_at,
        },
        E::RunLeaseExtended {
            run_id,
            worker_id,
            at,
            lease_expires_at,
        } => C::ExtendLease {
            run_id,
            worker_id,
            at,
            lease_expires_at,
        },
        E::RunSucceeded {
            run_id,
            worker_id,
            result,
            snapshot_hash,
            at,
        } => C::CompleteRun {
            run_id,
            worker_id,
            end: RunEnd::Succeeded {
                result,
                snapshot_hash,
            },
            at,
        },
        E::RunFailed {
            run_id,
            reason,
            cause,
            at,
        } => match cause {
            FailureCause::Worker {
                worker_id,
                provider,
                result,
            } => C::CompleteRun {
                run_id,
                worker_id,
                end: RunEnd::Failed {
                    reason,
                    provider,
                    result,
                },
                at,
            },
            // The claim's own lease is not recorded when the execution gate
            // fails it; any valid one gives the same decision.
            FailureCause::ExecutionGate { worker_id, .. } => C::ClaimRun {
                run_id,
                worker_id,
                at,
                lease_expires_at: at + chrono::Duration::seconds(1),
            },
            FailureCause::LeaseExpired { .. } => C::ExpireLease { at },
        },
        E::RunReleased {
            run_id,
            worker_id,
            at,
        } => C::ReleaseRun {
            run_id,
            worker_id,
            at,
        },
        E::RunCancelRequested { run_id, actor, at } => C::CancelRun { run_id, actor, at },
        // A held run ends cancelled when its worker says so; a queued one at once.
        E::RunCancelled { run_id, actor, at } => match &state.active {
            Some(active) if active.run_id == run_id && active.holder.is_some() => C::CompleteRun {
                run_id,
                worker_id: active.holder.as_ref().expect("held").worker_id.clone(),
                end: RunEnd::Cancelled,
                at,
            },
            _ => C::CancelRun { run_id, actor, at },
        },
    })
}

/// Who held which grant in a tenant, over time: whether a decision's actor was
/// a member with the capability at the decision's moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memberships {
    changes: std::collections::BTreeMap<UserId, Vec<(Timestamp, Option<Membership>)>>,
}

/// Why a decision's actor could not have started it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    /// Not a member of the tenant at the decision's moment.
    #[error("its actor {0} was not a member of the tenant at the decision's moment")]
    NotAMember(UserId),
    /// A member, but without the capability the operation needs.
    #[error("its actor {user} was a member without the capability {operation} needs at the decision's moment")]
    LacksCapability {
        /// The actor.
        user: UserId,
        /// The operation.
        operation: OperationKind,
    },
}

impl Memberships {
    /// Takes note of a tenant event (member changes; the rest is ignored).
    pub fn record(&mut self, event: &TenantEvent) {
        match event {
            TenantEvent::MemberSet {
                user_id,
                membership,
                at,
                ..
            } => self
                .changes
                .entry(*user_id)
                .or_default()
                .push((*at, Some(membership.clone()))),
            TenantEvent::MemberRemoved { user_id, at, .. } => {
                self.changes.entry(*user_id).or_default().push((*at, None))
            }
            _ => {}
        }
    }

    /// Whether the decision's actor could start it: a user must have been a
    /// member holding the operation's capability (the latest change at or
    /// before the decision's time counts). The admin and the system may.
    pub fn check(&self, decision: &Decision) -> Option<Unauthorized> {
        let Actor::User { id, .. } = &decision.actor else {
            return None;
        };
        let grant = self
            .changes
            .get(id)
            .and_then(|changes| changes.iter().rev().find(|(at, _)| *at <= decision.at))
            .and_then(|(_, grant)| grant.as_ref());
        match grant {
            None => Some(Unauthorized::NotAMember(*id)),
            Some(grant)
                if !Action::StartOperation(decision.operation).allowed_by(&grant.capabilities) =>
            {
                Some(Unauthorized::LacksCapability {
                    user: *id,
                    operation: decision.operation,
                })
            }
            Some(_) => None,
        }
    }
}

impl Audited for ProviderConnection {
    fn check(&self, sequence: usize, event: &ConnectionEvent) -> Option<Check> {
        let (request, evidence, recorded) = match event {
            ConnectionEvent::OperationAccepted { request, evidence } => (
                request,
                evidence,
                Verdict::Accepted {
                    run_id: request.proposed_run_id,
                },
            ),
            ConnectionEvent::OperationRejected {
                request,
                evidence,
                rejection,
            } => (request, evidence, Verdict::Rejected(*rejection)),
            _ => return None,
        };
        let decision = Decision {
            decision_id: request.decision_id,
            at: request.at,
            actor: request.actor.clone(),
            tenant_id: Some(request.tenant_id),
            operation: request.operation,
            scope: Some(request.scope),
            request_id: request.request_id.clone(),
            verdict: recorded,
            connection_id: Some(evidence.connection.connection_id),
            resolved_via: Some(request.resolved_via),
            evidence: Some(evidence.clone()),
            tenant_evidence: None,
        };
        // Exactly what `decide` does for a start: admit it, then the gate.
        let (rederived, divergence) = match admit_start(self, request) {
            Err(error) => (None, Some(Divergence::ConnectionRefused(error))),
            Ok(actual) => {
                let rederived = decide_start(self, request);
                let divergence = if rederived != recorded {
                    Some(Divergence::Verdict {
                        recorded,
                        rederived,
                    })
                } else if actual != *evidence {
                    Some(Divergence::Evidence {
                        recorded: Box::new(evidence.clone()),
                        actual: Box::new(actual),
                    })
                } else {
                    None
                };
                (Some(rederived), divergence)
            }
        };
        Some(Check {
            sequence,
            decision,
            rederived,
            divergence,
        })
    }

    fn legality(&self, event: &ConnectionEvent) -> Result<Vec<ConnectionEvent>, Illegal> {
        if let ConnectionEvent::ProviderStateObserved { .. } = event {
            // Legal only as the follow-up of a run's end, which `Replay` matches.
            return Err(Illegal::Unprompted);
        }
        let Some(command) = command_for(self, event) else {
            return Ok(vec![]);
        };
        match decide(self, command) {
            Err(error) => Err(Illegal::Refused(error)),
            Ok(mut events) if events.first() == Some(event) => {
                events.remove(0);
                Ok(events)
            }
            Ok(_) => Err(Illegal::Differs),
        }
    }
}

impl Audited for Tenant {
    fn check(&self, sequence: usize, event: &TenantEvent) -> Option<Check> {
        let TenantEvent::StartBlocked {
            request,
            reason,
            evidence,
        } = event
        else {
            return None;
        };
        let recorded = Verdict::Rejected(Rejection::Blocked { reason: *reason });
        let decision = Decision {
            decision_id: request.decision_id,
            at: request.at,
            actor: request.actor.clone(),
            tenant_id: self.identity.as_ref().map(|i| i.tenant_id),
            operation: request.operation,
            scope: request.scope,
            request_id: request.request_id.clone(),
            verdict: recorded,
            connection_id: None,
            resolved_via: None,
            evidence: None,
            tenant_evidence: Some(evidence.clone()),
        };
        let command = TenantCommand::RecordStartWithoutDefault(request.clone());
        let (rederived, divergence) = match tenant::decide(self, command) {
            Err(error) => (None, Some(Divergence::TenantRefused(error))),
            Ok(_) => {
                let rederived = Verdict::Rejected(Rejection::Blocked {
                    reason: ReasonCode::MissingDefault,
                });
                let mut actual = self.evidence();
                if evidence.connections.is_none() {
                    // Version 1.0 did not record the list: nothing to compare.
                    actual.connections = None;
                }
                let divergence = if rederived != recorded {
                    Some(Divergence::Verdict {
                        recorded,
                        rederived,
                    })
                } else if actual != *evidence {
                    Some(Divergence::TenantEvidence {
                        recorded: evidence.clone(),
                        actual,
                    })
                } else {
                    None
                };
                (Some(rederived), divergence)
            }
        };
        Some(Check {
            sequence,
            decision,
            rederived,
            divergence,
        })
    }
}

impl<T: Record> Audited for Registered<T> {
    fn check(&self, _: usize, _: &Self::Event) -> Option<Check> {
        None
    }
}

/// Token changes are facts, not decisions: nothing to re-derive.
impl Audited for crate::user::UserAccount {
    fn check(&self, _: usize, _: &Self::Event) -> Option<Check> {
        None
    }
}

/// Folds a stream event by event, checking each decision on the state before it.
#[derive(Debug, Default)]
pub struct Replay<A: Aggregate> {
    state: A,
    /// The rest of the last command's events: what must come next. History
    /// from before a command wrote them may lack them (an older version
    /// recorded less), so a missing one is not a finding; a wrong one is.
    follow_ups: VecDeque<A::Event>,
}

impl<A: Audited> Replay<A> {
    /// A replay from the empty stream.
    pub fn new() -> Self {
        Self {
            state: A::default(),
            follow_ups: VecDeque::new(),
        }
    }

    /// Checks `event` (at `sequence`) if it is a decision, then applies it.
    pub fn step(&mut self, sequence: usize, event: A::Event) -> Option<Check> {
        self.step_checked(sequence, event).0
    }

    /// [`Replay::step`], and whether any other event could have been written
    /// by the aggregate's own decision on the state before it.
    pub fn step_checked(
        &mut self,
        sequence: usize,
        event: A::Event,
    ) -> (Option<Check>, Option<Illegal>) {
        let check = self.state.check(sequence, &event);
        let illegal = if self.follow_ups.front() == Some(&event) {
            self.follow_ups.pop_front();
            None
        } else {
            match self.state.legality(&event) {
                Ok(rest) => {
                    self.follow_ups = rest.into();
                    None
                }
                Err(illegal) => {
                    self.follow_ups.clear();
                    Some(illegal)
                }
            }
        };
        self.state.apply(event);
        (check, illegal)
    }

    /// The state after the events so far.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Ends the replay, keeping the state.
    pub fn into_state(self) -> A {
        self.state
    }
}

/// Replays a whole stream (events numbered from 1) and checks every decision.
pub fn replay<A: Audited>(events: impl IntoIterator<Item = A::Event>) -> Vec<Check> {
    let mut replay = Replay::<A>::new();
    events
        .into_iter()
        .enumerate()
        .filter_map(|(i, event)| replay.step(i + 1, event))
        .collect()
}
