//! What can go wrong when executing a command.

use std::time::Duration;

use crate::{
    backend::{Conflict, IdempotencyKey, RequestFingerprint, StoreError},
    command::{EncodeError, FoldError, UndeclaredStream, Unwritable},
};

/// Why a command execution failed.
///
/// The command's own rejection ([`ExecuteError::Rejected`], its domain error) is kept apart from
/// concurrency that outlasted the retry policy ([`ExecuteError::Conflict`]) and from technical
/// failures of the store or of serialization.
///
/// ```
/// use eventcore::ExecuteError;
/// let e: ExecuteError<std::fmt::Error> = ExecuteError::Rejected(std::fmt::Error);
/// assert!(e.rejection().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The command said no. Nothing was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Other writers kept changing the command's streams; the retry policy ran out. Nothing
    /// was written under the command's idempotency key: a keyed command whose key committed
    /// (in an earlier attempt whose reply was lost, say) answers with that commit instead.
    #[error("gave up after {attempts} attempts: {last}")]
    Conflict {
        /// Attempts made.
        attempts: u32,
        /// The last conflict seen.
        last: Conflict,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be read as its slot's type.
    #[error(transparent)]
    Fold(#[from] FoldError),
    /// An emitted event could not be serialized. Nothing was written.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The decision was given a [`Target`](crate::Target) taken from another decision, naming
    /// a stream its slot is not bound to here: a bug in the command, not a rejection. Nothing
    /// was written. Targets from this decision's own [`targets`](crate::Decision::targets)
    /// never cause it.
    #[error(transparent)]
    UndeclaredStream(#[from] UndeclaredStream),
    /// The execution took longer than the executor's timeout. If the timeout struck during the
    /// append, the append may or may not have committed: retry with an idempotency key.
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    /// Two event types of the process store under one name, and this command uses the one that
    /// a command used second (commands using the first keep running). Checked the first time a
    /// command of its shape runs, and refused every time after; nothing was read or written.
    #[error(transparent)]
    EventTypeClash(#[from] super::EventTypeClash),
    /// The command's idempotency key was first used by another request: another command, or
    /// the same command over other streams (their [`RequestFingerprint`]s differ). Nothing was
    /// written, and the first request's commit stands; answering this request with that commit
    /// would have dropped it while telling its caller it was done. A key names one request:
    /// make a new one for each.
    #[error(
        "idempotency key `{key}` was first used by another request ({first}); this request is \
         {this}: nothing was written"
    )]
    KeyReused {
        /// The key.
        key: IdempotencyKey,
        /// The request it was first used for, as stored with it.
        first: RequestFingerprint,
        /// This request.
        this: RequestFingerprint,
    },
}

impl<E> From<Unwritable> for ExecuteError<E> {
    fn from(e: Unwritable) -> Self {
        match e {
            Unwritable::Encode(e) => Self::Encode(e),
            Unwritable::Undeclared(e) => Self::UndeclaredStream(e),
        }
    }
}

impl<E> ExecuteError<E> {
    /// The command's own rejection, if that is what this is.
    ///
    /// ```
    /// let e: eventcore::ExecuteError<String> = eventcore::ExecuteError::Timeout(std::time::Duration::ZERO);
    /// assert!(e.rejection().is_none());
    /// ```
    pub fn rejection(&self) -> Option<&E> {
        match self {
            Self::Rejected(e) => Some(e),
            _ => None,
        }
    }
}
