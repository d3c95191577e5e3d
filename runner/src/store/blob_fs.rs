//! The blob store on the filesystem: one file per object under `<data>/blobs/`.
//!
//! A write goes to a temp file in `<data>/blobs/.tmp/`, is fsynced, then hard-linked into place
//! (which fails if the name exists, so objects stay immutable), and every directory the link
//! changed or created is fsynced: a crash never leaves a half object visible, nor loses one
//! whose commit returned. A delete unlinks, fsyncs, and removes the directories it left empty.
//! Names are checked so that none can leave the root.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, PartialEq, Eq)]
pub enum BlobError {
    NotFound,
    AlreadyExists,
    InvalidName(String),
    /// A range past the end of the object: the caller's mistake, not a failure of the store.
    Range(String),
    Other(String),
}

impl From<io::Error> for BlobError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => BlobError::NotFound,
            io::ErrorKind::AlreadyExists => BlobError::AlreadyExists,
            _ => BlobError::Other(e.to_string()),
        }
    }
}

/// Bytes per read(2) of [`read_chunks`]: one chunk is one syscall and one buffer handed on
/// whole (the Wasmtime HTTP body takes up to 1 MiB at a time).
pub const READ_CHUNK: usize = 1024 * 1024;
/// Bytes written between two nudges of the kernel's writeback (Linux), so that the fsync at
/// commit finds most of a large object already on its way to disk instead of all of it dirty.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;
/// Times a commit makes the object's directory again when a delete keeps removing it.
const LINK_ATTEMPTS: usize = 5;
const TMP_DIR: &str = ".tmp";
const OBJECT_SUFFIX: char = '~';

#[derive(Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    listings: Arc<Listings>,
}

/// Listings that do not re-read a large directory for every page.
///
/// Each directory has a version, bumped (for it and every ancestor) after an object below it
/// is linked into place or unlinked. A listing of a directory with many names keeps its sorted
/// names with the version it read before walking; a later page finds them still current when
/// no write below that directory has happened since, and reads only the page (a binary search
/// for the cursor). A write that lands during a walk bumps the version after its link, so the
/// names kept from that walk are never taken as current afterwards. This is exact because the
/// runner is the only process writing its data directory.
#[derive(Default)]
struct Listings {
    versions: Mutex<HashMap<String, u64>>,
    kept: Mutex<KeptListings>,
}

#[derive(Default)]
struct KeptListings {
    by_dir: HashMap<String, (u64, Arc<Vec<String>>)>,
    names: usize,
}

/// Directories with fewer names are walked every time: that is as cheap as keeping them.
const KEEP_LISTINGS_FROM: usize = 256;
/// At most this many names are kept over all directories (a few tens of MB at most).
const KEEP_LISTINGS_AT_MOST: usize = 1_000_000;

impl Listings {
    fn version(&self, dir: &str) -> u64 {
        self.versions.lock().unwrap_or_else(|p| p.into_inner()).get(dir).copied().unwrap_or(0)
    }

    /// An object named `name` appeared or went: every directory above it lists differently.
    fn changed(&self, name: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let mut dir = name;
        while let Some(slash) = dir.rfind('/') {
            dir = &dir[..slash];
            *versions.entry(dir.to_owned()).or_default() += 1;
        }
        *versions.entry(String::new()).or_default() += 1;
    }

    fn current(&self, dir: &str, version: u64) -> Option<Arc<Vec<String>>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.by_dir.get(dir).filter(|(v, _)| *v == version).map(|(_, names)| names.clone())
    }

    fn keep(&self, dir: &str, version: u64, names: Arc<Vec<String>>) {
        if names.len() < KEEP_LISTINGS_FROM {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.names + names.len() > KEEP_LISTINGS_AT_MOST {
            kept.by_dir.clear();
            kept.names = 0;
        }
        kept.names += names.len();
        if let Some((_, old)) = kept.by_dir.insert(dir.to_owned(), (version, names)) {
            kept.names -= old.len();
        }
    }
}

