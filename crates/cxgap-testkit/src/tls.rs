//! TLS for tests, for real: a certificate authority and the certificates it signs, made by
//! openssl, and a TLS terminator (socat) in front of a plaintext port — the shape of an
//! ingress or a Kafka listener with TLS. Nothing here is a stand-in for a TLS stack: the
//! client under test talks TLS to OpenSSL on the other end.

use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A certificate and its private key, both PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority in a directory: its certificate is what a client or a server
/// is told to trust.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    name: String,
    ca: Pair,
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (Debian package openssl; .ci/run installs it)")?;
    ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Pki {
    /// A new CA called `name`, its files in `dir` (prefixed with `name`).
    pub fn new(dir: &Path, name: &str) -> Result<Pki> {
        let ca = Pair { cert: dir.join(format!("{name}-ca.pem")), key: dir.join(format!("{name}-ca.key")) };
        let subject = format!("/CN={name} test CA");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subject];
        args.extend(EC);
        args.extend(["-keyout", path(&ca.key), "-out", path(&ca.cert)]);
        openssl(&args)?;
        Ok(Pki { dir: dir.to_path_buf(), name: name.to_string(), ca })
    }

    /// The CA's certificate (PEM): the file a peer trusts.
    pub fn ca(&self) -> &Path {
        &self.ca.cert
    }

    /// A server certificate for 127.0.0.1 and localhost, signed by this CA.
    pub fn server(&self, name: &str) -> Result<Pair> {
        self.sign(name, "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    }

    /// A client certificate (for mutual TLS) with common name `name`, signed by this CA.
    pub fn client(&self, name: &str) -> Result<Pair> {
        self.sign(name, &format!("/CN={name}"), "extendedKeyUsage=clientAuth")
    }

    fn sign(&self, name: &str, subject: &str, extension: &str) -> Result<Pair> {
        let stem = format!("{}-{name}", self.name);
        let pair = Pair { cert: self.dir.join(format!("{stem}.pem")), key: self.dir.join(format!("{stem}.key")) };
        let csr = self.dir.join(format!("{stem}.csr"));
        let mut args = vec!["req", "-new", "-nodes", "-subj", subject, "-addext", extension];
        args.extend(EC);
        args.extend(["-keyout", path(&pair.key), "-out", path(&csr)]);
        openssl(&args)?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&self.ca.cert),
            "-CAkey",
            path(&self.ca.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-out",
            path(&pair.cert),
        ])?;
        Ok(pair)
    }
}

impl Pair {
    /// The private key encrypted with `passphrase` (AES-256), beside the plain one: what a
    /// client is given with its key's password.
    pub fn encrypted_key(&self, passphrase: &str) -> Result<PathBuf> {
        let out = self.key.with_extension("encrypted.key");
        let pass = format!("pass:{passphrase}");
        openssl(&["pkey", "-in", path(&self.key), "-aes256", "-passout", &pass, "-out", path(&out)])?;
        Ok(out)
    }
}

/// socat terminating TLS on a port and forwarding in the clear; stopped on drop.
#[derive(Debug)]
pub struct Terminator {
    child: Child,
    port: u16,
}

impl Terminator {
    /// TLS on 127.0.0.1:`port` with `server`'s certificate, forwarded to 127.0.0.1:`to`.
    /// With `client_ca`, a client must present a certificate that CA signed (mutual TLS).
    pub fn start(port: u16, to: u16, server: &Pair, client_ca: Option<&Path>) -> Result<Terminator> {
        let verify = match client_ca {
            Some(ca) => format!("verify=1,cafile={}", path(ca)),
            None => "verify=0".to_string(),
        };
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
                path(&server.cert),
                path(&server.key)
            ))
            .arg(format!("TCP:127.0.0.1:{to}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running socat (Debian package socat; .ci/run installs it)")?;
        let mut t = Terminator { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = t.child.try_wait()? {
                bail!("socat exited before it listened on {port}: {status}");
            }
            if Instant::now() >= deadline {
                bail!("socat did not listen on {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(t)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
