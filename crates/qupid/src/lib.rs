//! qupid (temporary docs)
#![warn(missing_docs)]

pub mod clock;
mod error;
mod key;
pub mod ledger;
mod policy;

pub use error::{BoxError, Error, ErrorKind, Result};
pub use key::{Entry, Key, Offer, Version, MAX_KEY_LEN};
pub use ledger::{Ledger, MemoryLedger, State};
pub use policy::{Blocking, Keep, NewerVersions, Policy, Retention};
pub mod observe;
pub mod queue;
pub use queue::{Job, Published, Queue};
pub mod pipeline;
pub use pipeline::{Attempt, Backoff, Pipeline, PipelineBuilder, Progress, Report, Source};
