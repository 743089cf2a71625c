//! Key material: a cluster CA with per-node certificates (QUIC) and a cluster key (UDP).
//!
//! [`keygen`] writes, into one directory, the files the node binary reads:
//!
//! | file | content |
//! |---|---|
//! | `ca.pem` | the cluster CA certificate (every node trusts it) |
//! | `ca.key` | the CA's private key (keep offline; [`ClusterCa::load`] issues more nodes) |
//! | `node-<id>.pem` | node `<id>`'s certificate, DNS name `node-<id>.paxos`, signed by the CA |
//! | `node-<id>.key` | node `<id>`'s private key (PKCS#8 PEM) |
//! | `cluster.key` | 32 random bytes in hex: the UDP transport's HMAC-SHA256 key |
//!
//! Private keys are written with mode 0600.

use crate::{node_name, TransportError};
use paxos_core::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;

fn keys_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Keys(e.to_string())
}

/// A node's TLS identity: the cluster CA it trusts, its certificate and its key.
#[derive(Debug)]
pub struct NodeTls {
    /// The cluster CA certificate (DER).
    pub ca: CertificateDer<'static>,
    /// The node's certificate chain, leaf first (DER).
    pub chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeTls {
    fn clone(&self) -> Self {
        NodeTls {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A cluster certificate authority able to issue node certificates.
pub struct ClusterCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "paxos-sb cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn node_params(id: NodeId) -> Result<CertificateParams, TransportError> {
    let mut params = CertificateParams::new(vec![node_name(id)]).map_err(keys_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_name(id));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<ClusterCa, TransportError> {
        let key = KeyPair::generate().map_err(keys_err)?;
        ClusterCa::from_key(key)
    }

    fn from_key(key: KeyPair) -> Result<ClusterCa, TransportError> {
        let cert = ca_params().self_signed(&key).map_err(keys_err)?;
        Ok(ClusterCa { cert, key })
    }

    /// Reloads the CA from `ca.key` in `dir` (the certificate is rebuilt with the same name and
    /// key, so certificates it issues chain to the original `ca.pem`).
    pub fn load(dir: &Path) -> Result<ClusterCa, TransportError> {
        let pem = std::fs::read_to_string(dir.join("ca.key")).map_err(keys_err)?;
        ClusterCa::from_key(KeyPair::from_pem(&pem).map_err(keys_err)?)
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a certificate for node `id`, returning its TLS identity.
    pub fn issue(&self, id: NodeId) -> Result<NodeTls, TransportError> {
        let (cert_pem, key_pem) = self.issue_pem(id)?;
        Ok(NodeTls {
            ca: self.cert_der(),
            chain: vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(keys_err)?],
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(keys_err)?,
        })
    }

    /// Issues a certificate for node `id` as `(certificate PEM, private key PEM)`.
    pub fn issue_pem(&self, id: NodeId) -> Result<(String, String), TransportError> {
        let key = KeyPair::generate().map_err(keys_err)?;
        let cert = node_params(id)?
            .signed_by(&key, &self.cert, &self.key)
            .map_err(keys_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A self-signed certificate naming node `id` (no CA): what an impostor would present. The
/// returned identity trusts `trusted_ca`. For security tests.
pub fn self_signed_node(
    id: NodeId,
    trusted_ca: CertificateDer<'static>,
) -> Result<NodeTls, TransportError> {
    let key = KeyPair::generate().map_err(keys_err)?;
    let cert = node_params(id)?.self_signed(&key).map_err(keys_err)?;
    Ok(NodeTls {
        ca: trusted_ca,
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

fn write_file(path: &Path, content: &[u8], private: bool) -> Result<(), TransportError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    let mut f = options
        .open(path)
        .map_err(|e| keys_err(format!("{}: {e}", path.display())))?;
    f.write_all(content)
        .map_err(|e| keys_err(format!("{}: {e}", path.display())))
}

/// Generates a cluster CA, a certificate and key per node and the UDP cluster key, and writes
/// them into `dir` (created if missing) under the names in the module documentation.
pub fn keygen(dir: &Path, nodes: &[NodeId]) -> Result<(), TransportError> {
    std::fs::create_dir_all(dir).map_err(keys_err)?;
    let ca = ClusterCa::generate()?;
    write_file(&dir.join("ca.pem"), ca.cert_pem().as_bytes(), false)?;
    write_file(&dir.join("ca.key"), ca.key.serialize_pem().as_bytes(), true)?;
    for &id in nodes {
        let (cert, key) = ca.issue_pem(id)?;
        write_file(
            &dir.join(format!("node-{}.pem", id.0)),
            cert.as_bytes(),
            false,
        )?;
        write_file(
            &dir.join(format!("node-{}.key", id.0)),
            key.as_bytes(),
            true,
        )?;
    }
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    write_file(
        &dir.join("cluster.key"),
        format!("{hex}\n").as_bytes(),
        true,
    )
}

/// Reads node `id`'s TLS identity (`ca.pem`, `node-<id>.pem`, `node-<id>.key`) from `dir`.
pub fn load_node_tls(dir: &Path, id: NodeId) -> Result<NodeTls, TransportError> {
    let read =
        |name: String| std::fs::read(dir.join(&name)).map_err(|e| keys_err(format!("{name}: {e}")));
    let ca = CertificateDer::from_pem_slice(&read("ca.pem".into())?).map_err(keys_err)?;
    let chain = CertificateDer::pem_slice_iter(&read(format!("node-{}.pem", id.0))?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(keys_err)?;
    if chain.is_empty() {
        return Err(keys_err(format!("node-{}.pem holds no certificate", id.0)));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&read(format!("node-{}.key", id.0))?).map_err(keys_err)?;
    Ok(NodeTls { ca, chain, key })
}

/// Reads the UDP cluster key (`cluster.key`: 64 hex digits) from `dir`.
pub fn load_cluster_key(dir: &Path) -> Result<[u8; 32], TransportError> {
    let text = std::fs::read_to_string(dir.join("cluster.key")).map_err(keys_err)?;
    parse_hex_key(text.trim())
}

/// Parses 64 hex digits into a 32-byte key.
pub fn parse_hex_key(hex: &str) -> Result<[u8; 32], TransportError> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(keys_err("cluster key must be 64 hex digits"));
    }
    let digit = |c: u8| -> Result<u8, TransportError> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| keys_err("cluster key must be 64 hex digits"))
    };
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = digit(bytes[2 * i])? << 4 | digit(bytes[2 * i + 1])?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_loadable_files() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), &[NodeId(0), NodeId(1)]).unwrap();
        let tls = load_node_tls(dir.path(), NodeId(1)).unwrap();
        assert_eq!(tls.chain.len(), 1);
        let key = load_cluster_key(dir.path()).unwrap();
        assert_ne!(key, [0u8; 32]);
        let ca = ClusterCa::load(dir.path()).unwrap();
        ca.issue(NodeId(7)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("node-1.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(parse_hex_key("zz").is_err());
    }
}
