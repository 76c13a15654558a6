//! Finding and loading provider plugins, once per file for the life of the process.
//!
//! A deployment names its plugin by short name (`openai`, `acme`) or by path. A short name is
//! looked up as, in order, `libstilts_plugin_<name>.so` (the plugins shipped with stilts),
//! `lib<name>_plugin.so` (what cargo builds from a crate named `<name>-plugin`, as
//! `stilts plugin new` writes it) and `lib<name>.so`, with a hyphen in the name read as an
//! underscore and `.dylib`/`.dll` (no `lib` on Windows) on other platforms. The directories
//! searched, in order: the config's `server.plugin_dir` (relative to the config file's directory),
//! the `STILTS_PLUGIN_DIR` environment variable, the directory of the running binary, and that
//! directory's parent (so a test binary in `target/debug/deps` finds the plugins cargo put in
//! `target/debug`). Relative plugin paths resolve against the config file's directory.
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
pub enum PluginLookupError {
    /// No file found for a short name.
    #[error(
        "no plugin named \"{name}\" ({files}) in {searched}; build it (cargo build --release in the plugin's crate, or cargo build -p stilts-plugin-{name} for one shipped with stilts), set server.plugin_dir or STILTS_PLUGIN_DIR to the directory that holds it, or give the plugin's path"
    )]
    NotFound {
        /// The short name.
        name: String,
        /// The file names looked for.
        files: String,
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

/// The file names a short plugin name may have, in the order they are tried: the shipped
/// plugins' `libstilts_plugin_<name>`, then `lib<name>_plugin` (a crate named `<name>-plugin`),
/// then `lib<name>`. Cargo writes a hyphen of a crate name as an underscore, and so does this.
pub fn file_names(name: &str) -> [String; 3] {
    let ident = name.replace('-', "_");
    let file = |stem: &str| {
        format!(
            "{}{stem}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        )
    };
    [
        file(&format!("stilts_plugin_{ident}")),
        file(&format!("{ident}_plugin")),
        file(&ident),
    ]
}

/// Whether a plugin reference names a file rather than a short name: it contains a path
/// separator or ends with a shared-library extension (`libacme_plugin.so`, `./acme`). The rule
/// the gateway config applies to `plugin = "…"`.
pub fn names_a_file(reference: &str) -> bool {
    reference.contains('/')
        || reference.contains('\\')
        || [".so", ".dylib", ".dll"]
            .iter()
            .any(|ext| reference.ends_with(ext))
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

/// Finds the file of a plugin reference. `base_dir` (the config file's directory) anchors a
/// relative path and a relative `plugin_dir`.
pub fn resolve(
    plugin: &PluginRef,
    plugin_dir: Option<&Path>,
    base_dir: &Path,
) -> Result<PathBuf, PluginLookupError> {
    match plugin {
        PluginRef::Path(p) if p.is_absolute() => Ok(p.clone()),
        PluginRef::Path(p) => Ok(base_dir.join(p)),
        PluginRef::Name(name) => {
            let plugin_dir = plugin_dir.map(|d| base_dir.join(d));
            let dirs = search_dirs(plugin_dir.as_deref());
            let files = file_names(name);
            for dir in &dirs {
                for file in &files {
                    let candidate = dir.join(file);
                    if candidate.is_file() {
                        return Ok(candidate);
                    }
                }
            }
            Err(PluginLookupError::NotFound {
                name: name.clone(),
                files: files.join(", "),
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
    /// Every plugin loaded so far.
    pub fn loaded(&self) -> Vec<Plugin> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Loads `path` once; later calls return the same plugin.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginLookupError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    fn lib(stem: &str) -> String {
        format!(
            "{}{stem}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        )
    }

    #[test]
    fn a_short_name_has_the_shipped_the_crate_and_the_plain_file_names_in_that_order() {
        assert_eq!(
            file_names("acme-eu"),
            [
                lib("stilts_plugin_acme_eu"),
                lib("acme_eu_plugin"),
                lib("acme_eu")
            ]
        );
    }

    #[test]
    fn a_reference_with_a_separator_or_a_library_extension_names_a_file() {
        for file in ["libacme_plugin.so", "./acme", "a\\b", "x.dylib", "x.dll"] {
            assert!(names_a_file(file), "{file}");
        }
        for name in ["acme", "acme-eu", "openai"] {
            assert!(!names_a_file(name), "{name}");
        }
    }

    /// `stilts plugin new acme` writes the crate `acme-plugin`, whose library cargo names
    /// `libacme_plugin.so`: the short name `acme` must find it.
    #[test]
    fn the_short_name_finds_the_library_of_a_crate_named_name_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(lib("acme_plugin"));
        std::fs::write(&file, b"").unwrap();
        let found = resolve(
            &PluginRef::Name("acme".into()),
            Some(dir.path()),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(found, file);
        // The shipped form is tried first.
        let shipped = dir.path().join(lib("stilts_plugin_acme"));
        std::fs::write(&shipped, b"").unwrap();
        let found = resolve(
            &PluginRef::Name("acme".into()),
            Some(dir.path()),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(found, shipped);
    }

    #[test]
    fn a_relative_plugin_dir_is_relative_to_the_config_files_directory() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("target/release")).unwrap();
        let file = base.path().join("target/release").join(lib("acme_plugin"));
        std::fs::write(&file, b"").unwrap();
        let found = resolve(
            &PluginRef::Name("acme".into()),
            Some(Path::new("target/release")),
            base.path(),
        )
        .unwrap();
        assert_eq!(found, file);
    }

    #[test]
    fn a_missing_short_name_names_the_files_and_directories_it_looked_in() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(
            &PluginRef::Name("nosuch".into()),
            Some(dir.path()),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(&lib("nosuch_plugin")), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("plugin_dir"), "{err}");
    }
}
