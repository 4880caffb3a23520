//! `hongbao backup`: a consistent copy of a data directory, served or not,
//! that `hongbao serve` serves and `hongbao audit` passes.
//!
//! A directory nobody serves is copied under its lock. A served one is
//! copied by the serving process (asked through its control socket,
//! `control.rs`), because only it can pause its writers:
//!
//! 1. the day keeper's lock is taken (no day goes cold during the copy, so
//!    the tables and the cold files agree) and the journals' trims held;
//! 2. the cold days' files, each set's tables (SQLite's online backup API:
//!    one instant of each, however the materializer writes) and each
//!    journal's sealed segments are copied, the writers running;
//! 3. every writer is paused at a batch boundary (`Engine::pause`) and each
//!    journal's last segment (the one appended to) is copied; then they go
//!    on. The journals copied are one instant of the whole node; each set's
//!    tables copied before are at or behind its journal's copy, and its
//!    journal still holds every record past them (trims were held), so a
//!    start on the copy replays them as after a crash: credits in an outbox
//!    are sent again and applied once (their ledger reference).
//! 4. the keys are copied, everything synced, and `hongbao.meta` written
//!    last: a copy cut short is not a data directory.
//!
//! The writers are paused only for step 3: the copy of the tables, which
//! grows with the data, is outside it. Not copied: `lock`, `control.sock`,
//! `keys.lock` (made again as needed) and `admin.token` (a credential: the
//! first admin's token, which an operator should have stored elsewhere and
//! removed; a copy would spread it to wherever backups go).
//!
//! A directory whose sets live on PostgreSQL holds only its keys and its
//! metadata here: those are copied (no PostgreSQL tool copies them, and
//! losing `keys.json` invalidates every token), and the report says that
//! the sets must be backed up with PostgreSQL's own tools (`pg_dump`,
//! `pg_basebackup`), which are made for a consistent copy of a database.

use std::fs::{self, DirBuilder, File};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hongbao_domain::SetId;
use hongbao_engine::Engine;
use hongbao_store_sqlite::{
    Source, cold_dir, cold_root, copy_database, journal_path, journal_segments, keeper_lock_path, set_path,
};
use serde::{Deserialize, Serialize};

use crate::data_dir::{DataDir, DataDirError, KEYS_FILE, LEGACY_SECRET_FILE, META_FILE};
use crate::{StoreKind, control};

/// The longest the writers stay paused by default (`--pause-max-ms`): past
/// it they go on by themselves, and the backup fails.
pub const PAUSE_MAX_DEFAULT: Duration = Duration::from_secs(5);

/// How long a backup waits for a pass of the day keeper to end.
const KEEPER_WAIT: Duration = Duration::from_secs(30);

/// What a backup copied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupReport {
    pub to: PathBuf,
    pub sets: u16,
    pub bytes: u64,
    /// How long the writers were paused (a served directory's copy), in
    /// microseconds.
    pub paused_us: Option<u64>,
    pub took_ms: u64,
    /// The sets live on PostgreSQL: only the keys and the metadata were copied.
    pub postgres: bool,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = self.to.display();
        if self.postgres {
            return write!(
                f,
                "backup of the keys and metadata to {to}: the {} sets live on PostgreSQL and are NOT in this copy; \
                 back them up with PostgreSQL's tools (pg_dump, pg_basebackup)",
                self.sets
            );
        }
        let paused = match self.paused_us {
            Some(us) => format!("writers paused {:.1} ms", us as f64 / 1000.0),
            None => "the directory was not served".to_owned(),
        };
        write!(f, "backup ok: {} sets to {to}, {} bytes in {} ms; {paused}", self.sets, self.bytes, self.took_ms)
    }
}

/// `hongbao backup --data DIR --to TARGET`: copies a stopped directory
/// itself, and asks the server of a served one to.
pub fn backup_command(dir: &Path, to: &Path, pause_max: Duration) -> Result<BackupReport> {
    let data = DataDir::open(dir)?;
    let target = checked_target(&data, to)?;
    match data.lock_to_read() {
        Ok(_lock) => copy(&data, &target, None, pause_max),
        Err(DataDirError::InUse { .. }) if data.store == StoreKind::Postgres => copy(&data, &target, None, pause_max),
        Err(DataDirError::InUse { .. }) => control::request_backup(&data, &target, pause_max),
        Err(error) => Err(error.into()),
    }
}

