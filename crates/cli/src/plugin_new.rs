//! `stilts plugin new NAME`: write a provider plugin crate that builds, passes `stilts plugin
//! check`, reports streamed usage, has its own wire tests and is found by the gateway as
//! `plugin = "NAME"`.
//!
//! The files come from the templates in `crates/cli/templates/plugin/` (compiled into the binary),
//! with `{{key}}` placeholders filled in: `name` (`acme`), `crate` (`acme-plugin`), `lib`
//! (`acme_plugin`, the library's crate name, so cargo writes `libacme_plugin.so`: the form the
//! gateway tries for a short name), `Type` (`Acme`), `ENV` (`ACME_API_KEY`), and where
//! stilts-plugin comes from. docs/plugins.md shows the files written for `acme`, and a test
//! checks they are the same.
//!
//! The crate's dependency on stilts-plugin is a path into a stilts checkout (the one this binary
//! was built from, or `--stilts-path`), whose `Cargo.lock` is copied so the first build uses the
//! versions stilts is tested with; with `--stilts-git URL`, or when no checkout is found, it is
//! a git dependency.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// `stilts plugin new` arguments.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The plugin's short name: lowercase letters, digits and single hyphens, starting with a
    /// letter (e.g. `acme`). The crate is NAME-plugin; the gateway finds it as plugin = "NAME".
    pub name: String,
    /// The directory to create (default: ./NAME-plugin). It must not exist, or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The stilts checkout to depend on (its crates/plugin); default: the checkout this
    /// `stilts` was built from.
    #[arg(long, value_name = "DIR", conflicts_with = "stilts_git")]
    pub stilts_path: Option<PathBuf>,
    /// Depend on stilts-plugin from this git repository instead of a checkout.
    #[arg(long, value_name = "URL")]
    pub stilts_git: Option<String>,
}

/// The template files: (path in the new crate, template text).
const TEMPLATES: [(&str, &str); 6] = [
    (
        "Cargo.toml",
        include_str!("../templates/plugin/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../templates/plugin/lib.rs.tmpl"),
    ),
    (
        "tests/wire.rs",
        include_str!("../templates/plugin/wire.rs.tmpl"),
    ),
    (
        "stilts.toml",
        include_str!("../templates/plugin/stilts.toml.tmpl"),
    ),
    (
        "README.md",
        include_str!("../templates/plugin/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../templates/plugin/gitignore.tmpl"),
    ),
];

/// Where stilts's repository is published (the workspace's `repository` field).
const STILTS_GIT: &str = env!("CARGO_PKG_REPOSITORY");

/// The longest short name accepted.
const NAME_MAX: usize = 48;

/// Writes the crate and prints what to run next.
pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    let names = Names::new(&args.name)?;
    let (source, note) = StiltsSource::choose(args)?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => PathBuf::from(&names.krate),
    };
    prepare_dir(&dir)?;
    for (rel, text) in render(&names, &source)? {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let StiltsSource::Checkout(root) = &source {
        let lock = root.join("Cargo.lock");
        if lock.is_file() {
            std::fs::copy(&lock, dir.join("Cargo.lock")).with_context(|| {
                format!("cannot copy {} into {}", lock.display(), dir.display())
            })?;
        }
    }
    println!(
        "created {}: the {} plugin (crate {}; the gateway finds it as plugin = \"{}\")",
        dir.display(),
        names.name,
        names.krate,
        names.name
    );
    println!("stilts-plugin: {}", source.describe());
    if let Some(note) = note {
        println!("note: {note}");
    }
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  cargo test");
    println!("  cargo build --release");
    println!("  stilts plugin check target/release/{}", names.lib_file());
    println!(
        "  stilts plugin check {} --plugin-dir target/release",
        names.name
    );
    Ok(())
}

/// The names derived from a short plugin name.
#[derive(Debug, PartialEq)]
struct Names {
    /// `acme`: the plugin's name, its short name in a gateway config.
    name: String,
    /// `acme-plugin`: the package.
    krate: String,
    /// `acme_plugin`: the library's crate name (cargo's file name stem).
    lib: String,
    /// `Acme`: the translator type.
    ty: String,
    /// `ACME_API_KEY`: the key's environment variable in the example config.
    env: String,
}

