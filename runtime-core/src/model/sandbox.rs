//! A sandbox: one VM and the connection to the agent inside it. It knows how
//! the VM is sized, whether it is frozen, and how to end it; it knows nothing
//! of containers (they hold a sandbox and speak to its agent).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vxn_wire::boot;

use crate::client::Timeouts;
use crate::error::{Error, Result};
use crate::hypervisor::{HotDisk, Hypervisor, Resize, Sizing, VmSpec};
use crate::AgentClient;

/// Timeouts for talking to a sandbox's agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentTimeouts {
    /// From unpausing a new VM to the agent's hello.
    pub hello: Duration,
    /// Any call but Wait.
    pub call: Duration,
}

pub struct Sandbox {
    domain: String,
    hv: Arc<dyn Hypervisor>,
    agent: AgentClient,
    /// The VM is paused (by us at create, or for the user).
    frozen: Mutex<bool>,
    size: Mutex<Sizing>,
    /// Held while the VM is destroyed to end its processes; exits wait for it.
    destroying: tokio::sync::Mutex<()>,
}

/// Unpause the VM while its agent channel is awaited, then the agent's hello
/// (within `hello`): the one way a sandbox's VM starts to run.
async fn run_to_agent(
    hv: &dyn Hypervisor,
    name: &str,
    channel: crate::hypervisor::AgentConnect,
    hello: Duration,
) -> Result<AgentClient> {
    let t = std::time::Instant::now();
    let connecting = tokio::spawn(crate::hypervisor::connect_agent(channel, hello));
    hv.unpause(name).await?;
    let agent = connecting
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Unavailable(format!("guest agent of {name}: {e}")))?;
    tracing::info!(
        agent = agent.agent_software(),
        took_ms = t.elapsed().as_millis() as u64,
        "timing: agent ready"
    );
    Ok(agent)
}

/// What a VM made earlier is when it is claimed.
#[derive(Debug, Clone, Copy)]
pub struct Booted {
    /// Running (a pooled VM waits running), not paused.
    pub running: bool,
    pub memory_mib: u64,
    pub vcpus: u32,
}

/// Size a claimed VM (what differs from its boot size: each xl call costs)
/// and plug in the container's disks and vif, all at once (libxl orders
/// what must be ordered; the hotplug scripts run side by side). Every step
/// runs to its end, then the first error is returned.
async fn fit(hv: &dyn Hypervisor, vm: &VmSpec, sizing: Sizing, now: Booted) -> Result<()> {
    let name = vm.name.as_str();
    let change = Resize {
        memory_mib: Some(sizing.memory_mib).filter(|m| *m != now.memory_mib),
        vcpus: Some(sizing.vcpus).filter(|n| *n != now.vcpus),
    };
    let resize = async {
        match change {
            Resize {
                memory_mib: None,
                vcpus: None,
            } => Ok(()),
            change => hv.resize(name, change).await,
        }
    };
    let disks = [
        (boot::ROOTFS_VDEV, &vm.rootfs_disk, vm.rootfs_writable),
        (boot::UPPER_VDEV, &vm.upper_disk, true),
    ]
    .into_iter()
    .filter_map(|(vdev, target, writable)| {
        let disk = HotDisk {
            vdev: vdev.into(),
            target: target.clone()?,
            writable,
        };
        Some(async move { hv.attach_disk(name, &disk).await })
    });
    let vif = async {
        match &vm.vif {
            Some(vif) => hv.attach_vif(name, vif).await.map(drop),
            None => Ok(()),
        }
    };
    let (resized, attached, vif) = tokio::join!(resize, futures::future::join_all(disks), vif);
    resized?;
    attached.into_iter().try_for_each(|a| a)?;
    vif?;
    Ok(())
}

impl Sandbox {
    /// Create the VM paused, run it until its agent answers, and freeze it
    /// again: nothing of a container runs before its Start. On error the
    /// domain may exist: the caller recorded its name and tears it down.
    pub async fn boot(
        hv: Arc<dyn Hypervisor>,
        vm: &VmSpec,
        sizing: Sizing,
        timeouts: AgentTimeouts,
    ) -> Result<Self> {
        let t = std::time::Instant::now();
        let channel = hv.create_paused(vm).await?;
        tracing::info!(domain = %vm.name, took_ms = t.elapsed().as_millis() as u64, "timing: create paused");
        let agent = run_to_agent(hv.as_ref(), &vm.name, channel, timeouts.hello).await?;
        Ok(Self::with_agent(&vm.name, hv, agent, sizing, timeouts))
    }

