//! The router configs under test: `[configs.router]` inline, or `file` + `table` read from a TOML
//! file, such as the gateway's own config.
//!
//! When the table is the `router` of a gateway route (`routes.NAME.router`), the route's
//! deployments are its providers, read by stilts-config exactly as the gateway reads them. Either way the config is checked by
//! stilts-core, its providers are matched to the world's, and its errors are placed in the file
//! they are in, under the path they are written at.

use super::MAX_ATTEMPTS;
use super::error::{Invalid, invalid};
use super::model::{BASELINES, ConfigUnderTest, ProviderModel, Replicas};
use super::raw::RawConfig;
use std::path::{Path, PathBuf};
use stilts_core::RouterConfig;

/// The keys of a TOML dotted key such as `routes."gpt-4.1".router` (quoted parts may hold dots).
fn dotted_keys(table: &str) -> Result<Vec<String>, String> {
    if table.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: toml::Table = toml::from_str(&format!("{table} = 0"))
        .map_err(|_| format!("`{table}` is not a TOML dotted key"))?;
    let mut keys = Vec::new();
    let mut level = &doc;
    loop {
        let mut entries = level.iter();
        let (Some((key, value)), None) = (entries.next(), entries.next()) else {
            return Err(format!("`{table}` is not a TOML dotted key"));
        };
        keys.push(key.clone());
        match value {
            toml::Value::Table(inner) => level = inner,
            _ => return Ok(keys),
        }
    }
}

