//! Object storage for sealed segments and manifests, through `object_store`.
//!
//! A [`Store`] is a local directory (the default: `<data_dir>/cold`) or any
//! S3-compatible bucket (`s3://bucket/prefix`), with every path relative to its
//! root. Each operation is retried with exponential backoff when it fails or takes
//! longer than the request timeout; answers that retrying cannot change (not found,
//! already exists) return at once. A manifest is published with
//! [`Store::create`], a put that succeeds only if the object does not exist yet, so
//! a commit is atomic and two writers can never both publish one version.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::config::StorageConfig;

pub mod faulty;

/// Errors of object storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage url `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("opening the object store at `{url}`: {source}")]
    Open { url: String, source: object_store::Error },
    #[error("creating the local store directory {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("{op} `{path}` on {url} failed after {attempts} attempt(s): {detail}")]
    Failed { op: &'static str, path: String, url: String, attempts: u32, detail: String },
    #[error("`{path}` does not exist on {url}")]
    NotFound { path: String, url: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How operations are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per operation, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubles each time, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// An attempt that takes longer than this counts as failed and is retried.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// An object store rooted at the table data's prefix.
#[derive(Clone)]
pub struct Store {
    url: String,
    inner: Arc<dyn ObjectStore>,
    retry: RetryPolicy,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish_non_exhaustive()
    }
}

/// What one attempt of an operation ended with.
enum Attempt<T> {
    Done(T),
    /// Final: retrying cannot change it.
    Final(object_store::Error),
    Retry(String),
}

impl Store {
    /// A store in a local directory, created if missing.
    pub fn local(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { dir: dir.display().to_string(), source })?;
        let url = format!("file://{}", dir.display());
        let fs =
            LocalFileSystem::new_with_prefix(dir).map_err(|source| StoreError::Open { url: url.clone(), source })?;
        Ok(Store::from_object_store(url, Arc::new(fs)))
    }

    /// Wraps any object store (tests use this to inject faults).
    pub fn from_object_store(url: String, inner: Arc<dyn ObjectStore>) -> Store {
        Store { url, inner, retry: RetryPolicy::default() }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Store {
        self.retry = retry;
        self
    }

    /// The store a config names: `storage.url` if set, else `<data_dir>/cold`.
    pub fn open(cfg: &StorageConfig, data_dir: &Path) -> Result<Store> {
        let retry = RetryPolicy { request_timeout: cfg.request_timeout, ..RetryPolicy::default() };
        let Some(url) = cfg.url.as_deref() else {
            return Ok(Store::local(&data_dir.join("cold"))?.with_retry(retry));
        };
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(Store::local(Path::new(path))?.with_retry(retry));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(StoreError::Url {
                url: url.to_string(),
                reason: "use s3://bucket/prefix or file:///path (or leave it out for <data_dir>/cold)".into(),
            });
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Url { url: url.to_string(), reason: "the bucket name is missing".into() });
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(object_store::RetryConfig {
                max_retries: 1,
                retry_timeout: cfg.request_timeout,
                ..Default::default()
            })
            .with_client_options(object_store::ClientOptions::new().with_timeout(cfg.request_timeout));
        if let Some(endpoint) = &cfg.endpoint {
            b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
            if endpoint.starts_with("http://") {
                b = b.with_allow_http(true);
            }
        } else if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            b = b.with_endpoint(&endpoint).with_virtual_hosted_style_request(false);
            if endpoint.starts_with("http://") {
                b = b.with_allow_http(true);
            }
        }
        if let Some(region) = &cfg.region {
            b = b.with_region(region);
        }
        if let Some(key) = &cfg.access_key_id {
            b = b.with_access_key_id(key);
        }
        if let Some(secret) = &cfg.secret_access_key {
            b = b.with_secret_access_key(secret);
        }
        let s3 = b.build().map_err(|source| StoreError::Open { url: url.to_string(), source })?;
        let prefix = prefix.trim_matches('/');
        let inner: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) };
        Ok(Store::from_object_store(url.trim_end_matches('/').to_string(), inner).with_retry(retry))
    }

    /// Where the store is, for messages (never holds credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying object store, rooted like every path of this store.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.inner)
    }

    async fn retried<T, F, Fut>(&self, op: &'static str, path: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut backoff = self.retry.first_backoff;
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts.max(1) {
            let outcome = match tokio::time::timeout(self.retry.request_timeout, f()).await {
                Ok(outcome) => outcome,
                Err(_) => Attempt::Retry(format!("no answer within {:?}", self.retry.request_timeout)),
            };
            match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Final(object_store::Error::NotFound { .. }) => {
                    return Err(StoreError::NotFound { path: path.to_string(), url: self.url.clone() });
                }
                Attempt::Final(e) => {
                    return Err(StoreError::Failed {
                        op,
                        path: path.to_string(),
                        url: self.url.clone(),
                        attempts: attempt,
                        detail: e.to_string(),
                    });
                }
                Attempt::Retry(detail) => {
                    tracing::warn!(op, path, store = %self.url, attempt, %detail, "object store operation failed; retrying");
                    last = detail;
                }
            }
            if attempt < self.retry.attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.retry.max_backoff);
            }
        }
        Err(StoreError::Failed {
            op,
            path: path.to_string(),
            url: self.url.clone(),
            attempts: self.retry.attempts,
            detail: last,
        })
    }

    /// Writes an object, replacing any object at `path`. Objects are written whole:
    /// a reader sees the old object, none, or the new one, never a part.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        let location = ObjectPath::from(path);
        self.retried("put", path, || {
            let payload = PutPayload::from(bytes.clone());
            let location = &location;
            async move {
                match self.inner.put(location, payload).await {
                    Ok(_) => Attempt::Done(()),
                    Err(e) => Attempt::Retry(e.to_string()),
                }
            }
        })
        .await
    }

    /// Writes an object only if none exists at `path`; `Ok(false)` if one does.
    /// A retry after a lost answer may find its own write: the caller compares.
    pub async fn create(&self, path: &str, bytes: Bytes) -> Result<bool> {
        let location = ObjectPath::from(path);
        self.retried("create", path, || {
            let payload = PutPayload::from(bytes.clone());
            let location = &location;
            async move {
                let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
                match self.inner.put_opts(location, payload, opts).await {
                    Ok(_) => Attempt::Done(true),
                    Err(object_store::Error::AlreadyExists { .. }) => Attempt::Done(false),
                    Err(e @ object_store::Error::NotImplemented { .. }) => Attempt::Final(e),
                    Err(e) => Attempt::Retry(e.to_string()),
                }
            }
        })
        .await
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes> {
        let location = ObjectPath::from(path);
        self.retried("get", path, || {
            let location = &location;
            async move {
                match self.inner.get(location).await {
                    Ok(r) => match r.bytes().await {
                        Ok(b) => Attempt::Done(b),
                        Err(e) => Attempt::Retry(e.to_string()),
                    },
                    Err(e @ object_store::Error::NotFound { .. }) => Attempt::Final(e),
                    Err(e) => Attempt::Retry(e.to_string()),
                }
            }
        })
        .await
    }

    /// Every object under `prefix` (recursively), in no particular order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let location = ObjectPath::from(prefix);
        self.retried("list", prefix, || {
            let location = &location;
            async move {
                match self.inner.list(Some(location)).try_collect::<Vec<_>>().await {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => Attempt::Retry(e.to_string()),
                }
            }
        })
        .await
    }

    /// The names of the "directories" directly under `prefix` (one level, not
    /// the objects below them).
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let location = ObjectPath::from(prefix);
        self.retried("list", prefix, || {
            let location = &location;
            async move {
                match self.inner.list_with_delimiter(Some(location)).await {
                    Ok(r) => Attempt::Done(
                        r.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect(),
                    ),
                    Err(e) => Attempt::Retry(e.to_string()),
                }
            }
        })
        .await
    }

    /// Deletes an object; deleting a missing object succeeds.
    pub async fn delete(&self, path: &str) -> Result<()> {
        let location = ObjectPath::from(path);
        self.retried("delete", path, || {
            let location = &location;
            async move {
                match self.inner.delete(location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Attempt::Done(()),
                    Err(e) => Attempt::Retry(e.to_string()),
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests;
