//! What each CLI command does, over a [`Backend`].

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::{Cli, Command, Format, Global};
use crate::client::Backend;
use crate::config::Config;
use crate::engine::{Engine, ExportFormat, Status};
use crate::home::Home;
use crate::store::Unlock;
use crate::{daemon, import};

mod contacts;
mod mesh;
mod queries;
mod shares;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let result = dispatch(cli);
    // `hearth list | head` closes stdout early: that is not an error.
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error chain as one line: `outer: inner: root`, without repeats.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// How the store is unlocked: `--passphrase-file`, else `HEARTH_PASSPHRASE`,
/// else the key file.
fn unlock(global: &Global) -> Result<Unlock> {
    if let Some(path) = &global.passphrase_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
        let line = text.lines().next().unwrap_or_default().to_string();
        if line.is_empty() {
            bail!("passphrase file {} is empty", path.display());
        }
        return Ok(Unlock::Passphrase(zeroize::Zeroizing::new(line)));
    }
    match std::env::var("HEARTH_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Ok(Unlock::Passphrase(zeroize::Zeroizing::new(p))),
        _ => Ok(Unlock::KeyFile),
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let global = cli.global;
    let home = Home::resolve(global.home.as_deref())?;
    let config = Config::load(&home.config_path())?;
    match cli.command {
        Command::Init { name } => init(&home, &global, &config, name),
        Command::Up {
            api,
            name,
            listen,
            no_mdns,
            bootstrap,
            relay,
            via_relay,
        } => {
            let keep_ports = listen.is_empty();
            let net = mesh::net_config(
                config.net.net_config(),
                &listen,
                no_mdns,
                &bootstrap,
                relay,
                &via_relay,
            )?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(daemon::run(
                &home,
                || unlock(&global),
                config,
                daemon::Options {
                    api,
                    name,
                    net,
                    keep_ports,
                },
            ))
        }
        Command::Join { ticket, qr, name } => {
            mesh::join(&home, &global, &config, ticket, qr, name, || {
                unlock(&global)
            })
        }
        command => {
            if !home.is_initialised() {
                bail!(
                    "no hearth store in {}: run `hearth init` (or `hearth up`) first",
                    home.root().display()
                );
            }
            let backend = Backend::connect(&home, || unlock(&global), &config)?;
            let result = data_command(&backend, &global, &config, command);
            backend.close();
            result
        }
    }
}

fn init(home: &Home, global: &Global, config: &Config, name: Option<String>) -> Result<()> {
    if home.is_initialised() {
        bail!(
            "{} already holds a hearth store; refusing to overwrite it",
            home.root().display()
        );
    }
    home.ensure_dirs()
        .with_context(|| format!("cannot create {}", home.root().display()))?;
    let name = name.unwrap_or_else(crate::default_device_name);
    let engine = Engine::init(
        home,
        unlock(global)?,
        config.kdf.params(),
        &name,
        config.engine.clone(),
    )?;
    let status = engine.status();
    if global.json {
        emit(&serde_json::to_string(&status)?)?;
    } else {
        emit(&format!(
            "device   {} ({})",
            status.device_id, status.device_name
        ))?;
        emit(&format!("account  {}", status.account_id))?;
        emit(&format!("store    {}", status.store))?;
    }
    Ok(())
}

/// Writes one line to stdout.
fn emit(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(())
}

fn emit_json(value: &Value) -> Result<()> {
    emit(&serde_json::to_string(value)?)
}

/// Parses a JSON argument, naming which argument is malformed.
fn parse_arg(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| anyhow!("bad JSON in {what}: {e}"))
}

