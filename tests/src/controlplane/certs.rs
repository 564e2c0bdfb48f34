//! The control plane's keys and certificates, made with the `openssl` tool
//! for one test: a CA, the API server's serving certificate (for
//! 127.0.0.1), the admin's client certificate (group `system:masters`), and
//! the service-account signing key.

use std::path::{Path, PathBuf};

use crate::cmd;

/// Paths of everything generated, in the control plane's directory.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl Certs {
    /// Makes the keys; `extra_sans` (`IP:...`, `DNS:...`) go into the API
    /// server's certificate beside 127.0.0.1.
    pub fn generate(dir: &Path, extra_sans: &[String]) -> Self {
        let path = |name: &str| dir.join(name);
        let certs = Self {
            ca_cert: path("ca.crt"),
            ca_key: path("ca.key"),
            serving_cert: path("apiserver.crt"),
            serving_key: path("apiserver.key"),
            admin_cert: path("admin.crt"),
            admin_key: path("admin.key"),
            service_account_key: path("sa.key"),
            service_account_pub: path("sa.pub"),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=detour-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-keyout",
            s(&certs.ca_key),
            "-out",
            s(&certs.ca_cert),
        ]);
        let mut sans = String::from("IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc");
        for san in extra_sans {
            sans.push(',');
            sans.push_str(san);
        }
        certs.issue(
            "/CN=kube-apiserver",
            &format!(
                "subjectAltName={sans}\nextendedKeyUsage=serverAuth\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n"
            ),
            &certs.serving_key,
            &certs.serving_cert,
        );
        certs.issue(
            "/O=system:masters/CN=detour-test-admin",
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
            &certs.admin_key,
            &certs.admin_cert,
        );
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            s(&certs.service_account_key),
        ]);
        openssl(&[
            "pkey",
            "-in",
            s(&certs.service_account_key),
            "-pubout",
            "-out",
            s(&certs.service_account_pub),
        ]);
        certs
    }

    /// A key and a certificate for `subject`, signed by the CA.
    pub fn issue(&self, subject: &str, extensions: &str, key: &Path, cert: &Path) {
        let csr = key.with_extension("csr");
        let ext = key.with_extension("ext");
        std::fs::write(&ext, extensions).expect("write extensions");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            s(key),
            "-out",
            s(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.ca_cert),
            "-CAkey",
            s(&self.ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            s(&ext),
            "-out",
            s(cert),
        ]);
    }
}

fn openssl(args: &[&str]) {
    cmd::run("openssl", args);
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
