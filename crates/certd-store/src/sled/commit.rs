//! Group commit: many writers, one flush.
//!
//! A writer makes its change, then asks for durability and waits. A single
//! committer thread takes every request queued so far, flushes sled, then
//! `fdatasync`s sled's data file, and answers them all. A request that
//! arrives during a flush waits for the next one, so no writer is ever
//! answered by a flush that started before its write.
//!
//! A group waits a moment for writes announced but not yet queued
//! (`Storage::write_coming`: issuances admitted, still verifying their
//! CSR or signing; an announcement ends when its write is queued, or
//! when the issuance is refused): until none is left, or
//! [`GATHER_AT_MOST`] has passed, whichever comes first. A lone writer,
//! or one whose fellow writers are all queued, never waits. A refused
//! issuance is noticed at the next recount ([`RECOUNT_EVERY`]), not at
//! once. Why: a
//! flush costs far more CPU than a write (sled hands its log buffer to an
//! I/O thread, waking every idle one, then `fdatasync`), and flushing as
//! soon as anything was queued made groups of about 1.5 under 64 callers:
//! the flushes took a third of the daemon's CPU (docs/PERFORMANCE.md,
//! "Group commit that waits for the writes on their way").
//!
//! Why the extra `fdatasync`: on Linux sled 0.34 flushes its log with
//! `sync_file_range`, which starts write-back of the dirty pages but neither
//! commits file metadata nor flushes the drive's volatile cache (sled issue
//! 1452). `fdatasync` on the same file does both, so after it returns the
//! records survive power loss, not only a process crash.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<(), Arc<io::Error>>>;

/// The longest a group waits for writes announced but not yet asked for:
/// what a request may lose to it, at most, against a flush's worth of CPU
/// saved per write that joins.
pub(crate) const GATHER_AT_MOST: Duration = Duration::from_millis(2);
/// While waiting, how often the count of writes announced is read again
/// (one that gives up lowers it without asking).
const RECOUNT_EVERY: Duration = Duration::from_micros(250);

/// Handle to the committer thread. When the last clone is dropped the
/// thread finishes its queue and is joined, so the database is closed (and
/// its lock released) by the time the `SledStore` is gone.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    inner: Arc<Committer>,
}

#[derive(Debug)]
struct Committer {
    requests: Option<mpsc::Sender<Reply>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Writes announced and not yet queued (`write_coming`).
    coming: Arc<AtomicUsize>,
}

impl GroupCommit {
    pub fn start(db: sled::Db, data_file: File) -> io::Result<Self> {
        let (requests, queue) = mpsc::channel::<Reply>();
        let coming = Arc::new(AtomicUsize::new(0));
        let thread = thread::Builder::new().name("certd-commit".into()).spawn({
            let coming = coming.clone();
            move || commit_loop(&db, &data_file, &queue, &coming)
        })?;
        Ok(GroupCommit {
            inner: Arc::new(Committer {
                requests: Some(requests),
                thread: Some(thread),
                coming,
            }),
        })
    }

    /// A write that will ask for durability soon: groups wait for it a
    /// moment until it is dropped.
    pub fn write_coming(&self) -> crate::WriteComing {
        crate::WriteComing::counted_in(&self.inner.coming)
    }

    /// Waits until every write made before this call is on stable storage.
    pub async fn durable(&self) -> Result<(), Arc<io::Error>> {
        self.request()?.await.map_err(|_| stopped())?
    }

    /// `durable` for a write announced with `write_coming`, whose
    /// announcement ends once its request is queued: the group it joins
    /// no longer waits for it.
    pub async fn durable_announced(
        &self,
        announced: crate::WriteComing,
    ) -> Result<(), Arc<io::Error>> {
        let answer = self.request();
        drop(announced);
        answer?.await.map_err(|_| stopped())?
    }

    /// `durable`, blocking the calling thread, which must not be one of the
    /// async runtime's.
    pub fn durable_blocking(&self) -> Result<(), Arc<io::Error>> {
        self.request()?.blocking_recv().map_err(|_| stopped())?
    }

    fn request(&self) -> Result<oneshot::Receiver<Result<(), Arc<io::Error>>>, Arc<io::Error>> {
        let (reply, answer) = oneshot::channel();
        let requests = self.inner.requests.as_ref().ok_or_else(stopped)?;
        requests.send(reply).map_err(|_| stopped())?;
        Ok(answer)
    }
}

