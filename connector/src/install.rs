//! The connector's footprint on disk, as the product's installer, updater
//! and uninstaller leave it (VER-UPGRADE, VER-UPDATER).
//!
//! ```text
//! INSTALL_DIR/
//!   Connector/install.json         program folder of the connector service
//!   Updater/install.json           program folder of the updater service
//!   Connector.previous/            the version the updater switched from,
//!                                  kept until the new one proves healthy
//!   identity/                      data: key, certificate, connector id
//! ```
//!
//! Uninstalling removes the program folders and leaves the data folders
//! behind, as Windows uninstallers do. The spec's upgrade is "uninstall,
//! delete the folders, install the latest": an install that finds folders
//! left over refuses, naming them, rather than mixing a new version with an
//! old registration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::code;
use crate::diag::Diagnostic;

/// The program folders, in the order they are written.
const PROGRAM_DIRS: [&str; 2] = ["Connector", "Updater"];
/// Data folders the product creates and its uninstaller keeps.
const DATA_DIRS: [&str; 1] = ["identity"];
const PREVIOUS_DIR: &str = "Connector.previous";
const MANIFEST: &str = "install.json";

/// What a program folder says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    product: String,
    version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("folders of an earlier installation are left over in {}: {}", .dir.display(), .folders.join(", "))]
    Leftover { dir: PathBuf, folders: Vec<String> },
    #[error("version {version} is already installed in {}", .dir.display())]
    AlreadyInstalled { dir: PathBuf, version: String },
    #[error("nothing is installed in {}", .0.display())]
    NotInstalled(PathBuf),
    #[error("no previous version to roll back to in {}", .0.display())]
    NothingToRollBack(PathBuf),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl InstallError {
    /// What an administrator sees.
    pub fn diagnostic(&self) -> Diagnostic {
        match self {
            // Folder names relative to the install folder: the same on
            // every machine (and in every simulation trace).
            InstallError::Leftover { folders, .. } => Diagnostic::new(code::VER_UPGRADE_LEFTOVER_FOLDERS, None,
                format!(
                    "the install stopped: folders of an earlier installation are left over in the install folder: {}",
                    folders.join(", ")
                ),
                "an upgrade is: uninstall the connector, delete its folders, then install the latest version; delete the folders named and install again",
            ),
            _ => Diagnostic::new(code::VER_UPGRADE_INSTALL_FAILED, None,
                format!("the install failed: {self}"),
                "check the install folder's permissions and free space, then install again",
            ),
        }
    }
}

/// One installation folder.
#[derive(Debug, Clone)]
pub struct Installation {
    root: PathBuf,
}

impl Installation {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Installation { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    }

