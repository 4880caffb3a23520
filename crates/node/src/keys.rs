//! The data directory's keys on disk: `keys.json` (the signing keys, the
//! ids of removed keys, and each admin's name with the SHA-256 digest of
//! its secret) and `admin.token` (the first admin's token, written once for
//! whoever set the node up; delete it once it is stored elsewhere).
//!
//! Both are written whole and atomically (a temporary file, fsync, rename,
//! fsync of the directory), readable by their owner only. Edits by
//! `hongbao keys` and `hongbao admin` take `keys.lock`, so two at once
//! cannot lose one another's change; a running server picks the new file
//! up within a second (`watch`).
//!
//! A directory from before expiring tokens has `token.secret` instead: on
//! first start its user tokens (which never expired) stop working, a new
//! key and a new admin credential are made, and `token.secret` is removed.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hongbao_server::token::{AdminCredential, AdminName, Auth, KeyId, Keys, SigningKey, admin_digest, admin_token};
use serde::{Deserialize, Serialize};

use crate::data_dir::{ADMIN_TOKEN_FILE, KEYS_FILE, KEYS_LOCK_FILE, LEGACY_SECRET_FILE, open_lock_file};

const FORMAT_VERSION: u32 = 1;
/// The first admin, made with the directory.
pub const FIRST_ADMIN: &str = "root";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    current: String,
    signing_keys: Vec<KeyEntry>,
    removed_keys: Vec<String>,
    admins: Vec<AdminEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    /// 32 bytes, base64url.
    secret: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminEntry {
    name: String,
    /// SHA-256 of the secret, base64url.
    secret_sha256: String,
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("reading the system's random source: {e}"))?;
    Ok(bytes)
}

fn new_key() -> Result<SigningKey> {
    let id = KeyId::parse(&URL_SAFE_NO_PAD.encode(random_bytes::<6>()?)).expect("8 base64url characters");
    Ok(SigningKey { id, secret: random_bytes()? })
}

/// A new admin credential and the token that presents it.
fn new_admin(name: AdminName) -> Result<(AdminCredential, String)> {
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let token = admin_token(&name, &secret);
    Ok((AdminCredential { name, digest: admin_digest(&secret) }, token))
}

