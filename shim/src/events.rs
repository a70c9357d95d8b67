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

/// A token bucket for events a guest raises: `burst` at once, then one per
/// `every`. What it refuses is counted and logged now and then, not per event.
pub struct RateLimit {
    burst: u32,
    every: std::time::Duration,
    tokens: u32,
    last: std::time::Instant,
    dropped: u64,
}

impl RateLimit {
    pub fn new(burst: u32, every: std::time::Duration) -> Self {
        Self {
            burst,
            every,
            tokens: burst,
            last: std::time::Instant::now(),
            dropped: 0,
        }
    }

    pub fn allow(&mut self) -> bool {
        let refill = (self.last.elapsed().as_nanos() / self.every.as_nanos().max(1)) as u32;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(self.burst);
            self.last = std::time::Instant::now();
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            return true;
        }
        self.dropped += 1;
        if self.dropped == 1 || self.dropped % 1000 == 0 {
            tracing::warn!(
                dropped = self.dropped,
                "the guest raises events faster than allowed; dropping"
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;
    use std::time::Duration;

    #[test]
    fn a_flood_is_cut_to_the_burst_then_the_rate() {
        let mut r = RateLimit::new(5, Duration::from_millis(50));
        let allowed = (0..10_000).filter(|_| r.allow()).count();
        assert_eq!(allowed, 5);
        std::thread::sleep(Duration::from_millis(120));
        let allowed = (0..10_000).filter(|_| r.allow()).count();
        assert_eq!(allowed, 2);
    }
}