fn data_command(
    backend: &Backend,
    global: &Global,
    config: &Config,
    command: Command,
) -> Result<()> {
    match command {
        Command::Status => {
            let live = backend.status()?;
            let status: Status =
                serde_json::from_value(live.clone()).context("unexpected status from the API")?;
            // The daemon adds what only it knows: the network and pairing.
            let extra = |key: &str| live.get(key).cloned().unwrap_or(Value::Null);
            if global.json {
                let mut v = serde_json::to_value(&status)?;
                v["daemon"] = json!({ "running": backend.api().is_some(), "api": backend.api() });
                v["network"] = extra("network");
                v["pairing"] = extra("pairing");
                emit_json(&v)?;
            } else {
                emit(&format!(
                    "device    {} ({})",
                    status.device_id, status.device_name
                ))?;
                emit(&format!(
                    "account   {} ({} device(s))",
                    status.account_id, status.devices
                ))?;
                emit(&format!("store     {}", status.store))?;
                emit(&format!(
                    "data      {} collection(s), {} record(s)",
                    status.collections, status.records
                ))?;
                let network = extra("network");
                if let Some(listen) = network["listen"].as_array() {
                    for addr in listen {
                        emit(&format!("listen    {}", addr.as_str().unwrap_or_default()))?;
                    }
                    let connected = network["connected"].as_array().map_or(0, Vec::len);
                    emit(&format!(
                        "peers     {connected} of the account's other devices connected"
                    ))?;
                }
                if let Some(latest) = &status.latest_device {
                    emit(&format!("latest    {latest}"))?;
                }
                let pairing = extra("pairing");
                if pairing.is_object() {
                    emit(&format!(
                        "pairing   invitation open{}",
                        if pairing["code_needed"] == true {
                            ", waiting for the check code"
                        } else {
                            ""
                        }
                    ))?;
                }
                match backend.api() {
                    Some(api) => emit(&format!("daemon    running, api {api}"))?,
                    None => emit("daemon    not running")?,
                }
            }
        }
        Command::Put {
            collection,
            record,
            id,
        } => {
            let text = match record {
                Some(text) => text,
                None => {
                    if std::io::stdin().is_terminal() {
                        bail!("no record given: pass it as a JSON argument or on stdin");
                    }
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("cannot read the record from stdin")?;
                    text
                }
            };
            let record = parse_arg("the record", &text)?;
            if !record.is_object() {
                bail!("the record must be a JSON object, got {}", kind(&record));
            }
            emit(&backend.put(&collection, id, record)?)?;
        }
        Command::Get { collection, id } => emit_json(&backend.get(&collection, &id)?)?,
        Command::List { collection } => {
            for record in backend.list(&collection)? {
                emit_json(&record)?;
            }
        }
        Command::Delete {
            collection,
            id,
            rev,
        } => {
            let rev = backend.delete(&collection, &id, rev)?;
            eprintln!("deleted {id} from {collection} (rev {rev})");
        }
        Command::Find {
            collection,
            selector,
            fields,
            sort,
            limit,
            skip,
        } => {
            let mut request = json!({ "selector": parse_arg("the selector", &selector)? });
            if !fields.is_empty() {
                request["fields"] = json!(fields);
            }
            if !sort.is_empty() {
                let sort: Vec<Value> = sort
                    .iter()
                    .map(|f| match f.strip_prefix('-') {
                        Some(f) => json!({ f: "desc" }),
                        None => json!({ f.trim_start_matches('+'): "asc" }),
                    })
                    .collect();
                request["sort"] = Value::Array(sort);
            }
            if let Some(limit) = limit {
                request["limit"] = json!(limit);
            }
            if let Some(skip) = skip {
                request["skip"] = json!(skip);
            }
            for doc in backend.find(&collection, request)? {
                emit_json(&doc)?;
            }
        }
        Command::Aggregate { collection, query } => {
            let query = parse_arg("the aggregate query", &query)?;
            emit_json(&backend.aggregate(&collection, &query)?)?;
        }
        Command::Index {
            collection,
            fields,
            name,
        } => {
            let (name, created) = backend.index(&collection, name, fields)?;
            emit_json(
                &json!({ "name": name, "result": if created { "created" } else { "exists" } }),
            )?;
        }
        Command::Collections => {
            for info in backend.collections()? {
                emit_json(&serde_json::to_value(info)?)?;
            }
        }
        Command::Import { collection, file } => {
            import(backend, global, config, &collection, &file)?;
        }
        Command::Export { collection, format } => {
            let format = match format {
                Format::Jsonl => ExportFormat::Jsonl,
                Format::Automerge => ExportFormat::Automerge,
            };
            let mut out = std::io::stdout().lock();
            if format == ExportFormat::Automerge && out.is_terminal() {
                bail!(
                    "refusing to write binary Automerge data to a terminal; redirect stdout to a file"
                );
            }
            out.write_all(&backend.export(&collection, format)?)?;
            out.flush()?;
        }
        Command::Pair { action, qr, ttl } => mesh::pair(backend, global, action, qr, ttl)?,
        Command::Devices { action } => mesh::devices(backend, global, action)?,
        Command::Contact { action } => contacts::contact(backend, global, action)?,
        Command::Contacts => contacts::list(backend, global)?,
        Command::Share {
            collection,
            contact,
            write,
            ..
        } => shares::share(backend, global, &collection, &contact, write)?,
        Command::Unshare {
            collection,
            contact,
        } => shares::unshare(backend, global, &collection, &contact)?,
        Command::Shares { action } => shares::shares(backend, global, action)?,
        Command::Query { query } => queries::query(backend, global, &query)?,
        Command::Consent { action } => queries::consent(backend, global, action)?,
        Command::Audit => queries::audit(backend, global)?,
        Command::Init { .. } | Command::Up { .. } | Command::Join { .. } => {
            bail!("internal: {command:?} is not a data command")
        }
    }
    Ok(())
}

