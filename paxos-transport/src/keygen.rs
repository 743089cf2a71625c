//! Key material: a cluster CA with per-node certificates (QUIC) and a cluster key (UDP).
//!
//! [`keygen_bundles`] is what an operator runs for a real cluster: one directory per node holding
//! only what that node needs, and the CA key apart from all of them:
//!
//! | path | content |
//! |---|---|
//! | `ca/ca.pem`, `ca/ca.key` | the cluster CA (keep `ca/` offline: it mints node identities) |
//! | `node-<id>/ca.pem` | the CA certificate the node trusts |
//! | `node-<id>/node-<id>.pem`, `.key` | the node's certificate (DNS name `node-<id>.paxos`) and key |
//! | `node-<id>/cluster.key` | the UDP transport's HMAC-SHA256 key (64 hex digits) |
//! | `client-<name>/ca.pem` | the CA certificate a client trusts (to verify the servers) |
//! | `client-<name>/client.pem`, `client.key` | the client's certificate (DNS name `client-<name>.paxos`, client authentication only) and key |
//!
//! A node's `keys_dir` is its bundle. [`keygen`] writes the same files flat into one directory,
//! CA key included: for local test clusters only, since every node reading it could mint any
//! identity. Both refuse to overwrite any existing file, set every mode explicitly (0600 for keys,
//! 0700 for bundle directories, whatever the umask), and issue certificates valid for
//! [`DEFAULT_VALID_DAYS`] (rotation: docs/security.md).

use crate::{node_name, TransportError};
use paxos_core::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;

/// How long issued certificates are valid, in days, unless told otherwise.
pub const DEFAULT_VALID_DAYS: u32 = 365;

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
    /// Validity of the certificates it issues, in days.
    valid_days: u32,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

/// Sets `params` valid from a day ago (clock skew) for `days` days.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(days));
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

/// The DNS name a client certificate of `name` carries: `client-<name>.paxos`.
pub fn client_cert_name(name: &str) -> String {
    format!("client-{name}.paxos")
}

