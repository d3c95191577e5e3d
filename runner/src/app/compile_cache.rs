//! Compiled components kept on disk, so a runner start loads machine code instead of compiling
//! the component with Cranelift again.
//!
//! Compiling Berth takes ~0.8 s of both cores at every start and leaves Cranelift's code pages
//! and buffers in the process; loading a cached `.cwasm` maps the file and takes milliseconds.
//! The files are what `wasmtime compile` writes (`Engine::precompile_component`), named by the
//! SHA-256 of the component and the engine's compatibility hash, so a changed component or a
//! different engine configuration never loads a stale entry.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;
use wasmtime::component::Component;

/// Entries kept after a new one is written; older ones (earlier builds) are removed.
const KEEP_ENTRIES: usize = 8;

/// A directory of compiled components this user alone may write.
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Use `dir`, creating it owner-only. `None` (with a warning on stderr) when it cannot be
    /// trusted: loading a cached file runs its code, so a directory that someone else could
    /// write to is never used.
    pub fn open(dir: &Path) -> Option<CompileCache> {
        match trusted_dir(dir) {
            Ok(()) => Some(CompileCache { dir: dir.to_owned() }),
            Err(err) => {
                eprintln!("berth-runner: not using compile cache {}: {err:#}", dir.display());
                None
            }
        }
    }

    /// `$XDG_CACHE_HOME/berth-runner`, else `$HOME/.cache/berth-runner`.
    pub fn default_dir() -> Option<PathBuf> {
        let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        non_empty("XDG_CACHE_HOME")
            .or_else(|| non_empty("HOME").map(|home| home.join(".cache")))
            .map(|base| base.join("berth-runner"))
    }

    fn entry_path(&self, engine: &wasmtime::Engine, wasm: &[u8]) -> PathBuf {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let key = Sha256::new().chain_update(wasm).chain_update(engine_hash.finish().to_le_bytes()).finalize();
        self.dir.join(format!("{}.cwasm", hex(&key)))
    }
}

/// The component for `wasm`: from `cache` when it has it, else compiled (and stored there).
pub fn load(engine: &wasmtime::Engine, wasm: &[u8], cache: Option<&CompileCache>) -> Result<Component> {
    let Some(cache) = cache else { return compile(engine, wasm) };
    let path = cache.entry_path(engine, wasm);
    if path.exists() {
        // SAFETY: the file was written by `store` below (wasmtime's own serialization of this
        // exact component for this engine configuration) into a directory only this user can
        // write, and entries are only ever replaced by rename, never modified in place, so the
        // mapping stays valid while the component lives.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                println!("berth-runner: compiled component loaded from {}", path.display());
                return Ok(component);
            }
            // A file from another Wasmtime build, or damaged: compile and replace it.
            Err(err) => eprintln!("berth-runner: ignoring compile cache entry {}: {err:#}", path.display()),
        }
    }
    let started = Instant::now();
    let compiled = engine.precompile_component(wasm)?;
    let elapsed = started.elapsed();
    if let Err(err) = store(cache, &path, &compiled) {
        eprintln!("berth-runner: could not write compile cache entry {}: {err:#}", path.display());
        // SAFETY: `compiled` is what `precompile_component` of this engine just produced.
        return Ok(unsafe { Component::deserialize(engine, &compiled) }?);
    }
    println!("berth-runner: component compiled in {:.2} s, cached in {}", elapsed.as_secs_f64(), path.display());
    drop(compiled);
    // SAFETY: as above: the entry just written by `store`. Mapping it (rather than keeping the
    // compiled bytes on the heap) lets the kernel page the code in and out like any file.
    Ok(unsafe { Component::deserialize_file(engine, &path) }?)
}

fn compile(engine: &wasmtime::Engine, wasm: &[u8]) -> Result<Component> {
    let started = Instant::now();
    let component = Component::new(engine, wasm)?;
    println!("berth-runner: component compiled in {:.2} s (no compile cache)", started.elapsed().as_secs_f64());
    Ok(component)
}

/// Write to a temp file and rename it into place, so a concurrent start never maps a half
/// written file; then drop the oldest entries beyond [`KEEP_ENTRIES`].
fn store(cache: &CompileCache, path: &Path, compiled: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = cache.dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
        file.write_all(compiled)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(|| format!("writing {}", temp.display()))?;
    prune(&cache.dir, path);
    Ok(())
}

fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm") && p != keep)
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    entries.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, old) in entries.into_iter().skip(KEEP_ENTRIES - 1) {
        let _ = std::fs::remove_file(old);
    }
}

fn trusted_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).context("creating it")?;
    let meta = std::fs::metadata(dir).context("reading its metadata")?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    anyhow::ensure!(meta.uid() == me, "it belongs to uid {}, not to this user ({me})", meta.uid());
    anyhow::ensure!(meta.mode() & 0o022 == 0, "others may write to it (mode {:o})", meta.mode() & 0o777);
    Ok(())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_others_can_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(CompileCache::open(&shared).is_none());
        let own = dir.path().join("own");
        assert!(CompileCache::open(&own).is_some());
        let mode = std::fs::metadata(&own).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn pruning_keeps_the_newest_entries_and_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        let mut paths = Vec::new();
        for i in 0..12u64 {
            let path = dir.path().join(format!("{i:02}.cwasm"));
            let file = std::fs::File::create(&path).unwrap();
            file.set_modified(now - std::time::Duration::from_secs(100 - i)).unwrap();
            paths.push(path);
        }
        std::fs::write(dir.path().join("other.txt"), b"not an entry").unwrap();
        let keep = paths[0].clone(); // the oldest by mtime, but just written
        prune(dir.path(), &keep);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "00.cwasm",
                "05.cwasm",
                "06.cwasm",
                "07.cwasm",
                "08.cwasm",
                "09.cwasm",
                "10.cwasm",
                "11.cwasm",
                "other.txt"
            ]
        );
    }
}
