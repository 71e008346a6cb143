//! A DHCPv4 server for exactly one client: the guest.
//!
//! It hands out the one configured address, with the subnet mask, the router (the shim), DNS
//! servers if configured, the interface MTU (the tunnels' smallest) and a lease. It answers
//! DISCOVER with OFFER, REQUEST for the configured address with ACK (anything else with NAK),
//! INFORM with ACK, and ignores DECLINE and RELEASE: there is nothing else to offer. A request
//! whose client hardware address is not the guest's MAC is refused.
//!
//! Parsing is bounded: the fixed BOOTP part is checked whole, options are walked with every
//! length checked, option overload (sname/file) is not honoured.

use std::net::Ipv4Addr;

use wire::Mac;

/// DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// DHCP client port.
pub const CLIENT_PORT: u16 = 68;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP part up to and including the magic cookie.
const FIXED_LEN: usize = 240;
/// Replies are padded to the BOOTP minimum.
const MIN_REPLY: usize = 300;
/// Largest reply this server writes (fixed part and every option it sends).
pub const MAX_REPLY: usize = 400;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// 1
    Discover,
    /// 2
    Offer,
    /// 3
    Request,
    /// 4
    Decline,
    /// 5
    Ack,
    /// 6
    Nak,
    /// 7
    Release,
    /// 8
    Inform,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
        }
    }
}

/// A client message, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientMessage {
    /// transaction id
    pub xid: u32,
    /// the broadcast flag
    pub broadcast: bool,
    /// the client's current address (renewals, INFORM)
    pub ciaddr: Ipv4Addr,
    /// the client's hardware address
    pub chaddr: Mac,
    /// option 53
    pub kind: MessageType,
    /// option 50
    pub requested: Option<Ipv4Addr>,
    /// option 54
    pub server_id: Option<Ipv4Addr>,
}

/// Why a DHCP message was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// not a well-formed DHCP client message
    Malformed,
    /// its client hardware address is not the guest's
    ForeignClient,
    /// a message this server does not answer (DECLINE, RELEASE, one meant for another server)
    Ignored,
}

impl ClientMessage {
    /// Parses the UDP payload of a message to the server port.
    pub fn parse(msg: &[u8]) -> Result<ClientMessage, Refusal> {
        let fixed: &[u8; FIXED_LEN] = msg
            .get(..FIXED_LEN)
            .and_then(|f| f.try_into().ok())
            .ok_or(Refusal::Malformed)?;
        // op, htype Ethernet, hlen 6, magic cookie
        if fixed[0] != BOOTREQUEST || fixed[1] != 1 || fixed[2] != 6 || fixed[236..240] != MAGIC {
            return Err(Refusal::Malformed);
        }
        let xid = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let ciaddr = Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]);
        let chaddr = [
            fixed[28], fixed[29], fixed[30], fixed[31], fixed[32], fixed[33],
        ];
        let mut kind = None;
        let mut requested = None;
        let mut server_id = None;
        let mut options = msg.get(FIXED_LEN..).unwrap_or_default();
        loop {
            match options {
                [] | [255, ..] => break,
                [0, rest @ ..] => options = rest,
                [code, len, rest @ ..] => {
                    let len = usize::from(*len);
                    let body = rest.get(..len).ok_or(Refusal::Malformed)?;
                    let addr = || -> Result<Ipv4Addr, Refusal> {
                        let a: [u8; 4] = body.try_into().map_err(|_| Refusal::Malformed)?;
                        Ok(Ipv4Addr::from(a))
                    };
                    match code {
                        53 => {
                            let [t] = body else {
                                return Err(Refusal::Malformed);
                            };
                            kind = Some(MessageType::from_u8(*t).ok_or(Refusal::Malformed)?);
                        }
                        50 => requested = Some(addr()?),
                        54 => server_id = Some(addr()?),
                        _ => {}
                    }
                    options = rest.get(len..).unwrap_or_default();
                }
                [_] => return Err(Refusal::Malformed),
            }
        }
        Ok(ClientMessage {
            xid,
            broadcast: fixed[10] & 0x80 != 0,
            ciaddr,
            chaddr: Mac(chaddr),
            kind: kind.ok_or(Refusal::Malformed)?,
            requested,
            server_id,
        })
    }
}

/// What the server hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// the guest's address
    pub address: Ipv4Addr,
    /// its prefix length
    pub prefix_len: u8,
    /// the router: the shim's own address on the guest link (also the server id)
    pub router: Ipv4Addr,
    /// DNS servers (option 6), if any
    pub dns: Vec<Ipv4Addr>,
    /// interface MTU (option 26)
    pub mtu: u16,
    /// lease time in seconds
    pub lease_secs: u32,
}

