//! Reaching registries over the OCI distribution API (oci-client): which are plain HTTP and
//! which extra CA is trusted, fetching an image's manifest checked against the digest it is
//! pinned to (following an index to this machine's platform), and what a registry's error
//! means for the operator.

use edgefleet_common::manifest::RegistryCredential;
use edgefleet_common::module_image::{ImageReference, ImageReferenceError, media_type};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{ImageIndexEntry, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::images::pull_error::{PullCause, PullError, pull_error};
use sha2::{Digest as _, Sha256};

/// How the agent reaches registries: which are plain HTTP, which extra CA it trusts.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    pub insecure: Vec<String>,
    pub extra_ca_pem: Option<Vec<u8>>,
}

/// The image manifest, following an index to the entry for this machine when needed (the
/// entry's digest and bytes are returned with it).
pub(crate) async fn image_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    raw: &[u8],
    classify: &impl Fn(oci_client::errors::OciDistributionError) -> PullCause,
) -> Result<(OciImageManifest, Option<(String, Vec<u8>)>), PullCause> {
    let index = match parse_manifest(raw)? {
        ManifestDocument::Image(m) => return Ok((*m, None)),
        ManifestDocument::Index(index) => index,
    };
    let entry = platform_entry(&index)?;
    let by_digest = reference.clone_with_digest(entry.digest.clone());
    let (raw, _) = client
        .pull_manifest_raw(
            &by_digest,
            auth,
            &[media_type::OCI_MANIFEST, media_type::DOCKER_MANIFEST],
        )
        .await
        .map_err(classify)?;
    let actual = sha256_hex(&raw);
    if actual != entry.digest {
        return Err(PullCause::DigestMismatch {
            what: "the platform manifest".into(),
            expected: entry.digest.clone(),
            actual,
        });
    }
    let manifest = serde_json::from_slice(&raw)
        .map_err(|e| PullCause::Registry(format!("invalid image manifest: {e}")))?;
    Ok((manifest, Some((entry.digest.clone(), raw.to_vec()))))
}

/// The extra CA file that `registry.ca_file` names could not be read.
#[derive(Debug, thiserror::Error)]
#[error("config field `registry.ca_file` {path}: {source}")]
pub struct CaFileError {
    pub path: String,
    pub source: std::io::Error,
}

impl RegistryAccess {
    /// The registry settings of `config`, with its extra CA file read.
    pub fn from_config(config: &crate::config::AgentConfig) -> Result<Self, CaFileError> {
        let ca_file = &config.registry.ca_file;
        let extra_ca_pem = if ca_file.is_empty() {
            None
        } else {
            Some(std::fs::read(ca_file).map_err(|source| CaFileError {
                path: ca_file.clone(),
                source,
            })?)
        };
        Ok(Self {
            insecure: config.registry.insecure.clone(),
            extra_ca_pem,
        })
    }

