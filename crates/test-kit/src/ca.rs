//! A private certificate authority and a certificate it signed for
//! `localhost`, as PEM files, for the TLS tests of both services and of
//! their brokers.

use service_kit::tls::TlsFiles;
use std::path::PathBuf;

/// The CA's certificate and the server's certificate and key, in a
/// temporary folder of their own.
pub struct TestCa {
    /// Holds the files; removed when dropped.
    pub dir: tempfile::TempDir,
    /// `ca.pem`, what a client trusts (`AUDIT_CA_FILE`, `MQTT_CA_FILE`).
    pub ca: PathBuf,
    pub ca_pem: String,
    /// `cert.pem` (for `localhost`) and `key.pem`, what a server serves.
    pub files: TlsFiles,
}

/// A fresh CA and certificate; panics when it cannot write them (a test
/// without them must fail).
pub fn test_ca() -> TestCa {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let key = rcgen::KeyPair::generate().expect("a server key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server parameters")
        .signed_by(&key, &ca, &ca_key)
        .expect("a server certificate");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let ca_path = dir.path().join("ca.pem");
    for (path, pem) in [
        (&ca_path, ca.pem()),
        (&files.cert, cert.pem()),
        (&files.key, key.serialize_pem()),
    ] {
        std::fs::write(path, pem).expect("a PEM file written");
    }
    TestCa {
        dir,
        ca: ca_path,
        ca_pem: ca.pem(),
        files,
    }
}
