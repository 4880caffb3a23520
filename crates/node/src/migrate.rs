//! Schema migrations as an operator's explicit step: `hongbao migrate
//! --data DIR` (the directory stopped), or `hongbao serve --migrate`.
//! `hongbao serve` refuses a directory whose sets need one, so a new build
//! never changes the files of an old one behind the operator's back (a
//! backup first is then their choice); a brand new directory or database is
//! made at the current version without asking.
//!
//! Every set's version is read first: a version newer than this build's is
//! refused before anything changes. Then, on SQLite (a file per set), each
//! set to migrate is copied (`set-NNN.db.pre-migration`, SQLite's backup
//! API) and migrated in one transaction of its own, in set order. If a
//! set's migration fails, the sets migrated before it are put back from
//! their copies, so no set changed; the copies are removed once all sets
//! have migrated. A process killed midway leaves some sets migrated, each
//! whole (one transaction), and the copies of the rest: `hongbao migrate`
//! again finishes the job (or the copies undo it by hand). On PostgreSQL
//! each database migrates in one transaction; a data set on several
//! databases migrates them one after another, and one that fails leaves
//! those before it migrated (the next `hongbao migrate` finishes).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hongbao_domain::SetId;
use hongbao_store_sqlite::{SCHEMA_VERSION, Source, copy_database, migrate_set, schema_version, set_path};

use crate::StoreChoice;
use crate::data_dir::DataDir;

/// What `migrate` changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateReport {
    /// Each set (SQLite) or database (PostgreSQL) migrated, with the
    /// version it was at.
    pub migrated: Vec<(String, i64)>,
    /// The version every set is at now.
    pub version: i64,
}

impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.migrated.is_empty() {
            return write!(f, "migrate: nothing to do, every set is at schema version {}", self.version);
        }
        let what: Vec<String> = self.migrated.iter().map(|(name, from)| format!("{name} (from {from})")).collect();
        write!(f, "migrate ok: {} to schema version {}", what.join(", "), self.version)
    }
}

/// `hongbao migrate --data DIR`: the directory must be stopped.
pub fn migrate_command(dir: &Path, store: &StoreChoice) -> Result<MigrateReport> {
    let data = DataDir::open(dir)?;
    if data.store != store.kind() {
        let path = dir.display().to_string();
        let requested = store.kind();
        return Err(crate::data_dir::DataDirError::StoreMismatch { path, created: data.store, requested }.into());
    }
    let _lock = data.lock_to_serve().context("migrating needs a stopped data directory")?;
    migrate(&data, store)
}

/// `before_serving`, off the async runtime (it reads, and may migrate,
/// files and databases).
pub(crate) async fn before_serving_async(data: &DataDir, store: &StoreChoice, migrate_too: bool) -> Result<()> {
    let (data, store) = (data.clone(), store.clone());
    let checked = tokio::task::spawn_blocking(move || before_serving(&data, &store, migrate_too));
    checked.await.context("the task that checks the schema")?
}

/// Before serving (the caller holds the lock): a directory whose sets need
/// a migration is refused, or migrated when `migrate` says so.
pub(crate) fn before_serving(data: &DataDir, store: &StoreChoice, migrate_too: bool) -> Result<()> {
    let behind = behind(data, store)?;
    if behind.is_empty() {
        return Ok(());
    }
    if migrate_too {
        let report = migrate(data, store)?;
        tracing::info!(%report, "migrated before serving");
        return Ok(());
    }
    let what: Vec<String> = behind.iter().map(|(name, from)| format!("{name} at {from}")).collect();
    bail!(
        "{} needs a schema migration to version {} ({}): run `hongbao migrate --data {}` (stopped; back it up \
         first with `hongbao backup`), or serve with `hongbao serve --migrate`",
        data.path.display(),
        latest(store),
        what.join(", "),
        data.path.display()
    )
}

fn latest(store: &StoreChoice) -> i64 {
    match store {
        StoreChoice::Sqlite => SCHEMA_VERSION,
        StoreChoice::Postgres(_) => hongbao_store_pg::SCHEMA_VERSION,
    }
}