impl Lease {
    fn netmask(&self) -> Ipv4Addr {
        let len = u32::from(self.prefix_len.min(32));
        Ipv4Addr::from(u32::MAX.checked_shl(32 - len).unwrap_or(0))
    }
}

/// A reply to write: its type, where it goes and the message itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK
    pub kind: MessageType,
    /// IP destination: the client's address, or broadcast
    pub dst: Ipv4Addr,
    /// whether the Ethernet destination is broadcast (else the guest's MAC)
    pub broadcast: bool,
}

/// Decides the answer to `msg` from `guest`.
pub fn answer(msg: &ClientMessage, guest: Mac, lease: &Lease) -> Result<Reply, Refusal> {
    if msg.chaddr != guest {
        return Err(Refusal::ForeignClient);
    }
    let ours = |server_id: Option<Ipv4Addr>| server_id.is_none_or(|s| s == lease.router);
    let kind = match msg.kind {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request if !ours(msg.server_id) => return Err(Refusal::Ignored),
        MessageType::Request => {
            // SELECTING / INIT-REBOOT name the address in option 50; RENEWING / REBINDING in
            // ciaddr.
            let wanted = msg.requested.unwrap_or(msg.ciaddr);
            if wanted == lease.address {
                MessageType::Ack
            } else {
                MessageType::Nak
            }
        }
        MessageType::Inform => MessageType::Ack,
        _ => return Err(Refusal::Ignored),
    };
    // RFC 2131 4.1: to ciaddr when the client has one; NAKs and flagged requests broadcast;
    // otherwise unicast to the offered address and the client's MAC.
    let (dst, broadcast) = if kind == MessageType::Nak {
        (Ipv4Addr::BROADCAST, true)
    } else if !msg.ciaddr.is_unspecified() {
        (msg.ciaddr, false)
    } else if msg.broadcast {
        (Ipv4Addr::BROADCAST, true)
    } else {
        (lease.address, false)
    };
    Ok(Reply {
        kind,
        dst,
        broadcast,
    })
}