    /// Take a booted VM made earlier (a claimed pooled VM, already renamed to
    /// `vm.name`): size it and plug in the container's disks and vif, all at
    /// once, and reach its agent. A `running` VM's agent is reached and its
    /// frontends connect the devices while the rest is plugged in; a paused
    /// one (pooled by an older vxn) is fitted first and then run. On error
    /// the domain exists: the caller recorded it and tears it down.
    pub async fn adopt(
        hv: Arc<dyn Hypervisor>,
        vm: &VmSpec,
        sizing: Sizing,
        timeouts: AgentTimeouts,
        now: Booted,
    ) -> Result<Self> {
        let t = std::time::Instant::now();
        let name = vm.name.as_str();
        let running = now.running;
        let agent = if running {
            let reach = async {
                let channel = hv.connect_agent(name).await?;
                crate::hypervisor::connect_agent(channel, timeouts.hello)
                    .await
                    .map_err(|e| Error::Unavailable(format!("guest agent of {name}: {e}")))
            };
            // every step runs to its end (no xl call is cut short), then the first error
            let (fitted, agent) = tokio::join!(fit(hv.as_ref(), vm, sizing, now), reach);
            fitted?;
            agent?
        } else {
            fit(hv.as_ref(), vm, sizing, now).await?;
            let channel = hv.connect_agent(name).await?;
            run_to_agent(hv.as_ref(), name, channel, timeouts.hello).await?
        };
        tracing::info!(domain = %name, running, took_ms = t.elapsed().as_millis() as u64, "timing: pooled VM fitted");
        Ok(Self::with_agent(name, hv, agent, sizing, timeouts))
    }

    fn with_agent(
        domain: &str,
        hv: Arc<dyn Hypervisor>,
        mut agent: AgentClient,
        sizing: Sizing,
        timeouts: AgentTimeouts,
    ) -> Self {
        agent.set_timeouts(Timeouts {
            call: timeouts.call,
            ..Timeouts::default()
        });
        Self {
            domain: domain.into(),
            hv,
            agent,
            frozen: Mutex::new(false),
            size: Mutex::new(sizing),
            destroying: tokio::sync::Mutex::new(()),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn hypervisor(&self) -> &dyn Hypervisor {
        self.hv.as_ref()
    }

    /// The backend, for what outlives a borrow of the sandbox (a create's undo).
    pub(crate) fn shared_hypervisor(&self) -> Arc<dyn Hypervisor> {
        self.hv.clone()
    }

    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn frozen(&self) -> MutexGuard<'_, bool> {
        self.frozen.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_frozen(&self) -> bool {
        *self.frozen()
    }

    /// Freeze the VM (a no-op when it is).
    pub async fn freeze(&self) -> Result<()> {
        if self.is_frozen() {
            return Ok(());
        }
        self.hv.pause(&self.domain).await?;
        *self.frozen() = true;
        Ok(())
    }

    /// Let the VM run (a no-op when it does: Xen refuses to unpause a running domain).
    pub async fn thaw(&self) -> Result<()> {
        if !self.is_frozen() {
            return Ok(());
        }
        self.hv.unpause(&self.domain).await?;
        *self.frozen() = false;
        Ok(())
    }

    pub fn size(&self) -> Sizing {
        *self.size.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Memory through the balloon, vcpus online, within the maximums fixed at
    /// create; beyond them is InvalidArgument. The same size again is a no-op.
    pub async fn resize(&self, memory_mib: Option<u64>, vcpus: Option<u32>) -> Result<()> {
        let cur = self.size();
        if let Some(m) = memory_mib.filter(|m| *m > cur.max_memory_mib) {
            return Err(Error::InvalidArgument(format!(
                "memory {m} MiB is above the maximum of domain {} ({} MiB; max_memory_factor in /etc/vxn/config.toml sets the headroom)",
                self.domain, cur.max_memory_mib
            )));
        }
        if let Some(n) = vcpus.filter(|n| *n > cur.max_vcpus) {
            return Err(Error::InvalidArgument(format!(
                "{n} vcpus is above the maximum of domain {} ({}; max_vcpus in /etc/vxn/config.toml)",
                self.domain, cur.max_vcpus
            )));
        }
        let resize = Resize {
            memory_mib: memory_mib.filter(|m| *m != cur.memory_mib),
            vcpus: vcpus.filter(|n| *n != cur.vcpus),
        };
        if resize == Resize::default() {
            return Ok(());
        }
        self.hv.resize(&self.domain, resize).await?;
        let mut size = self.size.lock().unwrap_or_else(|p| p.into_inner());
        size.memory_mib = resize.memory_mib.unwrap_or(size.memory_mib);
        size.vcpus = resize.vcpus.unwrap_or(size.vcpus);
        tracing::info!(memory_mib = size.memory_mib, vcpus = size.vcpus, "resized");
        Ok(())
    }

    pub async fn cpu_time(&self) -> Option<Duration> {
        self.hv.cpu_time(&self.domain).await
    }

    /// Destroy the VM: every process in it ends (their Waits fail, and they
    /// are reported with SIGKILL's status once this returns).
    pub async fn destroy(&self) -> Result<()> {
        let _destroying = self.destroying.lock().await;
        tracing::warn!(domain = %self.domain, "destroying the domain");
        let destroyed = self.hv.destroy(&self.domain).await;
        self.agent.close();
        Ok(destroyed?)
    }

    /// Returns once no destroy is under way: an exit caused by a destroy is
    /// told after it, so the Kill that asked for it is answered first.
    pub async fn settled(&self) {
        let _ = self.destroying.lock().await;
    }

    /// Stop talking to the agent (the VM is about to go).
    pub fn disconnect(&self) {
        self.agent.close();
    }
}
