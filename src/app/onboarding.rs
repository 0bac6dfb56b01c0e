//! Onboarding: the chain of steps and bootstrap, one step admitted at a time.

use aggregates::catalog::{Action, OperationKind, RunStatus};
use aggregates::ids::TenantId;

use crate::write::store::Database;
use projections::Run as RunRecord;

use super::auth::check;
use super::{AppError, Dispatcher, Principal, RequestContext, StartCommand, StartDecision};

/// The state of an onboarding step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Not started, and bootstrap has not begun.
    Pending,
    /// Its run is queued.
    Queued,
    /// Its run is running.
    Running,
    /// Its run succeeded.
    Succeeded,
    /// Its latest run failed; the next bootstrap request retries it.
    Failed,
    /// Bootstrap has begun and this step waits to be admitted by the next
    /// bootstrap request (never hidden queued work).
    FollowUp,
}

impl StepState {
    /// Every state, in declaration order.
    pub const ALL: &'static [StepState] = &[
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::FollowUp,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::FollowUp => "follow_up",
        }
    }
}

// Serialized as its wire name, so the one list above is all there is.
impl serde::Serialize for StepState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The bootstrap step to start next: the first of the chain (after provider
/// verification) whose latest run did not succeed.
pub fn next_bootstrap_step(steps: &[OnboardingStep]) -> Option<&OnboardingStep> {
    steps
        .iter()
        .skip(1)
        .find(|step| step.state != StepState::Succeeded)
}

/// One onboarding step and the run behind its state.
#[derive(Debug, Clone)]
pub struct OnboardingStep {
    /// The step's operation.
    pub operation: OperationKind,
    /// Its state.
    pub state: StepState,
    /// Its latest run.
    pub run: Option<RunRecord>,
}

impl Dispatcher {
    /// The onboarding steps of a tenant: provider verification, then the
    /// bootstrap chain. A step's state is the status of its latest run.
    pub async fn onboarding(&self, tenant_id: TenantId) -> Result<Vec<OnboardingStep>, AppError> {
        self.onboarding_in(self.reads(), tenant_id).await
    }

    async fn onboarding_in(
        &self,
        views: &Database,
        tenant_id: TenantId,
    ) -> Result<Vec<OnboardingStep>, AppError> {
        let mut steps = Vec::new();
        for operation in
            std::iter::once(OperationKind::ProviderVerify).chain(OperationKind::BOOTSTRAP_CHAIN)
        {
            let run = crate::read::queries::latest_run(views, tenant_id, operation).await?;
            let state = match run.as_ref().map(|r| r.status) {
                Some(RunStatus::Queued) => StepState::Queued,
                Some(RunStatus::Running) => StepState::Running,
                Some(RunStatus::Succeeded) => StepState::Succeeded,
                Some(RunStatus::Failed) => StepState::Failed,
                Some(RunStatus::Cancelled) | None => StepState::Pending,
            };
            steps.push(OnboardingStep {
                operation,
                state,
                run,
            });
        }
        let begun = steps[1..].iter().any(|s| s.run.is_some());
        for step in &mut steps[1..] {
            if begun && step.state == StepState::Pending {
                step.state = StepState::FollowUp;
            }
        }
        Ok(steps)
    }

    /// Admits the next bootstrap step through the gate: the first step of the
    /// chain whose latest run did not succeed. One start per request, so a
    /// blocked, deduped or busy bootstrap leaves nothing queued behind.
    /// `None` when every step has succeeded.
    pub async fn bootstrap(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        context: RequestContext,
    ) -> Result<Option<StartDecision>, AppError> {
        let tenant = self
            .authorize(principal, tenant_id, Action::ManageOnboarding)
            .await?;
        let steps = self.onboarding_in(&self.database, tenant_id).await?;
        let Some(next) = next_bootstrap_step(&steps) else {
            return Ok(None);
        };
        check(principal, &tenant, Action::StartOperation(next.operation))?;
        let command = StartCommand {
            tenant_id,
            operation: next.operation,
            connection: None,
            restore_run: None,
            principal: principal.clone(),
            context,
        };
        self.start_authorized(tenant, command).await.map(Some)
    }
}