/// A backup by the serving process, of the directory it serves (asked
/// through its control socket). Blocks: call it off the async runtime.
pub(crate) fn backup_served(data: &DataDir, engine: &Engine, to: &Path, pause_max: Duration) -> Result<BackupReport> {
    if !to.is_absolute() {
        bail!("{} is not an absolute path", to.display());
    }
    let target = checked_target(data, to)?;
    copy(data, &target, Some(engine), pause_max)
}

/// The backup's target, absolute: a new or empty directory outside the
/// data directory.
fn checked_target(data: &DataDir, to: &Path) -> Result<PathBuf> {
    let target = absolute(to)?;
    match fs::read_dir(&target).map(|mut entries| entries.next().is_none()) {
        Ok(true) => {}
        Ok(false) => bail!("{} exists and is not empty: a backup goes to a new or empty directory", target.display()),
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => bail!("{}: {error} (a backup goes to a new or empty directory)", target.display()),
    }
    let source = fs::canonicalize(&data.path).with_context(|| format!("resolving {}", data.path.display()))?;
    if target.starts_with(&source) {
        bail!("{} is inside the data directory {}: a backup goes elsewhere", target.display(), source.display());
    }
    Ok(target)
}

/// `path` made absolute, with its longest existing ancestor resolved (links
/// and `..`), so that "inside the data directory" is decided on real paths.
/// The part that does not exist yet has no links: its `..` are taken as
/// written.
fn absolute(path: &Path) -> Result<PathBuf> {
    let path = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let mut existing = path.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        let Some(last) = existing.components().next_back() else { break };
        rest.push(last.as_os_str().to_owned());
        if !existing.pop() {
            break;
        }
    }
    let mut resolved = fs::canonicalize(&existing).with_context(|| format!("resolving {}", existing.display()))?;
    for part in rest.iter().rev() {
        if Path::new(part).components().eq([Component::ParentDir]) {
            resolved.pop();
        } else {
            resolved.push(part);
        }
    }
    Ok(resolved)
}

/// Makes the target (0700: it holds the keys), copies into it, and on a
/// failure removes what it made.
fn copy(data: &DataDir, target: &Path, engine: Option<&Engine>, pause_max: Duration) -> Result<BackupReport> {
    let made = !target.exists();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(target)
        .with_context(|| format!("making {}", target.display()))?;
    let copied = copy_into(data, target, engine, pause_max);
    if copied.is_err() {
        let removed = if made { fs::remove_dir_all(target) } else { empty(target) };
        if let Err(error) = removed {
            tracing::warn!(%error, target = %target.display(), "removing a failed backup's files");
        }
    }
    copied
}

fn empty(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { fs::remove_dir_all(&path)? } else { fs::remove_file(&path)? }
    }
    Ok(())
}

fn copy_into(data: &DataDir, target: &Path, engine: Option<&Engine>, pause_max: Duration) -> Result<BackupReport> {
    let started = Instant::now();
    let mut copier = Copier { target: target.to_owned(), bytes: 0, unsynced: Vec::new() };
    let mut paused_us = None;
    if data.store == StoreKind::Sqlite {
        let _keeper = match engine {
            Some(_) => Some(lock_the_keeper(&data.path)?),
            None => None, // nothing keeps days in a directory nobody serves
        };
        let _trims = engine.map(Engine::hold_trims);
        copier.cold_days(data)?;
        let source = if engine.is_some() { Source::Live } else { Source::Stopped };
        let mut appended = Vec::new();
        for set in data.set_ids() {
            let copied = copy_database(&set_path(&data.path, set), &set_path(target, set), source)?;
            copier.bytes += copied;
            appended.push(copier.sealed_segments(data, set, engine.is_some())?);
        }
        if let Some(engine) = engine {
            let paused = engine.pause(Instant::now() + pause_max).context("pausing the writers")?;
            for (set, from) in data.set_ids().zip(&appended) {
                copier.segments_from(data, set, from.as_deref())?;
            }
            let lasted = paused.resume().context("the copy of the journals")?;
            paused_us = Some(lasted.as_micros() as u64);
        }
    }
    for name in [KEYS_FILE, LEGACY_SECRET_FILE] {
        if data.file(name).exists() {
            copier.file(&data.file(name), &target.join(name))?;
        }
    }
    copier.sync()?;
    copier.file(&data.file(META_FILE), &target.join(META_FILE))?;
    copier.sync()?;
    sync_dir(target)?;
    Ok(BackupReport {
        to: target.to_owned(),
        sets: data.sets,
        bytes: copier.bytes,
        paused_us,
        took_ms: started.elapsed().as_millis() as u64,
        postgres: data.store == StoreKind::Postgres,
    })
}