impl Names {
    /// Checks `name` and derives the others; the error says what to type instead.
    fn new(name: &str) -> anyhow::Result<Names> {
        let example = "e.g. `stilts plugin new acme`";
        if name.is_empty() {
            bail!("the plugin name is empty: give its short name, {example}");
        }
        for suffix in ["-plugin", "_plugin"] {
            if let Some(short) = name.strip_suffix(suffix).filter(|s| !s.is_empty()) {
                bail!(
                    "give the plugin's short name, `stilts plugin new {short}`: its crate is then \
                     named `{short}-plugin`"
                );
            }
        }
        let valid = name.len() <= NAME_MAX
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.split('-').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !valid {
            bail!(
                "invalid plugin name {name:?}: use 1 to {NAME_MAX} lowercase letters, digits and \
                 single hyphens, starting with a letter ({example}, or `acme-eu`)"
            );
        }
        if name == "stilts" {
            bail!(
                "the name `stilts` would make the crate `stilts-plugin`, the SDK's own name: choose \
                 another ({example})"
            );
        }
        let ty: String = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        let taken = template_identifiers();
        for ident in [ty.clone(), format!("{ty}Stream")] {
            if ident == "Self" || taken.contains(&ident) {
                bail!(
                    "the name {name:?} would make the type `{ident}`, a name the template already \
                     uses: choose another (e.g. `{name}-api`)"
                );
            }
        }
        Ok(Names {
            name: name.to_owned(),
            krate: format!("{name}-plugin"),
            lib: format!("{}_plugin", name.replace('-', "_")),
            ty,
            env: format!("{}_API_KEY", name.replace('-', "_").to_ascii_uppercase()),
        })
    }

    /// The library cargo builds on this platform (`libacme_plugin.so`).
    fn lib_file(&self) -> String {
        format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            self.lib,
            std::env::consts::DLL_SUFFIX
        )
    }
}

