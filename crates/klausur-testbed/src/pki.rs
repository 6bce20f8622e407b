//! Certificates for tests that speak TLS to an engine or a service: a root CA of their own and
//! a server certificate it issued for `localhost` and `127.0.0.1`, as PEM files, so that a
//! client checks the server's certificate exactly as it would in production (against the
//! operator's CA), and a second, unrelated CA serves as the negative control.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// The PEM files [`issue`] wrote.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The root CA's certificate: what a client is told to trust.
    pub ca: PathBuf,
    /// The server's certificate, for `localhost` and `127.0.0.1`, signed by the root.
    pub cert: PathBuf,
    /// The server certificate's private key (PKCS#8).
    pub key: PathBuf,
}

/// A root CA called `"<name> test root"` and a server certificate it issued, written to
/// `<dir>/<name>-root.pem`, `<name>-cert.pem` and `<name>-key.pem`.
pub fn issue(dir: &Path, name: &str) -> Result<Pki, String> {
    let fail = |what: &str, e: rcgen::Error| format!("test certificates ({what}): {e}");
    let mut root = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("root", e))?;
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name
        .push(DnType::CommonName, format!("{name} test root"));
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_key = KeyPair::generate().map_err(|e| fail("root key", e))?;
    let root = root.self_signed(&root_key).map_err(|e| fail("root", e))?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .map_err(|e| fail("server", e))?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().map_err(|e| fail("server key", e))?;
    let leaf = leaf
        .signed_by(&leaf_key, &root, &root_key)
        .map_err(|e| fail("server", e))?;
    let pki = Pki {
        ca: dir.join(format!("{name}-root.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    for (path, pem) in [
        (&pki.ca, root.pem()),
        (&pki.cert, leaf.pem()),
        (&pki.key, leaf_key.serialize_pem()),
    ] {
        std::fs::write(path, pem).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(pki)
}
