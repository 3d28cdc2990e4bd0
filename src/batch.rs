//! Sealing and opening many rows of one column: per-row calls on a
//! [`ContextTemplate`], lazy batches over iterators, and parallel batches on
//! rayon's thread pool (feature `rayon`).
//!
//! Every entry point here gives one result per row, in the rows' order: one
//! value that fails to open never hides the others. Metrics count a batch's
//! successes once, when it is done, and each failure as it happens.

use std::borrow::Borrow;
use std::fmt;

use crate::context::ContextTemplate;
use crate::error::Result;
use crate::format::SealedValue;
use crate::sealer::TenantSealer;
use crate::secret::Opened;
use crate::telemetry;

/// Below this many rows, the parallel batches run on the calling thread:
/// handing work to the pool costs more than it saves (about 100 µs of work).
#[cfg(feature = "rayon")]
const PARALLEL_THRESHOLD: usize = 128;
/// The fewest rows a pool thread takes at once.
#[cfg(feature = "rayon")]
const MIN_PARALLEL_CHUNK: usize = 64;

impl TenantSealer {
    /// Seals `plaintext` as the value of row `row` of `template`'s column,
    /// under the tenant's primary key: [`TenantSealer::seal`] with the context
    /// `template.context(row)`, without building it.
    ///
    /// # Errors
    ///
    /// [`Error::TenantMismatch`](crate::Error::TenantMismatch) if the template
    /// names another tenant; [`Error::InvalidContext`](crate::Error::InvalidContext)
    /// if the row id is empty or longer than 1024 bytes;
    /// [`Error::PlaintextTooLarge`](crate::Error::PlaintextTooLarge);
    /// [`Error::TenantShredded`](crate::Error::TenantShredded).
    pub fn seal_row(
        &self,
        template: &ContextTemplate,
        row: impl fmt::Display,
        plaintext: &[u8],
    ) -> Result<SealedValue> {
        let result = self.seal_row_uncounted(template, row, plaintext);
        telemetry::sealed(&result, self.tenant_label());
        result
    }

    /// Opens `sealed` as the value of row `row` of `template`'s column:
    /// [`TenantSealer::open`] with the context `template.context(row)`, without
    /// building it.
    ///
    /// # Errors
    ///
    /// As [`TenantSealer::open`], plus
    /// [`Error::InvalidContext`](crate::Error::InvalidContext) if the row id is
    /// empty or longer than 1024 bytes.
    pub fn open_row(
        &self,
        template: &ContextTemplate,
        row: impl fmt::Display,
        sealed: &SealedValue,
    ) -> Result<Opened> {
        let result = self.keyring.open_row(template, row, sealed);
        telemetry::opened(&result, self.tenant_label());
        result
    }

