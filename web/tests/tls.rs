//! HTTPS: the real binary with a certificate, a real TLS client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use common::Weir;
use rustls::pki_types::{CertificateDer, ServerName};

fn https_get(addr: &str, path: &str, trust: &CertificateDer<'static>) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    out
}

#[test]
fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let tls = format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", cert_path.display(), key_path.display());
    let cfg = common::write_config(dir.path(), &tls);
    let weir = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    assert!(weir.base.starts_with("https://"), "{}", weir.base);
    let addr = weir.base.trim_start_matches("https://").to_string();
    let answer = https_get(&addr, "/healthz", cert.der());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = common::try_request(&addr, "GET", "/healthz", b"");
    assert!(plain.is_none(), "plain HTTP was answered over the TLS port");
    drop(weir);

    // A key file that is not a key stops start-up with a message naming it.
    std::fs::write(&key_path, "not a key").unwrap();
    let out =
        std::process::Command::new(common::BIN).args(["serve", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key.pem"), "{err}");
}
