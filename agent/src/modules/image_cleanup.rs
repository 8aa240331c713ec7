//! The image clean-up task: container images no manifest uses any more are removed from the
//! engine once their grace period (`docker.image_grace_seconds`) has passed, never while any
//! container of the engine (the agent's or not) uses them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_transport::now_ms;
use tokio::sync::watch;

use crate::modules::module_task::Services;

/// How often unused images are looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until the task is aborted. `wanted` holds the images the desired manifest uses: those
/// are never removed, and forgotten as unused.
pub(crate) async fn run(services: Arc<Services>, wanted: watch::Receiver<BTreeSet<String>>) {
    let Some(runtime) = services.containers.clone() else {
        return;
    };
    let grace_ms = services
        .config
        .docker
        .image_grace_seconds
        .saturating_mul(1000);
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tick.tick().await;
        let Ok(unused) = services.store.unused_images() else {
            continue;
        };
        let now = now_ms();
        let wanted = wanted.borrow().clone();
        let mut forget: Vec<String> = Vec::new();
        for (image, since) in unused {
            if wanted.contains(&image) {
                forget.push(image);
                continue;
            }
            if now.saturating_sub(since) < grace_ms {
                continue;
            }
            match runtime.image_in_use(&image).await {
                Ok(false) => match runtime.remove_image(&image).await {
                    Ok(()) => {
                        tracing::info!(%image, "removed an image no manifest uses");
                        forget.push(image);
                    }
                    Err(e) => tracing::warn!(%image, error = %e, "unused image not removed"),
                },
                // Used by a container (ours or not): forget it; it is never removed.
                Ok(true) => forget.push(image),
                Err(e) => tracing::warn!(error = %e, "cannot list containers"),
            }
        }
        if forget.is_empty() {
            continue;
        }
        let result = services.store.update_unused_images(|images| {
            for image in &forget {
                images.remove(image);
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record unused images");
        }
    }
}
