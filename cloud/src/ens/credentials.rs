//! The AccessKey pair, read from a Kubernetes Secret; never printed.

use std::collections::BTreeMap;
use std::fmt;

/// Keys accepted in the Secret's data: Alibaba CCM's cloud-config names (seed 002) first,
/// then the kebab-case ones.
pub const ID_KEYS: [&str; 2] = ["accessKeyID", "access-key-id"];
pub const SECRET_KEYS: [&str; 2] = ["accessKeySecret", "access-key-secret"];

/// An AccessKey pair. `Debug` shows neither the secret nor more than the id's first four
/// characters, so logging a client or an error never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    access_key_secret: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("Secret {secret}: no key {keys:?}")]
    Missing {
        secret: String,
        keys: Vec<&'static str>,
    },
    #[error("Secret {secret}: key {key} is empty or not UTF-8")]
    Invalid { secret: String, key: &'static str },
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, access_key_secret: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            access_key_secret: access_key_secret.into(),
        }
    }

    /// From a Secret's `data` (already base64-decoded by the API client); `secret` names it
    /// (`namespace/name`) in errors, which never carry the values.
    pub fn from_secret_data(
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Credentials, CredentialsError> {
        let pick = |keys: [&'static str; 2]| -> Result<String, CredentialsError> {
            let (key, raw) = keys
                .iter()
                .find_map(|k| data.get(*k).map(|v| (*k, v)))
                .ok_or_else(|| CredentialsError::Missing {
                    secret: secret.to_string(),
                    keys: keys.to_vec(),
                })?;
            match std::str::from_utf8(raw).map(str::trim) {
                Ok(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(CredentialsError::Invalid {
                    secret: secret.to_string(),
                    key,
                }),
            }
        };
        Ok(Credentials::new(pick(ID_KEYS)?, pick(SECRET_KEYS)?))
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Only the signer reads this.
    pub(crate) fn secret(&self) -> &str {
        &self.access_key_secret
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.access_key_id.chars().take(4).collect();
        f.debug_struct("Credentials")
            .field("access_key_id", &format_args!("{shown}***"))
            .field("access_key_secret", &format_args!("***"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret_or_the_whole_id() {
        let c = Credentials::new("LTAI5tSecretIdValue", "HAeSverysecretvalue");
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("HAeS"), "{shown}");
        assert!(!shown.contains("LTAI5tSecret"), "{shown}");
        assert!(shown.contains("LTAI***"));
    }

    #[test]
    fn secret_data_keys_are_named_in_errors_without_values() {
        let mut data = BTreeMap::new();
        data.insert("accessKeyID".to_string(), b"LTAIabc".to_vec());
        let e = Credentials::from_secret_data("kube-system/ens", &data).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Secret kube-system/ens: no key [\"accessKeySecret\", \"access-key-secret\"]"
        );
        data.insert("access-key-secret".to_string(), b" s3cr3t\n".to_vec());
        let c = Credentials::from_secret_data("kube-system/ens", &data).unwrap();
        assert_eq!(c.secret(), "s3cr3t");
    }
}
