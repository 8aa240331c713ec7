//! Every change re-renders the devices it can affect: the store is read into a `Catalog`, each
//! device is rendered (`render`), and the manifests that changed are signed, stored and
//! published (retained) in batches of [`SIGNING_BATCH`].

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_common::topics::DeviceTopics;
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;

use super::{Fleet, Publication};
use crate::condition::Condition;
use crate::error::FleetError;
use crate::records::{
    Deployment, DeploymentRevision, Device, ModelVersion, Registry, RenderedManifest, Rollout,
};
use crate::render::{
    self, Catalog, Draft, HeldBack, RegistryAccess, Render, SIGNING_BATCH, render_device,
};
use crate::store::{Batch, FleetStore, RenderJob, kind};

/// How long a render job waits for the broker to acknowledge its manifests.
const PUBLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What rendering a job did.
#[derive(Debug, Clone, Copy)]
struct Rendered {
    /// Manifests that changed.
    changed: usize,
    /// Whether the job left the queue (the broker acknowledged every manifest).
    finished: bool,
}

/// The devices a change can affect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Affected {
    All,
    Devices(BTreeSet<String>),
}

/// Model name -> its versions, ascending.
pub(crate) async fn models_by_name(
    store: &FleetStore,
) -> Result<BTreeMap<String, Vec<ModelVersion>>, FleetError> {
    let mut by_name: BTreeMap<String, Vec<ModelVersion>> = BTreeMap::new();
    for (_, m) in store.list::<ModelVersion>(kind::MODEL).await? {
        by_name.entry(m.name.clone()).or_default().push(m);
    }
    for versions in by_name.values_mut() {
        versions.sort_by_key(|v| v.version);
    }
    Ok(by_name)
}

impl Fleet {
    pub(crate) async fn devices_matching(
        &self,
        conditions: &[Condition],
    ) -> Result<BTreeSet<String>, FleetError> {
        Ok(self
            .store
            .list::<Device>(kind::DEVICE)
            .await?
            .into_iter()
            .filter(|(_, d)| conditions.iter().any(|c| c.matches(&d.id, &d.tags)))
            .map(|(id, _)| id)
            .collect())
    }

    pub(super) async fn catalog(&self) -> Result<Catalog, FleetError> {
        let registries = self
            .store
            .list::<Registry>(kind::REGISTRY)
            .await?
            .into_iter()
            .map(|(name, r)| {
                let password = self.secrets.unseal(&r.password)?;
                let password_id = hex::encode(Sha256::digest(r.password.as_armored().as_bytes()));
                let access = RegistryAccess {
                    address: r.address,
                    username: r.username,
                    password,
                    password_id,
                };
                Ok((name, access))
            })
            .collect::<Result<_, FleetError>>()?;
        let deployments: Vec<(Deployment, Condition)> = self
            .store
            .list::<Deployment>(kind::DEPLOYMENT)
            .await?
            .into_iter()
            .filter_map(|(_, d)| d.target.parse().ok().map(|c| (d, c)))
            .collect();
        let mut held_back = BTreeMap::new();
        for (name, rollout) in self.store.list::<Rollout>(kind::ROLLOUT).await? {
            let Some((current, _)) = deployments.iter().find(|(d, _)| d.name == name) else {
                continue;
            };
            if !rollout.holds_back() || rollout.to_revision != current.revision {
                continue;
            }
            let previous = self
                .store
                .get::<DeploymentRevision>(
                    &format!("{}/{name}", kind::DEPLOYMENT_REVISION),
                    &format!("{:012}", rollout.from_revision),
                )
                .await?
                .map(|r| Deployment::from_view(r.deployment, current.created_seq))
                .and_then(|d| d.target.parse().ok().map(|c| (d, c)));
            held_back.insert(name, HeldBack { rollout, previous });
        }
        Ok(Catalog {
            registries,
            models: models_by_name(&self.store).await?,
            deployments,
            held_back,
        })
    }

    /// Commits `batch` with a re-render of `affected` queued in the same transaction, then
    /// renders it (unless another replica already took the job). Returns how many manifests
    /// changed. The caller holds the write lock.
    pub(crate) async fn commit_and_render(
        &self,
        mut batch: Batch,
        affected: Affected,
    ) -> Result<usize, FleetError> {
        let job = batch.queue_render(&affected)?;
        self.store.commit(batch).await?;
        self.render_now(&job).await
    }

    /// Renders the queued job `name` (unless another replica already took it).
    pub(crate) async fn render_now(&self, job: &str) -> Result<usize, FleetError> {
        match self.store.claim_render_job(Some(job)).await? {
            Some(job) => Ok(self.render_job(job, false).await?.changed),
            None => Ok(0),
        }
    }

    /// Renders the jobs left in the queue: by a replica that died while rendering, or by this
    /// process before a crash. Their devices' stored manifests are published again, since
    /// the one who queued them may have stored them without publishing.
    pub async fn render_queued(&self) -> Result<usize, FleetError> {
        let _writes = self.store.lock_writes().await?;
        let mut changed = 0;
        while let Some(job) = self.store.claim_render_job(None).await? {
            tracing::info!(job = %job.name, "rendering a queued job");
            let rendered = self.render_job(job, true).await?;
            changed += rendered.changed;
            // Left queued (the broker did not acknowledge): tried again on the next wake-up,
            // without holding the write lock meanwhile.
            if !rendered.finished {
                break;
            }
        }
        Ok(changed)
    }

