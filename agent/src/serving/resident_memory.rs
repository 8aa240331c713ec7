//! Gives back the memory that loading a model touched only once.
//!
//! Initialising ONNX Runtime registers every operator kernel it has, which reads most of its
//! 20 MB library, and activating a model runs code of this binary that serving never runs
//! again (pulling, verifying, the canary). Those pages are clean copies of files, so the kernel
//! can drop them at no cost and fault back in, from its page cache, only the ones serving uses.
//! Without this they stay mapped and counted in the agent's resident memory.

/// Asks the kernel to reclaim the pages of every read-only or executable file mapping of this
/// process (never a writable one, so no data can be lost). A kernel older than 5.4 does not
/// know `MADV_PAGEOUT` and refuses it; nothing changes then.
#[allow(unsafe_code)]
pub fn release_file_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(_offset), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        // File mappings only (inode 0 is anonymous memory, the heap and stacks), never writable.
        if inode == "0" || perms.as_bytes().get(1) != Some(&b'-') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: MADV_PAGEOUT only reclaims pages; their contents are preserved (file pages
        // are read back on the next access), so no memory of the process changes. The range
        // is a whole mapping of this process as the kernel listed it.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
    }
}
