//! SIGHUP: a daemon reads its config file again and applies what can change while it runs
//! (issue 11). The daemon's binary knows how to read the settings (the file, then the command
//! line over it, checked as at start); the control loop knows which of them it can change live.
//! This module is what they share: the request, and the list of what changed.
//!
//! ```text
//!  SIGHUP ──▶ requested (flag) ──loop, ≤ 100 ms later──▶ load() ──Err──▶ error: nothing changes
//!                                                          │ Ok(new settings)
//!                                                          ▼
//!                                  Changes: live (applied, info old -> new) | restart (warn)
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A daemon's way to read its settings again, and the flag SIGHUP sets.
pub struct Reload<Settings> {
    requested: Arc<AtomicBool>,
    /// The config file (`None`: started without `--config`; SIGHUP has no file to read).
    pub file: Option<PathBuf>,
    load: Box<dyn FnMut() -> Result<Settings, String> + Send>,
}

impl<Settings> Reload<Settings> {
    /// `requested` is set by the signal handler; `load` reads the file and the command line as
    /// at start and checks them, or says (naming the file) what is wrong.
    pub fn new(
        requested: Arc<AtomicBool>,
        file: Option<PathBuf>,
        load: impl FnMut() -> Result<Settings, String> + Send + 'static,
    ) -> Reload<Settings> {
        Reload {
            requested,
            file,
            load: Box::new(load),
        }
    }

    /// Whether a reload was asked for since the last call (clears the request).
    pub fn take_request(&self) -> bool {
        self.requested.swap(false, Ordering::Relaxed)
    }

    /// The settings as they are now on file, or why they cannot be used (`None`: no file).
    /// A parser's message over several lines (TOML's points at the column) comes as one.
    pub fn load(&mut self) -> Option<Result<Settings, String>> {
        self.file.as_ref()?;
        Some((self.load)().map_err(|error| {
            error
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        }))
    }

    /// [`Reload::load`], saying in the log what came of it: no file to reload, or a file that
    /// did not parse or check (every setting stays as it was). The settings and the file, when
    /// there is something to apply.
    pub fn load_logged(&mut self) -> Option<(Settings, std::path::PathBuf)> {
        let Some(loaded) = self.load() else {
            tracing::info!("SIGHUP: no --config file to reload (settings are the command line's)");
            return None;
        };
        let file = self.file.clone().unwrap_or_default();
        match loaded {
            Ok(settings) => Some((settings, file)),
            Err(error) => {
                tracing::error!(file = %file.display(), %error, "config not reloaded: every setting stays as it was");
                None
            }
        }
    }
}

/// One setting that differs between the running daemon and its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// As its flag (`--rate`).
    pub setting: &'static str,
    pub old: String,
    pub new: String,
}

/// What changed, split into what the daemon applies now and what waits for a restart.
#[derive(Debug, Default)]
pub struct Changes {
    pub live: Vec<Change>,
    pub restart: Vec<Change>,
}

impl Changes {
    /// A setting the daemon changes while it runs, if it differs.
    pub fn live(&mut self, setting: &'static str, old: impl ToString, new: impl ToString) {
        push(&mut self.live, setting, old, new);
    }

    /// A setting only a restart changes, if it differs.
    pub fn restart(&mut self, setting: &'static str, old: impl ToString, new: impl ToString) {
        push(&mut self.restart, setting, old, new);
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart.is_empty()
    }

    /// One line per change: applied ones at info (old -> new), the others at warn.
    pub fn log(&self, file: &std::path::Path) {
        for change in &self.live {
            tracing::info!(
                file = %file.display(),
                setting = change.setting,
                "config reloaded: {} {} -> {}",
                change.setting,
                change.old,
                change.new
            );
        }
        for change in &self.restart {
            tracing::warn!(
                file = %file.display(),
                setting = change.setting,
                "config: {} changed ({} -> {}) but takes effect only after a restart; still {}",
                change.setting,
                change.old,
                change.new,
                change.old
            );
        }
        if self.is_empty() {
            tracing::info!(file = %file.display(), "config reloaded: nothing changed");
        }
    }
}

fn push(list: &mut Vec<Change>, setting: &'static str, old: impl ToString, new: impl ToString) {
    let (old, new) = (old.to_string(), new.to_string());
    if old != new {
        list.push(Change { setting, old, new });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_differs_is_listed_and_a_request_is_taken_once() {
        let mut changes = Changes::default();
        changes.live("--rate", "1G", "1G");
        changes.live("--tiers", 4, 2);
        changes.restart("--listen", "0.0.0.0:7700", "0.0.0.0:7800");
        assert_eq!(
            changes.live,
            [Change {
                setting: "--tiers",
                old: "4".into(),
                new: "2".into()
            }]
        );
        assert_eq!(changes.restart.len(), 1);
        let flag = Arc::new(AtomicBool::new(false));
        let mut reload = Reload::new(flag.clone(), None, || Ok(1));
        assert!(!reload.take_request());
        flag.store(true, Ordering::Relaxed);
        assert!(reload.take_request());
        assert!(!reload.take_request());
        assert!(reload.load().is_none(), "no file: nothing to load");
        let mut reload = Reload::new(flag, Some("/etc/x.toml".into()), || Ok(2));
        assert_eq!(reload.load(), Some(Ok(2)));
    }
}
