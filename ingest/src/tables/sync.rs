//! The catalog poll: every `storage.catalog_poll` an ingest process re-reads the
//! store's table catalog and does what a restart would. A table another process
//! created over the table API is started here (its reader, sealer and hot tier;
//! with `kafka.rebalance` this process joins its consumer group); a table
//! another process dropped stops being read and served here, and what this
//! process wrote of it (its own segments, its log) is deleted. A table another
//! process changed keeps the definition it started with here, logged once,
//! until this process restarts (only embedded-log tables can change, and those
//! are never shared between processes).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_storage::catalog;
use weir_storage::config::DefinitionFormat;
use weir_storage::manifest;
use weir_storage::runtime::block_on;
use weir_storage::store::StoreError;

use super::{CatalogSync, Origin, TableError, Tables};

impl Tables {
    /// Reads the catalog once and starts the tables it defines that this
    /// process does not serve, and stops the API tables it no longer defines.
    pub fn sync_catalog(&self) -> Result<CatalogSync, TableError> {
        // Under `changing`: a create or a drop of this process is either
        // finished (its catalog entry and its table agree) or not begun.
        let _changing = self.changing.lock();
        let mut done = CatalogSync::default();
        if !self.accepting.load(Ordering::SeqCst) {
            return Ok(done);
        }
        let store = self.store.clone();
        let listing = block_on(async move { catalog::listing(&store).await })
            .map_err(|e| TableError::Unavailable(format!("listing the table catalog: {e}")))?;
        let mut seen = self.seen.lock();
        let mut defined: Vec<(String, String)> = Vec::new();
        for (name, version) in listing {
            let text = match seen.read.get(&name) {
                Some((v, text)) if *v == version => text.clone(),
                _ => {
                    let (store, n) = (self.store.clone(), name.clone());
                    match block_on(async move { catalog::read(&store, &n).await }) {
                        Ok(text) => {
                            seen.read.insert(name.clone(), (version, text.clone()));
                            text
                        }
                        // Dropped since the listing.
                        Err(StoreError::NotFound { .. }) => continue,
                        Err(e) => {
                            return Err(TableError::Unavailable(format!(
                                "reading the definition of table `{name}` from the catalog: {e}"
                            )));
                        }
                    }
                }
            };
            defined.push((name, text));
        }
        seen.read.retain(|n, _| defined.iter().any(|(d, _)| d == n));

        for (name, text) in &defined {
            match self.get(name) {
                Some(t) if t.origin == Origin::Config => seen.note(
                    name,
                    format!(
                        "table `{name}` is defined both in this process's config and by the table API ({}); this process serves its config's",
                        catalog::definition_path(name)
                    ),
                ),
                Some(t) => {
                    let changing = self.replays.of_table(name).iter().any(|j| !j.state.finished());
                    if t.definition.as_deref() != Some(text.as_str()) && !changing {
                        seen.note(
                            name,
                            format!(
                                "table `{name}` was changed over the table API of another process; this process serves the definition it started with until it restarts"
                            ),
                        );
                    }
                }
                None => match self.start_defined(name, text) {
                    Ok(()) => {
                        tracing::info!(table = %name, "serving a table another process created over the table API");
                        done.started.push(name.clone());
                    }
                    Err(e) => seen.note(name, format!("table `{name}` of the table API is not served here: {e}")),
                },
            }
        }

        for t in self.list() {
            let name = &t.config.name;
            if t.origin != Origin::Api || defined.iter().any(|(d, _)| d == name) {
                continue;
            }
            if let Some(job) = self.replays.of_table(name).into_iter().find(|j| !j.state.finished()) {
                seen.note(
                    name,
                    format!(
                        "table `{name}` was dropped elsewhere; it is stopped here once its replay (job {}) ends",
                        job.id
                    ),
                );
                continue;
            }
            self.stop_table(name);
            let root = self.opener.placement(&t.config).map_or_else(|_| manifest::table_root(name), |(_, root)| root);
            if let Err(e) = self.delete_at(name, &root, t.input.log.is_some()) {
                tracing::warn!(table = %name, error = %e, "what this process wrote of a table dropped elsewhere is left");
            }
            tracing::info!(table = %name, "a table another process dropped over the table API is no longer served");
            done.stopped.push(name.clone());
        }
        Ok(done)
    }

    /// Starts a table of the catalog, as a restart would.
    fn start_defined(&self, name: &str, text: &str) -> Result<(), String> {
        if self.tier.table(name).is_some() || self.replays.building(name) {
            return Err(format!("a table named `{name}` built by a replay is served here"));
        }
        let (mut config, _) = Self::check_definition(text, DefinitionFormat::Toml).map_err(|e| e.to_string())?;
        if config.name != name {
            return Err(format!("its definition names the table `{}`", config.name));
        }
        if let Some(r) = self.clashing_relation(&config, None) {
            return Err(format!("it defines the SQL relation `{r}`, which another table here defines"));
        }
        let started = self.opener.start(&mut config, Origin::Api, Some(text.to_string()));
        self.serve(started.map_err(|e| format!("{e:#}"))?);
        Ok(())
    }

    /// Polls the catalog every `storage.catalog_poll` on a thread of its own,
    /// until shutdown begins ([`Tables::sync_catalog`]).
    pub fn watch_catalog(self: &Arc<Tables>) -> std::io::Result<()> {
        let tables = Arc::downgrade(self);
        let every = self.catalog_poll;
        std::thread::Builder::new().name("weir-catalog".into()).spawn(move || {
            loop {
                let until = Instant::now() + every;
                loop {
                    let Some(t) = tables.upgrade() else { return };
                    if !t.accepting.load(Ordering::SeqCst) {
                        return;
                    }
                    drop(t);
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                }
                let Some(t) = tables.upgrade() else { return };
                if let Err(e) = t.sync_catalog() {
                    tracing::warn!(error = %e, "the table catalog could not be read; trying again");
                }
            }
        })?;
        Ok(())
    }
}