    fn read_manifest(dir: &Path) -> Result<Option<Manifest>, InstallError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(InstallError::Io { path, source: e }),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| InstallError::Corrupt { path, reason: e.to_string() })
    }

    fn write_manifest(dir: &Path, product: &str, version: &str) -> Result<(), InstallError> {
        std::fs::create_dir_all(dir).map_err(Self::io(dir))?;
        let manifest = Manifest { product: product.into(), version: version.into() };
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| InstallError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        std::fs::write(&path, text).map_err(Self::io(&path))
    }

    /// The connector version installed here, if any.
    pub fn installed_version(&self) -> Result<Option<String>, InstallError> {
        Ok(Self::read_manifest(&self.root.join(PROGRAM_DIRS[0]))?.map(|m| m.version))
    }

    /// The version a pending switch would roll back to, if a switch has not
    /// been confirmed yet.
    pub fn previous_version(&self) -> Result<Option<String>, InstallError> {
        Ok(Self::read_manifest(&self.root.join(PREVIOUS_DIR))?.map(|m| m.version))
    }

    /// This product's folders present in the install folder, by name.
    pub fn leftovers(&self) -> Vec<String> {
        PROGRAM_DIRS
            .iter()
            .chain(&DATA_DIRS)
            .chain(std::iter::once(&PREVIOUS_DIR))
            .filter(|d| self.root.join(d).exists())
            .map(|d| d.to_string())
            .collect()
    }

    /// A fresh install of `version`: both services' program folders.
    pub fn install(&self, version: &str) -> Result<(), InstallError> {
        if let Some(installed) = self.installed_version()? {
            return Err(InstallError::AlreadyInstalled { dir: self.root.clone(), version: installed });
        }
        let folders = self.leftovers();
        if !folders.is_empty() {
            return Err(InstallError::Leftover { dir: self.root.clone(), folders });
        }
        Self::write_manifest(&self.root.join(PROGRAM_DIRS[1]), "updater", version)?;
        // The connector's manifest last: its presence means "installed".
        Self::write_manifest(&self.root.join(PROGRAM_DIRS[0]), "connector", version)
    }

    /// Removes the program folders; data folders stay, as the product's
    /// uninstaller leaves them.
    pub fn uninstall(&self) -> Result<(), InstallError> {
        if self.installed_version()?.is_none() {
            return Err(InstallError::NotInstalled(self.root.clone()));
        }
        for d in PROGRAM_DIRS.iter().chain(std::iter::once(&PREVIOUS_DIR)) {
            remove_dir(&self.root.join(d))?;
        }
        Ok(())
    }

    /// Deletes every folder the product created (after an uninstall).
    pub fn delete_folders(&self) -> Result<(), InstallError> {
        for d in self.leftovers() {
            remove_dir(&self.root.join(d))?;
        }
        Ok(())
    }

    /// The updater's switch to `to`: the running version's folder becomes
    /// `Connector.previous` (for [`Installation::rollback`]) and `to` is
    /// written in its place. Data folders are untouched: the registration
    /// carries over.
    pub fn switch(&self, to: &str) -> Result<(), InstallError> {
        let current = self.root.join(PROGRAM_DIRS[0]);
        if self.installed_version()?.is_none() {
            return Err(InstallError::NotInstalled(self.root.clone()));
        }
        let previous = self.root.join(PREVIOUS_DIR);
        remove_dir(&previous)?;
        std::fs::rename(&current, &previous).map_err(Self::io(&current))?;
        Self::write_manifest(&current, "connector", to)
    }

    /// The new version is healthy: forget the previous one.
    pub fn confirm(&self) -> Result<(), InstallError> {
        remove_dir(&self.root.join(PREVIOUS_DIR))
    }

    /// Puts the previous version back; returns it.
    pub fn rollback(&self) -> Result<String, InstallError> {
        let previous = self.root.join(PREVIOUS_DIR);
        let version =
            Self::read_manifest(&previous)?.ok_or_else(|| InstallError::NothingToRollBack(self.root.clone()))?;
        let current = self.root.join(PROGRAM_DIRS[0]);
        remove_dir(&current)?;
        std::fs::rename(&previous, &current).map_err(Self::io(&previous))?;
        Ok(version.version)
    }
}

fn remove_dir(path: &Path) -> Result<(), InstallError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InstallError::Io { path: path.to_path_buf(), source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_by_the_book_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Installation::at(dir.path());
        assert_eq!(inst.installed_version().unwrap(), None);
        inst.install("1.5.3437.0").unwrap();
        assert_eq!(inst.installed_version().unwrap().as_deref(), Some("1.5.3437.0"));
        // Registration writes the data folder.
        std::fs::create_dir_all(dir.path().join("identity")).unwrap();
        assert!(matches!(inst.install("1.5.4522.0"), Err(InstallError::AlreadyInstalled { .. })));

        // Uninstall keeps data: installing now finds it.
        inst.uninstall().unwrap();
        assert_eq!(inst.installed_version().unwrap(), None);
        match inst.install("1.5.4522.0") {
            Err(InstallError::Leftover { folders, .. }) => assert_eq!(folders, vec!["identity".to_string()]),
            other => panic!("expected leftovers, got {other:?}"),
        }
        // The spec's way: delete the folders too.
        inst.delete_folders().unwrap();
        inst.install("1.5.4522.0").unwrap();
        assert_eq!(inst.installed_version().unwrap().as_deref(), Some("1.5.4522.0"));
    }

    #[test]
    fn switch_then_rollback_or_confirm() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Installation::at(dir.path());
        inst.install("1.5.3437.0").unwrap();
        inst.switch("1.5.4522.0").unwrap();
        assert_eq!(inst.installed_version().unwrap().as_deref(), Some("1.5.4522.0"));
        assert_eq!(inst.previous_version().unwrap().as_deref(), Some("1.5.3437.0"));
        assert_eq!(inst.rollback().unwrap(), "1.5.3437.0");
        assert_eq!(inst.installed_version().unwrap().as_deref(), Some("1.5.3437.0"));
        assert!(matches!(inst.rollback(), Err(InstallError::NothingToRollBack(_))));

        inst.switch("1.5.4522.0").unwrap();
        inst.confirm().unwrap();
        assert_eq!(inst.previous_version().unwrap(), None);
        assert_eq!(inst.installed_version().unwrap().as_deref(), Some("1.5.4522.0"));
    }

    #[test]
    fn a_damaged_manifest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Connector")).unwrap();
        std::fs::write(dir.path().join("Connector/install.json"), "{half").unwrap();
        let err = Installation::at(dir.path()).installed_version().unwrap_err();
        assert!(err.to_string().contains("install.json"), "{err}");
    }
}