/// Files copied into the target, synced together once the copy is taken
/// (a sync is no part of the instant copied, so none is in the pause).
struct Copier {
    target: PathBuf,
    bytes: u64,
    unsynced: Vec<PathBuf>,
}

impl Copier {
    fn file(&mut self, from: &Path, to: &Path) -> Result<()> {
        self.bytes += fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        self.unsynced.push(to.to_owned());
        Ok(())
    }

    fn directory(&mut self, dir: &Path) -> Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("making {}", dir.display()))?;
        self.unsynced.push(dir.to_owned());
        Ok(())
    }

    /// Every cold day's file (whole ones only: a `.db.new` is a move cut
    /// short, which the keeper redoes).
    fn cold_days(&mut self, data: &DataDir) -> Result<()> {
        if !cold_root(&data.path).is_dir() {
            return Ok(());
        }
        self.directory(&cold_root(&self.target))?;
        for set in data.set_ids() {
            let from = cold_dir(&data.path, set);
            let Ok(entries) = fs::read_dir(&from) else { continue };
            let to = cold_dir(&self.target, set);
            self.directory(&to)?;
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", from.display()))?;
                let name = entry.file_name();
                if name.to_str().is_some_and(|name| name.ends_with(".db")) {
                    self.file(&entry.path(), &to.join(&name))?;
                }
            }
        }
        Ok(())
    }

    /// Copies `set`'s sealed segments (all of them when not `live`: nothing
    /// appends); answers the name of the first not copied.
    fn sealed_segments(&mut self, data: &DataDir, set: SetId, live: bool) -> Result<Option<PathBuf>> {
        self.directory(&journal_path(&self.target, set))?;
        let mut segments = journal_segments(&data.path, set)?;
        let last = if live { segments.pop() } else { None };
        for segment in &segments {
            self.segment(data, set, segment)?;
        }
        Ok(last.and_then(|last| last.file_name().map(PathBuf::from)))
    }

    /// Copies `set`'s segments from the one named `from` on (all, if none).
    fn segments_from(&mut self, data: &DataDir, set: SetId, from: Option<&Path>) -> Result<()> {
        for segment in journal_segments(&data.path, set)? {
            if from.is_none_or(|from| segment.file_name().is_some_and(|name| Path::new(name) >= from)) {
                self.segment(data, set, &segment)?;
            }
        }
        Ok(())
    }

    /// One segment; one trimmed away meanwhile held only records the
    /// tables' copy already holds (trims are held; one begun before the
    /// hold removes only what the tables held then), and is skipped.
    fn segment(&mut self, data: &DataDir, set: SetId, segment: &Path) -> Result<()> {
        let Some(name) = segment.file_name() else { return Ok(()) };
        let to = journal_path(&self.target, set).join(name);
        match fs::copy(segment, &to) {
            Ok(bytes) => {
                self.bytes += bytes;
                self.unsynced.push(to);
                Ok(())
            }
            Err(error) if error.kind() == ErrorKind::NotFound && !segment.exists() => {
                let _ = fs::remove_file(&to);
                tracing::info!(set = %set, segment = %segment.display(), dir = %data.path.display(), "a segment trimmed during the copy is left out");
                Ok(())
            }
            Err(error) => Err(error).with_context(|| format!("copying {} to {}", segment.display(), to.display())),
        }
    }

    fn sync(&mut self) -> Result<()> {
        for path in self.unsynced.drain(..) {
            File::open(&path)
                .and_then(|file| file.sync_all())
                .with_context(|| format!("syncing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The day keeper's lock (`cold/lock`), so that no day goes cold during
/// the copy; waits for a pass in progress, at most `KEEPER_WAIT`.
fn lock_the_keeper(dir: &Path) -> Result<File> {
    let path = keeper_lock_path(dir);
    DirBuilder::new().recursive(true).mode(0o700).create(cold_root(dir))?;
    let file = crate::data_dir::open_lock_file(&path)?;
    let deadline = Instant::now() + KEEPER_WAIT;
    while file.try_lock().is_err() {
        if Instant::now() >= deadline {
            bail!("the day keeper held {} for over {} s; try again", path.display(), KEEPER_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}
