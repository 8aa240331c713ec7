//! The outcome of an import: the deployment with the registries its images come from and a
//! [`Note`] for every part of the file, or every problem that keeps it from importing. The
//! last step of the import checks what only the whole file tells (`--model` and `--set` names
//! the file does not use, placeholders left unfilled, credentials no image needs).

use std::collections::BTreeSet;

use edgefleet_common::fleet_api::DeploymentView;
use edgefleet_common::module_image::ImageReference;

use super::Importer;

/// Something said about one part of the file: what it maps to, or why it cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where in the file (`module tempSensor`, `route upstream`, `$edgeHub`).
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A registry the file's `registryCredentials` name and a module's image uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUse {
    pub credential: String,
    pub address: String,
}

/// A file read as a deployment.
#[derive(Debug, Clone)]
pub struct Imported {
    pub deployment: DeploymentView,
    /// Registries the deployment's images come from, as the file names them.
    pub registries: Vec<RegistryUse>,
    pub notes: Vec<Note>,
}

/// A file that cannot be imported: every problem found, and the notes so far.
#[derive(Debug, Clone)]
pub struct ImportFailure {
    pub problems: Vec<Note>,
    pub notes: Vec<Note>,
}

impl Importer<'_> {
    pub(super) fn finish(
        mut self,
        deployment: Option<DeploymentView>,
    ) -> Result<Imported, ImportFailure> {
        if self.module_versions {
            self.notes.push(Note {
                at: "modules' version".into(),
                message: "IoT Edge's informational module version; not needed (the pinned image identifies what runs)".into(),
            });
        }
        for module in self.settings.models.keys() {
            if deployment
                .as_ref()
                .is_none_or(|d| !d.modules.contains_key(module))
            {
                self.problem(
                    format!("--model {module}"),
                    "the file has no module of that name",
                );
            }
        }
        if deployment.as_ref().is_some_and(|d| d.modules.is_empty()) {
            self.problem("modules", "the file deploys no modules");
        }
        for (name, uses) in std::mem::take(&mut self.unresolved) {
            let mut listed: Vec<&str> = uses.iter().take(3).map(String::as_str).collect();
            let more = format!("{} more", uses.len().saturating_sub(3));
            if uses.len() > 3 {
                listed.push(&more);
            }
            self.problem(
                format!("placeholder {name}"),
                format!(
                    "not set (used by {}): give --set '{name}=VALUE'",
                    listed.join("; ")
                ),
            );
        }
        let unused: Vec<&String> = self
            .settings
            .vars
            .keys()
            .filter(|v| !self.used_vars.contains(*v))
            .collect();
        for var in unused {
            self.notes.push(Note {
                at: format!("--set {var}"),
                message: "not used: no imported value has that placeholder".into(),
            });
        }
        let (Some(deployment), true) = (deployment, self.problems.is_empty()) else {
            return Err(ImportFailure {
                problems: self.problems,
                notes: self.notes,
            });
        };
        let hosts: BTreeSet<String> = deployment
            .modules
            .values()
            .filter_map(|m| m.image())
            .filter_map(|i| i.parse::<ImageReference>().ok())
            .map(|r| r.registry)
            .collect();
        let mut registries = Vec::new();
        for credential in self.credentials {
            let at = format!("registryCredentials.{}", credential.name);
            if hosts.contains(&credential.address) {
                self.notes.push(Note {
                    at,
                    message: format!(
                        "images from {} are pulled with the fleet's registry of that address (`edgefleet registry add`); the file's username and password are not imported",
                        credential.address
                    ),
                });
                registries.push(RegistryUse {
                    credential: credential.name,
                    address: credential.address,
                });
            } else {
                self.notes.push(Note {
                    at,
                    message: format!(
                        "{} is the registry of no imported module's image; not used",
                        credential.address
                    ),
                });
            }
        }
        Ok(Imported {
            deployment,
            registries,
            notes: self.notes,
        })
    }
}
