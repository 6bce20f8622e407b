//! Identity credentials issued by klausur's identity CA.
//!
//! A [`Credential`] binds a user id, a display name, a [`ParticipantKind`] and the device's
//! Ed25519 signing key (the key that signs the device's MLS leaf) for a short validity window.
//! The CA signs the credential's canonical encoding with its own Ed25519 key; the result is a
//! [`SignedCredential`], carried inside MLS as a credential of type
//! [`KLAUSUR_CREDENTIAL_TYPE`].
//!
//! # Canonical encoding (version 1)
//!
//! All integers big-endian; strings UTF-8, at most 65535 bytes:
//!
//! ```text
//! "klausur-credential-v1"        21 bytes, domain separation
//! u16 len || user_id
//! u16 len || display_name
//! u8  kind                       0 staff, 1 invited_guest, 2 guest, 3 phone_gateway
//! [u8; 32] device_public_key     Ed25519
//! u64 not_before                 seconds since the Unix epoch, inclusive
//! u64 not_after                  seconds since the Unix epoch, exclusive
//! ```
//!
//! A [`SignedCredential`] is that encoding followed by the CA's 64-byte Ed25519 signature over
//! it. Decoding is strict: trailing bytes, unknown kinds, invalid UTF-8 and
//! `not_before > not_after` are rejected, so each credential has exactly one encoding.

use std::time::Duration;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::CredentialError;

/// MLS credential type (private-use range of RFC 9420's registry) under which a
/// [`SignedCredential`] travels in key packages and leaf nodes.
pub const KLAUSUR_CREDENTIAL_TYPE: u16 = 0xF4B1;

const MAGIC: &[u8] = b"klausur-credential-v1";
const SIGNATURE_LEN: usize = 64;

/// What kind of participant a credential describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantKind {
    /// A member of the organisation's staff.
    Staff,
    /// A guest named on the meeting's invitation.
    InvitedGuest,
    /// A guest admitted from the lobby.
    Guest,
    /// A phone dial-in gateway.
    PhoneGateway,
}

impl ParticipantKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::Staff => 0,
            Self::InvitedGuest => 1,
            Self::Guest => 2,
            Self::PhoneGateway => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Staff,
            1 => Self::InvitedGuest,
            2 => Self::Guest,
            3 => Self::PhoneGateway,
            _ => return None,
        })
    }
}

/// The claims of an identity credential (unsigned).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Credential {
    /// Stable user id (opaque to this crate).
    pub user_id: String,
    /// Name shown to other participants.
    pub display_name: String,
    /// Kind of participant.
    pub kind: ParticipantKind,
    /// The device's Ed25519 public key; it must be the MLS leaf's signature key.
    pub device_public_key: [u8; 32],
    /// Valid from (inclusive), seconds since the Unix epoch.
    pub not_before: u64,
    /// Valid until (exclusive), seconds since the Unix epoch.
    pub not_after: u64,
}

impl Credential {
    /// The canonical encoding (see the module docs). Fails only if a string is longer than
    /// 65535 bytes.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, CredentialError> {
        let mut out = Vec::with_capacity(
            MAGIC.len() + 4 + self.user_id.len() + self.display_name.len() + 1 + 32 + 16,
        );
        out.extend_from_slice(MAGIC);
        put_str(&mut out, &self.user_id)?;
        put_str(&mut out, &self.display_name)?;
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.device_public_key);
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        Ok(out)
    }

    /// Strictly decodes a canonical encoding; the whole input must be consumed.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, CredentialError> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(CredentialError::Malformed("bad magic"));
        }
        let user_id = r.string()?;
        let display_name = r.string()?;
        let kind = ParticipantKind::from_byte(r.take(1)?[0])
            .ok_or(CredentialError::Malformed("unknown participant kind"))?;
        let mut device_public_key = [0u8; 32];
        device_public_key.copy_from_slice(r.take(32)?);
        let not_before = r.u64()?;
        let not_after = r.u64()?;
        if !r.0.is_empty() {
            return Err(CredentialError::Malformed("trailing bytes"));
        }
        if not_before > not_after {
            return Err(CredentialError::Malformed("not_before after not_after"));
        }
        Ok(Self {
            user_id,
            display_name,
            kind,
            device_public_key,
            not_before,
            not_after,
        })
    }

    /// Checks the validity window against `now` (time since the Unix epoch).
    pub fn check_validity(&self, now: Duration) -> Result<(), CredentialError> {
        let now = now.as_secs();
        if now < self.not_before {
            Err(CredentialError::NotYetValid)
        } else if now >= self.not_after {
            Err(CredentialError::Expired)
        } else {
            Ok(())
        }
    }
}

/// A [`Credential`] with the identity CA's signature over its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedCredential {
    /// The claims.
    pub credential: Credential,
    /// Ed25519 signature of the CA over `credential.to_canonical_bytes()`.
    #[serde(with = "sig_serde")]
    pub signature: [u8; 64],
}

mod sig_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: Vec<u8> = Deserialize::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("signature must be 64 bytes"))
    }
}

