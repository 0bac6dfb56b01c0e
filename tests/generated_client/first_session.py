"""The first session, driven through a client generated from the served OpenAPI
description alone (openapi-python-client), switching on its typed enums.

Run by tests/processes/generated_client.rs with the generated package `gate_client` on
PYTHONPATH and GATE_URL / GATE_ADMIN_TOKEN in the environment. Prints one line per
step; any disagreement between the description and the server stops it with an
exception: an answer status the description does not list, a value outside a
described enum, a required field missing, or a field the description does not have.
"""

import os
import sys
import uuid

import attrs

from gate_client import AuthenticatedClient
from gate_client.api.monitoring import get_run, list_notifications, list_runs, tenant_decisions
from gate_client.api.onboarding import onboarding
from gate_client.api.provider_connections import create_connection, set_consent, set_credentials
from gate_client.api.setup import create_tenant, create_workspace
from gate_client.api.starts import cancel_run, start_on_tenant
from gate_client.api.worker import claim, complete, heartbeat
from gate_client.models import (
    ActorKind,
    ClaimBody,
    CompleteAsFailed,
    CompleteAsFailedStatus,
    CompleteWithoutReason,
    CompleteWithoutReasonStatus,
    Consent,
    ConsentBody,
    CreateConnection,
    CreateTenant,
    CredentialsBody,
    CredentialStatus,
    ErrorBody,
    ErrorCode,
    ExecutionReasonCode,
    NameBody,
    OperationKind,
    Outcome,
    ProblemClass,
    ReasonCode,
    RunStatus,
    ScopeKind,
    StartableOperation,
    StartResult,
    StepState,
    TenantStart,
    WorkerBody,
)
from gate_client.types import Unset

client = AuthenticatedClient(
    base_url=os.environ["GATE_URL"],
    token=os.environ["GATE_ADMIN_TOKEN"],
    raise_on_unexpected_status=True,
)


