//! Throw-away certificate authorities and leaf certificates for TLS stand-ins.
//!
//! Everything is generated in memory with rcgen for each test, so no key
//! material lives in the repository and no test depends on the system's
//! trust store. Hand roomgate the CA through `ca_file` (see
//! [`TestCa::pem_path`]); serve with a [`Leaf`] through
//! `StandIn::builder().tls(&leaf)`.
//!
//! Fault cases for later tests:
//! - unknown CA: serve `TestCa::new().localhost_leaf()` from a *second* CA and
//!   hand roomgate the first CA's PEM;
//! - expired: [`TestCa::expired_leaf`];
//! - wrong host: `ca.leaf(&["wrong.example"])`;
//! - self-signed: [`Leaf::self_signed`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Distinguishes CAs made in one test process, in their subject names and
/// in the PEM file names, so two CAs in one directory never overwrite each
/// other.
static NEXT_CA_ID: AtomicU64 = AtomicU64::new(1);

/// The crypto provider is passed explicitly rather than installed
/// process-wide, so the support code never races roomgate (or another test)
/// over `CryptoProvider::install_default`.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate authority that issues leaf certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    pem: String,
    id: u64,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A fresh CA with its own key; two `TestCa::new()` never trust each other.
    pub fn new() -> TestCa {
        let id = NEXT_CA_ID.fetch_add(1, Ordering::Relaxed);
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("roomgate test CA {id}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            id,
        }
    }

    /// The CA certificate in PEM form.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate in DER form.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Writes the CA certificate as PEM into `dir` (file name unique to this
    /// CA) and returns the file's path, for roomgate's `ca_file`.
    pub fn pem_path(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("test-ca-{}.pem", self.id));
        std::fs::write(&path, &self.pem).expect("write CA PEM");
        path
    }

    /// A leaf valid now for `names`; each name is an IP address SAN if it
    /// parses as one, a DNS SAN otherwise.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.issue(leaf_params(names))
    }

    /// The usual leaf for TLS stand-ins: `localhost` and `127.0.0.1`, so both
    /// `StandIn::url()` and `StandIn::ip_url()` verify.
    pub fn localhost_leaf(&self) -> Leaf {
        self.leaf(&["localhost", "127.0.0.1"])
    }

    /// A leaf for `names` whose validity ended years ago (2020-01-01 to
    /// 2021-01-01), signed by this CA so only the dates are wrong.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        let mut params = leaf_params(names);
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
        self.issue(params)
    }

    /// Root store that trusts only this CA.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("add CA to root store");
        roots
    }

    /// Client config trusting only this CA, offering HTTP/1.1 through ALPN.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn issue(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf::from_parts(&cert, &key)
    }
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(owned).expect("leaf names");
    params.distinguished_name = DistinguishedName::new();
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// A server certificate chain with its private key.
pub struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The leaf certificate as PEM (for tests that hand it to other programs).
    pub cert_pem: String,
    /// The private key as PKCS#8 PEM.
    pub key_pem: String,
}

impl Clone for Leaf {
    fn clone(&self) -> Self {
        Leaf {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl Leaf {
    /// A self-signed leaf for `names`, trusted by no `TestCa`.
    pub fn self_signed(names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = leaf_params(names)
            .self_signed(&key)
            .expect("self-sign leaf");
        Leaf::from_parts(&cert, &key)
    }

    /// A self-signed certificate for `names` that is also a CA
    /// (`CA:TRUE`), as `openssl req -x509` makes one by default, so that
    /// it serves as its own `ca_file`.
    pub fn self_signed_ca(names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params = leaf_params(names);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        let cert = params.self_signed(&key).expect("self-sign");
        Leaf::from_parts(&cert, &key)
    }

    fn from_parts(cert: &rcgen::Certificate, key: &KeyPair) -> Leaf {
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The certificate chain (leaf first).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Server config serving this leaf, HTTP/1.1 only (ALPN `http/1.1`),
    /// like a Jitsi nginx that roomgate talks HTTP/1.1 to.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("server certificate and key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
