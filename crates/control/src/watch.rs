//! Watching a config directory (and the files config refers to): a change produces one
//! signal after the burst of events an editor or `kubectl cp` makes has settled.
//!
//! Two sources feed it, so that it never goes deaf: inotify events (through `notify`) for
//! a quick reaction, on the paths and on their parent directories (so a directory that is
//! renamed away and back, or replaced, is still seen); and a poll every second of a
//! fingerprint of everything watched (each file's path, size, modification time and
//! symlink target, following symlinks), which catches what events miss: a Kubernetes
//! ConfigMap or Secret volume's `..data` symlink swapped to a new timestamped directory,
//! files deleted and recreated, a watch that was lost. Entries whose names start with a dot
//! (Kubernetes' `..data` and `..2024_...`) are not walked; the symlinks beside them are
//! followed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

/// How long to wait for a burst of file events to end before reloading.
pub const SETTLE: Duration = Duration::from_millis(200);

/// How often the fingerprint of the watched paths is taken.
pub const POLL: Duration = Duration::from_secs(1);

/// When a burst of changes counts as settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    /// A change is passed on once no other came for this long...
    pub quiet: Duration,
    /// ...or once this long has passed since the first change of the burst.
    pub max: Duration,
}

impl Debounce {
    /// `meshwork up`: files settle for [`SETTLE`].
    pub const UP: Debounce = Debounce {
        quiet: SETTLE,
        max: Duration::from_secs(10),
    };
    /// `meshwork control`, as istiod debounces pushes (`PILOT_DEBOUNCE_AFTER` 100 ms,
    /// `PILOT_DEBOUNCE_MAX` 10 s).
    pub const ISTIOD: Debounce = Debounce {
        quiet: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };

    /// Waits for the next settled burst on `events`; false once they end.
    pub async fn next(self, events: &mut mpsc::UnboundedReceiver<()>) -> bool {
        if events.recv().await.is_none() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + self.max;
        loop {
            let wait = self
                .quiet
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, events.recv()).await {
                Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
                Ok(None) => return false,
                _ => return true,
            }
        }
    }
}

/// Watches paths; each settled burst of changes yields one `()` on the receiver.
pub struct DirWatcher {
    _watcher: Option<notify::RecommendedWatcher>,
    poll: tokio::task::JoinHandle<()>,
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

/// One entry of a fingerprint.
type Stamp = (PathBuf, u64, Option<SystemTime>, Option<PathBuf>);

/// What the watched paths hold now: every config file below them (dot entries skipped),
/// with its size, modification time and, for symlinks, target.
pub fn fingerprint(paths: &[PathBuf]) -> Vec<Stamp> {
    let mut out = Vec::new();
    for p in paths {
        stamp(p, &mut out, 0);
    }
    out.sort();
    out
}

fn stamp(path: &Path, out: &mut Vec<Stamp>, depth: usize) {
    let link = std::fs::read_link(path).ok();
    let Ok(meta) = std::fs::metadata(path) else {
        out.push((path.to_path_buf(), u64::MAX, None, link));
        return;
    };
    if meta.is_dir() {
        out.push((path.to_path_buf(), 0, None, link));
        if depth > 16 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let config = path.is_dir() || is_config_file(&path);
            if config && !e.file_name().to_string_lossy().starts_with('.') {
                stamp(&path, out, depth + 1);
            }
        }
    } else {
        out.push((path.to_path_buf(), meta.len(), meta.modified().ok(), link));
    }
}

/// A file the loader reads from a directory.
fn is_config_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

impl DirWatcher {
    /// Starts watching `paths` (directories recursively), settling as `meshwork up` does.
    pub fn start(paths: &[PathBuf]) -> notify::Result<(DirWatcher, mpsc::Receiver<()>)> {
        Self::start_with(paths, Debounce::UP)
    }

