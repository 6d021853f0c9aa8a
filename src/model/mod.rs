//! The data paddock works on. Depends on nothing else of paddock's.

/// Serde for a type written as a string: `Display` out, `FromStr` in, so
/// the string is parsed once, where it is read.
macro_rules! serde_as_string {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

mod exit;
mod health;
mod manifest;
mod name;
mod named;
mod network;
mod units;

pub use exit::Exit;
pub use health::{Health, HttpProbe, MIN_PROBE_INTERVAL, OnUnhealthy, Probe};
pub use manifest::{
    Manifest, Mount, Namespaces, Resources, Restart, RestartPolicy, Rootfs, Seccomp, Security, SharedOrPrivate, Stop,
    UserNamespace,
};
pub(crate) use name::NAME_PATTERN;
pub use name::{MAX_NAME_LEN, NameError, WorkloadName, is_ignored_file_name, quoted};
pub use named::{Capability, Signal, UnknownName};
pub(crate) use network::NETWORK_NAME_PATTERN;
pub use network::{BRIDGE, Network, NetworkError, PortError, PortMapping, Protocol, is_network_name};
pub use units::{DURATION_PATTERN, Duration, SIZE_PATTERN, Size, UnitError};

/// The workload JSON Schema, generated from the types above.
pub fn workload_schema() -> serde_json::Value {
    let schema = schema_settings().into_generator().into_root_schema_for::<Manifest>();
    let mut value = schema.to_value();
    tidy(&mut value);
    value
}

/// How paddock's schemas (the workload's, the configuration's) are
/// generated: draft 2020-12, every integer bounded by its Rust type.
pub(crate) fn schema_settings() -> schemars::generate::SchemaSettings {
    schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(schemars::transform::RecursiveTransform(bound_by_type))
}

/// schemars bounds a u32 below only (`minimum: 0`): one past it passed
/// the schema and serde refused it in its own words ("invalid value:
/// integer `5000000000`, expected u32"), not at most what. A range a
/// field writes (`range(max = ...)`) is kept.
fn bound_by_type(schema: &mut schemars::Schema) {
    let max = match schema.get("format").and_then(serde_json::Value::as_str) {
        Some("uint32") => u32::MAX,
        _ => return,
    };
    if schema.get("maximum").is_none() {
        schema.insert("maximum".to_owned(), max.into());
    }
}

/// Doc comments arrive with their line breaks; editors show descriptions as
/// flowing text, so join the lines. Rust-only `format`s (`uint32`) mean
/// nothing to other tools and are dropped; the ranges say the same.
fn tidy(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("format");
            if let Some(serde_json::Value::String(d)) = map.get_mut("description") {
                *d = d.split("\n\n").map(|p| p.replace('\n', " ")).collect::<Vec<_>>().join("\n\n");
            }
            map.values_mut().for_each(tidy);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}
