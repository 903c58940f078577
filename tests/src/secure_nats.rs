//! nats-servers configured like production ones: TLS (with client verification, or the TLS
//! handshake first), tokens, users, nkeys; and a throwaway certificate authority made with the
//! `openssl` command (Debian's `openssl` package, which `scripts/setup.sh` installs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::nats_server_bin;

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A CA, a server certificate for `127.0.0.1`/`localhost`, and a client certificate, as PEM
/// files in a temporary directory.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let dir = tempfile::Builder::new()
            .prefix("pyoco-test-certs-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("the openssl command (apt install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pyoco test CA",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ]);
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "pyoco client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        TestCerts { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.path("server-key.pem")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.path("client-key.pem")
    }
}

/// A nats-server with JetStream started from a configuration text (the `listen`,
/// `jetstream` and `server_name` lines are added), on a free loopback port; killed on drop.
pub struct ConfiguredNats {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ConfiguredNats {
    /// Start it and wait until its port accepts connections (it may not speak plain NATS:
    /// TLS first or credentials).
    pub fn start(config: &str) -> ConfiguredNats {
        let dir = tempfile::Builder::new()
            .prefix("pyoco-test-nats-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let store = dir.path().join("js");
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nserver_name: \"secure-{port}\"\n\
             jetstream {{ store_dir: {store:?} }}\n{config}\n"
        );
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, &text).unwrap();
        let log = std::fs::File::create(dir.path().join("nats.log")).unwrap();
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let mut nats = ConfiguredNats {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = nats.child.try_wait() {
                panic!("nats-server exited ({status}) with\n{text}\n{}", nats.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen:\n{}",
                nats.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `<scheme>://127.0.0.1:<port>`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for ConfiguredNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tls { … }` block for `certs`' server certificate, `extra` lines inside it.
pub fn tls_block(certs: &TestCerts, extra: &str) -> String {
    format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  timeout: 2\n  {extra}\n}}\n",
        certs.server_cert(),
        certs.server_key(),
        certs.ca()
    )
}

/// Write `text` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