/// Check an object name: `/`-separated components of `[A-Za-z0-9._:-]`, none empty, none
/// starting with `.` (so no `..`, and the temp dir is out of reach), at most 1024 bytes.
pub fn validate_name(name: &str) -> Result<(), BlobError> {
    let ok_component = |c: &str| {
        !c.is_empty()
            && !c.starts_with('.')
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    };
    if name.len() <= 1024 && name.split('/').all(ok_component) {
        Ok(())
    } else {
        Err(BlobError::InvalidName(format!("{name:?} is not a valid object name")))
    }
}

impl FsBlobStore {
    /// Open the store at `root` (creating it), clearing what writes the last run was killed in
    /// the middle of left behind.
    pub fn new(root: PathBuf) -> io::Result<FsBlobStore> {
        fs::create_dir_all(root.join(TMP_DIR))?;
        let store = FsBlobStore { root, listings: Arc::default() };
        let removed = store.clear_tmp()?;
        if removed > 0 {
            println!("berth-runner: removed {removed} temp file(s) of blob writes interrupted by the last stop");
        }
        Ok(store)
    }

    /// Remove every file in the temp dir; returns how many. Only safe while no write is in
    /// progress, so only at start (a temp file there now belongs to a process that is gone).
    fn clear_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join(TMP_DIR))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                continue; // never made by the store: not ours to judge
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Object `a/b` is the file `a/b~`: the suffix keeps an object `a` (file `a~`) and an object
    /// `a/b` (directory `a/`) apart. `~` cannot appear in a name.
    fn path(&self, name: &str) -> Result<PathBuf, BlobError> {
        validate_name(name)?;
        Ok(self.root.join(format!("{name}{OBJECT_SUFFIX}")))
    }

    /// Start writing `name`. Nothing is visible until [`ObjectWriter::commit`].
    pub fn create(&self, name: &str) -> Result<ObjectWriter, BlobError> {
        let target = self.path(name)?;
        if target.exists() {
            return Err(BlobError::AlreadyExists);
        }
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| BlobError::Other(e.to_string()))?;
        let tmp = self.root.join(TMP_DIR).join(random.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let file = File::create_new(&tmp)?;
        // Direct writes where the filesystem takes them (not tmpfs, say): else the page cache.
        // The unit first: O_DIRECT is turned on only with somewhere to gather the bytes.
        let direct = memmap2::MmapMut::map_anon(DIRECT_UNIT)
            .ok()
            .filter(|_| set_direct(&file, true))
            .map(|unit| DirectWrites { unit, filled: 0 });
        Ok(ObjectWriter {
            file,
            tmp,
            target,
            name: name.to_owned(),
            root: self.root.clone(),
            listings: self.listings.clone(),
            size: 0,
            flushed: 0,
            direct,
        })
    }

    pub fn size(&self, name: &str) -> Result<u64, BlobError> {
        let meta = fs::metadata(self.path(name)?)?;
        if meta.is_file() { Ok(meta.len()) } else { Err(BlobError::NotFound) }
    }

    /// Open `name` positioned at `offset`, checking that `length` bytes are there.
    pub fn open_range(&self, name: &str, offset: u64, length: Option<u64>) -> Result<(File, u64), BlobError> {
        let size = self.size(name)?;
        let length = length.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(BlobError::Range(format!("range {offset}+{length} is past the end of {name} ({size} bytes)")));
        }
        let mut file = File::open(self.path(name)?)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok((file, length))
    }

    /// Unlink `name` durably, then remove the directories that left empty. A missing object
    /// is `NotFound`, but its directories are still tidied: a crash between the unlink and the
    /// removals may have left them.
    pub fn delete(&self, name: &str) -> Result<(), BlobError> {
        let path = self.path(name)?;
        let dir = path.parent().expect("object paths are under the root");
        let unlinked = fs::remove_file(&path);
        if unlinked.is_ok() {
            self.listings.changed(name);
            sync_dir(&self.root, dir)?;
        }
        self.remove_empty_dirs(dir);
        Ok(unlinked?)
    }

    /// Remove `dir` and its ancestors below the root while they are empty. Best effort, and not
    /// fsynced: an empty directory that a crash brings back costs nothing but an inode (listings
    /// skip it, the next delete below it tidies it), and a commit that finds its directory gone
    /// makes it again. (An fsync per level was most of a garbage collection's disk flushes: a
    /// holder entry sits four directories deep.)
    fn remove_empty_dirs(&self, mut dir: &Path) {
        while dir != self.root && dir.starts_with(&self.root) {
            // Fails (and stops the climb) when the directory is not empty, or already gone.
            if fs::remove_dir(dir).is_err() {
                return;
            }
            dir = dir.parent().expect("below the root");
        }
    }

    /// Up to `limit` names starting with `prefix`, after `cursor`, in lexical order.
    pub fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), BlobError> {
        // Walk only the directory that holds every name with this prefix, or use its names as
        // kept from the last walk when nothing below it changed since.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        if !dir_part.is_empty() {
            validate_name(dir_part)?;
        }
        let version = self.listings.version(dir_part);
        let all = match self.listings.current(dir_part, version) {
            Some(names) => names,
            None => {
                let mut names = Vec::new();
                walk(&self.root.join(dir_part), dir_part, &mut names)?;
                names.sort_unstable();
                let names = Arc::new(names);
                self.listings.keep(dir_part, version, names.clone());
                names
            }
        };
        let mut start = all.partition_point(|n| n.as_str() < prefix);
        if let Some(cursor) = cursor {
            start = start.max(all.partition_point(|n| n.as_str() <= cursor));
        }
        let mut names: Vec<String> =
            all[start..].iter().take_while(|n| n.starts_with(prefix)).take(limit.saturating_add(1)).cloned().collect();
        let next = (names.len() > limit).then(|| names[limit - 1].clone()).filter(|_| limit > 0);
        names.truncate(limit);
        Ok((names, next))
    }
}