/// The sets (or databases) whose schema is older than this build's, with
/// their versions; refuses a newer one. New ones (version 0) are made at
/// the current version when opened, and are not listed.
fn behind(data: &DataDir, store: &StoreChoice) -> Result<Vec<(String, i64)>> {
    match store {
        StoreChoice::Sqlite => {
            Ok(sets_behind(data)?.into_iter().map(|(set, version)| (format!("set {set}"), version)).collect())
        }
        StoreChoice::Postgres(map) => {
            let versions = hongbao_store_pg::schema_versions(map, data.sets)?;
            only_behind(versions, hongbao_store_pg::SCHEMA_VERSION)
        }
    }
}

fn sets_behind(data: &DataDir) -> Result<Vec<(SetId, i64)>> {
    let versions = data.set_ids().map(|set| Ok((set, schema_version(&data.path, set)?)));
    let versions = versions.collect::<Result<Vec<_>, hongbao_engine::StoreError>>()?;
    let named = versions.iter().map(|(set, version)| (format!("set {set}"), *version)).collect();
    only_behind(named, SCHEMA_VERSION)?;
    Ok(versions.into_iter().filter(|(_, version)| (1..SCHEMA_VERSION).contains(version)).collect())
}

fn only_behind(versions: Vec<(String, i64)>, latest: i64) -> Result<Vec<(String, i64)>> {
    if let Some((name, version)) = versions.iter().find(|(_, version)| *version > latest) {
        bail!("{name} has schema version {version}, newer than this build knows ({latest}): use a newer build");
    }
    Ok(versions.into_iter().filter(|(_, version)| (1..latest).contains(version)).collect())
}

fn migrate(data: &DataDir, store: &StoreChoice) -> Result<MigrateReport> {
    let migrated = behind(data, store)?;
    match store {
        StoreChoice::Postgres(map) if !migrated.is_empty() => hongbao_store_pg::migrate_databases(map, data.sets)?,
        StoreChoice::Postgres(_) => {}
        StoreChoice::Sqlite => {
            let sets: Vec<SetId> = sets_behind(data)?.into_iter().map(|(set, _)| set).collect();
            migrate_sets(&data.path, &sets)?;
        }
    }
    Ok(MigrateReport { migrated, version: latest(store) })
}

/// Where a set's database is kept while the sets migrate.
fn copy_path(dir: &Path, set: SetId) -> PathBuf {
    PathBuf::from(format!("{}.pre-migration", set_path(dir, set).display()))
}

/// Copies, then migrates, each of `sets`; one failing puts back those
/// before it.
fn migrate_sets(dir: &Path, sets: &[SetId]) -> Result<()> {
    for &set in sets {
        let copy = copy_path(dir, set);
        let _ = fs::remove_file(&copy);
        copy_database(&set_path(dir, set), &copy, Source::Stopped)
            .with_context(|| format!("copying set {set} before it migrates"))?;
    }
    for (done, &set) in sets.iter().enumerate() {
        if let Err(failure) = migrate_set(dir, set) {
            let restored = sets[..done].iter().try_for_each(|&set| put_back(dir, set));
            let removed = sets[done..].iter().try_for_each(|&set| fs::remove_file(copy_path(dir, set)));
            match restored.and(removed) {
                Ok(()) => bail!(
                    "set {set} did not migrate: {}; the sets migrated before it were put back: no set changed",
                    failure.message
                ),
                Err(error) => bail!(
                    "set {set} did not migrate: {}; putting back the sets before it failed too ({error}): \
                     their copies are the set-NNN.db.pre-migration files in {}",
                    failure.message,
                    dir.display()
                ),
            }
        }
    }
    for &set in sets {
        fs::remove_file(copy_path(dir, set)).with_context(|| format!("removing {}", copy_path(dir, set).display()))?;
    }
    Ok(())
}

/// Puts a set's copy back in place of its database (its WAL, if any,
/// removed first: it belongs to the migrated file).
fn put_back(dir: &Path, set: SetId) -> std::io::Result<()> {
    let path = set_path(dir, set);
    for suffix in ["-wal", "-shm"] {
        match fs::remove_file(format!("{}{suffix}", path.display())) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    fs::rename(copy_path(dir, set), &path)?;
    fs::File::open(dir)?.sync_all()
}
