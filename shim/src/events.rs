//! The one place task events are made for containerd: the model's events
//! translated, and published in order, off the request path.

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::event::Event;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::ttrpc::context::Context;
use containerd_shim_protos::types::mount::Mount;
use tokio::sync::mpsc;
use vxn_runtime_core::ids::ExecId;
use vxn_runtime_core::model::events::{EventSink, TaskEvent};

use crate::io::StdioPaths;

/// Events queued for containerd before `send` starts dropping (logged).
const QUEUE: usize = 128;
/// Like the Go shim: an event containerd does not take in 5 s is dropped.
const PUBLISH_TIMEOUT_NS: i64 = 5_000_000_000;

/// An event and its topic, on its way to containerd.
pub(crate) type Published = (String, Box<dyn MessageDyn>);

#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<Published>,
}

impl Events {
    pub fn start(publisher: RemotePublisher, namespace: String) -> Self {
        let (events, mut rx) = Self::queue();
        tokio::spawn(async move {
            while let Some((topic, ev)) = rx.recv().await {
                let ctx = Context {
                    timeout_nano: PUBLISH_TIMEOUT_NS,
                    ..Default::default()
                };
                if let Err(e) = publisher.publish(ctx, &topic, &namespace, ev).await {
                    tracing::warn!(%topic, error = %e, "publishing event failed");
                }
            }
        });
        events
    }

    /// The queue alone: whoever holds the receiver publishes what is sent
    /// (`start`'s task; the task service's tests read it).
    pub(crate) fn queue() -> (Self, mpsc::Receiver<Published>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, rx)
    }

    pub fn send<E: Event + MessageDyn + 'static>(&self, ev: E) {
        let topic = ev.topic();
        tracing::debug!(%topic, "event");
        if self.tx.try_send((topic.clone(), Box::new(ev))).is_err() {
            tracing::warn!(%topic, "event queue full, dropping event");
        }
    }
}

/// One task's events: what containerd's events carry beyond the model's.
pub struct TaskEvents {
    pub events: Events,
    pub container_id: String,
    pub bundle: String,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioPaths,
    /// Every process's "pid" as containerd sees it: the shim's.
    pub pid: u32,
}

impl EventSink for TaskEvents {
    fn publish(&self, ev: TaskEvent) {
        let id = self.container_id.clone();
        match ev {
            TaskEvent::Created => self.events.send(TaskCreate {
                container_id: id,
                bundle: self.bundle.clone(),
                rootfs: self.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: self.stdio.stdin.clone(),
                    stdout: self.stdio.stdout.clone(),
                    stderr: self.stdio.stderr.clone(),
                    terminal: self.stdio.terminal,
                    ..Default::default()
                }),
                pid: self.pid,
                ..Default::default()
            }),
            TaskEvent::Started(ExecId::Init) => self.events.send(TaskStart {
                container_id: id,
                pid: self.pid,
                ..Default::default()
            }),
            TaskEvent::Started(ExecId::Exec(exec_id)) => self.events.send(TaskExecStarted {
                container_id: id,
                exec_id,
                pid: self.pid,
                ..Default::default()
            }),
            TaskEvent::ExecAdded(exec) => self.events.send(TaskExecAdded {
                container_id: id,
                exec_id: exec.as_wire().unwrap_or_default().to_string(),
                ..Default::default()
            }),
            TaskEvent::Exited { exec, exit } => self.events.send(TaskExit {
                id: exec
                    .as_wire()
                    .map(str::to_string)
                    .unwrap_or_else(|| id.clone()),
                container_id: id,
                pid: self.pid,
                exit_status: exit.code,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }),
            TaskEvent::Oom => self.events.send(TaskOOM {
                container_id: id,
                ..Default::default()
            }),
            TaskEvent::Paused => self.events.send(TaskPaused {
                container_id: id,
                ..Default::default()
            }),
            TaskEvent::Resumed => self.events.send(TaskResumed {
                container_id: id,
                ..Default::default()
            }),
            TaskEvent::Deleted { exit } => self.events.send(TaskDelete {
                id: id.clone(),
                container_id: id,
                pid: self.pid,
                exit_status: exit.code,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }),
        }
    }
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}
