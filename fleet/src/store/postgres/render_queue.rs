//! The render queue on PostgreSQL: a replica claims a queued re-render by locking its row
//! (`FOR UPDATE SKIP LOCKED`), so no other replica takes it while the claim is held and another
//! one does if this replica dies; a commit that queues one notifies the others (LISTEN/NOTIFY).

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::store::{StoreError, kind};

/// The channel a commit that queues a render job notifies.
pub(super) const RENDER_CHANNEL: &str = "edgefleet_render";

/// A claimed render job: its row stays locked (`FOR UPDATE`) until the transaction ends.
#[derive(Debug)]
pub(in crate::store) struct Claim {
    txn: Transaction<'static, Postgres>,
}

impl Claim {
    /// Deletes the job and ends the claim.
    pub(in crate::store) async fn finish(mut self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM records WHERE kind = $1 AND name = $2")
            .bind(kind::RENDER_JOB)
            .bind(name)
            .execute(&mut *self.txn)
            .await?;
        self.txn.commit().await?;
        Ok(())
    }
}

/// This replica's subscription to render-job notifications (LISTEN), made on first use.
#[derive(Debug)]
pub struct RenderWakeups(PgListener);

impl PostgresStore {
    /// Claims job `name` (or the oldest) unless another replica holds it.
    pub(in crate::store) async fn claim_render_job(
        &self,
        name: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>, Claim)>, StoreError> {
        let mut txn = self.pool.begin().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT name, value::text FROM records WHERE kind = $1 AND ($2::text IS NULL OR \
             name = $2) ORDER BY name LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(kind::RENDER_JOB)
        .bind(name)
        .fetch_optional(&mut *txn)
        .await?;
        Ok(row.map(|(name, devices)| (name, devices.into_bytes(), Claim { txn })))
    }

    /// Waits for a render-job notification, at most `poll`. A listener that fails is made
    /// again on the next call; meanwhile the wait is a plain poll.
    pub(in crate::store) async fn wait_for_notify(
        &self,
        listener: &mut Option<RenderWakeups>,
        poll: Duration,
    ) {
        if listener.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen(RENDER_CHANNEL).await {
                    Ok(()) => *listener = Some(RenderWakeups(l)),
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling the render queue"),
                },
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling the render queue"),
            }
        }
        let Some(RenderWakeups(l)) = listener else {
            tokio::time::sleep(poll).await;
            return;
        };
        match tokio::time::timeout(poll, l.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "render-job notifications lost; listening again");
                *listener = None;
            }
        }
    }
}
