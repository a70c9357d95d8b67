//! The warm pool (docs/warm-pool.md): booted, idle VMs with no tenant data,
//! claimed by a container's create instead of booting one.

pub mod fill;
mod orphans;
pub mod refill;
pub mod store;
pub mod uppers;

pub use fill::{drain, drained, fill, FillPlan, Filled, Platform, PoolError, BOOT_VCPUS};
pub use store::{claimed, PoolStore, PoolStoreError, Pooled, Shape, CLAIM_FILE};
