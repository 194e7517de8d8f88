//! Where the master key comes from: `BASTION_MASTER_KEY`, else `<data-dir>/master.key` (0600),
//! else — only for a database that has no key ring yet — a new key written to that file.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bastion_crypto::master::MasterKey;
use bastion_store::Store;
use secrecy::ExposeSecret;

use crate::startup::StartupError;

pub const ENV_VAR: &str = "BASTION_MASTER_KEY";
pub const FILE_NAME: &str = "master.key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    Env,
    File(PathBuf),
    Generated(PathBuf),
}

impl std::fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env => write!(f, "environment ({ENV_VAR})"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Generated(p) => write!(f, "generated into {}", p.display()),
        }
    }
}

/// Finds or creates the master key. Never generates one for a database that already has a key
/// ring: that would lock the operator out of their own data.
pub async fn resolve(
    data_dir: &Path,
    store: &dyn Store,
) -> Result<(MasterKey, MasterKeySource), StartupError> {
    if let Ok(v) = std::env::var(ENV_VAR) {
        let key =
            MasterKey::parse(&v).map_err(|e| StartupError::MasterKey(format!("{ENV_VAR}: {e}")))?;
        return Ok((key, MasterKeySource::Env));
    }
    let path = data_dir.join(FILE_NAME);
    if path.exists() {
        let key = read_key_file(&path)?;
        return Ok((key, MasterKeySource::File(path)));
    }
    if bastion_core::keys::is_initialised(store)
        .await
        .map_err(|e| StartupError::MasterKey(e.to_string()))?
    {
        return Err(StartupError::MasterKey(format!(
            "no master key: the database already has a key ring, but neither {ENV_VAR} nor {} is set; \
             restore the original key (a new one would not open the data)",
            path.display()
        )));
    }
    let key = MasterKey::generate().map_err(|e| StartupError::MasterKey(e.to_string()))?;
    write_key_file(&path, &key)?;
    Ok((key, MasterKeySource::Generated(path)))
}

/// Reads a master key file, refusing one that other users can read.
pub fn read_key_file(path: &Path) -> Result<MasterKey, StartupError> {
    let mode = std::fs::metadata(path)
        .map_err(|e| StartupError::MasterKey(format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(StartupError::MasterKey(format!(
            "{} is readable by other users (mode {:o}); run `chmod 600` on it",
            path.display(),
            mode & 0o777
        )));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| StartupError::MasterKey(format!("{}: {e}", path.display())))?,
    );
    MasterKey::parse(&text).map_err(|e| StartupError::MasterKey(format!("{}: {e}", path.display())))
}

/// Replaces the key file at `path` with `key`: written beside it, synced, then renamed over
/// it, so a crash leaves either the old file or the new one, never a torn one.
pub fn replace_key_file(path: &Path, key: &MasterKey) -> Result<(), StartupError> {
    let tmp = path.with_extension("key.next");
    // A leftover from a crashed attempt holds no key in use: the rename never happened.
    let _ = std::fs::remove_file(&tmp);
    write_key_file(&tmp, key)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| StartupError::MasterKey(format!("replacing {}: {e}", path.display())))?;
    if let Some(dir) = path.parent() {
        // Persist the rename itself.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Writes `key` to a new 0600 file (never overwriting one).
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), StartupError> {
    let err =
        |e: std::io::Error| StartupError::MasterKey(format!("writing {}: {e}", path.display()));
    // create_new: never overwrite a key another process just wrote.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(key.to_hex().expose_secret().as_bytes())
        .map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

/// Creates the data directory with mode 0700 (or warns if an existing one is looser).
pub fn ensure_data_dir(dir: &Path) -> Result<(), StartupError> {
    if dir.exists() {
        let mode = std::fs::metadata(dir)
            .map_err(|e| StartupError::DataDir(format!("{}: {e}", dir.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "data directory is accessible to other users");
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StartupError::DataDir(format!("creating {}: {e}", dir.display())))
}