fn decode32(text: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = URL_SAFE_NO_PAD.decode(text).with_context(|| format!("{what} is not base64url"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("{what} is not 32 bytes"))
}

impl KeyFile {
    fn from_keys(keys: &Keys) -> KeyFile {
        KeyFile {
            version: FORMAT_VERSION,
            current: keys.current.to_string(),
            signing_keys: keys
                .signing
                .iter()
                .map(|key| KeyEntry { id: key.id.to_string(), secret: URL_SAFE_NO_PAD.encode(key.secret) })
                .collect(),
            removed_keys: keys.removed.iter().map(ToString::to_string).collect(),
            admins: keys
                .admins
                .iter()
                .map(|admin| AdminEntry {
                    name: admin.name.to_string(),
                    secret_sha256: URL_SAFE_NO_PAD.encode(admin.digest),
                })
                .collect(),
        }
    }

    fn into_keys(self) -> Result<Keys> {
        if self.version != FORMAT_VERSION {
            bail!("version {} is not one this build reads ({FORMAT_VERSION})", self.version);
        }
        let signing = self
            .signing_keys
            .into_iter()
            .map(|entry| {
                Ok(SigningKey { secret: decode32(&entry.secret, "a key's secret")?, id: KeyId::parse(&entry.id)? })
            })
            .collect::<Result<_>>()?;
        let admins = self
            .admins
            .into_iter()
            .map(|entry| {
                let digest = decode32(&entry.secret_sha256, "an admin's digest")?;
                Ok(AdminCredential { name: AdminName::parse(&entry.name)?, digest })
            })
            .collect::<Result<_>>()?;
        let removed = self.removed_keys.iter().map(|id| KeyId::parse(id)).collect::<Result<_, _>>()?;
        Ok(Keys { current: KeyId::parse(&self.current)?, signing, removed, admins })
    }
}

/// Writes `contents` to `path` atomically and durably, readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file in a directory")?;
    let temporary = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    File::open(dir).and_then(|dir| dir.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

fn save(dir: &Path, keys: &Keys) -> Result<()> {
    Auth::new(keys.clone()).context("refusing to write keys that cannot serve")?;
    let mut text = serde_json::to_vec_pretty(&KeyFile::from_keys(keys)).context("encoding the keys")?;
    text.push(b'\n');
    write_private(&dir.join(KEYS_FILE), &text)
}

/// The keys of an existing data directory.
pub fn load(dir: &Path) -> Result<Keys> {
    let path = dir.join(KEYS_FILE);
    if !path.exists() {
        bail!(
            "{} has no {KEYS_FILE}: it is not a data directory yet; run `hongbao serve --data {}` once to create it",
            dir.display(),
            dir.display()
        );
    }
    let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("reading {}", path.display()))
}

fn parse(text: &[u8]) -> Result<Keys> {
    serde_json::from_slice::<KeyFile>(text)?.into_keys()
}

/// The keys of a data directory, made on its first start (a signing key,
/// and the first admin, whose token goes to `admin.token`).
pub fn load_or_create(dir: &Path) -> Result<Keys> {
    if dir.join(KEYS_FILE).exists() {
        return load(dir);
    }
    let key = new_key()?;
    let (admin, token) = new_admin(AdminName::parse(FIRST_ADMIN).expect("a valid name"))?;
    let keys = Keys { current: key.id.clone(), signing: vec![key], removed: vec![], admins: vec![admin] };
    write_private(&dir.join(ADMIN_TOKEN_FILE), format!("{token}\n").as_bytes())?;
    save(dir, &keys)?;
    let legacy = dir.join(LEGACY_SECRET_FILE);
    if legacy.exists() {
        tracing::warn!(
            "{} held the secret of tokens that never expired; those tokens no longer work. New keys are in {}, \
             and a new admin token in {}",
            legacy.display(),
            KEYS_FILE,
            ADMIN_TOKEN_FILE
        );
        fs::remove_file(&legacy).with_context(|| format!("removing {}", legacy.display()))?;
    }
    Ok(keys)
}

/// Applies `edit` to the directory's keys under `keys.lock`, and writes them.
fn edit<T>(dir: &Path, edit: impl FnOnce(&mut Keys) -> Result<T>) -> Result<T> {
    load(dir)?; // a directory without keys is refused before a lock file is made in it
    let lock_path = dir.join(KEYS_LOCK_FILE);
    let lock = open_lock_file(&lock_path)?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    let mut keys = load(dir)?;
    let answer = edit(&mut keys)?;
    save(dir, &keys)?;
    Ok(answer)
}

/// Makes a new current key; the old ones keep verifying until removed.
pub fn rotate(dir: &Path) -> Result<KeyId> {
    edit(dir, |keys| {
        let key = new_key()?;
        let id = key.id.clone();
        keys.signing.insert(0, key);
        keys.current = id.clone();
        Ok(id)
    })
}

/// Removes a key: the tokens it signed are refused as `unknown_key`.
pub fn remove_key(dir: &Path, id: &KeyId) -> Result<()> {
    edit(dir, |keys| {
        if keys.current == *id {
            bail!("{id} is the current key: rotate first, then remove it");
        }
        let before = keys.signing.len();
        keys.signing.retain(|key| key.id != *id);
        if keys.signing.len() == before {
            bail!("there is no signing key {id}");
        }
        keys.removed.push(id.clone());
        Ok(())
    })
}

/// Adds an admin; answers its token (shown once: only a digest is kept).
pub fn add_admin(dir: &Path, name: &AdminName) -> Result<String> {
    edit(dir, |keys| {
        if keys.admins.iter().any(|admin| admin.name == *name) {
            bail!("there is an admin {name} already: revoke it first to replace its token");
        }
        let (admin, token) = new_admin(name.clone())?;
        keys.admins.push(admin);
        Ok(token)
    })
}

/// Revokes an admin: its token stops working within a second.
pub fn revoke_admin(dir: &Path, name: &AdminName) -> Result<()> {
    edit(dir, |keys| {
        let before = keys.admins.len();
        keys.admins.retain(|admin| admin.name != *name);
        if keys.admins.len() == before {
            bail!("there is no admin {name}");
        }
        Ok(())
    })
}

/// Watches `keys.json` and hands every changed, valid version to `apply`;
/// a file that does not parse is logged and the keys in force stay.
pub async fn watch(dir: PathBuf, mut apply: impl FnMut(Auth) + Send + 'static) {
    /// How soon a rotation, a removed key or a revoked admin takes effect.
    const POLL: std::time::Duration = std::time::Duration::from_secs(1);
    let path = dir.join(KEYS_FILE);
    let mut seen = fs::read(&path).ok();
    loop {
        tokio::time::sleep(POLL).await;
        let Ok(text) = fs::read(&path) else { continue };
        if seen.as_ref() == Some(&text) {
            continue;
        }
        match parse(&text).and_then(|keys| Auth::new(keys).map_err(Into::into)) {
            Ok(auth) => {
                tracing::info!(current = %auth.keys().current, "keys reloaded from {}", path.display());
                apply(auth);
            }
            Err(error) => {
                tracing::error!(%error, "{} changed but cannot be used; the keys in force stay", path.display())
            }
        }
        seen = Some(text);
    }
}