    fn client(&self) -> Client {
        edgefleet_transport::install_crypto_provider();
        let mut config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure.clone()),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        if let Some(pem) = &self.extra_ca_pem {
            config
                .extra_root_certificates
                .push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                });
        }
        Client::new(config)
    }

    /// Fetches the image manifest `image` is pinned to and checks its digest: the registry
    /// answered and the credentials work.
    pub(crate) async fn pinned_manifest(
        &self,
        image: &str,
        credential: Option<(&RegistryCredential, &str)>,
    ) -> Result<Fetched, PullError> {
        let fail = |cause| pull_error(image, cause);
        // Parsed here rather than by oci-client's Reference::from_str, whose regular
        // expression leaves ~12 MiB of heap behind on a device.
        let parsed: ImageReference = image
            .parse()
            .map_err(|e: ImageReferenceError| fail(PullCause::BadReference(e.to_string())))?;
        let pinned = parsed
            .digest
            .clone()
            .ok_or_else(|| fail(PullCause::NotPinned))?;
        let reference = Reference::with_digest(parsed.registry, parsed.repository, pinned.clone());
        let (auth, who) = match credential {
            Some((c, password)) => (
                RegistryAuth::Basic(c.username.clone(), password.to_owned()),
                format!("user {:?}", c.username),
            ),
            None => (RegistryAuth::Anonymous, "anonymous access".to_owned()),
        };
        let client = self.client();
        let accepted = [
            media_type::OCI_MANIFEST,
            media_type::DOCKER_MANIFEST,
            media_type::OCI_INDEX,
            media_type::DOCKER_MANIFEST_LIST,
        ];
        let (raw, _) = client
            .pull_manifest_raw(&reference, &auth, &accepted)
            .await
            .map_err(|e| fail(classify(e, &reference, &who)))?;
        let actual = sha256_hex(&raw);
        if actual != pinned {
            return Err(fail(PullCause::DigestMismatch {
                what: "the image manifest".into(),
                expected: pinned,
                actual,
            }));
        }
        Ok(Fetched {
            client,
            reference,
            auth,
            who,
            pinned,
            raw: raw.to_vec(),
        })
    }

    /// Checks that `image` can be pulled with `credential` (the registry answers, the
    /// credentials are accepted, the digest matches) without downloading any layer, and
    /// returns the bytes of its config and layers.
    pub async fn image_bytes(
        &self,
        image: &str,
        credential: Option<(&RegistryCredential, &str)>,
    ) -> Result<u64, PullError> {
        let f = self.pinned_manifest(image, credential).await?;
        let classify = |e| classify(e, &f.reference, &f.who);
        let (manifest, _) = image_manifest(&f.client, &f.reference, &f.auth, &f.raw, &classify)
            .await
            .map_err(|cause| pull_error(image, cause))?;
        Ok(std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .map(|d| d.size.max(0) as u64)
            .sum())
    }
}

/// An image manifest, or an index of them (one per platform).
pub(crate) enum ManifestDocument {
    Image(Box<OciImageManifest>),
    Index(OciImageIndex),
}

pub(crate) fn parse_manifest(raw: &[u8]) -> Result<ManifestDocument, PullCause> {
    let value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| PullCause::Registry(format!("manifest is not JSON: {e}")))?;
    if value.get("manifests").is_none() {
        return serde_json::from_value(value)
            .map(|m| ManifestDocument::Image(Box::new(m)))
            .map_err(|e| PullCause::Registry(format!("invalid image manifest: {e}")));
    }
    serde_json::from_value(value)
        .map(ManifestDocument::Index)
        .map_err(|e| PullCause::Registry(format!("invalid image index: {e}")))
}

/// The entry of `index` for this machine (its first entry when none names the platform).
pub(crate) fn platform_entry(index: &OciImageIndex) -> Result<&ImageIndexEntry, PullCause> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.architecture.to_string() == arch)
        })
        .or_else(|| index.manifests.first())
        .ok_or_else(|| PullCause::NotFound("the image index lists no manifests".into()))
}

/// A manifest fetched and checked against its pin, with what the rest of a pull needs.
pub(crate) struct Fetched {
    pub(crate) client: Client,
    pub(crate) reference: Reference,
    pub(crate) auth: RegistryAuth,
    /// Who the registry was asked as, for error messages.
    pub(crate) who: String,
    pub(crate) pinned: String,
    pub(crate) raw: Vec<u8>,
}

/// What an oci-client error means for the operator.
pub(crate) fn classify(
    e: oci_client::errors::OciDistributionError,
    reference: &Reference,
    who: &str,
) -> PullCause {
    use oci_client::errors::OciDistributionError as E;
    let missing = || {
        PullCause::NotFound(format!(
            "{} does not exist in the registry",
            reference.whole()
        ))
    };
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => PullCause::Unauthorized {
            who: who.to_owned(),
        },
        E::ImageManifestNotFoundError(m) => PullCause::NotFound(m),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                let code = format!("{:?}", x.code);
                code.contains("Unknown") || code.contains("NotFound")
            }) =>
        {
            missing()
        }
        E::ServerError { code: 404, .. } => missing(),
        other => PullCause::Registry(other.to_string()),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
