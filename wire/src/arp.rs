//! ARP for IPv4 over Ethernet (RFC 826): the only kind the project reads or answers.
//!
//! Owns: the 28-byte body's layout. Never: deciding which requests deserve a reply.

use std::net::Ipv4Addr;

use crate::ethernet::{Mac, ETHERTYPE_IPV4};
use crate::{field, Error};

/// Length of an Ethernet/IPv4 ARP body.
pub const PACKET_LEN: usize = 28;
/// ARP request.
pub const OP_REQUEST: u16 = 1;
/// ARP reply.
pub const OP_REPLY: u16 = 2;
/// Hardware type Ethernet.
const HTYPE_ETHERNET: u16 = 1;

/// A view of an Ethernet/IPv4 ARP body (after the Ethernet header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// A view without checks; for bodies this process wrote. See the crate's promise.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view of untrusted bytes: 28 bytes at least, Ethernet hardware addresses (type 1,
    /// length 6) and IPv4 protocol addresses (type 0x0800, length 4); anything else is
    /// [`Error::Unsupported`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The checks of [`new_checked`](Self::new_checked).
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if field::be16(b, 0) != Some(HTYPE_ETHERNET)
            || field::be16(b, 2) != Some(ETHERTYPE_IPV4)
            || b.get(4) != Some(&6)
            || b.get(5) != Some(&4)
        {
            return Err(Error::Unsupported);
        }
        Ok(())
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Operation (1 request, 2 reply, others exist).
    pub fn operation(&self) -> u16 {
        field::be16(self.buffer.as_ref(), 6).unwrap_or(0)
    }

    /// Sender hardware address.
    pub fn sender_hardware_addr(&self) -> Mac {
        Mac::at(self.buffer.as_ref(), 8).unwrap_or_default()
    }

    /// Sender protocol address.
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        field::ipv4_at(self.buffer.as_ref(), 14).unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Target hardware address.
    pub fn target_hardware_addr(&self) -> Mac {
        Mac::at(self.buffer.as_ref(), 18).unwrap_or_default()
    }

    /// Target protocol address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        field::ipv4_at(self.buffer.as_ref(), 24).unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
}

/// An Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// [`OP_REQUEST`] or [`OP_REPLY`]
    pub op: u16,
    /// sender hardware address
    pub sha: Mac,
    /// sender protocol address
    pub spa: Ipv4Addr,
    /// target hardware address
    pub tha: Mac,
    /// target protocol address
    pub tpa: Ipv4Addr,
}

impl ArpRepr {
    /// Reads an ARP body (untrusted); operations other than request and reply are
    /// [`Error::Unsupported`].
    pub fn parse(body: &[u8]) -> Result<ArpRepr, Error> {
        let p = ArpPacket::new_checked(body)?;
        let op = p.operation();
        if op != OP_REQUEST && op != OP_REPLY {
            return Err(Error::Unsupported);
        }
        Ok(ArpRepr {
            op,
            sha: p.sender_hardware_addr(),
            spa: p.sender_protocol_addr(),
            tha: p.target_hardware_addr(),
            tpa: p.target_protocol_addr(),
        })
    }

    /// Writes the body into `out[..28]`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), Error> {
        let b = out.get_mut(..PACKET_LEN).ok_or(Error::Truncated)?;
        let fields: [(usize, &[u8]); 7] = [
            (0, &HTYPE_ETHERNET.to_be_bytes()),
            (2, &ETHERTYPE_IPV4.to_be_bytes()),
            (4, &[6, 4]),
            (6, &self.op.to_be_bytes()),
            (8, &self.sha.0),
            (14, &self.spa.octets()),
            (18, &self.tha.0),
        ];
        for (at, bytes) in fields {
            field::put(b, at, bytes).ok_or(Error::Truncated)?;
        }
        field::put(b, 24, &self.tpa.octets()).ok_or(Error::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_hardware() {
        let a = ArpRepr {
            op: OP_REQUEST,
            sha: Mac([2, 0, 0, 0, 0, 1]),
            spa: Ipv4Addr::new(10, 0, 0, 2),
            tha: Mac::default(),
            tpa: Ipv4Addr::new(10, 0, 0, 1),
        };
        let mut b = [0u8; PACKET_LEN];
        a.emit(&mut b).unwrap();
        assert_eq!(ArpRepr::parse(&b), Ok(a));
        assert_eq!(ArpRepr::parse(&b[..27]), Err(Error::Truncated));
        let mut bad = b;
        bad[4] = 8;
        assert_eq!(ArpRepr::parse(&bad), Err(Error::Unsupported));
        let mut bad = b;
        bad[7] = 3;
        assert_eq!(ArpRepr::parse(&bad), Err(Error::Unsupported));
        assert!(ArpPacket::new_checked(&bad[..]).is_ok());
    }
}
