//! Publishing task events to containerd, in order, off the request path.

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::event::Event;
use containerd_shim_protos::events::task::TaskOOM;
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

/// OOM events a guest may raise in a burst, then one per second: containerd
/// needs to know, not to be flooded.
const OOM_BURST: u32 = 5;

/// The agent's events (OOM kills) on their way to containerd. The agent sends
/// an OOM before the answer to the Wait of the process it killed; the exit is
/// published only after [`GuestEvents::forward_pending`], so whoever reads the
/// exit (CRI: reason OOMKilled) already knows why. Taking an event off the
/// queue and queueing it for containerd happen under one lock, so a flush
/// never misses one that the background pump holds.
pub struct GuestEvents {
    container_id: String,
    events: Events,
    inner: std::sync::Mutex<Option<Pump>>,
}

struct Pump {
    rx: mpsc::Receiver<vxn_wire::protocol::Event>,
    limit: RateLimit,
}

impl GuestEvents {
    /// Forward `rx` in the background; `None` (already taken) forwards nothing.
    pub fn start(
        container_id: String,
        events: Events,
        rx: Option<mpsc::Receiver<vxn_wire::protocol::Event>>,
    ) -> std::sync::Arc<Self> {
        let me = std::sync::Arc::new(Self {
            container_id,
            events,
            inner: std::sync::Mutex::new(rx.map(|rx| Pump {
                rx,
                limit: RateLimit::new(OOM_BURST, std::time::Duration::from_secs(1)),
            })),
        });
        let weak = std::sync::Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                let open = std::future::poll_fn(|cx| match weak.upgrade() {
                    Some(me) => me.poll_forward(cx),
                    None => std::task::Poll::Ready(false),
                })
                .await;
                if !open {
                    return;
                }
            }
        });
        me
    }

    /// Forward every event already received. Call before publishing an exit.
    pub fn forward_pending(&self) {
        let mut inner = self.lock();
        let Some(pump) = inner.as_mut() else { return };
        while let Ok(ev) = pump.rx.try_recv() {
            self.forward(&mut pump.limit, ev);
        }
    }

    /// Ready(true) after forwarding one event, Ready(false) once the agent is gone.
    fn poll_forward(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        let mut inner = self.lock();
        let Some(pump) = inner.as_mut() else {
            return std::task::Poll::Ready(false);
        };
        match pump.rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(ev)) => {
                self.forward(&mut pump.limit, ev);
                std::task::Poll::Ready(true)
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(false),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn forward(&self, limit: &mut RateLimit, ev: vxn_wire::protocol::Event) {
        if !limit.allow() {
            return;
        }
        match ev {
            vxn_wire::protocol::Event::Oom { .. } => {
                tracing::warn!("the guest kernel OOM-killed a process");
                self.events.send(TaskOOM {
                    container_id: self.container_id.clone(),
                    ..Default::default()
                });
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pump>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
