//! The key file: a keyring's JSON form, and reading and writing it atomically with mode 0600.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use zeroize::{Zeroize as _, Zeroizing};

use super::keyring::{KEY_LEN, KeyMaterial};
use super::{KeyId, Keyring, SecretsError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    current: String,
    keys: BTreeMap<String, String>,
    #[serde(default)]
    retired: Vec<String>,
}

impl Keyring {
    /// Parses a key file: `{"current": "k2", "keys": {"k1": "<base64>", …}, "retired": […]}`,
    /// each key standard base64 of exactly 32 bytes, `current` among `keys`.
    pub fn from_json(text: &str) -> Result<Keyring, SecretsError> {
        // serde's messages quote the offending value, which could be a key: keep only where.
        let file: KeyFile = serde_json::from_str(text).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => {
                    "does not have the shape {\"current\": id, \"keys\": {id: base64}}"
                }
                _ => "is not valid JSON",
            };
            SecretsError::KeyFile(format!(
                "it {what} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;

        let mut keys = BTreeMap::new();
        for (id, mut encoded) in file.keys {
            let entry = key_id(&id).and_then(|id| Ok((decode_key(&id, &encoded)?, id)));
            encoded.zeroize();
            let (key, id) = entry?;
            keys.insert(id, KeyMaterial::new(key));
        }
        let current = key_id(&file.current)?;
        if !keys.contains_key(&current) {
            return Err(SecretsError::KeyFile(format!(
                "current key {current} is not among its keys"
            )));
        }
        let mut retired = BTreeSet::new();
        for id in file.retired {
            let id = key_id(&id)?;
            if keys.contains_key(&id) {
                return Err(SecretsError::KeyFile(format!(
                    "key {id} is both present and retired"
                )));
            }
            retired.insert(id);
        }
        Ok(Keyring {
            current,
            keys,
            retired,
        })
    }

    /// The key file's content, in the format [`Keyring::from_json`] reads. It holds every key:
    /// it is zeroized on drop, and belongs in a file with mode 0600, not in a log.
    pub fn to_json(&self) -> Zeroizing<String> {
        // Written by hand rather than with serde: ids and base64 need no escaping, and sizing
        // the buffer up front means no reallocation leaves a stray copy of a key behind.
        let mut out = Zeroizing::new(String::with_capacity(128 + self.keys.len() * 96));
        out.push_str("{\n  \"current\": \"");
        out.push_str(self.current.as_str());
        out.push_str("\",\n  \"keys\": {\n");
        for (i, (id, key)) in self.keys.iter().enumerate() {
            let encoded = Zeroizing::new(STANDARD.encode(key.bytes()));
            out.push_str("    \"");
            out.push_str(id.as_str());
            out.push_str("\": \"");
            out.push_str(&encoded);
            out.push_str(if i + 1 < self.keys.len() {
                "\",\n"
            } else {
                "\"\n"
            });
        }
        out.push_str("  },\n  \"retired\": [");
        let retired: Vec<String> = self.retired.iter().map(|id| format!("\"{id}\"")).collect();
        out.push_str(&retired.join(", "));
        out.push_str("]\n}\n");
        out
    }

    /// Production: the key file must exist; a missing one is an error, never a fresh key
    /// (which would silently make every stored credential undecryptable).
    pub fn load(path: &Path) -> Result<Keyring, SecretsError> {
        match read(path)? {
            Some(text) => Keyring::from_json(&text),
            None => Err(SecretsError::MissingKeyFile {
                path: path.to_owned(),
            }),
        }
    }

    /// Development: loads the key file, or creates it with a fresh keyring if there is none.
    /// The `bool` says whether it was created, so the caller can say so (and that losing the
    /// file loses every stored credential). Two processes racing here agree on one file.
    pub fn load_or_create(path: &Path) -> Result<(Keyring, bool), SecretsError> {
        if let Some(text) = read(path)? {
            return Ok((Keyring::from_json(&text)?, false));
        }
        let keyring = Keyring::generate()?;
        match write_atomically(path, &keyring.to_json(), Mode::CreateNew) {
            Ok(()) => Ok((keyring, true)),
            // Another process created it between our read and our write: use theirs.
            Err(SecretsError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists =>
            {
                Ok((Keyring::load(path)?, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the key file (after `rotate` or `retire`) by replacing it atomically, mode 0600:
    /// a crash leaves the old file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), SecretsError> {
        write_atomically(path, &self.to_json(), Mode::Replace)
    }
}

/// Replaces the file at `path` with `contents` atomically, mode 0600, in a private directory:
/// for other secret files kept beside the key file (the token signing keys).
pub fn write_private(path: &Path, contents: &str) -> Result<(), SecretsError> {
    write_atomically(path, contents, Mode::Replace)
}

fn key_id(id: &str) -> Result<KeyId, SecretsError> {
    KeyId::new(id).map_err(|_| {
        SecretsError::KeyFile(
            "a key id is not 1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'".to_owned(),
        )
    })
}

fn decode_key(id: &KeyId, encoded: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, SecretsError> {
    let decoded = Zeroizing::new(
        STANDARD
            .decode(encoded)
            .map_err(|_| SecretsError::KeyFile(format!("key {id} is not valid base64")))?,
    );
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return Err(SecretsError::KeyFile(format!(
            "key {id} is {} bytes; keys are {KEY_LEN} bytes",
            decoded.len()
        )));
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

fn read(path: &Path) -> Result<Option<Zeroizing<String>>, SecretsError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(Zeroizing::new(text))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error("read", path, source)),
    }
}

enum Mode {
    CreateNew,
    Replace,
}

/// Temp file with mode 0600 from birth in the same directory, fsync, rename over (or, for
/// `CreateNew`, link without clobbering), fsync the directory: the key file is never
/// world-readable, never half-written, and survives a power cut once this returns.
fn write_atomically(path: &Path, contents: &str, mode: Mode) -> Result<(), SecretsError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    crate::private_dir::create_private_dir(&dir)
        .map_err(|e| io_error("create the directory of", path, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".keys-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(fs::Permissions::from_mode(0o600));
    }
    let mut temp = builder
        .tempfile_in(&dir)
        .map_err(|e| io_error("create a temporary file for", path, e))?;
    temp.write_all(contents.as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| io_error("write", path, e))?;
    let persisted = match mode {
        Mode::CreateNew => temp.persist_noclobber(path),
        Mode::Replace => temp.persist(path),
    };
    persisted.map_err(|e| io_error("write", path, e.error))?;
    #[cfg(unix)]
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync the directory of", path, e))?;
    Ok(())
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> SecretsError {
    SecretsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