fn walk(dir: &Path, name_prefix: &str, out: &mut Vec<String>) -> Result<(), BlobError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') {
            continue;
        }
        let join = |n: &str| if name_prefix.is_empty() { n.to_owned() } else { format!("{name_prefix}/{n}") };
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &join(&file_name), out)?;
        } else if let Some(object) = file_name.strip_suffix(OBJECT_SUFFIX) {
            out.push(join(object));
        }
    }
    Ok(())
}

/// Make the entries of `dir` durable. If a delete has removed `dir` meanwhile, the removal is an
/// entry of its parent, so the nearest ancestor that still exists (up to `root`) is synced.
fn sync_dir(root: &Path, mut dir: &Path) -> io::Result<()> {
    loop {
        match File::open(dir) {
            Ok(open) => return open.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != root => {
                dir = dir.parent().expect("below the root");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Create the missing directories from `root` down to `dir`, noting each one made in `created`.
/// Stops early, without error, where a concurrent delete removed a parent: the caller tries again.
fn create_dirs(root: &Path, dir: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    let Ok(below) = dir.strip_prefix(root) else { return Ok(()) };
    let mut path = root.to_path_buf();
    for component in below.components() {
        path.push(component);
        match fs::create_dir(&path) {
            Ok(()) => created.push(path.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An object being written: a temp file until committed.
pub struct ObjectWriter {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    /// The object's name, for the listings it changes.
    name: String,
    root: PathBuf,
    listings: Arc<Listings>,
    size: u64,
    /// Bytes handed to writeback so far.
    flushed: u64,
    /// Where bytes gather for direct writes, while the file is open with `O_DIRECT`.
    direct: Option<DirectWrites>,
}

/// Bytes gathered into whole, aligned units for `O_DIRECT` writes. Buffered writes went through
/// the page cache, whose copy cost this machine's guest 0.9-7 CPU-s per GiB from run to run
/// (fresh page-cache pages are expensive in a VM); a direct write of the same bytes costs
/// 0.1-0.2 (docs/benchmarks.md, "Pushes"). The fsync at commit still makes the object durable.
struct DirectWrites {
    /// Page-aligned (an anonymous mapping), [`DIRECT_UNIT`] bytes.
    unit: memmap2::MmapMut,
    filled: usize,
}

/// A direct write's size: a multiple of any device's logical block size (512 or 4096).
const DIRECT_UNIT: usize = 1024 * 1024;

impl ObjectWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.size += bytes.len() as u64;
        let mut rest = bytes;
        if let Some(direct) = self.direct.as_mut() {
            let mut still_direct = true;
            while !rest.is_empty() && still_direct {
                let n = rest.len().min(DIRECT_UNIT - direct.filled);
                direct.unit[direct.filled..direct.filled + n].copy_from_slice(&rest[..n]);
                direct.filled += n;
                rest = &rest[n..];
                if direct.filled == DIRECT_UNIT {
                    direct.filled = 0;
                    still_direct = write_unit(&mut self.file, &direct.unit)?;
                }
            }
            if !still_direct {
                self.direct = None;
            }
        }
        if self.direct.is_none() && !rest.is_empty() {
            self.file.write_all(rest)?;
            if self.size - self.flushed >= WRITEBACK_EVERY {
                start_writeback(&self.file, self.flushed, self.size - self.flushed);
                self.flushed = self.size;
            }
        }
        Ok(())
    }

    /// Make the object durable and visible; returns its size.
    pub fn commit(mut self) -> Result<u64, BlobError> {
        if let Some(direct) = self.direct.take() {
            // The tail is rarely a whole unit: it goes through the page cache.
            if direct.filled > 0 {
                if !set_direct(&self.file, false) {
                    return Err(BlobError::Other("cannot turn O_DIRECT off for the last bytes".into()));
                }
                self.file.write_all(&direct.unit[..direct.filled])?;
            }
        }
        self.file.sync_all()?;
        let dir = self.target.parent().expect("object paths are under the root");
        let created = self.link_into_place(dir)?;
        self.listings.changed(&self.name);
        sync_dir(&self.root, dir)?;
        // Each new directory is an entry of its parent: durable only once the parent is synced.
        let mut parents: Vec<&Path> = created.iter().filter_map(|d| d.parent()).filter(|p| *p != dir).collect();
        parents.sort();
        parents.dedup();
        for parent in parents {
            sync_dir(&self.root, parent)?;
        }
        Ok(self.size)
        // Drop removes the temp name.
    }

    /// Hard-link the temp file to the target, making its directory first when it is missing
    /// (never made yet, or removed by a delete of the last object in it since); returns the
    /// directories made.
    fn link_into_place(&self, dir: &Path) -> Result<Vec<PathBuf>, BlobError> {
        let mut created = Vec::new();
        for _ in 0..LINK_ATTEMPTS {
            match fs::hard_link(&self.tmp, &self.target) {
                Ok(()) => return Ok(created),
                Err(e) if e.kind() == io::ErrorKind::NotFound => create_dirs(&self.root, dir, &mut created)?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BlobError::Other(format!("{} kept disappearing while linking an object into it", dir.display())))
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Write a whole unit with `O_DIRECT`. A device that refuses it (EINVAL: another alignment;
/// EOPNOTSUPP, EIO: a filesystem that took the flag but not the writes) or takes only part of
/// it (the next direct write would be misaligned) gets the rest through the page cache, at the
/// same offset, with `O_DIRECT` off from then on; only a failure of that write is an error.
/// Whether `O_DIRECT` is still on.
fn write_unit(file: &mut File, unit: &[u8]) -> io::Result<bool> {
    let start = file.stream_position()?;
    let mut done = 0;
    loop {
        match file.write(&unit[done..]) {
            Ok(n) if n > 0 && done + n == unit.len() => return Ok(true),
            Ok(n) if n > 0 => {
                done += n;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Nothing written, or refused: the page cache takes it from here.
            Ok(_) | Err(_) => break,
        }
    }
    if !set_direct(file, false) {
        return Err(io::Error::other("cannot turn O_DIRECT off after a refused direct write"));
    }
    file.seek(SeekFrom::Start(start + done as u64))?;
    file.write_all(&unit[done..])?;
    Ok(false)
}

/// Turn `O_DIRECT` on or off for `file`; whether that took.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let wanted = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, wanted) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> bool {
    !on
}

/// Start writing `len` bytes at `offset` out to disk without waiting for it (a hint: errors are
/// left to the fsync at commit).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor we own; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// The file ended before the bytes its size promised: someone truncated it during the read.
fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the object ended early: it was truncated during the read")
}

/// Read exactly `n` bytes into a new buffer, in one read(2) when the file allows, without first
/// zero-filling the buffer (`read_to_end` would read in growing steps from 8 KiB instead).
#[cfg(unix)]
pub fn read_new(file: &mut File, n: usize) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut chunk = Vec::<u8>::with_capacity(n);
    while chunk.len() < n {
        let want = n - chunk.len();
        let spare = &mut chunk.spare_capacity_mut()[..want];
        // SAFETY: read(2) writes at most `spare.len()` bytes into `spare`, which we own.
        let got = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        match got {
            0 => return Err(truncated()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: the first `got` bytes of the spare capacity were just written by read(2).
            got => unsafe { chunk.set_len(chunk.len() + got as usize) },
        }
    }
    Ok(chunk)
}

#[cfg(not(unix))]
pub fn read_new(file: &mut File, n: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut chunk = vec![0; n];
    file.read_exact(&mut chunk).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { truncated() } else { e })?;
    Ok(chunk)
}

/// Read `length` bytes from `file`'s position in chunks of [`READ_CHUNK`], handing each to
/// `sink` until it says stop. A file that is shorter than `length` (truncated underneath the
/// read) is an error for this read only.
///
/// read(2) rather than mapping the file: a mapping of a file that shrinks faults with SIGBUS
/// when user-space code reads it, which would take the whole runner down (`http::host_body`
/// maps files only where the kernel alone reads the bytes). The copy into the buffer costs about a fifth of the
/// CPU of a pull (see docs/benchmarks.md); the buffers are large and never zero-filled.
pub fn read_chunks(mut file: File, mut length: u64, mut sink: impl FnMut(Vec<u8>) -> bool) -> Result<(), BlobError> {
    while length > 0 {
        let n = usize::try_from(length).unwrap_or(usize::MAX).min(READ_CHUNK);
        let chunk = read_new(&mut file, n)?;
        length -= chunk.len() as u64;
        if !sink(chunk) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, FsBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path().join("blobs")).unwrap();
        (dir, store)
    }

    fn put(store: &FsBlobStore, name: &str, bytes: &[u8]) {
        let mut w = store.create(name).unwrap();
        w.write(bytes).unwrap();
        w.commit().unwrap();
    }

    fn read_all(store: &FsBlobStore, name: &str, offset: u64, length: Option<u64>) -> Vec<u8> {
        let (file, length) = store.open_range(name, offset, length).unwrap();
        let mut out = Vec::new();
        read_chunks(file, length, |c| {
            out.extend(c);
            true
        })
        .unwrap();
        out
    }

    /// Objects of every size around the direct-write unit, written in chunks of uneven sizes,
    /// read back byte for byte: the whole units go out directly, the tail through the page cache.
    #[test]
    fn objects_around_the_direct_unit_read_back_whole() {
        // Under the build's target directory, on a disk: /tmp may be a tmpfs.
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
        let dir = tempfile::tempdir_in(target).unwrap();
        let store = FsBlobStore::new(dir.path().join("blobs")).unwrap();
        let writer = store.create("probe").unwrap();
        assert!(writer.direct.is_some(), "this filesystem takes O_DIRECT: the test would not test it");
        drop(writer);
        let mut seed = 7u64;
        for (i, size) in
            [0, 1, 4095, DIRECT_UNIT - 1, DIRECT_UNIT, DIRECT_UNIT + 1, 3 * DIRECT_UNIT + 4097].into_iter().enumerate()
        {
            let bytes: Vec<u8> = (0..size)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            let name = format!("obj{i}");
            let mut w = store.create(&name).unwrap();
            let mut rest = &bytes[..];
            let mut step = 1000;
            while !rest.is_empty() {
                let n = rest.len().min(step);
                w.write(&rest[..n]).unwrap();
                rest = &rest[n..];
                step = step * 3 + 17; // uneven, growing past the unit
            }
            if size >= DIRECT_UNIT {
                assert!(w.direct.is_some(), "the units of {size} bytes fell back to the page cache");
            }
            assert_eq!(w.commit().unwrap(), size as u64);
            assert!(read_all(&store, &name, 0, None) == bytes, "object of {size} bytes read back different");
        }
    }

    #[test]
    fn reads_give_exactly_the_range_at_any_offset_in_large_chunks() {
        let (_dir, store) = store();
        let size = 2 * READ_CHUNK + 12_345;
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        put(&store, "big", &bytes);
        let chunk = READ_CHUNK as u64;
        for (offset, length) in
            [(0, None), (1, Some(4095)), (4097, Some(chunk + 3)), (chunk - 1, None), (size as u64, None)]
        {
            let (file, length) = store.open_range("big", offset, length).unwrap();
            let mut out = Vec::new();
            let mut chunks = 0;
            read_chunks(file, length, |c| {
                assert!(c.len() <= READ_CHUNK);
                chunks += 1;
                out.extend_from_slice(&c);
                true
            })
            .unwrap();
            let start = offset as usize;
            assert_eq!(out, bytes[start..start + length as usize], "offset {offset} length {length}");
            assert_eq!(chunks as u64, length.div_ceil(chunk));
        }
        // The sink can stop the read.
        let (file, length) = store.open_range("big", 0, None).unwrap();
        let mut calls = 0;
        read_chunks(file, length, |_| {
            calls += 1;
            false
        })
        .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn an_object_truncated_during_a_read_fails_that_read() {
        let (_dir, store) = store();
        put(&store, "big", &vec![7; 3 * READ_CHUNK]);
        let (file, length) = store.open_range("big", 0, None).unwrap();
        let path = store.path("big").unwrap();
        let mut delivered = 0;
        let read = read_chunks(file, length, |chunk| {
            delivered += chunk.len();
            // Someone else cuts the file short after the first chunk went out.
            fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(READ_CHUNK as u64 + 10).unwrap();
            true
        });
        let Err(BlobError::Other(why)) = read else { panic!("expected a failed read, got {read:?}") };
        assert!(why.contains("truncated"), "{why}");
        assert_eq!(delivered, READ_CHUNK, "nothing past the cut is handed on");
    }

    #[test]
    fn an_object_reads_back_whole_and_in_ranges() {
        let (_d, s) = store();
        put(&s, "parts/a", b"0123456789");
        assert_eq!(read_all(&s, "parts/a", 0, None), b"0123456789");
        assert_eq!(read_all(&s, "parts/a", 3, Some(4)), b"3456");
        assert_eq!(read_all(&s, "parts/a", 10, None), b"");
        assert!(s.open_range("parts/a", 8, Some(3)).is_err());
        assert_eq!(s.size("parts/a").unwrap(), 10);
    }

    #[test]
    fn an_uncommitted_write_leaves_nothing_visible() {
        let (d, s) = store();
        let mut w = s.create("parts/x").unwrap();
        w.write(b"half").unwrap();
        assert_eq!(s.size("parts/x"), Err(BlobError::NotFound));
        drop(w);
        assert_eq!(s.size("parts/x"), Err(BlobError::NotFound));
        assert_eq!(fs::read_dir(d.path().join("blobs/.tmp")).unwrap().count(), 0, "temp file cleaned up");
    }

    #[test]
    fn a_write_never_confirmed_leaves_nothing_at_all() {
        // What the host does when `complete` is not `true`: every byte written, no commit.
        let (d, s) = store();
        let mut w = s.create("repo/blobs/x").unwrap();
        w.write(&vec![1; 3 * 1024 * 1024]).unwrap();
        drop(w);
        assert_eq!(s.size("repo/blobs/x"), Err(BlobError::NotFound));
        assert_eq!(s.list("", None, 10).unwrap().0, Vec::<String>::new());
        let left: Vec<_> = fs::read_dir(d.path().join("blobs")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [".tmp"], "no directory made for the object");
        assert_eq!(fs::read_dir(d.path().join("blobs/.tmp")).unwrap().count(), 0, "temp file cleaned up");
        // The name is still free.
        put(&s, "repo/blobs/x", b"whole");
        assert_eq!(s.size("repo/blobs/x").unwrap(), 5);
    }

    #[test]
    fn leftover_temp_files_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let s = FsBlobStore::new(root.clone()).unwrap();
        put(&s, "kept", b"1");
        // Writes a killed runner was in the middle of.
        for n in 0..3 {
            std::mem::forget(s.create(&format!("lost{n}")).unwrap());
        }
        assert_eq!(fs::read_dir(root.join(".tmp")).unwrap().count(), 3);
        let restarted = FsBlobStore::new(root.clone()).unwrap();
        assert_eq!(fs::read_dir(root.join(".tmp")).unwrap().count(), 0);
        assert_eq!(restarted.size("kept").unwrap(), 1, "objects are untouched");
        assert_eq!(restarted.clear_tmp().unwrap(), 0);
    }

    #[test]
    fn objects_are_immutable() {
        let (_d, s) = store();
        put(&s, "o", b"1");
        assert_eq!(s.create("o").err(), Some(BlobError::AlreadyExists));
        let w1 = s.create("p").unwrap();
        let w2 = s.create("p").unwrap();
        w1.commit().unwrap();
        assert_eq!(w2.commit(), Err(BlobError::AlreadyExists));
    }

    #[test]
    fn names_cannot_escape_the_root() {
        let (_d, s) = store();
        for bad in ["", "../x", "a/../../x", "/etc/passwd", "a//b", ".tmp/x", "a/.hidden", "a\\b", "a b"] {
            assert!(matches!(s.create(bad), Err(BlobError::InvalidName(_))), "{bad:?}");
            assert!(matches!(s.size(bad), Err(BlobError::InvalidName(_))), "{bad:?}");
        }
    }

    #[test]
    fn an_object_and_objects_under_its_name_coexist() {
        let (_d, s) = store();
        put(&s, "repos/a", b"1");
        put(&s, "repos/a/b", b"22");
        assert_eq!(s.size("repos/a").unwrap(), 1);
        assert_eq!(s.size("repos/a/b").unwrap(), 2);
        assert_eq!(s.list("repos/", None, 10).unwrap().0, ["repos/a", "repos/a/b"]);
    }

    #[test]
    fn delete_and_missing_objects() {
        let (_d, s) = store();
        put(&s, "a", b"x");
        s.delete("a").unwrap();
        assert_eq!(s.delete("a"), Err(BlobError::NotFound));
        assert_eq!(s.size("a"), Err(BlobError::NotFound));
    }

    #[test]
    fn directories_go_with_the_last_object_in_them() {
        let (d, s) = store();
        let root = d.path().join("blobs");
        put(&s, "repos/a/blobs/x", b"1");
        put(&s, "repos/a/blobs/y", b"2");
        put(&s, "repos/b", b"3");
        s.delete("repos/a/blobs/x").unwrap();
        assert!(root.join("repos/a/blobs").is_dir(), "y is still in it");
        s.delete("repos/a/blobs/y").unwrap();
        assert!(!root.join("repos/a").exists(), "empty directories removed");
        assert!(root.join("repos").is_dir(), "repos/b~ is still in it");
        s.delete("repos/b").unwrap();
        assert!(!root.join("repos").exists());
        assert!(root.is_dir() && root.join(".tmp").is_dir(), "the root and the temp dir stay");
        // A directory a crash left empty goes with the next delete of a name in it.
        fs::create_dir_all(root.join("c/d")).unwrap();
        assert_eq!(s.delete("c/d/e"), Err(BlobError::NotFound));
        assert!(!root.join("c").exists());
        // And objects can be written there again.
        put(&s, "repos/a/blobs/x", b"again");
        assert_eq!(read_all(&s, "repos/a/blobs/x", 0, None), b"again");
    }

    #[test]
    fn a_commit_makes_its_directory_again_when_a_delete_removed_it() {
        let (d, s) = store();
        let root = d.path().join("blobs");
        put(&s, "r/blobs/a", b"1");
        let mut w = s.create("r/blobs/b").unwrap();
        w.write(b"2").unwrap();
        // The last object in the directory goes after `b` was started, and its directory with it.
        s.delete("r/blobs/a").unwrap();
        assert!(!root.join("r").exists());
        w.commit().unwrap();
        assert_eq!(read_all(&s, "r/blobs/b", 0, None), b"2");
    }

    #[test]
    fn concurrent_commits_and_deletes_in_one_directory_lose_no_object() {
        let (_d, s) = store();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let name = format!("shared/dir/{t}-{i}");
                        put(&s, &name, b"x");
                        assert_eq!(s.size(&name).unwrap(), 1);
                        s.delete(&name).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(s.list("", None, 10).unwrap().0.is_empty());
    }

    #[test]
    fn a_kept_listing_sees_every_later_commit_and_delete() {
        let (_d, s) = store();
        let name = |i: usize| format!("index/tags/big/_/t{i:05}");
        for i in (0..600).step_by(2) {
            put(&s, &name(i), b"");
        }
        let prefix = "index/tags/big/_/";
        assert_eq!(s.list(prefix, None, 3).unwrap().0, [name(0), name(2), name(4)]);
        // Pages from the kept names.
        assert_eq!(s.list(prefix, Some(&name(100)), 2).unwrap().0, [name(102), name(104)]);
        put(&s, &name(101), b"");
        assert_eq!(s.list(prefix, Some(&name(100)), 2).unwrap().0, [name(101), name(102)], "a commit is seen");
        s.delete(&name(102)).unwrap();
        assert_eq!(s.list(prefix, Some(&name(100)), 2).unwrap().0, [name(101), name(104)], "a delete is seen");
        put(&s, "index/tags/other/_/x", b"");
        assert_eq!(s.list(prefix, Some(&name(596)), 5).unwrap(), (vec![name(598)], None));
        // A nested name below a listed directory changes it too.
        put(&s, &format!("{}/deeper", name(0)), b"");
        assert!(s.list(prefix, None, 2).unwrap().0.contains(&format!("{}/deeper", name(0))));
    }

    #[test]
    fn list_by_prefix_with_a_cursor() {
        let (_d, s) = store();
        for n in ["parts/c", "parts/a", "parts/b", "other/z", "partsx"] {
            put(&s, n, b"");
        }
        assert_eq!(
            s.list("parts/", None, 10).unwrap(),
            (vec!["parts/a".into(), "parts/b".into(), "parts/c".into()], None)
        );
        assert_eq!(
            s.list("parts/", None, 2).unwrap(),
            (vec!["parts/a".into(), "parts/b".into()], Some("parts/b".into()))
        );
        assert_eq!(s.list("parts/", Some("parts/b"), 2).unwrap(), (vec!["parts/c".into()], None));
        assert_eq!(s.list("part", None, 10).unwrap().0, ["parts/a", "parts/b", "parts/c", "partsx"]);
    }
}