use hearth_crdt::record::json_type as kind;

/// Imports a file in batches of `engine.import_batch` records, one durable
/// commit per batch, with a progress bar when stderr is a terminal. The file
/// is read as a stream by [`import::Reader`]; each batch goes to the API as
/// JSON Lines, never larger than `api.max_body_bytes`.
fn import(
    backend: &Backend,
    global: &Global,
    config: &Config,
    collection: &str,
    path: &Path,
) -> Result<()> {
    let started = Instant::now();
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let Some(format) = import::Format::from_path(path) else {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        bail!(
            "cannot import {}: unknown file type {extension:?}; use .json, .jsonl or .csv",
            path.display()
        );
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} importing {msg} [{bar:30}] {bytes}/{total_bytes} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(collection.to_string());
        bar
    } else {
        ProgressBar::hidden()
    };
    let name = path.display().to_string();
    let mut records = import::Reader::new(
        name.as_str(),
        format,
        BufReader::new(progress.wrap_read(file)),
        config.api.max_body_bytes,
    );
    let mut batch = Batch {
        backend,
        collection,
        name: &name,
        max_records: config.engine.import_batch.max(1),
        max_bytes: config.api.max_body_bytes,
        body: Vec::new(),
        records: 0,
        written: 0,
    };
    while let Some(record) = records.next() {
        batch.push(&record?, records.line())?;
    }
    batch.flush()?;
    let total = batch.written;
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if global.json {
        emit_json(&json!({ "collection": collection, "imported": total, "seconds": secs }))?;
    }
    eprintln!(
        "imported {total} record(s) into {collection} in {secs:.2} s ({:.0} records/s)",
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Records on their way into a collection as one JSON Lines request body,
/// sent when it holds `max_records` records or the next one would take it
/// past `max_bytes`; the API writes each body in durable commits of
/// `engine.import_batch` records.
struct Batch<'a> {
    backend: &'a Backend,
    collection: &'a str,
    /// The file, for errors.
    name: &'a str,
    max_records: usize,
    max_bytes: usize,
    body: Vec<u8>,
    records: usize,
    written: u64,
}

impl Batch<'_> {
    /// Adds `record`, read from `line` of the file.
    fn push(&mut self, record: &Value, line: u64) -> Result<()> {
        let start = self.body.len();
        serde_json::to_writer(&mut self.body, record)?;
        self.body.push(b'\n');
        let size = self.body.len() - start;
        if size > self.max_bytes {
            bail!(
                "{}:{line}: the record is {size} bytes of JSON, more than one request may carry \
                 (api.max_body_bytes = {})",
                self.name,
                self.max_bytes
            );
        }
        if self.body.len() > self.max_bytes {
            let next = self.body.split_off(start);
            self.flush()?;
            self.body = next;
        }
        self.records += 1;
        if self.records >= self.max_records {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        let body = std::mem::take(&mut self.body);
        self.records = 0;
        self.written += self.backend.import(self.collection, body)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_the_chain_without_repeats() {
        let e = anyhow!("root cause").context("while opening");
        assert_eq!(one_line(&e), "while opening: root cause");
    }
}
