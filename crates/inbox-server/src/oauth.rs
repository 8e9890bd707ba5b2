//! Wix's OAuth token endpoint, emulated: `POST /oauth2/token` with `grant_type:
//! client_credentials`, an app's id and secret and an `instance_id` (a site) answers an access
//! token bound to that app and that site, which Wix's SDK (`AppStrategy({appId, appSecret,
//! instanceId})`) then sends as `Authorization` on every call; the call is made as the app, on
//! that site.
//!
//! Apps are registered at start (`inboxd serve --app APP_ID:SECRET`). Tokens are stateless:
//! `base64url(JSON {app, site, exp})` `.` `base64url(HMAC-SHA256)`, keyed by a key derived
//! from the server's cursor key (kept in the data directory or the shared database), so they
//! hold across restarts and across processes on one database, and cannot be forged or moved
//! to another site.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use inbox_core::{AppId, SiteId};
use serde::{Deserialize, Serialize};

/// How long a token is valid, in seconds (Wix's app tokens last four hours).
pub const TOKEN_TTL_SECS: i64 = 4 * 3600;

/// Issues and checks access tokens.
pub struct TokenIssuer {
    key: aws_lc_rs::hmac::Key,
    apps: Vec<(AppId, String)>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    app: AppId,
    site: String,
    exp: i64,
}

/// Why no token was issued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `client_credentials`.
    #[error("grant_type must be client_credentials; got {0:?}")]
    GrantType(String),
    /// No `instance_id`: the site the token is for.
    #[error("instance_id is required: the site the token is for")]
    NoInstance,
    /// The app is not registered, or the secret is not its secret.
    #[error("unknown app or wrong secret")]
    BadClient,
}

/// What a token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The app.
    pub app: AppId,
    /// The site.
    pub site: SiteId,
}

impl TokenIssuer {
    /// An issuer for `apps` (id and secret), its key derived from `cursor_key`.
    pub fn new(cursor_key: [u8; 16], apps: Vec<(AppId, String)>) -> Self {
        let derive = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &cursor_key);
        let derived = aws_lc_rs::hmac::sign(&derive, b"inboxd oauth2 access tokens");
        TokenIssuer {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, derived.as_ref()),
            apps,
        }
    }

    /// Whether any app is registered.
    pub fn has_apps(&self) -> bool {
        !self.apps.is_empty()
    }

    /// A token for the client credentials, valid from `now` (seconds since the epoch).
    pub fn issue(
        &self,
        grant_type: &str,
        client_id: &str,
        client_secret: &str,
        instance_id: &str,
        now: i64,
    ) -> Result<String, TokenError> {
        if grant_type != "client_credentials" {
            return Err(TokenError::GrantType(grant_type.to_owned()));
        }
        if instance_id.trim().is_empty() {
            return Err(TokenError::NoInstance);
        }
        let app = uuid::Uuid::parse_str(client_id.trim())
            .ok()
            .map(AppId::from_uuid)
            .filter(|id| {
                self.apps.iter().any(|(a, secret)| {
                    a == id
                        && aws_lc_rs::constant_time::verify_slices_are_equal(
                            secret.as_bytes(),
                            client_secret.as_bytes(),
                        )
                        .is_ok()
                })
            })
            .ok_or(TokenError::BadClient)?;
        let claims = Claims {
            app,
            site: instance_id.trim().to_owned(),
            exp: now.saturating_add(TOKEN_TTL_SECS),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = aws_lc_rs::hmac::sign(&self.key, body.as_bytes());
        Ok(format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }

    /// What `token` grants, if it is one of ours and not expired at `now`.
    pub fn check(&self, token: &str, now: i64) -> Option<Grant> {
        let (body, tag) = token.trim().split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        aws_lc_rs::hmac::verify(&self.key, body.as_bytes(), &tag).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (claims.exp > now).then(|| Grant {
            app: claims.app,
            site: SiteId::new(claims.site),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(
            [3; 16],
            vec![(AppId::from_uuid(uuid::Uuid::from_u128(1)), "s3cret".into())],
        )
    }

    const APP: &str = "00000000-0000-0000-0000-000000000001";

    #[test]
    fn a_token_grants_its_app_and_site_until_it_expires() {
        let i = issuer();
        let t = i
            .issue("client_credentials", APP, "s3cret", "site-1", 100)
            .unwrap();
        let grant = i.check(&t, 101).unwrap();
        assert_eq!(grant.site, SiteId::new("site-1"));
        assert_eq!(grant.app.to_string(), APP);
        assert_eq!(i.check(&t, 100 + TOKEN_TTL_SECS), None, "expired");
        // Another key does not accept it; a changed body does not verify.
        assert_eq!(TokenIssuer::new([4; 16], Vec::new()).check(&t, 101), None);
        let (body, tag) = t.split_once('.').unwrap();
        let mut forged = body.to_owned();
        forged.push('A');
        assert_eq!(i.check(&format!("{forged}.{tag}"), 101), None);
        assert_eq!(i.check("not a token", 101), None);
    }

    #[test]
    fn bad_credentials_get_no_token() {
        let i = issuer();
        assert_eq!(
            i.issue("client_credentials", APP, "wrong", "s", 0),
            Err(TokenError::BadClient)
        );
        assert_eq!(
            i.issue("client_credentials", "nope", "s3cret", "s", 0),
            Err(TokenError::BadClient)
        );
        assert_eq!(
            i.issue("password", APP, "s3cret", "s", 0),
            Err(TokenError::GrantType("password".into()))
        );
        assert_eq!(
            i.issue("client_credentials", APP, "s3cret", " ", 0),
            Err(TokenError::NoInstance)
        );
    }
}
