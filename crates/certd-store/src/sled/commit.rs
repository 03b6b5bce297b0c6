//! Group commit: many writers, one flush.
//!
//! A writer makes its change, then asks for durability and waits. A single
//! committer thread takes every request queued so far, flushes sled, then
//! `fdatasync`s sled's data file, and answers them all. A request that
//! arrives during a flush waits for the next one, so no writer is ever
//! answered by a flush that started before its write.
//!
//! Why the extra `fdatasync`: on Linux sled 0.34 flushes its log with
//! `sync_file_range`, which starts write-back of the dirty pages but neither
//! commits file metadata nor flushes the drive's volatile cache (sled issue
//! 1452). `fdatasync` on the same file does both, so after it returns the
//! records survive power loss, not only a process crash.

use std::fs::File;
use std::io;
use std::sync::{Arc, mpsc};
use std::thread;

use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<(), Arc<io::Error>>>;

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
}

impl GroupCommit {
    pub fn start(db: sled::Db, data_file: File) -> io::Result<Self> {
        let (requests, queue) = mpsc::channel::<Reply>();
        let thread = thread::Builder::new()
            .name("certd-commit".into())
            .spawn(move || commit_loop(&db, &data_file, &queue))?;
        Ok(GroupCommit {
            inner: Arc::new(Committer {
                requests: Some(requests),
                thread: Some(thread),
            }),
        })
    }

    /// Waits until every write made before this call is on stable storage.
    pub async fn durable(&self) -> Result<(), Arc<io::Error>> {
        self.request()?.await.map_err(|_| stopped())?
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

fn commit_loop(db: &sled::Db, data_file: &File, queue: &mpsc::Receiver<Reply>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let started = std::time::Instant::now();
        let result = flush(db, data_file).map_err(Arc::new);
        crate::metrics::commit_took(started.elapsed());
        for reply in batch {
            // A writer that gave up waiting has nothing left to tell.
            let _ = reply.send(result.clone());
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
