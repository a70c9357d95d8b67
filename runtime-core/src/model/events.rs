//! What happens to a container, told to its front-end through one sink, in
//! the order it happened: the model decides what and when, the front-end only
//! how (the shim: containerd's task events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vxn_wire::protocol::Event as AgentEvent;

use crate::ids::ExecId;
use crate::model::process::Exit;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// The container exists, its init created and not started.
    Created,
    /// The init (`ExecId::Init`) or an exec started.
    Started(ExecId),
    /// An exec was added (created, not started).
    ExecAdded(ExecId),
    /// A process exited; published after its output was relayed.
    Exited {
        exec: ExecId,
        exit: Exit,
    },
    /// The guest kernel OOM-killed a process; published before that exit.
    Oom,
    Paused,
    Resumed,
    /// The container is gone; `exit` is its init's.
    Deleted {
        exit: Exit,
    },
}

/// A container's events go here. Called with no lock held that an event's
/// consumer could need; must not block.
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, ev: TaskEvent);
}

/// A token bucket for events a guest raises: `burst` at once, then one per
/// `every`. What it refuses is counted and logged now and then, not per event.
pub struct RateLimit {
    burst: u32,
    every: Duration,
    tokens: u32,
    last: Instant,
    dropped: u64,
}

impl RateLimit {
    pub fn new(burst: u32, every: Duration) -> Self {
        Self {
            burst,
            every,
            tokens: burst,
            last: Instant::now(),
            dropped: 0,
        }
    }

    pub fn allow(&mut self) -> bool {
        let refill = (self.last.elapsed().as_nanos() / self.every.as_nanos().max(1)) as u32;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(self.burst);
            self.last = Instant::now();
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

/// OOM events a guest may raise in a burst, then one per second: the
/// front-end needs to know, not to be flooded.
const OOM_BURST: u32 = 5;

/// The agent's events (OOM kills) on their way to the sink. The agent sends
/// an OOM before the answer to the Wait of the process it killed; an exit is
/// published only after [`GuestEvents::forward_pending`], so whoever reads the
/// exit (CRI: reason OOMKilled) already knows why. Taking an event off the
/// queue and publishing it happen under one lock, so a flush never misses one
/// that the background pump holds.
pub struct GuestEvents {
    sink: Arc<dyn EventSink>,
    pump: Mutex<Option<Pump>>,
    /// A pod's containers: their events go to their own sinks.
    routes: Mutex<HashMap<String, Arc<dyn EventSink>>>,
}

struct Pump {
    rx: mpsc::Receiver<AgentEvent>,
    limit: RateLimit,
}

impl GuestEvents {
    /// Forward `rx` in the background; `None` (already taken) forwards nothing.
    pub fn start(sink: Arc<dyn EventSink>, rx: Option<mpsc::Receiver<AgentEvent>>) -> Arc<Self> {
        let me = Arc::new(Self {
            routes: Mutex::default(),
            sink,
            pump: Mutex::new(rx.map(|rx| Pump {
                rx,
                limit: RateLimit::new(OOM_BURST, Duration::from_secs(1)),
            })),
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            while std::future::poll_fn(|cx| match weak.upgrade() {
                Some(me) => me.poll_forward(cx),
                None => Poll::Ready(false),
            })
            .await
            {}
        });
        me
    }

    /// Events the agent names container `id` with go to `sink` (a pod's container).
    pub fn route(&self, id: &str, sink: Arc<dyn EventSink>) {
        self.routes_lock().insert(id.into(), sink);
    }

    pub fn unroute(&self, id: &str) {
        self.routes_lock().remove(id);
    }

    fn routes_lock(&self) -> MutexGuard<'_, HashMap<String, Arc<dyn EventSink>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forward every event already received. Call before publishing an exit.
    pub fn forward_pending(&self) {
        let mut pump = self.lock();
        let Some(pump) = pump.as_mut() else { return };
        while let Ok(ev) = pump.rx.try_recv() {
            self.forward(&mut pump.limit, ev);
        }
    }

    /// Ready(true) after forwarding one event, Ready(false) once the agent is gone.
    fn poll_forward(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut pump = self.lock();
        let Some(pump) = pump.as_mut() else {
            return Poll::Ready(false);
        };
        match pump.rx.poll_recv(cx) {
            Poll::Ready(Some(ev)) => {
                self.forward(&mut pump.limit, ev);
                Poll::Ready(true)
            }
            Poll::Ready(None) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }

    fn forward(&self, limit: &mut RateLimit, ev: AgentEvent) {
        if !limit.allow() {
            return;
        }
        match ev {
            AgentEvent::Oom { container_id } => {
                tracing::warn!(container = %container_id, "the guest kernel OOM-killed a process");
                let routed = self.routes_lock().get(&container_id).cloned();
                routed
                    .unwrap_or_else(|| self.sink.clone())
                    .publish(TaskEvent::Oom);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pump>> {
        self.pump.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_then_the_rate() {
        let mut r = RateLimit::new(5, Duration::from_millis(50));
        let allowed = (0..10_000).filter(|_| r.allow()).count();
        assert_eq!(allowed, 5);
        std::thread::sleep(Duration::from_millis(120));
        let allowed = (0..10_000).filter(|_| r.allow()).count();
        assert_eq!(allowed, 2);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<TaskEvent>>);
    impl EventSink for Recorder {
        fn publish(&self, ev: TaskEvent) {
            self.0.lock().unwrap().push(ev);
        }
    }

    #[tokio::test]
    async fn pending_events_are_flushed_before_whatever_follows() {
        let rec = Arc::new(Recorder::default());
        let (tx, rx) = mpsc::channel(8);
        let guest = GuestEvents::start(rec.clone(), Some(rx));
        for _ in 0..3 {
            tx.try_send(AgentEvent::Oom {
                container_id: String::new(),
            })
            .unwrap();
        }
        // No await in between: the pump has not run, the flush must see all three.
        guest.forward_pending();
        assert_eq!(*rec.0.lock().unwrap(), vec![TaskEvent::Oom; 3]);
    }
}
