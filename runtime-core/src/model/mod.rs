//! The model: a [`sandbox`] (one VM and its agent) holds a [`container`]
//! (rootfs, mounts, network) that holds [`process`]es, each with its state
//! machine; a CRI [`pod`] is one sandbox shared by its containers; a
//! front-end's [`task`] is a container or a pod's sandbox, and gives each
//! container an [`events`] sink. The model reaches
//! VMs only through [`crate::hypervisor::Hypervisor`].

pub(crate) mod boot;
pub mod container;
pub mod events;
pub mod netns_follow;
pub mod pod;
pub mod process;
pub mod sandbox;
pub mod task;
