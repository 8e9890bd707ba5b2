//! The server's secrets in its data directory: the webhook signing key (RSA, generated once
//! if none is given) and the cursor key (16 random bytes, generated once).
//!
//! Both are written with a temporary file, fsync and rename, readable by the owner only, so
//! a crash never leaves half a key and a restart keeps cursors and webhook signatures valid.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use inbox_wix::webhook::WebhookSigner;

/// The webhook signing key: a signer and the PEM of its public half.
pub struct SigningKey {
    /// Signs outgoing deliveries.
    pub signer: WebhookSigner,
    /// SPKI `PUBLIC KEY` PEM, as `GET /emulator/v1/public-key` serves it.
    pub public_pem: String,
    /// Where the private key was read from.
    pub path: PathBuf,
}

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a usable RSA private key in PEM form.
    #[error("{path} is not an RSA private key in PEM form (PKCS#8 or PKCS#1): {reason}")]
    NotAKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cursor key file is not 16 bytes.
    #[error(
        "{path} must hold exactly 16 bytes; delete it to make a new one (open cursors become invalid)"
    )]
    BadCursorKey {
        /// The file.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the
/// directory), readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Loads the signing key from `given`, or from `data/signing-key.pem`, generating that one
/// (RSA 2048) the first time.
pub fn signing_key(given: Option<&Path>, data: &Path) -> Result<(SigningKey, bool), KeyError> {
    let (path, generated) = match given {
        Some(p) => (p.to_owned(), false),
        None => {
            let p = data.join("signing-key.pem");
            if p.exists() {
                (p, false)
            } else {
                let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| KeyError::NotAKey {
                    path: p.clone(),
                    reason: format!("could not generate an RSA key: {e}"),
                })?;
                let der: Pkcs8V1Der<'static> = AsDer::<Pkcs8V1Der<'static>>::as_der(&pair)
                    .map_err(|e| KeyError::NotAKey {
                        path: p.clone(),
                        reason: format!("could not encode the new key: {e}"),
                    })?;
                let text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
                write_private(&p, text.as_bytes())?;
                (p, true)
            }
        }
    };
    let text = fs::read(&path).map_err(io(&path))?;
    let not_a_key = |reason: String| KeyError::NotAKey {
        path: path.clone(),
        reason,
    };
    let parsed = pem::parse(&text).map_err(|e| not_a_key(e.to_string()))?;
    let pair = match parsed.tag() {
        "PRIVATE KEY" => KeyPair::from_pkcs8(parsed.contents()),
        "RSA PRIVATE KEY" => KeyPair::from_der(parsed.contents()),
        other => return Err(not_a_key(format!("PEM block is {other:?}"))),
    }
    .map_err(|e| not_a_key(e.to_string()))?;
    let spki = pair
        .public_key()
        .as_der()
        .map_err(|e| not_a_key(e.to_string()))?;
    let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()));
    let signer = WebhookSigner::from_private_pem(&text).map_err(|e| not_a_key(e.to_string()))?;
    Ok((
        SigningKey {
            signer,
            public_pem,
            path,
        },
        generated,
    ))
}

/// The key that MACs paging cursors, from `data/cursor-key`, made once.
pub fn cursor_key(data: &Path) -> Result<[u8; 16], KeyError> {
    let path = data.join("cursor-key");
    if !path.exists() {
        let key: [u8; 16] = rand::random();
        write_private(&path, &key)?;
    }
    let bytes = fs::read(&path).map_err(io(&path))?;
    bytes
        .try_into()
        .map_err(|_| KeyError::BadCursorKey { path })
}
