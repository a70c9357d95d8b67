//! The crate's error type.

use std::io;

/// Which of the two rings an error is about, named as in `struct vchan_interface`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingName {
    /// Client writes, server reads.
    Left,
    /// Server writes, client reads.
    Right,
}

impl std::fmt::Display for RingName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RingName::Left => "left",
            RingName::Right => "right",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VchanError {
    /// A ring order outside what libxenvchan allows (10..=20).
    #[error("{ring} ring order {order} is outside {min}..={max}")]
    BadOrder {
        ring: RingName,
        order: u16,
        min: u16,
        max: u16,
    },
    /// Both rings would sit at the same place inside the control page.
    #[error("both rings have order {0}: only one ring may live inside the control page per slot")]
    OverlappingRings(u16),
    /// The grant list would run into an in-page ring or off the page.
    #[error("{count} grant refs end at byte {end} of the control page, past the limit {limit}")]
    GrantsOverflow {
        count: usize,
        end: usize,
        limit: usize,
    },
    /// A server asked for a ring bigger than the protocol allows.
    #[error("a {requested}-byte ring is over the {max}-byte maximum")]
    RingTooLarge { requested: usize, max: usize },
    /// The peer's producer/consumer indices are inconsistent. libxenvchan
    /// silently locks the ring up in this case; we report it.
    #[error("peer broke the {ring} ring: prod {prod} - cons {cons} is over the ring size {size}")]
    BadIndices {
        ring: RingName,
        prod: u32,
        cons: u32,
        size: u32,
    },
    /// A shared-memory region the backend handed us is unusable.
    #[error("shared memory: {0}")]
    Memory(String),
    /// Sharing or mapping grants failed in the backend.
    #[error("grant: {0}")]
    Grant(String),
    /// The event channel failed.
    #[error("event channel: {0}")]
    Event(#[source] io::Error),
    /// The peer has closed its end (its `*_live` byte is 0).
    #[error("the peer closed the vchan")]
    PeerClosed,
    /// This end was closed locally.
    #[error("the vchan is closed")]
    Closed,
}

impl From<VchanError> for io::Error {
    fn from(e: VchanError) -> io::Error {
        let kind = match &e {
            VchanError::PeerClosed | VchanError::Closed => io::ErrorKind::BrokenPipe,
            VchanError::BadIndices { .. }
            | VchanError::BadOrder { .. }
            | VchanError::OverlappingRings(_)
            | VchanError::GrantsOverflow { .. } => io::ErrorKind::InvalidData,
            VchanError::RingTooLarge { .. } => io::ErrorKind::InvalidInput,
            VchanError::Event(inner) => inner.kind(),
            VchanError::Memory(_) | VchanError::Grant(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

pub type Result<T, E = VchanError> = std::result::Result<T, E>;
