//! How a container's files reach its VM: its root filesystem ([`rootfs`]),
//! the image cache of read-only layers and each container's writable layer
//! ([`layers`]), dom0 loop devices ([`loopdev`]) and mounts ([`mounts`]), and host directories
//! shared over 9p ([`binds`]).

pub mod binds;
pub mod layers;
pub mod loopdev;
pub mod mounts;
pub mod rootfs;
