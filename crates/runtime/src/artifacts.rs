//! The on-disk cache of precompiled components, keyed by the component's content digest and
//! the engine's compatibility hash, written atomically.
//!
//! Trust boundary: a precompiled artifact is native code. `Component::deserialize` is
//! `unsafe` because wasmtime cannot verify that the bytes came from its own compiler. Airlock
//! only ever deserializes files it wrote itself into the cache directory, named by digests it
//! computed; whoever can write to that directory can run native code in the host process, so
//! it must be owned by the Airlock user and writable by nobody else (operations guide).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        airlock_secrets::private_dir::create_private_dir(&dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Whether a compilation of `digest` is on disk (a cheap check before serializing one).
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_file()
    }

    /// The cached compilation of `digest`, if one exists and deserializes.
    ///
    /// The file is read into memory rather than mapped (`deserialize_file`): a mapping would
    /// turn anyone truncating the file in place into a SIGBUS in the host.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).ok()?;
        #[allow(unsafe_code)]
        // SAFETY: the bytes come from our private cache directory, under a name derived from
        // the component's digest and this engine's compatibility hash, written by `put` from
        // `Component::serialize` (see the module docs for the trust boundary). wasmtime still
        // checks the header and the engine compatibility before using them.
        let component = unsafe { Component::deserialize(engine, &bytes) };
        match component {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "discarding unreadable cached artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Removes the compilation of `digest`, if any (a deleted tenant's own component).
    pub fn remove(&self, digest: &str) {
        match std::fs::remove_file(self.path(digest)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(%digest, %error, "cannot remove a cached artifact"),
        }
    }

    /// Stores a compiled component. Failing to cache is not fatal: the next load compiles again.
    pub fn put(&self, digest: &str, component: &Component) {
        if let Err(error) = self.write(digest, component) {
            tracing::warn!(%digest, %error, "cannot cache the compiled component");
        }
    }

    fn write(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        // Write to a temporary file in the same directory, then rename: readers see either
        // no file or a complete one, even with several processes sharing the directory.
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.as_file().sync_all()?;
        file.persist(self.path(digest))?;
        Ok(())
    }
}
