//! The process's memory, for every floor that frees large buffers.

/// Hand memory that is free but held in the allocator's per-thread arenas back to the OS:
/// before serving (compiling a component that was not in the compile cache leaves about 20 MiB
/// free), and after each large blob transfer, whose buffers are allocated on one thread and
/// freed on another (about 20 MiB after 8 parallel pulls, which would otherwise stay as the
/// floor of the RSS).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the OS; it is safe to call any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// After a transfer of this many bytes, free memory goes back to the OS.
pub const LARGE_TRANSFER: u64 = 8 * 1024 * 1024;

/// Releases free memory when dropped: a transfer's thread holds one, however it ends.
pub struct TrimOnDrop;

impl Drop for TrimOnDrop {
    fn drop(&mut self) {
        release_free_memory();
    }
}
