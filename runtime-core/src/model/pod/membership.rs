//! Who is in a pod's VM: each app container's disk slot and limits, and the
//! VM size they add up to (the pod's base plus every container's limits,
//! within the maximums the VM was created with).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::hypervisor::Sizing;

/// The vdevs app containers' rootfs disks get, in order (`xvdb` is a
/// standalone container's rootfs, so a pod starts at `xvdc`); a layered
/// rootfs takes two (its read-only image and its writable layer).
const FIRST_VDEV: u8 = b'c';
const LAST_VDEV: u8 = b'z';

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    vdevs: Vec<String>,
    memory_mib: u64,
    vcpus: u32,
}

#[derive(Debug)]
pub struct Membership {
    base: Sizing,
    members: BTreeMap<String, Member>,
}

impl Membership {
    pub fn new(base: Sizing) -> Self {
        Self {
            base,
            members: BTreeMap::new(),
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    /// Add a container: its `disks` slots (0, 1 or 2) and its limits.
    pub fn join(
        &mut self,
        id: &str,
        disks: usize,
        memory_mib: Option<u64>,
        vcpus: Option<u32>,
    ) -> Result<Vec<String>> {
        if self.members.contains_key(id) {
            return Err(Error::AlreadyExists(format!(
                "container {id} is already in the pod"
            )));
        }
        let vdevs: Vec<String> = self.free_vdevs().take(disks).collect();
        if vdevs.len() < disks {
            return Err(Error::ResourceExhausted(format!(
                "the pod's VM has no {disks} free disk slots for container {id} ({} disks at most)",
                LAST_VDEV - FIRST_VDEV + 1
            )));
        }
        self.members.insert(
            id.into(),
            Member {
                vdevs: vdevs.clone(),
                memory_mib: memory_mib.unwrap_or(0),
                vcpus: vcpus.unwrap_or(0),
            },
        );
        Ok(vdevs)
    }

    pub fn leave(&mut self, id: &str) {
        self.members.remove(id);
    }

    /// New limits of a member (Update); unknown ids are not members.
    pub fn set_limits(&mut self, id: &str, memory_mib: Option<u64>, vcpus: Option<u32>) {
        if let Some(m) = self.members.get_mut(id) {
            m.memory_mib = memory_mib.unwrap_or(m.memory_mib);
            m.vcpus = vcpus.unwrap_or(m.vcpus);
        }
    }

    fn free_vdevs(&self) -> impl Iterator<Item = String> + '_ {
        (FIRST_VDEV..=LAST_VDEV)
            .map(|c| format!("xvd{}", c as char))
            .filter(|v| !self.members.values().any(|m| m.vdevs.contains(v)))
    }

    /// The VM size the members ask for: the base plus their limits, capped
    /// at the VM's maximums (the cap is logged by the caller).
    pub fn wanted(&self) -> (u64, u32) {
        let memory: u64 = self.members.values().map(|m| m.memory_mib).sum();
        let vcpus: u32 = self.members.values().map(|m| m.vcpus).sum();
        (
            self.base
                .memory_mib
                .saturating_add(memory)
                .min(self.base.max_memory_mib),
            self.base
                .vcpus
                .saturating_add(vcpus)
                .clamp(1, self.base.max_vcpus),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Sizing {
        Sizing {
            memory_mib: 256,
            max_memory_mib: 1024,
            vcpus: 1,
            max_vcpus: 2,
        }
    }

    #[test]
    fn disks_take_the_lowest_free_slots_and_come_back() {
        let mut m = Membership::new(base());
        assert_eq!(m.join("a", 1, None, None).unwrap(), ["xvdc"]);
        assert_eq!(m.join("b", 2, None, None).unwrap(), ["xvdd", "xvde"]);
        assert!(m.join("dir", 0, None, None).unwrap().is_empty());
        assert!(m.join("a", 1, None, None).is_err());
        m.leave("a");
        m.leave("b");
        assert_eq!(m.join("c", 2, None, None).unwrap(), ["xvdc", "xvdd"]);
        for i in 0..11 {
            m.join(&format!("x{i}"), 2, None, None).unwrap();
        }
        let e = m.join("full", 1, None, None).unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)), "{e}");
        assert!(m.join("none", 0, None, None).is_ok());
    }

    #[test]
    fn the_vm_grows_by_the_members_limits_within_its_maximums() {
        let mut m = Membership::new(base());
        assert_eq!(m.wanted(), (256, 1));
        m.join("a", 1, Some(128), Some(1)).unwrap();
        assert_eq!(m.wanted(), (384, 2));
        m.join("b", 2, Some(2048), Some(4)).unwrap();
        assert_eq!(m.wanted(), (1024, 2));
        m.leave("b");
        m.set_limits("a", Some(64), None);
        assert_eq!(m.wanted(), (320, 2));
    }
}
