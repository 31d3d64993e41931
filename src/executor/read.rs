//! Reading a command's streams: from the stream cache where it can, from the backend
//! otherwise, and the set of versions read that the append checks.

use super::*;
use crate::EventId;
use crate::backend::Handed;

impl<B: Backend> Executor<B> {
    /// Reads `ids`, from the cache where it has them when `use_cache` is set; adds the streams
    /// the cache served (or took to be empty) to `served`.
    pub(super) async fn read<E>(
        &self,
        ids: &[StreamId],
        use_cache: bool,
        served: &mut Served,
    ) -> Result<Reads, Failure<E>> {
        let Some(cache) = &self.cache else {
            return Ok(Reads::Read(self.read_backend(ids).await?));
        };
        if !use_cache {
            return Ok(self.fresh(self.read_backend(ids).await?));
        }
        let found = cache.lookup(ids);
        let missing: Vec<StreamId> = ids
            .iter()
            .zip(&found)
            .filter(|(_, hit)| hit.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for entry in found.iter().flatten() {
            served.add(&entry.stream);
        }
        let shared = |entry: Entry| (entry.stream, Some(entry.decoded));
        if missing.is_empty() {
            return Ok(Reads::Shared(found.into_iter().flatten().map(shared).collect()));
        }
        if cache.assumes_unknown_streams_empty() {
            // A guess, checked like a cached stream; not stored until an append confirms it.
            served.streams.extend(missing);
            let reads = ids
                .iter()
                .zip(found)
                .map(|(id, hit)| match hit {
                    Some(entry) => shared(entry),
                    None => (
                        Arc::new(StreamEvents::new(id.clone(), StreamVersion::EMPTY, Vec::new())),
                        None,
                    ),
                })
                .collect();
            return Ok(Reads::Shared(reads));
        }
        let fresh: Vec<_> = self.read_backend(&missing).await?.into_iter().map(Arc::new).collect();
        let decoded = cache.store(&fresh);
        let mut fresh = fresh.into_iter().zip(decoded);
        let mut reads = Vec::with_capacity(ids.len());
        for hit in found {
            match hit {
                Some(entry) => reads.push(shared(entry)),
                // A backend that returned fewer streams than asked leaves a hole, which folding
                // reports as a missing stream.
                None => reads.extend(fresh.next()),
            }
        }
        Ok(Reads::Shared(reads))
    }

    /// Whole streams just read from the backend, kept in the cache when there is one (as
    /// `read` keeps what it reads).
    pub(super) fn fresh(&self, reads: Vec<StreamEvents>) -> Reads {
        let Some(cache) = &self.cache else {
            return Reads::Read(reads);
        };
        let reads: Vec<_> = reads.into_iter().map(Arc::new).collect();
        let decoded = cache.store(&reads);
        Reads::Shared(reads.into_iter().zip(decoded).collect())
    }

    /// Reads `ids` on top of what the previous holder of their turn handed over (`handed`, in
    /// the order of `ids`): only the events from each handed-over stream's version on, in one
    /// call, added to it. The first event read back must be the handed copy's last one (same
    /// version, same id): a stream that no longer holds it (the store was restored underneath,
    /// and maybe grown again by other writers to the same version or beyond) makes it read
    /// every stream whole instead. One event more per stream than reading after the version,
    /// and a copy trusted only while it is still what the store holds.
    ///
    /// Every stream gets a decoded copy to fold with, so that it can be handed over decoded in
    /// turn: streams are handed over only while commands queue for them, as they do now.
    pub(super) async fn read_handed<E>(
        &self,
        ids: &[StreamId],
        handed: Vec<Option<Handed>>,
    ) -> Result<Reads, Failure<E>> {
        let after: Vec<(StreamId, StreamVersion)> = ids
            .iter()
            .zip(&handed)
            .map(|(id, h)| {
                let version = h.as_ref().map_or(0, |h| h.stream.version.get());
                (id.clone(), StreamVersion::new(version.saturating_sub(1)))
            })
            .collect();
        let reads = self.backend.read_after(&after).await.map_err(read_failure)?;
        let mut streams = Vec::with_capacity(reads.len());
        for (read, handed) in reads.into_iter().zip(handed) {
            let Some(handed) = handed else {
                streams.push((Arc::new(read), Some(Arc::default())));
                continue;
            };
            let mut events = read.events.into_iter();
            let still_held = match handed.stream.events.last() {
                // An empty stream handed over: whatever the store holds now is new.
                None => handed.stream.version == StreamVersion::EMPTY,
                Some(last) => {
                    last.version == handed.stream.version
                        && events.next().is_some_and(|first| {
                            first.version == last.version && first.event_id() == last.event_id()
                        })
                }
            };
            if !still_held {
                tracing::warn!(
                    stream = %read.stream_id,
                    "stream no longer holds what was handed over; reading every stream whole"
                );
                return Ok(Reads::Read(self.read_backend(ids).await?));
            }
            let decoded = handed.memo.downcast::<DecodedEvents>().unwrap_or_default();
            let stream = if read.version == handed.stream.version {
                handed.stream
            } else {
                // Written by another process since: add what it wrote.
                let mut stream = Arc::unwrap_or_clone(handed.stream);
                stream.version = read.version;
                stream.events.extend(events);
                Arc::new(stream)
            };
            streams.push((stream, Some(decoded)));
        }
        Ok(Reads::Shared(streams))
    }

    pub(super) async fn read_backend<E>(
        &self,
        ids: &[StreamId],
    ) -> Result<Vec<StreamEvents>, Failure<E>> {
        self.backend.read(ids).await.map_err(read_failure)
    }
}

/// The streams the cache served in one pass (or took to be empty): a decision on them is
/// checked by an append, or made again on fresh reads.
#[derive(Default)]
pub(super) struct Served {
    pub(super) streams: Vec<StreamId>,
    /// Each served stream's last event, where it has one: the append names it
    /// ([`AppendRequest::expect_event`]), so that a store that lost it underneath the cache
    /// (restored from a backup, failed over to a replica that missed the last commits) and
    /// was brought back to the same version by other writers refuses the append instead of
    /// letting a decision on events it no longer holds commit.
    pub(super) last_events: Vec<(StreamId, StreamVersion, EventId)>,
    /// The streams of `last_events`, once they are [`ReadSet::INDEX_FROM`] or more (below, a
    /// scan is cheaper; made only then: a set seeds its hasher when made), so that a command
    /// over many cached streams names each in constant time rather than by a scan of all.
    named: Option<std::collections::HashSet<StreamId, foldhash::fast::RandomState>>,
}

impl Served {
    fn add(&mut self, stream: &StreamEvents) {
        self.streams.push(stream.stream_id.clone());
        // A cached stream holds every event up to its version; one that does not (never so
        // far) is checked by its version alone. A stream served twice (bound in two rounds of
        // discovery) is named once, as first served: were the two copies to differ, the store
        // holds at most one of them, and a request naming two events for one stream would be
        // refused as malformed rather than as the conflict it is.
        let Some(last) = stream.events.last().filter(|last| last.version == stream.version) else {
            return;
        };
        let id = &stream.stream_id;
        let first = match &mut self.named {
            Some(named) => named.insert(id.clone()),
            None if self.last_events.len() < ReadSet::INDEX_FROM => {
                !self.last_events.iter().any(|(s, _, _)| s == id)
            }
            None => {
                let mut named: std::collections::HashSet<_, _> =
                    self.last_events.iter().map(|(s, _, _)| s.clone()).collect();
                let first = named.insert(id.clone());
                self.named = Some(named);
                first
            }
        };
        if first {
            self.last_events.push((id.clone(), last.version, last.event_id()));
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// A failed read (of whole streams, or of the streams after a snapshot): nothing was written
/// yet, so it can always be retried after a transient error.
pub(super) fn read_failure<E>(error: StoreError) -> Failure<E> {
    match error {
        StoreError::Conflict(c) => Failure::Conflict(c),
        error => Failure::Store { retryable: error.is_transient(), error },
    }
}

/// Streams read for one pass: straight from the backend, or shared with the cache, with the
/// cache's decoded copy of each stream it keeps.
pub(super) enum Reads {
    Read(Vec<StreamEvents>),
    Shared(Vec<(Arc<StreamEvents>, Option<Arc<DecodedEvents>>)>),
}

impl Reads {
    /// The reads, as folding takes them.
    pub(super) fn iter(&self) -> ReadsIter<'_> {
        match self {
            Reads::Read(reads) => ReadsIter::Read(reads.iter()),
            Reads::Shared(reads) => ReadsIter::Shared(reads.iter()),
        }
    }

    /// The reads as shared streams, each with its decoded copy where it has one.
    pub(super) fn into_shared(self) -> Vec<(Arc<StreamEvents>, Option<Arc<DecodedEvents>>)> {
        match self {
            Reads::Read(reads) => reads.into_iter().map(|r| (Arc::new(r), None)).collect(),
            Reads::Shared(reads) => reads,
        }
    }

    /// The streams' events.
    pub(super) fn streams(&self) -> impl Iterator<Item = &StreamEvents> {
        self.iter().map(|read| read.events)
    }
}

pub(super) enum ReadsIter<'a> {
    Read(std::slice::Iter<'a, StreamEvents>),
    Shared(std::slice::Iter<'a, (Arc<StreamEvents>, Option<Arc<DecodedEvents>>)>),
}

impl<'a> Iterator for ReadsIter<'a> {
    type Item = StreamRead<'a>;

    fn next(&mut self) -> Option<StreamRead<'a>> {
        match self {
            ReadsIter::Read(reads) => reads.next().map(StreamRead::plain),
            ReadsIter::Shared(reads) => reads
                .next()
                .map(|(events, decoded)| StreamRead { events, decoded: decoded.as_deref() }),
        }
    }
}

/// Every stream a command read, with the version it saw, in first-read order.
///
/// Small sets (the common case: a handful of streams) are scanned linearly, which beats
/// hashing; past [`ReadSet::INDEX_FROM`] streams a hash index keeps recording linear in the
/// number of streams, for commands that discover hundreds of them.
#[derive(Default)]
pub(super) struct ReadSet {
    pub(super) versions: Vec<(StreamId, StreamVersion)>,
    index: std::collections::HashMap<StreamId, usize, foldhash::fast::RandomState>,
}

impl ReadSet {
    const INDEX_FROM: usize = 16;

    pub(super) fn seen(&self, stream: &StreamId) -> Option<StreamVersion> {
        if self.versions.len() < Self::INDEX_FROM {
            self.versions.iter().find(|(id, _)| id == stream).map(|(_, v)| *v)
        } else {
            self.index.get(stream).map(|&i| self.versions[i].1)
        }
    }

    /// Adds each read stream's version. A stream read twice (in two slots, or again in a
    /// discovery round) must be at the same version both times; otherwise another writer moved
    /// it in between, which is a conflict.
    pub(super) fn record<'r, E>(
        &mut self,
        reads: impl Iterator<Item = &'r StreamEvents>,
    ) -> Result<(), Failure<E>> {
        for read in reads {
            match self.seen(&read.stream_id) {
                Some(seen) if seen != read.version => {
                    return Err(Failure::Conflict(Conflict {
                        stream: read.stream_id.clone(),
                        expected: seen,
                        actual: read.version,
                    }));
                }
                Some(_) => {}
                None => {
                    self.versions.push((read.stream_id.clone(), read.version));
                    if self.versions.len() == Self::INDEX_FROM {
                        self.index = self
                            .versions
                            .iter()
                            .enumerate()
                            .map(|(i, (id, _))| (id.clone(), i))
                            .collect();
                    } else if self.versions.len() > Self::INDEX_FROM {
                        self.index.insert(read.stream_id.clone(), self.versions.len() - 1);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CorrelationId, EventMetadata, NewEvent, Payload, RecordedEvent};

    /// Stream `name` as the cache holds it at `version`, its last event `id`.
    fn cached(name: &str, version: u64) -> (StreamEvents, EventId) {
        let id = StreamId::try_new(name).unwrap();
        let new = NewEvent::new(
            "E",
            1,
            Payload::to_json(&1).unwrap(),
            EventMetadata::new(CorrelationId::new()),
        );
        let event_id = new.metadata.event_id;
        let last = RecordedEvent::from_new(
            id.clone(),
            StreamVersion::new(version),
            crate::GlobalPosition::new(version),
            new,
        );
        (StreamEvents::new(id, StreamVersion::new(version), vec![last]), event_id)
    }

    #[test]
    fn a_stream_served_again_is_named_once_as_first_served_however_many_are_served() {
        for n in [1, ReadSet::INDEX_FROM - 1, ReadSet::INDEX_FROM, 40] {
            let mut served = Served::default();
            let mut firsts = Vec::new();
            for i in 0..n {
                let (stream, id) = cached(&format!("s-{i}"), 1);
                served.add(&stream);
                firsts.push((stream.stream_id, StreamVersion::new(1), id));
            }
            // Every stream again, as a later round of discovery would: another copy each.
            for i in 0..n {
                served.add(&cached(&format!("s-{i}"), 1).0);
            }
            assert_eq!(served.last_events, firsts, "{n} streams");
            assert_eq!(served.streams.len(), 2 * n);
        }
    }
}