/// Checks a client name: 1 to 32 lowercase ASCII letters, digits or `-`, not starting with `-`
/// (it becomes a directory name and part of a DNS name).
pub fn check_client_name(name: &str) -> Result<(), TransportError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(keys_err(format!(
            "client name {name:?}: use 1 to 32 of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

fn client_params(name: &str) -> Result<CertificateParams, TransportError> {
    check_client_name(name)?;
    let mut params = CertificateParams::new(vec![client_cert_name(name)]).map_err(keys_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("client-{name}"));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Client authentication only: a client certificate cannot stand in for a server.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<ClusterCa, TransportError> {
        let key = KeyPair::generate().map_err(keys_err)?;
        ClusterCa::from_key(key)
    }

    fn from_key(key: KeyPair) -> Result<ClusterCa, TransportError> {
        // The CA outlives the node certificates it issues: rotating those must not need it anew.
        let mut params = ca_params();
        validity(&mut params, 10 * DEFAULT_VALID_DAYS);
        let cert = params.self_signed(&key).map_err(keys_err)?;
        Ok(ClusterCa {
            cert,
            key,
            valid_days: DEFAULT_VALID_DAYS,
        })
    }

    /// Issues certificates valid for `days` days from now on.
    pub fn with_validity(mut self, days: u32) -> ClusterCa {
        self.valid_days = days;
        self
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
        let mut params = node_params(id)?;
        validity(&mut params, self.valid_days);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(keys_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a client certificate for `name` (see [`check_client_name`]) as
    /// `(certificate PEM, private key PEM)`: DNS name [`client_cert_name`], client
    /// authentication only.
    pub fn issue_client_pem(&self, name: &str) -> Result<(String, String), TransportError> {
        let key = KeyPair::generate().map_err(keys_err)?;
        let mut params = client_params(name)?;
        validity(&mut params, self.valid_days);
        let cert = params
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

/// Writes a new file (refusing to replace one) and sets its mode explicitly.
fn write_file(path: &Path, content: &[u8], private: bool) -> Result<(), TransportError> {
    use std::io::Write;
    let label = |e| create_err(path, e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(label)?;
    set_mode(path, if private { 0o600 } else { 0o644 })?;
    f.write_all(content).map_err(label)?;
    f.sync_all().map_err(label)
}

/// The error of creating `path`, saying so when it exists.
fn create_err(path: &Path, e: std::io::Error) -> TransportError {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        keys_err(format!(
            "{} exists: refusing to overwrite key material",
            path.display()
        ))
    } else {
        keys_err(format!("{}: {e}", path.display()))
    }
}

/// Writes `ca`'s certificate and key into `dir`.
fn write_ca(dir: &Path, ca: &ClusterCa) -> Result<(), TransportError> {
    write_file(&dir.join("ca.pem"), ca.cert_pem().as_bytes(), false)?;
    write_file(&dir.join("ca.key"), ca.key.serialize_pem().as_bytes(), true)
}

/// Issues node `id`'s certificate from `ca` and writes it and its key into `dir`.
fn write_node(dir: &Path, ca: &ClusterCa, id: NodeId) -> Result<(), TransportError> {
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
    )
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TransportError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| keys_err(format!("{}: {e}", path.display())))?;
    }
    let _ = (path, mode);
    Ok(())
}

fn check_nodes(nodes: &[NodeId]) -> Result<(), TransportError> {
    if nodes.is_empty() {
        return Err(keys_err("no nodes: a cluster needs at least one server"));
    }
    Ok(())
}

fn write_cluster_key(path: &Path, key: &[u8; 32]) -> Result<(), TransportError> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    write_file(path, format!("{hex}\n").as_bytes(), true)
}

/// Generates a cluster CA, a certificate and key per node and the UDP cluster key, and writes
/// them flat into `dir` (created if missing), CA key included: for local test clusters (see the
/// module documentation; a real cluster takes [`keygen_bundles`]).
pub fn keygen(dir: &Path, nodes: &[NodeId]) -> Result<(), TransportError> {
    check_nodes(nodes)?;
    std::fs::create_dir_all(dir).map_err(keys_err)?;
    let ca = ClusterCa::generate()?;
    write_ca(dir, &ca)?;
    for &id in nodes {
        write_node(dir, &ca, id)?;
    }
    write_cluster_key(&dir.join("cluster.key"), &rand::random())
}

/// Creates `dir` (refusing an existing one) with mode 0700.
fn new_private_dir(dir: &Path) -> Result<(), TransportError> {
    std::fs::create_dir(dir).map_err(|e| create_err(dir, e))?;
    set_mode(dir, 0o700)
}

/// Generates a cluster CA and one bundle per node under `out` (see the module documentation):
/// `out/ca/` holds the CA key and nothing else does; `out/node-<id>/` is node `id`'s `keys_dir`.
/// Node certificates are valid for `valid_days` days.
pub fn keygen_bundles(out: &Path, nodes: &[NodeId], valid_days: u32) -> Result<(), TransportError> {
    keygen_bundles_with_clients(out, nodes, &[], valid_days)
}

/// [`keygen_bundles`], and one client bundle `out/client-<name>/` per name in `clients`
/// (`ca.pem`, `client.pem`, `client.key`: what a client of the TLS client port needs).
pub fn keygen_bundles_with_clients(
    out: &Path,
    nodes: &[NodeId],
    clients: &[String],
    valid_days: u32,
) -> Result<(), TransportError> {
    check_nodes(nodes)?;
    for name in clients {
        check_client_name(name)?;
    }
    if valid_days == 0 {
        return Err(keys_err("certificates must be valid for at least one day"));
    }
    std::fs::create_dir_all(out).map_err(|e| keys_err(format!("{}: {e}", out.display())))?;
    let ca = ClusterCa::generate()?.with_validity(valid_days);
    let ca_dir = out.join("ca");
    new_private_dir(&ca_dir)?;
    write_ca(&ca_dir, &ca)?;
    let cluster_key: [u8; 32] = rand::random();
    for &id in nodes {
        let dir = out.join(format!("node-{}", id.0));
        new_private_dir(&dir)?;
        write_file(&dir.join("ca.pem"), ca.cert_pem().as_bytes(), false)?;
        write_node(&dir, &ca, id)?;
        write_cluster_key(&dir.join("cluster.key"), &cluster_key)?;
    }
    for name in clients {
        write_client_bundle(&out.join(format!("client-{name}")), &ca, name)?;
    }
    Ok(())
}

/// Issues a client certificate for `name` from `ca` and writes the client bundle `dir` (created,
/// refusing an existing one, mode 0700): `ca.pem`, `client.pem`, `client.key` (0600). With
/// [`ClusterCa::load`] on the offline `ca/` directory this adds a client to a running cluster.
pub fn write_client_bundle(dir: &Path, ca: &ClusterCa, name: &str) -> Result<(), TransportError> {
    let (cert, key) = ca.issue_client_pem(name)?;
    new_private_dir(dir)?;
    write_file(&dir.join("ca.pem"), ca.cert_pem().as_bytes(), false)?;
    write_file(&dir.join("client.pem"), cert.as_bytes(), false)?;
    write_file(&dir.join("client.key"), key.as_bytes(), true)
}

/// A client's TLS identity as read from its bundle by [`load_client_tls`].
pub type ClientTls = NodeTls;

/// Reads a client bundle (`ca.pem`, `client.pem`, `client.key`) from `dir`.
pub fn load_client_tls(dir: &Path) -> Result<ClientTls, TransportError> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| keys_err(format!("{}: {e}", dir.join(name).display())))
    };
    let ca = CertificateDer::from_pem_slice(&read("ca.pem")?).map_err(keys_err)?;
    let chain = CertificateDer::pem_slice_iter(&read("client.pem")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(keys_err)?;
    if chain.is_empty() {
        return Err(keys_err("client.pem holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("client.key")?).map_err(keys_err)?;
    Ok(NodeTls { ca, chain, key })
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
        // Existing key material is never replaced.
        let again = keygen(dir.path(), &[NodeId(0)]).unwrap_err().to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");
        assert!(keygen(&dir.path().join("none"), &[]).is_err());
    }

    #[test]
    fn bundles_hold_only_their_node_and_the_ca_key_stays_apart() {
        use std::os::unix::fs::PermissionsExt;
        let out = tempfile::tempdir().unwrap();
        keygen_bundles(out.path(), &[NodeId(0), NodeId(1), NodeId(2)], 30).unwrap();
        for id in 0..3u32 {
            let dir = out.path().join(format!("node-{id}"));
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            let want = vec![
                "ca.pem".to_owned(),
                "cluster.key".to_owned(),
                format!("node-{id}.key"),
                format!("node-{id}.pem"),
            ];
            assert_eq!(names, want, "node {id}'s bundle");
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(format!("node-{id}.key"))), 0o600);
            let tls = load_node_tls(&dir, NodeId(id)).unwrap();
            assert_eq!(tls.chain.len(), 1);
            assert!(ClusterCa::load(&dir).is_err(), "no CA key in a node bundle");
        }
        assert_eq!(
            load_cluster_key(&out.path().join("node-0")).unwrap(),
            load_cluster_key(&out.path().join("node-2")).unwrap()
        );
        ClusterCa::load(&out.path().join("ca")).unwrap();
        let again = keygen_bundles(out.path(), &[NodeId(0)], 30)
            .unwrap_err()
            .to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");
        assert!(keygen_bundles(&out.path().join("x"), &[], 30).is_err());
        assert!(keygen_bundles(&out.path().join("y"), &[NodeId(0)], 0).is_err());
    }

    #[test]
    fn client_bundles_name_their_client_and_refuse_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let out = tempfile::tempdir().unwrap();
        let clients = vec!["alice".to_owned(), "bob-2".to_owned()];
        keygen_bundles_with_clients(out.path(), &[NodeId(0)], &clients, 30).unwrap();
        let dir = out.path().join("client-alice");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ca.pem", "client.key", "client.pem"]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("client.key")), 0o600);
        let tls = load_client_tls(&dir).unwrap();
        let cert = webpki::EndEntityCert::try_from(&tls.chain[0]).unwrap();
        let dns: Vec<&str> = cert.valid_dns_names().collect();
        assert_eq!(dns, ["client-alice.paxos"]);
        // Client authentication only: not usable as a server certificate.
        let anchors = [webpki::anchor_from_trusted_cert(&tls.ca)
            .unwrap()
            .to_owned()];
        assert!(!cert_ok(
            &tls.chain[0],
            &anchors,
            rustls::pki_types::UnixTime::now()
        ));
        // More clients later, from the offline CA, with the same refusal to overwrite.
        let ca = ClusterCa::load(&out.path().join("ca")).unwrap();
        write_client_bundle(&out.path().join("client-carol"), &ca, "carol").unwrap();
        let again = write_client_bundle(&dir, &ca, "alice")
            .unwrap_err()
            .to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");
        for bad in ["", "Alice", "-x", "a/b", &"x".repeat(33)] {
            assert!(check_client_name(bad).is_err(), "{bad:?}");
        }
        let bad = vec!["../x".to_owned()];
        assert!(
            keygen_bundles_with_clients(&out.path().join("z"), &[NodeId(0)], &bad, 30).is_err()
        );
    }

    #[test]
    fn node_certificates_expire() {
        let ca = ClusterCa::generate().unwrap().with_validity(30);
        let (pem, _) = ca.issue_pem(NodeId(3)).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        // The validity is checked by verifying at two instants (rustls-webpki).
        let anchors = [webpki::anchor_from_trusted_cert(&ca.cert_der())
            .unwrap()
            .to_owned()];
        let verify = |days: u64| {
            let at = rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    + std::time::Duration::from_secs(days * 86_400),
            );
            cert_ok(&der, &anchors, at)
        };
        assert!(verify(0), "valid now");
        assert!(!verify(31), "expired after 30 days");
    }

    fn cert_ok(
        der: &CertificateDer<'_>,
        anchors: &[rustls::pki_types::TrustAnchor<'_>],
        at: rustls::pki_types::UnixTime,
    ) -> bool {
        let cert = webpki::EndEntityCert::try_from(der).unwrap();
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            anchors,
            &[],
            at,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .is_ok()
    }
}
