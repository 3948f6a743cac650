//! Authenticated framing of gossip datagrams: HMAC-SHA256 (RFC 2104, with
//! SHA-256 from FIPS 180-4; test vectors of RFC 4231) over the whole frame.
//!
//! ```text
//!  0       1       2       3       4       5
//! +-------+-------+-------+-------+-------+------------------+-----------+
//! | 'E'   | 'L'   |version| kind  |key id | payload ...      | tag (32)  |
//! +-------+-------+-------+-------+-------+------------------+-----------+
//! tag = HMAC-SHA256(key[key id], every byte before the tag)
//! ```
//!
//! Rotation without a flag day: a [`Keyring`] holds the current key (used to
//! send) and any number of older or newer ones (accepted on receipt), each
//! with a one-byte id. Rotating is: add the new key everywhere as accepted,
//! then make it current everywhere, then drop the old one.
//!
//! What this does not give: confidentiality (the gossip carries interface
//! names and subnets, nothing secret) and replay protection (a recorded
//! datagram stays valid while its key is accepted; SWIM incarnations make old
//! member states lose against newer ones, which limits the damage).

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAGIC: [u8; 2] = *b"EL";
const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 5;
/// Bytes of the trailing tag.
pub const TAG_LEN: usize = 32;
/// Shortest key accepted: 128 bits (RFC 2104 section 3 recommends at least
/// the hash output length; we refuse anything weaker than 16 bytes).
pub const MIN_KEY_LEN: usize = 16;

/// The id of a key given alone (a key file, a Secret's plain `key` entry).
pub const PLAIN_KEY_ID: u8 = 0;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A foca (SWIM) message.
    Swim,
    /// A goodbye: the sender is leaving on purpose (graceful stop).
    Goodbye,
    /// An owner's heartbeat to its successors ([`super::heartbeat`]).
    Heartbeat,
    /// A successor asks a silent owner for a heartbeat now ([`super::heartbeat::Action`]).
    Probe,
    /// A successor asks another member whether it heard a silent owner
    /// ([`super::heartbeat::AskAbout`]).
    AskAbout,
    /// The answer of a member that heard it ([`super::heartbeat::Vouch`]).
    Vouch,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Swim => 1,
            FrameKind::Goodbye => 2,
            FrameKind::Heartbeat => 3,
            FrameKind::Probe => 4,
            FrameKind::AskAbout => 5,
            FrameKind::Vouch => 6,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(FrameKind::Swim),
            2 => Some(FrameKind::Goodbye),
            3 => Some(FrameKind::Heartbeat),
            4 => Some(FrameKind::Probe),
            5 => Some(FrameKind::AskAbout),
            6 => Some(FrameKind::Vouch),
            _ => None,
        }
    }
}

/// A gossip key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey {
    /// Which key this is, carried in every frame.
    pub id: u8,
    secret: Vec<u8>,
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipKey {{ id: {}, secret: *** }}", self.id)
    }
}

impl GossipKey {
    /// A key from the bytes of a Secret.
    pub fn new(id: u8, secret: impl Into<Vec<u8>>) -> Result<Self, AuthError> {
        let secret = secret.into();
        if secret.len() < MIN_KEY_LEN {
            return Err(AuthError::KeyTooShort {
                id,
                len: secret.len(),
            });
        }
        Ok(GossipKey { id, secret })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; the error branch cannot happen,
        // but a failure here must not panic the speaker: an empty key would
        // still authenticate nothing that a peer accepts.
        HmacSha256::new_from_slice(&self.secret)
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
    }
}

/// The keys of a cluster: one to send with, all to accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    current: GossipKey,
    accepted: Vec<GossipKey>,
}

impl Keyring {
    /// A keyring that sends with `current` and also accepts `others`.
    pub fn new(current: GossipKey, others: Vec<GossipKey>) -> Result<Self, AuthError> {
        let mut ids = vec![current.id];
        for k in &others {
            if ids.contains(&k.id) {
                return Err(AuthError::DuplicateKeyId { id: k.id });
            }
            ids.push(k.id);
        }
        let mut accepted = vec![current.clone()];
        accepted.extend(others);
        Ok(Keyring { current, accepted })
    }

    /// A keyring of one key with id [`PLAIN_KEY_ID`]: a key file, or a Secret
    /// with a plain `key` entry. Trailing whitespace (a newline from `echo`
    /// or an editor) is not part of the key.
    pub fn from_plain_key(key: &[u8]) -> Result<Self, AuthError> {
        let end = key
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        Keyring::new(
            GossipKey::new(PLAIN_KEY_ID, key[..end].to_vec())?,
            Vec::new(),
        )
    }

