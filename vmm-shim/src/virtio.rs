//! The virtio-net header (`struct virtio_net_hdr_v1`, 12 bytes with `VIRTIO_F_VERSION_1`) that
//! precedes every frame on a virtio-net queue; the sans-IO half of the vhost-user front end.
//!
//! The shim negotiates no offloads (no `VIRTIO_NET_F_CSUM`, no TSO/UFO), so a guest must send
//! whole frames with finished checksums: a TX header asking for a checksum or segmentation is
//! a guest that ignores negotiation, and its frame is refused. RX headers are all zero but for
//! `num_buffers`.

/// Length of `virtio_net_hdr_v1`.
pub const NET_HDR_LEN: usize = 12;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`
const GSO_NONE: u8 = 0;

/// A TX header the shim cannot honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// fewer than [`NET_HDR_LEN`] bytes
    Short,
    /// asks for checksum or segmentation offload, which was never negotiated
    Offload,
}

/// The fields of a TX header, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetHeader {
    /// flags
    pub flags: u8,
    /// GSO type
    pub gso_type: u8,
}

impl NetHeader {
    /// Reads and checks a TX header.
    pub fn parse_tx(b: &[u8]) -> Result<NetHeader, HeaderError> {
        let h: &[u8; NET_HDR_LEN] = b.first_chunk().ok_or(HeaderError::Short)?;
        let (flags, gso_type) = (h[0], h[1]);
        if flags & F_NEEDS_CSUM != 0 || gso_type != GSO_NONE {
            return Err(HeaderError::Offload);
        }
        Ok(NetHeader { flags, gso_type })
    }
}

/// The header written before a frame on the RX queue.
pub fn rx_header(num_buffers: u16) -> [u8; NET_HDR_LEN] {
    let mut h = [0u8; NET_HDR_LEN];
    h[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloads_are_refused() {
        assert_eq!(NetHeader::parse_tx(&[0; 11]), Err(HeaderError::Short));
        assert!(NetHeader::parse_tx(&[0; 12]).is_ok());
        let mut h = [0u8; 12];
        h[0] = 1;
        assert_eq!(NetHeader::parse_tx(&h), Err(HeaderError::Offload));
        let mut h = [0u8; 12];
        h[1] = 1;
        assert_eq!(NetHeader::parse_tx(&h), Err(HeaderError::Offload));
        assert_eq!(rx_header(1)[10..], [1, 0]);
    }
}