fn stopped() -> Arc<io::Error> {
    Arc::new(io::Error::other("the commit thread has stopped"))
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the loop once the queue is empty.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn commit_loop(
    db: &sled::Db,
    data_file: &File,
    queue: &mpsc::Receiver<Reply>,
    coming: &AtomicUsize,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        gather(&mut batch, queue, coming, GATHER_AT_MOST);
        let started = Instant::now();
        let result = flush(db, data_file).map_err(Arc::new);
        crate::metrics::commit_took(started.elapsed());
        for reply in batch {
            // A writer that gave up waiting has nothing left to tell.
            let _ = reply.send(result.clone());
        }
    }
}

/// Adds to `batch` the requests queued while writes announced in `coming`
/// are still on their way, until none is (each announcement ends as its
/// request is queued) or `at_most` has passed.
fn gather(
    batch: &mut Vec<Reply>,
    queue: &mpsc::Receiver<Reply>,
    coming: &AtomicUsize,
    at_most: Duration,
) {
    let until = Instant::now() + at_most;
    while coming.load(Ordering::Acquire) > 0 {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return;
        };
        match queue.recv_timeout(left.min(RECOUNT_EVERY)) {
            Ok(reply) => {
                batch.push(reply);
                batch.extend(queue.try_iter());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Flushes sled and then the data file itself, the two steps described in
/// the module documentation.
pub fn flush(db: &sled::Db, data_file: &File) -> io::Result<()> {
    db.flush().map_err(|error| match error {
        sled::Error::Io(io) => io,
        other => io::Error::other(other),
    })?;
    data_file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteComing;

    type Answer = oneshot::Receiver<Result<(), Arc<io::Error>>>;

    fn request(queue: &mpsc::Sender<Reply>) -> Answer {
        let (reply, answer) = oneshot::channel();
        queue.send(reply).unwrap();
        answer
    }

    /// A queue with one request taken off it, as the committer starts a
    /// group: the queue's two ends, the group, and its request's answer.
    fn group_of_one() -> (
        mpsc::Sender<Reply>,
        mpsc::Receiver<Reply>,
        Vec<Reply>,
        Answer,
    ) {
        let (requests, queue) = mpsc::channel();
        let answer = request(&requests);
        let batch = vec![queue.recv().unwrap()];
        (requests, queue, batch, answer)
    }

    #[test]
    fn a_group_with_no_write_on_its_way_is_flushed_at_once() {
        let (requests, queue) = mpsc::channel();
        let coming = AtomicUsize::new(0);
        let _answers = [request(&requests), request(&requests)];
        let mut batch = vec![queue.recv().unwrap()];
        let started = Instant::now();
        // Far longer than any test machine's hiccup: not waited for.
        gather(&mut batch, &queue, &coming, Duration::from_secs(60));
        // What was queued joins only through the committer's own drain.
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_group_waits_for_an_announced_write_until_it_is_queued() {
        let (requests, queue, mut batch, _first) = group_of_one();
        let coming = Arc::new(AtomicUsize::new(0));
        let announced = WriteComing::counted_in(&coming);
        // As `durable_announced` does: queue the request, then end the
        // announcement.
        let late = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            let answer = request(&requests);
            drop(announced);
            answer
        });
        gather(&mut batch, &queue, &coming, Duration::from_secs(60));
        assert_eq!(batch.len(), 2, "the announced write joined the group");
        assert_eq!(coming.load(Ordering::Acquire), 0);
        drop(late.join().unwrap());
    }

    #[test]
    fn a_group_stops_waiting_when_an_announced_write_is_refused_or_at_the_limit() {
        let (requests, queue, mut batch, _first) = group_of_one();
        let coming = Arc::new(AtomicUsize::new(0));
        // Refused before it writes: its announcement drops, the wait ends
        // at the next recount.
        let refused = WriteComing::counted_in(&coming);
        let giving_up = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            drop(refused);
        });
        let started = Instant::now();
        gather(&mut batch, &queue, &coming, Duration::from_secs(60));
        giving_up.join().unwrap();
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(30));

        // One announced that never comes: the group goes at the limit.
        let _never = WriteComing::counted_in(&coming);
        let started = Instant::now();
        gather(&mut batch, &queue, &coming, Duration::from_millis(30));
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(30));
        drop(requests);
    }

    /// The announcement a durable write carries ends once its request is
    /// queued, before its answer.
    #[tokio::test]
    async fn a_durable_announced_write_ends_its_announcement_when_queued() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let data_file = File::open(dir.path().join("db")).unwrap();
        let commit = GroupCommit::start(db, data_file).unwrap();
        let announced = commit.write_coming();
        assert_eq!(commit.inner.coming.load(Ordering::Acquire), 1);
        commit.durable_announced(announced).await.unwrap();
        assert_eq!(commit.inner.coming.load(Ordering::Acquire), 0);
        // A refused issuance's announcement ends when it is dropped.
        drop(commit.write_coming());
        assert_eq!(commit.inner.coming.load(Ordering::Acquire), 0);
    }
}
