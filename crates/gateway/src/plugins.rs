//! Finding and loading provider plugins, once per file for the life of the process.
//!
//! A deployment names its plugin by short name (`openai`) or by path. Short names are looked up as
//! `libstilts_plugin_<name>.so` (then `lib<name>.so`; `.dylib`/`.dll` on other platforms) in, in
//! order: the config's `server.plugin_dir`, the `STILTS_PLUGIN_DIR` environment variable, the
//! directory of the running binary, and that directory's parent (so a test binary in
//! `target/debug/deps` finds the plugins cargo put in `target/debug`). Relative paths resolve
//! against the config file's directory.
//!
//! Loaded libraries are never unloaded (see `stilts_plugin::host`), so the [`PluginCache`] keeps
//! one [`Plugin`] per canonical path and reloads of the config reuse it. Loading happens under one
//! mutex, since `dlerror` is not thread-safe everywhere.

use crate::config::PluginRef;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use stilts_plugin::host::{LoadError, Plugin};

/// Why a plugin could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// No file found for a short name.
    #[error(
        "no plugin named \"{name}\" in {searched}; build it (cargo build -p stilts-plugin-{name}), set server.plugin_dir or STILTS_PLUGIN_DIR, or give the plugin's path"
    )]
    NotFound {
        /// The short name.
        name: String,
        /// The directories searched.
        searched: String,
    },
    /// The file was refused by the loader.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Loaded plugins by canonical path.
#[derive(Debug, Default)]
pub struct PluginCache {
    loaded: Mutex<HashMap<PathBuf, Plugin>>,
}

/// The file names a short plugin name may have.
pub fn file_names(name: &str) -> [String; 2] {
    let ident = name.replace('-', "_");
    [
        format!(
            "{}stilts_plugin_{ident}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ),
        format!(
            "{}{ident}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ),
    ]
}

/// The directories searched for short names, in order.
pub fn search_dirs(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = configured {
        dirs.push(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("STILTS_PLUGIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if let Some(parent) = exe_dir.parent() {
            let parent = parent.to_path_buf();
            dirs.push(exe_dir);
            dirs.push(parent);
        } else {
            dirs.push(exe_dir);
        }
    }
    dirs
}

/// Finds the file of a plugin reference.
pub fn resolve(
    plugin: &PluginRef,
    plugin_dir: Option<&Path>,
    base_dir: &Path,
) -> Result<PathBuf, PluginError> {
    match plugin {
        PluginRef::Path(p) if p.is_absolute() => Ok(p.clone()),
        PluginRef::Path(p) => Ok(base_dir.join(p)),
        PluginRef::Name(name) => {
            let dirs = search_dirs(plugin_dir);
            for dir in &dirs {
                for file in file_names(name) {
                    let candidate = dir.join(file);
                    if candidate.is_file() {
                        return Ok(candidate);
                    }
                }
            }
            Err(PluginError::NotFound {
                name: name.clone(),
                searched: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

impl PluginCache {
    /// Loads `path` once; later calls return the same plugin.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = loaded.get(&key) {
            return Ok(p.clone());
        }
        let plugin = Plugin::load(&key)?;
        tracing::info!(
            path = %key.display(),
            name = %plugin.describe().name,
            version = %plugin.describe().version,
            "plugin loaded"
        );
        loaded.insert(key, plugin.clone());
        Ok(plugin)
    }
}
