//! One execution: attempts under the retry policy, each reading, deciding (with its discovery
//! rounds) and appending.

use super::*;
use crate::backend::{Handed, RequestFingerprint, StoredSnapshot, Turn};
use drive::{Drive, Rejection, Step, Stop};

pub(super) enum Failure<E> {
    /// A rejection, or a decision to write nothing, made on cached streams: decide again on
    /// fresh reads before answering.
    Unverified,
    Conflict(Conflict),
    Store {
        error: StoreError,
        retryable: bool,
    },
    Fatal(ExecuteError<E>),
    /// A keyed command rejected, or writing nothing, because an earlier run with its key
    /// committed: that run's result answers it.
    Replayed(Committed),
}

impl<E> From<StoreError> for Failure<E> {
    /// Classifies an append failure. Whether a transient one may be retried depends on the
    /// command's idempotency key, which the retry loop checks.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(c) => Failure::Conflict(c),
            error => Failure::Store { retryable: false, error },
        }
    }
}

impl<B: Backend> Executor<B> {
    /// Runs a command (erased behind `drive`) under the retry policy.
    pub(super) async fn run(
        &self,
        drive: &mut dyn Drive,
        pass: Pass<'_>,
        taken: &mut Option<StoredSnapshot>,
        span: &tracing::Span,
    ) -> Result<Executed, ExecuteError<Rejection>> {
        let key = pass.key;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(drive, &pass, taken, span, attempt).await;
            // A snapshot taken by this attempt is stored before the next one reads.
            if outcome.is_err() {
                if let Some(snapshot) = taken.take() {
                    // Within the execution's timeout, which bounds this run.
                    self.save_snapshot(snapshot, None).await;
                }
            }
            if !span.is_disabled() {
                span.record("attempts", attempt);
            }
            let failure = match outcome {
                Ok(committed) => return Ok(Executed { committed, attempts: attempt }),
                Err(failure) => failure,
            };
            let last = attempt >= self.retry.max_attempts();
            let cause = match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Replayed(committed) => {
                    return Ok(Executed { committed, attempts: attempt });
                }
                // `attempt` decides again on fresh reads, which are never unverified.
                Failure::Unverified => {
                    return Err(ExecuteError::Store(StoreError::Other(
                        "unverified outcome on fresh reads".into(),
                    )));
                }
                // On the companion's stream, which the command does not read, it conflicts again
                // however often it is tried: the version expected is the caller's.
                Failure::Conflict(conflict) if last || pass.on_companion(&conflict) => {
                    return Err(ExecuteError::Conflict { attempts: attempt, last: conflict });
                }
                Failure::Conflict(conflict) => {
                    tracing::debug!(%conflict, attempt, "conflict; retrying");
                    "conflict"
                }
                // Reads are always safe to retry after a transient failure. A transient failure
                // during the append may have committed: only an idempotency key makes running
                // the command again safe.
                Failure::Store { error, retryable }
                    if last || !(retryable || (error.is_transient() && key.is_some())) =>
                {
                    return Err(ExecuteError::Store(error));
                }
                Failure::Store { error, .. } => {
                    tracing::debug!(%error, attempt, "transient store failure; retrying");
                    "store"
                }
            };
            tokio::time::sleep(self.retry.delay_after(attempt)).await;
            // Counted once it is made: the timeout may end the execution during the backoff.
            crate::metrics::retried(pass.name, cause);
        }
    }

    pub(super) async fn attempt(
        &self,
        drive: &mut dyn Drive,
        pass: &Pass<'_>,
        taken: &mut Option<StoredSnapshot>,
        span: &tracing::Span,
        attempt: u32,
    ) -> Result<Committed, Failure<Rejection>> {
        // The usual handful of streams inline: no allocation for them.
        let mut ids = drive::StreamIds::new();
        drive.bind(Some(&mut ids));
        // Once per execution.
        if attempt == 1 && !span.is_disabled() {
            span.record("streams", tracing::field::debug(&ids));
        }
        // Commands over the same streams take turns rather than race: wait for this command's
        // turn on its declared streams in this process, then for a hold across processes on
        // those the store asks to hold. Both are kept until the append has answered, the
        // second pass below included, and let go before any backoff. They only order
        // commands: the append checks every stream read all the same.
        let mut turn = self.backend.stream_queue().enter(&ids).await;
        // What the last holder handed over (taken in any case, so that nothing is left behind
        // for streams nobody reads); a stream cache or a snapshot serves the reads instead.
        let mut handed = turn.take(&ids);
        if self.cache.is_some() || pass.snap.is_some() {
            handed.clear();
        }
        let _hold = self
            .backend
            .hold(&ids)
            .await
            .map_err(|error| Failure::Store { retryable: error.is_transient(), error })?;
        let mut turn = Queued { turn, handed };
        // What a keyed command's key is used for: stored with it, and compared with what a
        // replay finds stored.
        let fingerprint =
            pass.key.map(|_| RequestFingerprint::of_request(pass.name, &ids, pass.fields));
        let pass = &Pass { fingerprint: fingerprint.as_ref(), ..*pass };
        let outcome = match self.decide_and_append(drive, &ids, pass, true, taken, &mut turn).await
        {
            // Decided on cached streams without an append to check them, or the append found a
            // cached stream out of date: decide again at once on fresh reads, which answer for
            // themselves. This is not a retry under the policy: the cache was behind, nothing
            // contended.
            Err(Failure::Unverified) => {
                tracing::debug!("decided on cached streams; deciding again on fresh reads");
                // Nothing comes from the cache on this pass, so it is never `Unverified` (`run`
                // turns one into an error).
                drive.bind(None);
                self.decide_and_append(drive, &ids, pass, false, taken, &mut turn).await
            }
            outcome => outcome,
        };
        // The conflict the retry policy gives up on. A keyed command may have committed all the
        // same: in an earlier attempt whose reply was lost (this attempt then conflicted before
        // its append could find the key: a stream read in two rounds moved between them), or
        // as the same request sent elsewhere. Then its commit answers, as for a rejection.
        let outcome = match (outcome, pass.key) {
            (Err(Failure::Conflict(conflict)), Some(key))
                if attempt >= self.retry.max_attempts() || pass.on_companion(&conflict) =>
            {
                match self.find_committed(key).await {
                    Ok(Some(committed)) => Err(Failure::Replayed(committed)),
                    Ok(None) => Err(Failure::Conflict(conflict)),
                    Err(failure) => Err(failure),
                }
            }
            (outcome, _) => outcome,
        };
        match outcome {
            Ok(committed) if committed.replayed => {
                reused(pass, &committed).map_or(Ok(committed), |e| Err(Failure::Fatal(e)))
            }
            Err(Failure::Replayed(committed)) => {
                Err(reused(pass, &committed).map_or(Failure::Replayed(committed), Failure::Fatal))
            }
            outcome => outcome,
        }
    }

    /// One pass: read, fold, decide (discovering as asked), append. With `use_cache`, streams
    /// come from the cache where it has them; then an outcome that no append checks, or a
    /// conflict on a stream the cache served, is [`Failure::Unverified`]. Without, every stream
    /// is read from the backend. Streams handed over with the turn are read on top of what was
    /// handed over; after a commit, the declared streams are handed over to a command waiting
    /// for them.
    pub(super) async fn decide_and_append(
        &self,
        drive: &mut dyn Drive,
        ids: &[StreamId],
        pass: &Pass<'_>,
        use_cache: bool,
        taken: &mut Option<StoredSnapshot>,
        turn: &mut Queued<'_>,
    ) -> Result<Committed, Failure<Rejection>> {
        let Pass { context, companion, key, snap, fingerprint, .. } = *pass;
        // The streams the cache served (or took to be empty): decisions on them need checking.
        let mut served = read::Served::default();
        // With snapshots, the declared streams start from the stored snapshot unless the cache
        // holds them all (then it has every event, decoded).
        let (reads, base) = match snap {
            Some(snap) if !(use_cache && self.caches_all(ids)) => {
                let read = self.read_snapshotted(ids, snap, drive, use_cache, &mut served).await?;
                (read.reads, Some(read.base))
            }
            _ if !turn.handed.is_empty() => {
                (self.read_handed(ids, std::mem::take(&mut turn.handed)).await?, None)
            }
            _ => (self.read(ids, use_cache, &mut served).await?, None),
        };
        let unverified = |failure, served: &read::Served| match failure {
            Failure::Conflict(_) if !served.is_empty() => Failure::Unverified,
            failure => failure,
        };
        let mut read_set = ReadSet::default();
        // The declared streams, and room for a companion: no regrowth in the common case.
        read_set.versions.reserve(ids.len() + 1);
        read_set.record(reads.streams()).map_err(|f| unverified(f, &served))?;

        drive.fold(&mut reads.iter()).map_err(|e| Failure::Fatal(ExecuteError::Fold(e)))?;
        // A snapshot is taken only of what the store answered (never of cached streams).
        if let (Some(snap), Some(base), true) = (snap, &base, served.is_empty()) {
            *taken = drive::take_snapshot(drive, snap, &reads, base);
        }
        // Kept to be handed over after the append, when commands queue for these streams.
        let declared = reads;

        let stamp = || context.stamp();
        let mut step = drive.decide(&stamp);
        let mut writes: Writes = loop {
            match step {
                Ok(Step::Decided(writes)) => break writes,
                Ok(Step::Discover) => {
                    let new_ids = drive.round_ids().to_vec();
                    let reads = self.read(&new_ids, use_cache, &mut served).await?;
                    read_set.record(reads.streams()).map_err(|f| unverified(f, &served))?;
                    step = drive.resume(&mut reads.iter(), &stamp);
                }
                Err(Stop::Rejected) => {
                    let rejection = if served.is_empty() {
                        Failure::Fatal(ExecuteError::Rejected(Rejection))
                    } else {
                        Failure::Unverified
                    };
                    return Err(self.replay_or(key, rejection).await);
                }
                Err(Stop::Fold(e)) => return Err(Failure::Fatal(ExecuteError::Fold(e))),
                Err(Stop::Unwritable(e)) => return Err(Failure::Fatal(e.into())),
                Err(Stop::Broken(why)) => {
                    return Err(Failure::Fatal(ExecuteError::Store(StoreError::Other(why.into()))));
                }
            }
        };
        // A command that writes nothing commits nothing under its key, with a companion as
        // without one: the companion's events alone do not store the key (sent again, the
        // command runs afresh), and a key that committed before answers for the command.
        let keyed = !writes.is_empty();
        if let Some(companion) = companion {
            if let (false, Some(key)) = (keyed, key) {
                if let Some(committed) = self.find_committed(key).await? {
                    return Ok(committed);
                }
            }
            read_set.versions.push((companion.stream.clone(), companion.expected));
            writes.push((companion.stream.clone(), companion.events.clone()));
        }
        if writes.is_empty() {
            if !served.is_empty() {
                return Err(Failure::Unverified);
            }
            // A keyed command that now decides to write nothing may be one sent again after
            // its first run committed (and changed what it decides on): answer with that run.
            return match key {
                Some(key) => Ok(self.find_committed(key).await?.unwrap_or_default()),
                None => Ok(Committed::default()),
            };
        }
        // Each stream the cache served is expected to still hold the last event the cache
        // has of it (see `Served::last_events`); streams read now need no such check.
        let request = AppendRequest {
            expected: read_set.versions,
            expected_events: served.last_events,
            writes,
            idempotency_key: key.filter(|_| keyed).cloned(),
            fingerprint: fingerprint.filter(|_| keyed).cloned(),
        };
        let Some(cache) = &self.cache else {
            if !turn.turn.contended() || pass.snap.is_some() {
                return Ok(self.backend.append(request).await?);
            }
            let committed = self.backend.append(request.clone()).await?;
            turn.hand_over(declared, &request, &committed);
            return Ok(committed);
        };
        // Let go of this pass's share of the cached streams before the append: the cache then
        // holds the only one, and extends each written stream in place after the commit rather
        // than copying all of its events to add the new ones.
        drop(declared);
        // The cache needs the request after the backend took it. An append that never answers
        // (its future dropped by the timeout or the caller) may have committed: forgotten too.
        let mut unanswered = Unanswered { cache, request: Some(&request) };
        let answer = self.backend.append(request.clone()).await;
        unanswered.request = None;
        match answer {
            Ok(committed) => {
                cache.committed(&request, &committed);
                Ok(committed)
            }
            Err(error) => {
                cache.forget_request(&request);
                match error {
                    // The cache was behind on this stream: not contention.
                    StoreError::Conflict(c) if served.streams.contains(&c.stream) => {
                        Err(Failure::Unverified)
                    }
                    error => Err(error.into()),
                }
            }
        }
    }

    /// What a rejection of a keyed command answers: the first run's result when an append
    /// with its key committed (the command was sent again, and the first run's events are why
    /// it is rejected now), otherwise the rejection. An unverified rejection (made on cached
    /// streams) is decided again on fresh reads first, and looked up then.
    pub(super) async fn replay_or<E>(
        &self,
        key: Option<&IdempotencyKey>,
        rejection: Failure<E>,
    ) -> Failure<E> {
        let (Some(key), Failure::Fatal(ExecuteError::Rejected(_))) = (key, &rejection) else {
            return rejection;
        };
        match self.find_committed(key).await {
            Ok(Some(committed)) => Failure::Replayed(committed),
            Ok(None) => rejection,
            Err(failure) => failure,
        }
    }

    /// The committed append that carried `key`, marked replayed.
    pub(super) async fn find_committed<E>(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<Committed>, Failure<E>> {
        self.backend.find_committed(key).await.map_err(|error| Failure::Store {
            // Nothing is written by a look-up: safe to retry.
            retryable: error.is_transient(),
            error,
        })
    }
}

