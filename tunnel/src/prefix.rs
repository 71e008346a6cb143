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

/// A longest-prefix-match table from prefixes to values. A lookup costs one hash probe per
/// distinct prefix length in use (at most 33 for IPv4, 129 for IPv6; a gateway whose clients
/// own host routes has one), never a scan of the entries: a gateway with ten thousand clients
/// routes a packet as fast as one with two. Where several values hold the same prefix, the
/// greatest wins (a gateway's newest peer, as WireGuard moves an allowed IP to the peer
/// configured last).
#[derive(Debug, Clone)]
pub struct PrefixTable<V> {
    entries: std::collections::HashMap<Prefix, Vec<V>>,
    /// how many entries of each length there are, IPv4 and IPv6 apart
    v4_lens: [u32; 33],
    v6_lens: [u32; 129],
}

impl<V> Default for PrefixTable<V> {
    fn default() -> Self {
        Self {
            entries: std::collections::HashMap::new(),
            v4_lens: [0; 33],
            v6_lens: [0; 129],
        }
    }
}

impl<V: Copy + Ord> PrefixTable<V> {
    fn lens_mut(&mut self, v4: bool) -> &mut [u32] {
        if v4 {
            &mut self.v4_lens
        } else {
            &mut self.v6_lens
        }
    }

    /// Binds `prefix` to `value` (beside any other value it has).
    pub fn insert(&mut self, prefix: Prefix, value: V) {
        let values = self.entries.entry(prefix).or_default();
        if values.contains(&value) {
            return;
        }
        values.push(value);
        if let Some(n) = self
            .lens_mut(prefix.addr.is_ipv4())
            .get_mut(usize::from(prefix.len))
        {
            *n += 1;
        }
    }

    /// Unbinds `prefix` from `value`.
    pub fn remove(&mut self, prefix: Prefix, value: V) {
        let Some(values) = self.entries.get_mut(&prefix) else {
            return;
        };
        let before = values.len();
        values.retain(|v| *v != value);
        if values.len() == before {
            return;
        }
        if values.is_empty() {
            self.entries.remove(&prefix);
        }
        if let Some(n) = self
            .lens_mut(prefix.addr.is_ipv4())
            .get_mut(usize::from(prefix.len))
        {
            *n = n.saturating_sub(1);
        }
    }

    /// The value of the longest prefix holding `ip` (the greatest, where several share it).
    pub fn lookup(&self, ip: IpAddr) -> Option<V> {
        let lens: &[u32] = if ip.is_ipv4() {
            &self.v4_lens
        } else {
            &self.v6_lens
        };
        lens.iter()
            .enumerate()
            .rev()
            .filter(|(_, n)| **n > 0)
            .find_map(|(len, _)| {
                let prefix = Prefix::new(ip, u8::try_from(len).ok()?)?;
                self.entries.get(&prefix)?.iter().max().copied()
            })
    }

    /// Prefixes bound (each once, whatever the number of values).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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

    /// The table's answer is the linear scan's: the longest prefix, the greatest value among
    /// equals, through inserts and removals. Addresses come from a small space so prefixes
    /// overlap and collide often.
    #[test]
    fn prefix_table_matches_a_linear_scan() {
        use proptest::prelude::*;
        let op = (any::<bool>(), 0u8..4, 20u8..=32, 0u32..4, any::<u8>());
        proptest!(|(ops in proptest::collection::vec(op, 1..60), probes in proptest::collection::vec(any::<u8>(), 1..20))| {
            let mut table = PrefixTable::default();
            let mut list: Vec<(Prefix, u32)> = Vec::new();
            for (insert, net, len, value, host) in ops {
                let addr = IpAddr::from([100, 96, net, host]);
                let prefix = Prefix::new(addr, len).unwrap();
                if insert {
                    table.insert(prefix, value);
                    if !list.contains(&(prefix, value)) {
                        list.push((prefix, value));
                    }
                } else {
                    table.remove(prefix, value);
                    list.retain(|e| *e != (prefix, value));
                }
            }
            for host in probes {
                for net in 0u8..4 {
                    let ip = IpAddr::from([100, 96, net, host]);
                    let want = list
                        .iter()
                        .filter(|(p, _)| p.contains(ip))
                        .map(|(p, v)| (p.len(), *v))
                        .max()
                        .map(|(_, v)| v);
                    prop_assert_eq!(table.lookup(ip), want, "{}", ip);
                }
            }
            prop_assert!(table.lookup("fd00:96::1".parse().unwrap()).is_none());
        });
    }
}
