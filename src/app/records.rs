//! What the edges and the process ask of the service's infrastructure, named
//! as use cases: session positions, readiness, idempotency records and their
//! housekeeping. The edges never reach the database or the catch-up directly.

use crate::read::catchup::Positions;
use crate::read::replica::StandbyStatus;
use crate::write::idempotency::{self, Answer, Claim, IdempotencyKey};

use super::Dispatcher;

impl Dispatcher {
    /// Remembers that `principal` wrote up to log position `position`: its
    /// next read on this instance waits for the views to reach it.
    pub fn remember_write(&self, principal: &str, position: i64) {
        let applied = self.catchup.positions().slowest();
        self.sessions.wrote(principal, position, applied);
    }

    /// Each projection's position on this instance.
    pub fn projection_positions(&self) -> Positions {
        self.catchup.positions()
    }

    /// The read replica's state, when reads go to one.
    pub async fn standby_status(&self) -> Option<anyhow::Result<StandbyStatus>> {
        match &self.standby {
            Some(standby) => Some(standby.status().await),
            None => None,
        }
    }

    /// Claims an `Idempotency-Key` for `principal`'s request with `fingerprint`.
    pub async fn claim_idempotency_key(
        &self,
        principal: &str,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> anyhow::Result<Claim> {
        idempotency::claim(&self.database, principal, key, fingerprint, self.now()).await
    }

    /// Ends an idempotent attempt: stores its answer if it wrote anything,
    /// else releases the key. Returns whether the answer was stored.
    pub async fn finish_idempotent_attempt(
        &self,
        attempt: &str,
        key: &IdempotencyKey,
        fingerprint: &str,
        answer: &Answer,
    ) -> anyhow::Result<bool> {
        idempotency::finish(&self.database, attempt, key, fingerprint, answer).await
    }

    /// Deletes idempotency keys past their 24 hours; how many went.
    pub async fn prune_idempotency_keys(&self) -> anyhow::Result<u64> {
        idempotency::prune(&self.database, self.now()).await
    }
}