    /// Opens the values of many rows of `template`'s column, lazily: one
    /// result per `(row id, sealed value)` pair, in order, each as
    /// [`TenantSealer::open_row`] gives it.
    ///
    /// `rows` may be pairs or references to pairs, so a `Vec<(i64,
    /// SealedValue)>` from `sqlx::query_as` can be passed by reference. Values
    /// are opened as the iterator is consumed: feed it chunk after chunk of a
    /// row stream (for example `futures::TryStreamExt::try_chunks` over
    /// `sqlx::query_as(..).fetch(..)`) to keep memory bounded.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fieldseal::Error> {
    /// use fieldseal::{Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};
    ///
    /// let provider = LocalKeyProvider::new("root-1", RootKey::generate()?)?;
    /// let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
    /// let acme = sealer.tenant("acme").await?;
    /// let tokens = Context::builder("acme", "integrations", "refresh_token").template()?;
    ///
    /// // As `SELECT id, refresh_token FROM integrations` would return them.
    /// let rows = vec![
    ///     (1_i64, acme.seal_row(&tokens, 1, b"token one")?),
    ///     (2_i64, acme.seal_row(&tokens, 2, b"token two")?),
    ///     (3_i64, acme.seal_row(&tokens, 2, b"copied from row 2")?),
    /// ];
    /// let opened: Vec<_> = acme.open_rows(&tokens, &rows).collect();
    /// assert!(opened[0].is_ok() && opened[1].is_ok());
    /// // Row 3 holds a value sealed for row 2: it fails alone.
    /// assert!(matches!(opened[2], Err(fieldseal::Error::OpenFailed)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Each item is the result [`TenantSealer::open_row`] gives for its row.
    pub fn open_rows<'a, I, R, S>(
        &'a self,
        template: &'a ContextTemplate,
        rows: I,
    ) -> impl Iterator<Item = Result<Opened>> + 'a
    where
        I: IntoIterator + 'a,
        I::Item: Borrow<(R, S)>,
        R: fmt::Display + 'a,
        S: Borrow<SealedValue> + 'a,
    {
        OpenRows {
            sealer: self,
            template,
            rows: rows.into_iter(),
            opened: 0,
            _row: std::marker::PhantomData,
        }
    }

    /// Seals the values of many rows of `template`'s column, lazily: one
    /// result per `(row id, plaintext)` pair, in order, each as
    /// [`TenantSealer::seal_row`] gives it.
    ///
    /// # Errors
    ///
    /// Each item is the result [`TenantSealer::seal_row`] gives for its row.
    pub fn seal_rows<'a, I, R, P>(
        &'a self,
        template: &'a ContextTemplate,
        rows: I,
    ) -> impl Iterator<Item = Result<SealedValue>> + 'a
    where
        I: IntoIterator + 'a,
        I::Item: Borrow<(R, P)>,
        R: fmt::Display + 'a,
        P: AsRef<[u8]> + 'a,
    {
        SealRows {
            sealer: self,
            template,
            rows: rows.into_iter(),
            sealed: 0,
            _row: std::marker::PhantomData,
        }
    }

    /// As [`TenantSealer::open_rows`], on rayon's thread pool: the results of
    /// `rows`, in order, collected. Fewer than 128 rows are opened on the
    /// calling thread. To choose the threads, call it inside
    /// [`rayon::ThreadPool::install`].
    ///
    /// # Blocking
    ///
    /// This call blocks its thread until every row is opened (about 1 µs of
    /// CPU per 256-byte value, shared among the pool's threads). In async code,
    /// use [`TenantSealer::spawn_open_rows`], or run the call with
    /// `tokio::task::spawn_blocking`, so that the runtime's worker is not held:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use fieldseal::{Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};
    /// # let provider = LocalKeyProvider::new("root-1", RootKey::generate()?)?;
    /// # let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
    /// let acme = sealer.tenant("acme").await?;
    /// let tokens = Context::builder("acme", "integrations", "refresh_token").template()?;
    /// let rows: Vec<(i64, _)> = (0..1_000)
    ///     .map(|id| Ok((id, acme.seal_row(&tokens, id, b"a token")?)))
    ///     .collect::<Result<_, fieldseal::Error>>()?;
    ///
    /// let opened = tokio::task::spawn_blocking(move || acme.par_open_rows(&tokens, &rows)).await?;
    /// assert!(opened.iter().all(Result::is_ok));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Each item is the result [`TenantSealer::open_row`] gives for its row.
    #[cfg(feature = "rayon")]
    pub fn par_open_rows<R, S>(
        &self,
        template: &ContextTemplate,
        rows: &[(R, S)],
    ) -> Vec<Result<Opened>>
    where
        R: fmt::Display + Sync,
        S: Borrow<SealedValue> + Sync,
    {
        use rayon::prelude::*;

        if rows.len() < PARALLEL_THRESHOLD {
            return self.open_rows(template, rows).collect();
        }
        let results: Vec<Result<Opened>> = rows
            .par_iter()
            .with_min_len(MIN_PARALLEL_CHUNK)
            .map(|(row, sealed)| self.keyring.open_row(template, row, sealed.borrow()))
            .collect();
        let label = self.tenant_label();
        let mut opened = 0;
        for result in &results {
            match result {
                Ok(_) => opened += 1,
                Err(_) => telemetry::opened(result, label),
            }
        }
        telemetry::opened_ok(opened, label);
        results
    }

    /// As [`TenantSealer::seal_rows`], on rayon's thread pool: the sealed
    /// values of `rows`, in order, collected. Fewer than 128 rows are sealed on
    /// the calling thread. See [`TenantSealer::par_open_rows`] for choosing the
    /// threads and for calling it from async code.
    ///
    /// # Errors
    ///
    /// Each item is the result [`TenantSealer::seal_row`] gives for its row.
    #[cfg(feature = "rayon")]
    pub fn par_seal_rows<R, P>(
        &self,
        template: &ContextTemplate,
        rows: &[(R, P)],
    ) -> Vec<Result<SealedValue>>
    where
        R: fmt::Display + Sync,
        P: AsRef<[u8]> + Sync,
    {
        use rayon::prelude::*;

        if rows.len() < PARALLEL_THRESHOLD {
            return self.seal_rows(template, rows).collect();
        }
        let results: Vec<Result<SealedValue>> = rows
            .par_iter()
            .with_min_len(MIN_PARALLEL_CHUNK)
            .map(|(row, plaintext)| self.seal_row_uncounted(template, row, plaintext.as_ref()))
            .collect();
        let label = self.tenant_label();
        let mut sealed = 0;
        for result in &results {
            match result {
                Ok(_) => sealed += 1,
                Err(_) => telemetry::sealed(result, label),
            }
        }
        telemetry::sealed_ok(sealed, label);
        results
    }
}

