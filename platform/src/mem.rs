//! Handing an idle process's mapped code back to the kernel.

/// Unmap the pages of this executable's read-only segments (its code and
/// constants) from the process, leaving them to the page cache; returns
/// the bytes advised.
///
/// Why: a daemon's resident set is mostly the pages of its own binary that
/// it has touched — with the kernel's fault-around, every 64 KiB run of
/// code it ever executed, start-up and the S3 client included. When the
/// daemon has been idle a while none of it is in use, yet it is counted
/// against the process for as long as the mapping lasts. `MADV_DONTNEED`
/// on a private, never-written file mapping drops only the page-table
/// entries: the contents are the file's, so the next use maps the page
/// again from the page cache (or reads it back if the kernel reclaimed it)
/// and nothing else changes. Writable segments, and the read-only-after-
/// relocation one inside them, are never touched: their pages are private
/// copies that would revert to the file's bytes.
///
/// Only whole pages inside a segment are advised, so a page shared with a
/// neighbouring segment is left alone; a segment that overlaps the
/// read-only-after-relocation range (`PT_GNU_RELRO`, as with text
/// relocations) is skipped whole. Does nothing off Linux (Ok(0)).
///
/// Side effects: breakpoints a debugger or a uprobe wrote into the code
/// are private copies of their pages too, and go with them; and if the
/// kernel has evicted the pages from its cache meanwhile, the next request
/// reads them from disk.
pub fn release_code() -> std::io::Result<usize> {
    imp::release_code()
}

#[cfg(target_os = "linux")]
mod imp {
    /// `[start, end)` of each read-only loadable segment of the main
    /// program, whole pages only.
    fn code_ranges() -> Vec<(usize, usize)> {
        unsafe extern "C" fn each(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut libc::c_void,
        ) -> libc::c_int {
            // SAFETY: the loader passes a valid info for the duration of
            // the call, and `data` is the `Vec` given to dl_iterate_phdr.
            let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<(usize, usize)>>()) };
            if info.dlpi_phdr.is_null() {
                return 1;
            }
            // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
            let headers =
                unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
            // A macro, not a closure: the header type is Elf32 or Elf64.
            macro_rules! span {
                ($h:expr) => {{
                    let start = info.dlpi_addr as usize + $h.p_vaddr as usize;
                    (start, start + $h.p_memsz as usize)
                }};
            }
            // Written at start-up, then made read-only: private copies.
            let relro: Vec<(usize, usize)> = headers
                .iter()
                .filter(|h| h.p_type == libc::PT_GNU_RELRO)
                .map(|h| span!(h))
                .collect();
            for h in headers {
                if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0 {
                    let (start, end) = span!(h);
                    if relro.iter().any(|&(a, b)| a < end && start < b) {
                        continue;
                    }
                    let (start, end) = (start.div_ceil(page) * page, end / page * page);
                    if start < end {
                        out.push((start, end));
                    }
                }
            }
            // The first object reported is the main program: stop there
            // (shared libraries are shared, and not ours to advise).
            1
        }
        let mut out: Vec<(usize, usize)> = Vec::new();
        // SAFETY: `each` matches the callback type and only writes `out`.
        unsafe { libc::dl_iterate_phdr(Some(each), (&mut out as *mut Vec<(usize, usize)>).cast()) };
        out
    }

    pub fn release_code() -> std::io::Result<usize> {
        let mut total = 0;
        for (start, end) in code_ranges() {
            // SAFETY: the range is whole pages of a read-only, private file
            // mapping of this program: dropping them only drops page-table
            // entries, and the next access maps the same bytes again.
            let rc = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            total += end - start;
        }
        Ok(total)
    }

    #[cfg(test)]
    mod tests {
        /// Resident KiB of this program's read-only mappings, from smaps.
        fn resident_code_kib() -> u64 {
            let exe = std::fs::read_link("/proc/self/exe").unwrap();
            let exe = exe.to_string_lossy().into_owned();
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let (mut ours, mut total) = (false, 0);
            for line in smaps.lines() {
                let mut words = line.split_whitespace();
                let first = words.next().unwrap_or("");
                if first.contains('-')
                    && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
                {
                    let perms = words.next().unwrap_or("");
                    ours = line.ends_with(exe.as_str()) && !perms.contains('w');
                } else if ours && first == "Rss:" {
                    total += words.next().unwrap().parse::<u64>().unwrap();
                }
            }
            total
        }

        #[test]
        fn released_code_leaves_the_resident_set_and_still_runs() {
            let ranges = super::code_ranges();
            assert!(!ranges.is_empty(), "the program has read-only segments");
            let before = resident_code_kib();
            let released = super::release_code().unwrap();
            let after = resident_code_kib();
            assert!(released > 0);
            assert!(
                after < before,
                "resident code {before} KiB before, {after} KiB after"
            );
            // Code and constants map back in as they are used.
            let v: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
            assert_eq!(v[255], "ff");
            assert!(resident_code_kib() > 0);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn release_code() -> std::io::Result<usize> {
        Ok(0)
    }
}
