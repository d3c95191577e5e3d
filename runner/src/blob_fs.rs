//! The blob store on the filesystem: one file per object under `<data>/blobs/`.
//!
//! A write goes to a temp file in `<data>/blobs/.tmp/`, is fsynced, then hard-linked into place
//! (which fails if the name exists, so objects stay immutable) and its directory fsynced: a
//! crash never leaves a half object visible. Names are checked so that none can leave the root.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
pub enum BlobError {
    NotFound,
    AlreadyExists,
    InvalidName(String),
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

pub const READ_CHUNK: usize = 256 * 1024;
/// Bytes written between two nudges of the kernel's writeback (Linux), so that the fsync at
/// commit finds most of a large object already on its way to disk instead of all of it dirty.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;
const TMP_DIR: &str = ".tmp";
const OBJECT_SUFFIX: char = '~';

#[derive(Clone)]
pub struct FsBlobStore {
    root: PathBuf,
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
    pub fn new(root: PathBuf) -> io::Result<FsBlobStore> {
        fs::create_dir_all(root.join(TMP_DIR))?;
        Ok(FsBlobStore { root })
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
        Ok(ObjectWriter { file, tmp, target, size: 0, flushed: 0 })
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
            return Err(BlobError::Other(format!("range {offset}+{length} is past the end of {name} ({size} bytes)")));
        }
        let mut file = File::open(self.path(name)?)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok((file, length))
    }

    pub fn delete(&self, name: &str) -> Result<(), BlobError> {
        fs::remove_file(self.path(name)?)?;
        Ok(())
    }

    /// Up to `limit` names starting with `prefix`, after `cursor`, in lexical order.
    pub fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), BlobError> {
        // Walk only the directory that holds every name with this prefix.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        if !dir_part.is_empty() {
            validate_name(dir_part)?;
        }
        let mut names = Vec::new();
        walk(&self.root.join(dir_part), dir_part, &mut names)?;
        names.retain(|n| n.starts_with(prefix) && cursor.is_none_or(|c| n.as_str() > c));
        names.sort();
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

/// An object being written: a temp file until committed.
pub struct ObjectWriter {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    size: u64,
    /// Bytes handed to writeback so far.
    flushed: u64,
}

impl ObjectWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        if self.size - self.flushed >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.flushed, self.size - self.flushed);
            self.flushed = self.size;
        }
        Ok(())
    }

    /// Make the object durable and visible; returns its size.
    pub fn commit(self) -> Result<u64, BlobError> {
        self.file.sync_all()?;
        let dir = self.target.parent().expect("object paths are under the root");
        fs::create_dir_all(dir)?;
        fs::hard_link(&self.tmp, &self.target)?;
        File::open(dir)?.sync_all()?;
        Ok(self.size)
        // Drop removes the temp name.
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
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

/// Read exactly `n` bytes into a new buffer, in one read(2) when the file allows, without first
/// zero-filling the buffer (`read_to_end` would read in growing steps from 8 KiB instead).
#[cfg(unix)]
fn read_new(file: &mut File, n: usize) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut chunk = Vec::<u8>::with_capacity(n);
    while chunk.len() < n {
        let want = n - chunk.len();
        let spare = &mut chunk.spare_capacity_mut()[..want];
        // SAFETY: read(2) writes at most `spare.len()` bytes into `spare`, which we own.
        let got = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        match got {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
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
fn read_new(file: &mut File, n: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut chunk = vec![0; n];
    file.read_exact(&mut chunk)?;
    Ok(chunk)
}

/// Read `length` bytes from `file` in chunks, handing each to `sink` until it says stop.
pub fn read_chunks(mut file: File, mut length: u64, mut sink: impl FnMut(Vec<u8>) -> bool) -> Result<(), BlobError> {
    while length > 0 {
        let chunk = read_new(&mut file, READ_CHUNK.min(length as usize))?;
        length -= chunk.len() as u64;
        if !sink(chunk) {
            break;
        }
    }
    Ok(())
}

/// Bytes per mapping of [`map_chunks`]: each is one mmap/munmap pair, so larger is fewer
/// syscalls and TLB flushes; the Wasmtime HTTP body takes up to 1 MiB at a time.
pub const MAP_CHUNK: u64 = 1024 * 1024;

/// Hand `length` bytes of `file` from its current position to `sink` as mapped chunks of the
/// page cache, until it says stop. Compared with [`read_chunks`] this saves the kernel's copy
/// into a user buffer (a fifth of the CPU of a pull), and the chunks are not heap memory.
///
/// Only for committed objects: they are never modified or truncated in place (writes go to a
/// temp file that is linked into place, deletes unlink), so the mapped bytes cannot change or
/// disappear under a reader.
pub fn map_chunks(
    mut file: File,
    mut length: u64,
    mut sink: impl FnMut(bytes::Bytes) -> bool,
) -> Result<(), BlobError> {
    let mut offset = file.stream_position()?;
    while length > 0 {
        let len = MAP_CHUNK.min(length);
        // SAFETY: see above: a committed object's file is never changed while it is open.
        // `populate` faults the pages in here, on the blocking reader thread, so the copy that
        // takes them later does not stop on page faults.
        let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len as usize).populate().map(&file)? };
        offset += len;
        length -= len;
        if !sink(bytes::Bytes::from_owner(map)) {
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

    #[test]
    fn mapped_reads_give_exactly_the_range_at_any_offset() {
        let (_dir, store) = store();
        let size = 2 * MAP_CHUNK as usize + 12_345;
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        put(&store, "big", &bytes);
        for (offset, length) in
            [(0, None), (1, Some(4095)), (4097, Some(MAP_CHUNK + 3)), (MAP_CHUNK - 1, None), (size as u64, None)]
        {
            let (file, length) = store.open_range("big", offset, length).unwrap();
            let mut out = Vec::new();
            let mut chunks = 0;
            map_chunks(file, length, |c| {
                assert!(c.len() as u64 <= MAP_CHUNK);
                chunks += 1;
                out.extend_from_slice(&c);
                true
            })
            .unwrap();
            let start = offset as usize;
            assert_eq!(out, bytes[start..start + length as usize], "offset {offset} length {length}");
            assert_eq!(chunks as u64, length.div_ceil(MAP_CHUNK));
        }
        // The sink can stop the read.
        let (file, length) = store.open_range("big", 0, None).unwrap();
        let mut calls = 0;
        map_chunks(file, length, |_| {
            calls += 1;
            false
        })
        .unwrap();
        assert_eq!(calls, 1);
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