/// Writes the reply's DHCP message (the UDP payload) into `out`; returns its length.
pub fn write_reply(
    out: &mut [u8],
    msg: &ClientMessage,
    reply: &Reply,
    lease: &Lease,
) -> Option<usize> {
    let m: &mut [u8; MAX_REPLY] = out.get_mut(..MAX_REPLY)?.try_into().ok()?;
    m.fill(0);
    m[0] = BOOTREPLY;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&msg.xid.to_be_bytes());
    if msg.broadcast {
        m[10] = 0x80;
    }
    m[12..16].copy_from_slice(&msg.ciaddr.octets());
    // yiaddr: the lease, except in a NAK and in an answer to INFORM (the client has its own)
    if reply.kind != MessageType::Nak && msg.kind != MessageType::Inform {
        m[16..20].copy_from_slice(&lease.address.octets());
    }
    m[28..34].copy_from_slice(&msg.chaddr.0);
    m[236..240].copy_from_slice(&MAGIC);
    let mut at = FIXED_LEN;
    let mut opt = |code: u8, body: &[u8]| -> Option<()> {
        let len = u8::try_from(body.len()).ok()?;
        m.get_mut(at..at + 2 + body.len())?
            .iter_mut()
            .zip([code, len].iter().chain(body))
            .for_each(|(d, s)| *d = *s);
        at += 2 + body.len();
        Some(())
    };
    opt(53, &[reply.kind.code()])?;
    opt(54, &lease.router.octets())?;
    if reply.kind != MessageType::Nak {
        if msg.kind != MessageType::Inform {
            opt(51, &lease.lease_secs.to_be_bytes())?;
            opt(58, &(lease.lease_secs / 2).to_be_bytes())?;
            opt(59, &(lease.lease_secs / 8 * 7).to_be_bytes())?;
        }
        opt(1, &lease.netmask().octets())?;
        opt(3, &lease.router.octets())?;
        if !lease.dns.is_empty() {
            let dns: Vec<u8> = lease.dns.iter().take(8).flat_map(|a| a.octets()).collect();
            opt(6, &dns)?;
        }
        opt(26, &lease.mtu.to_be_bytes())?;
    }
    *m.get_mut(at)? = 255;
    Some((at + 1).max(MIN_REPLY))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const GUEST: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    fn lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 200, 0, 2),
            prefix_len: 24,
            router: Ipv4Addr::new(10, 200, 0, 1),
            dns: vec![Ipv4Addr::new(198, 19, 0, 53)],
            mtu: 1420,
            lease_secs: 86_400,
        }
    }

    pub(crate) fn client_message(kind: u8, options: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; FIXED_LEN];
        m[0] = 1;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        m[28..34].copy_from_slice(&GUEST.0);
        m[236..240].copy_from_slice(&MAGIC);
        m.extend_from_slice(&[53, 1, kind]);
        m.extend_from_slice(options);
        m.push(255);
        m
    }

    fn option(reply: &[u8], code: u8) -> Option<Vec<u8>> {
        let mut at = FIXED_LEN;
        while at < reply.len() {
            match reply[at] {
                255 => return None,
                0 => at += 1,
                c => {
                    let len = usize::from(reply[at + 1]);
                    if c == code {
                        return Some(reply[at + 2..at + 2 + len].to_vec());
                    }
                    at += 2 + len;
                }
            }
        }
        None
    }

    #[test]
    fn discover_gets_an_offer_of_the_lease() {
        let msg = ClientMessage::parse(&client_message(1, &[])).unwrap();
        let reply = answer(&msg, GUEST, &lease()).unwrap();
        assert_eq!(reply.kind, MessageType::Offer);
        let mut out = [0u8; MAX_REPLY];
        let n = write_reply(&mut out, &msg, &reply, &lease()).unwrap();
        let r = &out[..n];
        assert_eq!(&r[16..20], &[10, 200, 0, 2]);
        assert_eq!(option(r, 53), Some(vec![2]));
        assert_eq!(option(r, 1), Some(vec![255, 255, 255, 0]));
        assert_eq!(option(r, 3), Some(vec![10, 200, 0, 1]));
        assert_eq!(option(r, 26), Some(1420u16.to_be_bytes().to_vec()));
        assert_eq!(option(r, 6), Some(vec![198, 19, 0, 53]));
    }

    #[test]
    fn requests_for_the_lease_are_acked_and_others_nacked() {
        let ok = ClientMessage::parse(&client_message(3, &[50, 4, 10, 200, 0, 2])).unwrap();
        assert_eq!(answer(&ok, GUEST, &lease()).unwrap().kind, MessageType::Ack);
        let other = ClientMessage::parse(&client_message(3, &[50, 4, 10, 200, 0, 9])).unwrap();
        let r = answer(&other, GUEST, &lease()).unwrap();
        assert_eq!(r.kind, MessageType::Nak);
        assert!(r.broadcast);
        let elsewhere = ClientMessage::parse(&client_message(
            3,
            &[54, 4, 10, 0, 0, 1, 50, 4, 10, 200, 0, 2],
        ))
        .unwrap();
        assert_eq!(answer(&elsewhere, GUEST, &lease()), Err(Refusal::Ignored));
    }

    #[test]
    fn other_clients_and_bad_messages_are_refused() {
        let msg = ClientMessage::parse(&client_message(1, &[])).unwrap();
        assert_eq!(
            answer(&msg, Mac([2, 0, 0, 0, 0, 9]), &lease()),
            Err(Refusal::ForeignClient)
        );
        let m = client_message(1, &[]);
        assert_eq!(ClientMessage::parse(&m[..239]), Err(Refusal::Malformed));
        // an option running past the end
        let mut m = client_message(1, &[]);
        m.pop();
        m.extend_from_slice(&[50, 9, 1]);
        assert_eq!(ClientMessage::parse(&m), Err(Refusal::Malformed));
        // no message type
        let mut m = client_message(1, &[]);
        m.truncate(FIXED_LEN);
        m.extend_from_slice(&[0, 0, 255]);
        assert_eq!(ClientMessage::parse(&m), Err(Refusal::Malformed));
        // a message type of the wrong length
        let mut m = client_message(1, &[]);
        m[FIXED_LEN + 1] = 2;
        assert_eq!(ClientMessage::parse(&m), Err(Refusal::Malformed));
    }

    #[test]
    fn release_and_decline_are_ignored() {
        for kind in [4, 7] {
            let msg = ClientMessage::parse(&client_message(kind, &[])).unwrap();
            assert_eq!(answer(&msg, GUEST, &lease()), Err(Refusal::Ignored));
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            if let Ok(msg) = ClientMessage::parse(&bytes) {
                if let Ok(reply) = answer(&msg, msg.chaddr, &lease()) {
                    let mut out = [0u8; MAX_REPLY];
                    proptest::prop_assert!(write_reply(&mut out, &msg, &reply, &lease()).is_some());
                }
            }
        }
    }
}
