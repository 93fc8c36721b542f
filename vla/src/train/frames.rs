//! Where the decoded training frames live: one `[N, cameras, 3, S, S]` u8 tensor in memory,
//! or, when that would not fit, the same tensor over a memory-mapped file that the operating
//! system pages in as batches read rows, so a dataset larger than the machine's memory still
//! trains (at the speed of the disk for rows not in the page cache).

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

use crate::error::{Result, VlaError};

/// Decoded frames, resident or memory-mapped.
pub struct FrameStore {
    /// Declared before `map` so it is dropped first: in the mapped case it points into it.
    tensor: Tensor,
    map: Option<memmap2::MmapMut>,
}

impl std::fmt::Debug for FrameStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameStore")
            .field("shape", &self.tensor.size())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl FrameStore {
    /// Room for `n` rows of `row` shape (u8): in memory when they take at most `budget` bytes,
    /// else in a file under `cache_dir()` mapped into memory (and unlinked at once, so it
    /// disappears with the process however that ends).
    pub fn new(n: usize, row: [i64; 4], budget: u64) -> Result<Self> {
        let mut shape = vec![n as i64];
        shape.extend(row);
        let bytes = shape.iter().product::<i64>().max(0) as u64;
        if bytes <= budget {
            return Ok(FrameStore {
                tensor: Tensor::zeros(shape.as_slice(), (Kind::Uint8, Device::Cpu)),
                map: None,
            });
        }
        let dir = cache_dir();
        let fail = |what: &str, e: std::io::Error| {
            VlaError::Input(format!(
                "frames: {} MB do not fit the {} MB memory budget, and the file cache in {} \
                 failed ({what}: {e}); set VLA_FRAME_CACHE to a directory with room",
                bytes >> 20,
                budget >> 20,
                dir.display()
            ))
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail("create", e))?;
        let path = dir.join(format!(
            "frames-{}-{}.u8",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| fail("open", e))?;
        let _ = std::fs::remove_file(&path);
        file.set_len(bytes).map_err(|e| fail("size", e))?;
        // SAFETY: the file is new, private to this process and already unlinked: nothing else
        // maps or truncates it while the map lives.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| fail("map", e))?;
        let strides: Vec<i64> = (0..shape.len())
            .map(|d| shape[d + 1..].iter().product())
            .collect();
        // SAFETY: `map` holds `bytes` bytes, exactly the contiguous u8 tensor described, and
        // outlives `tensor` (field order; the store is never moved out of pieces).
        let tensor = unsafe {
            Tensor::from_blob(map.as_mut_ptr(), &shape, &strides, Kind::Uint8, Device::Cpu)
        };
        tracing::info!(
            mb = bytes >> 20,
            budget_mb = budget >> 20,
            dir = %dir.display(),
            "the frames exceed the memory budget: memory-mapped from disk"
        );
        Ok(FrameStore {
            tensor,
            map: Some(map),
        })
    }

    /// Already decoded frames, held in memory.
    pub fn resident(tensor: Tensor) -> Self {
        FrameStore { tensor, map: None }
    }

    /// Writes row `i`.
    pub fn set(&mut self, i: usize, row: &Tensor) {
        self.tensor.narrow(0, i as i64, 1).copy_(&row.unsqueeze(0));
    }

    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }
}

/// Where mapped frames go: `$VLA_FRAME_CACHE`, else `$XDG_CACHE_HOME/vla/frames`, else
/// `~/.cache/vla/frames` (a disk, where `/tmp` may be memory).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VLA_FRAME_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vla").join("frames")
}

/// Half the memory the kernel reports available (`MemAvailable`), the default budget for
/// resident frames; 8 GiB when it cannot be read.
pub fn default_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024 / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_frames_read_back_what_was_written() {
        let row = [2, 3, 4, 4];
        let rows: Vec<Tensor> = (0..5)
            .map(|i| (Tensor::arange(96, (Kind::Int64, Device::Cpu)) + i * 7).remainder(256))
            .map(|t| t.to_kind(Kind::Uint8).view(row))
            .collect();
        let mut resident = FrameStore::new(5, row, u64::MAX).unwrap();
        let mut mapped = FrameStore::new(5, row, 100).unwrap();
        assert!(!resident.is_mapped() && mapped.is_mapped());
        for (i, r) in rows.iter().enumerate() {
            resident.set(i, r);
            mapped.set(i, r);
        }
        assert!(resident.tensor().equal(mapped.tensor()));
        let idx = Tensor::from_slice(&[4i64, 0, 4]);
        let picked = mapped.tensor().index_select(0, &idx);
        assert!(picked.get(0).equal(&rows[4]) && picked.get(1).equal(&rows[0]));
    }
}
