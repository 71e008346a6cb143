//! IP prefixes (`198.19.0.0/16`, `fd00:96::2/128`) and the allowed-IPs set of a peer.
//!
//! Cryptokey routing lives here: WireGuard binds each inner address range to one peer key, and
//! a decrypted packet is accepted only if its inner source lies in the sending peer's set.
//! boringtun's `noise` layer does not check this; [`crate::Tunnel`] does, with [`AllowedIps`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a prefix in text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// no `/len` part
    #[error("has no prefix length (write it as ADDRESS/LEN, e.g. 198.19.0.0/16)")]
    MissingLength,
    /// the address part does not parse
    #[error("'{0}' is not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// the length is not a number within the family's width
    #[error("prefix length '{0}' is out of range (0-32 for IPv4, 0-128 for IPv6)")]
    BadLength(String),
    /// bits set beyond the prefix length, a typo that usually means another prefix was meant
    #[error("has host bits set beyond /{len} (did you mean {canonical}?)")]
    HostBitsSet {
        /// the prefix length given
        len: u8,
        /// the prefix with host bits cleared
        canonical: String,
    },
}

/// An IP prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

fn mask_bits(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

fn family_width(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl Prefix {
    /// A prefix from an address and a length; host bits are cleared. `None` if `len` exceeds
    /// the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        (len <= family_width(addr)).then(|| Self {
            addr: mask_bits(addr, len),
            len,
        })
    }

    /// The single-address prefix (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: family_width(addr),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is a zero-length (default) prefix.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies inside this prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask_bits(ip, self.len) == self.addr
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// Parses `ADDRESS/LEN`, refusing host bits beyond the length.
    fn from_str(text: &str) -> Result<Self, PrefixError> {
        let (a, l) = text
            .trim()
            .split_once('/')
            .ok_or(PrefixError::MissingLength)?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| PrefixError::BadAddress(a.to_owned()))?;
        let len: u8 = l
            .parse()
            .map_err(|_| PrefixError::BadLength(l.to_owned()))?;
        let prefix = Prefix::new(addr, len).ok_or_else(|| PrefixError::BadLength(l.to_owned()))?;
        if prefix.addr != addr {
            return Err(PrefixError::HostBitsSet {
                len,
                canonical: prefix.to_string(),
            });
        }
        Ok(prefix)
    }
}

/// The inner address ranges bound to one peer key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIps {
    prefixes: Vec<Prefix>,
}

impl AllowedIps {
    /// A set from a list of prefixes.
    pub fn new(prefixes: Vec<Prefix>) -> Self {
        Self { prefixes }
    }

    /// Whether `ip` is inside any prefix of the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.prefixes.iter().any(|p| p.contains(ip))
    }

    /// The longest prefix of the set that contains `ip`, if any (for routing across peers).
    pub fn longest_match(&self, ip: IpAddr) -> Option<u8> {
        self.prefixes
            .iter()
            .filter(|p| p.contains(ip))
            .map(|p| p.len)
            .max()
    }

    /// The prefixes, in configuration order.
    pub fn prefixes(&self) -> &[Prefix] {
        &self.prefixes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let p: Prefix = "100.96.0.0/16".parse().unwrap();
        assert!(p.contains("100.96.7.1".parse().unwrap()));
        assert!(!p.contains("100.97.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let d: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(d.contains("1.2.3.4".parse().unwrap()));
        let v6: Prefix = "fd00:96::/64".parse().unwrap();
        assert!(v6.contains("fd00:96::2".parse().unwrap()));
        assert!(!v6.contains("fd00:97::2".parse().unwrap()));
        let all6: Prefix = "::/0".parse().unwrap();
        assert!(all6.contains("fd00:96::2".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!("1.2.3.4".parse::<Prefix>(), Err(PrefixError::MissingLength));
        assert!(matches!(
            "1.2.3.4/33".parse::<Prefix>(),
            Err(PrefixError::BadLength(_))
        ));
        assert!(matches!(
            "x/3".parse::<Prefix>(),
            Err(PrefixError::BadAddress(_))
        ));
        assert_eq!(
            "100.96.0.1/16".parse::<Prefix>(),
            Err(PrefixError::HostBitsSet {
                len: 16,
                canonical: "100.96.0.0/16".into()
            })
        );
    }

    #[test]
    fn longest_match_picks_most_specific() {
        let set = AllowedIps::new(vec![
            "0.0.0.0/0".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        assert_eq!(set.longest_match("10.1.1.1".parse().unwrap()), Some(8));
        assert_eq!(set.longest_match("11.1.1.1".parse().unwrap()), Some(0));
        assert_eq!(set.longest_match("::1".parse().unwrap()), None);
    }
}