/// Forgets the streams of an append from the cache when dropped with the append still unanswered
/// (its future dropped mid-append); `request` is taken once the append answers.
struct Unanswered<'a> {
    cache: &'a StreamCache,
    request: Option<&'a AppendRequest>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(request) = self.request {
            self.cache.forget_request(request);
        }
    }
}

/// A command's turn on its declared streams, with what the previous holder handed over (in the
/// order of the streams; empty when nothing was).
pub(super) struct Queued<'q> {
    turn: Turn<'q>,
    handed: Vec<Option<Handed>>,
}

impl Queued<'_> {
    /// Hands the declared streams, as `declared` read them and `request` extended them, over
    /// to the commands waiting for their turns.
    fn hand_over(&mut self, declared: Reads, request: &AppendRequest, committed: &Committed) {
        let mut read: std::collections::HashMap<StreamId, (Arc<StreamEvents>, Arc<DecodedEvents>)> =
            declared
                .into_shared()
                .into_iter()
                .map(|(s, d)| (s.stream_id.clone(), (s, d.unwrap_or_default())))
                .collect();
        let written = cache::extend_written(request, committed, |id, want| {
            let (stream, decoded) = read.remove(id).filter(|(s, _)| s.version == want)?;
            Some((Arc::unwrap_or_clone(stream), decoded))
        });
        let unwritten = read
            .into_values()
            .filter(|(s, _)| !request.writes.iter().any(|(id, _)| *id == s.stream_id));
        let written = written.into_iter().flatten().map(|(s, d)| (Arc::new(s), d));
        for (stream, decoded) in unwritten.chain(written) {
            self.turn.hand_over(Handed::new(stream, decoded));
        }
    }
}

