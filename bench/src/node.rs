//! Driving a Hearth node in-process: a fresh home, its engine, an import.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hearth_crypto::wrap::KdfParams;
use hearth_node::config::EngineConfig;
use hearth_node::engine::{Engine, Handle, Running};
use hearth_node::home::Home;
use hearth_node::store::Unlock;
use serde_json::Value;

/// The collection every scenario imports into.
pub(crate) const DOCTYPE: &str = "bank.operations";

/// Creates a home at `root` with a new identity, unlocked by its key file
/// (as `hearth init` does without a passphrase).
pub(crate) fn init_home(root: &Path) -> Result<Home> {
    let home = Home::at(root)?;
    home.ensure_dirs()?;
    Engine::init(
        &home,
        Unlock::KeyFile,
        KdfParams::default(),
        "bench",
        hearth_node::config::EngineConfig::default(),
    )
    .with_context(|| format!("cannot initialise {}", root.display()))?;
    Ok(home)
}

/// Opens the home's store, loads every collection and starts the engine
/// with the default configuration.
pub(crate) fn open(home: &Home) -> Result<Running> {
    open_with(home, EngineConfig::default())
}

/// [`open`] with an explicit engine configuration.
pub(crate) fn open_with(home: &Home, config: EngineConfig) -> Result<Running> {
    let engine = Engine::open(home, Unlock::KeyFile, config)
        .with_context(|| format!("cannot open {}", home.root().display()))?;
    Ok(engine.spawn()?)
}

/// Imports `batches` with one `put_many` (one durable commit) each: the path
/// `hearth import` takes. Returns the number of records written.
pub(crate) async fn import(handle: &Handle, batches: Vec<Vec<Value>>) -> Result<usize> {
    let mut written = 0;
    for batch in batches {
        let n = batch.len();
        let revs = handle.put_many(DOCTYPE, batch).await?;
        if revs.len() != n {
            bail!("put_many wrote {} of {n} records", revs.len());
        }
        written += n;
    }
    Ok(written)
}

/// Checks that the engine holds exactly `expected` records.
pub(crate) async fn expect_records(handle: &Handle, expected: usize) -> Result<()> {
    let status = handle.status().await?;
    if status.records != expected {
        bail!(
            "the node holds {} records, {expected} were written",
            status.records
        );
    }
    Ok(())
}
