//! Which local binary plays which container image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The images the runner knows when no `--binary` is given: each is a binary of the
/// same name in `--bin-dir`.
pub const DEFAULT_IMAGES: [&str; 3] = ["media-node", "turn-node", "switchyard-operator"];

/// The name a binary is registered under: the last path segment of the image without
/// its tag or digest. `ghcr.io/switchyard-dev/media-node:0.1.0` → `media-node`,
/// `localhost:5000/a/b@sha256:…` → `b`.
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    // A colon left in the last segment starts the tag (a registry port is in an earlier segment).
    last.split_once(':').map_or(last, |(name, _)| name)
}

/// Image name → binary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinaryMap(BTreeMap<String, PathBuf>);

impl BinaryMap {
    /// The default images in `bin_dir`, then the `name=path` overrides.
    pub fn new(bin_dir: &Path, overrides: &[String]) -> Result<Self, String> {
        let mut map: BTreeMap<String, PathBuf> =
            DEFAULT_IMAGES.iter().map(|name| ((*name).to_owned(), bin_dir.join(name))).collect();
        for o in overrides {
            let (name, path) = parse_binary(o)?;
            map.insert(name, path);
        }
        Ok(Self(map))
    }

    /// Play image `name` with `path` (an unpacked image's root filesystem).
    pub fn set(&mut self, name: &str, path: PathBuf) {
        self.0.insert(name.to_owned(), path);
    }

    /// The binary that plays `image`, if any.
    pub fn binary_for(&self, image: &str) -> Option<&Path> {
        self.0.get(image_name(image)).map(PathBuf::as_path)
    }

    /// Every entry, for logging and checks.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_path()))
    }
}

/// `name=path` (a `--binary` flag).
pub fn parse_binary(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() && !name.contains('/') => {
            Ok((name.to_owned(), PathBuf::from(path)))
        }
        _ => Err(format!("--binary {s:?}: expected <image-name>=<path>, such as media-node=target/debug/media-node")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(image_name("ghcr.io/switchyard-dev/media-node:0.1.0"), "media-node");
        assert_eq!(image_name("media-node:test"), "media-node");
        assert_eq!(image_name("turn-node"), "turn-node");
        assert_eq!(image_name("localhost:5000/x/switchyard-operator"), "switchyard-operator");
        assert_eq!(image_name("localhost:5000/x/switchyard-operator:v1@sha256:abc"), "switchyard-operator");
        assert_eq!(image_name("registry.invalid/switchyard/never-pulled:0"), "never-pulled");
    }

    #[test]
    fn binary_map_defaults_and_overrides() {
        let m =
            BinaryMap::new(Path::new("/bin-dir"), &["e2e-probe=/x/probe".into(), "media-node=/y/mn".into()]).unwrap();
        assert_eq!(m.binary_for("ghcr.io/a/media-node:1"), Some(Path::new("/y/mn")));
        assert_eq!(m.binary_for("turn-node:test"), Some(Path::new("/bin-dir/turn-node")));
        assert_eq!(m.binary_for("e2e-probe"), Some(Path::new("/x/probe")));
        assert_eq!(m.binary_for("nginx:1.27"), None);
        assert!(BinaryMap::new(Path::new("/"), &["no-equals".into()]).is_err());
        assert!(BinaryMap::new(Path::new("/"), &["=/x".into()]).is_err());
    }
}