    async fn render_job(&self, job: RenderJob, taken_over: bool) -> Result<Rendered, FleetError> {
        // A job whose devices cannot be read (written by another version of the fleet, say)
        // renders every device: a superset is always right, and the queue behind it moves on.
        let affected = serde_json::from_slice(&job.devices).unwrap_or_else(|e| {
            tracing::warn!(job = %job.name, error = %e, "the render job's devices cannot be read; rendering every device");
            Affected::All
        });
        let started = std::time::Instant::now();
        let mut published = Vec::new();
        let changed = self.rerender(affected, taken_over, &mut published).await?;
        // The job leaves the queue only once the broker has every manifest it published; a
        // replica that dies before that leaves it to another.
        let all_acknowledged = tokio::time::timeout(
            PUBLICATION_TIMEOUT,
            futures_util::future::join_all(published),
        )
        .await
        .is_ok_and(|acks| acks.iter().all(Result::is_ok));
        if all_acknowledged {
            self.store.finish_render_job(job).await?;
        } else {
            tracing::warn!(job = %job.name, "the broker did not acknowledge every manifest in time; the job stays queued and is rendered again");
        }
        metrics::histogram!("edgefleet_fleet_render_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("edgefleet_fleet_manifests_changed_total").increment(changed as u64);
        Ok(Rendered {
            changed,
            finished: all_acknowledged,
        })
    }

    /// The affected devices' records.
    pub(super) async fn devices_of(
        &self,
        affected: &Affected,
    ) -> Result<Vec<(String, Device)>, FleetError> {
        Ok(match affected {
            Affected::Devices(ids) => {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                self.store
                    .get_many(kind::DEVICE, &ids)
                    .await?
                    .into_iter()
                    .collect()
            }
            Affected::All => self.store.list(kind::DEVICE).await?,
        })
    }

    /// Renders the affected devices; stores and publishes (retained) what changed, and with
    /// `publish_unchanged` the stored manifests that did not change too. Devices go in
    /// batches of [`SIGNING_BATCH`]: their previous manifests are read with one query.
    async fn rerender(
        &self,
        affected: Affected,
        publish_unchanged: bool,
        published: &mut Vec<oneshot::Receiver<()>>,
    ) -> Result<usize, FleetError> {
        let catalog = self.catalog().await?;
        let mut changed = 0;
        for devices in self.devices_of(&affected).await?.chunks(SIGNING_BATCH) {
            let ids: Vec<&str> = devices.iter().map(|(id, _)| id.as_str()).collect();
            let previous: BTreeMap<String, RenderedManifest> =
                self.store.get_many(kind::MANIFEST, &ids).await?;
            let mut drafts = Vec::new();
            for (id, device) in devices {
                let previous = previous.get(id);
                match render_device(device, &catalog, previous) {
                    // A device that never had a manifest gets none until it has a module (or
                    // an MQTT password to carry).
                    Ok(Render::Changed(draft))
                        if !(draft.sources.is_empty()
                            && previous.is_none()
                            && device.mqtt_password_for_device.is_none()) =>
                    {
                        drafts.push(draft);
                    }
                    Ok(Render::Unchanged) if publish_unchanged => {
                        if let Some(previous) = previous {
                            let publication = self.manifest_publication(previous)?;
                            published.push(self.publish_acknowledged(publication).await?);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(device = %id, error = %e, "manifest not rendered"),
                }
            }
            changed += self.sign_store_publish(drafts, published).await?;
        }
        Ok(changed)
    }

    /// Signs one batch of new manifests, stores them and publishes them (retained).
    /// `published` gets, for each, the receiver told when the broker has it.
    pub(super) async fn sign_store_publish(
        &self,
        drafts: Vec<Draft>,
        published: &mut Vec<oneshot::Receiver<()>>,
    ) -> Result<usize, FleetError> {
        if drafts.is_empty() {
            return Ok(0);
        }
        let changed = render::sign(drafts, &self.key)?;
        let mut batch = Batch::default();
        for rendered in &changed {
            batch.put(kind::MANIFEST, &rendered.device_id, rendered)?;
        }
        self.store.commit(batch).await?;
        for rendered in &changed {
            let publication = self.manifest_publication(rendered)?;
            published.push(self.publish_acknowledged(publication).await?);
        }
        Ok(changed.len())
    }

    /// A rendered manifest as it is published: retained on the device's desired topic.
    pub(crate) fn manifest_publication(
        &self,
        rendered: &RenderedManifest,
    ) -> Result<Publication, FleetError> {
        let topics = DeviceTopics::new(&self.settings.name, &rendered.device_id)?;
        Ok(Publication {
            topic: topics.desired(),
            payload: rendered.wire.clone().into_bytes(),
            retain: true,
        })
    }

    /// Every stored manifest, to publish again when the session connects (a broker may have
    /// lost retained messages).
    pub(crate) async fn all_manifests(&self) -> Result<Vec<Publication>, FleetError> {
        self.store
            .list::<RenderedManifest>(kind::MANIFEST)
            .await?
            .iter()
            .map(|(_, m)| self.manifest_publication(m))
            .collect()
    }
}