/// A dotted path for messages, with the keys that need it quoted.
fn dotted_path(keys: &[String]) -> String {
    keys.iter()
        .map(|k| {
            if !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                k.clone()
            } else {
                format!("{k:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What a config's `file` + `table` yield: the router, the dotted path of its table (the prefix of
/// error paths), the file and its text, and whether the providers came from a gateway route's
/// deployments.
type FromFile = (RouterConfig, String, Option<(PathBuf, String)>, bool);

/// Reads the router table `table` of the TOML file `file`. When it is the `router` of a gateway
/// route (`routes.NAME.router`, a table beside `deployments`), the route's deployments are its
/// providers, as in the gateway: each deployment's routing fields make one provider; a missing
/// router table means the defaults; a router that lists providers itself is refused, as the
/// gateway refuses it.
fn router_from_file(
    path: &dyn Fn(&str) -> String,
    file: &str,
    table: Option<&str>,
    base: &Path,
) -> Result<FromFile, Invalid> {
    let file_path = base.join(file);
    let text = std::fs::read_to_string(&file_path).map_err(|e| {
        invalid(
            path("file"),
            format!("cannot read {}: {e}", file_path.display()),
            "give a path relative to the scenario file",
        )
    })?;
    let in_file = |inv: Invalid| Invalid {
        file: Some((file_path.clone(), text.clone())),
        ..inv
    };
    let keys = dotted_keys(table.unwrap_or_default()).map_err(|problem| {
        invalid(
            path("table"),
            problem,
            "give the dotted path of the router table, such as \"routes.chat.router\"",
        )
    })?;
    let table_path = dotted_path(&keys);
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        in_file(invalid(
            "",
            e.message().trim(),
            "the file must be valid TOML",
        ))
    })?;
    let mut value = toml::Value::Table(doc);
    // When the path ends at a route's `router`: the route's `deployments`, beside it.
    let mut deployments: Option<toml::Value> = None;
    for (depth, key) in keys.iter().enumerate() {
        let toml::Value::Table(mut level) = value else {
            return Err(invalid(
                path("table"),
                format!("`{table_path}` is not a table in {}", file_path.display()),
                "give the dotted path of the router table",
            ));
        };
        if depth + 1 == keys.len() && key == "router" {
            deployments = level.remove("deployments");
        }
        value = match level.remove(key) {
            Some(v) => v,
            // A gateway route may leave its router table out: the defaults apply.
            None if deployments.is_some() => toml::Value::Table(toml::Table::new()),
            None => {
                return Err(invalid(
                    path("table"),
                    format!("{} has no table `{table_path}`", file_path.display()),
                    "give the dotted path of the router table, such as \"routes.chat.router\"",
                ));
            }
        };
    }
    let Some(deployments) = deployments else {
        let router: RouterConfig = value.try_into().map_err(|e: toml::de::Error| {
            in_file(invalid(
                table_path.clone(),
                e.message().trim(),
                "it must be a router table (see docs/routing.md)",
            ))
        })?;
        return Ok((router, table_path, Some((file_path, text)), false));
    };
    // A gateway route: its deployments are the providers.
    let route_path = dotted_path(&keys[..keys.len() - 1]);
    let at = |field: &str| format!("{route_path}.{field}");
    let router_table = match value {
        toml::Value::Table(t) => t,
        _ => {
            return Err(in_file(invalid(
                table_path.clone(),
                "is not a table",
                "it must be a router table (see docs/routing.md)",
            )));
        }
    };
    if router_table
        .get("providers")
        .and_then(toml::Value::as_array)
        .is_some_and(|p| !p.is_empty())
    {
        return Err(in_file(invalid(
            at("router.providers"),
            "is set; a gateway route's providers are its deployments",
            "remove it and list [[deployments]] instead (stilts config check refuses it too)",
        )));
    }
    let deployments = match deployments {
        toml::Value::Array(d) if !d.is_empty() => d,
        _ => {
            return Err(in_file(invalid(
                at("deployments"),
                "is empty or not a list",
                format!("add at least one [[{route_path}.deployments]] table"),
            )));
        }
    };
    // Each deployment is read as the gateway reads it (stilts-config's `DeploymentTable`, one by
    // one so that an error names its deployment), and becomes a provider through the same
    // `provider_config` the gateway uses: no field list is kept here.
    let mut providers = Vec::with_capacity(deployments.len());
    for (j, deployment) in deployments.into_iter().enumerate() {
        let deployment: stilts_config::DeploymentTable =
            deployment.try_into().map_err(|e: toml::de::Error| {
                in_file(invalid(
                    at(&format!("deployments[{j}]")),
                    e.message().trim(),
                    "fix the deployment's fields (see docs/configuration.md)",
                ))
            })?;
        providers.push(deployment.provider_config());
    }
    let mut router: RouterConfig =
        toml::Value::Table(router_table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                in_file(invalid(
                    table_path.clone(),
                    e.message().trim(),
                    "it must be a router table (see docs/routing.md)",
                ))
            })?;
    router.providers = providers;
    Ok((router, table_path, Some((file_path, text)), true))
}

pub(super) fn validate_config(
    i: usize,
    raw: RawConfig,
    world: &[ProviderModel],
    base: &Path,
) -> Result<ConfigUnderTest, Invalid> {
    let path = |f: &str| format!("configs[{i}].{f}");
    if raw.name.trim().is_empty() || BASELINES.contains(&raw.name.as_str()) {
        return Err(invalid(
            path("name"),
            format!("\"{}\" is empty or the name of a baseline", raw.name),
            "give the config its own name, such as \"stilts\"",
        ));
    }
    // Where the RouterConfig comes from: inline, or a file shared with the gateway.
    let (mut config, prefix, file, from_deployments) = match (raw.router, &raw.file) {
        (Some(router), None) => (router, path("router"), None, false),
        (None, Some(file)) => router_from_file(&path, file, raw.table.as_deref(), base)?,
        _ => {
            return Err(invalid(
                path("router"),
                "needs exactly one of `router` (an inline table) or `file`",
                "add a [configs.router] table",
            ));
        }
    };
    let join = |p: &str| {
        // Providers built from a gateway route's deployments are named where they are written.
        if let (true, Some(rest)) = (from_deployments, p.strip_prefix("providers[")) {
            let route = prefix.strip_suffix(".router").unwrap_or(&prefix);
            return format!("{route}.deployments[{rest}");
        }
        if prefix.is_empty() {
            p.to_string()
        } else {
            format!("{prefix}.{p}")
        }
    };
    let place = |inv: Invalid| match &file {
        Some(f) => Invalid {
            file: Some(f.clone()),
            ..inv
        },
        None => inv,
    };
    let mut world_index = Vec::with_capacity(config.providers.len());
    for (j, p) in config.providers.iter_mut().enumerate() {
        let Some(w) = world.iter().position(|m| m.name == p.name) else {
            return Err(place(invalid(
                join(&format!("providers[{j}].name")),
                format!(
                    "no provider named \"{}\" in the scenario's [[providers]]",
                    p.name
                ),
                format!(
                    "use one of: {}",
                    world
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )));
        };
        // The router learns prices and windows from the world unless the config says otherwise;
        // a gateway route's router sees exactly what the gateway's does (no price: free).
        if !from_deployments {
            let m = &world[w];
            p.input_usd_per_mtok.get_or_insert(m.input_usd_per_mtok);
            p.output_usd_per_mtok.get_or_insert(m.output_usd_per_mtok);
            if p.context_window.is_none() {
                p.context_window = m.context_window;
            }
        }
        world_index.push(w);
    }
    let valid = config
        .validate()
        .map_err(|e| place(invalid(join(&e.path), e.problem, e.fix)))?;
    if valid.max_attempts > MAX_ATTEMPTS {
        return Err(place(invalid(
            join("max_attempts"),
            format!(
                "{} is more than the simulator's {MAX_ATTEMPTS}",
                valid.max_attempts
            ),
            format!("use at most {MAX_ATTEMPTS} attempts per request"),
        )));
    }
    let replicas = replicas_of(&path, raw.replicas, raw.sync_ms, raw.shared)?;
    Ok(ConfigUnderTest {
        name: raw.name,
        config: valid,
        world_index,
        replicas,
    })
}

/// Most replicas a config may run.
const MAX_REPLICAS: u32 = 64;

/// `replicas`, `sync_ms` and `shared` of a config: replicas share state (every `sync_ms`, default
/// 100 as `[cluster]`'s) unless `shared = false`.
fn replicas_of(
    path: &dyn Fn(&str) -> String,
    count: Option<u32>,
    sync_ms: Option<u64>,
    shared: Option<bool>,
) -> Result<Replicas, Invalid> {
    let count = count.unwrap_or(1);
    if !(1..=MAX_REPLICAS).contains(&count) {
        return Err(invalid(
            path("replicas"),
            format!("{count} is not a replica count from 1 to {MAX_REPLICAS}"),
            "use e.g. 4, or remove it for one gateway",
        ));
    }
    if count == 1 && (sync_ms.is_some() || shared.is_some()) {
        return Err(invalid(
            path(if sync_ms.is_some() {
                "sync_ms"
            } else {
                "shared"
            }),
            "only means something with several replicas",
            "set replicas = N (N > 1), or remove it",
        ));
    }
    if shared == Some(false) && sync_ms.is_some() {
        return Err(invalid(
            path("sync_ms"),
            "is set but shared = false: the replicas exchange nothing",
            "remove sync_ms, or shared = false",
        ));
    }
    let sync_ms = sync_ms.unwrap_or(stilts_config::DEFAULT_SYNC_MS);
    if !(stilts_config::MIN_SYNC_MS..=stilts_config::MAX_SYNC_MS).contains(&sync_ms) {
        return Err(invalid(
            path("sync_ms"),
            format!(
                "{sync_ms} is outside {} to {} (the gateway's [cluster] range)",
                stilts_config::MIN_SYNC_MS,
                stilts_config::MAX_SYNC_MS
            ),
            "use e.g. 100",
        ));
    }
    Ok(Replicas {
        count,
        sync_ns: (count > 1 && shared != Some(false)).then_some(sync_ms * 1_000_000),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use crate::scenario::test_support::{MINIMAL, err};

    #[test]
    fn core_config_errors_name_field_and_line() {
        let e = err(&MINIMAL.replace("{ name = \"b\" }", "{ name = \"b\", weight = 0 }"));
        assert_eq!(e.path, "configs[0].router.providers[1].weight");
        assert_eq!(e.position.map(|p| p.0), Some(14), "{e}");
        let e = err(&MINIMAL.replace("{ name = \"b\" }", "{ name = \"c\" }"));
        assert_eq!(e.path, "configs[0].router.providers[1].name");
        assert!(e.to_string().starts_with("x.toml:14:"), "{e}");
    }
}
