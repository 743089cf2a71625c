//! Deleted files freed off the append path.
//!
//! Unlinking a large file on ext4 frees its extents inside the `unlink` call: about 0.3 s for a
//! 1 GiB snapshot image on the reference machine, during which the append that triggered the
//! deletion (a checkpoint collected, an image superseded) holds up every accept of the server.
//! Unlinking it on another thread moves the wait but not the harm: the whole extent tree goes in
//! one journal transaction and the log's fdatasyncs stall behind it (up to 90 ms measured).
//!
//! So [`super::fs::Fs::remove`] opens the file, unlinks its name (cheap while a descriptor is
//! open: the blocks stay allocated) and hands the descriptor here. This thread truncates it in
//! steps of [`STEP`], each a small transaction (fdatasync stalls of about 12 ms measured), and
//! closes it. The name is gone before `remove` returns, so nothing about recovery changes: a
//! crash leaves an orphan inode that the file system frees at mount.

use std::fs::File;
use std::sync::mpsc;

/// Bytes freed per truncation step.
const STEP: u64 = 16 << 20;

/// The sending side of the thread; cloned with [`super::fs::Fs`].
#[derive(Clone, Debug)]
pub(crate) struct Reaper(mpsc::Sender<File>);

impl Reaper {
    /// Starts the thread; `None` when it cannot be started (files are then freed inline).
    pub(crate) fn spawn() -> Option<Reaper> {
        let (tx, rx) = mpsc::channel::<File>();
        std::thread::Builder::new()
            .name("wal-reaper".into())
            .spawn(move || {
                super::background_thread();
                // Ends once every sender (every clone of the WAL's `Fs`) is gone.
                for file in rx {
                    free(&file);
                }
            })
            .ok()?;
        Some(Reaper(tx))
    }

    /// Hands over an unlinked file to free; gives it back when the thread is gone.
    pub(crate) fn free(&self, file: File) -> Result<(), File> {
        self.0.send(file).map_err(|e| e.0)
    }
}

/// Shrinks `file` to nothing in [`STEP`]s. Errors only mean the blocks are freed at close
/// instead, all at once: the name is already gone, so they are logged and not returned.
fn free(file: &File) {
    let mut len = match file.metadata() {
        Ok(m) => m.len(),
        Err(_) => return,
    };
    while len > STEP {
        len -= STEP;
        if let Err(e) = file.set_len(len) {
            tracing::debug!(error = %e, "freeing a deleted WAL file in steps failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frees_an_unlinked_file_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let f = File::create(&path).unwrap();
        f.set_len(3 * STEP + 5).unwrap();
        drop(f);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let probe = f.try_clone().unwrap();
        std::fs::remove_file(&path).unwrap();
        let r = Reaper::spawn().unwrap();
        r.free(f).unwrap();
        drop(r);
        // The thread shrinks the shared inode; wait for it through the duplicate descriptor.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while probe.metadata().unwrap().len() > STEP {
            assert!(std::time::Instant::now() < deadline, "never shrunk");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
