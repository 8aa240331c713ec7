//! The loop every module task runs, whatever its kind: it answers the supervisor's commands
//! while the module's long work (a pull, an activation) runs beside them, settles that work
//! when it ends, retries a failed module after its backoff, and, for kinds that need it, looks
//! at the module between works. A kind says what each of these means for it by implementing
//! [`ModuleKindTask`] (`model_task`, `container_task`).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::modules::module_task::{Assignment, Backoff, ModuleCommand};
use crate::telemetry::link::InputAck;

/// Long work a task runs beside its commands, ending in `T`.
pub(crate) type Work<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What one kind of module task does at each turn of [`drive`].
pub(crate) trait ModuleKindTask: Send {
    /// What the kind's long work ends with.
    type Done: Send + 'static;

    fn name(&self) -> &str;
    /// The manifest's part for this module, once one came.
    fn assignment(&self) -> Option<&Assignment>;
    fn backoff(&mut self) -> &mut Backoff;
    /// Whether the last attempt failed (it is retried after the backoff once settled).
    fn failing(&self) -> bool;

    /// Starts what `assignment` needs; long work is returned to run beside the commands.
    fn apply(
        &mut self,
        assignment: Assignment,
    ) -> impl Future<Output = Option<Work<Self::Done>>> + Send;
    /// Takes in what the long work ended with.
    fn settle(&mut self, done: Self::Done) -> impl Future<Output = ()> + Send;
    /// The fleet's `restart` command.
    fn restart(&mut self, request_id: String) -> impl Future<Output = ()> + Send;
    /// A message from the module's MQTT input topic.
    fn input(&mut self, payload: Vec<u8>, ack: InputAck);
    /// Stops the module and forgets it; the task ends.
    fn remove(&mut self) -> impl Future<Output = ()> + Send;
    /// The agent is shutting down; the task ends.
    fn shut_down(&mut self) -> impl Future<Output = ()> + Send;

    /// How often [`ModuleKindTask::watch`] looks at the module while no work runs.
    fn watch_every(&self) -> Option<Duration> {
        None
    }
    fn watch(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs `task` until the supervisor removes it or the agent shuts down.
pub(crate) async fn drive<T: ModuleKindTask>(
    mut task: T,
    mut commands: mpsc::UnboundedReceiver<ModuleCommand>,
) {
    let mut work: Option<Work<T::Done>> = None;
    let mut retry_at: Option<Instant> = None;
    let mut watch = task.watch_every().map(|every| {
        let mut interval = tokio::time::interval(every);
        // Ticks missed while work ran are not made up in a burst.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => {
                    task.shut_down().await;
                    return;
                }
                Some(ModuleCommand::Apply(assignment)) => {
                    task.backoff().reset();
                    work = task.apply(assignment).await;
                    retry_at = retry_if_failed(&mut task, work.is_none());
                }
                Some(ModuleCommand::Remove) => {
                    task.remove().await;
                    return;
                }
                Some(ModuleCommand::Restart { request_id }) => task.restart(request_id).await,
                Some(ModuleCommand::Input { payload, ack }) => task.input(payload, ack),
            },
            done = async { work.as_mut().expect("guarded by is_some").await }, if work.is_some() => {
                work = None;
                task.settle(done).await;
                retry_at = retry_if_failed(&mut task, true);
            }
            () = async { tokio::time::sleep_until(retry_at.expect("guarded by is_some").into()).await }, if retry_at.is_some() => {
                retry_at = None;
                if let Some(assignment) = task.assignment().cloned() {
                    tracing::info!(module = %task.name(), version = assignment.version, "retrying the module");
                    work = task.apply(assignment).await;
                    retry_at = retry_if_failed(&mut task, work.is_none());
                }
            }
            _ = async { watch.as_mut().expect("guarded by is_some").tick().await }, if work.is_none() && watch.is_some() => {
                task.watch().await;
            }
        }
    }
}

/// When to try again: after the backoff, if what was tried has ended (`settled`) and failed.
fn retry_if_failed(task: &mut impl ModuleKindTask, settled: bool) -> Option<Instant> {
    (settled && task.failing()).then(|| Instant::now() + task.backoff().next_delay())
}
