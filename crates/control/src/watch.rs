//! Watching a config directory (and other files config refers to): a change produces one
//! signal after the burst of events an editor or `kubectl cp` makes has settled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long to wait for a burst of file events to end before reloading.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Watches paths; each settled burst of changes yields one `()` on the receiver.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl DirWatcher {
    /// Starts watching `paths` (directories recursively).
    pub fn start(paths: &[PathBuf]) -> notify::Result<(DirWatcher, mpsc::Receiver<()>)> {
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
        // Only config files and the files named here count: a log written into the
        // directory must not cause reloads.
        let files: Vec<PathBuf> = paths.iter().filter(|p| !p.is_dir()).cloned().collect();
        let relevant = move |p: &Path| {
            files.iter().any(|f| f == p)
                || matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(e) = event
                    && !matches!(e.kind, notify::EventKind::Access(_))
                    && e.paths.iter().any(|p| relevant(p))
                {
                    let _ = raw_tx.send(());
                }
            })?;
        for p in paths {
            let mode = if p.is_dir() {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watcher.watch(watch_target(p), mode)?;
        }
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            while raw_rx.recv().await.is_some() {
                // Let the burst settle: reload once after SETTLE without events.
                while let Ok(Some(())) = tokio::time::timeout(SETTLE, raw_rx.recv()).await {}
                if tx.send(()).await.is_err() {
                    break;
                }
            }
        });
        Ok((DirWatcher { _watcher: watcher }, rx))
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