    /// Starts watching `paths` (directories recursively).
    pub fn start_with(
        paths: &[PathBuf],
        debounce: Debounce,
    ) -> notify::Result<(DirWatcher, mpsc::Receiver<()>)> {
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
        // Only config files, the files named here and the watched directories themselves
        // count: a log written into the directory must not cause reloads.
        let named: Vec<PathBuf> = paths.to_vec();
        let relevant = move |p: &Path| named.iter().any(|f| f == p) || is_config_file(p);
        let events_tx = raw_tx.clone();
        let watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(e) => {
                    if !matches!(e.kind, notify::EventKind::Access(_))
                        && e.paths.iter().any(|p| relevant(p))
                    {
                        let _ = events_tx.send(());
                    }
                }
                Err(e) => warn!("file watch error ({e}); the poll keeps following changes"),
            });
        let watcher = match watcher {
            Ok(mut w) => {
                for p in paths {
                    let mode = if p.is_dir() {
                        RecursiveMode::Recursive
                    } else {
                        RecursiveMode::NonRecursive
                    };
                    if let Err(e) = w.watch(watch_target(p), mode) {
                        warn!(path = %p.display(), "cannot watch ({e}); the poll follows it");
                    }
                    // The parent too: the path itself may be renamed, replaced or created.
                    if let Some(parent) = p.parent().filter(|d| d.is_dir()) {
                        let _ = w.watch(parent, RecursiveMode::NonRecursive);
                    }
                }
                Some(w)
            }
            Err(e) => {
                warn!("cannot start the file watcher ({e}); polling every {POLL:?} instead");
                None
            }
        };
        let polled = paths.to_vec();
        let poll = tokio::spawn(async move {
            let mut last = fingerprint(&polled);
            loop {
                tokio::time::sleep(POLL).await;
                let now = tokio::task::spawn_blocking({
                    let polled = polled.clone();
                    move || fingerprint(&polled)
                })
                .await
                .unwrap_or_default();
                if now != last {
                    last = now;
                    if raw_tx.send(()).is_err() {
                        return;
                    }
                }
            }
        });
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            while debounce.next(&mut raw_rx).await {
                if tx.send(()).await.is_err() {
                    break;
                }
            }
        });
        Ok((
            DirWatcher {
                _watcher: watcher,
                poll,
            },
            rx,
        ))
    }
}

/// Files are watched through their directory, so that replacing a file (write to a
/// temporary name, then rename) is seen too.
fn watch_target(p: &Path) -> &Path {
    if p.is_file() {
        p.parent().unwrap_or(p)
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_passed_on_after_the_quiet_period_or_at_the_maximum() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        // Three quick changes: one signal, 100 ms after the last.
        for _ in 0..3 {
            tx.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(Debounce::ISTIOD.next(&mut rx).await);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_millis(260),
            "{took:?}"
        );
        // A change every 50 ms without end: passed on at the 10 s maximum.
        let feeder = tokio::spawn(async move {
            loop {
                if tx.send(()).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = tokio::time::Instant::now();
        assert!(Debounce::ISTIOD.next(&mut rx).await);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_millis(10_100),
            "{took:?}"
        );
        feeder.abort();
        let _ = feeder.await;
        // Once the sender is gone, no more signals.
        while rx.try_recv().is_ok() {}
        assert!(!Debounce::ISTIOD.next(&mut rx).await);
    }

    #[test]
    fn the_fingerprint_follows_a_symlink_swap_and_skips_dot_entries() {
        let dir = std::env::temp_dir().join(format!("mw-fp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..2026_a")).unwrap();
        std::fs::create_dir_all(dir.join("..2026_b")).unwrap();
        std::fs::write(dir.join("..2026_a/config.yaml"), "a: 1\n").unwrap();
        std::fs::write(dir.join("..2026_b/config.yaml"), "a: 22\n").unwrap();
        std::os::unix::fs::symlink("..2026_a", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
        let before = fingerprint(std::slice::from_ref(&dir));
        assert!(
            before
                .iter()
                .all(|(p, ..)| !p.to_string_lossy().contains("..2026")),
            "dot entries are not walked: {before:?}"
        );
        // Kubernetes' update: a new ..data link renamed over the old one.
        std::os::unix::fs::symlink("..2026_b", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        let after = fingerprint(std::slice::from_ref(&dir));
        assert_ne!(before, after, "the swap changes what config.yaml points at");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