def strict(value, where="answer"):
    """Every model in an answer holds only described fields (the generated models keep
    unknown ones in `additional_properties` instead of failing)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            strict(item, f"{where}[{i}]")
    elif attrs.has(type(value)):
        extra = getattr(value, "additional_properties", {})
        assert not extra, f"{where}: fields the description does not have: {sorted(extra)}"
        for field in attrs.fields(type(value)):
            if field.name != "additional_properties":
                strict(getattr(value, field.name), f"{where}.{field.name}")
    return value


def answer(response, status, kind):
    """The parsed answer, checked: the expected status and model, described fields only."""
    assert response.status_code == status, f"HTTP {response.status_code}, not {status}: {response.content!r}"
    assert isinstance(response.parsed, kind), f"{type(response.parsed).__name__}, not {kind.__name__}"
    return strict(response.parsed)


def start(tenant_id, operation):
    """Starts an operation on the tenant's default connection and reads the outcome
    as an operator would: one branch per outcome."""
    response = start_on_tenant.sync_detailed(
        tenant_id=tenant_id, client=client, body=TenantStart(operation=operation)
    )
    result = answer(response, response.status_code, StartResult)
    match result.outcome:
        case Outcome.ACCEPTED:
            assert response.status_code == 202 and result.reason is None
            assert result.run.status == RunStatus.QUEUED
            line = f"new run {result.run.id}"
        case Outcome.DEDUPED:
            assert response.status_code == 200
            assert result.reason.code == ReasonCode.OPERATION_ALREADY_ACTIVE
            line = f"follow run {result.run.id} ({result.run.status})"
        case Outcome.SCOPE_BUSY:
            assert response.status_code == 409
            assert result.reason.problem_class == ProblemClass.CONCURRENCY
            line = f"connection busy with run {result.run.id}"
        case Outcome.BLOCKED:
            assert response.status_code == 422 and result.run is None
            line = f"reason: {result.reason.code} ({result.reason.problem_class})"
    print(f"outcome: {result.outcome} (HTTP {response.status_code}): {line}")
    return result


# Setup: a workspace, a tenant, its default provider connection.
workspace = answer(create_workspace.sync_detailed(client=client, body=NameBody(name="Acme")), 201, object)
tenant = answer(
    create_tenant.sync_detailed(client=client, body=CreateTenant(workspace_id=workspace.id, name="Contoso")),
    201,
    object,
)
connection = answer(
    create_connection.sync_detailed(
        tenant_id=tenant.id,
        client=client,
        body=CreateConnection(display_name="Contoso Graph", provider="microsoft_graph", make_default=True),
    ),
    201,
    object,
)

# 1. Before consent: blocked, nothing queued.
blocked = start(tenant.id, StartableOperation.INVENTORY_SYNC)
assert blocked.outcome == Outcome.BLOCKED
assert blocked.reason.code == ReasonCode.PROVIDER_CONSENT_MISSING
assert blocked.reason.problem_class == ProblemClass.ACCESS

# Consent and credentials, as typed values both ways.
granted = answer(
    set_consent.sync_detailed(id=connection.id, client=client, body=ConsentBody(granted=True)), 200, object
)
assert granted.consent == Consent.GRANTED
valid = answer(
    set_credentials.sync_detailed(id=connection.id, client=client, body=CredentialsBody(status=CredentialStatus.VALID)),
    200,
    object,
)
assert valid.credentials == CredentialStatus.VALID
print(f"consent: {valid.consent}, credentials: {valid.credentials}")

# 2. Accepted, 3. deduped onto it, 4. another operation finds the connection busy.
accepted = start(tenant.id, StartableOperation.INVENTORY_SYNC)
assert accepted.outcome == Outcome.ACCEPTED
run_id = accepted.run.id
assert accepted.run.operation == OperationKind.INVENTORY_SYNC
deduped = start(tenant.id, StartableOperation.INVENTORY_SYNC)
assert deduped.outcome == Outcome.DEDUPED and deduped.run.id == run_id
busy = start(tenant.id, StartableOperation.DIRECTORY_ROLES_SYNC)
assert busy.outcome == Outcome.SCOPE_BUSY and busy.run.id == run_id

# The worker's part: claim (filtered), heartbeat, complete.
worker = "generated-client"
claimed = answer(
    claim.sync_detailed(client=client, body=ClaimBody(worker_id=worker, operations=[OperationKind.INVENTORY_SYNC])),
    200,
    object,
)
assert claimed.run.id == run_id and claimed.run.status == RunStatus.RUNNING
lease = answer(heartbeat.sync_detailed(run_id=run_id, client=client, body=WorkerBody(worker_id=worker)), 200, object)
assert lease.cancel_requested is False
done = answer(
    complete.sync_detailed(
        run_id=run_id,
        client=client,
        body=CompleteWithoutReason(worker_id=worker, status=CompleteWithoutReasonStatus.SUCCEEDED),
    ),
    200,
    object,
)
assert done.run.status == RunStatus.SUCCEEDED
nothing = claim.sync_detailed(client=client, body=ClaimBody(worker_id=worker))
assert nothing.status_code == 204 and nothing.parsed is None, nothing
print(f"claimed and completed {run_id}: {done.run.status}; then nothing to claim (HTTP 204)")

# 5. The connection is free again: accepted; this run fails, with an execution reason.
second = start(tenant.id, StartableOperation.DIRECTORY_ROLES_SYNC)
assert second.outcome == Outcome.ACCEPTED
answer(claim.sync_detailed(client=client, body=ClaimBody(worker_id=worker)), 200, object)
failed = answer(
    complete.sync_detailed(
        run_id=second.run.id,
        client=client,
        body=CompleteAsFailed(
            worker_id=worker,
            status=CompleteAsFailedStatus.FAILED,
            reason_code=ExecutionReasonCode.PROVIDER_THROTTLED,
        ),
    ),
    200,
    object,
)
assert failed.run.status == RunStatus.FAILED

# A third run, cancelled while queued: no worker needed.
third = start(tenant.id, StartableOperation.PROVIDER_VERIFY)
assert third.outcome == Outcome.ACCEPTED
answer(cancel_run.sync_detailed(run_id=third.run.id, client=client), 200, object)

# Reads: every vocabulary comes back typed.
detail = answer(get_run.sync_detailed(run_id=run_id, client=client), 200, object)
assert detail.status == RunStatus.SUCCEEDED
assert detail.scope.kind == ScopeKind.TENANT and detail.scope.id == tenant.id
assert detail.initiator.kind == ActorKind.ADMIN
# Every decision that returned this run: its own, the deduped start, the busy one.
assert [d.outcome for d in detail.decisions] == [Outcome.ACCEPTED, Outcome.DEDUPED, Outcome.SCOPE_BUSY]
print(f"run {detail.id}: {detail.status}, {detail.joined_attempts} deduped start(s) joined it")

failed_detail = answer(get_run.sync_detailed(run_id=second.run.id, client=client), 200, object)
assert failed_detail.reason.code == ReasonCode.PROVIDER_THROTTLED
assert failed_detail.reason.problem_class == ProblemClass.TRANSIENT
print(f"run {failed_detail.id}: {failed_detail.status}, reason {failed_detail.reason.code}")

statuses = {}
for status in RunStatus:
    page = answer(list_runs.sync_detailed(client=client, status=status, tenant_id=tenant.id), 200, object)
    assert all(item.status == status for item in page.items)
    statuses[status] = len(page.items)
assert statuses == {
    RunStatus.QUEUED: 0,
    RunStatus.RUNNING: 0,
    RunStatus.SUCCEEDED: 1,
    RunStatus.FAILED: 1,
    RunStatus.CANCELLED: 1,
}, statuses
print("runs by status: " + ", ".join(f"{s} {n}" for s, n in statuses.items()))

decisions = answer(tenant_decisions.sync_detailed(tenant_id=tenant.id, client=client), 200, object)
outcomes = [d.outcome for d in reversed(decisions.items)]
assert outcomes == [
    Outcome.BLOCKED,
    Outcome.ACCEPTED,
    Outcome.DEDUPED,
    Outcome.SCOPE_BUSY,
    Outcome.ACCEPTED,
    Outcome.ACCEPTED,
], outcomes
first = decisions.items[-1]
assert first.evidence.connection.consent == Consent.MISSING
busy_decision = decisions.items[-4]
assert busy_decision.evidence.active_run.status == RunStatus.QUEUED
assert busy_decision.evidence.active_run.scope.kind == ScopeKind.TENANT
print(f"{len(decisions.items)} decisions: " + ", ".join(str(o) for o in outcomes))

steps = answer(onboarding.sync_detailed(tenant_id=tenant.id, client=client), 200, object)
states = {step.operation: step.state for step in steps.steps}
assert states[OperationKind.PROVIDER_VERIFY] == StepState.PENDING, states
assert states[OperationKind.INVENTORY_SYNC] == StepState.SUCCEEDED, states
assert states[OperationKind.DIRECTORY_GROUPS_SYNC] == StepState.FOLLOW_UP, states
assert states[OperationKind.DIRECTORY_ROLES_SYNC] == StepState.FAILED, states
assert steps.next_bootstrap_step == OperationKind.DIRECTORY_GROUPS_SYNC, steps.next_bootstrap_step
print("onboarding: " + ", ".join(f"{op} {state}" for op, state in states.items()))

notes = answer(list_notifications.sync_detailed(client=client), 200, object)
assert {n.run.status for n in notes.items} == {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
print(f"{len(notes.items)} notifications")

# An error answer: a typed error code.
missing = get_run.sync_detailed(run_id=uuid.uuid4(), client=client)
error = answer(missing, 404, ErrorBody)
match error.error.code:
    case ErrorCode.NOT_FOUND:
        print(f"error: {error.error.code} (HTTP 404)")
    case other:
        sys.exit(f"unexpected error code {other}")
assert isinstance(error.error.lag, Unset)
print("done")
