//! Publishing task events to containerd, in order, off the request path.

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::event::Event;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::ttrpc::context::Context;
use tokio::sync::mpsc;

/// Events queued for containerd before `send` starts dropping (logged).
const QUEUE: usize = 128;
/// Like the Go shim: an event containerd does not take in 5 s is dropped.
const PUBLISH_TIMEOUT_NS: i64 = 5_000_000_000;

#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<(String, Box<dyn MessageDyn>)>,
}

impl Events {
    pub fn start(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, Box<dyn MessageDyn>)>(QUEUE);
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
        Self { tx }
    }

    pub fn send<E: Event + MessageDyn + 'static>(&self, ev: E) {
        let topic = ev.topic();
        tracing::debug!(%topic, "event");
        if self.tx.try_send((topic.clone(), Box::new(ev))).is_err() {
            tracing::warn!(%topic, "event queue full, dropping event");
        }
    }
}
