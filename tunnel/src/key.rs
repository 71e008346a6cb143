//! WireGuard keys: base64 text as `wg genkey` / `wg pubkey` write it, parsed at the edge.
//!
//! A [`PrivateKey`] zeroizes its bytes on drop, prints as `PrivateKey(..)` in `Debug` and has no
//! `Display`: there is no way to log one by accident. A [`PublicKey`] refuses the all-zero key
//! and the low-order points of Curve25519, for which every Diffie-Hellman result is zero and
//! a session would have no secret (the WireGuard netns selftest's test 20).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// Why a key in text form was refused. The message is shown to the user next to the file/key
/// it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// not valid base64 (a WireGuard key is 44 characters of base64 ending in `=`)
    #[error("not valid base64 (a WireGuard key is 44 characters of base64 ending in '=')")]
    NotBase64,
    /// decodes to the wrong number of bytes
    #[error("decodes to {0} bytes, a WireGuard key has 32")]
    WrongLength(usize),
    /// the all-zero key or a low-order point: no shared secret could ever be derived
    #[error("is a low-order (weak) Curve25519 point; no secure session is possible with it")]
    LowOrder,
}

fn decode32(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut raw = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?,
    );
    let len = raw.len();
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::WrongLength(len))?;
    raw.zeroize();
    Ok(Zeroizing::new(bytes))
}

/// A Curve25519 private key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    /// A fresh random key from the operating system's CSPRNG, clamped as `wg genkey` does.
    pub fn generate() -> Self {
        Self(StaticSecret::random_from_rng(rand_core::OsRng))
    }

    /// Parses base64 text (surrounding whitespace allowed, as in a key file).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = decode32(text)?;
        Ok(Self(StaticSecret::from(*bytes)))
    }

    /// Base64 text of the clamped key, for `failoverd genkey` only.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.to_bytes()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(DalekPublic::from(&self.0))
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.0
    }
}

/// A WireGuard pre-shared key: 32 random bytes mixed into the handshake for a post-quantum
/// layer (`wg genpsk`). Zeroized on drop; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

impl PresharedKey {
    /// 32 fresh bytes from the operating system's CSPRNG, as `wg genpsk` makes them.
    pub fn generate() -> Self {
        use rand_core::RngCore as _;
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// Parses base64 text (surrounding whitespace allowed, as in a key file). Any 32 bytes
    /// are a valid pre-shared key.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32(text).map(Self)
    }

    /// Base64 text, for `failoverd genpsk` and the files `import-wg` writes only.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// The bytes, for the handshake.
    pub(crate) fn bytes(&self) -> [u8; 32] {
        *self.0
    }
}

/// A Curve25519 public key that is not of low order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(DalekPublic);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&STANDARD.encode(self.0.as_bytes()))
    }
}

impl PublicKey {
    /// Parses base64 text and refuses low-order points.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Self::from_bytes(*decode32(text)?)
    }

    /// Wraps raw bytes, refusing low-order points: a DH with any scalar yields a
    /// non-contributory (all-zero) result exactly for those.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let key = DalekPublic::from(bytes);
        let probe = StaticSecret::from([0x5a; 32]);
        if !probe.diffie_hellman(&key).was_contributory() {
            return Err(KeyError::LowOrder);
        }
        Ok(Self(key))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub(crate) fn dalek(&self) -> DalekPublic {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_matches_wg_vectors() {
        // Generated with `wg genkey | tee k | wg pubkey`.
        let private =
            PrivateKey::from_base64("EC9vEwFgAbTRrp7n/XCvZEd5fklWPF2ETdgEaIGLnlY=\n").unwrap();
        assert_eq!(
            private.public_key().to_string(),
            "hq7aij0ZmmD1zIWdCs0XTzIw1HvUAn9wTcXD53zON0c="
        );
        assert_eq!(
            &*private.to_base64(),
            "EC9vEwFgAbTRrp7n/XCvZEd5fklWPF2ETdgEaIGLnlY="
        );
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!(
            PublicKey::from_base64("not base64!").unwrap_err(),
            KeyError::NotBase64
        );
        assert_eq!(
            PublicKey::from_base64("AAAA").unwrap_err(),
            KeyError::WrongLength(3)
        );
        assert_eq!(
            PublicKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap_err(),
            KeyError::LowOrder
        );
    }

    #[test]
    fn refuses_every_low_order_point() {
        // The points of order 1, 2, 4 and 8 (and their non-canonical encodings), as listed by
        // the Linux WireGuard netns selftest.
        let points = [
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",
            "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
            "7P///////////////////////////////////////38=",
            "7f///////////////////////////////////////38=",
            "7v///////////////////////////////////////38=",
        ];
        for p in points {
            assert_eq!(
                PublicKey::from_base64(p).unwrap_err(),
                KeyError::LowOrder,
                "{p}"
            );
        }
    }

    #[test]
    fn debug_never_shows_private_bytes() {
        let k = PrivateKey::generate();
        let shown = format!("{k:?}");
        assert_eq!(shown, "PrivateKey(..)");
    }
}
