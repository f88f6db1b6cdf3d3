//! Sinks: saves to stores without transactions that never replace newer output with older.
//!
//! A pipeline's `save` runs at least once per key, and sometimes in two holders at once: a
//! process paused past its lease (a GC pause, SIGSTOP, a slow network) still sends its write
//! after the key's next holder saved; a poll snapshot read before a record changed is
//! processed after the newer one. A plain overwrite then leaves the older output in place
//! for good. The ledger narrows these windows (no `save` begins past the lease's deadline,
//! [`Attempt::deadline`](crate::Attempt::deadline); ordered versions older than the newest
//! accepted one are refused); only a write that is conditional on the store's side closes
//! them.
//!
//! [`ObjectSink`] (feature `object-store`) does that for object stores — S3, GCS, Azure, or
//! any [`object_store::ObjectStore`]: every object carries a [`Stamp`] (the record's version
//! and the lease's fencing token) in its metadata, and a save writes with a compare-and-swap
//! on the object's ETag only if its stamp is not older than the one in place.
//! [`Saved::Superseded`] tells the caller that a newer save is already there.

mod error;
mod object;
mod stamp;

pub use error::SinkError;
pub use object::{ObjectSink, Saved};
pub use stamp::Stamp;