    /// Build a keyring from a Kubernetes Secret's `data`, in one of two
    /// layouts:
    /// - a plain `key` entry (what `kubectl create secret generic
    ///   edgelb-memberlist --from-literal=key=...` makes): one key, id
    ///   [`PLAIN_KEY_ID`]. Rotating is replacing its value; the speaker keeps
    ///   the previous key for a while ([`super::rotation`]).
    /// - `key-<id>` entries (id 0 to 255) and `current`, the id to send with.
    ///   Rotation is three Secret edits, each given time to reach every node:
    ///   add `key-2`; set `current` to `2`; remove `key-1`.
    ///
    /// Both layouts at once are refused (which one would be meant?).
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, AuthError> {
        if let Some(plain) = data.get("key") {
            if let Some(other) = data
                .keys()
                .find(|k| k.starts_with("key-") || *k == "current")
            {
                return Err(AuthError::SecretField {
                    field: other.clone(),
                    problem: "a plain `key` entry excludes `key-<id>` and `current` entries",
                });
            }
            return Keyring::from_plain_key(plain);
        }
        let mut keys = Vec::new();
        for (name, value) in data {
            let Some(id) = name.strip_prefix("key-") else {
                continue;
            };
            let id: u8 = id.parse().map_err(|_| AuthError::SecretField {
                field: name.clone(),
                problem: "the suffix must be a key id from 0 to 255",
            })?;
            keys.push(GossipKey::new(id, value.clone())?);
        }
        let current = data.get("current").ok_or(AuthError::SecretField {
            field: "current".into(),
            problem: "missing: it names the key id to send with",
        })?;
        let current: u8 = std::str::from_utf8(current)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(AuthError::SecretField {
                field: "current".into(),
                problem: "must be a key id from 0 to 255",
            })?;
        let at = keys
            .iter()
            .position(|k| k.id == current)
            .ok_or(AuthError::SecretField {
                field: "current".into(),
                problem: "names a key id that has no key-<id> entry",
            })?;
        let current = keys.remove(at);
        Keyring::new(current, keys)
    }

    /// The id of the key used to send.
    pub fn current_id(&self) -> u8 {
        self.current.id
    }

    /// The key used to send.
    pub fn current(&self) -> &GossipKey {
        &self.current
    }

    /// Whether `key` (id and secret) is accepted.
    pub fn accepts(&self, key: &GossipKey) -> bool {
        self.accepted.contains(key)
    }

    /// This keyring sending with `current` and also accepting `extra`, even
    /// where `extra` shares an id with one of its keys (a replaced plain
    /// key): a frame is accepted when any key of its id verifies it.
    pub(super) fn with_transition(&self, current: &GossipKey, extra: &GossipKey) -> Keyring {
        let mut accepted = self.accepted.clone();
        for k in [current, extra] {
            if !accepted.contains(k) {
                accepted.push(k.clone());
            }
        }
        Keyring {
            current: current.clone(),
            accepted,
        }
    }

    /// Frame and sign `payload`.
    pub fn seal(&self, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(kind, payload, &mut out);
        out
    }

    /// [`Self::seal`] into `out` (cleared first), so that a buffer serves many frames.
    pub fn seal_into(&self, kind: FrameKind, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(HEADER_LEN + payload.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind.code());
        out.push(self.current.id);
        out.extend_from_slice(payload);
        let mut mac = self.current.mac();
        mac.update(out);
        out.extend_from_slice(&mac.finalize().into_bytes());
    }

    /// Check a received frame; on success return its kind and payload.
    pub fn open<'d>(&self, frame: &'d [u8]) -> Result<(FrameKind, &'d [u8]), AuthError> {
        if frame.len() < HEADER_LEN + TAG_LEN {
            return Err(AuthError::Truncated { len: frame.len() });
        }
        if frame[..2] != MAGIC || frame[2] != VERSION {
            return Err(AuthError::BadHeader);
        }
        let key_id = frame[4];
        let (signed, tag) = frame.split_at(frame.len() - TAG_LEN);
        // Usually one key per id; two only while a plain key is replaced.
        let mut candidates = self.accepted.iter().filter(|k| k.id == key_id).peekable();
        if candidates.peek().is_none() {
            return Err(AuthError::UnknownKey { id: key_id });
        }
        let verified = candidates.any(|key| {
            let mut mac = key.mac();
            mac.update(signed);
            mac.verify_slice(tag).is_ok()
        });
        if !verified {
            return Err(AuthError::BadTag { id: key_id });
        }
        let kind =
            FrameKind::from_code(frame[3]).ok_or(AuthError::UnknownKind { kind: frame[3] })?;
        Ok((kind, &signed[HEADER_LEN..]))
    }
}

