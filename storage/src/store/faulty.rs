//! An object store wrapper that fails or stalls on demand, for fault-injection
//! tests beside the real stores (a local directory, an S3-compatible server).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// Switches shared between a test and its [`Faulty`] store.
#[derive(Debug)]
pub struct Faults {
    /// Every operation fails while set.
    pub down: AtomicBool,
    /// The next this-many puts fail.
    pub fail_puts: AtomicU32,
    /// When not negative: puts allowed before every later put fails (a crash in
    /// the middle of a seal, as its files are written).
    pub puts_left: std::sync::atomic::AtomicI64,
    /// Every put first waits this many milliseconds.
    pub put_delay_ms: AtomicU64,
    /// Puts that reached the inner store.
    pub puts: AtomicU64,
    /// Operations refused by a fault.
    pub refused: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            down: AtomicBool::new(false),
            fail_puts: AtomicU32::new(0),
            puts_left: std::sync::atomic::AtomicI64::new(-1),
            put_delay_ms: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }
}

impl Faults {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// Wraps a store; see [`Faults`].
pub struct Faulty {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<Faults>) -> Faulty {
        Faulty { inner, faults }
    }

    fn check(&self, op: &str) -> Result<()> {
        if self.faults.down.load(Ordering::SeqCst) {
            self.faults.refused.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("{op}: the store is down").into(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let delay = self.faults.put_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.check("put")?;
        let left = self.faults.puts_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n > 0).then(|| n - 1));
        if left == Err(0) {
            self.faults.refused.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic { store: "faulty", source: "put: no puts left".into() });
        }
        let failing = self.faults.fail_puts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            self.faults.refused.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic { store: "faulty", source: "put: injected failure".into() });
        }
        self.faults.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.check("put")?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.check("get")?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        if let Err(e) = self.check("delete") {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Err(e) = self.check("list") {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.check("list")?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.check("copy")?;
        self.inner.copy_opts(from, to, options).await
    }
}