impl SignedCredential {
    /// Canonical encoding followed by the 64-byte signature. This is what is carried in MLS.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CredentialError> {
        let mut out = self.credential.to_canonical_bytes()?;
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// Strict inverse of [`Self::to_bytes`]. Does not verify the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CredentialError> {
        if bytes.len() < SIGNATURE_LEN {
            return Err(CredentialError::Malformed("too short"));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let credential = Credential::from_canonical_bytes(body)?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig);
        Ok(Self {
            credential,
            signature,
        })
    }

    /// Verifies the CA signature and the validity window at `now` (time since the Unix epoch).
    pub fn verify(
        &self,
        ca_public_key: &VerifyingKey,
        now: Duration,
    ) -> Result<(), CredentialError> {
        let body = self.credential.to_canonical_bytes()?;
        let sig = Signature::from_bytes(&self.signature);
        ca_public_key
            .verify_strict(&body, &sig)
            .map_err(|_| CredentialError::BadSignature)?;
        self.credential.check_validity(now)
    }
}

/// The identity CA: holds the CA signing key (zeroized on drop) and issues credentials.
pub struct IdentityCa {
    key: SigningKey,
}

impl IdentityCa {
    /// Wraps the CA's Ed25519 signing key.
    pub fn new(signing_key: SigningKey) -> Self {
        Self { key: signing_key }
    }

    /// The public key clients trust.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Issues a credential. Times are seconds since the Unix epoch (`not_after` exclusive).
    pub fn issue(
        &self,
        user_id: &str,
        display_name: &str,
        kind: ParticipantKind,
        device_public_key: &VerifyingKey,
        not_before: u64,
        not_after: u64,
    ) -> Result<SignedCredential, CredentialError> {
        if not_before > not_after {
            return Err(CredentialError::Malformed("not_before after not_after"));
        }
        let credential = Credential {
            user_id: user_id.to_owned(),
            display_name: display_name.to_owned(),
            kind,
            device_public_key: device_public_key.to_bytes(),
            not_before,
            not_after,
        };
        let signature = self.key.sign(&credential.to_canonical_bytes()?).to_bytes();
        Ok(SignedCredential {
            credential,
            signature,
        })
    }
}

impl std::fmt::Debug for IdentityCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCa")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Decides whether a peer's credential is acceptable. Called by [`crate::Member`] for every
/// credential before it commits an Add, merges a commit, or joins from a Welcome.
///
/// [`crate::Member`] itself additionally checks that the credential's device key is the MLS
/// leaf's signature key; the verifier checks the CA signature, the validity window and any
/// policy (invitation list, participant kinds) of the caller.
pub trait CredentialVerifier {
    /// `Ok(())` to accept.
    fn verify(&self, credential: &SignedCredential, now: Duration) -> Result<(), CredentialError>;
}

impl<F> CredentialVerifier for F
where
    F: Fn(&SignedCredential, Duration) -> Result<(), CredentialError>,
{
    fn verify(&self, credential: &SignedCredential, now: Duration) -> Result<(), CredentialError> {
        self(credential, now)
    }
}

/// The standard verifier: the credential must be signed by this CA and valid at `now`.
#[derive(Debug, Clone)]
pub struct CaVerifier {
    /// Trusted identity CA key.
    pub ca_public_key: VerifyingKey,
}

impl CredentialVerifier for CaVerifier {
    fn verify(&self, credential: &SignedCredential, now: Duration) -> Result<(), CredentialError> {
        credential.verify(&self.ca_public_key, now)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), CredentialError> {
    let len = u16::try_from(s.len()).map_err(|_| CredentialError::Malformed("string too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CredentialError> {
        if self.0.len() < n {
            return Err(CredentialError::Malformed("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, CredentialError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn string(&mut self) -> Result<String, CredentialError> {
        let mut l = [0u8; 2];
        l.copy_from_slice(self.take(2)?);
        let len = usize::from(u16::from_be_bytes(l));
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| CredentialError::Malformed("invalid UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_strictness() {
        let ca = IdentityCa::new(SigningKey::from_bytes(&[7; 32]));
        let dev = SigningKey::from_bytes(&[9; 32]).verifying_key();
        let sc = ca
            .issue("u1", "Ana", ParticipantKind::Staff, &dev, 10, 20)
            .expect("issue");
        let bytes = sc.to_bytes().expect("encode");
        assert_eq!(SignedCredential::from_bytes(&bytes).expect("decode"), sc);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(SignedCredential::from_bytes(&trailing).is_err());
        assert!(SignedCredential::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let pk = ca.public_key();
        assert!(sc.verify(&pk, Duration::from_secs(15)).is_ok());
        assert_eq!(
            sc.verify(&pk, Duration::from_secs(20)),
            Err(CredentialError::Expired)
        );
        assert_eq!(
            sc.verify(&pk, Duration::from_secs(9)),
            Err(CredentialError::NotYetValid)
        );
        let mut forged = sc.clone();
        forged.credential.display_name = "Eve".into();
        assert_eq!(
            forged.verify(&pk, Duration::from_secs(15)),
            Err(CredentialError::BadSignature)
        );
    }
}