/// Why a frame or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A configured gossip key is shorter than [`MIN_KEY_LEN`].
    #[error("gossip key {id}: {len} bytes, at least {MIN_KEY_LEN} needed")]
    KeyTooShort {
        /// The key id.
        id: u8,
        /// Its length.
        len: usize,
    },
    /// Two configured keys share an id.
    #[error("gossip keys: id {id} given twice")]
    DuplicateKeyId {
        /// The repeated id.
        id: u8,
    },
    /// The datagram is shorter than header and tag.
    #[error("gossip datagram of {len} bytes is shorter than header and tag")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// Not our magic or version.
    #[error("gossip datagram: bad magic or version")]
    BadHeader,
    /// Signed with a key id we do not hold.
    #[error("gossip datagram: unknown key id {id}")]
    UnknownKey {
        /// The key id in the frame.
        id: u8,
    },
    /// The tag does not match.
    #[error("gossip datagram: tag does not verify with key {id}")]
    BadTag {
        /// The key id in the frame.
        id: u8,
    },
    /// A field of the gossip Secret is missing or malformed.
    #[error("gossip Secret: field {field}: {problem}")]
    SecretField {
        /// The field name.
        field: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Authenticated, but of a kind we do not know (a newer peer).
    #[error("gossip datagram: unknown kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8, fill: u8) -> GossipKey {
        GossipKey::new(id, vec![fill; 32]).expect("valid key")
    }

    #[test]
    fn hmac_sha256_matches_rfc4231_test_case_2() {
        let mut mac = HmacSha256::new_from_slice(b"Jefe").expect("any key length");
        mac.update(b"what do ya want for nothing?");
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let got: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn sealed_frame_opens_with_the_same_key() {
        let ring = Keyring::new(key(1, 7), vec![]).expect("ring");
        let frame = ring.seal(FrameKind::Swim, b"hello");
        assert_eq!(frame.len(), HEADER_LEN + 5 + TAG_LEN);
        assert_eq!(ring.open(&frame), Ok((FrameKind::Swim, &b"hello"[..])));
    }

    #[test]
    fn sealing_into_a_used_buffer_gives_the_same_frame() {
        let ring = Keyring::new(key(1, 7), vec![]).expect("ring");
        let mut out = ring.seal(FrameKind::Goodbye, b"a longer payload than the next");
        ring.seal_into(FrameKind::Heartbeat, b"beat", &mut out);
        assert_eq!(out, ring.seal(FrameKind::Heartbeat, b"beat"));
        assert_eq!(ring.open(&out), Ok((FrameKind::Heartbeat, &b"beat"[..])));
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let ring = Keyring::new(key(1, 7), vec![]).expect("ring");
        let frame = ring.seal(FrameKind::Goodbye, b"payload");
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    ring.open(&bad).is_err(),
                    "byte {i} bit {bit} flipped was accepted"
                );
            }
        }
    }

    #[test]
    fn wrong_key_and_unknown_key_id_are_rejected() {
        let ours = Keyring::new(key(1, 7), vec![]).expect("ring");
        let same_id_other_secret = Keyring::new(key(1, 8), vec![]).expect("ring");
        let other_id = Keyring::new(key(2, 7), vec![]).expect("ring");
        let f1 = same_id_other_secret.seal(FrameKind::Swim, b"x");
        assert_eq!(ours.open(&f1), Err(AuthError::BadTag { id: 1 }));
        let f2 = other_id.seal(FrameKind::Swim, b"x");
        assert_eq!(ours.open(&f2), Err(AuthError::UnknownKey { id: 2 }));
    }

    #[test]
    fn rotation_accepts_old_and_new_keys_during_overlap() {
        let old = Keyring::new(key(1, 7), vec![]).expect("ring");
        // Step 1: everyone accepts the new key, still sends with the old.
        let overlap_old_current = Keyring::new(key(1, 7), vec![key(2, 9)]).expect("ring");
        // Step 2: some send with the new key already.
        let overlap_new_current = Keyring::new(key(2, 9), vec![key(1, 7)]).expect("ring");
        let new = Keyring::new(key(2, 9), vec![]).expect("ring");
        for sender in [&old, &overlap_old_current, &overlap_new_current] {
            for receiver in [&overlap_old_current, &overlap_new_current] {
                let f = sender.seal(FrameKind::Swim, b"m");
                assert!(receiver.open(&f).is_ok());
            }
        }
        // Step 3: the old key is gone; its frames are refused.
        assert!(new.open(&old.seal(FrameKind::Swim, b"m")).is_err());
    }

    #[test]
    fn keyring_comes_from_secret_data_with_a_current_id() {
        let data = |pairs: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect()
        };
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let ring = Keyring::from_secret_data(&data(&[
            ("key-1", &k1),
            ("key-2", &k2),
            ("current", b"2\n"),
        ]))
        .expect("valid");
        assert_eq!(ring.current_id(), 2);
        let old = Keyring::new(GossipKey::new(1, k1.to_vec()).expect("key"), vec![]).expect("ring");
        assert!(
            ring.open(&old.seal(FrameKind::Swim, b"m")).is_ok(),
            "key-1 still accepted"
        );
        for (bad, field) in [
            (data(&[("key-1", &k1)]), "current"),
            (data(&[("key-1", &k1), ("current", b"3")]), "current"),
            (data(&[("key-1", &k1), ("current", b"x")]), "current"),
            (data(&[("key-300", &k1), ("current", b"1")]), "key-300"),
        ] {
            match Keyring::from_secret_data(&bad) {
                Err(AuthError::SecretField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a SecretField error on {field}, got {other:?}"),
            }
        }
        let short = data(&[("key-1", b"short"), ("current", b"1")]);
        assert!(matches!(
            Keyring::from_secret_data(&short),
            Err(AuthError::KeyTooShort { id: 1, .. })
        ));
    }

    #[test]
    fn a_plain_key_entry_is_a_keyring_of_one_and_excludes_the_other_layout() {
        let data = |pairs: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect()
        };
        let hex = b"0123456789abcdef0123456789abcdef\n";
        let ring = Keyring::from_secret_data(&data(&[("key", hex)])).expect("plain key");
        assert_eq!(ring.current_id(), PLAIN_KEY_ID);
        // The trailing newline is not part of the key: a key file with the same text agrees.
        let file = Keyring::from_plain_key(&hex[..hex.len() - 1]).expect("file key");
        assert!(ring.open(&file.seal(FrameKind::Swim, b"m")).is_ok());
        assert_eq!(ring, file);
        for extra in ["key-1", "current"] {
            let mixed = data(&[("key", hex), (extra, b"1")]);
            match Keyring::from_secret_data(&mixed) {
                Err(AuthError::SecretField { field, .. }) => assert_eq!(field, extra),
                other => panic!("mixed layouts accepted: {other:?}"),
            }
        }
        assert!(matches!(
            Keyring::from_secret_data(&data(&[("key", b"short\n")])),
            Err(AuthError::KeyTooShort { id: 0, len: 5 })
        ));
    }

    #[test]
    fn two_keys_of_one_id_are_both_tried() {
        let old = Keyring::new(key(0, 7), vec![]).expect("ring");
        let new = Keyring::new(key(0, 9), vec![]).expect("ring");
        let both = new.with_transition(&key(0, 9), &key(0, 7));
        assert!(both.open(&old.seal(FrameKind::Swim, b"m")).is_ok());
        assert!(both.open(&new.seal(FrameKind::Swim, b"m")).is_ok());
        let stranger = Keyring::new(key(0, 8), vec![]).expect("ring");
        assert_eq!(
            both.open(&stranger.seal(FrameKind::Swim, b"m")),
            Err(AuthError::BadTag { id: 0 })
        );
    }

    #[test]
    fn short_garbage_and_bad_config_are_errors_not_panics() {
        let ring = Keyring::new(key(1, 7), vec![]).expect("ring");
        for len in 0..(HEADER_LEN + TAG_LEN + 3) {
            assert!(ring.open(&vec![0u8; len]).is_err());
        }
        assert!(matches!(
            GossipKey::new(3, b"short".to_vec()),
            Err(AuthError::KeyTooShort { id: 3, len: 5 })
        ));
        assert_eq!(
            Keyring::new(key(1, 1), vec![key(1, 2)]),
            Err(AuthError::DuplicateKeyId { id: 1 })
        );
        assert!(
            !format!("{:?}", key(1, 0x41)).contains("65"),
            "Debug must hide the secret"
        );
    }
}