#[cfg(feature = "rayon")]
impl TenantSealer {
    /// Starts opening `rows` on rayon's thread pool and returns at once; the
    /// future resolves to what [`TenantSealer::par_open_rows`] gives.
    ///
    /// This is the way to open in bulk from async code without holding a
    /// runtime worker: the work runs on the pool, and awaiting only waits for
    /// it. It also lets a reader overlap the database and the cryptography:
    /// hand over each chunk of a row stream as it arrives and await the
    /// futures in order at the end (or as they are needed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use fieldseal::{Context, LocalKeyProvider, MemoryKeyStore, RootKey, Sealer};
    /// # let provider = LocalKeyProvider::new("root-1", RootKey::generate()?)?;
    /// # let sealer = Sealer::builder(provider, MemoryKeyStore::new()).build();
    /// let acme = sealer.tenant("acme").await?;
    /// let tokens = Context::builder("acme", "integrations", "refresh_token").template()?;
    /// # let stored: Vec<(i64, fieldseal::SealedValue)> = (0..2_000)
    /// #     .map(|id| Ok((id, acme.seal_row(&tokens, id, b"a token")?)))
    /// #     .collect::<Result<_, fieldseal::Error>>()?;
    /// # let mut stream = stored.chunks(500).map(<[_]>::to_vec);
    /// // `stream`: chunks of `(id, SealedValue)` rows as a database cursor
    /// // returns them, for example `try_chunks(500)` over `sqlx::query_as(..).fetch(..)`.
    /// // At most 4 chunks in flight, so memory stays bounded.
    /// let mut pending = std::collections::VecDeque::new();
    /// let mut opened = 0;
    /// while let Some(chunk) = stream.next() {
    ///     pending.push_back(acme.spawn_open_rows(&tokens, chunk));
    ///     if pending.len() == 4 {
    ///         for value in pending.pop_front().unwrap().await {
    ///             let _plaintext = value?; // use it
    ///             opened += 1;
    ///         }
    ///     }
    /// }
    /// for chunk in pending {
    ///     for value in chunk.await {
    ///         let _plaintext = value?;
    ///         opened += 1;
    ///     }
    /// }
    /// assert_eq!(opened, 2_000);
    /// # Ok(()) }
    /// ```
    ///
    /// Inside [`rayon::ThreadPool::install`], the work goes to that pool.
    ///
    /// # Errors
    ///
    /// Each item is the result [`TenantSealer::open_row`] gives for its row.
    ///
    /// # Panics
    ///
    /// If a row id's `Display` implementation panics, the panic is resumed
    /// where the future is awaited, as if the rows had been opened there.
    pub fn spawn_open_rows<R, S>(
        &self,
        template: &ContextTemplate,
        rows: Vec<(R, S)>,
    ) -> impl std::future::Future<Output = Vec<Result<Opened>>> + Send + 'static
    where
        R: fmt::Display + Send + Sync + 'static,
        S: Borrow<SealedValue> + Send + Sync + 'static,
    {
        let (sealer, template) = (self.clone(), template.clone());
        on_pool(move || sealer.par_open_rows(&template, &rows))
    }