/// Every identifier in the templates outside placeholders: a type named like one of them would
/// clash (`Value`, `Translator`, `Ok`…).
fn template_identifiers() -> Vec<String> {
    let mut out = Vec::new();
    for (_, text) in TEMPLATES {
        let text = fill_with(text, |_| Some(" "));
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                out.push(word.to_owned());
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Where the new crate gets stilts-plugin from.
#[derive(Debug, PartialEq)]
enum StiltsSource {
    /// A stilts checkout (its root).
    Checkout(PathBuf),
    /// A git repository URL.
    Git(String),
}

impl StiltsSource {
    /// From the flags, else the checkout this binary was built from, else git (with a note).
    fn choose(args: &NewArgs) -> anyhow::Result<(StiltsSource, Option<String>)> {
        if let Some(url) = &args.stilts_git {
            if url.trim().is_empty() {
                bail!("--stilts-git is empty: give the URL of a stilts git repository");
            }
            return Ok((StiltsSource::Git(url.clone()), None));
        }
        if let Some(dir) = &args.stilts_path {
            return Ok((StiltsSource::Checkout(checkout(dir)?), None));
        }
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        match checkout(&built_from) {
            Ok(root) => Ok((StiltsSource::Checkout(root), None)),
            Err(_) => Ok((
                StiltsSource::Git(STILTS_GIT.to_owned()),
                Some(format!(
                    "the stilts checkout this binary was built from ({}) is gone, so the crate \
                     depends on git; pass --stilts-path DIR to use a checkout",
                    built_from.display()
                )),
            )),
        }
    }

    /// The `stilts-plugin = …` value in Cargo.toml.
    fn dependency(&self) -> anyhow::Result<String> {
        Ok(match self {
            StiltsSource::Checkout(root) => {
                let path = root.join("crates").join("plugin");
                let path = path
                    .to_str()
                    .with_context(|| format!("the stilts path {} is not UTF-8", path.display()))?;
                format!("{{ path = {} }}", toml_string(path))
            }
            StiltsSource::Git(url) => format!("{{ git = {} }}", toml_string(url)),
        })
    }

    fn describe(&self) -> String {
        match self {
            StiltsSource::Checkout(root) => {
                format!("path {}", root.join("crates").join("plugin").display())
            }
            StiltsSource::Git(url) => format!("git {url}"),
        }
    }

    /// The README's sentence on it.
    fn readme(&self) -> String {
        match self {
            StiltsSource::Checkout(root) => format!(
                "`Cargo.toml` takes stilts-plugin from the stilts checkout at `{}` (a path \
                 dependency), and `Cargo.lock` was copied from that checkout, so the first build \
                 uses the versions stilts is tested with.",
                root.display()
            ),
            StiltsSource::Git(url) => {
                format!("`Cargo.toml` takes stilts-plugin from git, `{url}`.")
            }
        }
    }
}

/// `dir` as a stilts checkout root (canonical), or why it is not one.
fn checkout(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.canonicalize().with_context(|| {
        format!(
            "--stilts-path {}: no such directory; give the directory of a stilts checkout",
            dir.display()
        )
    })?;
    let manifest = root.join("crates").join("plugin").join("Cargo.toml");
    let is_sdk = std::fs::read_to_string(&manifest)
        .is_ok_and(|text| text.lines().any(|l| l.trim() == "name = \"stilts-plugin\""));
    if !is_sdk {
        bail!(
            "{} is not a stilts checkout: {} is not stilts-plugin's manifest; give the directory \
             that holds stilts's top-level Cargo.toml",
            root.display(),
            manifest.display()
        );
    }
    Ok(root)
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Refuses a directory that exists and is not empty (or is not a directory).
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty: choose another --dir, or remove it first",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
        }
        Err(_) if dir.exists() => bail!(
            "{} exists and is not a directory: choose another --dir",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// The crate's files, filled in.
fn render(names: &Names, source: &StiltsSource) -> anyhow::Result<Vec<(&'static str, String)>> {
    let dependency = source.dependency()?;
    let lib_file = names.lib_file();
    let readme = source.readme();
    let vars: [(&str, &str); 9] = [
        ("name", &names.name),
        ("crate", &names.krate),
        ("lib", &names.lib),
        ("Type", &names.ty),
        ("ENV", &names.env),
        ("lib_file", &lib_file),
        ("stilts_plugin", &dependency),
        ("git_url", STILTS_GIT),
        ("source", &readme),
    ];
    TEMPLATES
        .iter()
        .map(|(rel, text)| {
            fill(text, &vars)
                .map(|filled| (*rel, filled))
                .map_err(|e| anyhow::anyhow!("template {rel}: {e}"))
        })
        .collect()
}

/// Replaces each `{{key}}` (a key of ASCII letters and `_`) with its value from `vars`; an unknown
/// key is an error.
fn fill(template: &str, vars: &[(&str, &str)]) -> Result<String, String> {
    let mut unknown = None;
    let out = fill_with(template, |key| {
        let value = vars.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        if value.is_none() && unknown.is_none() {
            unknown = Some(key.to_owned());
        }
        value
    });
    match unknown {
        Some(key) => Err(format!("unknown placeholder {{{{{key}}}}}")),
        None => Ok(out),
    }
}

/// Replaces each `{{key}}` (a key of ASCII letters and `_`) with `value(key)`, or keeps it when
/// that is `None`; any other text, including `{{` not followed by a key and `}}`, is copied.
fn fill_with<'v>(template: &str, mut value: impl FnMut(&str) -> Option<&'v str>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let key = after
            .find("}}")
            .map(|end| &after[..end])
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_'));
        match key.map(|k| (k, value(k))) {
            Some((key, Some(v))) => {
                out.push_str(v);
                rest = &after[key.len() + 2..];
            }
            Some((key, None)) => {
                out.push_str(&rest[start..start + key.len() + 4]);
                rest = &after[key.len() + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    fn acme() -> Names {
        Names::new("acme").unwrap()
    }

    #[test]
    fn a_short_name_makes_the_crate_library_type_and_key_names() {
        assert_eq!(
            acme(),
            Names {
                name: "acme".into(),
                krate: "acme-plugin".into(),
                lib: "acme_plugin".into(),
                ty: "Acme".into(),
                env: "ACME_API_KEY".into(),
            }
        );
        let eu = Names::new("acme-eu2").unwrap();
        assert_eq!(
            (
                eu.krate.as_str(),
                eu.lib.as_str(),
                eu.ty.as_str(),
                eu.env.as_str()
            ),
            (
                "acme-eu2-plugin",
                "acme_eu2_plugin",
                "AcmeEu2",
                "ACME_EU2_API_KEY"
            )
        );
    }

    /// The library's file name is one the gateway tries for the short name.
    #[test]
    fn the_library_is_found_by_the_short_name() {
        for name in ["acme", "acme-eu"] {
            let names = Names::new(name).unwrap();
            assert!(
                stilts_gateway::plugins::file_names(name).contains(&names.lib_file()),
                "{name}"
            );
        }
    }

    #[test]
    fn invalid_names_are_refused_with_the_fix() {
        for (name, says) in [
            ("", "give its short name"),
            ("Acme", "lowercase letters"),
            ("1acme", "starting with a letter"),
            ("acme_eu", "single hyphens"),
            ("acme--eu", "single hyphens"),
            ("acme-", "single hyphens"),
            ("ac me", "lowercase letters"),
            ("../x", "lowercase letters"),
            ("acme-plugin", "`stilts plugin new acme`"),
            ("stilts", "the SDK's own name"),
            ("value", "the type `Value`"),
            ("translator", "the type `Translator`"),
            ("ok", "the type `Ok`"),
            ("self", "the type `Self`"),
        ] {
            let err = Names::new(name).unwrap_err().to_string();
            assert!(err.contains(says), "{name:?}: {err}");
        }
        let long = "a".repeat(NAME_MAX + 1);
        assert!(Names::new(&long).is_err());
        assert!(Names::new(&"a".repeat(NAME_MAX)).is_ok());
    }

    #[test]
    fn every_placeholder_of_every_template_is_known() {
        let source = StiltsSource::Git("https://example.com/stilts".into());
        for (rel, text) in render(&acme(), &source).unwrap() {
            // Nothing left that looks like a placeholder.
            assert_eq!(fill_with(&text, |_| Some("!")), text, "{rel}");
        }
    }

    #[test]
    fn fill_replaces_keys_and_refuses_unknown_ones() {
        let vars = [("name", "acme")];
        assert_eq!(fill("x {{name}} y", &vars).unwrap(), "x acme y");
        assert_eq!(fill("{{ {{name}}", &vars).unwrap(), "{{ acme");
        assert_eq!(fill("{{}} {{a b}}", &vars).unwrap(), "{{}} {{a b}}");
        assert!(fill("{{nope}}", &vars).unwrap_err().contains("{{nope}}"));
    }

    #[test]
    fn the_dependency_is_a_toml_path_or_git_table() {
        let path = StiltsSource::Checkout(PathBuf::from("/home/you/st\"ilts"));
        assert_eq!(
            path.dependency().unwrap(),
            r#"{ path = "/home/you/st\"ilts/crates/plugin" }"#
        );
        let git = StiltsSource::Git("https://example.com/stilts".into());
        assert_eq!(
            git.dependency().unwrap(),
            r#"{ git = "https://example.com/stilts" }"#
        );
        assert_eq!(toml_string("a\\b\n"), r#""a\\b\u000A""#);
    }

    #[test]
    fn this_binary_was_built_from_a_checkout_it_can_depend_on() {
        let args = NewArgs {
            name: "acme".into(),
            dir: None,
            stilts_path: None,
            stilts_git: None,
        };
        let (source, note) = StiltsSource::choose(&args).unwrap();
        assert!(matches!(source, StiltsSource::Checkout(_)), "{source:?}");
        assert_eq!(note, None);
    }

    #[test]
    fn a_stilts_path_that_is_not_a_checkout_is_refused() {
        let dir = std::env::temp_dir();
        let err = checkout(&dir).unwrap_err().to_string();
        assert!(err.contains("is not a stilts checkout"), "{err}");
        let err = checkout(Path::new("/no/such/stilts"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such directory"), "{err}");
    }

    #[test]
    fn a_non_empty_directory_is_refused_and_an_empty_one_taken() {
        let base = std::env::temp_dir().join(format!("stilts-plugin-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        prepare_dir(&base).unwrap();
        std::fs::write(base.join("x"), "").unwrap();
        let err = prepare_dir(&base).unwrap_err().to_string();
        assert!(err.contains("not empty") && err.contains("--dir"), "{err}");
        let err = prepare_dir(&base.join("x")).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        prepare_dir(&base.join("new/deeper")).unwrap();
        assert!(base.join("new/deeper").is_dir());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
