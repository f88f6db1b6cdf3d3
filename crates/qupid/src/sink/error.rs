//! What can go wrong in a save to an object store.

/// Why an [`ObjectSink`](super::ObjectSink) save failed. Nothing was written, or — for
/// [`Write`](SinkError::Write) — the store may not say whether the write landed (a lost
/// response); saving again with the same stamp is harmless either way.
///
/// The object store's own error, when there is one, is the [`source`](std::error::Error::source)
/// (and its text ends the message, so a log line or a ledger's "last error" says why).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The current object (its ETag and metadata) could not be read.
    #[error("cannot read the object at {path} before writing it: {source}")]
    Read {
        /// The object's path.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The write failed (not a lost race: the store refused it or could not be reached).
    #[error("cannot write the object at {path}: {source}")]
    Write {
        /// The object's path.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The store cannot write conditionally (`PutMode::Create` / `PutMode::Update`): an S3
    /// client built with `S3ConditionalPut::Disabled`, or a backend without them (the local
    /// file system). The sink never falls back to an unconditional write.
    #[error(
        "the store cannot write {path} conditionally, which a safe save needs \
         (for S3: a store that honours If-Match and If-None-Match, and \
         `aws_conditional_put` left at `etag`): {source}"
    )]
    Unsupported {
        /// The object's path.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// Other writers changed the object between this save's read and its write more times in
    /// a row than allowed ([`ObjectSink::max_races`](super::ObjectSink::max_races)). Nothing
    /// was written; trying again later may succeed.
    #[error(
        "gave up saving {path}: other writers changed it between the read and the write \
         {races} times in a row: {source}"
    )]
    Contended {
        /// The object's path.
        path: String,
        /// How many races were lost.
        races: u32,
        /// The store's answer to the last conditional write.
        source: object_store::Error,
    },
    /// The object exists but the store gave no ETag or version to make the write
    /// conditional on.
    #[error("the store returned no ETag for {path}, so it cannot be replaced conditionally")]
    NoETag {
        /// The object's path.
        path: String,
    },
    /// The object's stamp (its `qupid-token` and `qupid-version` metadata) cannot be read:
    /// it was changed by hand or by another program. Nothing was written over it.
    #[error("the object at {path} has a stamp that cannot be read: {why}")]
    InvalidStamp {
        /// The object's path.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

impl SinkError {
    /// Whether the same save may succeed if tried again later: a lost race, or a store that
    /// could not be reached or answered with an error other than a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Contended { .. } => true,
            SinkError::Read { source, .. } | SinkError::Write { source, .. } => !matches!(
                source,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            SinkError::Unsupported { .. }
            | SinkError::NoETag { .. }
            | SinkError::InvalidStamp { .. } => false,
        }
    }
}
