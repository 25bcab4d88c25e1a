//! moto's S3 server, started on 127.0.0.1 by the tests that need an
//! S3-compatible store (test.sh installs it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// moto's S3 server on a free port of 127.0.0.1, stopped on drop.
pub struct Moto {
    pub child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let (child, port) = super::start_on_free_port("moto", Duration::from_secs(30), |port| {
            Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("moto_server is not installed: run ./test.sh, which installs it, or pip install 'moto[server]'")
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Moto { child, endpoint };
        // Create the bucket with a plain S3 request (moto accepts unsigned ones).
        let r = super::request(&format!("127.0.0.1:{port}"), "PUT", "/weir-test", b"");
        assert!(r.status == 200, "creating the bucket: {} {}", r.status, r.text());
        if let Some(stderr) = moto.child.stderr.take() {
            std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a `weir` needs to reach the store with its credentials.
pub fn s3_env(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}