    /// Starts sealing `rows` on rayon's thread pool and returns at once; the
    /// future resolves to what [`TenantSealer::par_seal_rows`] gives. See
    /// [`TenantSealer::spawn_open_rows`].
    ///
    /// # Errors
    ///
    /// Each item is the result [`TenantSealer::seal_row`] gives for its row.
    ///
    /// # Panics
    ///
    /// If a row id's `Display` implementation panics, the panic is resumed
    /// where the future is awaited.
    pub fn spawn_seal_rows<R, P>(
        &self,
        template: &ContextTemplate,
        rows: Vec<(R, P)>,
    ) -> impl std::future::Future<Output = Vec<Result<SealedValue>>> + Send + 'static
    where
        R: fmt::Display + Send + Sync + 'static,
        P: AsRef<[u8]> + Send + Sync + 'static,
    {
        let (sealer, template) = (self.clone(), template.clone());
        on_pool(move || sealer.par_seal_rows(&template, &rows))
    }
}

/// Runs `work` on rayon's current pool; the future gives its result, or
/// resumes its panic.
#[cfg(feature = "rayon")]
fn on_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = T> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        // The receiver is gone only if the future was dropped: nobody waits.
        let _ = tx.send(result);
    });
    async move {
        match rx.await {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // Only a pool torn down with the job still queued drops it: the
            // work never ran, and there is no result to give.
            Err(_) => std::panic::resume_unwind(Box::new(
                "fieldseal: a rayon job was dropped without running",
            )),
        }
    }
}

/// The iterator of [`TenantSealer::open_rows`].
struct OpenRows<'a, I, R, S> {
    sealer: &'a TenantSealer,
    template: &'a ContextTemplate,
    rows: I,
    /// Successes not yet counted in the metrics.
    opened: u64,
    _row: std::marker::PhantomData<fn() -> (R, S)>,
}

impl<I, R, S> Iterator for OpenRows<'_, I, R, S>
where
    I: Iterator,
    I::Item: Borrow<(R, S)>,
    R: fmt::Display,
    S: Borrow<SealedValue>,
{
    type Item = Result<Opened>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.rows.next()?;
        let (row, sealed) = item.borrow();
        let result = self
            .sealer
            .keyring
            .open_row(self.template, row, sealed.borrow());
        match &result {
            Ok(_) => self.opened += 1,
            Err(_) => telemetry::opened(&result, self.sealer.tenant_label()),
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rows.size_hint()
    }
}

impl<I, R, S> Drop for OpenRows<'_, I, R, S> {
    fn drop(&mut self) {
        telemetry::opened_ok(self.opened, self.sealer.tenant_label());
    }
}

/// The iterator of [`TenantSealer::seal_rows`].
struct SealRows<'a, I, R, P> {
    sealer: &'a TenantSealer,
    template: &'a ContextTemplate,
    rows: I,
    /// Successes not yet counted in the metrics.
    sealed: u64,
    _row: std::marker::PhantomData<fn() -> (R, P)>,
}

impl<I, R, P> Iterator for SealRows<'_, I, R, P>
where
    I: Iterator,
    I::Item: Borrow<(R, P)>,
    R: fmt::Display,
    P: AsRef<[u8]>,
{
    type Item = Result<SealedValue>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.rows.next()?;
        let (row, plaintext) = item.borrow();
        let result = self
            .sealer
            .seal_row_uncounted(self.template, row, plaintext.as_ref());
        match &result {
            Ok(_) => self.sealed += 1,
            Err(_) => telemetry::sealed(&result, self.sealer.tenant_label()),
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rows.size_hint()
    }
}

impl<I, R, P> Drop for SealRows<'_, I, R, P> {
    fn drop(&mut self) {
        telemetry::sealed_ok(self.sealed, self.sealer.tenant_label());
    }
}