/// The error for a replay of a commit whose key was used for another request than this one;
/// `None` when the fingerprints agree, or either is unknown (a backend that keeps none, an append
/// stored without one).
fn reused<E>(pass: &Pass<'_>, replayed: &Committed) -> Option<ExecuteError<E>> {
    let (Some(key), Some(this), Some(first)) = (pass.key, pass.fingerprint, &replayed.fingerprint)
    else {
        return None;
    };
    (!first.agrees_with(this)).then(|| ExecuteError::KeyReused {
        key: key.clone(),
        first: first.clone(),
        this: this.clone(),
    })
}

/// The fields of a command without a key (none are asked of it).
pub(super) static NO_FIELDS: RequestFields = RequestFields::new();

/// What one pass of an execution runs with.
#[derive(Clone, Copy)]
pub(super) struct Pass<'a> {
    pub(super) context: &'a RequestContext,
    pub(super) companion: Option<&'a Companion>,
    pub(super) key: Option<&'a IdempotencyKey>,
    pub(super) snap: Option<&'a SnapshotMeta>,
    /// The command's name, for its [`RequestFingerprint`].
    pub(super) name: &'static str,
    /// The command's fields for its fingerprint ([`Command::request_fields`], asked of a keyed
    /// command only).
    pub(super) fields: &'a RequestFields,
    /// What the key is used for (with a key only), set by [`Executor::attempt`] once the
    /// command's streams are bound.
    pub(super) fingerprint: Option<&'a RequestFingerprint>,
}

impl Pass<'_> {
    /// Whether `conflict` is on the companion's stream.
    fn on_companion(&self, conflict: &Conflict) -> bool {
        self.companion.is_some_and(|c| c.stream == conflict.stream)
    }
}
