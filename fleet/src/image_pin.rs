//! Pinning image references to digests when a deployment is saved: a tag is looked up once in
//! its registry (a `HEAD` of the manifest, with the registry's stored credentials), so every
//! device runs the same image until the deployment is applied again.

use edgefleet_common::module_image::ImageReference;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

/// How the fleet logs in to a registry to look up a tag.
#[derive(Debug, Clone)]
pub struct RegistryLogin {
    /// The registry's name in the fleet (for messages).
    pub name: String,
    pub username: String,
    pub password: String,
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("image {image} (registry {registry}): {cause}")]
pub struct PinError {
    pub image: String,
    pub registry: String,
    pub cause: String,
}

/// `image` pinned by digest (`registry/repository:tag@sha256:...`); a reference that has a
/// digest already is returned as written, without contacting the registry. Without a tag,
/// `latest` is looked up.
pub async fn pin(image: &str, login: Option<&RegistryLogin>) -> Result<String, PinError> {
    let fail = |registry: &str, cause: String| PinError {
        image: image.to_owned(),
        registry: registry.to_owned(),
        cause,
    };
    let parsed: ImageReference = image.parse().map_err(|e| fail("-", format!("{e}")))?;
    let registry = match login {
        Some(login) => format!("{} at {}", login.name, parsed.registry),
        None => format!("{} (no stored credentials)", parsed.registry),
    };
    if parsed.digest.is_some() {
        return Ok(image.to_owned());
    }
    let tag = parsed.tag.clone().unwrap_or_else(|| "latest".to_owned());
    let (client, auth) = registry_client(login);
    let reference = Reference::with_tag(
        parsed.registry.clone(),
        parsed.repository.clone(),
        tag.clone(),
    );
    let digest = client
        .fetch_manifest_digest(&reference, &auth)
        .await
        .map_err(|e| fail(&registry, explain(e)))?;
    Ok(format!(
        "{}/{}:{tag}@{digest}",
        parsed.registry, parsed.repository
    ))
}

/// A registry client for `login`'s registry (plain HTTP when it is insecure) and how to
/// authenticate to it.
pub fn registry_client(login: Option<&RegistryLogin>) -> (oci_client::Client, RegistryAuth) {
    edgefleet_transport::install_crypto_provider();
    let client = oci_client::Client::new(ClientConfig {
        protocol: if login.is_some_and(|l| l.insecure) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    });
    let auth = match login {
        Some(l) => RegistryAuth::Basic(l.username.clone(), l.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    (client, auth)
}

fn not_found() -> String {
    "no such image or tag in the registry (was it pushed?)".to_owned()
}

fn explain(e: oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            "unauthorized: check the registry's user name and password (`edgefleet registry add`) \
             or name the registry of the module (`registry:`)"
                .to_owned()
        }
        E::ImageManifestNotFoundError(_) | E::ServerError { code: 404, .. } => not_found(),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
                )
            }) =>
        {
            not_found()
        }
        other => other.to_string(),
    }
}
