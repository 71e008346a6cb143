//! Ethernet II frames (no 802.1Q tag: a tagged frame shows its tag's EtherType, and the caller
//! refuses it) and MAC addresses.
//!
//! Owns: the 14-byte header's layout, [`Mac`] and the EtherTypes the project names. Never:
//! deciding which frames a link accepts (that is the guest link's, in `vmm-shim`).

use std::net::Ipv6Addr;

use crate::{field, Error};

/// Ethernet header length.
pub const HEADER_LEN: usize = 14;
/// EtherType IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Group (multicast or broadcast) address: the I/G bit.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// 00:00:00:00:00:00
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }

    /// A unicast address a NIC may use as its own.
    pub fn is_unicast(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The Ethernet address IPv6 multicast `group` maps to (RFC 2464: 33:33 + last 32 bits).
    pub fn ipv6_multicast(group: Ipv6Addr) -> Mac {
        let [.., a, b, c, d] = group.octets();
        Mac([0x33, 0x33, a, b, c, d])
    }

    /// The IPv6 link-local address with this MAC's modified EUI-64 interface identifier.
    pub fn link_local(self) -> Ipv6Addr {
        let [a, b, c, d, e, f] = self.0;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            a ^ 0x02,
            b,
            c,
            0xff,
            0xfe,
            d,
            e,
            f,
        ])
    }

    /// The address at `at` in `b`.
    pub fn at(b: &[u8], at: usize) -> Option<Mac> {
        Some(Mac(b.get(at..at.checked_add(6)?)?.try_into().ok()?))
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for Mac {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or("has fewer than six octets")?;
            if p.len() != 2 {
                return Err("needs two hex digits per octet");
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| "is not hexadecimal")?;
        }
        if parts.next().is_some() {
            return Err("has more than six octets");
        }
        Ok(Mac(out))
    }
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view without checks; for frames this process wrote. See the crate's promise.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view of untrusted bytes: at least a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Whether the buffer holds a whole header.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Mac {
        Mac::at(self.buffer.as_ref(), 0).unwrap_or_default()
    }

    /// Source address.
    pub fn src_addr(&self) -> Mac {
        Mac::at(self.buffer.as_ref(), 6).unwrap_or_default()
    }

    /// EtherType (a tag's type when tagged).
    pub fn ethertype(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 12).unwrap_or(0)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// Everything after the header.
    pub fn payload(&self) -> &'a [u8] {
        {
            let b: &'a T = self.buffer;
            b
        }
        .as_ref()
        .get(HEADER_LEN..)
        .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or_default()
    }
}

/// An Ethernet header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// destination
    pub dst: Mac,
    /// source
    pub src: Mac,
    /// EtherType (a tag's type when tagged: the caller refuses those)
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Reads the header of `frame` (untrusted).
    pub fn parse(frame: &[u8]) -> Result<EthernetRepr, Error> {
        let f = EthernetFrame::new_checked(frame)?;
        Ok(EthernetRepr {
            dst: f.dst_addr(),
            src: f.src_addr(),
            ethertype: f.ethertype(),
        })
    }

    /// Writes the header into `out[..14]`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), Error> {
        let h: &mut [u8; HEADER_LEN] = out
            .get_mut(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Truncated)?;
        let (dst, rest) = h.split_at_mut(6);
        let (src, ty) = rest.split_at_mut(6);
        dst.copy_from_slice(&self.dst.0);
        src.copy_from_slice(&self.src.0);
        ty.copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let m: Mac = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:12:34:56");
        assert!(m.is_unicast());
        assert!("52:54:00:12:34".parse::<Mac>().is_err());
        assert!("52:54:00:12:34:56:78".parse::<Mac>().is_err());
        assert!("52:54:00:12:34:5g".parse::<Mac>().is_err());
        assert!(Mac::BROADCAST.is_multicast());
        assert_eq!(
            m.link_local(),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            Mac::ipv6_multicast("ff02::1:ff12:3456".parse().unwrap()),
            Mac([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        );
    }

    #[test]
    fn header_round_trips() {
        let r = EthernetRepr {
            dst: Mac::BROADCAST,
            src: Mac([2, 0, 0, 0, 0, 1]),
            ethertype: ETHERTYPE_ARP,
        };
        let mut b = [0u8; 20];
        r.emit(&mut b).unwrap();
        assert_eq!(EthernetRepr::parse(&b), Ok(r));
        assert_eq!(
            EthernetFrame::new_checked(&b[..]).unwrap().payload().len(),
            6
        );
        assert_eq!(EthernetRepr::parse(&b[..13]), Err(Error::Truncated));
        assert_eq!(r.emit(&mut b[..13]), Err(Error::Truncated));
    }
}
